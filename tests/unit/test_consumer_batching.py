"""Fewer SQS calls and fewer commits per message, without I/O: deletes coalesced across
groups, a retry's releases in one call, and batch mode (one transaction per received
batch) when its commit fails.

The savepoint semantics of batch mode (a failing message rolled back alone, its inbox
claim with it) run against real Postgres in tests/integration/test_messaging_contract.py,
where every contract test runs in both transaction modes.
"""

from __future__ import annotations

import asyncio
import contextlib

from shared.messaging.consumer import ConsumerConfig
from shared.messaging.middleware import Middleware
from tests.unit.test_consumer_runtime import HEARTBEAT_S, SimSqs, in_group, make_consumer, run_batch
from tests.unit.test_messaging_library import FakeCursor, FakeDb, event

DELETE_DELAY_S = 0.05


class SlowDeleteSqs(SimSqs):
    """Deletes take a while on the wire and are counted."""

    def __init__(self):
        super().__init__()
        self.delete_calls = 0

    async def delete_message_batch(self, QueueUrl, Entries):  # noqa: N803
        self.delete_calls += 1
        await asyncio.sleep(DELETE_DELAY_S)
        return await super().delete_message_batch(QueueUrl=QueueUrl, Entries=Entries)


def test_groups_finishing_together_share_delete_calls():
    sqs = SlowDeleteSqs()
    messages = [in_group(event(), f"group-{n}") for n in range(10)]
    run_batch(make_consumer(), sqs, messages)
    assert sqs.deleted == {m["ReceiptHandle"] for m in messages}
    # Ten one-message groups: one delete each before; now the groups that finish while a
    # delete is on the wire go in the next call together.
    assert sqs.delete_calls < len(messages) / 2, sqs.delete_calls
    deletes = [handle for _, call, handle, _ in sqs.log if call == "delete"]
    assert sorted(deletes) == sorted(sqs.deleted)  # each message deleted exactly once


def test_a_retry_releases_itself_and_the_rest_of_its_group_in_one_call():
    sqs = SimSqs()
    failing = in_group(event(fail=True), "a")
    after = [in_group(event(), "a") for _ in range(2)]
    run_batch(make_consumer(), sqs, [failing, *after])
    releases = [(t, handle, value) for t, call, handle, value in sqs.log if call == "visibility"
                and value is not None and value < 30]
    assert {handle: value for _, handle, value in releases} == {
        failing["ReceiptHandle"]: 2, after[0]["ReceiptHandle"]: 0, after[1]["ReceiptHandle"]: 0}
    assert len({t for t, _, _ in releases}) == 1  # arrived together: one call
    assert not sqs.deleted


class CommitFailsOnce(FakeDb):
    """The first transaction's commit fails (as a lost connection or a deferred check does)."""

    def __init__(self):
        super().__init__()
        self.transactions = 0

    @contextlib.contextmanager
    def transaction(self):
        self.transactions += 1
        cur = FakeCursor(self.claimed)
        yield cur
        if self.transactions == 1:
            raise ConnectionError("server closed the connection unexpectedly")
        self.claimed |= cur.pending


class Outcomes(Middleware):
    def __init__(self):
        self.kinds: list[str] = []

    def after_handle(self, consumer, message, outcome):
        self.kinds.append(outcome.kind)


def test_batch_mode_commit_failure_retries_the_head_of_every_group_and_releases_the_rest():
    sqs = SimSqs()
    outcomes = Outcomes()
    consumer = make_consumer(middleware=[outcomes], config=ConsumerConfig(
        heartbeat_every_s=HEARTBEAT_S, retry_base_s=2.0, transaction_per_batch=True))
    db = consumer.processor.db = CommitFailsOnce()
    a = [in_group(event(), "a") for _ in range(3)]
    b = [in_group(event(), "b")]
    run_batch(consumer, sqs, [a[0], b[0], a[1], a[2]])
    assert db.transactions == 1 and not db.claimed  # one transaction for the batch, undone
    assert not sqs.deleted
    assert {h: v for h, v in sqs.visibility.items()} == {
        a[0]["ReceiptHandle"]: 2, b[0]["ReceiptHandle"]: 2,
        a[1]["ReceiptHandle"]: 0, a[2]["ReceiptHandle"]: 0}
    # Hooks see the outcome that stands: a retry per group head, nothing "done".
    assert outcomes.kinds == ["retry", "retry"]


def test_batch_mode_commits_once_and_deletes_the_whole_batch():
    sqs = SlowDeleteSqs()
    outcomes = Outcomes()
    consumer = make_consumer(middleware=[outcomes], config=ConsumerConfig(
        heartbeat_every_s=HEARTBEAT_S, transaction_per_batch=True))
    counting = consumer.processor.db = CountingDb()
    messages = [in_group(event(), f"group-{n % 4}") for n in range(10)]
    run_batch(consumer, sqs, messages)
    assert counting.transactions == 1
    assert len(counting.claimed) == 10
    assert sqs.deleted == {m["ReceiptHandle"] for m in messages}
    assert sqs.delete_calls == 1
    assert outcomes.kinds == ["done"] * 10


def test_batch_mode_a_failure_ends_only_its_group_and_the_others_commit():
    sqs = SimSqs()
    consumer = make_consumer(config=ConsumerConfig(
        heartbeat_every_s=HEARTBEAT_S, retry_base_s=2.0, transaction_per_batch=True))
    counting = consumer.processor.db = CountingDb()
    bad = in_group(event(fail=True), "a")
    after_bad = in_group(event(), "a")
    poison = in_group(event(permanent=True), "p")
    after_poison = in_group(event(), "p")
    fine = [in_group(event(), "b") for _ in range(2)]
    run_batch(consumer, sqs, [bad, poison, fine[0], after_bad, after_poison, fine[1]])
    assert counting.transactions == 1
    # Savepoints around every message; the failures rolled back to theirs.
    statements = [sql for sql, _ in counting.cursors[0].statements]
    # ... each set in the same round trip as the message's inbox claim.
    assert sum(sql.startswith("SAVEPOINT consumer_message; INSERT INTO inbox")
               for sql in statements) == 4
    assert statements.count("ROLLBACK TO SAVEPOINT consumer_message") == 2
    assert sqs.deleted == {fine[0]["ReceiptHandle"], fine[1]["ReceiptHandle"],
                           poison["ReceiptHandle"]}
    assert len(sqs.sent) == 1  # the permanent failure, in the DLQ
    assert sqs.visibility[bad["ReceiptHandle"]] == 2
    assert sqs.visibility[after_bad["ReceiptHandle"]] == 0
    assert sqs.visibility[after_poison["ReceiptHandle"]] == 0  # not run: back at once


class CountingDb(FakeDb):
    def __init__(self):
        super().__init__()
        self.transactions = 0
        self.cursors: list[FakeCursor] = []

    @contextlib.contextmanager
    def transaction(self):
        self.transactions += 1
        cur = FakeCursor(self.claimed)
        self.cursors.append(cur)
        yield cur
        self.claimed |= cur.pending

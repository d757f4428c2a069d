"""The outbox relay against Postgres and the SQS emulator: parallel relays, backoff, odd answers.

Several relays may run on one outbox (one per worker replica). They must share
the due streams between them, never publish one stream from two relays at
once (per-stream order), honour a failed row's backoff whichever relay sees it
next, and end every batch call whatever SQS answers.
"""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from shared.messaging import outbox
from shared.messaging import relay as relay_module
from shared.messaging.envelope import Envelope
from shared.messaging.relay import OutboxRelay, RetryPolicy
from shared.queues import TOPOLOGY, add_event

QUEUE = "delivery-status.fifo"  # delivery's only route: one outbox row per event


def _add(db, aggregate_id: str, seq: int) -> None:
    with db.transaction() as cur:
        add_event(cur, "delivery", Envelope(event_type="delivery.shipped", aggregate_id=aggregate_id,
                                            data={"seq": seq}, producer="delivery-service"))


def _rows(db) -> list[dict]:
    with db.transaction() as cur:
        cur.execute("SELECT id, aggregate_id, published_at, attempts, last_error,"
                    " next_attempt_at > clock_timestamp() AS held_back FROM outbox ORDER BY id")
        return cur.fetchall()


def _drain(sqs, url) -> list[dict]:
    out = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    MessageSystemAttributeNames=["All"]).get("Messages", [])
        if not batch:
            return out
        out.extend(batch)
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])


class RecordingSqs:
    """Forwards to a real client; counts batch calls and how many run at once."""

    def __init__(self, client, send_delay_s: float = 0.0):
        self._client = client
        self._delay = send_delay_s
        self._lock = threading.Lock()
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def send_message_batch(self, **params):
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self._delay)
            return self.answer(params, self._client.send_message_batch(**params))
        finally:
            with self._lock:
                self.in_flight -= 1

    def answer(self, params: dict, response: dict) -> dict:
        return response


def test_a_second_transaction_claims_the_streams_the_first_left(delivery_db, database_url):
    for n in range(4):
        _add(delivery_db, f"agg-{n}", 0)
    first = psycopg2.connect(database_url, options="-c search_path=delivery_svc")
    second = psycopg2.connect(database_url, options="-c search_path=delivery_svc")
    try:
        with first.cursor() as cur1, second.cursor() as cur2:
            claimed_first = outbox.claim_streams(cur1, 2)
            claimed_second = outbox.claim_streams(cur2, 2)  # while the first still holds its own
        assert claimed_first == [(QUEUE, "agg-0"), (QUEUE, "agg-1")]
        assert claimed_second == [(QUEUE, "agg-2"), (QUEUE, "agg-3")]
    finally:
        first.close()
        second.close()


def test_two_relays_share_the_work_and_keep_each_streams_order(delivery_db, sqs, queues,
                                                               queue_prefix, monkeypatch):
    streams, per_stream = 30, 3
    for seq in range(per_stream):
        for n in range(streams):
            _add(delivery_db, f"agg-{n}", seq)
    # Small rounds and slow sends: each relay's round overlaps the other's.
    monkeypatch.setattr(relay_module, "STREAMS_PER_ROUND", 5)
    client = RecordingSqs(sqs, send_delay_s=0.2)
    relays = [OutboxRelay(delivery_db, client, TOPOLOGY, "delivery", queue_prefix, name=f"r{i}")
              for i in range(2)]
    published = {r.name: 0 for r in relays}
    start = threading.Barrier(len(relays))
    errors: list[BaseException] = []

    def run(relay: OutboxRelay) -> None:
        try:
            start.wait()
            idle = 0
            while idle < 3:  # the other relay may hold the rest for a round
                count, more = relay.publish_once()
                published[relay.name] += count
                idle = 0 if (count or more) else idle + 1
                if not count:
                    time.sleep(0.05)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(r,)) for r in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and not any(t.is_alive() for t in threads)

    assert all(count > 0 for count in published.values()), published
    assert sum(published.values()) == streams * per_stream
    assert client.max_in_flight == 2  # the relays really sent at the same time
    assert all(row["published_at"] is not None for row in _rows(delivery_db))
    by_group: dict[str, list[int]] = {}
    for message in _drain(sqs, queues[QUEUE]):
        envelope = Envelope.from_json(message["Body"])
        by_group.setdefault(message["Attributes"]["MessageGroupId"], []).append(envelope.data["seq"])
    assert by_group == {f"agg-{n}": list(range(per_stream)) for n in range(streams)}


def test_a_stream_another_relay_just_failed_waits_for_its_backoff(delivery_db, sqs, queues,
                                                                  queue_prefix, monkeypatch):
    _add(delivery_db, "agg-0", 0)
    real_claim = outbox.claim_streams

    def claim_then_other_relay_commits_a_failure(cur, limit):
        # This relay's claim saw the head as due; the other relay's failure
        # (and the release of its lock) commits right after that snapshot.
        claimed = real_claim(cur, limit)
        with delivery_db.transaction() as other:
            other.execute("SELECT id FROM outbox")
            outbox.record_failure(other, other.fetchone()["id"], 1, "Throttled: slow down", 30)
        return claimed

    monkeypatch.setattr(outbox, "claim_streams", claim_then_other_relay_commits_a_failure)
    client = RecordingSqs(sqs)
    assert OutboxRelay(delivery_db, client, TOPOLOGY, "delivery", queue_prefix).publish_once()[0] == 0
    assert client.calls == 0
    [row] = _rows(delivery_db)
    assert row["published_at"] is None and row["attempts"] == 1 and row["held_back"]


def test_a_backoff_counts_from_the_failure_not_from_the_rounds_start(delivery_db, sqs, queues,
                                                                     queue_prefix):
    _add(delivery_db, "agg-0", 0)

    class SlowFailingSqs(RecordingSqs):
        def send_message_batch(self, **params):
            self.calls += 1
            time.sleep(1.5)  # e.g. a broker timeout, longer than the backoff below
            raise ConnectionError("endpoint unreachable")

    client = SlowFailingSqs(sqs)
    relay = OutboxRelay(delivery_db, client, TOPOLOGY, "delivery", queue_prefix,
                        retry=RetryPolicy(base_s=1.0, cap_s=1.0))
    assert relay.publish_once()[0] == 0
    [row] = _rows(delivery_db)
    assert row["attempts"] == 1 and row["held_back"]
    with delivery_db.transaction() as cur:
        assert outbox.claim_streams(cur, 10) == []


@pytest.mark.timeout(60)
def test_an_entry_missing_from_the_batch_answer_counts_as_a_failed_send(delivery_db, sqs, queues,
                                                                        queue_prefix):
    for n in range(3):
        _add(delivery_db, f"agg-{n}", 0)

    class OmittingSqs(RecordingSqs):
        def answer(self, params, response):
            if self.calls > 20:
                raise RuntimeError("the relay kept resending the omitted entry")
            # agg-1's entry is in neither list (an answer AWS documents nowhere).
            omitted = {e["Id"] for e in params["Entries"] if e["MessageGroupId"] == "agg-1"}
            return {**response,
                    "Successful": [e for e in response["Successful"] if e["Id"] not in omitted],
                    "Failed": [e for e in response.get("Failed", []) if e["Id"] not in omitted]}

    client = OmittingSqs(sqs)
    relay = OutboxRelay(delivery_db, client, TOPOLOGY, "delivery", queue_prefix)
    assert relay.publish_once()[0] == 2
    assert client.calls == 1
    rows = {row["aggregate_id"]: row for row in _rows(delivery_db)}
    assert rows["agg-1"]["published_at"] is None and rows["agg-1"]["attempts"] == 1
    assert "missing from the SendMessageBatch answer" in rows["agg-1"]["last_error"]
    assert rows["agg-1"]["held_back"]
    assert all(rows[a]["published_at"] is not None for a in ("agg-0", "agg-2"))

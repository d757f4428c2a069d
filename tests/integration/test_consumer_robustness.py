"""The consumer against hostile input and slow batches, on every available SQS backend.

* a malformed-message corpus (not JSON, not an object, deeply nested, huge, a wrong
  type in each envelope field, an unknown event type, a valid envelope with invalid
  data): each message ends in the DLQ with its reason and the queue keeps going;
* a body that breaks the backend's own receive (moto cannot encode a lone surrogate
  in its answer) costs only that message, never the messages received beside it;
* a batch whose slow group outlives the visibility timeout: what finished first is
  neither redelivered nor dead-lettered twice.

Fixtures and helpers come from the messaging contract tests (same scratch schema).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from botocore.exceptions import ClientError

from shared.messaging.sqs import async_client
from tests.integration import test_messaging_contract as contract
from tests.integration.test_messaging_contract import (
    CONSUMER_NAME,
    FAST,
    HANDLED_TIMEOUT_S,
    REGION,
    UNKNOWN_EVENT_TYPE,
    Recorder,
    RecordingConsumer,
    assert_queue_empty,
    drain,
    envelope,
    handled_rows,
    send,
    send_raw,
    wait_handled,
)
from tests.support.asserts import queue_depths
from tests.support.backends import MOTO
from tests.support.wait import wait_until

# The contract tests' fixtures: a scratch schema, a client on the backend, fresh queues and
# consumers that stop at teardown.
contract_schema = contract.contract_schema
db = contract.db
client = contract.client
make_queue = contract.make_queue
consumers = contract.consumers

DEEPLY_NESTED = "[" * 100_000 + "]" * 100_000  # 200 KB; json.loads raises RecursionError
HUGE_BYTES = 200_000                            # under the 256 KiB limit with the dlq_* attributes


def _envelope_with(**fields) -> str:
    body = json.loads(envelope("corpus").to_json())
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not _MISSING})


_MISSING = object()

WRONG_FIELD_TYPES = {
    "event_id": 42, "event_type": ["order.created"], "event_version": "1",
    "occurred_at": 1_700_000_000, "producer": {"name": "x"}, "correlation_id": 7,
    "causation_id": "not-a-uuid", "aggregate_id": None, "data": ["not", "a", "dict"],
}


def corpus() -> list[tuple[str, str, str]]:
    """(label, body, expected dlq_reason) for every kind of malformed message."""
    bad = [("not JSON", "this is not json", "invalid_envelope"),
           ("truncated JSON", '{"event_id": ', "invalid_envelope"),
           ("a JSON array", "[1, 2, 3]", "invalid_envelope"),
           ("a JSON string", '"order.created"', "invalid_envelope"),
           ("JSON null", "null", "invalid_envelope"),
           ("deeply nested", DEEPLY_NESTED, "invalid_envelope"),
           ("huge", json.dumps({"blob": "x" * HUGE_BYTES}), "invalid_envelope"),
           ("a NUL character", "\x00{}", "invalid_envelope"),
           ("a missing field", _envelope_with(producer=_MISSING), "invalid_envelope"),
           ("an unknown field", _envelope_with(extra="field"), "invalid_envelope")]
    bad += [(f"wrong type in {name}", _envelope_with(**{name: value}), "invalid_envelope")
            for name, value in WRONG_FIELD_TYPES.items()]
    bad.append(("unknown event type",
                envelope("corpus", event_type=UNKNOWN_EVENT_TYPE).to_json(), "unknown_event_type"))
    bad.append(("valid envelope, invalid data",
                envelope("corpus", bad_schema=True).to_json(), "permanent_error"))
    return bad


def test_malformed_corpus_ends_in_the_dlq_with_reasons_and_the_queue_goes_on(
        db, client, make_queue, consumers):
    """Each malformed message is dead-lettered once with its reason; a good one follows."""
    # A body moto accepts but cannot return breaks whole receives, and each failed receive
    # still counts against maxReceiveCount at the broker before the consumer has isolated it
    # (one message at a time). With the default 5, a loaded machine sometimes let SQS's own
    # redrive move such a body first: in the DLQ, but without our reason attributes. 10 gives
    # the consumer's isolation the margin it needs; the assertions below are unchanged.
    spec, prefix, q = make_queue(max_receive_count=10)
    messages = []
    groups = [f"corpus-{n}" for n in range(3)]
    for index, (label, body, reason) in enumerate(corpus()):
        try:
            send_raw(client, q.url, body, group=groups[index % len(groups)])
        except ClientError as exc:
            # AWS (and fauxqs, strictly) refuse characters outside XML's range at send time:
            # such a body never reaches a consumer there.
            assert exc.response["Error"]["Code"].endswith("InvalidMessageContents"), label
            assert "\x00" in body, f"{label} refused: {exc}"
            continue
        messages.append((label, body, reason))
    recorder = Recorder()
    runner = consumers.start(spec, prefix, recorder)
    # Sent after the corpus, in a group the corpus went through first.
    good = envelope(groups[0], seq=99)
    send(client, q.url, good)

    rows = wait_handled(db, 1)
    assert [r["event_id"] for r in rows] == [good.event_id]
    dead = drain(client, q.dlq_url, len(messages))
    by_body: dict[str, list[dict]] = {}
    for message in dead:
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        by_body.setdefault(message["Body"], []).append(attributes)
    for label, body, reason in messages:
        assert len(by_body.get(body, [])) == 1, f"{label}: {len(by_body.get(body, []))} DLQ copies"
        attributes = by_body[body][0]
        assert attributes["dlq_reason"] == reason, label
        assert attributes["dlq_error"].strip("-"), label
        assert attributes["dlq_consumer"] == CONSUMER_NAME, label
        assert attributes["dlq_source_queue"] == spec.name, label
    assert runner.consumer.kinds(good.event_id) == ["done"]
    assert_queue_empty(client, q.url)


def test_a_body_that_breaks_the_backends_receive_costs_only_itself(
        backend, db, client, make_queue, consumers):
    """moto stores a lone surrogate, then fails every receive that would return it."""
    if backend.name != MOTO:
        pytest.skip("only moto accepts a body it cannot return (AWS refuses it at send)")
    spec, prefix, q = make_queue(visibility_s=2, max_receive_count=3)
    try:
        send_raw(client, q.url, "poison \ud800 surrogate", group="poison")
    except ClientError:
        pass  # moto stores the message, then fails to checksum it for the answer
    good = [envelope(f"good-{n}") for n in range(6)]
    for event in good:
        send(client, q.url, event)
    consumers.start(spec, prefix, Recorder())

    rows = wait_handled(db, len(good), timeout=HANDLED_TIMEOUT_S * 2)
    assert sorted(r["event_id"] for r in rows) == sorted(e.event_id for e in good)

    def dlq_depth() -> int:
        return queue_depths(client, q.dlq_url)[0]

    # The poison reaches the DLQ through moto's own redrive (nobody can ever receive it);
    # none of the good messages received beside it went there with it.
    wait_until(lambda: dlq_depth() == 1, timeout=HANDLED_TIMEOUT_S * 2, message="poison in DLQ")
    time.sleep(1)
    assert dlq_depth() == 1


def test_finished_messages_of_a_batch_are_not_redelivered_while_a_slow_group_runs(
        backend, db, client, make_queue, consumers):
    """Visibility 2 s, a 5 s group in the batch: the fast and the dead-lettered one stay done."""
    spec, prefix, q = make_queue(visibility_s=2)
    fast = envelope("fast")
    poison_body = "not an envelope"
    slow = envelope("slow", sleep_s=5.0)
    send(client, q.url, fast)
    send_raw(client, q.url, poison_body, group="poison")
    send(client, q.url, slow)
    batch: list[dict] = []

    def receive_all() -> bool:
        response = client.receive_message(QueueUrl=q.url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                          MessageSystemAttributeNames=["All"],
                                          MessageAttributeNames=["All"])
        batch.extend(response.get("Messages", []))
        return len(batch) >= 3

    wait_until(receive_all, timeout=HANDLED_TIMEOUT_S, interval=0, message="the three messages")
    recorder = Recorder()
    # A second consumer on the same queue gets whatever reappears while the batch runs.
    competitor = consumers.start(spec, prefix, recorder)
    first = RecordingConsumer(CONSUMER_NAME, spec, db, {contract.EVENT_TYPE: recorder},
                              lambda: async_client(backend.endpoint_url, REGION), prefix, FAST)

    async def handle() -> None:
        first.queue_url, first.dlq_url = q.url, q.dlq_url
        async with first.client_factory() as sqs:
            await first.handle_batch(sqs, batch, asyncio.Event())

    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_capturing(handle, errors))
    thread.start()
    thread.join(HANDLED_TIMEOUT_S)
    first.executor.shutdown(wait=True)
    assert not thread.is_alive() and not errors, errors

    time.sleep(spec.visibility_timeout_s + 1)  # anything not deleted would reappear by now
    assert sorted(r["event_id"] for r in handled_rows(db)) == sorted([fast.event_id,
                                                                     slow.event_id])
    assert recorder.call_count(fast.event_id) == 1
    assert competitor.consumer.outcomes == []
    dead = drain(client, q.dlq_url, 1)
    assert [m["Body"] for m in dead] == [poison_body]
    response = client.receive_message(QueueUrl=q.dlq_url, MaxNumberOfMessages=10,
                                      WaitTimeSeconds=1)
    assert response.get("Messages", []) == [], "the dead letter was sent twice"
    assert_queue_empty(client, q.url)


def _run_capturing(coroutine_fn, errors: list[BaseException]) -> None:
    try:
        asyncio.run(coroutine_fn())
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)

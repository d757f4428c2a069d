"""The consumer runtime under faults, without I/O: bodies that break the parser, pollers
that crash, the visibility heartbeat racing releases and deletes, and the worker's
supervision of its consumer tasks.

An in-memory stand-in for the async SQS client (:class:`SimSqs`) applies each
visibility change when its call *completes*, as a server applies a request when it
arrives; per-call delays reorder calls the way a network can.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.config import Settings, WorkerSettings
from shared.messaging.consumer import Consumer, ConsumerConfig, ConsumerFailed
from shared.messaging.envelope import Envelope, InvalidEnvelope
from shared.messaging.middleware import Middleware, PrometheusMiddleware
from shared.messaging.outcomes import DeadLetter
from shared.messaging.receiver import Receiver
from shared.messaging.topology import QueueSpec
from tests.unit.test_messaging_library import FakeCounter, FakeDb, event, message

ORDERS = QueueSpec(name="orders.fifo", producer="shop", consumers=("billing",),
                   event_types=("shop.ordered",))
DEEPLY_NESTED = "[" * 100_000 + "]" * 100_000
HEARTBEAT_S = 0.05


class SimSqs:
    """The async client calls of a consumer, against in-memory message state.

    ``visibility`` holds the last visibility applied per receipt handle; ``log``
    records ``(monotonic time, call, receipt handle, value)`` at completion.
    A call made after :meth:`close` fails like aiobotocore's closed client does.
    """

    def __init__(self, heartbeat_delay_s: float = 0.0, batches: list[list[dict]] | None = None):
        self.heartbeat_delay_s = heartbeat_delay_s
        self.visibility: dict[str, int] = {}
        self.deleted: set[str] = set()
        self.sent: list[dict] = []
        self.log: list[tuple[float, str, str, int | None]] = []
        self.batches = list(batches or [])
        self.closed = False

    def _check_open(self) -> None:
        if self.closed:
            raise AttributeError("'NoneType' object has no attribute 'get'")

    async def change_message_visibility_batch(self, QueueUrl, Entries):  # noqa: N803
        self._check_open()
        # A request once sent arrives even if the caller stops waiting for it: shielded.
        await asyncio.shield(asyncio.ensure_future(self._arrive(Entries)))
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    async def _arrive(self, entries: list[dict]) -> None:
        seconds = entries[0]["VisibilityTimeout"]
        # A heartbeat extension (long visibility) is slow to arrive; releases are quick.
        await asyncio.sleep(self.heartbeat_delay_s if seconds >= 30 else 0.005)
        now = time.monotonic()
        for entry in entries:  # one call may carry a different timeout per entry
            self.visibility[entry["ReceiptHandle"]] = entry["VisibilityTimeout"]
            self.log.append((now, "visibility", entry["ReceiptHandle"], entry["VisibilityTimeout"]))

    async def delete_message_batch(self, QueueUrl, Entries):  # noqa: N803
        self._check_open()
        now = time.monotonic()
        for entry in Entries:
            self.deleted.add(entry["ReceiptHandle"])
            self.log.append((now, "delete", entry["ReceiptHandle"], None))
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    async def send_message(self, **params):
        self._check_open()
        self.sent.append(params)
        return {"MessageId": str(uuid.uuid4())}

    async def receive_message(self, **params):
        self._check_open()
        if self.batches:
            return {"Messages": self.batches.pop(0)}
        await asyncio.sleep(0.01)
        return {}

    def calls_for(self, receipt_handle: str) -> list[tuple[float, str, int | None]]:
        """What happened to one message, in completion order."""
        return [(t, call, value) for t, call, handle, value in self.log if handle == receipt_handle]


def sleepy_handler(cur, envelope: Envelope) -> None:
    """Sleeps ``sleep_s``, then fails transiently (``fail``) or permanently (``permanent``)."""
    time.sleep(envelope.data.get("sleep_s", 0))
    if envelope.data.get("fail"):
        raise ConnectionError("database went away")
    if envelope.data.get("permanent"):
        from shared.messaging.outcomes import PermanentError
        raise PermanentError("never")


def in_group(envelope: Envelope, group: str) -> dict:
    msg = message(envelope)
    msg["Attributes"]["MessageGroupId"] = group
    return msg


def make_consumer(middleware=(), config: ConsumerConfig | None = None,
                  client_factory=None, cls=Consumer) -> Consumer:
    consumer = cls("billing:orders.fifo", ORDERS, FakeDb(), {"shop.ordered": sleepy_handler},
                   sqs_client_factory=client_factory,
                   config=config or ConsumerConfig(heartbeat_every_s=HEARTBEAT_S, retry_base_s=2.0),
                   executor=ThreadPoolExecutor(max_workers=4), middleware=list(middleware))
    consumer.queue_url, consumer.dlq_url = "queue-url", "dlq-url"
    return consumer


def run_batch(consumer: Consumer, sqs: SimSqs, messages: list[dict]) -> None:
    try:
        asyncio.run(consumer.handle_batch(sqs, messages, asyncio.Event()))
    finally:
        consumer.executor.shutdown(wait=True)


# --- defect 1: a body that breaks the parser is an invalid envelope ------------------------------
def test_a_body_that_breaks_the_json_parser_is_an_invalid_envelope():
    with pytest.raises(InvalidEnvelope, match="not JSON"):
        Envelope.from_json(DEEPLY_NESTED)
    consumer = make_consumer()
    outcome = consumer.processor.process(message(None, body=DEEPLY_NESTED))
    consumer.executor.shutdown()
    assert isinstance(outcome, DeadLetter) and outcome.reason == "invalid_envelope"
    assert "RecursionError" in outcome.error


def test_a_deeply_nested_body_is_dead_lettered_and_the_batch_goes_on():
    sqs = SimSqs()
    poison = message(None, body=DEEPLY_NESTED)
    fine = message(event())
    run_batch(make_consumer(), sqs, [poison, fine])
    assert [p["MessageBody"] for p in sqs.sent] == [DEEPLY_NESTED]
    reason = sqs.sent[0]["MessageAttributes"]["dlq_reason"]["StringValue"]
    assert reason == "invalid_envelope"
    assert {poison["ReceiptHandle"], fine["ReceiptHandle"]} <= sqs.deleted


# --- defect 1: a poller that dies is restarted, counted, and shows in the health gauge ----------
class Lifecycle(Middleware):
    def __init__(self):
        self.restarts: list[str] = []
        self.alive: list[bool] = []

    def on_poller_restart(self, consumer, error, delay_s):
        self.restarts.append(error)

    def on_consumer_alive(self, consumer, alive):
        self.alive.append(alive)


class CrashingConsumer(Consumer):
    """Crashes on the first ``crashes`` batches with an error no code path expects."""

    crashes = 1

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches_seen = 0
        self.handled_batches: list[list[str]] = []

    async def handle_batch(self, client, messages, stop, batch=None):
        self.batches_seen += 1
        if self.batches_seen <= self.crashes:
            raise KeyError("a bug in the batch code")
        await super().handle_batch(client, messages, stop, batch)
        self.handled_batches.append([m["MessageId"] for m in messages])


def run_consumer(consumer: Consumer, until, timeout_s: float = 10.0):
    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        deadline = time.monotonic() + timeout_s
        while not until() and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        stop.set()
        return await task

    try:
        return asyncio.run(main())
    finally:
        consumer.executor.shutdown(wait=True)


def sim_factory(sqs: SimSqs):
    @contextlib.asynccontextmanager
    async def factory():
        try:
            yield sqs
        finally:
            sqs.closed = True

    return factory


class Resolved(CrashingConsumer):
    async def _resolve_queues(self, client, stop):
        self.queue_url, self.dlq_url = "queue-url", "dlq-url"


def test_a_crashed_poller_is_restarted_counted_and_the_client_stays_open():
    crashing, later = message(event()), message(event())
    sqs = SimSqs(batches=[[crashing], [later]])
    lifecycle = Lifecycle()
    metrics = {"alive": FakeCounter(), "restarts": FakeCounter()}
    consumer = make_consumer(
        [lifecycle, PrometheusMiddleware(**metrics)],
        ConsumerConfig(wait_time_s=0, pollers=2, restart_base_s=0.01, restart_cap_s=0.05),
        sim_factory(sqs), cls=Resolved)
    run_consumer(consumer, lambda: consumer.handled_batches)
    # The queue is still consumed after the crash: the next batch was handled and deleted.
    assert consumer.handled_batches == [[later["MessageId"]]]
    assert later["ReceiptHandle"] in sqs.deleted
    # The crashed batch's messages were released for redelivery, not left hidden.
    assert sqs.visibility.get(crashing["ReceiptHandle"]) is not None
    assert lifecycle.restarts and "KeyError" in lifecycle.restarts[0]
    assert metrics["restarts"].values == {("billing:orders.fifo",): 1}
    # Alive while running, down while a poller waited to restart, not alive after stopping.
    assert lifecycle.alive[0] is True and False in lifecycle.alive and lifecycle.alive[-1] is False
    assert metrics["alive"].values == {("billing:orders.fifo",): 0}


def test_a_poller_crashing_every_time_fails_the_consumer_after_the_restart_limit():
    sqs = SimSqs(batches=[[message(event())] for _ in range(10)])
    lifecycle = Lifecycle()
    consumer = make_consumer(
        [lifecycle],
        ConsumerConfig(wait_time_s=0, pollers=1, restart_base_s=0.01, restart_cap_s=0.02,
                       restart_limit=3),
        sim_factory(sqs), cls=Resolved)
    consumer.crashes = 100
    with pytest.raises(ConsumerFailed, match="KeyError"):
        run_consumer(consumer, lambda: False)
    assert len(lifecycle.restarts) == 3
    assert lifecycle.alive[-1] is False


# --- defect 3: the heartbeat never undoes a release, and finished messages are not forgotten ----
def test_heartbeat_never_undoes_a_concurrent_release():
    # The handler fails after a heartbeat extension was sent but before it arrived: the
    # release (backoff for the head, 0 for the rest of its group) must be what sticks.
    sqs = SimSqs(heartbeat_delay_s=0.3)
    failing = in_group(event(fail=True, sleep_s=0.12), "g")
    behind = in_group(event(), "g")
    other = in_group(event(sleep_s=0.6), "other")  # keeps the batch (and its heartbeat) going
    run_batch(make_consumer(), sqs, [failing, behind, other])
    assert sqs.visibility[failing["ReceiptHandle"]] == 2  # the backoff of a first receive
    assert sqs.visibility[behind["ReceiptHandle"]] == 0
    for msg in (failing, behind):
        calls = sqs.calls_for(msg["ReceiptHandle"])
        released_at = next(t for t, call, value in calls if value in (0, 2))
        assert not [c for c in calls if c[0] > released_at], calls


def test_finished_messages_are_deleted_while_slower_groups_run():
    sqs = SimSqs()
    fast = in_group(event(), "fast")
    poison = in_group(event(permanent=True), "poison")
    slow = in_group(event(sleep_s=0.6), "slow")
    run_batch(make_consumer(), sqs, [fast, poison, slow])
    slow_deleted = next(t for t, call, _ in sqs.calls_for(slow["ReceiptHandle"]) if call == "delete")
    for msg in (fast, poison):
        calls = sqs.calls_for(msg["ReceiptHandle"])
        deleted = [t for t, call, _ in calls if call == "delete"]
        assert deleted and deleted[0] < slow_deleted - 0.3, calls
        # Never extended after its delete: the heartbeat knows it is gone.
        assert not [c for c in calls if c[1] == "visibility" and c[0] > deleted[0]], calls
    # The slow one was kept invisible meanwhile; the dead letter went to the DLQ once.
    assert any(call == "visibility" for _, call, _ in sqs.calls_for(slow["ReceiptHandle"]))
    assert len(sqs.sent) == 1


# --- defect 1: the worker notices a consumer task that died ----------------------------------
class DeadConsumer:
    """Stands in for :class:`Consumer` in the worker: its task dies at once."""

    def __init__(self, name, spec, *args, **kwargs):
        self.name = name
        self.spec = spec
        self.receiver = Receiver(name, 10, 0, 0.0)  # the worker exports its last answer

    async def run(self, stop):
        raise ConsumerFailed(f"{self.name}: gave up")


class ClosableDb:
    def close(self):
        pass


def test_worker_exits_non_zero_when_a_consumer_task_dies(monkeypatch):
    from shared import worker

    monkeypatch.setattr(worker, "Consumer", DeadConsumer)
    settings = Settings(service="order", app_env="test", database_url="postgresql://x/y",
                        sqs_endpoint_url="http://127.0.0.1:9", aws_region="us-east-1",
                        queue_prefix="", log_level="INFO", log_format="console",
                        jwt_issuer="i", jwt_audience="a", db_pool_min=0, db_pool_max=4)
    plan = worker.WorkerPlan(consumers={ORDERS: {"shop.ordered": sleepy_handler}}, relay=False)

    async def main():
        return await asyncio.wait_for(
            worker._main(settings, WorkerSettings.from_env({"WORKER_SHUTDOWN_TIMEOUT_S": "2"}),
                         ClosableDb(), plan), 10)

    assert asyncio.run(main()) == 1


# --- a dead letter too big with its attributes still carries its reason ---------------------------
class SizeLimitedSqs(SimSqs):
    """Refuses a send whose body plus attribute values exceed ``limit`` bytes (HTTP 400)."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    async def send_message(self, **params):
        from botocore.exceptions import ClientError

        size = len(params["MessageBody"].encode()) + sum(
            len(k) + len(v["StringValue"]) for k, v in params["MessageAttributes"].items())
        if size > self.limit:
            raise ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "too long"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "SendMessage")
        return await super().send_message(**params)


def test_a_dead_letter_near_the_size_limit_is_sent_lean_with_its_reason():
    body = "x" * 10_000
    sqs = SizeLimitedSqs(limit=len(body) + 400)
    poison = message(None, body=body)
    poison["MessageAttributes"] = {"event_type": {"DataType": "String",
                                                  "StringValue": "y" * 300}}
    run_batch(make_consumer(), sqs, [poison])
    [sent] = sqs.sent
    assert sent["MessageBody"] == body
    assert sent["MessageAttributes"]["dlq_reason"]["StringValue"] == "invalid_envelope"
    assert "event_type" not in sent["MessageAttributes"]
    assert poison["ReceiptHandle"] in sqs.deleted

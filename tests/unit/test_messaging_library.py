"""The messaging library on its own (no I/O): a topology of the test's making, outbox
routing, typed outcomes and the middleware hooks around them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.messaging.consumer import Consumer, ConsumerConfig, PermanentError
from shared.messaging.envelope import Envelope
from shared.messaging.middleware import Middleware, PrometheusMiddleware
from shared.messaging.outbox import NoRoute, OutboxRow, add_event
from shared.messaging.outcomes import DeadLetter, Duplicate, Handled, Retry
from shared.messaging.topology import QueueSpec, Topology
from tests.support.logs import capture_logs

ORDERS = QueueSpec(name="orders.fifo", producer="shop", consumers=("billing", "mail"),
                   event_types=("shop.ordered", "shop.cancelled"))
AUDIT = QueueSpec(name="audit.fifo", producer="shop", consumers=("audit",),
                  event_types=("shop.ordered",))
PINGS = QueueSpec(name="pings", producer="monitor", consumers=("billing",),
                  event_types=("monitor.ping",), fifo=False)
TOPOLOGY = Topology((ORDERS, AUDIT, PINGS))


# --- topology ----------------------------------------------------------------------------------
def test_routes_follow_the_topology_passed_in():
    assert TOPOLOGY.routes_for("shop", "shop.ordered") == [ORDERS, AUDIT]
    assert TOPOLOGY.routes_for("shop", "shop.cancelled") == [ORDERS]
    assert TOPOLOGY.routes_for("monitor", "shop.ordered") == []  # not this producer's event
    assert TOPOLOGY.routes_for("shop", "shop.refunded") == []


def test_consumers_lookup_and_queue_names():
    assert TOPOLOGY.consumed_by("billing") == [ORDERS, PINGS]
    assert TOPOLOGY.consumed_by("nobody") == []
    assert TOPOLOGY.queue("pings") is PINGS
    with pytest.raises(KeyError):
        TOPOLOGY.queue("orders")
    assert TOPOLOGY.all_queue_names() == ["orders-dlq.fifo", "audit-dlq.fifo", "pings-dlq",
                                          "orders.fifo", "audit.fifo", "pings"]
    assert list(TOPOLOGY) == [ORDERS, AUDIT, PINGS] and len(TOPOLOGY) == 3


def test_a_queue_name_used_twice_is_refused():
    with pytest.raises(ValueError, match="used twice"):
        Topology((ORDERS, QueueSpec(name="orders.fifo", producer="x", consumers=("y",),
                                    event_types=("x.z",))))


class FakeCursor:
    """Records statements; ``rowcount`` answers the inbox claim from ``claimed``."""

    def __init__(self, claimed: set | None = None):
        self.statements: list[tuple[str, tuple]] = []
        self.claimed = claimed if claimed is not None else set()
        self.pending: set = set()
        self.rowcount = 0

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.statements.append((sql, params))
        if "INSERT INTO inbox" in sql:  # alone, or after the batch mode's SAVEPOINT
            key = (params[0], params[1])
            self.rowcount = 0 if key in self.claimed or key in self.pending else 1
            self.pending.add(key)


def event(event_type: str = "shop.ordered", **data) -> Envelope:
    return Envelope(event_type=event_type, aggregate_id=str(uuid.uuid4()), data=data,
                    producer="shop", correlation_id="req-1")


def test_add_event_writes_one_row_per_routed_queue():
    cur = FakeCursor()
    ordered = event()
    assert add_event(cur, TOPOLOGY, "shop", ordered) == 2
    # One statement (one round trip), one row of seven values per routed queue.
    [(sql, params)] = cur.statements
    rows = [params[i:i + 7] for i in range(0, len(params), 7)]
    assert sql.count("(%s, %s, %s, %s, %s, %s, %s)") == 2
    assert [row[1] for row in rows] == ["orders.fifo", "audit.fifo"]
    assert all(row[0] == ordered.event_id and row[-1] == 0 for row in rows)


def test_add_event_refuses_what_the_topology_cannot_carry():
    cur = FakeCursor()
    with pytest.raises(NoRoute):
        add_event(cur, TOPOLOGY, "monitor", event())
    with pytest.raises(ValueError, match="FIFO"):
        add_event(cur, TOPOLOGY, "shop", event(), delay_s=5)
    with pytest.raises(ValueError, match="0..900"):
        add_event(cur, TOPOLOGY, "monitor", event("monitor.ping"), delay_s=901)
    assert cur.statements == []
    assert add_event(cur, TOPOLOGY, "monitor", event("monitor.ping"), delay_s=900) == 1


def test_outbox_rows_are_named():
    row = OutboxRow(7, "e-1", "orders.fifo", "agg", "shop.ordered", "{}", None, 2, 0)
    assert (row.id, row.queue, row.aggregate_id, row.attempts, row.delay_s) == (
        7, "orders.fifo", "agg", 2, 0)


# --- consumer outcomes and hooks ------------------------------------------------------------------
class FakeDb:
    """``transaction()`` with commit/rollback semantics for the inbox claims."""

    def __init__(self):
        self.claimed: set = set()

    @contextlib.contextmanager
    def transaction(self):
        cur = FakeCursor(self.claimed)
        yield cur  # an exception here is a rollback: the pending claims are dropped
        self.claimed |= cur.pending


class FakeSqs:
    """The async client calls a batch makes, recorded."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []

    async def send_message(self, **params):
        self.calls.append(("send_message", params))

    async def change_message_visibility_batch(self, **params):
        self.calls.append(("change_message_visibility_batch", params))

    async def delete_message_batch(self, **params):
        self.calls.append(("delete_message_batch", params))
        return {}


class Recording(Middleware):
    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def before_handle(self, consumer, message):
        self.calls.append(("before_handle", message["MessageId"]))

    def after_handle(self, consumer, message, outcome):
        self.calls.append(("after_handle", outcome.kind))

    def on_retry(self, consumer, message, outcome):
        self.calls.append(("on_retry", outcome.kind))

    def on_dead_letter(self, consumer, message, outcome):
        self.calls.append(("on_dead_letter", outcome.reason))

    def after_dead_letter(self, consumer, message, outcome):
        self.calls.append(("after_dead_letter", outcome.reason))


class Failing(Middleware):
    def after_handle(self, consumer, message, outcome):
        raise RuntimeError("a broken metrics backend")


def handler(cur, envelope: Envelope) -> None:
    if envelope.data.get("fail") == "transient":
        raise ConnectionError("database went away")
    if envelope.data.get("fail") == "permanent":
        raise PermanentError("cannot ever work")


def message(envelope: Envelope | None, receive_count: int = 1, body: str | None = None) -> dict:
    message_id = str(uuid.uuid4())
    return {"MessageId": message_id, "ReceiptHandle": f"rh-{message_id}",
            "Body": body if body is not None else envelope.to_json(),
            "Attributes": {"MessageGroupId": message_id,
                           "ApproximateReceiveCount": str(receive_count)},
            "MessageAttributes": {}}


def run_batch(messages: list[dict], middleware: list[Middleware], db: FakeDb | None = None,
              config: ConsumerConfig | None = None) -> tuple[Consumer, FakeSqs]:
    executor = ThreadPoolExecutor(max_workers=2)
    consumer = Consumer("billing:orders.fifo", ORDERS, db or FakeDb(), {"shop.ordered": handler},
                        sqs_client_factory=None, config=config or ConsumerConfig(retry_base_s=2.0),
                        executor=executor, middleware=middleware)
    consumer.queue_url, consumer.dlq_url = "queue-url", "dlq-url"
    sqs = FakeSqs()
    try:
        asyncio.run(consumer.handle_batch(sqs, messages, asyncio.Event()))
    finally:
        executor.shutdown(wait=True)
    return consumer, sqs


def test_hooks_run_in_order_for_each_outcome():
    db = FakeDb()
    first = event()
    cases = {
        "handled": (message(first), [("after_handle", "done")]),
        "duplicate": (message(first), [("after_handle", "duplicate")]),
        "retry": (message(event(fail="transient")), [("on_retry", "retry"), ("after_handle", "retry")]),
        "dead-letter": (message(event(fail="permanent")),
                        [("on_dead_letter", "permanent_error"), ("after_handle", "dlq"),
                         ("after_dead_letter", "permanent_error")]),
    }
    for name, (msg, expected) in cases.items():
        recording = Recording()
        run_batch([msg], [recording], db)
        assert recording.calls == [("before_handle", msg["MessageId"]), *expected], name


def test_outcomes_are_typed_and_carry_what_the_consumer_acts_on():
    db = FakeDb()
    consumer = Consumer("c", ORDERS, db, {"shop.ordered": handler}, sqs_client_factory=None,
                        config=ConsumerConfig(retry_base_s=2.0, retry_cap_s=900.0),
                        executor=ThreadPoolExecutor(max_workers=1), middleware=[])
    ok = event()
    handled = consumer.processor.process(message(ok))
    assert isinstance(handled, Handled) and handled.event == ok and handled.duration_s >= 0
    assert isinstance(consumer.processor.process(message(ok)), Duplicate)
    retry = consumer.processor.process(message(event(fail="transient"), receive_count=3))
    assert isinstance(retry, Retry)
    assert (retry.delay_s, retry.receive_count) == (8, 3)  # 2 s * 2^(3-1)
    assert retry.error == "ConnectionError: database went away"
    last = consumer.processor.process(message(event(fail="transient"), receive_count=5))
    assert isinstance(last, DeadLetter) and last.reason == "max_receives_exceeded"
    garbage = message(None, body="{not json")
    invalid = consumer.processor.process(garbage)
    assert isinstance(invalid, DeadLetter) and invalid.reason == "invalid_envelope"
    assert invalid.event is None and invalid.message_id == garbage["MessageId"]
    unknown = consumer.processor.process(message(event("shop.cancelled")))
    assert isinstance(unknown, DeadLetter) and unknown.reason == "unknown_event_type"
    consumer.executor.shutdown()


class FakeCounter:
    """A Prometheus metric stand-in: ``labels(...).inc(n)`` / ``.set(v)`` / ``.observe(v)`` recorded."""

    def __init__(self):
        self.values: dict[tuple, float] = {}
        self.observed: dict[tuple, list[float]] = {}

    def labels(self, *labels):
        counter = self

        class Child:
            def inc(self, amount: float = 1) -> None:
                counter.values[labels] = counter.values.get(labels, 0) + amount

            def set(self, value: float) -> None:
                counter.values[labels] = value

            def observe(self, value: float) -> None:
                counter.observed.setdefault(labels, []).append(value)

        return Child()


def test_outcomes_map_to_metrics():
    metrics = {name: FakeCounter() for name in
               ("handled", "retries", "dlq_moves", "published", "send_failures", "lag", "received",
                "duration")}
    recording = Recording()
    db = FakeDb()
    ok = event()
    run_batch([message(ok)], [PrometheusMiddleware(**metrics), recording], db)
    run_batch([message(ok), message(event(fail="transient")), message(event(fail="permanent")),
               message(None, body="[]")], [PrometheusMiddleware(**metrics), recording], db)
    name, queue = "billing:orders.fifo", "orders.fifo"
    assert metrics["handled"].values == {(name, queue, "shop.ordered", "done"): 1,
                                         (name, queue, "shop.ordered", "duplicate"): 1}
    assert metrics["retries"].values == {(name, queue, "shop.ordered"): 1}
    assert metrics["dlq_moves"].values == {(name, queue, "shop.ordered", "permanent_error"): 1,
                                           (name, queue, "unknown", "invalid_envelope"): 1}
    # Every message taken up is received once, whatever became of it.
    assert metrics["received"].values == {(name, queue, "shop.ordered"): 4, (name, queue, "unknown"): 1}
    assert {labels: len(times) for labels, times in metrics["duration"].observed.items()} == {
        (name, queue, "shop.ordered", "done"): 1, (name, queue, "shop.ordered", "duplicate"): 1,
        (name, queue, "shop.ordered", "retry"): 1, (name, queue, "shop.ordered", "dlq"): 1,
        (name, queue, "unknown", "dlq"): 1}
    assert all(0 <= t < 5 for times in metrics["duration"].observed.values() for t in times)
    # The metrics agree with the outcomes the recording middleware saw.
    kinds = [kind for hook, kind in recording.calls if hook == "after_handle"]
    assert sorted(kinds) == ["dlq", "dlq", "done", "duplicate", "retry"]

    class Relay:
        service, name = "shop", "shop-relay"

    rows = [OutboxRow(i, f"e{i}", "orders.fifo", "a", "shop.ordered", "{}", None, 0, 0)
            for i in range(3)]
    middleware = PrometheusMiddleware(**metrics)
    middleware.after_publish(Relay(), "orders.fifo", rows)
    middleware.on_publish_failure(Relay(), rows[0], "boom", 1, 0.4)
    middleware.on_outbox_lag(Relay(), 2.5)
    assert metrics["published"].values == {("shop", "orders.fifo"): 3}
    assert metrics["send_failures"].values == {("shop", "orders.fifo"): 1}
    assert metrics["lag"].values == {("shop",): 2.5}


def test_a_failing_middleware_changes_nothing_and_is_logged():
    recording = Recording()
    with capture_logs() as logs:
        _, sqs = run_batch([message(event())], [Failing(), recording])
    assert ("after_handle", "done") in recording.calls
    assert [name for name, _ in sqs.calls] == ["delete_message_batch"]
    failures = [entry for entry in logs if entry["event"] == "middleware_failed"]
    assert failures and failures[0]["middleware"] == "Failing" and failures[0]["hook"] == "after_handle"


def test_default_logging_middleware_keeps_the_event_names():
    with capture_logs() as logs:
        run_batch([message(event()), message(event(fail="transient")),
                   message(event(fail="permanent"))], None)
    events = {entry["event"] for entry in logs}
    assert {"message_handled", "message_retry", "message_dead_lettered"} <= events
    dead = next(entry for entry in logs if entry["event"] == "message_dead_lettered")
    assert dead["reason"] == "permanent_error" and json.dumps(dead, default=str)

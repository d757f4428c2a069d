"""The messaging contract (docs/architecture.md, docs/sqs-portability.md) against every available SQS backend.

The real consumer runtime (:class:`shared.messaging.consumer.Consumer`, driven
by its own asyncio loop in a background thread) and the real outbox relay run
against each backend of the ``backend`` fixture (moto always, fauxqs when node
is there, any ``SQS_ENDPOINT_URL``). Handlers write to a scratch table in a
schema of their own (``messaging_contract``, with its own inbox and outbox), so
the assertions are about rows and messages, not log lines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid

import psycopg2
import pytest
from marshmallow import Schema, fields

from shared.db import Database
from shared.messaging.consumer import Consumer, ConsumerConfig, PermanentError
from shared.messaging.envelope import Envelope
from shared.messaging.middleware import LoggingMiddleware, Middleware
from shared.messaging.relay import OutboxRelay
from shared.messaging.schema import messaging_tables_ddl
from shared.messaging.sqs import async_client, ensure_queues, sync_client
from shared.messaging.topology import Topology
from shared.queues import TOPOLOGY, add_event, queue, routes_for
from tests.support.asserts import assert_queue_empty
from tests.support.wait import wait_until

SCHEMA = "messaging_contract"
REGION = "us-east-1"
CONSUMER_NAME = "contract"
EVENT_TYPE = "order.created"        # routed by the topology to order-status.fifo (and more)
UNKNOWN_EVENT_TYPE = "order.exploded"
PRODUCER = "order"                   # the topology's producer of order-status.fifo
BASE_SPEC = queue("order-status.fifo")
DB_POOL_MAX = 14                     # one per handler thread (10) plus the test's own queries

# Short waits keep the suite fast; 1 s is the smallest whole-second backoff.
FAST = ConsumerConfig(wait_time_s=1, pollers=2, retry_base_s=1.0, retry_cap_s=4.0,
                      error_pause_s=0.2)
HANDLED_TIMEOUT_S = 20.0
SLOW_HANDLER_S = 5.0
SHORT_VISIBILITY_S = 2


# --------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def contract_schema(database_url) -> str:
    """A schema with an inbox, an outbox and a scratch table written by the handlers."""
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            cur.execute(f"CREATE SCHEMA {SCHEMA}")
            cur.execute(f"SET search_path TO {SCHEMA}")
            for statement in messaging_tables_ddl(SCHEMA):
                cur.execute(statement)
            cur.execute("""
                CREATE TABLE handled (
                    id          bigserial PRIMARY KEY,
                    event_id    uuid        NOT NULL,
                    group_id    text        NOT NULL,
                    seq         integer     NOT NULL,
                    handled_at  timestamptz NOT NULL DEFAULT clock_timestamp()
                )
            """)
    finally:
        conn.close()
    return database_url


@pytest.fixture
def db(contract_schema):
    """The contract schema, emptied for this test."""
    database = Database(contract_schema, SCHEMA, 1, DB_POOL_MAX)
    with database.transaction() as cur:
        cur.execute("TRUNCATE handled, inbox, outbox RESTART IDENTITY")
    yield database
    database.close()


@pytest.fixture
def client(backend):
    """A boto3 client on the backend under test."""
    return sync_client(backend.endpoint_url, REGION)


@pytest.fixture
def make_queue(client):
    """``make_queue(visibility_s=30, max_receive_count=5)`` -> (spec, prefix, urls)."""

    def make(visibility_s: int = BASE_SPEC.visibility_timeout_s,
             max_receive_count: int = BASE_SPEC.max_receive_count):
        spec = dataclasses.replace(BASE_SPEC, visibility_timeout_s=visibility_s,
                                   max_receive_count=max_receive_count)
        prefix = f"c{uuid.uuid4().hex[:10]}-"
        return spec, prefix, QueuePair(ensure_queues(client, Topology((spec,)), prefix), spec)

    return make


@pytest.fixture(params=["transaction-per-message", "transaction-per-batch"])
def consumers(request, backend, db):
    """``consumers.start(spec, prefix, handler, config)`` -> a running :class:`ConsumerThread`.

    Every contract test runs in both transaction modes of the consumer (batch mode:
    one transaction per received batch, a savepoint per message).
    """
    started: list[ConsumerThread] = []
    batch_mode = request.param == "transaction-per-batch"

    class Starter:
        def start(self, spec, prefix, handler, config: ConsumerConfig = FAST) -> ConsumerThread:
            """Start a :class:`RecordingConsumer` on ``spec`` in a background thread."""
            config = dataclasses.replace(config, transaction_per_batch=batch_mode)
            consumer = RecordingConsumer(
                CONSUMER_NAME, spec, db, {EVENT_TYPE: handler},
                lambda: async_client(backend.endpoint_url, REGION), prefix, config)
            runner = ConsumerThread(consumer)
            started.append(runner)
            runner.start()
            return runner

    yield Starter()
    for runner in started:
        runner.stop()


# ---------------------------------------------------------------------- helpers
@dataclasses.dataclass
class QueuePair:
    """A test's work queue and its DLQ."""

    urls: dict[str, str]
    spec: object

    @property
    def url(self) -> str:
        """The work queue's URL."""
        return self.urls[self.spec.name]

    @property
    def dlq_url(self) -> str:
        """The dead-letter queue's URL."""
        return self.urls[self.spec.dlq_name]


class _OutcomeLog(Middleware):
    """Notes each message's outcome: every one passes ``after_handle`` once, in per-message
    and in batch mode alike."""

    def __init__(self):
        self.outcomes: list[tuple[str, str, int]] = []   # (event_id or message id, kind, count)
        self.lock = threading.Lock()

    def after_handle(self, consumer, message, outcome) -> None:
        key = outcome.event.event_id if outcome.event else message["MessageId"]
        count = int(message["Attributes"].get("ApproximateReceiveCount", "1"))
        with self.lock:
            self.outcomes.append((key, outcome.kind, count))


class RecordingConsumer(Consumer):
    """The real consumer, noting each message's outcome."""

    def __init__(self, *args, middleware=None, **kwargs):
        self._log = _OutcomeLog()
        super().__init__(*args, middleware=[*(middleware or [LoggingMiddleware()]), self._log],
                         **kwargs)

    @property
    def outcomes(self) -> list[tuple[str, str, int]]:
        return self._log.outcomes

    def kinds(self, event_id: str) -> list[str]:
        """Outcome kinds (done, duplicate, retry, dlq) of ``event_id``, in order."""
        with self._log.lock:
            return [kind for key, kind, _ in self.outcomes if key == event_id]


class ConsumerThread:
    """Runs ``consumer.run(stop)`` on its own event loop in a background thread."""

    def __init__(self, consumer: RecordingConsumer):
        self.consumer = consumer
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"consumer-{consumer.name}",
                                        daemon=True)

    def start(self) -> None:
        """Start the loop thread and wait until the consumer can be stopped."""
        self._thread.start()
        assert self._ready.wait(10), "consumer loop did not start"

    def request_stop(self) -> None:
        """Set the consumer's stop event (as SIGTERM does) without waiting for the drain.

        Returns once the event IS set in the loop: a test that lets a handler go on
        right after this must not race the loop to it (seen once under load: the
        handler finished and the batch went on before the loop had run the stop).
        """
        if self._loop is not None and not self._loop.is_closed():
            stopped = threading.Event()

            def stop_now() -> None:
                self._stop.set()
                stopped.set()

            self._loop.call_soon_threadsafe(stop_now)
            stopped.wait(5)

    def stop(self, timeout: float = 15.0) -> None:
        """Request a stop and wait for ``run`` to return (drain included)."""
        self.request_stop()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "consumer did not stop in time"
        self.consumer.executor.shutdown(wait=True)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.consumer.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc


class Recorder:
    """The test handler: writes (event, group, seq) to ``handled``; misbehaves on request.

    Behaviour comes from the event's data: ``fail_times`` (raise a transient
    error that many times), ``always_fail``, ``permanent`` (PermanentError),
    ``bad_schema`` (marshmallow ValidationError), ``sleep_s``, ``block``
    (wait for :attr:`release`, announcing itself on :attr:`blocked`).
    """

    def __init__(self):
        self.calls: list[tuple[str, float]] = []     # (event_id, monotonic time), every call
        self.failures: dict[str, list[float]] = {}  # event_id -> monotonic times of failures
        self.successes: dict[str, float] = {}       # event_id -> monotonic time of success
        self.blocked = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, cur, event: Envelope) -> None:
        data = event.data
        now = time.monotonic()
        with self._lock:
            self.calls.append((event.event_id, now))
            failed_so_far = len(self.failures.get(event.event_id, []))
        if data.get("always_fail") or failed_so_far < data.get("fail_times", 0):
            with self._lock:
                self.failures.setdefault(event.event_id, []).append(now)
            raise RuntimeError(f"transient failure #{failed_so_far + 1}")
        if data.get("permanent"):
            raise PermanentError("this event can never be handled")
        if data.get("bad_schema"):
            _StrictData().load(data)
        if data.get("block"):
            self.blocked.set()
            assert self.release.wait(HANDLED_TIMEOUT_S), "the test never released the handler"
        if data.get("sleep_s"):
            time.sleep(data["sleep_s"])
        cur.execute("INSERT INTO handled (event_id, group_id, seq) VALUES (%s, %s, %s)",
                    (event.event_id, event.aggregate_id, data.get("seq", 0)))
        with self._lock:
            self.successes[event.event_id] = time.monotonic()

    def call_count(self, event_id: str) -> int:
        """How many times the handler was called for ``event_id``."""
        with self._lock:
            return sum(1 for key, _ in self.calls if key == event_id)


class _StrictData(Schema):
    quantity = fields.Integer(required=True)


def envelope(group: str, seq: int = 0, event_type: str = EVENT_TYPE, **data) -> Envelope:
    """A test event for ``group`` carrying ``seq`` and behaviour flags for :class:`Recorder`."""
    return Envelope(event_type=event_type, aggregate_id=group, producer="contract-test",
                    correlation_id=f"corr-{group}-{seq}", data={"seq": seq, **data})


def send(client, url: str, env: Envelope, dedup_id: str | None = None) -> None:
    """Publish as the relay does: group = aggregate, dedup id = event id (unless overridden)."""
    client.send_message(
        QueueUrl=url, MessageBody=env.to_json(), MessageGroupId=env.aggregate_id,
        MessageDeduplicationId=dedup_id or env.event_id,
        MessageAttributes={"event_type": {"DataType": "String", "StringValue": env.event_type},
                           "event_id": {"DataType": "String", "StringValue": env.event_id}})


def send_raw(client, url: str, body: str, group: str) -> None:
    """Publish a body that is not an envelope."""
    client.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group,
                        MessageDeduplicationId=uuid.uuid4().hex)


def drain(client, url: str, expected: int, timeout: float = HANDLED_TIMEOUT_S) -> list[dict]:
    """Receive (and delete) until ``expected`` messages came, in arrival order."""
    got: list[dict] = []

    def receive_some():
        response = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                          MessageSystemAttributeNames=["All"],
                                          MessageAttributeNames=["All"])
        for message in response.get("Messages", []):
            got.append(message)
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(got) >= expected

    wait_until(receive_some, timeout=timeout, interval=0, message=f"{expected} messages")
    return got


def handled_rows(db) -> list[dict]:
    """What the handlers committed, in insert order."""
    with db.transaction() as cur:
        cur.execute("SELECT event_id::text, group_id, seq FROM handled ORDER BY id")
        return cur.fetchall()


def wait_handled(db, count: int, timeout: float = HANDLED_TIMEOUT_S) -> list[dict]:
    """Wait until the handlers committed at least ``count`` rows; return them."""
    def enough():
        rows = handled_rows(db)
        return rows if len(rows) >= count else None

    return wait_until(enough, timeout=timeout, message=f"{count} handled rows")


def seqs_by_group(rows: list[dict]) -> dict[str, list[int]]:
    """group -> seqs in handled order."""
    groups: dict[str, list[int]] = {}
    for row in rows:
        groups.setdefault(row["group_id"], []).append(row["seq"])
    return groups


def inbox_count(db) -> int:
    """Inbox rows of the test consumer."""
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM inbox WHERE consumer = %s", (CONSUMER_NAME,))
        return cur.fetchone()["n"]


# ------------------------------------------------------------------------ tests
def test_relay_publishes_with_explicit_group_and_dedup_ids(db, client, make_queue):
    """The relay sends group = aggregate, dedup id = event id, attributes, in order."""
    spec, prefix, q = make_queue()
    # order.created also fans out to inventory-events.fifo: every routed queue must exist.
    routes = tuple(routes_for(PRODUCER, EVENT_TYPE))
    ensure_queues(client, Topology(tuple(r for r in routes if r.name != spec.name)), prefix)
    events = [envelope(group, seq) for seq in range(3) for group in ("agg-a", "agg-b")]
    with db.transaction() as cur:
        for event in events:
            add_event(cur, PRODUCER, event)
    relay = OutboxRelay(db, sync_client(client.meta.endpoint_url, REGION), TOPOLOGY, PRODUCER,
                        prefix)
    published, _ = relay.publish_once()
    assert published == len(events) * len(routes)

    received = drain(client, q.url, len(events))
    by_id = {e.event_id: e for e in events}
    for message in received:
        body = Envelope.from_json(message["Body"])
        sent = by_id[body.event_id]
        assert body == sent
        assert message["Attributes"]["MessageGroupId"] == sent.aggregate_id
        assert message["Attributes"]["MessageDeduplicationId"] == sent.event_id
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes == {"event_type": EVENT_TYPE, "event_id": sent.event_id,
                              "correlation_id": sent.correlation_id}
    arrived = {}
    for message in received:
        body = json.loads(message["Body"])
        arrived.setdefault(body["aggregate_id"], []).append(body["data"]["seq"])
    assert arrived == {"agg-a": [0, 1, 2], "agg-b": [0, 1, 2]}
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
        assert cur.fetchone()["n"] == 0


def test_broker_drops_a_resend_with_the_same_dedup_id(client, make_queue):
    """A resend with the same dedup id while the first is queued is dropped."""
    _, _, q = make_queue()
    event = envelope("agg-dedup")
    send(client, q.url, event)
    send(client, q.url, event)  # a relay retrying after a lost response
    other = envelope("agg-dedup", 1)
    send(client, q.url, other)
    received = drain(client, q.url, 2)
    assert [Envelope.from_json(m["Body"]).event_id for m in received] == [event.event_id,
                                                                          other.event_id]
    assert_queue_empty(client, q.url)


def test_consumer_keeps_per_group_order(db, client, make_queue, consumers):
    """Each group is handled in send order, every message once."""
    spec, prefix, q = make_queue()
    groups = [f"group-{n}" for n in range(3)]
    per_group = 6
    for seq in range(per_group):
        for group in groups:
            # Tiny uneven handler times give the groups a chance to interleave.
            send(client, q.url, envelope(group, seq, sleep_s=0.01 * ((seq + len(group)) % 3)))
    consumers.start(spec, prefix, Recorder())

    rows = wait_handled(db, per_group * len(groups))
    assert seqs_by_group(rows) == {group: list(range(per_group)) for group in groups}
    assert inbox_count(db) == per_group * len(groups)
    assert_queue_empty(client, q.url)


def test_duplicate_delivery_runs_the_handler_once(db, client, make_queue, consumers):
    """The inbox turns a redelivered event into an acknowledged duplicate."""
    spec, prefix, q = make_queue()
    event = envelope("agg-dup")
    send(client, q.url, event, dedup_id=f"{event.event_id}-first")
    send(client, q.url, event, dedup_id=f"{event.event_id}-second")  # the broker keeps both
    recorder = Recorder()
    runner = consumers.start(spec, prefix, recorder)

    wait_until(lambda: len(runner.consumer.kinds(event.event_id)) == 2, timeout=HANDLED_TIMEOUT_S,
               message="both copies processed")
    assert sorted(runner.consumer.kinds(event.event_id)) == ["done", "duplicate"]
    assert recorder.call_count(event.event_id) == 1
    assert len(handled_rows(db)) == 1
    assert inbox_count(db) == 1
    assert_queue_empty(client, q.url)


def test_transient_failure_is_retried_after_backoff_and_blocks_only_its_group(
        db, client, make_queue, consumers):
    """A failed message comes back after its backoff, ahead of its group; others go on."""
    spec, prefix, q = make_queue()
    failing = envelope("group-a", 0, fail_times=1)
    send(client, q.url, failing)
    for seq in (1, 2):
        send(client, q.url, envelope("group-a", seq))
    for seq in range(3):
        send(client, q.url, envelope("group-b", seq))
    recorder = Recorder()
    runner = consumers.start(spec, prefix, recorder)

    rows = wait_handled(db, 6)
    assert seqs_by_group(rows) == {"group-a": [0, 1, 2], "group-b": [0, 1, 2]}
    # Retried, on a later receive, no sooner than the backoff (1 s for the first retry).
    assert [kind for kind in runner.consumer.kinds(failing.event_id)] == ["retry", "done"]
    counts = [c for key, _, c in runner.consumer.outcomes if key == failing.event_id]
    assert counts[-1] >= 2
    failed_at = recorder.failures[failing.event_id][0]
    assert recorder.successes[failing.event_id] - failed_at >= FAST.retry_base_s * 0.8
    # The other group went on meanwhile: all of it was done before the retry succeeded.
    b_done = [recorder.successes[r["event_id"]] for r in rows if r["group_id"] == "group-b"]
    assert max(b_done) < recorder.successes[failing.event_id]
    assert_queue_empty(client, q.url)


def test_permanent_failures_go_to_the_dlq_at_once_with_reasons(db, client, make_queue,
                                                               consumers):
    """Bad body, unknown type, PermanentError, ValidationError: DLQ at once, with reasons."""
    spec, prefix, q = make_queue()
    send_raw(client, q.url, "this is not json", group="poison-a")
    after_poison = envelope("poison-a", 1)
    send(client, q.url, after_poison)  # the group goes on after a dead letter
    unknown = envelope("poison-b", event_type=UNKNOWN_EVENT_TYPE)
    send(client, q.url, unknown)
    permanent = envelope("poison-c", permanent=True)
    send(client, q.url, permanent)
    bad_schema = envelope("poison-d", bad_schema=True)
    send(client, q.url, bad_schema)
    fine = envelope("fine")
    send(client, q.url, fine)
    recorder = Recorder()
    consumers.start(spec, prefix, recorder)

    rows = wait_handled(db, 2)
    assert {r["event_id"] for r in rows} == {after_poison.event_id, fine.event_id}
    dead = drain(client, q.dlq_url, 4)
    reasons = {}
    for message in dead:
        attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        assert attributes["dlq_source_queue"] == spec.name
        assert attributes["dlq_consumer"] == CONSUMER_NAME
        assert attributes["dlq_error"].strip("-")
        assert attributes["dlq_failed_at"]
        assert message["Attributes"]["ApproximateReceiveCount"] == "1"
        reasons[message["Body"]] = (attributes["dlq_reason"], attributes["dlq_error"],
                                    attributes.get("event_type"))
    assert reasons["this is not json"][0] == "invalid_envelope"
    assert reasons[unknown.to_json()] == ("unknown_event_type", UNKNOWN_EVENT_TYPE,
                                          UNKNOWN_EVENT_TYPE)
    assert reasons[permanent.to_json()][0] == "permanent_error"
    assert "PermanentError" in reasons[permanent.to_json()][1]
    assert reasons[bad_schema.to_json()][0] == "permanent_error"
    assert "ValidationError" in reasons[bad_schema.to_json()][1]
    # Dead-lettered at the first failure: the handler ran once for each, never retried.
    assert recorder.call_count(permanent.event_id) == 1
    assert recorder.call_count(bad_schema.event_id) == 1
    assert recorder.call_count(unknown.event_id) == 0
    assert_queue_empty(client, q.url)


def test_message_failing_every_receive_goes_to_the_dlq_as_max_receives_exceeded(
        db, client, make_queue, consumers):
    """The last allowed receive dead-letters the message with max_receives_exceeded."""
    max_receives = 3
    spec, prefix, q = make_queue(max_receive_count=max_receives)
    doomed = envelope("doomed", always_fail=True)
    send(client, q.url, doomed)
    fine = envelope("fine")
    send(client, q.url, fine)
    recorder = Recorder()
    # A sub-second base backs off 0 s, then 1 s: three receives in about a second.
    consumers.start(spec, prefix, recorder, dataclasses.replace(FAST, retry_base_s=0.5))

    [dead] = drain(client, q.dlq_url, 1)
    attributes = {k: v["StringValue"] for k, v in dead["MessageAttributes"].items()}
    assert attributes["dlq_reason"] == "max_receives_exceeded"
    assert "RuntimeError: transient failure #3" in attributes["dlq_error"]
    assert Envelope.from_json(dead["Body"]).event_id == doomed.event_id
    assert recorder.call_count(doomed.event_id) == max_receives
    assert [r["event_id"] for r in wait_handled(db, 1)] == [fine.event_id]
    assert_queue_empty(client, q.url)


def test_heartbeat_keeps_a_slow_message_invisible(db, client, make_queue, consumers):
    """A handler slower than the visibility timeout is not redelivered meanwhile."""
    spec, prefix, q = make_queue(visibility_s=SHORT_VISIBILITY_S)
    slow = envelope("slow", sleep_s=SLOW_HANDLER_S)
    send(client, q.url, slow)
    recorder = Recorder()
    runner = consumers.start(spec, prefix, recorder)

    wait_handled(db, 1, timeout=SLOW_HANDLER_S + HANDLED_TIMEOUT_S)
    # The handler outlived the visibility timeout more than twice over, yet the other
    # poller never got the message again.
    assert_queue_empty(client, q.url)
    assert recorder.call_count(slow.event_id) == 1
    assert runner.consumer.kinds(slow.event_id) == ["done"]


def test_stop_finishes_in_flight_and_releases_unstarted_messages(db, client, make_queue, consumers):
    """Stop: the in-flight handler commits; the rest is released for the next consumer."""
    spec, prefix, q = make_queue()  # 30 s visibility: a message not released would sit that long
    first = envelope("group-a", 0, block=True)
    send(client, q.url, first)
    rest = [envelope("group-a", seq) for seq in range(1, 5)]
    for event in rest:
        send(client, q.url, event)
    recorder = Recorder()
    runner = consumers.start(spec, prefix, recorder)

    assert recorder.blocked.wait(HANDLED_TIMEOUT_S), "first message never reached the handler"
    runner.request_stop()
    recorder.release.set()
    runner.stop()
    # The in-flight handler finished and its message was deleted; nothing else ran.
    assert [r["seq"] for r in handled_rows(db)] == [0]
    assert runner.consumer.kinds(first.event_id) == ["done"]

    started = time.monotonic()
    second = consumers.start(spec, prefix, recorder)
    rows = wait_handled(db, 1 + len(rest), timeout=spec.visibility_timeout_s / 2)
    assert time.monotonic() - started < spec.visibility_timeout_s / 2
    assert [r["seq"] for r in rows] == [0, 1, 2, 3, 4]
    assert recorder.call_count(first.event_id) == 1
    assert second.consumer.kinds(first.event_id) == []
    assert_queue_empty(client, q.url)

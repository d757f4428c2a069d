"""One chaos run: start the system, drive traffic through the fault schedule, go quiet, check.

:func:`chaos_run` returns a :class:`RunResult` (figures, faults with their
recovery times, violations per invariant) that :mod:`.report` writes out.
"""

from __future__ import annotations

import pickle
import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from devstack.chaos import faults as f
from devstack.chaos import flow, invariants
from devstack.chaos.stack import (
    CATALOG,
    EXPIRY_INTERVAL_S,
    INITIAL_ON_HAND,
    PAYMENT_TTL_S,
    ChaosStack,
)
from shared.queues import QUEUES

PROBE_TIMEOUT_S = 300.0
QUIESCENCE_TIMEOUT_S = 600.0
CANCEL_DELAY_S = (0.0, 1.5)   # a cancel within this of placing; some land before shipping
# What a customer does after checkout (Placed.plan): pay; pay then cancel; cancel unpaid; or
# walk away unpaid (the order expires after ORDER_PAYMENT_TTL_S).
PAY, PAY_THEN_CANCEL, CANCEL_UNPAID, UNPAID = "pay", "pay-then-cancel", "cancel-unpaid", "unpaid"
# The one checkout made while the provider is frozen must be refused (503), not hang: each attempt
# gets this long, all of them (same key) FROZEN_CHECKOUT_BUDGET_S. The budget outlasts the order
# service's 60 s takeover of a key left in progress by a killed order API.
FROZEN_CHECKOUT_TIMEOUT_S = 30.0
FROZEN_CHECKOUT_BUDGET_S = 120.0


@dataclass
class Config:
    seed: int
    duration_s: float
    max_orders: int
    clients: int = 8
    cancel_ratio: float = 0.2     # half cancelled before paying, half after
    unpaid_ratio: float = 0.05    # left unpaid: they must expire
    sqs: str = "fauxqs"
    sqs_outage_s: float = 30.0
    freeze_s: float = 10.0
    provider_freeze_s: float = 12.0
    kills_per_process: int = 1
    duplicate_bursts: int = 4
    duplicates_per_burst: int = 25
    keep_data: bool = False


@dataclass
class FaultResult:
    fault: f.Fault
    started_s: float = 0.0
    detail: str = ""
    recovery_s: float | None = None   # outages: end of the fault -> an order placed after it shipped
    error: str | None = None


@dataclass
class RunResult:
    config: Config
    schedule: list[f.Fault]
    started_at: str = ""
    traffic_s: float = 0.0
    quiescence_s: float = 0.0
    placed: list[flow.Placed] = field(default_factory=list)
    faults: list[FaultResult] = field(default_factory=list)
    violations: dict[str, list[str]] = field(default_factory=dict)
    edges: dict[str, list[str]] = field(default_factory=dict)   # invariants.KNOWN_EDGES seen
    unexpected_exits: dict[str, list[str]] = field(default_factory=dict)
    dead_letters: int = 0
    corpus_sent: int = 0
    duplicates_sent: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> set[str]:
        return {p.order_id for p in self.placed if p.order_id}

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())


class _Receiver(BaseHTTPRequestHandler):
    """The webhook endpoint of the run's subscription: accepts every delivery."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args):
        pass


def chaos_run(config: Config, say=print) -> RunResult:
    options = f.Options(duration_s=config.duration_s, processes=(), sqs_outage_s=config.sqs_outage_s,
                        freeze_s=config.freeze_s, provider_freeze_s=config.provider_freeze_s,
                        kills_per_process=config.kills_per_process,
                        duplicate_bursts=config.duplicate_bursts,
                        duplicates_per_burst=config.duplicates_per_burst)
    stack = ChaosStack.create(config.sqs, say, config.keep_data)
    result = RunResult(config, [], started_at=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        stack.start()
        options.processes = tuple(stack.processes)
        result.schedule = f.schedule(config.seed, options)
        say(f"chaos: seed {config.seed}, {len(result.schedule)} faults:")
        for fault in result.schedule:
            say(f"  {fault.describe()}")
        threading.Thread(target=stack.watch, daemon=True).start()
        _drive(stack, config, result, receiver, say)
    finally:
        for name, process in stack.processes.items():
            if process.unexpected_exits:
                result.unexpected_exits[name] = process.unexpected_exits
        receiver.shutdown()
        stack.close()
        # The whole result, to render the report again without running again.
        with open(stack.run_dir / "result.pickle", "wb") as out:
            pickle.dump(result, out)
        say(f"chaos: logs and result.pickle in {stack.run_dir}")
    return result


def _drive(stack: ChaosStack, config: Config, result: RunResult, receiver, say) -> None:
    from shared.db import Database
    from shared.messaging.sqs import sync_client

    schemas = invariants.Schemas(*(Database(stack.database_url, f"{s}_svc", 1, 4)
                                   for s in invariants.SERVICES))
    sqs = sync_client(stack.sqs_direct_url, "us-east-1")
    urls = {spec.name: sqs.get_queue_url(QueueName=spec.name)["QueueUrl"] for spec in QUEUES}
    dlq_urls = {spec.name: sqs.get_queue_url(QueueName=spec.dlq_name)["QueueUrl"] for spec in QUEUES}
    token = _customer_token(stack)
    subscription = _subscribe(stack, token, f"http://127.0.0.1:{receiver.server_port}/hook")
    poison: dict[str, list] = {}
    stop = threading.Event()
    lock = threading.Lock()
    t0 = time.monotonic()

    def plan(rng: random.Random) -> str:
        draw = rng.random()
        if draw < config.unpaid_ratio:
            return UNPAID
        if draw < config.unpaid_ratio + config.cancel_ratio / 2:
            return CANCEL_UNPAID
        if draw < config.unpaid_ratio + config.cancel_ratio:
            return PAY_THEN_CANCEL
        return PAY

    def client(number: int) -> None:
        rng = random.Random(config.seed * 1000 + number)
        session = requests.Session()
        while not stop.is_set():
            with lock:
                if len(result.placed) >= config.max_orders:
                    return
            intent = plan(rng)
            record = flow.place_order(session, stack.urls["order"], token,
                                      flow.random_lines(rng, list(CATALOG)), "chaos@example.com")
            record.plan = intent
            with lock:
                result.placed.append(record)
            if not record.order_id or intent == UNPAID:
                continue
            if intent in (PAY, PAY_THEN_CANCEL):
                flow.pay(session, stack.urls["payment"], token, record)
            if intent in (CANCEL_UNPAID, PAY_THEN_CANCEL):
                time.sleep(rng.uniform(*CANCEL_DELAY_S))
                flow.cancel_order(session, stack.urls["order"], token, record)

    def probe(fault_result: FaultResult, ended: float) -> None:
        """Recovery: from the end of an outage until an order placed after it has a shipment."""
        session = requests.Session()
        record = flow.place_order(session, stack.urls["order"], token,
                                  [{"sku": "CHAOS-1", "quantity": 1}], "probe@example.com")
        record.plan = PAY
        with lock:
            result.placed.append(record)
        if record.order_id is None:
            fault_result.error = f"probe order not accepted: {record.status_code} {record.errors[-3:]}"
            return
        flow.pay(session, stack.urls["payment"], token, record)
        if record.pay_status != 200:
            fault_result.error = f"probe order not paid: {record.pay_status} {record.errors[-3:]}"
            return
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if schemas.rows("delivery", "SELECT 1 FROM shipments WHERE order_id = %s",
                                (record.order_id,)):
                    fault_result.recovery_s = round(time.monotonic() - ended, 2)
                    return
            except Exception:  # the database itself may be the thing coming back
                pass
            time.sleep(0.2)
        fault_result.error = "probe order got no shipment within the timeout"

    def checkout_while_provider_down() -> str:
        """One checkout while the provider is frozen: it must answer 503, not hang, and leave
        nothing behind (the invariants see any order without a 201, any confirmed reservation
        and any authorized payment without an order)."""
        began = time.monotonic()
        headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": f"chaos-{uuid.uuid4()}"}
        body = {"items": [{"sku": "CHAOS-2", "quantity": 1}], "customer_email": "probe@example.com",
                "shipping_address": flow.SHIPPING_ADDRESS}
        response, last_error = None, ""
        # Retried (same key) only when there is no answer at all or the first attempt still runs:
        # another fault may kill the order API meanwhile. The provider stays frozen until then.
        while time.monotonic() - began < FROZEN_CHECKOUT_BUDGET_S:
            try:
                response = requests.post(f"{stack.urls['order']}/v1/orders", json=body,
                                         headers=headers, timeout=FROZEN_CHECKOUT_TIMEOUT_S)
            except requests.RequestException as exc:
                last_error, response = type(exc).__name__, None
            else:
                if not (response.status_code == 409 and "Retry-After" in response.headers):
                    break
            time.sleep(flow.RETRY_PAUSE_S)
        if response is None:
            raise RuntimeError(f"checkout with the provider down got no answer: {last_error}")
        took = time.monotonic() - began
        if response.status_code != 503:  # (a 409 here: its key was still in progress at the end)
            if response.status_code == 201:  # it is a real order now: the invariants must know it
                record = flow.Placed(key="provider-down", lines=[], order_id=response.json()["id"],
                                     status_code=201, plan=UNPAID)
                with lock:
                    result.placed.append(record)
            raise RuntimeError(f"checkout with the provider down answered {response.status_code}, "
                               f"not 503 ({took:.1f}s)")
        return f"checkout answered 503 after {took:.1f}s"

    def execute(fault: f.Fault, fault_result: FaultResult) -> None:
        started = time.monotonic()
        try:
            if fault.kind == f.KILL:
                stack.kill(fault.target)
                time.sleep(fault.duration_s)
                ready = stack.restart(fault.target)
                fault_result.recovery_s = round(fault.duration_s + ready, 2)
                fault_result.detail = f"back {ready:.2f}s after the restart"
            elif fault.kind == f.SQS_OUTAGE:
                stack.proxy.go_down()
                time.sleep(fault.duration_s)
                stack.proxy.go_up()
                probe(fault_result, time.monotonic())
            elif fault.kind == f.PG_RESTART:
                away = stack.restart_postgres()
                fault_result.detail = f"down for {away:.2f}s"
                probe(fault_result, time.monotonic())
            elif fault.kind == f.FREEZE:
                import signal

                stack.signal_group(fault.target, signal.SIGSTOP)
                time.sleep(fault.duration_s)
                stack.signal_group(fault.target, signal.SIGCONT)
                probe(fault_result, time.monotonic())
            elif fault.kind == f.PROVIDER_FREEZE:
                import signal

                stack.signal_provider(signal.SIGSTOP)
                try:
                    fault_result.detail = checkout_while_provider_down()
                finally:
                    time.sleep(max(0.0, fault.duration_s - (time.monotonic() - started)))
                    stack.signal_provider(signal.SIGCONT)
                probe(fault_result, time.monotonic())
            elif fault.kind == f.DUPLICATE:
                rows = f.recent_envelopes(schemas, fault.count)
                sent = f.send_duplicates(sqs, urls, rows)
                result.duplicates_sent += sent
                fault_result.detail = f"{sent} envelopes sent again"
            elif fault.kind == f.POISON:
                try:
                    f.send_poison(sqs, urls, poison)
                finally:
                    result.corpus_sent = sum(len(v) for v in poison.values())
                fault_result.detail = f"{result.corpus_sent} malformed messages"
                probe(fault_result, time.monotonic())  # the consumers go on: a new order completes
        except Exception as exc:  # a fault that could not be injected is reported, not hidden
            fault_result.error = f"{type(exc).__name__}: {exc}"
            say(f"chaos: fault {fault.describe()} failed: {fault_result.error}")

    clients = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(config.clients)]
    for thread in clients:
        thread.start()
    running: list[threading.Thread] = []
    for fault in result.schedule:
        delay = t0 + fault.at_s - time.monotonic()
        if delay > 0 and stop.wait(delay):
            break
        fault_result = FaultResult(fault, started_s=round(time.monotonic() - t0, 1))
        result.faults.append(fault_result)
        say(f"chaos: {fault.describe()}  ({len(result.placed)} orders so far)")
        thread = threading.Thread(target=execute, args=(fault, fault_result), daemon=True)
        thread.start()
        running.append(thread)
    remaining = t0 + config.duration_s - time.monotonic()
    if remaining > 0:
        stop.wait(remaining)
    stop.set()
    say(f"chaos: traffic stops ({len(result.placed)} orders); waiting for the clients and faults")
    for thread in clients + running:
        thread.join(flow.GIVE_UP_AFTER_S + PROBE_TIMEOUT_S)
    result.traffic_s = round(time.monotonic() - t0, 1)
    for process in stack.processes.values():  # everything back before checking
        if process.health_url:
            stack.wait_ready(process, 120)

    say("chaos: waiting for quiescence")
    q0 = time.monotonic()
    _wait_quiet(schemas, sqs, urls, result.accepted, say)
    result.quiescence_s = round(time.monotonic() - q0, 1)
    dead = _drain_dead_letters(sqs, dlq_urls)
    result.dead_letters = sum(len(v) for v in dead.values())
    say(f"chaos: quiet after {result.quiescence_s}s; {result.dead_letters} dead letters; checking")
    accepted = result.accepted
    for name, check in invariants.CHECKS.items():
        result.violations[name] = check(schemas, accepted)
    result.violations[f"no order PENDING_PAYMENT past the TTL ({PAYMENT_TTL_S:.0f}s)"] = \
        invariants.no_order_unpaid_past_the_ttl(schemas, accepted, PAYMENT_TTL_S, EXPIRY_INTERVAL_S)
    result.violations["stock is conserved (on_hand, reserved, each order's reservation)"] = \
        invariants.stock_is_conserved(schemas, accepted, {sku: INITIAL_ON_HAND for sku in CATALOG})
    result.violations["one webhook delivery per order event, all delivered"] = \
        invariants.one_webhook_delivery_per_event(schemas, accepted, subscription)
    result.violations["every DLQ entry is an injected malformed message, with its reason"] = \
        invariants.dead_letters_are_the_poison(dead, poison)
    for name, (check, _why) in invariants.KNOWN_EDGES.items():
        result.edges[name] = check(schemas, accepted)
    lost = [p for p in result.placed if p.order_id is None]
    if lost:
        result.notes.append(f"{len(lost)} order requests got no 201: "
                            f"{sorted({str(p.status_code) for p in lost})}")
    for service in invariants.SERVICES:
        getattr(schemas, service).close()


def _customer_token(stack: ChaosStack) -> str:
    creds = stack.credentials
    response = requests.post(f"{stack.urls['auth']}/oauth/token", auth=("storefront",
                             creds["clients"]["storefront"]),
                             data={"grant_type": "password", "username": "demo@example.com",
                                   "password": creds["users"]["demo@example.com"]}, timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def _subscribe(stack: ChaosStack, token: str, url: str) -> str | None:
    response = requests.post(f"{stack.urls['notification']}/v1/webhooks", timeout=30,
                             headers={"Authorization": f"Bearer {token}"},
                             json={"name": "chaos run", "topic": "*", "delivery_url": url})
    if response.status_code != 201:
        stack.say(f"chaos: webhook subscription refused: {response.status_code} {response.text[:300]}")
        return None
    return response.json()["id"]


def _wait_quiet(schemas, sqs, urls, accepted: set[str], say) -> None:
    """Until every accepted order is terminal (unpaid ones expire), outboxes and queues are empty,
    mail is out and no refund is pending."""
    deadline = time.monotonic() + QUIESCENCE_TIMEOUT_S
    quiet_in_a_row = 0
    last = ""
    while time.monotonic() < deadline:
        try:
            pending = schemas.rows("order", "SELECT count(*) AS n FROM orders WHERE NOT (status = ANY(%s))",
                                   (list(flow.TERMINAL_STATUSES),))[0]["n"]
            unpublished = sum(schemas.rows(s, "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"
                                           )[0]["n"] for s in invariants.SERVICES)
            mail = schemas.rows("notification", "SELECT count(*) AS n FROM email_deliveries"
                                                " WHERE status IN ('pending', 'sending')")[0]["n"]
            hooks = schemas.rows("notification", "SELECT count(*) AS n FROM webhook_deliveries"
                                                 " WHERE status = 'pending'")[0]["n"]
            in_queues = sum(_depth(sqs, url) for url in urls.values())
            refunds = schemas.rows("payment", "SELECT count(*) AS n FROM refunds"
                                              " WHERE status = 'PENDING'")[0]["n"]
        except Exception as exc:  # noqa: BLE001 - keep waiting through a hiccup
            say(f"chaos: quiescence check failed: {exc}")
            time.sleep(1)
            continue
        state = (f"{pending} orders not terminal, {unpublished} unpublished, {in_queues} queued, "
                 f"{mail} mails, {hooks} webhooks and {refunds} refunds pending")
        if state != last:
            say(f"chaos: {state}")
            last = state
        quiet_in_a_row = quiet_in_a_row + 1 if not (pending or unpublished or in_queues or mail
                                                    or hooks or refunds) else 0
        if quiet_in_a_row >= 3:
            return
        time.sleep(1)
    say(f"chaos: not quiet after {QUIESCENCE_TIMEOUT_S:.0f}s ({last}); checking anyway")


def _depth(sqs, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return sum(int(v) for v in attributes.values())


def _drain_dead_letters(sqs, dlq_urls: dict[str, str]) -> dict[str, list[dict]]:
    """Every message in every DLQ (received, not deleted), with its dlq_reason."""
    out: dict[str, list[dict]] = {}
    for queue, url in dlq_urls.items():
        seen: dict[str, dict] = {}
        empty_in_a_row = 0
        while empty_in_a_row < 2:
            answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                         VisibilityTimeout=600, MessageAttributeNames=["All"])
            messages = answer.get("Messages", [])
            empty_in_a_row = 0 if messages else empty_in_a_row + 1
            for message in messages:
                attributes = message.get("MessageAttributes", {})
                seen[message["MessageId"]] = {
                    "body": message["Body"],
                    "reason": attributes.get("dlq_reason", {}).get("StringValue")}
        if seen:
            out[queue] = list(seen.values())
    return out


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"median {statistics.median(values):.1f}s, max {max(values):.1f}s"
            if len(values) > 1 else f"{values[0]:.1f}s")


def new_seed() -> int:
    return uuid.uuid4().int % 1_000_000

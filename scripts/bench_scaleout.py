"""Benchmark: the same backlog drained by 1, 2 and 4 worker processes (scale-out, shown).

Usage: ``make bench-scaleout`` or ``python scripts/bench_scaleout.py [--orders 3000]
[--delivery-processes 1,2,4] [--order-processes 1,2] [--quick]``.

What it does, all on 127.0.0.1 and within one run:

1. a fresh embedded PostgreSQL (or DATABASE_URL), fauxqs 1.9.2, the order and
   delivery schemas migrated;
2. **delivery stage**, for each process count: a fresh set of queues (own
   prefix), ``--orders`` valid ``order.paid`` events on ``order-paid.fifo``
   (delivery ships what is paid for; one message group per order, as the
   order relay sends them), then N ``services.delivery.worker`` processes with production
   settings (each also runs its outbox relay: N relays share the delivery
   outbox); throughput = shipments created per second, p10-p90 of completion;
3. **order stage**, for each process count: ``--orders`` orders written to the
   order schema, and for each the shipment's four events in order
   (``shipment_created``, ``shipped``, ``in_transit``, ``delivered``) on
   ``delivery-status.fifo`` (group = order), then N ``services.order.worker``
   processes; throughput = events applied per second;
4. checks: every order has exactly one shipment and one inbox row (delivery);
   every order's four events are in its history exactly once, applied, in
   the order they were sent, and it ended DELIVERED (order); every DLQ empty;
   no unpublished outbox rows left by the delivery relays.

Target (from the issue): 1 -> 2 processes >= 1.7x, ordering kept, nothing
handled twice. On a 2-core machine Postgres and fauxqs share the cores with
the workers, so 4 processes cannot double 2; the report prints the CPU each
part used per message so the cluster case can be read off it.

Exit status: 0 when every target and check passed, 1 otherwise, 2 when the
stack could not start, 130 on Ctrl-C.
"""

from __future__ import annotations

import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import click
import psycopg2
import psycopg2.extras

from devstack import bench
from devstack.bench import RssSampler, Stack, Verdicts, table

TARGET_SPEEDUP = 1.7
DELIVERY_EVENTS = ("delivery.shipment_created", "delivery.shipped", "delivery.in_transit",
                   "delivery.delivered")
STATUS_OF = {"delivery.shipment_created": "CREATED", "delivery.shipped": "SHIPPED",
             "delivery.in_transit": "IN_TRANSIT", "delivery.delivered": "DELIVERED"}
FILL_THREADS = 8
POLL_EVERY_S = 0.2
LABEL = "worker processes"
ADDRESS = {"name": "Bench Customer", "line1": "1 Loop Road", "line2": None, "city": "Localhost",
           "region": None, "postal_code": "12345", "country": "DE"}


def say(text: str) -> None:
    print(f"[bench-scaleout] {text}", flush=True)


@dataclass
class Stage:
    """One stage at one process count."""

    stage: str
    processes: int
    units: int                      # messages to handle
    rate: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    drained: bool = False


def steady_rate(timeline: list[tuple[float, int]], total: int) -> float:
    def when(share: float) -> float | None:
        return next((t for t, n in timeline if n >= share * total), None)

    low, high = when(0.10), when(0.90)
    if low is None or high is None or high <= low:
        return 0.0
    return 0.8 * total / (high - low)


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def order_paid(order_id: str) -> tuple[str, str]:
    """An ``order.paid`` event as the order relay sends it (what delivery creates shipments from)."""
    from shared.contracts import event_data
    from shared.messaging.envelope import Envelope

    data = event_data("order.paid", {
        "order_id": order_id, "customer_id": "bench-customer", "currency": "EUR",
        "total": "10.00", "shipping_address": ADDRESS, "paid_at": now_iso()})
    event = Envelope(event_type="order.paid", aggregate_id=order_id, data=data,
                     producer="order-service", correlation_id=f"bench-{order_id}")
    return event.event_id, event.to_json()


def shipment_event(order_id: str, shipment_id: str, event_type: str) -> tuple[str, str]:
    from shared.contracts import event_data
    from shared.messaging.envelope import Envelope

    data = event_data(event_type, {
        "shipment_id": shipment_id, "order_id": order_id, "status": STATUS_OF[event_type],
        "carrier": "bench", "tracking_number": f"T{shipment_id[:8]}", "location": None,
        "occurred_at": now_iso()})
    event = Envelope(event_type=event_type, aggregate_id=order_id, data=data,
                     producer="delivery-service", correlation_id=f"bench-{order_id}")
    return event.event_id, event.to_json()


def send_in_group_order(sqs_url: str, queue_url: str, per_group: dict[str, list[str]]) -> None:
    """Send each group's bodies in order, groups spread over threads, 10 per call."""
    from shared.messaging.sqs import sync_client

    groups = list(per_group)

    def send(owned: list[str]) -> None:
        client = sync_client(sqs_url, bench.REGION)
        entries = [(g, body) for g in owned for body in per_group[g]]
        for start in range(0, len(entries), 10):
            chunk = entries[start:start + 10]
            response = client.send_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "MessageBody": body, "MessageGroupId": g,
                 "MessageDeduplicationId": uuid.uuid4().hex} for i, (g, body) in enumerate(chunk)])
            if response.get("Failed"):
                raise RuntimeError(f"{len(response['Failed'])} sends failed")

    with ThreadPoolExecutor(FILL_THREADS) as pool:
        list(pool.map(send, [groups[t::FILL_THREADS] for t in range(FILL_THREADS)]))


def insert_orders(database_url: str, order_ids: list[str]) -> None:
    import json

    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            psycopg2.extras.execute_values(cur, (
                "INSERT INTO order_svc.orders (id, customer_id, customer_email, status, currency,"
                " total, shipping_address) VALUES %s"),
                [(o, "bench-customer", "bench@example.com", "PENDING_SHIPMENT", "EUR", "10.00",
                  json.dumps(ADDRESS)) for o in order_ids], page_size=1000)
            psycopg2.extras.execute_values(cur, (
                "INSERT INTO order_svc.order_lines (order_id, line_no, sku, quantity, unit_price,"
                " line_total) VALUES %s"),
                [(o, 1, "SKU-1", 1, "10.00", "10.00") for o in order_ids], page_size=1000)
    finally:
        conn.close()


def watch(stack: Stack, children, sampler: RssSampler, count, total: int,
          timeout_s: float) -> tuple[list[tuple[float, int]], dict[str, float], bool]:
    """Poll ``count()`` until ``total``; CPU per label from the first handled unit."""
    timeline: list[tuple[float, int]] = []
    cpu_first: dict[str, float] | None = None
    started = time.monotonic()
    done = 0
    while time.monotonic() - started < timeout_s:
        done = count()
        timeline.append((time.monotonic(), done))
        if done and cpu_first is None:
            cpu_first = sampler.cpu_by_label()
        if done >= total:
            break
        if any(c.proc.poll() is not None for c in children):
            say(f"a worker died; see {stack.run_dir / 'logs'}")
            break
        time.sleep(POLL_EVERY_S)
    cpu_end = sampler.cpu_by_label()
    cpu_ms = {}
    if cpu_first is not None and done:
        cpu_ms = {k: 1000 * (cpu_end[k] - cpu_first.get(k, 0.0)) / done for k in cpu_end}
    return timeline, cpu_ms, done >= total


def start_workers(stack: Stack, module: str, processes: int, env: dict, tag: str):
    children = [stack.start(f"{tag}-{n}", [sys.executable, "-m", module], env)
                for n in range(processes)]
    sampler = RssSampler(every_s=0.5)
    for child in children:
        sampler.track(LABEL, child.proc.pid)
    sampler.track("postgres", stack.postmaster_pid(), children=True)
    fauxqs = next(c for c in stack.children if c.name == "fauxqs")
    sampler.track("fauxqs", fauxqs.proc.pid)
    return children, sampler


def dlq_depths(sqs_url: str, prefix: str) -> dict[str, int]:
    from shared.messaging.sqs import physical_name, sync_client
    from shared.queues import TOPOLOGY

    client = sync_client(sqs_url, bench.REGION)
    depths = {}
    for spec in TOPOLOGY:
        url = client.get_queue_url(QueueName=physical_name(prefix, spec.dlq_name))["QueueUrl"]
        attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        depths[spec.dlq_name] = sum(int(v) for v in attrs.values())
    return depths


def delivery_stage(stack: Stack, database_url: str, sqs_url: str, processes: int, orders: int,
                   base_env: dict, timeout_s: float) -> Stage:
    from shared.bootstrap import bootstrap

    tag = f"delivery{processes}-{uuid.uuid4().hex[:6]}"
    prefix = f"{tag}-"
    urls = bootstrap(None, sqs_url, bench.REGION, prefix, ())
    order_ids = [str(uuid.uuid4()) for _ in range(orders)]
    say(f"delivery x{processes}: {orders} order.paid events into the backlog")
    send_in_group_order(sqs_url, urls["order-paid.fifo"],
                        {o: [order_paid(o)[1]] for o in order_ids})
    env = dict(base_env, QUEUE_PREFIX=prefix)
    children, sampler = start_workers(stack, "services.delivery.worker", processes, env, tag)
    conn = psycopg2.connect(database_url)
    conn.autocommit = True

    def count() -> int:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM delivery_svc.shipments WHERE order_id = ANY(%s::uuid[])",
                        (order_ids,))
            return cur.fetchone()[0]

    result = Stage("delivery: order.paid -> shipment", processes, orders)
    try:
        timeline, result.cpu_ms, result.drained = watch(stack, children, sampler, count, orders,
                                                        timeout_s)
        result.rate = steady_rate(timeline, orders)
        # Let the relays publish what the last transactions wrote before stopping them.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and unpublished(conn) > 0:
            time.sleep(0.2)
    finally:
        for child in children:
            stack.stop(child)
    with conn.cursor() as cur:
        cur.execute("""SELECT count(*) FILTER (WHERE n <> 1) FROM (
                         SELECT o, (SELECT count(*) FROM delivery_svc.shipments s
                                    WHERE s.order_id = o) AS n
                         FROM unnest(%s::uuid[]) AS o) x""", (order_ids,))
        not_once = cur.fetchone()[0]
    if not_once:
        result.problems.append(f"{not_once} orders without exactly one shipment")
    left = unpublished(conn)
    if left:
        result.problems.append(f"{left} delivery outbox rows unpublished")
    conn.close()
    dead = {k: v for k, v in dlq_depths(sqs_url, prefix).items() if v}
    if dead:
        result.problems.append(f"dead letters: {dead}")
    say(f"delivery x{processes}: {result.rate:,.0f} shipments/s")
    return result


def unpublished(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM delivery_svc.outbox WHERE published_at IS NULL")
        return cur.fetchone()[0]


def order_stage(stack: Stack, database_url: str, sqs_url: str, processes: int, orders: int,
                base_env: dict, timeout_s: float) -> Stage:
    from shared.bootstrap import bootstrap

    tag = f"order{processes}-{uuid.uuid4().hex[:6]}"
    prefix = f"{tag}-"
    urls = bootstrap(None, sqs_url, bench.REGION, prefix, ())
    order_ids = [str(uuid.uuid4()) for _ in range(orders)]
    insert_orders(database_url, order_ids)
    sent: dict[str, list[str]] = {}
    bodies: dict[str, list[str]] = {}
    for o in order_ids:
        shipment_id = str(uuid.uuid4())
        events = [shipment_event(o, shipment_id, t) for t in DELIVERY_EVENTS]
        sent[o] = [event_id for event_id, _ in events]
        bodies[o] = [body for _, body in events]
    total = orders * len(DELIVERY_EVENTS)
    say(f"order x{processes}: {total} delivery events ({orders} orders x 4) into the backlog")
    send_in_group_order(sqs_url, urls["delivery-status.fifo"], bodies)
    env = dict(base_env, QUEUE_PREFIX=prefix, OUTBOX_RELAY_ENABLED="false")
    children, sampler = start_workers(stack, "services.order.worker", processes, env, tag)
    conn = psycopg2.connect(database_url)
    conn.autocommit = True

    def count() -> int:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM order_svc.order_status_history"
                        " WHERE order_id = ANY(%s::uuid[])", (order_ids,))
            return cur.fetchone()[0]

    result = Stage("order: delivery events -> order history", processes, total)
    try:
        timeline, result.cpu_ms, result.drained = watch(stack, children, sampler, count, total,
                                                        timeout_s)
        result.rate = steady_rate(timeline, total)
    finally:
        for child in children:
            stack.stop(child)
    with conn.cursor() as cur:
        cur.execute("""SELECT order_id::text, array_agg(source_event_id::text ORDER BY id),
                              bool_and(applied)
                       FROM order_svc.order_status_history WHERE order_id = ANY(%s::uuid[])
                       GROUP BY order_id""", (order_ids,))
        history = {row[0]: (row[1], row[2]) for row in cur.fetchall()}
        cur.execute("SELECT count(*) FROM order_svc.orders WHERE id = ANY(%s::uuid[])"
                    " AND status <> 'DELIVERED'", (order_ids,))
        not_delivered = cur.fetchone()[0]
    conn.close()
    wrong = [o for o in order_ids if history.get(o, ([], False))[0] != sent[o]]
    not_applied = [o for o, (_, applied) in history.items() if not applied]
    if wrong:
        result.problems.append(f"{len(wrong)} orders whose history is not their events once, "
                               "in send order")
    if not_applied:
        result.problems.append(f"{len(not_applied)} orders with an event ignored (out of order)")
    if not_delivered:
        result.problems.append(f"{not_delivered} orders not DELIVERED at the end")
    dead = {k: v for k, v in dlq_depths(sqs_url, prefix).items() if v}
    if dead:
        result.problems.append(f"dead letters: {dead}")
    say(f"order x{processes}: {result.rate:,.0f} events/s")
    return result


@click.command()
@click.option("--orders", default=3000, show_default=True, type=click.IntRange(50, 100_000))
@click.option("--delivery-processes", default="1,2,4", show_default=True)
@click.option("--order-processes", default="1,2", show_default=True)
@click.option("--pollers", default=2, show_default=True, type=click.IntRange(1, 20))
@click.option("--batch-transaction", is_flag=True,
              help="CONSUMER_BATCH_TRANSACTION=true for every worker.")
@click.option("--timeout", "timeout_s", default=300.0, show_default=True,
              type=click.FloatRange(5, 3600))
@click.option("--quick", is_flag=True, help="600 orders: a smoke run, figures indicative only.")
@click.option("--quiet-timeout", default=30.0, show_default=True, type=click.FloatRange(0, 600))
@click.option("--keep-data", is_flag=True)
def main(orders, delivery_processes, order_processes, pollers, batch_transaction, timeout_s,
         quick, quiet_timeout, keep_data):
    """Drain one backlog with 1, 2, 4 delivery workers and 1, 2 order workers on fauxqs."""
    bench.install_sigterm_handler()
    if quick:
        orders = min(orders, 600)
    try:
        code = run(orders, [int(p) for p in delivery_processes.split(",") if p.strip()],
                   [int(p) for p in order_processes.split(",") if p.strip()], pollers,
                   batch_transaction, timeout_s, quiet_timeout, keep_data)
    except (KeyboardInterrupt, bench.Interrupted):
        print("interrupted; everything stopped", file=sys.stderr)
        code = 130
    sys.exit(code)


def run(orders: int, delivery_counts: list[int], order_counts: list[int], pollers: int,
        batch_transaction: bool, timeout_s: float, quiet_timeout: float, keep_data: bool) -> int:
    from shared.bootstrap import bootstrap

    results: list[Stage] = []
    with Stack.create("scaleout", keep_data=keep_data, say=say) as stack:
        try:
            database_url = stack.database()
            sqs_url = stack.start_fauxqs()
            bootstrap(database_url, None, bench.REGION, "", ("order", "delivery"),
                      create_queues=False)
        except (RuntimeError, TimeoutError, OSError, psycopg2.Error) as exc:
            say(f"could not start: {exc}")
            return 2
        env = bench.production_env(database_url, sqs_url, "")
        env.update({"CONSUMER_POLLERS": str(pollers), "CONSUMER_WAIT_TIME_S": "1",
                    "CONSUMER_BATCH_TRANSACTION": "true" if batch_transaction else "false",
                    "DB_POOL_MAX": "10", "DELIVERY_SIMULATOR_ENABLED": "false",
                    "OUTBOX_POLL_INTERVAL_S": "1"})
        watcher = RssSampler()
        # Every consumer process a run starts, and fauxqs, are this script's children.
        watcher.track_this_benchmark(stack.postmaster_pid())
        watcher.start()
        if quiet_timeout > 0:
            bench.wait_for_quiet_machine(watcher, quiet_timeout, say)
        mark = watcher.mark()
        for count in delivery_counts:
            results.append(delivery_stage(stack, database_url, sqs_url, count, orders, env,
                                          timeout_s))
        for count in order_counts:
            results.append(order_stage(stack, database_url, sqs_url, count, orders, env,
                                       timeout_s))
        foreign = watcher.foreign_since(mark)
        watcher.stop()
        log_dir = stack.run_dir / "logs"
    return report(results, orders, pollers, batch_transaction, foreign, log_dir)


def report(results: list[Stage], orders: int, pollers: int, batch_transaction: bool,
           foreign: tuple[float, float], log_dir) -> int:
    mode = "batch" if batch_transaction else "per-message"
    print(f"\nScale-out benchmark: {orders:,} orders per stage, fauxqs, {pollers} pollers per "
          f"process, transaction {mode}\n")
    base: dict[str, float] = {}
    rows = []
    for r in results:
        if r.processes == 1:
            base[r.stage] = r.rate
        speedup = r.rate / base[r.stage] if base.get(r.stage) else float("nan")
        rows.append((r.stage, r.processes, r.rate, f"{speedup:.2f}x",
                     r.cpu_ms.get(LABEL, float("nan")), r.cpu_ms.get("postgres", float("nan")),
                     r.cpu_ms.get("fauxqs", float("nan")),
                     "yes" if r.drained else "NO", "; ".join(r.problems) or "none"))
    print(table(("stage", "processes", "msgs/s (p10-p90)", "vs 1 process",
                 "workers CPU ms/msg", "postgres CPU ms/msg", "fauxqs CPU ms/msg", "drained",
                 "problems"), rows))
    verdicts = Verdicts()
    by = {(r.stage, r.processes): r for r in results}
    for stage in dict.fromkeys(r.stage for r in results):
        one, two = by.get((stage, 1)), by.get((stage, 2))
        if one and two and one.rate:
            verdicts.check(f"{stage}: 1 -> 2 processes", f"{two.rate / one.rate:.2f}x",
                           two.rate / one.rate >= TARGET_SPEEDUP, f">= {TARGET_SPEEDUP}x")
    problems = [p for r in results for p in r.problems] + [
        f"{r.stage} x{r.processes} did not drain" for r in results if not r.drained]
    verdicts.check("ordering kept, nothing handled twice, nothing dead-lettered",
                   f"{len(problems)} problems", not problems, "0")
    print()
    print(verdicts.render())
    for problem in problems:
        print(f"ERROR: {problem}")
    print(bench.foreign_load_note(*foreign)[0])
    print(f"logs: {log_dir}")
    return 0 if verdicts.all_passed else 1


if __name__ == "__main__":
    main()

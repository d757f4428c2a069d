"""Benchmark: order creation over HTTP, beside a minimal Flask + INSERT baseline.

Usage: ``make bench-orders`` or ``python scripts/bench_orders.py [--clients 32]
[--duration 15] ...`` (``--help`` lists every option).

What it does, all on 127.0.0.1 and within one run:

1. starts a fresh embedded PostgreSQL under ``.data/bench/`` (or uses
   DATABASE_URL), migrates the order and inventory schemas, seeds a catalog of
   the 200 skus the load orders (stock no run exhausts) and creates ``bench.orders``;
2. starts the order API, the inventory API (every order reserves its stock
   there first: the hop is part of order creation), the payment API on
   localstripe (checkout opens each order's PaymentIntent through it: the
   payment hop), the baseline app (``scripts/bench_baseline_app.py``, also as
   the minimal two-service request) and, unless ``--prepayment-ref ''``, the
   order service as it was just before checkout opened payments (the commit
   of ``--prepayment-ref`` extracted beside today's ``shared`` package, on
   today's schema): the **order path without the payment hop**, the same
   inventory hop, statements and shared code otherwise. Each under gunicorn
   with ``infra/gunicorn.conf.py`` and the same worker and thread counts; the
   APIs run with production settings (APP_ENV=production, JSON logs);
3. peak phase: ``--clients`` clients POST valid orders back to back for
   ``--duration`` seconds, against each app in turn (each after a short
   warm-up that is not counted); the CPU every process used during each peak
   is recorded;
4. half-load phase: requests released on a fixed schedule at half of each
   app's own measured peak for ``--half-duration`` seconds; latency counts
   from the scheduled send time;
5. prints a table and PASS/FAIL for the targets, checkout with the payment
   hop against the order path without it, and localstripe's share of the CPU
   during the checkout peak (localstripe, a Python aiohttp app, stands in for
   Stripe and is in the measured path: its CPU is this machine's, not ours in
   production); checks that every 201 left an order row (and an outbox row),
   stops everything.

Only the order APIs are started, not the workers: the SQS client they build
is never called (readiness is not probed; the outbox relay lives in the
worker). With ``--with-relay`` fauxqs and the order worker also run, so the
relay competes for the same CPU and database as it would on a single box.

Exit status: 0 when every target passed, 1 when one failed or any request
errored or a row is missing, 2 when the stack could not start, 130 on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click
import psycopg2

from devstack import bench
from devstack.bench import HOST, LoadResult, RssSampler, Stack, Verdicts, table
from devstack.tokens import mint_dev_token

# Targets from the issue.
TARGET_RATIO_OF_BASELINE = 0.5     # order creation throughput >= 50% of the baseline's
TARGET_P99_HALF_LOAD_MS = 50.0     # p99 at half of the measured peak (issue 9)
TARGET_RATIO_OF_TWO_HOP = 0.6      # checkout >= 60% of the minimal two-service request
# The order service as it was just before checkout opened a payment (main before the
# payments merge): the order path without the payment hop, on today's shared code and schema.
DEFAULT_PREPAYMENT_REF = "0649f25a646a3a94691b3b37021876b638111d30"
LOCALSTRIPE = "localstripe (Stripe emulator)"
WARMUP_S = 2.0
TOKEN_TTL_S = 3600
LOAD_GENERATOR = "this script (load generator)"
SKUS = [f"SKU-{n:04d}" for n in range(200)]
CATALOG_CURRENCY = "EUR"
CATALOG_STOCK = 10_000_000  # per sku: more than any run orders


def catalog_price(sku: str) -> str:
    """The bench catalog's price of ``sku`` (fixed per sku, 1.00-500.00)."""
    return f"{random.Random(sku).randint(100, 50_000) / 100:.2f}"


def seed_bench_catalog(database_url: str) -> None:
    """Every sku the load orders, in the inventory schema, with plenty of stock."""
    from decimal import Decimal

    from services.inventory.seed import seed_database

    seed_database(database_url, [
        {"sku": sku, "name": f"Bench item {sku}", "price": Decimal(catalog_price(sku)),
         "currency": CATALOG_CURRENCY, "on_hand": CATALOG_STOCK, "allow_backorder": False}
        for sku in SKUS])


def start_inventory_api(stack: Stack, env: dict[str, str]) -> tuple[bench.Child, str]:
    """The inventory API under gunicorn on a free port; (child, base URL)."""
    port = bench.free_port()
    child = stack.start("inventory-api", bench.gunicorn_args(
        "services.inventory.app:create_app()", port), env)
    return child, f"http://{HOST}:{port}"


def order_body(rng: random.Random, customer: str) -> dict:
    """A valid order with 1-3 lines, like a storefront would send (prices are the catalog's)."""
    skus = rng.sample(SKUS, rng.randint(1, 3))
    return {
        "items": [{"sku": sku, "quantity": rng.randint(1, 5)} for sku in skus],
        "customer_email": f"{customer}@example.com",
        "shipping_address": {"name": "Bench Customer", "line1": "1 Load Street",
                             "city": "Berlin", "postal_code": "10115", "country": "DE"},
    }


def request_factory(tokens: list[str], customers: list[str], idempotency_keys: bool,
                    baseline: bool, seed: int):
    """Build (headers, body) for request ``index`` sent by client ``number``."""
    rng = random.Random(seed)

    def make(_index: int, number: int) -> tuple[dict[str, str], dict]:
        body = order_body(rng, customers[number])
        headers = {"Authorization": f"Bearer {tokens[number]}"}
        if idempotency_keys:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        if baseline:
            # The baseline stores who ordered, like the order API does.
            body["customer_id"] = customers[number]
        return headers, body

    return make


async def run_phases(order_url: str, baseline_url: str, clients: int, duration: float,
                     half_duration: float, tokens: list[str], customers: list[str],
                     idempotency_keys: bool, say,
                     two_hop_url: str | None = None, no_pay_url: str | None = None,
                     sampler: RssSampler | None = None,
                     cpu: dict[str, dict[str, float]] | None = None) -> dict[str, LoadResult]:
    """Warm-up, peak and half-load phases for every app; results by phase name.

    ``cpu`` (with ``sampler``) receives the CPU seconds each process used during
    each app's peak phase.
    """
    order_req = request_factory(tokens, customers, idempotency_keys, False, 1)
    base_req = request_factory(tokens, customers, False, True, 2)
    two_req = request_factory(tokens, customers, False, True, 3)
    no_pay_req = request_factory(tokens, customers, idempotency_keys, False, 4)
    results: dict[str, LoadResult] = {}
    apps = [("baseline", baseline_url, base_req), ("orders", order_url, order_req)]
    if two_hop_url:
        apps.insert(1, ("two-hop", two_hop_url, two_req))
    if no_pay_url:
        apps.append(("orders-no-payment", no_pay_url, no_pay_req))
    for label, url, make in apps:
        say(f"warm-up {label}: {WARMUP_S:.0f}s")
        results[f"warmup {label}"] = await bench.closed_loop(
            f"warmup {label}", url, make, clients, WARMUP_S)
        say(f"peak {label}: {clients} clients for {duration:.0f}s")
        before = sampler.cpu_by_label() if sampler else {}
        results[f"peak {label}"] = await bench.closed_loop(
            f"peak {label}", url, make, clients, duration)
        if sampler is not None and cpu is not None:
            after = sampler.cpu_by_label()
            cpu[label] = {k: v - before.get(k, 0.0) for k, v in after.items()}
        say(f"  {results[f'peak {label}'].rate:,.0f} req/s")
    for label, url, make in apps:
        rate = results[f"peak {label}"].rate / 2
        if rate <= 0:
            say(f"half-load {label}: skipped (no successful request at peak)")
            continue
        say(f"half-load {label}: {rate:,.0f} req/s for {half_duration:.0f}s")
        results[f"half {label}"] = await bench.open_loop(
            f"half-load {label}", url, make, rate, half_duration, clients)
    return results


def count_rows(database_url: str) -> tuple[int, int, int, int]:
    """(order rows, order.created events in the outbox, baseline rows, reservations) right now.

    An event routed to several queues has one outbox row per queue: count events.
    """
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM order_svc.orders),"
                        " (SELECT count(DISTINCT event_id) FROM order_svc.outbox"
                        "   WHERE event_type = 'order.created'),"
                        " (SELECT count(*) FROM bench.orders),"
                        " (SELECT count(*) FROM bench.reservations)")
            return tuple(cur.fetchone())
    finally:
        conn.close()


@click.command()
@click.option("--clients", default=32, show_default=True, type=click.IntRange(1, 512),
              help="Concurrent clients in the peak phase (each its own customer and token).")
@click.option("--duration", default=15.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds of the peak phase, per app.")
@click.option("--half-duration", default=10.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds of the half-of-peak phase, per app.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 32),
              help="gunicorn worker processes (WEB_CONCURRENCY), the same for both apps.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="gunicorn threads per worker (GUNICORN_THREADS), the same for both apps.")
@click.option("--worker-class", default="gthread", show_default=True,
              type=click.Choice(["gthread", "sync", "gevent"]),
              help="gunicorn worker class of every API and baseline (GUNICORN_WORKER_CLASS).")
@click.option("--idempotency-keys/--no-idempotency-keys", default=False, show_default=True,
              help="Send a fresh Idempotency-Key with every order (two more transactions each).")
@click.option("--with-relay", is_flag=True,
              help="Also run fauxqs and the order worker, so the outbox relay competes for CPU.")
@click.option("--quiet-timeout", default=60.0, show_default=True, type=click.FloatRange(0, 600),
              help="Wait up to this long for other processes to leave the CPU alone (0: don't).")
@click.option("--keep-data", is_flag=True, help="Keep the embedded Postgres data directory.")
@click.option("--prepayment-ref", default=DEFAULT_PREPAYMENT_REF, show_default=True,
              help="Commit whose order service is run as the order path without the payment hop "
                   "('' to skip that app).")
@click.option("--quick", is_flag=True, help="5 s peaks, 4 s half load: a smoke run.")
def main(clients, duration, half_duration, workers, threads, worker_class, idempotency_keys,
         with_relay, quiet_timeout, keep_data, prepayment_ref, quick):
    """Order creation throughput and latency beside minimal one- and two-service baselines."""
    bench.install_sigterm_handler()
    if quick:
        duration, half_duration = min(duration, 5.0), min(half_duration, 4.0)
    try:
        code = run(clients, duration, half_duration, workers, threads, idempotency_keys,
                   with_relay, quiet_timeout, keep_data, prepayment_ref, worker_class)
    except (KeyboardInterrupt, bench.Interrupted):
        print("interrupted; everything stopped", file=sys.stderr)
        code = 130
    sys.exit(code)


def say(text: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[bench-orders] {text}", file=sys.stderr, flush=True)


def run(clients: int, duration: float, half_duration: float, workers: int, threads: int,
        idempotency_keys: bool, with_relay: bool, quiet_timeout: float, keep_data: bool,
        prepayment_ref: str = "", worker_class: str = "gthread") -> int:
    """Start the stack, run the phases, print the report; return the exit code."""
    from bench_baseline_app import ensure_schema

    from shared import migrations
    from shared.messaging.sqs import ensure_queues, sync_client
    from shared.queues import TOPOLOGY

    with Stack.create("orders", keep_data=keep_data, say=say) as stack:
        try:
            database_url = stack.database()
            migrations.upgrade("order", database_url)
            migrations.upgrade("inventory", database_url)
            seed_bench_catalog(database_url)
            ensure_schema(database_url)
            prefix = f"bench-{uuid.uuid4().hex[:8]}-"
            if with_relay:
                sqs_url = stack.start_fauxqs()
                ensure_queues(sync_client(sqs_url, bench.REGION), TOPOLOGY, prefix)
            else:
                # Nothing listens here; the API never calls SQS on the request path.
                sqs_url = f"http://{HOST}:{bench.free_port()}"
            secret = bench.new_jwt_secret()
            env = bench.production_env(database_url, sqs_url, prefix, secret)
            env.update({"WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads),
                        "GUNICORN_WORKER_CLASS": worker_class,
                        "BENCH_DATABASE_URL": database_url})
            order_port, base_port = bench.free_port(), bench.free_port()
            inventory_api, inventory_url = start_inventory_api(stack, env)
            stack.wait_http(inventory_api, f"{inventory_url}/health/live")
            # Checkout opens each order's payment too (payment API on localstripe).
            payment_api, payment_url = stack.start_payment_api(env)
            order_api = stack.start("order-api", bench.gunicorn_args(
                "services.order.app:create_app()", order_port),
                {**env, "INVENTORY_URL": inventory_url, "PAYMENT_URL": payment_url})
            no_pay_api, no_pay_port = None, bench.free_port()
            if prepayment_ref:
                # The same checkout minus the payment hop: the order service before the
                # payments merge beside today's shared package, on today's schema (the
                # payment columns it does not know are nullable). gunicorn --chdir puts the
                # extracted tree first on sys.path only if it is not on PYTHONPATH.
                no_pay_dir = bench.extract_order_service(prepayment_ref, stack.run_dir / "prepayment")
                no_pay_api = stack.start("order-api-no-payment", bench.gunicorn_args(
                    "services.order.app:create_app()", no_pay_port,
                    extra=("--chdir", str(no_pay_dir))),
                    {**env, "PYTHONPATH": "", "INVENTORY_URL": inventory_url})
            peer_port = bench.free_port()
            scripts_dir = ("--pythonpath", str(Path(__file__).resolve().parent))
            baseline_peer = stack.start("baseline-peer-api", bench.gunicorn_args(
                "bench_baseline_app:create_app()", peer_port, extra=scripts_dir), env)
            baseline = stack.start("baseline-api", bench.gunicorn_args(
                "bench_baseline_app:create_app()", base_port, extra=scripts_dir),
                {**env, "BENCH_PEER_URL": f"http://{HOST}:{peer_port}"})
            if with_relay:
                stack.start("order-worker", [sys.executable, "-m", "services.order.worker"],
                            {**env, "CONSUMER_WAIT_TIME_S": "1"})
            stack.wait_http(order_api, f"http://{HOST}:{order_port}/health/live")
            if no_pay_api is not None:
                stack.wait_http(no_pay_api, f"http://{HOST}:{no_pay_port}/health/live")
            stack.wait_http(baseline, f"http://{HOST}:{base_port}/health/live")
            stack.wait_http(baseline_peer, f"http://{HOST}:{peer_port}/health/live")
        except (RuntimeError, TimeoutError, OSError, psycopg2.Error,
                subprocess.CalledProcessError) as exc:
            say(f"could not start: {exc}")
            return 2

        sampler = RssSampler()
        sampler.track("order API (gunicorn)", order_api.proc.pid, children=True)
        if no_pay_api is not None:
            sampler.track("order API without payment hop (gunicorn)", no_pay_api.proc.pid,
                          children=True)
        sampler.track("inventory API (gunicorn)", inventory_api.proc.pid, children=True)
        sampler.track("payment API (gunicorn)", payment_api.proc.pid, children=True)
        localstripe = next(c for c in stack.children if c.name == "localstripe")
        sampler.track(LOCALSTRIPE, localstripe.proc.pid)
        sampler.track("baseline API (gunicorn)", baseline.proc.pid, children=True)
        sampler.track("baseline peer API (gunicorn)", baseline_peer.proc.pid, children=True)
        for child in stack.children:
            if child.name in ("order-worker", "fauxqs"):
                sampler.track(child.name, child.proc.pid)
        sampler.track("postgres", stack.postmaster_pid(), children=True)
        sampler.track(LOAD_GENERATOR, os.getpid())
        sampler.start()
        if quiet_timeout > 0:
            bench.wait_for_quiet_machine(sampler, quiet_timeout, say)
        tokens_cfg = bench.bench_tokens()
        customers = [f"bench-customer-{n:03d}" for n in range(clients)]
        tokens = [mint_dev_token(tokens_cfg, c, ["orders:write"], TOKEN_TTL_S) for c in customers]
        before = count_rows(database_url)
        started = time.monotonic()
        mark = sampler.mark()
        cpu: dict[str, dict[str, float]] = {}
        results = asyncio.run(run_phases(
            f"http://{HOST}:{order_port}/v1/orders", f"http://{HOST}:{base_port}/orders",
            clients, duration, half_duration, tokens, customers, idempotency_keys, say,
            two_hop_url=f"http://{HOST}:{base_port}/orders/two-hop",
            no_pay_url=f"http://{HOST}:{no_pay_port}/v1/orders" if no_pay_api else None,
            sampler=sampler, cpu=cpu))
        foreign = sampler.foreign_since(mark)
        sampler.stop()
        after = count_rows(database_url)
        died = stack.check_alive()
        say(f"load phases took {time.monotonic() - started:.0f}s; stopping")

    server = (f"{worker_class} {workers} workers x {threads} threads" if worker_class == "gthread"
              else f"{worker_class} {workers} workers")
    return report(results, before, after, died, sampler, foreign, clients, server,
                  idempotency_keys, with_relay, cpu, prepayment_ref)


def report(results: dict[str, LoadResult], before, after, died: list[str], sampler: RssSampler,
           foreign: tuple[float, float], clients: int, server: str,
           idempotency_keys: bool, with_relay: bool,
           cpu: dict[str, dict[str, float]] | None = None, prepayment_ref: str = "") -> int:
    """Print figures and verdicts; return the exit code."""
    print(f"\nOrder creation benchmark: gunicorn {server} "
          f"(infra/gunicorn.conf.py), {clients} clients, "
          f"idempotency keys {'on' if idempotency_keys else 'off'}, "
          f"relay {'running' if with_relay else 'not running'}\n")
    rows = []
    for name, result in results.items():
        if name.startswith("warmup"):
            continue
        rows.append((result.name, result.ok, result.error_summary(), result.rate,
                     result.pct_ms(50), result.pct_ms(95), result.pct_ms(99), result.pct_ms(100)))
    print(table(("phase", "ok", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"), rows))

    order_ok = sum(r.ok for n, r in results.items()
                   if n.endswith("orders") or n.endswith("orders-no-payment"))
    two_ok = sum(r.ok for n, r in results.items() if n.endswith("two-hop"))
    base_ok = sum(r.ok for n, r in results.items() if n.endswith("baseline")) + two_ok
    rows_added = tuple(a - b for a, b in zip(after, before, strict=True))
    print(f"\nrows: {rows_added[0]} orders and {rows_added[1]} order.created outbox events for "
          f"{order_ok} responses 201; {rows_added[2]} baseline rows for {base_ok}; "
          f"{rows_added[3]} reservations for {two_ok} two-hop 201s")

    print()
    print(table(("process", "peak RSS MiB (largest process)", "peak RSS MiB (sum)", "processes",
                 "CPU s"), sampler.peaks()))
    checkout_cpu = (cpu or {}).get("orders")
    if checkout_cpu:
        total = sum(checkout_cpu.values())
        done = max(1, results["peak orders"].ok)
        print(f"\nCPU during the checkout peak (with the payment hop): "
              f"{1000 * total / done:.1f} ms/order over every process; localstripe (Stripe's "
              f"stand-in, a Python aiohttp app, in the measured path) "
              f"{1000 * checkout_cpu.get(LOCALSTRIPE, 0.0) / done:.1f} ms/order = "
              f"{checkout_cpu.get(LOCALSTRIPE, 0.0) / total if total else 0:.0%}, the payment API "
              f"{1000 * checkout_cpu.get('payment API (gunicorn)', 0.0) / done:.1f} ms/order")
    verdicts = Verdicts()
    peak_order, peak_base = results["peak orders"], results["peak baseline"]
    ratio = peak_order.rate / peak_base.rate if peak_base.rate else 0.0
    verdicts.check("order throughput vs baseline", f"{ratio:.0%} ({peak_order.rate:,.0f} vs "
                   f"{peak_base.rate:,.0f} req/s)", ratio >= TARGET_RATIO_OF_BASELINE,
                   f">= {TARGET_RATIO_OF_BASELINE:.0%}")
    half = results.get("half orders")
    p99 = half.pct_ms(99) if half else float("nan")
    verdicts.check("order p99 at half of peak", f"{p99:.1f} ms at {half.rate if half else 0:,.0f} req/s",
                   half is not None and p99 < TARGET_P99_HALF_LOAD_MS,
                   f"< {TARGET_P99_HALF_LOAD_MS:.0f} ms")
    two = results.get("peak two-hop")
    if two is not None:
        ratio2 = peak_order.rate / two.rate if two.rate else 0.0
        verdicts.check("checkout vs two-service baseline", f"{ratio2:.0%} ({peak_order.rate:,.0f}"
                       f" vs {two.rate:,.0f} req/s)", ratio2 >= TARGET_RATIO_OF_TWO_HOP,
                       f">= {TARGET_RATIO_OF_TWO_HOP:.0%}")
    order_errors = sum(r.error_count for n, r in results.items()
                       if n.endswith("orders") or n.endswith("orders-no-payment"))
    verdicts.check("order errors", str(order_errors), order_errors == 0, "0")
    print()
    print(verdicts.render())
    no_pay = results.get("peak orders-no-payment")
    if no_pay is not None and no_pay.rate:
        # Not a target: what opening the payment (payment API + localstripe) costs checkout.
        print(f"\ncheckout with the payment hop vs the order path without it (order service at "
              f"{prepayment_ref[:10]}): {peak_order.rate / no_pay.rate:.0%} "
              f"({peak_order.rate:,.0f} vs {no_pay.rate:,.0f} req/s at peak)")

    problems = []
    base_errors = sum(r.error_count for n, r in results.items()
                      if n.endswith("baseline") or n.endswith("two-hop"))
    if base_errors:
        problems.append(f"the baseline had {base_errors} errors: its figures are not trustworthy")
    if rows_added[0] != order_ok or rows_added[1] != order_ok:
        problems.append(f"{order_ok} orders acknowledged but {rows_added[0]} order rows and "
                        f"{rows_added[1]} outbox events written")
    if rows_added[2] != base_ok:
        problems.append(f"{base_ok} baseline inserts acknowledged but {rows_added[2]} rows")
    if rows_added[3] < two_ok:
        problems.append(f"{two_ok} two-hop requests acknowledged but {rows_added[3]} reservations")
    if died:
        problems.append("processes died during the run: " + "; ".join(died))
    for problem in problems:
        print(f"ERROR: {problem}")
    print(bench.foreign_load_note(*foreign)[0])
    return 0 if verdicts.all_passed and not problems else 1


if __name__ == "__main__":
    main()

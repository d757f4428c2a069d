"""Benchmark: checkout (order creation with the inventory and payment hops) at peak and at
half load, its CPU per order in every process, and how fast the inventory breaker starts
failing fast when inventory dies.

Usage: ``make bench-checkout`` or ``python scripts/bench_checkout.py [--clients 32]
[--duration 15] ...`` (``--help`` lists every option).

What it does, all on 127.0.0.1 and within one run:

1. starts a fresh embedded PostgreSQL under ``.data/bench/`` (or uses
   DATABASE_URL), migrates the order and inventory schemas and seeds the
   catalog of the 200 skus the load orders (stock no run exhausts);
2. starts the order API, the inventory API and the payment API (on
   localstripe) under gunicorn with production settings and the same
   ``--workers`` x ``--threads``: every order reserves its stock over HTTP
   (breaker, timeout, retries), takes its prices from the reservation and
   opens its PaymentIntent;
3. a warm-up, ``--clients`` clients back to back for ``--duration`` seconds
   (peak; ``--rounds`` times, added up), then requests on a fixed schedule at
   half of the peak for ``--half-duration`` seconds (latency from the
   scheduled send time), and the CPU per order of every process at peak;
4. breaker: orders at ``--breaker-rate``/s for ``--breaker-duration`` seconds;
   ``--kill-after`` seconds in, inventory is frozen (SIGSTOP: it accepts
   connections and never answers) and, in a second round after it recovered,
   killed (SIGKILL: connections refused). For each request sent after that
   moment: its status and latency; "fails fast from" = the time after which
   every request is a 503 answered in < 50 ms;
5. prints tables and PASS/FAIL: fail-fast within 2 s of inventory dying at
   100 req/s, no errors in the load phases.

Checkout beside the minimal versions of itself (a bare one-INSERT endpoint, a
bare two-service request) is ``scripts/bench_orders.py``'s job. This script
used to compare checkout with the order service as it was before the
inventory hop (the "backbone", commit ``205212e``, run beside today's
``shared``); that tree no longer runs against today's ``shared`` (its outbox
calls and HS256 tokens predate today's), so the comparison was retired
(BENCHMARKS.md keeps its last figures).

Exit status: 0 when every target passed, 1 when one failed or a request
errored unexpectedly, 2 when the stack could not start, 130 on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import click
import psycopg2
import requests
from bench_orders import order_body, seed_bench_catalog, start_inventory_api

from devstack import bench
from devstack.bench import HOST, LoadResult, RssSampler, Stack, Verdicts, table
from devstack.tokens import mint_dev_token

# Targets from the issue.
TARGET_FAIL_FAST_S = 2.0       # breaker failing fast after inventory dies, at 100 req/s
FAST_S = 0.05                  # "fast": a 503 answered in under 50 ms
WARMUP_S = 2.0
RECOVERY_TIMEOUT_S = 60.0
TOKEN_TTL_S = 3600
REQUEST_TIMEOUT_S = 30.0
LOAD_GENERATOR = "this script (load generator)"


def say(text: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[bench-checkout] {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ requests


def request_factory(tokens: list[str], customers: list[str], body, seed: int):
    rng = random.Random(seed)

    def make(_index: int, number: int) -> tuple[dict[str, str], dict]:
        return {"Authorization": f"Bearer {tokens[number]}"}, body(rng, customers[number])

    return make


def merged(name: str, parts: list[LoadResult]) -> LoadResult:
    """One result from several runs of the same phase (their requests and time added up)."""
    result = LoadResult(name, sum(p.elapsed_s for p in parts))
    for part in parts:
        result.latencies += part.latencies
        result.errors.update(part.errors)
    return result


async def load_phases(apps: dict[str, tuple[str, object]], clients: int, duration: float,
                      half_duration: float, rounds: int, sampler: RssSampler,
                      cpu: dict[str, dict[str, float]]) -> dict[str, LoadResult]:
    """Warm-up, peak and half-load phases per app; results by phase name.

    With several apps the peak runs ``rounds`` times per app in ABBA order, so a
    load that drifts during the run weighs on every app alike. ``cpu`` receives
    the CPU seconds each process used during each app's peaks.
    """
    results: dict[str, LoadResult] = {}
    for label, (url, make) in apps.items():
        say(f"warm-up {label}: {WARMUP_S:.0f}s")
        await bench.closed_loop(f"warmup {label}", url, make, clients, WARMUP_S)
    labels = list(apps)
    order = [label for n in range(rounds) for label in (labels if n % 2 == 0 else labels[::-1])]
    peaks: dict[str, list[LoadResult]] = {label: [] for label in labels}
    for label in order:
        url, make = apps[label]
        say(f"peak {label}: {clients} clients for {duration:.0f}s")
        before = sampler.cpu_by_label()
        peaks[label].append(await bench.closed_loop(f"peak {label}", url, make, clients,
                                                       duration))
        after = sampler.cpu_by_label()
        spent = cpu.setdefault(label, {})
        for process, seconds in after.items():
            spent[process] = spent.get(process, 0.0) + seconds - before.get(process, 0.0)
        say(f"  {peaks[label][-1].rate:,.0f} req/s")
    for label in labels:
        results[f"peak {label}"] = merged(f"peak {label}", peaks[label])
    for label, (url, make) in apps.items():
        rate = results[f"peak {label}"].rate / 2
        if rate <= 0:
            continue
        say(f"half-load {label}: {rate:,.0f} req/s for {half_duration:.0f}s")
        results[f"half {label}"] = await bench.open_loop(f"half-load {label}", url, make, rate,
                                                            half_duration, clients)
    return results


# ------------------------------------------------------------------- breaker


@dataclass
class Shot:
    """One request of the breaker phase: when it was due, what came back, how long it took."""

    sent_s: float      # offset from the phase start
    status: str        # "201", "503", ... or an exception name
    latency_s: float


@dataclass
class BreakerRound:
    mode: str
    shots: list[Shot]
    fault_at_s: float

    @property
    def after(self) -> list[Shot]:
        return sorted((s for s in self.shots if s.sent_s >= self.fault_at_s), key=lambda s: s.sent_s)

    @property
    def fail_fast_after_s(self) -> float | None:
        """Seconds from the fault until every later request was a fast 503 (None: never)."""
        after = self.after
        start = len(after)  # start of the trailing run of fast 503s
        while start > 0 and _fast(after[start - 1]):
            start -= 1
        if start == len(after):
            return None
        return after[start].sent_s - self.fault_at_s

    @property
    def first_fast_s(self) -> float | None:
        fast = [s for s in self.after if _fast(s)]
        return fast[0].sent_s - self.fault_at_s if fast else None

    def counts(self) -> str:
        after = self.after
        slow = [s for s in after if not _fast(s)]
        kinds: dict[str, int] = {}
        for shot in slow:
            kinds[shot.status] = kinds.get(shot.status, 0) + 1
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())) or "none"
        return f"{len(after) - len(slow)} fast 503 / {len(slow)} other ({detail})"

    def slowest_s(self) -> float:
        return max((s.latency_s for s in self.after), default=0.0)


def _fast(shot: Shot) -> bool:
    return shot.status == "503" and shot.latency_s < FAST_S


async def paced_shots(url: str, make, identities: int, rate: float, duration_s: float,
                      fault_at_s: float, fault) -> tuple[list[Shot], float]:
    """Requests at ``rate``/s for ``duration_s``; ``fault()`` runs ``fault_at_s`` in."""
    shots: list[Shot] = []
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as session:
        started = time.perf_counter()
        fault_time: list[float] = []

        async def inject() -> None:
            await asyncio.sleep(fault_at_s)
            fault_time.append(time.perf_counter() - started)
            await loop.run_in_executor(None, fault)

        async def fire(index: int, scheduled: float) -> None:
            headers, body = make(index, index % identities)
            try:
                async with session.post(url, json=body, headers=headers) as response:
                    await response.read()
                    status = str(response.status)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                status = type(exc).__name__
            shots.append(Shot(scheduled - started, status, time.perf_counter() - scheduled))

        tasks = {asyncio.create_task(inject())}
        for index in range(int(rate * duration_s)):
            scheduled = started + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.add(asyncio.create_task(fire(index, scheduled)))
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 5)
    return shots, fault_time[0] if fault_time else fault_at_s


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def wait_for_orders(url: str, headers: dict, body: dict, timeout: float) -> bool:
    """Poll until the order API accepts an order again (its breaker closed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.post(url, json=body, headers=headers, timeout=5).status_code == 201:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.5)
    return False


# ---------------------------------------------------------------------- main


@click.command()
@click.option("--clients", default=32, show_default=True, type=click.IntRange(1, 512),
              help="Concurrent clients in the peak phase (each its own customer and token).")
@click.option("--duration", default=15.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds of the peak phase, per app.")
@click.option("--rounds", default=2, show_default=True, type=click.IntRange(1, 10),
              help="Peak phases per app, in ABBA order (their figures are added up).")
@click.option("--half-duration", default=10.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds of the half-of-peak phase, per app.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 32),
              help="gunicorn worker processes per API (WEB_CONCURRENCY).")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256),
              help="gunicorn threads per worker (GUNICORN_THREADS).")
@click.option("--breaker-rate", default=100.0, show_default=True, type=click.FloatRange(1, 2000),
              help="Orders per second while inventory dies.")
@click.option("--breaker-duration", default=6.0, show_default=True, type=click.FloatRange(2, 120),
              help="Seconds of each breaker round.")
@click.option("--kill-after", default=2.0, show_default=True, type=click.FloatRange(0.5, 60),
              help="Seconds into a breaker round when inventory is frozen / killed.")
@click.option("--quiet-timeout", default=60.0, show_default=True, type=click.FloatRange(0, 600),
              help="Wait up to this long for other processes to leave the CPU alone (0: don't).")
@click.option("--keep-data", is_flag=True, help="Keep the embedded Postgres data directory.")
def main(**options):
    """Checkout (order + inventory and payment hops) at peak and half load; breaker fail-fast."""
    bench.install_sigterm_handler()
    try:
        code = run(**options)
    except (KeyboardInterrupt, bench.Interrupted):
        print("interrupted; everything stopped", file=sys.stderr)
        code = 130
    sys.exit(code)


def run(clients: int, duration: float, rounds: int, half_duration: float, workers: int,
        threads: int,
        breaker_rate: float, breaker_duration: float, kill_after: float,
        quiet_timeout: float, keep_data: bool) -> int:
    """Start the stack, run the phases, print the report; return the exit code."""
    from shared import migrations

    with Stack.create("checkout", keep_data=keep_data, say=say) as stack:
        try:
            database_url = stack.database()
            migrations.upgrade("order", database_url)
            migrations.upgrade("inventory", database_url)
            seed_bench_catalog(database_url)
            prefix = f"bench-{uuid.uuid4().hex[:8]}-"
            # Nothing listens here; no API calls SQS on the request path.
            sqs_url = f"http://{HOST}:{bench.free_port()}"
            secret = bench.new_jwt_secret()
            env = bench.production_env(database_url, sqs_url, prefix, secret)
            env.update({"WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads)})
            inventory_api, inventory_url = start_inventory_api(stack, env)
            stack.wait_http(inventory_api, f"{inventory_url}/health/live")
            # Checkout opens each order's payment too (payment API on localstripe).
            payment_api, payment_url = stack.start_payment_api(env)
            checkout_port = bench.free_port()
            checkout_api = stack.start("checkout-order-api", bench.gunicorn_args(
                "services.order.app:create_app()", checkout_port),
                {**env, "INVENTORY_URL": inventory_url, "PAYMENT_URL": payment_url})
            stack.wait_http(checkout_api, f"http://{HOST}:{checkout_port}/health/live")
        except (RuntimeError, TimeoutError, OSError, psycopg2.Error,
                subprocess.CalledProcessError) as exc:
            say(f"could not start: {exc}")
            return 2

        sampler = RssSampler()
        sampler.track("order API (gunicorn)", checkout_api.proc.pid, children=True)
        sampler.track("inventory API (gunicorn)", inventory_api.proc.pid, children=True)
        sampler.track("payment API (gunicorn)", payment_api.proc.pid, children=True)
        sampler.track("postgres", stack.postmaster_pid(), children=True)
        sampler.track(LOAD_GENERATOR, os.getpid())
        sampler.start()
        if quiet_timeout > 0:
            bench.wait_for_quiet_machine(sampler, quiet_timeout, say)
        tokens_cfg = bench.bench_tokens()
        customers = [f"bench-customer-{n:03d}" for n in range(clients)]
        tokens = [mint_dev_token(tokens_cfg, c, ["orders:write"], TOKEN_TTL_S) for c in customers]
        checkout_url = f"http://{HOST}:{checkout_port}/v1/orders"
        apps = {"checkout": (checkout_url, request_factory(tokens, customers, order_body, 1))}
        mark = sampler.mark()
        cpu: dict[str, dict[str, float]] = {}
        results = asyncio.run(load_phases(apps, clients, duration, half_duration, rounds, sampler,
                                          cpu))
        foreign = sampler.foreign_since(mark)

        make = request_factory(tokens, customers, order_body, 3)
        breaker_rounds = []
        faults = (("frozen (SIGSTOP)", signal.SIGSTOP), ("killed (SIGKILL)", signal.SIGKILL))
        for mode, fault_signal in faults:
            say(f"breaker, inventory {mode}: {breaker_rate:.0f} orders/s for {breaker_duration:.0f}s, "
                f"fault at {kill_after:.1f}s")
            shots, fault_at = asyncio.run(paced_shots(
                checkout_url, make, clients, breaker_rate, breaker_duration, kill_after,
                lambda s=fault_signal: _signal_group(inventory_api.proc, s)))
            breaker_rounds.append(BreakerRound(mode, shots, fault_at))
            if fault_signal == signal.SIGSTOP:
                _signal_group(inventory_api.proc, signal.SIGCONT)
                say("inventory resumed; waiting for the breaker to let orders through again")
                if not wait_for_orders(checkout_url, *make(0, 0), RECOVERY_TIMEOUT_S):
                    say("orders were not accepted again after the freeze")
        sampler.stop()
        died = [d for d in stack.check_alive() if "inventory-api" not in d]
        log_dir = stack.run_dir / "logs"
        say("stopping")

    return report(results, cpu, breaker_rounds, died, sampler, foreign, clients, workers,
                  threads, breaker_rate, log_dir)


def report(results: dict[str, LoadResult], cpu: dict[str, dict[str, float]],
           rounds: list[BreakerRound], died: list[str], sampler: RssSampler,
           foreign: tuple[float, float], clients: int, workers: int, threads: int,
           breaker_rate: float, log_dir: Path) -> int:
    """Print figures and verdicts; return the exit code."""
    print(f"\nCheckout benchmark: gunicorn gthread {workers} workers x {threads} threads per API, "
          f"{clients} clients\n")
    rows = [(r.name, r.ok, r.error_summary(), r.rate, r.pct_ms(50), r.pct_ms(95), r.pct_ms(99),
             r.pct_ms(100)) for r in results.values()]
    print(table(("phase", "ok", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"), rows))

    processes = [label for label, *_ in sampler.peaks()]
    per_order = {p: cpu.get("checkout", {}).get(p, 0.0) * 1000 / max(1, results["peak checkout"].ok)
                 for p in processes}
    print("\nCPU per order at peak, ms (every process; idle ones near 0)\n")
    print(table(("process", "checkout"), [(p, f"{per_order[p]:.2f}") for p in processes]
                + [("total", f"{sum(per_order.values()):.2f}")]))

    print(f"\nBreaker: orders at {breaker_rate:.0f}/s, inventory faulted mid-round "
          f"(requests sent after the fault)\n")
    print(table(("inventory", "first fast 503 after", "all fast 503 from", "slowest request",
                 "requests after the fault"),
                [(r.mode, _seconds(r.first_fast_s), _seconds(r.fail_fast_after_s),
                  f"{r.slowest_s():.2f} s", r.counts()) for r in rounds]))
    print()
    print(table(("process", "peak RSS MiB (largest process)", "peak RSS MiB (sum)", "processes",
                 "CPU s"), sampler.peaks()))

    verdicts = Verdicts()
    killed = next(r for r in rounds if r.mode.startswith("killed"))
    fail_fast = killed.fail_fast_after_s
    verdicts.check(f"fail fast after inventory dies ({breaker_rate:.0f}/s)", _seconds(fail_fast),
                   fail_fast is not None and fail_fast < TARGET_FAIL_FAST_S,
                   f"< {TARGET_FAIL_FAST_S:.0f} s")
    errors = sum(r.error_count for r in results.values())
    verdicts.check("errors in the load phases", str(errors), errors == 0, "0")
    print()
    print(verdicts.render())
    if died:
        print("ERROR: processes died during the run: " + "; ".join(died))
    print(bench.foreign_load_note(*foreign)[0])
    print(f"logs: {log_dir}")
    return 0 if verdicts.all_passed and not died else 1


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


if __name__ == "__main__":
    main()

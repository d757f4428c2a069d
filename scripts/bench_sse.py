"""Benchmark: many concurrent SSE clients on ONE notification API instance.

What it does (everything on 127.0.0.1, bounded in time):

1. starts a fresh embedded Postgres, migrates ``notification_svc``;
2. starts the notification API as production runs it (gunicorn ``-k gevent``,
   one worker process) and opens ``--clients`` SSE streams, each a different
   customer with its own token;
3. commits ``--rate`` status events per second for ``--seconds`` through the
   worker's own handler (``OrderEventHandler``: one transaction, notification
   insert + NOTIFY), spread round-robin over the customers, and records each
   event's commit time;
4. every client records when each event arrives: latency = receipt - commit;
   lost = expected but never received; duplicated = received twice;
5. repeats 2-4 against the baseline (``bench_sse_baseline_app.py``: the same
   gunicorn/gevent/Flask, a bare LISTEN/NOTIFY fan-out, no auth, no replay);
6. prints p50/p99/max latency, loss, duplicates and the API's peak RSS.

    .venv/bin/python scripts/bench_sse.py [--clients 1000] [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import click
import psycopg2
from cryptography.fernet import Fernet

from devstack import bench
from devstack.tokens import mint_dev_token
from shared.db import Database
from shared.logging import configure_logging
from shared.messaging.envelope import Envelope
from shared.migrations import upgrade

REPO_ROOT = Path(__file__).resolve().parent.parent

CONNECT_CONCURRENCY = 100
DRAIN_S = 5.0
P99_TARGET_MS = 500.0


@dataclass
class Run:
    """One scenario's measurements."""

    name: str
    commit_at: dict[int, float] = field(default_factory=dict)        # seq -> commit time
    received: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    connected: int = 0
    producer_late_s: float = 0.0
    rss_mib: float = 0.0

    def latencies_ms(self) -> list[float]:
        return sorted((times[0] - self.commit_at[seq]) * 1000
                      for seq, times in self.received.items() if seq in self.commit_at)

    @property
    def lost(self) -> int:
        return len(set(self.commit_at) - set(self.received))

    @property
    def duplicated(self) -> int:
        return sum(len(times) - 1 for times in self.received.values())


async def _client(session: aiohttp.ClientSession, url: str, headers: dict, run: Run,
                  seq_of, ready: asyncio.Event, stop: asyncio.Event, gate: asyncio.Semaphore):
    async with gate:
        response = await session.get(url, headers=headers)
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status} {await response.text()}")
        await response.content.readline()  # the first line arrives once we are subscribed
    run.connected += 1
    ready.set()
    try:
        while not stop.is_set():
            line = await response.content.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                now = time.time()
                run.received[seq_of(json.loads(line[6:]))].append(now)
    finally:
        response.close()


def _produce(commit_one, run: Run, rate: float, seconds: float, clients: int) -> None:
    started = time.monotonic()
    total = int(rate * seconds)
    for seq in range(total):
        due = started + seq / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            run.producer_late_s = max(run.producer_late_s, -delay)
        commit_one(seq, f"customer-{seq % clients}")
        run.commit_at[seq] = time.time()


async def _measure(run: Run, url_for, headers_for, seq_of, commit_one, clients: int, rate: float,
                   seconds: float, say) -> None:
    stop = asyncio.Event()
    ready = asyncio.Event()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(_client(session, url_for(n), headers_for(n), run, seq_of,
                                             ready, stop, gate)) for n in range(clients)]
        deadline = time.monotonic() + 120
        while run.connected < clients:
            failed = [t for t in tasks if t.done() and t.exception()]
            if failed:
                raise failed[0].exception()
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {run.connected}/{clients} clients connected")
            await asyncio.sleep(0.2)
        say(f"  {clients} streams open; committing {rate:g} events/s for {seconds:g}s")
        await asyncio.to_thread(_produce, commit_one, run, rate, seconds, clients)
        expected = len(run.commit_at)
        drain_until = time.monotonic() + DRAIN_S
        while len(run.received) < expected and time.monotonic() < drain_until:
            await asyncio.sleep(0.1)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _service_scenario(stack, database_url: str, secret: str, clients: int, rate: float,
                      seconds: float, sampler, say) -> Run:
    from services.notification.consumers import OrderEventHandler
    from services.notification.settings import notification_settings
    from shared.config import load_settings

    port = bench.free_port()
    env = bench.production_env(database_url, "http://127.0.0.1:1", "bench-", secret)
    env.update({"WEB_CONCURRENCY": "1", "NOTIFICATION_EMAIL_PROVIDER": "console",
                "NOTIFICATION_EMAIL_FROM": "bench@example.com",
                "NOTIFICATION_SECRET_KEYS": Fernet.generate_key().decode(), "LOG_LEVEL": "WARNING"})
    api = stack.start("notification-api", bench.gunicorn_args(
        "services.notification.app:create_app()", port,
        ("--worker-class", "gevent", "--worker-connections", str(clients + 100))), env)
    stack.wait_http(api, f"http://127.0.0.1:{port}/health/live")
    sampler.track("notification API", api.proc.pid, children=True)
    settings = notification_settings(load_settings("notification", env))
    handler = OrderEventHandler(settings)
    db = Database(database_url, "notification_svc", 1, 2)
    tokens = bench.bench_tokens()
    headers = [{"Authorization": "Bearer " + mint_dev_token(tokens, f"customer-{n}",
                                                             ["orders:read"], 3600)}
               for n in range(clients)]
    orders = [str(uuid.uuid4()) for _ in range(clients)]

    def commit_one(seq: int, customer: str) -> None:
        n = int(customer.rsplit("-", 1)[1])
        event = Envelope(event_type="order.status_changed", aggregate_id=orders[n],
                         producer="order-service",
                         data={"order_id": orders[n], "customer_id": customer,
                               "status": "SHIPPED", "seq": seq})
        with db.transaction() as cur:
            handler(cur, event)

    run = Run("notification API")
    try:
        asyncio.run(_measure(run, lambda n: f"http://127.0.0.1:{port}/v1/notifications/stream",
                             lambda n: headers[n], lambda d: d["data"]["seq"], commit_one,
                             clients, rate, seconds, say))
    finally:
        db.close()
        sampler.sample()
        run.rss_mib = next(p[1] for p in sampler.peaks() if p[0] == "notification API")
        stack.stop(api)
    return run


def _baseline_scenario(stack, database_url: str, clients: int, rate: float, seconds: float,
                       sampler, say) -> Run:
    conn = psycopg2.connect(database_url)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS bench_sse")
        cur.execute("CREATE TABLE IF NOT EXISTS bench_sse.events (id bigserial PRIMARY KEY,"
                    " customer text NOT NULL, payload jsonb NOT NULL,"
                    " created_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    port = bench.free_port()
    env = bench.production_env(database_url, "http://127.0.0.1:1", "bench-", "x" * 40)
    env.update({"WEB_CONCURRENCY": "1", "BENCH_DATABASE_URL": database_url,
                "PYTHONPATH": f"{REPO_ROOT / 'scripts'}:{REPO_ROOT}"})
    api = stack.start("baseline-api", bench.gunicorn_args(
        "bench_sse_baseline_app:create_app()", port,
        ("--worker-class", "gevent", "--worker-connections", str(clients + 100))), env)
    stack.wait_http(api, f"http://127.0.0.1:{port}/health")
    sampler.track("baseline API", api.proc.pid, children=True)
    lock = threading.Lock()

    def commit_one(seq: int, customer: str) -> None:
        with lock, conn, conn.cursor() as cur:
            payload = {"customer": customer, "seq": seq}
            cur.execute("INSERT INTO bench_sse.events (customer, payload) VALUES (%s, %s)"
                        " RETURNING id", (customer, json.dumps(payload)))
            payload["id"] = cur.fetchone()[0]
            cur.execute("SELECT pg_notify('bench_sse', %s)", (json.dumps(payload),))

    run = Run("baseline (bare LISTEN/NOTIFY)")
    try:
        asyncio.run(_measure(run, lambda n: f"http://127.0.0.1:{port}/stream?customer=customer-{n}",
                             lambda n: {}, lambda d: d["seq"], commit_one, clients, rate,
                             seconds, say))
    finally:
        conn.close()
        sampler.sample()
        run.rss_mib = next(p[1] for p in sampler.peaks() if p[0] == "baseline API")
        stack.stop(api)
    return run


@click.command()
@click.option("--clients", default=1000, show_default=True, help="Concurrent SSE streams.")
@click.option("--rate", default=200.0, show_default=True, help="Events committed per second.")
@click.option("--seconds", default=20.0, show_default=True, help="How long events are committed.")
@click.option("--keep-data", is_flag=True, help="Keep .data/bench/<run>/ afterwards.")
def main(clients: int, rate: float, seconds: float, keep_data: bool) -> None:
    """Run both scenarios and print the comparison."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * clients + 1024)), hard))
    bench.install_sigterm_handler()
    configure_logging("bench", "WARNING", "console")  # the handler runs in this process too
    runs: list[Run] = []
    with bench.Stack.create("sse", keep_data=keep_data) as stack:
        database_url = stack.database()
        upgrade("notification", database_url)
        sampler = bench.RssSampler().start()
        try:
            secret = bench.new_jwt_secret()
            print(f"notification API: {clients} clients, {rate:g} events/s, {seconds:g}s")
            runs.append(_service_scenario(stack, database_url, secret, clients, rate, seconds,
                                          sampler, print))
            print(f"baseline: {clients} clients, {rate:g} events/s, {seconds:g}s")
            runs.append(_baseline_scenario(stack, database_url, clients, rate, seconds, sampler,
                                           print))
        finally:
            sampler.stop()
    print()
    print(f"{'scenario':<30} {'events':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'lost':>5} {'dup':>5} {'RSS MiB':>8} {'late s':>7}")
    for run in runs:
        lat = run.latencies_ms()
        print(f"{run.name:<30} {len(run.commit_at):>7} {bench.percentile(lat, 50):>8.1f} "
              f"{bench.percentile(lat, 99):>8.1f} {max(lat) if lat else float('nan'):>8.1f} "
              f"{run.lost:>5} {run.duplicated:>5} {run.rss_mib:>8.1f} {run.producer_late_s:>7.2f}")
    service = runs[0]
    p99 = bench.percentile(service.latencies_ms(), 99)
    verdict = p99 < P99_TARGET_MS and service.lost == 0 and service.duplicated == 0
    print(f"\nnotification API: p99 {p99:.1f} ms (target < {P99_TARGET_MS:.0f}), "
          f"lost {service.lost}, duplicated {service.duplicated}: {'PASS' if verdict else 'FAIL'}")
    sys.exit(0 if verdict else 1)


if __name__ == "__main__":
    main()

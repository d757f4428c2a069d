"""Benchmark: webhook dispatch throughput of the notification worker.

What it does (everything on 127.0.0.1, bounded in time):

1. starts a fresh embedded Postgres and fauxqs (moto is too slow for load,
   see docs/sqs-portability.md, section 4), migrates ``notification_svc``, creates the queues;
2. starts a local receiver (aiohttp) that verifies every signature
   (HMAC-SHA256 of ``timestamp.body`` with the subscription's secret, fresh
   timestamp) and counts distinct ``Webhook-Id``s;
3. creates ``--subscriptions`` admin subscriptions (topic ``*``), each with its
   own secret, and starts ``--workers`` notification worker processes;
4. publishes ``--events`` order events to ``order-status.fifo`` (one group per
   order), and measures how fast the deliveries (events x subscriptions)
   arrive: the worker stores each notification, writes one delivery + outbox
   row per subscription, relays them to ``webhook-delivery``, consumes them and
   POSTs each one signed through the SSRF guard and the endpoint's breaker;
5. as a baseline, the same number of signed POSTs straight from a thread
   pool to the same receiver (no database, no queue).

    .venv/bin/python scripts/bench_webhooks.py [--events 500] [--subscriptions 10] [--workers 2]
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import requests
from aiohttp import web
from cryptography.fernet import Fernet

from devstack import bench
from services.notification import webhook_repository as repo
from services.notification.domain import sign
from services.notification.secretbox import SecretBox
from shared.db import Database
from shared.messaging.envelope import Envelope
from shared.messaging.sqs import ensure_queues, sync_client
from shared.migrations import upgrade
from shared.queues import TOPOLOGY

REPO_ROOT = Path(__file__).resolve().parent.parent

TARGET_PER_S = 200.0
TOLERANCE_S = 300
MAX_RUN_S = 300.0


class Receiver:
    """Verifies signatures; records the arrival time of each distinct Webhook-Id."""

    def __init__(self, secrets_by_url: dict[str, str] | None = None):
        self.secrets: dict[str, str] = secrets_by_url or {}
        self.arrivals: dict[str, float] = {}
        self.duplicates = 0
        self.bad_signatures = 0
        self.port = bench.free_port()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{name}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        secret = self.secrets.get(request.path, "")
        timestamp = request.headers.get("Webhook-Timestamp", "0")
        expected = "sha256=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body,
                                        hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(timestamp)) <= TOLERANCE_S
        if not (fresh and hmac.compare_digest(expected, request.headers.get("Webhook-Signature", ""))):
            with self._lock:
                self.bad_signatures += 1
            return web.Response(status=400)
        key = request.headers["Webhook-Id"]
        with self._lock:
            if key in self.arrivals:
                self.duplicates += 1
            else:
                self.arrivals[key] = time.monotonic()
        return web.Response(status=204)

    def start(self) -> Receiver:
        def run():
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_post("/hooks/{name}", self._handle)
            runner = self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            self._started.set()
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        self._started.wait(10)
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


def _rate(receiver: Receiver, started: float) -> tuple[float, float, float]:
    times = sorted(receiver.arrivals.values())
    if len(times) < 2:
        return 0.0, 0.0, 0.0
    steady = (len(times) - 1) / (times[-1] - times[0])
    return steady, len(times) / (times[-1] - started), times[-1] - started


def _baseline(receiver: Receiver, names: list[str], total: int, concurrency: int) -> float:
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency)
    session.mount("http://", adapter)
    body = b'{"topic":"order.updated","data":{"order_id":"x"}}'

    def post(n: int) -> None:
        name = names[n % len(names)]
        stamp = int(time.time())
        session.post(receiver.url(name), data=body, timeout=5, headers={
            "Content-Type": "application/json", "Webhook-Id": f"baseline-{n}",
            "Webhook-Topic": "order.updated", "Webhook-Timestamp": str(stamp),
            "Webhook-Signature": sign(receiver.secrets[f"/hooks/{name}"], stamp, body)})

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, range(total)))
    return total / (time.monotonic() - started)


@click.command()
@click.option("--events", default=500, show_default=True, help="Order events published.")
@click.option("--subscriptions", default=10, show_default=True, help="Endpoints per event.")
@click.option("--workers", default=2, show_default=True, help="Notification worker processes.")
@click.option("--keep-data", is_flag=True, help="Keep .data/bench/<run>/ afterwards.")
def main(events: int, subscriptions: int, workers: int, keep_data: bool) -> None:
    """Run the dispatch benchmark and its baseline; print deliveries per second."""
    bench.install_sigterm_handler()
    total = events * subscriptions
    with bench.Stack.create("webhooks", keep_data=keep_data) as stack:
        database_url = stack.database()
        upgrade("notification", database_url)
        sqs_url = stack.start_fauxqs()
        prefix = f"bench{uuid.uuid4().hex[:6]}-"
        sqs = sync_client(sqs_url, bench.REGION)
        queues = ensure_queues(sqs, TOPOLOGY, prefix)
        receiver = Receiver().start()
        db = Database(database_url, "notification_svc", 1, 2)
        names = [f"endpoint-{n}" for n in range(subscriptions)]
        secret_key = Fernet.generate_key().decode()
        box = SecretBox((secret_key,))  # stored encrypted, as the API stores them
        with db.transaction() as cur:
            for name in names:
                secret = "whsec_" + secrets.token_urlsafe(32)
                receiver.secrets[f"/hooks/{name}"] = secret
                repo.insert_subscription(cur, uuid.uuid4(), "bench-admin", True, name, "*",
                                         receiver.url(name), box.seal(secret), "active")
        env = bench.production_env(database_url, sqs_url, prefix, bench.new_jwt_secret())
        env.update({"NOTIFICATION_EMAIL_ENABLED": "false", "NOTIFICATION_EMAIL_PROVIDER": "console",
                    "NOTIFICATION_EMAIL_FROM": "bench@example.com",
                "NOTIFICATION_SECRET_KEYS": secret_key,
                    "NOTIFICATION_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "WARNING",
                    "DB_POOL_MAX": "24", "CONSUMER_POLLERS": "3", "CONSUMER_WAIT_TIME_S": "1",
                    "OUTBOX_POLL_INTERVAL_S": "0.2"})
        sampler = bench.RssSampler().start()
        for n in range(workers):
            child = stack.start(f"notification-worker-{n}",
                                [sys.executable, "-m", "services.notification.worker"], env)
            sampler.track(f"worker {n}", child.proc.pid)
        sampler.track("postgres", stack.postmaster_pid(), children=True)
        time.sleep(2)  # let the workers resolve their queues
        print(f"publishing {events} events x {subscriptions} subscriptions = {total} deliveries "
              f"({workers} worker processes)")
        started = time.monotonic()
        for start in range(0, events, 10):
            entries = []
            for n in range(start, min(events, start + 10)):
                order_id = str(uuid.uuid4())
                event = Envelope(event_type="order.status_changed", aggregate_id=order_id,
                                 producer="order-service",
                                 data={"order_id": order_id, "customer_id": f"c-{n}",
                                       "status": "SHIPPED", "seq": n})
                entries.append({"Id": str(n - start), "MessageBody": event.to_json(),
                                "MessageGroupId": order_id, "MessageDeduplicationId": event.event_id,
                                "MessageAttributes": {"event_type": {
                                    "DataType": "String", "StringValue": event.event_type}}})
            sqs.send_message_batch(QueueUrl=queues["order-status.fifo"], Entries=entries)
        deadline = started + MAX_RUN_S
        last, last_change = 0, time.monotonic()
        while receiver.count() < total and time.monotonic() < deadline:
            time.sleep(0.5)
            if receiver.count() != last:
                last, last_change = receiver.count(), time.monotonic()
            elif time.monotonic() - last_change > 30:
                break  # stalled
            dead = stack.check_alive()
            if dead:
                raise SystemExit(f"died: {dead}")
        steady, end_to_end, elapsed = _rate(receiver, started)
        got, dup, bad = receiver.count(), receiver.duplicates, receiver.bad_signatures
        sampler.stop()
        peaks = sampler.peaks()
        db.close()
        print("baseline: the same number of signed POSTs from 20 threads, no database or queue")
        base_receiver = Receiver(dict(receiver.secrets)).start()
        baseline_rate = _baseline(base_receiver, names, total, 20)
        base_receiver.stop()
        receiver.stop()
    print()
    print(f"deliveries received (verified, distinct): {got}/{total}; duplicates {dup}; "
          f"bad signatures {bad}")
    print(f"notification worker: {steady:.0f} deliveries/s steady (first to last), "
          f"{end_to_end:.0f}/s from publish, all done in {elapsed:.1f}s")
    print(f"baseline (bare signed POSTs): {baseline_rate:.0f} deliveries/s")
    for label, single, summed, count, cpu in peaks:
        print(f"  {label:<12} peak RSS {single:6.1f} MiB (sum {summed:6.1f} over {count}), "
              f"CPU {cpu:5.1f}s")
    ok = got == total and dup == 0 and bad == 0 and steady >= TARGET_PER_S
    print(f"\n>= {TARGET_PER_S:.0f}/s, none lost, none duplicated, every signature valid: "
          f"{'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

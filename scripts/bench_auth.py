#!/usr/bin/env python3
"""Auth benchmark: token issuance rate, and what token verification costs a request.

1. Token issuance: closed-loop clients POST ``/oauth/token``
   (``client_credentials``, HTTP Basic) to the auth API under gunicorn with
   the production config. Target: >= 300 tokens/s.
2. Verification overhead: ``GET /v1/orders/{id}`` on the order API as deployed
   (RS256 verification against the auth service's JWKS, the verified-token cache,
   the access-token deny-list followed from the auth service and holding
   ``--denied`` revoked entries), the same API with the cache off
   (``AUTH_TOKEN_CACHE_SIZE=0``: RS256 and the deny-list on every request), and,
   as the baseline, the same app with verification replaced by an unverified
   claims read (``bench_noverify_app.py``, a bench-only variant), all in the same
   run, alternating phases. Before measuring, a revoked token is shown refused by
   both verifying APIs. Target: p50 difference < 1 ms for each.

Everything listens on 127.0.0.1; every loop is bounded in time and count.
Progress goes to stderr, the report to stdout.

    .venv/bin/python scripts/bench_auth.py [--duration 10] [--clients 16]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import aiohttp
import click
from cryptography.fernet import Fernet

from devstack import bench
from devstack.bench import HOST, LoadResult, RssSampler, Stack, Verdicts, table

SCRIPTS = Path(__file__).resolve().parent

ISSUANCE_TARGET_PER_S = 300.0
OVERHEAD_TARGET_MS = 1.0
# Requests per phase are bounded as well as the time.
MAX_REQUESTS_PER_PHASE = 200_000
UNLIMITED = "1000000/minute"
VERIFY_CLIENTS = 1  # the benchmark measures throughput, not the limiter


def say(text: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[bench-auth] {text}", file=sys.stderr, flush=True)


async def _loop(name: str, clients: int, duration_s: float, send) -> LoadResult:
    """``clients`` coroutines calling ``send(session)`` back to back until the deadline."""
    result = LoadResult(name, 0.0)
    budget = iter(range(MAX_REQUESTS_PER_PHASE))
    connector = aiohttp.TCPConnector(limit=clients, limit_per_host=clients)
    timeout = aiohttp.ClientTimeout(total=bench.REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + duration_s

        async def client() -> None:
            while time.perf_counter() < deadline and next(budget, None) is not None:
                t0 = time.perf_counter()
                try:
                    status = await send(session)
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    result.errors[type(exc).__name__] += 1
                    continue
                if status != 200:
                    result.errors[f"HTTP {status}"] += 1
                    continue
                result.latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(client() for _ in range(clients)))
        result.elapsed_s = time.perf_counter() - started
    return result


def token_sender(url: str, client_id: str, secret: str):
    headers = {"Authorization": aiohttp.encode_basic_auth(client_id, secret)}

    async def send(session: aiohttp.ClientSession) -> int:
        async with session.post(url, data={"grant_type": "client_credentials"},
                                headers=headers) as response:
            await response.read()
            return response.status

    return send


def get_sender(url: str, token: str):
    headers = {"Authorization": f"Bearer {token}"}

    async def send(session: aiohttp.ClientSession) -> int:
        async with session.get(url, headers=headers) as response:
            await response.read()
            return response.status

    return send


@click.command()
@click.option("--duration", default=10.0, show_default=True, type=click.FloatRange(1, 300),
              help="Seconds per measured phase.")
@click.option("--clients", default=16, show_default=True, type=click.IntRange(1, 256))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 16),
              help="gunicorn worker processes per API.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(1, 10),
              help="Alternating verify/no-verify phases of the overhead comparison.")
@click.option("--skip-verification", is_flag=True, help="Only measure token issuance.")
@click.option("--denied", default=10_000, show_default=True, type=click.IntRange(0, 1_000_000),
              help="Revoked, unexpired access tokens on the deny-list while verifying.")
@click.option("--quiet-timeout", default=60.0, show_default=True, type=click.FloatRange(0, 600),
              help="Wait up to this long for other processes to leave the CPU alone (0: don't).")
def main(duration, clients, workers, threads, rounds, skip_verification, denied, quiet_timeout):
    """Token issuance throughput and the latency cost of verifying tokens."""
    bench.install_sigterm_handler()
    try:
        code = run(duration, clients, workers, threads, rounds, skip_verification, quiet_timeout,
                   denied)
    except (KeyboardInterrupt, bench.Interrupted):
        say("interrupted; everything stopped")
        code = 130
    sys.exit(code)


def run(duration, clients, workers, threads, rounds, skip_verification, quiet_timeout,
        denied=10_000) -> int:
    from services.auth import handlers
    from shared import migrations
    from shared.db import Database

    verdicts = Verdicts()
    with Stack.create("auth", say=say) as stack:
        database_url = stack.database()
        for service in ("auth", "order"):
            migrations.upgrade(service, database_url)
        # Nothing listens here: no API of this benchmark calls SQS on the request path.
        sqs_url = f"http://{HOST}:{bench.free_port()}"
        env = bench.production_env(database_url, sqs_url, "bench-", bench.new_jwt_secret())
        auth_port = bench.free_port()
        env.update({
            "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads),
            "AUTH_KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "AUTH_TOKEN_RATE_LIMIT_PER_CLIENT": UNLIMITED, "AUTH_TOKEN_RATE_LIMIT_PER_IP": UNLIMITED,
            "AUTH_URL": f"http://{HOST}:{auth_port}",
            # The order API verifies tokens with the real auth service's keys here.
            "AUTH_JWKS_URL": f"http://{HOST}:{auth_port}/.well-known/jwks.json",
            # GET /v1/orders/{id} never calls inventory; nothing listens there.
            "INVENTORY_URL": f"http://{HOST}:{bench.free_port()}",
            "PYTHONPATH": os.pathsep.join([str(SCRIPTS), env.get("PYTHONPATH", "")]),
        })
        auth_api = stack.start("auth-api", bench.gunicorn_args("services.auth.app:create_app()",
                                                                  auth_port), env)
        stack.wait_http(auth_api, f"http://{HOST}:{auth_port}/health/ready")
        db = Database(database_url, "auth_svc", 1, 2)
        try:
            creds = handlers.create_client(db, "bench", ["orders:read", "shipments:read"],
                                           ["client_credentials"], client_id="bench-client")
        finally:
            db.close()
        sampler = RssSampler()
        sampler.track("auth API (gunicorn)", auth_api.proc.pid, children=True)
        sampler.track("postgres", stack.postmaster_pid(), children=True)
        sampler.track("load generator", os.getpid())
        sampler.start()
        if quiet_timeout > 0:
            bench.wait_for_quiet_machine(sampler, quiet_timeout, say)

        token_url = f"http://{HOST}:{auth_port}/oauth/token"
        send = token_sender(token_url, creds.client_id, creds.client_secret)
        say("warming up the token endpoint")
        asyncio.run(_loop("warmup", clients, min(3.0, duration), send))
        say(f"token issuance: {clients} clients for {duration:.0f}s")
        issuance = asyncio.run(_loop("token issuance (client_credentials)", clients, duration, send))
        rows = [_row(issuance)]
        verdicts.check("token issuance", f"{issuance.rate:.0f}/s", issuance.rate >= ISSUANCE_TARGET_PER_S
                       and not issuance.errors, f">= {ISSUANCE_TARGET_PER_S:.0f}/s, no errors")

        if not skip_verification:
            overhead = _verification_phases(stack, env, database_url, token_url, creds, clients,
                                            duration, rounds, sampler, denied)
            if overhead is None:
                return 2
            rows += overhead["rows"]
            for name, delta in overhead["delta_ms"].items():
                verdicts.check(f"verification overhead (p50), {name}", f"{delta:.3f} ms",
                               delta < OVERHEAD_TARGET_MS, f"< {OVERHEAD_TARGET_MS} ms")
        sampler.stop()
        died = stack.check_alive()

    print(f"\nAuth benchmark: gunicorn gthread {workers} workers x {threads} threads, "
          f"{clients} clients, {duration:.0f}s per phase\n")
    print(table(("phase", "ok", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"), rows))
    print()
    print(table(("process", "peak RSS MiB", "CPU s"), [(p[0], p[1], p[4]) for p in sampler.peaks()]))
    print()
    print(verdicts.render())
    if died:
        print(f"\nprocesses died during the run: {', '.join(died)}")
        return 1
    return 0 if verdicts.all_passed else 1


def _row(result: LoadResult):
    return (result.name, result.ok, result.error_summary(), result.rate, result.pct_ms(50),
            result.pct_ms(95), result.pct_ms(99), result.pct_ms(100))


VARIANTS = {
    "verify": ("services.order.app:create_app()", {},
               "RS256 + JWKS, token cache, deny-list"),
    "nocache": ("services.order.app:create_app()", {"AUTH_TOKEN_CACHE_SIZE": "0"},
                "RS256 + JWKS + deny-list, no cache"),
    "noverify": ("bench_noverify_app:create_app()", {}, "verification disabled"),
}


def _fill_deny_list(database_url: str, count: int) -> None:
    """``count`` revoked, unexpired tokens (random jtis) on the deny-list, as after many logouts."""
    from shared.db import Database

    db = Database(database_url, "auth_svc", 1, 1)
    try:
        with db.transaction() as cur:
            cur.execute("INSERT INTO revoked_access_tokens (jti, expires_at, reason)"
                        " SELECT gen_random_uuid()::text, now() + interval '15 minutes', 'bench'"
                        " FROM generate_series(1, %s)", (count,))
    finally:
        db.close()


def _verification_phases(stack, env, database_url, token_url, creds, clients, duration, rounds,
                         sampler, denied):
    """Order API verifying (with and without the token cache) and not verifying, alternating;
    the p50 differences to the baseline."""
    import uuid

    import requests

    from shared.db import Database

    order_id = uuid.uuid4()
    db = Database(database_url, "order_svc", 1, 2)
    try:
        with db.transaction() as cur:
            cur.execute(
                "INSERT INTO orders (id, customer_id, customer_email, status, currency, total,"
                " shipping_address) VALUES (%s, %s, 'bench@example.com', 'PENDING_SHIPMENT', 'EUR',"
                " 10, '{}')", (order_id, creds.client_id))
            cur.execute("INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price,"
                        " line_total) VALUES (%s, 1, 'BENCH-1', 1, 10, 10)", (order_id,))
    finally:
        db.close()
    def new_token() -> str:
        return requests.post(token_url, data={"grant_type": "client_credentials", "scope": "orders:read"},
                             auth=(creds.client_id, creds.client_secret), timeout=5).json()["access_token"]

    token, doomed = new_token(), new_token()
    _fill_deny_list(database_url, denied)
    say(f"{denied} revoked tokens on the deny-list")
    ports = {name: bench.free_port() for name in VARIANTS}
    children = {}
    for name, port in ports.items():
        app, extra, _label = VARIANTS[name]
        children[name] = stack.start(f"order-api-{name}", bench.gunicorn_args(app, port), {**env, **extra})
    for name, child in children.items():
        stack.wait_http(child, f"http://{HOST}:{ports[name]}/health/live")
        sampler.track(f"order API {name} (gunicorn)", child.proc.pid, children=True)
    urls = {name: f"http://{HOST}:{port}/v1/orders/{order_id}" for name, port in ports.items()}
    for name, url in urls.items():
        for presented in (token, doomed):
            check = requests.get(url, headers={"Authorization": f"Bearer {presented}"}, timeout=5)
            if check.status_code != 200:
                say(f"{name}: GET answered {check.status_code}: {check.text[:200]}")
                return None
        bad = requests.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=5)
        say(f"{name}: an invalid token gets {bad.status_code}")
    # The deny-list is live in what is measured: a revoked token is refused by both verifying
    # APIs (every gunicorn worker: several requests each) within a second or two.
    revoked = requests.post(token_url.replace("/token", "/revoke"), data={"token": doomed},
                            auth=(creds.client_id, creds.client_secret), timeout=5)
    if revoked.status_code != 200:
        say(f"revocation answered {revoked.status_code}: {revoked.text[:200]}")
        return None
    for name in ("verify", "nocache"):
        deadline = time.monotonic() + 10
        while True:
            statuses = {requests.get(urls[name], headers={"Authorization": f"Bearer {doomed}"},
                                     timeout=5).status_code for _ in range(8)}
            if statuses == {401}:
                say(f"{name}: the revoked token is refused (401) after "
                    f"{10 - (deadline - time.monotonic()):.2f}s")
                break
            if time.monotonic() > deadline:
                say(f"{name}: the revoked token is still accepted ({sorted(statuses)})")
                return None
            time.sleep(0.05)
    say("warming up both order APIs")
    for name in urls:
        asyncio.run(_loop("warmup", clients, min(3.0, duration), get_sender(urls[name], token)))
    merged: dict[str, LoadResult] = {name: LoadResult(f"GET /v1/orders/{{id}} ({label})", 0.0)
                                     for name, (_app, _extra, label) in VARIANTS.items()}
    # One client, back to back: the p50 is then service time, not queueing behind other
    # requests, so a fraction of a millisecond of verification is not lost in the noise.
    clients = VERIFY_CLIENTS
    for round_no in range(rounds):
        order = tuple(VARIANTS) if round_no % 2 == 0 else tuple(reversed(VARIANTS))
        for name in order:
            say(f"round {round_no + 1}/{rounds}: {name}")
            result = asyncio.run(_loop(name, clients, duration, get_sender(urls[name], token)))
            merged[name].latencies.extend(result.latencies)
            merged[name].errors.update(result.errors)
            merged[name].elapsed_s += result.elapsed_s
    baseline = merged["noverify"].pct_ms(50)
    deltas = {VARIANTS[name][2]: merged[name].pct_ms(50) - baseline for name in ("verify", "nocache")}
    return {"rows": [_row(merged[name]) for name in VARIANTS], "delta_ms": deltas}


if __name__ == "__main__":
    main()

"""Helpers for the benchmark scripts (``scripts/bench_*.py``).

- :class:`Stack` starts what a benchmark needs (a fresh embedded Postgres under
  ``.data/bench/<run>/``, fauxqs, gunicorn APIs, workers) through the one
  :class:`devstack.supervisor.Supervisor`, with each child's output in a log
  file, and stops everything newest first, also on Ctrl-C or SIGTERM.
- :func:`bench_tokens` / :func:`bench_auth_env` — the benchmark's token signer
  and the loopback JWKS the services verify it with (:mod:`devstack.tokens`).
- :func:`closed_loop` / :func:`open_loop` are the HTTP load generators
  (aiohttp, one event loop): N clients back to back, or requests released on
  a fixed schedule, latency counted from the *scheduled* start so a stalled
  server cannot hide its queueing delay (no coordinated omission).
- :class:`RssSampler` records each process' peak resident memory (psutil).
- :func:`table` / :class:`Verdicts` print the results.

Everything listens on and talks to 127.0.0.1 only, and every loop is bounded
in count and in time.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from devstack import emulators, postgres, readiness
from devstack.paths import DATA_DIR, GUNICORN_CONF, LOOPBACK, REPO_ROOT
from devstack.supervisor import Child, Supervisor

HOST = LOOPBACK
BENCH_DATA_DIR = DATA_DIR / "bench"
REGION = "us-east-1"
JWT_ISSUER = "order-platform-bench"
JWT_AUDIENCE = "order-platform"

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0          # per child: a worker drains within WORKER_SHUTDOWN_TIMEOUT_S
REQUEST_TIMEOUT_S = 10.0       # a request slower than this counts as an error
# Cap on concurrent requests of the open-loop generator: beyond it the server
# is hopelessly behind and more sockets only measure the client.
OPEN_LOOP_MAX_IN_FLIGHT = 256
RSS_SAMPLE_EVERY_S = 0.25
MIB = 1024 * 1024


# ---------------------------------------------------------------------- setup


def extract_order_service(ref: str, target: Path) -> Path:
    """The order service as it was at ``ref`` beside today's ``shared`` package, in ``target``.

    For a comparison with an earlier order path in the same run: started with
    gunicorn ``--chdir target`` (and no PYTHONPATH), that tree's ``services``
    is imported instead of today's.
    """
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", ref,
                              "services/__init__.py", "services/order"], check=True,
                             capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    shutil.copytree(REPO_ROOT / "shared", target / "shared",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return target


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return readiness.free_port(HOST)


def production_env(database_url: str, sqs_endpoint_url: str, queue_prefix: str,
                   _unused_secret: str | None = None) -> dict[str, str]:
    """The environment of every service process: production settings, local endpoints.

    APP_ENV=production (JSON logs, simulator refused); tokens are RS256 from
    :func:`bench_tokens`, verified through its loopback JWKS. (The last
    argument was the old shared JWT secret; callers may still pass one.)
    """
    env = dict(os.environ)
    env.update(bench_auth_env())
    env.update({
        "APP_ENV": "production",
        "DATABASE_URL": database_url,
        "SQS_ENDPOINT_URL": sqs_endpoint_url,
        "AWS_REGION": REGION,
        "QUEUE_PREFIX": queue_prefix,
        "JWT_ISSUER": JWT_ISSUER,
        "JWT_AUDIENCE": JWT_AUDIENCE,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        # Required in production; the order service asks delivery only to stop the shipment
        # of a paid order it cancels, and no benchmark cancels: nothing listens there.
        "DELIVERY_URL": f"http://127.0.0.1:{free_port()}",
        # bench_orders runs an older order service with gunicorn --chdir: the code it
        # imports is the checkout's (or that tree's), never an installed copy.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    })
    return env


_BENCH_AUTH: dict = {}


def bench_tokens():
    """The benchmark's token signer (a DevSigner): services verify it through a loopback JWKS.

    Benchmarks measure the services, not the auth service: a local JWKS (and
    client-credentials endpoint for the order service's own token) stands in
    for it, started on first use and serving until the process exits.
    """
    if not _BENCH_AUTH:
        from devstack.tokens import SERVICE_CLIENTS, DevSigner, JwksServer

        signer = DevSigner(JWT_ISSUER, JWT_AUDIENCE, kid="bench-key")
        server = JwksServer(signer.jwks, signer).start()
        _BENCH_AUTH.update(signer=signer, server=server, clients=SERVICE_CLIENTS)
    return _BENCH_AUTH["signer"]


def bench_auth_env() -> dict[str, str]:
    """AUTH_* and ORDER_CLIENT_* for service processes of a benchmark (see :func:`bench_tokens`)."""
    bench_tokens()
    server = _BENCH_AUTH["server"]
    return {"AUTH_JWKS_URL": server.url, "AUTH_URL": server.base_url,
            "ORDER_CLIENT_ID": "order-service",
            "ORDER_CLIENT_SECRET": _BENCH_AUTH["clients"]["order-service"],
            # Production refuses the development key; every process of one run shares this one.
            "AUTH_REVOCATION_FEED_KEY": _BENCH_AUTH.setdefault("feed_key", secrets.token_urlsafe(32)),
            # Benchmarks place many orders per customer on purpose.
            "ORDER_RATE_LIMIT_PER_CUSTOMER": "100000000/minute"}


def bench_service_token(scope: str = "inventory:reserve"):
    """The order service's own token for ``scope``, as the order API gets it (in-process clients)."""
    from shared.resilience import BreakerRegistry
    from shared.service_token import ServiceToken

    env = bench_auth_env()
    return ServiceToken(env["AUTH_URL"], env["ORDER_CLIENT_ID"], env["ORDER_CLIENT_SECRET"],
                        scope, BreakerRegistry())


def new_jwt_secret() -> str:
    """A random signing secret for this run (production refuses the development one)."""
    return secrets.token_urlsafe(48)


def gunicorn_args(app_spec: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """gunicorn with the production config file, bound to 127.0.0.1:``port``."""
    return [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
            "--bind", f"{HOST}:{port}", *extra, app_spec]


class Interrupted(BaseException):
    """SIGTERM arrived: unwind into the cleanup path like Ctrl-C does."""


def install_sigterm_handler() -> None:
    """Make SIGTERM unwind like Ctrl-C (KeyboardInterrupt) so ``finally`` blocks run."""

    def handler(signum, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut cleanup
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)


@dataclass
class Stack:
    """Everything one benchmark run starts; :meth:`close` stops it in reverse order."""

    run_dir: Path
    keep_data: bool = False
    say: Callable[[str], None] = print
    pg_handle: Any = None
    pg_data_dir: Path | None = None
    # STRIPE_* of the localstripe start_payment_api started (the payment worker needs the same).
    stripe_env: dict[str, str] = field(default_factory=dict)
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(say=self.say)

    @property
    def children(self) -> list[Child]:
        """What the stack runs now, oldest first."""
        return self.supervisor.children

    @classmethod
    def create(cls, name: str, keep_data: bool = False, say: Callable[[str], None] = print) -> Stack:
        """A stack whose files live in a fresh ``.data/bench/<name>-<time>-<id>/``."""
        run_id = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        run_dir = BENCH_DATA_DIR / run_id
        (run_dir / "logs").mkdir(parents=True)
        return cls(run_dir=run_dir, keep_data=keep_data, say=say)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # -- postgres -------------------------------------------------------
    def database(self) -> str:
        """DATABASE_URL if set, else a fresh embedded Postgres in this run's directory."""
        url = os.environ.get("DATABASE_URL")
        if url:
            self.say("using DATABASE_URL from the environment")
            return url
        self.pg_data_dir = self.run_dir / "pg"
        self.say(f"starting embedded PostgreSQL in {self.pg_data_dir}")
        self.pg_handle, url = postgres.start_embedded_postgres(self.pg_data_dir)
        return url

    def postmaster_pid(self) -> int | None:
        """The embedded server's postmaster pid (None with an external DATABASE_URL)."""
        if self.pg_data_dir is None:
            return None
        return postgres.postmaster_pid(self.pg_data_dir)

    # -- children -------------------------------------------------------
    def start(self, name: str, args: Sequence[str], env: dict[str, str]) -> Child:
        """Start ``args`` in its own session with output in ``logs/<name>.log``."""
        return self.supervisor.start(name, args, env, log_path=self.run_dir / "logs" / f"{name}.log")

    def start_fauxqs(self) -> str:
        """fauxqs (installed into .tools/ if missing) on a free loopback port; return its URL."""
        emulators.install_fauxqs()
        port = free_port()
        self.say(f"starting fauxqs {emulators.FAUXQS_VERSION} on {HOST}:{port}")
        log_path = self.run_dir / "logs" / "fauxqs.log"
        proc = emulators.start_fauxqs(port, host=HOST, log_file=log_path)
        self.supervisor.adopt("fauxqs", proc, log_path)
        return f"http://{HOST}:{port}"

    def start_localstripe(self) -> str:
        """localstripe (the Stripe API emulator) on a free loopback port; return its URL."""
        port = free_port()
        self.say(f"starting localstripe on {HOST}:{port}")
        log_path = self.run_dir / "logs" / "localstripe.log"
        proc = emulators.start_localstripe(port, host=HOST, log_file=log_path)
        self.supervisor.adopt("localstripe", proc, log_path)
        return f"http://{HOST}:{port}"

    def start_payment_api(self, env: dict[str, str]) -> tuple[Child, str]:
        """The payment API under gunicorn (on localstripe), ready; (child, base URL).

        Checkout opens a payment for every order, so every benchmark that places
        orders runs it. The production settings refuse the development Stripe
        secrets; the emulator takes any ``sk_`` key, so bench-only values are set.
        """
        from shared.migrations import upgrade

        upgrade("payment", env["DATABASE_URL"])
        self.stripe_env = {"STRIPE_API_BASE": self.start_localstripe(),
                           "STRIPE_SECRET_KEY": "sk_test_bench_only_" + uuid.uuid4().hex,
                           "STRIPE_WEBHOOK_SECRET": "whsec_bench_only_" + uuid.uuid4().hex}
        port = free_port()
        child = self.start("payment-api", gunicorn_args("services.payment.app:create_app()", port),
                           {**env, **self.stripe_env})
        url = f"http://{HOST}:{port}"
        self.wait_http(child, f"{url}/health/live")
        return child, url

    def start_payment_worker(self, env: dict[str, str]) -> Child:
        """The payment worker on the same localstripe as :meth:`start_payment_api` (call that first).

        It relays the payment outbox: ``payment.authorized`` reaches the order
        service only through it.
        """
        if not self.stripe_env:
            raise RuntimeError("start_payment_api first: the worker shares its Stripe settings")
        return self.start("payment-worker", [sys.executable, "-m", "services.payment.worker"],
                          {**env, **self.stripe_env})

    def wait_http(self, child: Child, url: str, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until ``url`` answers 200, failing at once if ``child`` exits."""
        try:
            readiness.wait_for_http(url, timeout=timeout, statuses=(200,), proc=child.proc)
        except (TimeoutError, RuntimeError) as exc:
            raise RuntimeError(f"{child.name} did not come up: {exc}; see {child.log_path}") from None

    def check_alive(self) -> list[str]:
        """Names of children that exited while they should be running."""
        return [c.describe_exit() for c in self.supervisor.dead()]

    def stop(self, child: Child) -> int | None:
        """Stop one child (SIGTERM to its group, SIGKILL after a grace period)."""
        return self.supervisor.stop(child, STOP_TIMEOUT_S, kill_wait=2.0)

    def close(self) -> None:
        """Stop every child (newest first), then Postgres; remove the data unless kept."""
        # Ctrl-C during cleanup must not leave processes behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.supervisor.stop_all(STOP_TIMEOUT_S, kill_wait_s=2.0, one_by_one=True)
            if self.pg_handle is not None:
                postgres.stop_embedded_postgres(self.pg_handle)
                self.pg_handle = None
            if self.pg_data_dir is not None and not self.keep_data:
                shutil.rmtree(self.pg_data_dir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class LoadResult:
    """What one load phase measured. Latencies in seconds."""

    name: str
    elapsed_s: float
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    # Requests whose response was the expected one, with their server-side ids.
    ok_ids: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def rate(self) -> float:
        """Successful requests per second over the phase."""
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def pct_ms(self, q: float) -> float:
        """The ``q``-th percentile latency in milliseconds."""
        return percentile(sorted(self.latencies), q) * 1000

    def error_summary(self) -> str:
        """``"3 (HTTP 500: 2, ServerDisconnectedError: 1)"`` or ``"0"``."""
        if not self.errors:
            return "0"
        kinds = ", ".join(f"{k}: {v}" for k, v in self.errors.most_common(4))
        return f"{self.error_count} ({kinds})"


# ------------------------------------------------------------ load generators

# (index of the request, client number) -> (headers, JSON body)
RequestFactory = Callable[[int, int], tuple[dict[str, str], dict]]
# (session, id from the answer, client number) -> None when done, else the error's kind.
# What a client does next with what it created, e.g. pay the order it placed.
FollowUp = Callable[[aiohttp.ClientSession, str, int], Awaitable[str | None]]


async def _one_request(session: aiohttp.ClientSession, url: str, headers: dict, body: dict,
                       expect: int, result: LoadResult, started: float,
                       id_field: str | None, follow_up: FollowUp | None = None,
                       client: int = 0) -> None:
    """One POST (and its follow-up); the latency covers both, an error in either is counted."""
    try:
        async with session.post(url, json=body, headers=headers) as response:
            payload = await response.read()
            if response.status != expect:
                result.errors[f"HTTP {response.status}"] += 1
                return
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        result.errors[type(exc).__name__] += 1
        return
    created_id = None
    if id_field:
        try:
            created_id = str(json.loads(payload)[id_field])
        except (ValueError, KeyError, TypeError):
            result.errors["bad body"] += 1
            return
    if follow_up is not None and created_id is not None:
        try:
            failure = await follow_up(session, created_id, client)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            failure = f"follow-up {type(exc).__name__}"
        if failure:
            result.errors[failure] += 1
            return
    result.latencies.append(time.perf_counter() - started)
    if created_id is not None:
        result.ok_ids.append(created_id)


def _session(limit: int) -> aiohttp.ClientSession:
    # One keep-alive connection per concurrent request, like N independent clients.
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, force_close=False)
    return aiohttp.ClientSession(connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))


async def closed_loop(name: str, url: str, make_request: RequestFactory, clients: int,
                      duration_s: float, max_requests: int | None = None, expect: int = 201,
                      id_field: str | None = None,
                      follow_up: FollowUp | None = None) -> LoadResult:
    """``clients`` clients each sending the next request when the last one answered.

    Stops after ``duration_s`` or ``max_requests`` requests, whichever comes first.
    """
    result = LoadResult(name, 0.0)
    counter = iter(range(max_requests if max_requests is not None else sys.maxsize))
    async with _session(clients) as session:
        started = time.perf_counter()
        deadline = started + duration_s

        async def client(number: int) -> None:
            while time.perf_counter() < deadline:
                index = next(counter, None)
                if index is None:
                    return
                headers, body = make_request(index, number)
                await _one_request(session, url, headers, body, expect, result,
                                   time.perf_counter(), id_field, follow_up, number)

        await asyncio.gather(*(client(n) for n in range(clients)))
        result.elapsed_s = time.perf_counter() - started
    return result


async def open_loop(name: str, url: str, make_request: RequestFactory, rate: float,
                    duration_s: float, clients: int, expect: int = 201,
                    id_field: str | None = None,
                    max_in_flight: int = OPEN_LOOP_MAX_IN_FLIGHT,
                    follow_up: FollowUp | None = None) -> LoadResult:
    """Release ``rate`` requests per second on a fixed schedule for ``duration_s``.

    Latency runs from each request's scheduled time, so time spent waiting for
    a free connection (the server falling behind) is counted. Requests are
    attributed round-robin to ``clients`` identities.
    """
    total = max(1, int(rate * duration_s))
    result = LoadResult(name, 0.0)
    slots = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task] = set()
    async with _session(max_in_flight) as session:
        started = time.perf_counter()

        async def fire(index: int, scheduled: float) -> None:
            try:
                headers, body = make_request(index, index % clients)
                await _one_request(session, url, headers, body, expect, result, scheduled,
                                   id_field, follow_up, index % clients)
            finally:
                slots.release()

        for index in range(total):
            scheduled = started + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            task = asyncio.create_task(fire(index, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks), timeout=REQUEST_TIMEOUT_S + 5)
        result.elapsed_s = time.perf_counter() - started
    return result


# --------------------------------------------------------------------- memory


@dataclass
class _Tracked:
    label: str
    pid: int
    children: bool          # also sample the process' descendants (gunicorn workers, pg backends)
    peak_bytes: int = 0     # the largest single process of this label at any sample
    peak_total: int = 0     # the largest sum over the label's processes at any sample
    peak_count: int = 0
    # CPU seconds (user + system) per pid: at first sight, and latest.
    cpu_first: dict[int, float] = field(default_factory=dict)
    cpu_last: dict[int, float] = field(default_factory=dict)
    sampled: bool = False

    @property
    def cpu_s(self) -> float:
        return sum(self.cpu_last.values()) - sum(self.cpu_first.values())


class RssSampler:
    """Samples resident memory of labelled process trees in a background thread."""

    def __init__(self, every_s: float = RSS_SAMPLE_EVERY_S):
        self.every_s = every_s
        self._tracked: list[_Tracked] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._lock = threading.Lock()

    def track_this_benchmark(self, postmaster_pid: int | None) -> None:
        """Follow this script with every process it starts, and PostgreSQL (which daemonizes).

        For a sampler that only tells the benchmark's CPU from other processes' (the
        "other processes used ..." line): every worker, emulator and API started for a run
        is a descendant, whenever it starts.
        """
        self.track("this benchmark and its children", os.getpid(), children=True)
        descendants = {p.pid for p in psutil.Process().children(recursive=True)}
        if postmaster_pid is not None and postmaster_pid not in descendants:
            self.track("postgres", postmaster_pid, children=True)

    def track(self, label: str, pid: int | None, children: bool = False) -> None:
        """Follow ``pid`` (and its descendants when ``children``) under ``label``."""
        if pid is not None:
            with self._lock:
                self._tracked.append(_Tracked(label, pid, children))

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every_s)

    def sample(self) -> None:
        """Take one sample of every tracked tree."""
        with self._lock:
            tracked = list(self._tracked)
        for item in tracked:
            try:
                root = psutil.Process(item.pid)
                procs = [root] + (root.children(recursive=True) if item.children else [])
            except psutil.Error:
                continue
            sizes = []
            for proc in procs:
                try:
                    with proc.oneshot():
                        sizes.append(proc.memory_info().rss)
                        times = proc.cpu_times()
                except psutil.Error:
                    continue
                cpu = times.user + times.system
                if proc.pid not in item.cpu_last:
                    # Processes there at the first sample count from then;
                    # later ones (new backends, recycled workers) from their start.
                    item.cpu_first[proc.pid] = cpu if not item.sampled else 0.0
                item.cpu_last[proc.pid] = cpu
            item.sampled = True
            if sizes:
                item.peak_bytes = max(item.peak_bytes, max(sizes))
                item.peak_total = max(item.peak_total, sum(sizes))
                item.peak_count = max(item.peak_count, len(sizes))

    def own_cpu_s(self) -> float:
        """CPU seconds used so far by every tracked tree (after a fresh sample)."""
        self.sample()
        with self._lock:
            return sum(t.cpu_s for t in self._tracked)

    def cpu_by_label(self) -> dict[str, float]:
        """CPU seconds used so far per label (after a fresh sample)."""
        self.sample()
        with self._lock:
            return {t.label: t.cpu_s for t in self._tracked}

    def mark(self) -> tuple[float, float, float]:
        """(wall clock, machine busy CPU s, tracked CPU s) now, for :meth:`foreign_since`."""
        return time.monotonic(), machine_busy_s(), self.own_cpu_s()

    def foreign_since(self, mark: tuple[float, float, float]) -> tuple[float, float]:
        """(CPU s used by processes *outside* the benchmark since ``mark``, wall s)."""
        wall, busy, own = mark
        foreign = (machine_busy_s() - busy) - (self.own_cpu_s() - own)
        return max(0.0, foreign), time.monotonic() - wall

    def peaks(self) -> list[tuple[str, float, float, int, float]]:
        """(label, peak single-process RSS MiB, peak summed RSS MiB, most processes, CPU s)."""
        with self._lock:
            return [(t.label, t.peak_bytes / MIB, t.peak_total / MIB, t.peak_count, t.cpu_s)
                    for t in self._tracked]


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all cores) since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


# Share of the machine's cores that other processes may use before the
# figures are flagged (or before a run waits for the machine to calm down).
FOREIGN_CPU_WARN_SHARE = 0.10
QUIET_CHECK_WINDOW_S = 2.0


def wait_for_quiet_machine(sampler: RssSampler, timeout_s: float, say: Callable[[str], None]) -> float:
    """Wait up to ``timeout_s`` until processes outside the benchmark use < 10% of the cores.

    Returns the foreign share of the last window. Benchmarks on a shared
    2-core box are meaningless while a test suite runs next to them.
    """
    cores = psutil.cpu_count() or 1
    deadline = time.monotonic() + timeout_s
    while True:
        mark = sampler.mark()
        time.sleep(QUIET_CHECK_WINDOW_S)
        foreign, wall = sampler.foreign_since(mark)
        share = foreign / (wall * cores)
        if share < FOREIGN_CPU_WARN_SHARE or time.monotonic() >= deadline:
            if share >= FOREIGN_CPU_WARN_SHARE:
                say(f"other processes still use {share:.0%} of the CPU; measuring anyway")
            return share
        say(f"other processes use {share:.0%} of the CPU; waiting for a quieter machine")


def foreign_load_note(foreign_s: float, wall_s: float) -> tuple[str, bool]:
    """A line about CPU used outside the benchmark, and whether it disturbs the figures."""
    cores = psutil.cpu_count() or 1
    share = foreign_s / (wall_s * cores) if wall_s > 0 else 0.0
    disturbed = share >= FOREIGN_CPU_WARN_SHARE
    text = (f"other processes on this machine used {foreign_s:.1f} CPU-s "
            f"({share:.0%} of {cores} cores) during the measurement")
    if disturbed:
        text = "WARNING: " + text + "; the figures are disturbed, run again on a quiet machine"
    return text, disturbed


# ------------------------------------------------------------------- printing


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table, columns right-aligned except the first."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                         for i, c in enumerate(row))

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.1f}"
    return str(value)


@dataclass
class Verdicts:
    """PASS/FAIL lines for the targets of a benchmark."""

    rows: list[tuple[str, str, str, bool]] = field(default_factory=list)

    def check(self, target: str, measured: str, ok: bool, required: str) -> None:
        self.rows.append((target, required, measured, ok))

    @property
    def all_passed(self) -> bool:
        return all(ok for *_rest, ok in self.rows)

    def render(self) -> str:
        return table(("target", "required", "measured", "result"),
                     [(t, r, m, "PASS" if ok else "FAIL") for t, r, m, ok in self.rows])

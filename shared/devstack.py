"""The local development stack: embedded Postgres, SQS emulators, bootstrap.

Used by ``scripts/run.py`` (``make run``), by the test suite's fixtures and by
the benchmark scripts, so every one of them starts the same things the same
way:

- :func:`start_embedded_postgres` — PostgreSQL 16 shipped inside the
  ``pgserver`` package, listening on a Unix socket under its data directory
  (never on TCP port 5432, which a system server may hold). Data survives
  restarts.
- :func:`start_moto_server` — moto in server mode, the default SQS emulator.
- :func:`start_fauxqs` — fauxqs (npm), a much faster emulator for load tests.
- :func:`bootstrap` — create every queue of the topology and apply each
  service's migrations.

Child processes are started in their own session (so a terminal's Ctrl-C
reaches only the supervisor, which then stops them in order) and, on Linux,
with a parent-death signal, so they die with the process that started them
even when that process is killed outright.

Command line (used by docker-compose's one-shot ``bootstrap`` service)::

    python -m shared.devstack bootstrap [--skip-queues] [SERVICE ...]

reads ``DATABASE_URL``, ``SQS_ENDPOINT_URL``, ``AWS_REGION`` and
``QUEUE_PREFIX`` from the environment.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import requests

from shared.config import SQS_EMULATOR_PORT

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES_DIR = REPO_ROOT / "services"
DATA_DIR = REPO_ROOT / ".data"
DEFAULT_PGDATA = DATA_DIR / "postgres"
# npm prefix for fauxqs (its node_modules/ lands inside); `make fauxqs` installs it.
DEFAULT_FAUXQS_DIR = REPO_ROOT / ".tools" / "fauxqs"
FAUXQS_VERSION = "1.9.2"  # 2.x needs Node >= 22.5 (node:sqlite); see SQS_PORTABILITY.md
LOOPBACK = "127.0.0.1"

# Postgres stops in well under a second with fast shutdown; the bound keeps a
# wedged server from blowing the supervisor's 10 s shutdown budget.
PG_STOP_TIMEOUT_S = 5.0
EMULATOR_START_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.1

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# Resolved in the parent: the child between fork and exec should do as little
# as possible (no imports, no library loading).
_libc_prctl: Any = None
if sys.platform.startswith("linux"):
    try:
        _libc_prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not glibc/musl-like: no parent-death signal
        _libc_prctl = None


def _die_with_parent() -> None:
    # Runs in the child before exec. The signal fires when the *thread* that
    # forked us ends, so start children from a long-lived thread (the main one).
    if _libc_prctl is not None:
        _libc_prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def spawn(args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | str | None = None,
          stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
          ) -> subprocess.Popen:
    """Start a child in its own session that receives SIGTERM if its parent dies."""
    return subprocess.Popen(
        list(args), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
        start_new_session=True, preexec_fn=_die_with_parent if _libc_prctl else None,
    )


def stop_process(proc: subprocess.Popen, timeout: float = 5.0,
                 kill_wait: float = 2.0) -> int | None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``timeout``; return the exit code.

    Returns None if it still runs ``kill_wait`` seconds after SIGKILL.
    """
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(kill_wait)
            except subprocess.TimeoutExpired:
                log.warning("pid %s survived SIGKILL for %.1fs", proc.pid, kill_wait)
    return proc.returncode


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    # The child leads its own group (start_new_session): signal the group so
    # grandchildren (e.g. gunicorn's workers) are reached too.
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------- waiting


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 30.0,
                  proc: subprocess.Popen | None = None) -> None:
    """Wait until ``host:port`` accepts connections; raise TimeoutError after ``timeout``.

    With ``proc``, fail at once (RuntimeError) if that process exits meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_is_open(host, port):
            return
        _check_alive(proc, f"{host}:{port}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")
        time.sleep(POLL_INTERVAL_S)


def wait_for_http(url: str, timeout: float = 30.0, statuses: Iterable[int] | None = None,
                  proc: subprocess.Popen | None = None) -> requests.Response:
    """Poll ``url`` until it answers (with one of ``statuses`` if given); return the response.

    Raises TimeoutError naming the last status or error after ``timeout``, or
    RuntimeError at once if ``proc`` exits meanwhile.
    """
    wanted = set(statuses) if statuses is not None else None
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            response = requests.get(url, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if wanted is None or response.status_code in wanted:
                return response
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        _check_alive(proc, url)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} not ready after {timeout:.0f}s (last: {last})")
        time.sleep(POLL_INTERVAL_S)


def _check_alive(proc: subprocess.Popen | None, what: str) -> None:
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"process for {what} exited with code {proc.returncode}")


# -------------------------------------------------------------------- postgres


def start_embedded_postgres(data_dir: Path) -> tuple[Any, str]:
    """Start (or reuse) an embedded PostgreSQL on ``data_dir``; return (handle, database URL).

    The first start runs initdb; later starts reuse the data, and a server
    still running on that directory (e.g. after the supervisor was killed) is
    adopted. The URL points at a Unix socket, e.g.
    ``postgresql://postgres:@/postgres?host=/path/.data/postgres``.
    As root, pgserver runs the server as its own unprivileged ``pgserver`` user.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and
        # falls back to /tmp/runtime-<uid>, which is what we want anyway.
        warnings.simplefilter("ignore")
        import pgserver  # heavy import; only the embedded mode needs it

    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "PG_VERSION").exists():
        _init_cluster(pgserver, data_dir)
    # cleanup_mode=None: we stop it explicitly, never from an atexit hook.
    server = pgserver.get_server(str(data_dir), cleanup_mode=None)
    return server, server.get_uri()


def _init_cluster(pgserver: Any, data_dir: Path) -> None:
    # initdb writes PG_VERSION early: one interrupted halfway (Ctrl-C during a
    # first `make run`) leaves a directory that looks initialised but never
    # starts. So build the cluster beside it and move it into place whole.
    if data_dir.exists() and any(data_dir.iterdir()):
        raise RuntimeError(f"{data_dir} is neither empty nor a PostgreSQL data directory; "
                           f"remove it (make clean) to start afresh")
    staging = data_dir.with_name(data_dir.name + ".initdb")
    if staging.exists():  # left by an interrupted first start
        stop_embedded_postgres_at(staging)
        shutil.rmtree(staging)
    log.info("initialising a new PostgreSQL cluster in %s", data_dir)
    stop_embedded_postgres(pgserver.get_server(str(staging), cleanup_mode=None))
    if data_dir.exists():
        data_dir.rmdir()
    staging.rename(data_dir)


def stop_embedded_postgres(handle: Any, timeout: float = PG_STOP_TIMEOUT_S) -> None:
    """Stop the server behind ``handle`` (fast shutdown: open sessions are ended)."""
    try:
        stop_embedded_postgres_at(Path(handle.pgdata), timeout)
    finally:
        # Drop pgserver's own bookkeeping so its atexit hook has nothing to do.
        try:
            handle._cleanup()
        except Exception:  # best effort: the server is already down
            pass


def stop_embedded_postgres_at(data_dir: Path, timeout: float = PG_STOP_TIMEOUT_S) -> None:
    """Stop an embedded server by its data directory (no-op when none runs there).

    For a start that was interrupted before it returned a handle.
    """
    from pgserver._commands import pg_ctl

    pgdata = Path(data_dir).expanduser().resolve()
    if not (pgdata / "postmaster.pid").exists():
        return
    # As root, pgserver runs postgres as its own user; pg_ctl must run as that user too.
    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-t", str(max(1, int(timeout))), "-m", "fast", "stop"], pgdata=pgdata,
               user=user, timeout=timeout + 0.5)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log.warning("pg_ctl stop failed (%s); killing the postmaster", exc)
        _kill_postmaster(pgdata)


def _kill_postmaster(pgdata: Path) -> None:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        # SIGQUIT is postgres' immediate shutdown: children exit, no data loss (WAL).
        os.kill(pid, signal.SIGQUIT)
    except (OSError, ValueError, IndexError):
        pass


# ------------------------------------------------------------------ emulators


def start_moto_server(port: int = SQS_EMULATOR_PORT, host: str = LOOPBACK,
                      log_file: Path | None = None, timeout: float = EMULATOR_START_TIMEOUT_S,
                      ) -> subprocess.Popen:
    """Start ``moto.server`` on ``host:port`` and wait until it answers.

    Its request log goes to ``log_file`` (or is discarded): moto logs every
    long poll, which would drown the services' output.
    """
    if port_is_open(host, port):
        raise RuntimeError(f"port {host}:{port} is already in use; stop what holds it "
                           f"or point SQS_ENDPOINT_URL at it")
    out: int | IO[Any] = subprocess.DEVNULL
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        proc = spawn([sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                     env=_emulator_env(), stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log_file is not None:
            out.close()  # type: ignore[union-attr]  # the child holds its own copy
    try:
        wait_for_http(f"http://{host}:{port}/moto-api/", timeout=timeout, proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def _emulator_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def fauxqs_package_dir(prefix: Path) -> Path | None:
    """The installed fauxqs package under ``prefix`` (an npm prefix or a node_modules dir)."""
    prefix = Path(prefix)
    for candidate in (prefix / "node_modules" / "fauxqs", prefix / "fauxqs"):
        if (candidate / "package.json").exists():
            return candidate
    return None


def install_fauxqs(prefix: Path = DEFAULT_FAUXQS_DIR, version: str = FAUXQS_VERSION) -> Path:
    """``npm install`` fauxqs into ``prefix`` unless present; return the package dir."""
    found = fauxqs_package_dir(prefix)
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: fauxqs needs Node.js >= 20 and npm")
    Path(prefix).mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
                    f"fauxqs@{version}"], check=True, stdin=subprocess.DEVNULL, timeout=300)
    found = fauxqs_package_dir(prefix)
    if found is None:
        raise RuntimeError(f"npm install finished but fauxqs is not under {prefix}")
    return found


# fauxqs' own CLI binds 0.0.0.0 (not configurable in 1.9.2); its buildApp export
# lets us bind loopback only.
_FAUXQS_LAUNCHER = """\
import { buildApp } from "fauxqs";
const port = Number(process.argv[2]);
const host = process.argv[3] ?? "127.0.0.1";
const app = buildApp({ logger: false });
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => { app.close().finally(() => process.exit(0)); });
}
await app.listen({ port, host });
console.log(`fauxqs listening on http://${host}:${port}`);
"""


def start_fauxqs(port: int = SQS_EMULATOR_PORT, node_modules_dir: Path = DEFAULT_FAUXQS_DIR,
                 host: str = LOOPBACK, log_file: Path | None = None,
                 timeout: float = EMULATOR_START_TIMEOUT_S) -> subprocess.Popen:
    """Start fauxqs (already installed under ``node_modules_dir``) on ``host:port``.

    ``node_modules_dir`` is the npm prefix given to ``npm install --prefix``
    (or the ``node_modules`` directory inside it). Raises RuntimeError when
    node or the package is missing.
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: fauxqs needs Node.js >= 20")
    package = fauxqs_package_dir(Path(node_modules_dir))
    if package is None:
        raise RuntimeError(f"fauxqs is not installed under {node_modules_dir} (run `make fauxqs`"
                           f" or npm install --prefix DIR fauxqs@{FAUXQS_VERSION})")
    if port_is_open(host, port):
        raise RuntimeError(f"port {host}:{port} is already in use")
    # The launcher must sit beside node_modules/ so the bare "fauxqs" import resolves.
    launcher = package.parent.parent / "fauxqs-launcher.mjs"
    if not launcher.exists() or launcher.read_text() != _FAUXQS_LAUNCHER:
        launcher.write_text(_FAUXQS_LAUNCHER)
    out: int | IO[Any] = subprocess.DEVNULL
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_file, "ab")  # noqa: SIM115
    try:
        proc = spawn([node, str(launcher), str(port), host], stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log_file is not None:
            out.close()  # type: ignore[union-attr]
    try:
        wait_for_http(f"http://{host}:{port}/health", timeout=timeout, statuses=(200,), proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


# ------------------------------------------------------------------ bootstrap


def services_with_migrations() -> list[str]:
    """Every service that has a ``migrations`` directory, in name order."""
    return sorted(p.parent.name for p in SERVICES_DIR.glob("*/migrations") if p.is_dir())


def bootstrap(database_url: str | None, sqs_endpoint_url: str | None, region: str,
              queue_prefix: str = "", services: Iterable[str] = ("order", "delivery"),
              create_queues: bool = True) -> dict[str, str]:
    """Create every queue of the topology and migrate each service's schema.

    Services without a ``migrations`` directory are skipped (not built yet);
    one with the directory but no ``env.py`` is an error. Returns the queue
    name -> URL map (empty when ``create_queues`` is false). Idempotent.
    """
    from shared import migrations
    from shared.messaging.sqs import ensure_queues, sync_client
    from shared.queues import TOPOLOGY

    urls: dict[str, str] = {}
    if create_queues:
        urls = ensure_queues(sync_client(sqs_endpoint_url, region), TOPOLOGY, queue_prefix)
        log.info("queues ready: %s", ", ".join(sorted(urls)))
    for service in services:
        migrations_dir = SERVICES_DIR / service / "migrations"
        if not migrations_dir.is_dir():
            log.info("service %s has no migrations yet; skipped", service)
            continue
        if not (migrations_dir / "env.py").exists():
            raise RuntimeError(f"{migrations_dir} has no env.py: not an Alembic directory")
        if database_url is None:
            raise RuntimeError("DATABASE_URL is required to migrate service schemas")
        migrations.upgrade(service, database_url)
        log.info("schema %s_svc migrated", service)
    return urls


def _main(argv: Sequence[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m shared.devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    boot = sub.add_parser("bootstrap", help="create queues and migrate schemas (env-driven)")
    boot.add_argument("--skip-queues", action="store_true",
                      help="only migrate (e.g. ElasticMQ already declares the queues)")
    boot.add_argument("services", nargs="*", help="default: every service with migrations")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s bootstrap %(message)s")
    database_url = os.environ.get("DATABASE_URL") or None
    if database_url is None:
        print("DATABASE_URL: is required but not set", file=sys.stderr)
        return 2
    bootstrap(database_url, os.environ.get("SQS_ENDPOINT_URL") or None,
              os.environ.get("AWS_REGION") or "us-east-1", os.environ.get("QUEUE_PREFIX", ""),
              args.services or services_with_migrations(), create_queues=not args.skip_queues)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

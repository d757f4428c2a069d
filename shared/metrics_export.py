"""Serving Prometheus metrics: an API's ``/metrics`` under gunicorn, a worker's endpoint.

An API runs as several gunicorn processes behind one port; a scrape reaches
whichever process accepts it. Without help each answers with its own
counters only, so a scrape sees a fraction of the requests that jumps between
processes. prometheus_client's *multiprocess mode* fixes that: with
``PROMETHEUS_MULTIPROC_DIR`` set before any metric exists, every process keeps
its values in memory-mapped files there and ``/metrics`` merges the files of
every process (:func:`render`). What that needs from the process manager
(infra/gunicorn.conf.py):

- the directory exists and is emptied when the gunicorn master starts
  (:func:`prepare_directory`): files left by an earlier run would be counted
  again; one directory per master, never shared by two;
- when a worker process exits, its live gauges are dropped
  (:func:`mark_process_dead`, gunicorn's ``child_exit`` hook); its counters
  stay, so totals never go down when gunicorn recycles a worker.

This module imports prometheus_client's exposition and multiprocess helpers
only (no metric), so gunicorn's master can use it without creating files.

A worker is one process: it serves the default registry on
``WORKER_METRICS_HOST:WORKER_METRICS_PORT`` (:func:`serve_worker_metrics`).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
    start_http_server,
)

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir(env: dict[str, str] | os._Environ | None = None) -> str | None:
    """The multiprocess directory this process writes to, or None (one-process mode)."""
    value = (os.environ if env is None else env).get(MULTIPROC_DIR_VARIABLE)
    return value or None


def render() -> tuple[bytes, str]:
    """The exposition text of this process, or of every process sharing the directory."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def prepare_directory(directory: str) -> None:
    """Create ``directory`` and delete the metric files an earlier run left in it."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def mark_process_dead(pid: int) -> None:
    """Drop the live gauges of the exited process ``pid`` (gunicorn's ``child_exit``)."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, directory)


def serve_worker_metrics(port: int, host: str) -> None:
    """Serve this process' metrics on ``host:port`` from a daemon thread."""
    start_http_server(port, addr=host, registry=REGISTRY)

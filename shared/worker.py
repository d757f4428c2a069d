"""The worker process shell: consumers + outbox relay + periodic jobs, SIGTERM drain.

Every worker also runs the messaging retention job
(:func:`shared.messaging.retention.retention_task`, ``MESSAGING_RETENTION_*``),
whatever its plan.

A service's ``worker.py`` defines ``build_plan(db, settings, own) -> WorkerPlan``
(``own`` is the service's typed settings) and its ``main`` is
``serve_worker(load, build_plan)`` with the service's ``settings.load``:
settings, logging, the database pool, then :func:`run_worker`, which reads
:class:`shared.config.WorkerSettings` once. On SIGTERM/SIGINT: consumers stop
receiving, in-flight handlers finish (up to ``WORKER_SHUTDOWN_TIMEOUT_S``),
unstarted messages are released, the relay finishes its round, and the
process exits 0.

Supervision: a consumer restarts its own crashed pollers
(:mod:`shared.messaging.consumer`); a consumer task that ends anyway before a
signal (it gave up with ``ConsumerFailed``, or ended for any other reason), or
a plan task that raises, stops the worker as SIGTERM would and it exits 1, so
the process supervisor restarts it rather than leaving a queue unconsumed.
Health: the ``consumer_alive{consumer}`` gauge (1 while every poller runs) and
``consumer_restarts_total{consumer}`` on the ``WORKER_METRICS_PORT`` endpoint.

Consumers and the relay route by :data:`shared.queues.TOPOLOGY` and get
:func:`default_middleware`: the Prometheus metrics of :mod:`shared.metrics`
and the structlog events (both keep today's names).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client import start_http_server

from shared import metrics
from shared.admin.state import ConsumerState
from shared.config import Settings, WorkerSettings
from shared.db import database_for
from shared.logging import configure_logging, get_logger
from shared.messaging.consumer import Consumer, ConsumerConfig, Handler
from shared.messaging.middleware import LoggingMiddleware, Middleware, PrometheusMiddleware
from shared.messaging.relay import OutboxRelay, RetryPolicy
from shared.messaging.retention import RetentionSettings, retention_task
from shared.messaging.sqs import async_client, sync_client
from shared.messaging.topology import QueueSpec
from shared.queues import TOPOLOGY

log = get_logger(__name__)

Own = TypeVar("Own")  # a service's own settings class, e.g. OrderSettings


@dataclass
class WorkerPlan:
    """What one worker process runs."""

    consumers: dict[QueueSpec, dict[str, Handler]] = field(default_factory=dict)
    relay: bool = True
    # Extra long-running coroutines, each given the stop event (e.g. a simulator).
    tasks: list[Callable[[asyncio.Event], Awaitable[None]]] = field(default_factory=list)
    # The plan's circuit breaker registries: their states go out with the heartbeats.
    breakers: list[Any] = field(default_factory=list)


def default_middleware() -> list[Middleware]:
    """What every worker installs: Prometheus metrics, then the structlog events."""
    return [
        PrometheusMiddleware(handled=metrics.MESSAGES_HANDLED, retries=metrics.MESSAGE_RETRIES,
                             dlq_moves=metrics.DLQ_MOVES, published=metrics.OUTBOX_PUBLISHED,
                             send_failures=metrics.OUTBOX_SEND_FAILURES, lag=metrics.OUTBOX_LAG,
                             alive=metrics.CONSUMER_ALIVE, restarts=metrics.CONSUMER_RESTARTS),
        LoggingMiddleware(),
    ]


def serve_worker(load: Callable[[], tuple[Settings, Own]],
                 build_plan: Callable[[Any, Settings, Own], WorkerPlan]) -> int:
    """A worker's ``main``: ``load()``, logging, database, ``build_plan(db, settings, own)``, run.

    ``load`` is the service's ``settings.load``: it validates the common and the
    service's own settings together, so a bad deployment fails here as in the API.
    """
    settings, own = load()
    configure_logging(settings.service, settings.log_level, settings.log_format)
    db = database_for(settings)
    return run_worker(settings, db, build_plan(db, settings, own))


def consumer_config(worker: WorkerSettings) -> ConsumerConfig:
    """Consumer tunables (CONSUMER_*)."""
    return ConsumerConfig(
        wait_time_s=worker.consumer_wait_time_s, max_messages=worker.consumer_max_messages,
        pollers=worker.consumer_pollers, retry_base_s=worker.consumer_retry_base_s,
        retry_cap_s=worker.consumer_retry_cap_s,
        restart_cap_s=worker.consumer_restart_cap_s, restart_limit=worker.consumer_restart_limit,
    )


def run_worker(settings: Settings, db, plan: WorkerPlan) -> int:
    """Run ``plan`` until SIGTERM/SIGINT; return the exit code (0 on a clean drain)."""
    worker = WorkerSettings.from_env(settings.env, app_env=settings.app_env)
    if worker.metrics_port:
        start_http_server(worker.metrics_port, addr="127.0.0.1")
    return asyncio.run(_main(settings, worker, db, plan))


async def _main(settings: Settings, worker: WorkerSettings, db, plan: WorkerPlan) -> int:
    relay_enabled = plan.relay and worker.relay_enabled
    shutdown_timeout = worker.shutdown_timeout_s
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # Blocked groups and consumer heartbeats for the admin API (shared.admin).
    consumer_state = ConsumerState(breakers=plan.breakers)
    middleware = [*default_middleware(), consumer_state]
    # Read before anything starts: a bad MESSAGING_RETENTION_* fails the start, not a task.
    retention = RetentionSettings(days=worker.retention_days, interval_s=worker.retention_interval_s)
    relay_stop = threading.Event()
    relay_thread = None
    if relay_enabled:
        relay = OutboxRelay(
            db, sync_client(settings.sqs_endpoint_url, settings.aws_region), TOPOLOGY,
            settings.service, settings.queue_prefix,
            poll_interval_s=worker.relay_poll_interval_s,
            retry=RetryPolicy(cap_s=worker.relay_retry_max_s),
            name=f"{settings.service}-relay", middleware=middleware)
        relay_thread = threading.Thread(target=relay.run, args=(relay_stop,), name="outbox-relay",
                                        daemon=True)
        relay_thread.start()

    config = consumer_config(worker)
    # Leave connections for the relay and periodic tasks so handlers never starve them.
    executor = ThreadPoolExecutor(max_workers=max(1, settings.db_pool_max - 2),
                                  thread_name_prefix="handler")
    consumers = [
        Consumer(f"{settings.service}:{spec.name}", spec, db, handlers,
                 lambda: async_client(settings.sqs_endpoint_url, settings.aws_region),
                 settings.queue_prefix, config, executor, middleware)
        for spec, handlers in plan.consumers.items()
    ]
    consumer_tasks = {asyncio.create_task(c.run(stop)): c.name for c in consumers}
    tasks = [*consumer_tasks, *(asyncio.create_task(job(stop)) for job in plan.tasks)]
    # Every service's inbox and outbox, whatever its plan (shared.messaging.retention).
    tasks.append(asyncio.create_task(retention_task(db, retention)(stop)))
    tasks.append(asyncio.create_task(consumer_state.heartbeat_task(db)(stop)))
    log.info("worker_started", consumers=[c.name for c in consumers], relay=relay_enabled)

    exit_code = await _supervise(stop, tasks, consumer_tasks)
    log.info("worker_stopping", timeout_s=shutdown_timeout)
    done, pending = await asyncio.wait(tasks, timeout=shutdown_timeout)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("worker_task_failed", error=repr(task.exception()))
            exit_code = 1
    if pending:
        log.error("worker_drain_timeout", pending=len(pending))
        for task in pending:
            task.cancel()
        exit_code = 1
    relay_stop.set()
    if relay_thread is not None:
        await asyncio.to_thread(relay_thread.join, 10)
    executor.shutdown(wait=True)
    db.close()
    log.info("worker_stopped", exit_code=exit_code)
    return exit_code


async def _supervise(stop: asyncio.Event, tasks: list[asyncio.Task],
                     consumer_tasks: dict[asyncio.Task, str]) -> int:
    """Wait for a signal; 1 if a consumer task ended or any task failed before it, else 0."""
    signalled = asyncio.create_task(stop.wait())
    pending = set(tasks)
    try:
        while not stop.is_set():
            done, pending = await asyncio.wait({signalled, *pending},
                                               return_when=asyncio.FIRST_COMPLETED)
            pending.discard(signalled)
            for task in done - {signalled}:
                error = None if task.cancelled() else task.exception()
                if error is None and task not in consumer_tasks:
                    continue  # a plan task that finished its work
                log.error("worker_task_failed", task=consumer_tasks.get(task, task.get_name()),
                          error=repr(error) if error else "ended before a signal")
                stop.set()  # drain the rest as on SIGTERM; the supervisor restarts us
                return 1
        return 0
    finally:
        signalled.cancel()

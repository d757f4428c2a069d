"""The worker process shell: consumers + outbox relay + periodic jobs, SIGTERM drain.

A service's ``worker.py`` defines ``build_plan(db, settings) -> WorkerPlan``
and its ``main`` is ``serve_worker(SERVICE, build_plan)``: settings, logging,
the database pool, then :func:`run_worker`. On SIGTERM/SIGINT: consumers stop
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
from typing import Any

from prometheus_client import start_http_server

from shared import metrics
from shared.config import Settings, env_bool, env_float, env_int, load_settings
from shared.db import database_for
from shared.logging import configure_logging, get_logger
from shared.messaging.consumer import Consumer, ConsumerConfig, Handler
from shared.messaging.middleware import LoggingMiddleware, Middleware, PrometheusMiddleware
from shared.messaging.relay import OutboxRelay, RetryPolicy
from shared.messaging.sqs import async_client, sync_client
from shared.messaging.topology import QueueSpec
from shared.queues import TOPOLOGY

log = get_logger(__name__)


@dataclass
class WorkerPlan:
    """What one worker process runs."""

    consumers: dict[QueueSpec, dict[str, Handler]] = field(default_factory=dict)
    relay: bool = True
    # Extra long-running coroutines, each given the stop event (e.g. a simulator).
    tasks: list[Callable[[asyncio.Event], Awaitable[None]]] = field(default_factory=list)


def default_middleware() -> list[Middleware]:
    """What every worker installs: Prometheus metrics, then the structlog events."""
    return [
        PrometheusMiddleware(handled=metrics.MESSAGES_HANDLED, retries=metrics.MESSAGE_RETRIES,
                             dlq_moves=metrics.DLQ_MOVES, published=metrics.OUTBOX_PUBLISHED,
                             send_failures=metrics.OUTBOX_SEND_FAILURES, lag=metrics.OUTBOX_LAG,
                             alive=metrics.CONSUMER_ALIVE, restarts=metrics.CONSUMER_RESTARTS),
        LoggingMiddleware(),
    ]


def serve_worker(service: str, build_plan: Callable[[Any, Settings], WorkerPlan]) -> int:
    """A worker's ``main``: settings, logging, database, ``build_plan(db, settings)``, run."""
    settings = load_settings(service)
    configure_logging(service, settings.log_level, settings.log_format)
    db = database_for(settings)
    return run_worker(settings, db, build_plan(db, settings))


def consumer_config(settings: Settings) -> ConsumerConfig:
    """Consumer tunables from the environment (CONSUMER_*)."""
    env = settings.env
    return ConsumerConfig(
        wait_time_s=env_int(env, "CONSUMER_WAIT_TIME_S", 20, minimum=0, maximum=20),
        max_messages=env_int(env, "CONSUMER_MAX_MESSAGES", 10, minimum=1, maximum=10),
        pollers=env_int(env, "CONSUMER_POLLERS", 2, minimum=1, maximum=50),
        retry_base_s=env_float(env, "CONSUMER_RETRY_BASE_S", 2.0),
        retry_cap_s=env_float(env, "CONSUMER_RETRY_CAP_S", 900.0),
        restart_cap_s=env_float(env, "CONSUMER_RESTART_CAP_S", 30.0),
        restart_limit=env_int(env, "CONSUMER_RESTART_LIMIT", 10, minimum=0, maximum=1000),
    )


def run_worker(settings: Settings, db, plan: WorkerPlan) -> int:
    """Run ``plan`` until SIGTERM/SIGINT; return the exit code (0 on a clean drain)."""
    env = settings.env
    metrics_port = env_int(env, "WORKER_METRICS_PORT", 0, minimum=0, maximum=65535)
    if metrics_port:
        start_http_server(metrics_port, addr="127.0.0.1")
    shutdown_timeout = env_float(env, "WORKER_SHUTDOWN_TIMEOUT_S", 25.0)
    return asyncio.run(_main(settings, db, plan, shutdown_timeout,
                             relay_enabled=plan.relay and env_bool(env, "OUTBOX_RELAY_ENABLED", True)))


async def _main(settings: Settings, db, plan: WorkerPlan, shutdown_timeout: float,
                relay_enabled: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    middleware = default_middleware()
    relay_stop = threading.Event()
    relay_thread = None
    if relay_enabled:
        relay = OutboxRelay(
            db, sync_client(settings.sqs_endpoint_url, settings.aws_region), TOPOLOGY,
            settings.service, settings.queue_prefix,
            poll_interval_s=env_float(settings.env, "OUTBOX_POLL_INTERVAL_S", 1.0),
            retry=RetryPolicy(cap_s=env_float(settings.env, "OUTBOX_RETRY_MAX_S", 10.0)),
            name=f"{settings.service}-relay", middleware=middleware)
        relay_thread = threading.Thread(target=relay.run, args=(relay_stop,), name="outbox-relay",
                                        daemon=True)
        relay_thread.start()

    config = consumer_config(settings)
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

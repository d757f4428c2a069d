"""One consumer process of ``scripts/bench_consumer.py``: one variant, one queue, until SIGTERM.

Every variant does the same work per message: read the envelope's body and
run ONE ``INSERT`` into ``bench_consumer.consumed`` (run, event id, group, seq).
What differs is everything around it:

* ``ours`` — the project's consumer runtime (:class:`shared.messaging.consumer.Consumer`):
  envelope validation, inbox claim in the handler's transaction, per-group
  order, heartbeat, retries/DLQ, the worker's metrics and JSON log line per
  message; one transaction per message;
* ``ours-batch`` — the same with ``transaction_per_batch`` (one transaction per
  received batch, a savepoint per message);
* ``raw`` — a plain boto3 loop: receive 10, one transaction per message,
  ``DeleteMessageBatch``; ``raw-batch`` — the same with one transaction per
  received batch. No inbox, no validation, no metrics, no logging;
* ``sqs-workers`` — Doist's sqs-workers ``RawQueue``: receive, call the
  processor per message, batch-delete (no inbox);
* ``kombu`` — kombu's SQS transport (the one Celery uses), kombu ``Consumer``
  with ``drain_events``, one ack (``DeleteMessage``) per message.

The polling concurrency is the same for every variant: ``--pollers`` receive
loops per process (threads for the blocking clients, asyncio tasks for ours).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCHEMA = "bench_consumer"
EVENT_TYPE = "bench.consumed"
REGION = "us-east-1"
WAIT_TIME_S = 1
INSERT = (f"INSERT INTO {SCHEMA}.consumed (run, event_id, group_id, seq)"
          " VALUES (%s, %s, %s, %s)")


def insert_row(cur, data: dict, event_id: str) -> None:
    """The handler's one statement, identical in every variant."""
    cur.execute(INSERT, (data["run"], event_id, data["group"], data["seq"]))


def stop_on_sigterm() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


# ----------------------------------------------------------------------------- ours
def run_ours(endpoint: str, database_url: str, queue_name: str, prefix: str, pollers: int,
             db_pool_max: int, batch: bool) -> None:
    from shared.db import Database
    from shared.logging import configure_logging
    from shared.messaging.consumer import Consumer, ConsumerConfig
    from shared.messaging.sqs import async_client
    from shared.messaging.topology import QueueSpec
    from shared.worker import default_middleware

    # A JSON line per message at INFO, as in production (LOG_LEVEL=WARNING: without them).
    configure_logging("bench-consumer", os.environ.get("LOG_LEVEL", "INFO"), "json")
    db = Database(database_url, SCHEMA, 1, db_pool_max)
    spec = QueueSpec(name=queue_name, producer="bench", consumers=("bench",),
                     event_types=(EVENT_TYPE,))

    def handler(cur, event) -> None:
        insert_row(cur, event.data, event.event_id)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        consumer = Consumer(
            "bench:consumer", spec, db, {EVENT_TYPE: handler},
            lambda: async_client(endpoint, REGION), prefix,
            ConsumerConfig(wait_time_s=WAIT_TIME_S, pollers=pollers, transaction_per_batch=batch),
            ThreadPoolExecutor(max_workers=max(1, db_pool_max - 2)), default_middleware())
        await consumer.run(stop)

    asyncio.run(main())


# ------------------------------------------------------------------------------ raw
def run_raw(endpoint: str, database_url: str, queue_url: str, pollers: int, batch: bool) -> None:
    from shared.messaging.sqs import sync_client

    stop = stop_on_sigterm()

    def loop() -> None:
        client = sync_client(endpoint, REGION)
        conn = psycopg2.connect(database_url)
        while not stop.is_set():
            messages = client.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=WAIT_TIME_S,
                MessageSystemAttributeNames=["MessageGroupId"]).get("Messages", [])
            if not messages:
                continue
            if batch:
                with conn, conn.cursor() as cur:
                    for m in messages:
                        body = json.loads(m["Body"])
                        insert_row(cur, body["data"], body["event_id"])
            else:
                for m in messages:
                    body = json.loads(m["Body"])
                    with conn, conn.cursor() as cur:
                        insert_row(cur, body["data"], body["event_id"])
            client.delete_message_batch(QueueUrl=queue_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        conn.close()

    run_threads(loop, pollers)


def run_threads(target, count: int) -> None:
    threads = [threading.Thread(target=target, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


# ------------------------------------------------------------------------ sqs-workers
def run_sqs_workers(endpoint: str, database_url: str, queue_name: str, queue_url: str,
                    pollers: int) -> None:
    import boto3
    from sqs_workers import RawQueue, SQSEnv
    from sqs_workers.shutdown_policies import NEVER_SHUTDOWN

    from shared.messaging.sqs import _credentials

    stop = stop_on_sigterm()
    local = threading.local()

    def loop() -> None:
        credentials = _credentials(endpoint)
        env = SQSEnv(sqs_client=boto3.client("sqs", endpoint_url=endpoint, region_name=REGION,
                                             **credentials),
                     sqs_resource=boto3.resource("sqs", endpoint_url=endpoint, region_name=REGION,
                                                 **credentials))
        queue = env.queue(queue_name, RawQueue, queue_url=queue_url)
        local.conn = psycopg2.connect(database_url)

        @queue.raw_processor()
        def process(message) -> None:
            body = json.loads(message.body)
            with local.conn, local.conn.cursor() as cur:
                insert_row(cur, body["data"], body["event_id"])

        class UntilStopped(type(NEVER_SHUTDOWN)):
            def need_shutdown(self) -> bool:
                return stop.is_set()

        queue.process_queue(shutdown_policy=UntilStopped(), wait_second=WAIT_TIME_S)

    run_threads(loop, pollers)


# ------------------------------------------------------------------------------ kombu
def kombu_connection(endpoint: str, queue_name: str, queue_url: str):
    from kombu import Connection

    from shared.messaging.sqs import EMULATOR_AWS_KEY

    host_port = endpoint.split("://", 1)[1]
    return Connection(
        f"sqs://{EMULATOR_AWS_KEY}:{EMULATOR_AWS_KEY}@{host_port}",
        transport_options={
            "region": REGION, "is_secure": False, "wait_time_seconds": WAIT_TIME_S,
            "polling_interval": 0,
            "predefined_queues": {queue_name: {"url": queue_url,
                                               "access_key_id": EMULATOR_AWS_KEY,
                                               "secret_access_key": EMULATOR_AWS_KEY}}})


def run_kombu(endpoint: str, database_url: str, queue_name: str, queue_url: str,
              pollers: int) -> None:
    from kombu import Queue

    stop = stop_on_sigterm()

    def loop() -> None:
        conn_db = psycopg2.connect(database_url)

        def on_message(body, message) -> None:
            with conn_db, conn_db.cursor() as cur:
                insert_row(cur, body["data"], body["event_id"])
            message.ack()

        with kombu_connection(endpoint, queue_name, queue_url) as conn:
            with conn.Consumer([Queue(queue_name, routing_key=queue_name, no_declare=True)],
                               callbacks=[on_message], accept=["json"], prefetch_count=10):
                while not stop.is_set():
                    try:
                        conn.drain_events(timeout=WAIT_TIME_S + 1)
                    except TimeoutError:
                        continue

    run_threads(loop, pollers)


@click.command()
@click.option("--variant", required=True,
              type=click.Choice(["ours", "ours-batch", "raw", "raw-batch", "sqs-workers", "kombu"]))
@click.option("--endpoint", required=True)
@click.option("--database-url", required=True)
@click.option("--queue-name", required=True, help="logical name (ours) / physical name (others)")
@click.option("--queue-url", required=True)
@click.option("--prefix", default="")
@click.option("--pollers", default=2, type=int)
@click.option("--db-pool-max", default=10, type=int)
def main(variant, endpoint, database_url, queue_name, queue_url, prefix, pollers, db_pool_max):
    """Consume until SIGTERM (started by scripts/bench_consumer.py)."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if variant in ("ours", "ours-batch"):
        run_ours(endpoint, database_url, queue_name, prefix, pollers, db_pool_max,
                 variant == "ours-batch")
    elif variant in ("raw", "raw-batch"):
        run_raw(endpoint, database_url, queue_url, pollers, variant == "raw-batch")
    elif variant == "sqs-workers":
        run_sqs_workers(endpoint, database_url, prefix + queue_name, queue_url, pollers)
    else:
        run_kombu(endpoint, database_url, prefix + queue_name, queue_url, pollers)


if __name__ == "__main__":
    main()

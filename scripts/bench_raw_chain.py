"""The minimal raw chain ``bench_pipeline.py`` measures the pipeline against, in the same run.

The same hops as the pipeline, nothing else. Placing an order is one INSERT
(PENDING_PAYMENT); paying it is one INSERT of an authorized payment and one
``SendMessage`` (the payment service's authorization and its relay). An
"order" process receives the authorization, UPDATEs the order to paid and
sends it on (order.paid); a "delivery" process receives that, INSERTs a
shipment (one transaction per message), sends the shipment event on and
deletes the batch; the "order" process receives that too, UPDATEs the order
and deletes. Plain
boto3 and psycopg2, no envelope validation, inbox, outbox, metrics or logs,
the same fauxqs and Postgres, FIFO queues with one group per order, and as
many receive loops per queue as the pipeline's workers have (the order process
polls both of its queues, like the order worker).

:func:`run_chain` runs it from the benchmark's process (placement in threads,
like ``--place direct``); ``python scripts/bench_raw_chain.py --stage ...`` is
one stage process.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import psycopg2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCHEMA = "bench_chain"
REGION = "us-east-1"
PAID_QUEUE = "raw-chain-paid.fifo"            # payment authorized -> order
CREATED_QUEUE = "raw-chain-created.fifo"      # order paid -> delivery
STATUS_QUEUE = "raw-chain-status.fifo"        # shipment created -> order
WAIT_TIME_S = 1
POLL_EVERY_S = 0.25


def create_schema(database_url: str) -> None:
    conn = psycopg2.connect(database_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
            cur.execute(f"CREATE SCHEMA {SCHEMA}")
            cur.execute(f"""CREATE TABLE {SCHEMA}.orders (
                id uuid PRIMARY KEY, customer_id text NOT NULL, body jsonb NOT NULL,
                status text NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                paid_at timestamptz, updated_at timestamptz)""")
            cur.execute(f"""CREATE TABLE {SCHEMA}.payments (
                order_id uuid PRIMARY KEY, status text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT clock_timestamp())""")
            cur.execute(f"""CREATE TABLE {SCHEMA}.shipments (
                id uuid PRIMARY KEY, order_id uuid NOT NULL,
                created_at timestamptz NOT NULL DEFAULT clock_timestamp())""")
    finally:
        conn.close()


def make_queues(sqs_url: str, prefix: str) -> dict[str, str]:
    from shared.messaging.sqs import ensure_queues, sync_client
    from shared.messaging.topology import QueueSpec, Topology

    specs = tuple(QueueSpec(name=name, producer="bench", consumers=("bench",),
                            event_types=("bench",))
                  for name in (PAID_QUEUE, CREATED_QUEUE, STATUS_QUEUE))
    return ensure_queues(sync_client(sqs_url, REGION), Topology(specs), prefix)


# What each stage process receives from.
STAGE_SOURCES = {"delivery": (CREATED_QUEUE,), "order": (PAID_QUEUE, STATUS_QUEUE)}
# Where a message from each source goes on to (none: the chain ends there).
ONWARD = {PAID_QUEUE: CREATED_QUEUE, CREATED_QUEUE: STATUS_QUEUE, STATUS_QUEUE: None}


def stage_loop(source_name: str, sqs_url: str, database_url: str, urls: dict[str, str],
               stop: threading.Event) -> None:
    """Receive from one queue until ``stop``: one transaction per message, then send on, delete."""
    from shared.messaging.sqs import sync_client

    client = sync_client(sqs_url, REGION)
    conn = psycopg2.connect(database_url)
    source = urls[source_name]
    onward_name = ONWARD[source_name]
    while not stop.is_set():
        messages = client.receive_message(
            QueueUrl=source, MaxNumberOfMessages=10, WaitTimeSeconds=WAIT_TIME_S,
            MessageSystemAttributeNames=["MessageGroupId"]).get("Messages", [])
        if not messages:
            continue
        onward = []
        for m in messages:
            body = json.loads(m["Body"])
            with conn, conn.cursor() as cur:
                if source_name == PAID_QUEUE:
                    cur.execute(f"UPDATE {SCHEMA}.orders SET status = 'PAID',"
                                " paid_at = clock_timestamp() WHERE id = %s", (body["order_id"],))
                    onward.append({"order_id": body["order_id"],
                                   "dedup": f"paid-{body['order_id']}"})
                elif source_name == CREATED_QUEUE:
                    shipment_id = str(uuid.uuid4())
                    cur.execute(f"INSERT INTO {SCHEMA}.shipments (id, order_id) VALUES (%s, %s)",
                                (shipment_id, body["order_id"]))
                    onward.append({"order_id": body["order_id"], "dedup": shipment_id})
                else:
                    cur.execute(f"UPDATE {SCHEMA}.orders SET status = 'SHIPPED',"
                                " updated_at = clock_timestamp() WHERE id = %s", (body["order_id"],))
        if onward:
            client.send_message_batch(QueueUrl=urls[onward_name], Entries=[
                {"Id": str(i), "MessageBody": json.dumps(event), "MessageGroupId": event["order_id"],
                 "MessageDeduplicationId": event["dedup"]} for i, event in enumerate(onward)])
        client.delete_message_batch(QueueUrl=source, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
    conn.close()


def place(sqs_url: str, database_url: str, urls: dict[str, str], orders: int, clients: int,
          rate: float) -> tuple[list[str], float]:
    """Per order from ``clients`` threads: INSERT the order, then pay it (INSERT + SendMessage).

    Two transactions, as in the pipeline (the order commits, then the payment
    service records the authorization and its relay sends it); (ids, seconds).
    """
    from shared.messaging.sqs import sync_client

    ids = [str(uuid.uuid4()) for _ in range(orders)]
    started = time.monotonic()

    def worker(slice_ids: list[str], offset: int) -> None:
        client = sync_client(sqs_url, REGION)
        conn = psycopg2.connect(database_url)
        for n, order_id in enumerate(slice_ids):
            if rate > 0:  # a fixed schedule, like the pipeline's paced placement
                due = started + (offset + n * clients) / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            with conn, conn.cursor() as cur:
                cur.execute(f"INSERT INTO {SCHEMA}.orders (id, customer_id, body, status)"
                            " VALUES (%s, %s, %s, 'PENDING_PAYMENT')",
                            (order_id, "bench", json.dumps({"lines": [{"sku": "S", "quantity": 1}]})))
            with conn, conn.cursor() as cur:
                cur.execute(f"INSERT INTO {SCHEMA}.payments (order_id, status)"
                            " VALUES (%s, 'AUTHORIZED')", (order_id,))
            client.send_message(QueueUrl=urls[PAID_QUEUE],
                                MessageBody=json.dumps({"order_id": order_id}),
                                MessageGroupId=order_id, MessageDeduplicationId=order_id)
        conn.close()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, [ids[c::clients] for c in range(clients)], range(clients)))
    return ids, time.monotonic() - started


def run_chain(stack, sqs_url: str, database_url: str, orders: int, clients: int, rate: float,
              pollers: int, drain_timeout_s: float, env: dict, say) -> dict:
    """Place ``orders`` through the raw chain and wait; figures for the report."""
    from devstack.bench import RssSampler

    create_schema(database_url)
    prefix = f"raw-{uuid.uuid4().hex[:6]}-"
    urls = make_queues(sqs_url, prefix)
    script = str(Path(__file__).resolve())
    children = [stack.start(f"raw-chain-{stage}", [
        sys.executable, script, "--stage", stage, "--endpoint", sqs_url,
        "--database-url", database_url, "--urls", json.dumps(urls), "--pollers", str(pollers)],
        env) for stage in ("delivery", "order")]
    sampler = RssSampler()
    for child in children:
        sampler.track(f"raw chain {child.name.removeprefix('raw-chain-')} process", child.proc.pid)
    sampler.track("postgres", stack.postmaster_pid(), children=True)
    sampler.start()
    time.sleep(1.0)  # both stages polling before the first order
    cpu_before = sampler.cpu_by_label()
    say(f"raw chain: placing {orders} orders ({clients} threads)")
    ids, placing_s = place(sqs_url, database_url, urls, orders, clients, rate)
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    deadline = time.monotonic() + drain_timeout_s
    done = 0
    while time.monotonic() < deadline:
        with conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {SCHEMA}.orders WHERE status = 'SHIPPED'")
            done = cur.fetchone()[0]
        if done >= orders:
            break
        time.sleep(POLL_EVERY_S)
    cpu_after = sampler.cpu_by_label()
    sampler.stop()
    for child in children:
        stack.stop(child)
    with conn.cursor() as cur:
        cur.execute(f"SELECT extract(epoch FROM updated_at) FROM {SCHEMA}.orders"
                    " WHERE updated_at IS NOT NULL ORDER BY updated_at")
        completions = [float(row[0]) for row in cur.fetchall()]
        cur.execute(f"SELECT count(*) FROM (SELECT order_id FROM {SCHEMA}.shipments"
                    " GROUP BY order_id HAVING count(*) > 1) d")
        duplicated = cur.fetchone()[0]
    conn.close()
    cpu_ms = {k: 1000 * (cpu_after[k] - cpu_before.get(k, 0.0)) / max(1, done)
              for k in cpu_after}
    return {"placed": len(ids), "placed_per_s": len(ids) / placing_s if placing_s else 0.0,
            "completed": done, "completions": completions, "duplicated": duplicated,
            "cpu_ms": cpu_ms}


@click.command()
@click.option("--stage", type=click.Choice(["delivery", "order"]), required=True)
@click.option("--endpoint", required=True)
@click.option("--database-url", required=True)
@click.option("--urls", required=True, help="JSON: queue name -> URL")
@click.option("--pollers", default=2, type=int)
def main(stage, endpoint, database_url, urls, pollers):
    """One stage of the raw chain, until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    queue_urls = json.loads(urls)
    threads = [threading.Thread(target=stage_loop, args=(source, endpoint, database_url,
                                                         queue_urls, stop), daemon=True)
               for source in STAGE_SOURCES[stage] for _ in range(pollers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()

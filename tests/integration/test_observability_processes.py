"""Metrics and trace context with the processes run as in production (gunicorn, workers).

- An API under gunicorn with two processes, recycled as it goes: ``/metrics``
  counts every request whichever process answers the scrape (multiprocess mode).
- A request's ``traceparent`` reaches the delivery worker's logs and the
  delivery events it emits; the worker serves its metrics on the configured
  address, with the depth of its queues and its last receive.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from shared.tracecontext import parse
from tests.conftest import free_port
from tests.support.payments import authorize
from tests.support.wait import wait_until

# Every test here starts service processes: deselect with -m "not slow".
pytestmark = pytest.mark.slow

REQUESTS = 120
ORDER = {
    "items": [{"sku": "SKU-1", "quantity": 1}],
    "customer_email": "ada@example.com",
    "shipping_address": {"name": "Ada", "line1": "1 Main St", "city": "Berlin",
                         "postal_code": "10115", "country": "DE"},
}
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"  # the W3C specification's example
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = requests.get(url, timeout=60).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def live_requests(samples, endpoint: str = "/health/live") -> float:
    return sum(value for (name, labels), value in samples.items()
               if name == "http_requests_total" and dict(labels).get("endpoint") == endpoint)


@pytest.mark.parametrize("configured", [True, False], ids=["configured-dir", "gunicorn-temp-dir"])
def test_api_metrics_count_every_gunicorn_process(processes, tmp_path, configured):
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"left by an earlier run")
    env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)} if configured else {}
    api = processes.api("delivery", port, WEB_CONCURRENCY="2", GUNICORN_THREADS="2",
                        # Recycled every 30 requests: the dead processes' counts must stay.
                        GUNICORN_MAX_REQUESTS="30", GUNICORN_MAX_REQUESTS_JITTER="10", **env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: _answers(f"{base}/health/live"), timeout=60, message="delivery API up")
    before = live_requests(scrape(f"{base}/metrics"))

    def get(_):
        # A new connection each time, so the kernel hands them to both processes.
        # Generous: both processes may be restarting at once on a loaded machine.
        return requests.get(f"{base}/health/live", timeout=120, headers={"Connection": "close"}).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(get, range(REQUESTS)))
    assert statuses == [200] * REQUESTS
    # Whichever process answers each scrape, it reports the total of all of them.
    totals = {live_requests(scrape(f"{base}/metrics")) - before for _ in range(10)}
    assert totals == {REQUESTS}, api.log_text()[-3000:]
    if configured:
        pids = {path.stem.split("_")[-1] for path in metrics_dir.glob("counter_*.db")}
        assert len(pids) >= 3, pids  # two processes at least, one more since recycled
        assert "999999" not in pids  # the earlier run's file was removed at start


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_a_request_trace_reaches_the_delivery_worker_and_its_events(order_client, auth_header,
                                                                    processes, delivery_db,
                                                                    order_db):
    metrics_port = free_port()
    processes.worker("order")
    delivery = processes.worker("delivery", WORKER_METRICS_PORT=str(metrics_port),
                                WORKER_METRICS_HOST="127.0.0.1", WORKER_QUEUE_METRICS_INTERVAL_S="0.5")
    created = order_client.post("/v1/orders", json=ORDER,
                                headers={**auth_header(), "traceparent": TRACEPARENT})
    assert created.status_code == 201, created.get_json()
    order_id = created.get_json()["id"]
    # The payment confirmed in the same trace (the storefront sends its traceparent along).
    authorize(order_db, created.get_json(), traceparent=TRACEPARENT)

    def shipment_events():
        with delivery_db.transaction() as cur:
            cur.execute("SELECT event_type, body FROM outbox WHERE aggregate_id = %s", (order_id,))
            return cur.fetchall() or None

    rows = wait_until(shipment_events, timeout=60, message="delivery events for the order")
    for row in rows:
        body = json.loads(row["body"])
        assert parse(body["traceparent"]).trace_id == TRACE_ID, row["event_type"]
        assert body["traceparent"] != TRACEPARENT  # the consumer's own span of that trace

    def handled_in_trace():
        lines = [json.loads(line) for line in delivery.log_text().splitlines() if line.startswith("{")]
        return [entry for entry in lines if entry.get("event") == "message_handled"
                and entry.get("event_type") == "order.paid"] or None

    handled = wait_until(handled_in_trace, timeout=30, message="delivery worker logged the event")
    assert handled[0]["trace_id"] == TRACE_ID

    # The worker's endpoint: where it was told to listen, with its queues and its receives.
    samples = wait_until(lambda: _worker_samples(metrics_port), timeout=30,
                         message="delivery worker metrics with queue depth")
    last = [value for (name, labels), value in samples.items()
            if name == "consumer_last_receive_timestamp_seconds"
            and dict(labels)["queue"] == "order-paid.fifo"]
    assert last and time.time() - 60 < last[0] <= time.time() + 1
    received = [value for (name, labels), value in samples.items()
                if name == "messages_received_total" and dict(labels)["event_type"] == "order.paid"]
    assert received == [1.0]


def _worker_samples(port: int):
    try:
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    except requests.RequestException:
        return None
    names = {name for name, _ in samples}
    wanted = {"sqs_queue_messages", "sqs_dlq_messages", "outbox_pending_rows", "messages_received_total"}
    return samples if wanted <= names else None


"""The baseline for ``bench_sse.py``: the least an SSE endpoint fed by LISTEN/NOTIFY can do.

``GET /stream?customer=<id>`` streams every NOTIFY on channel ``bench_sse``
whose JSON payload names that customer, as ``id:``/``data:`` events. One
LISTEN connection per process (a greenlet), no auth, no database reads, no
replay, no filtering beyond the customer: it measures what gunicorn's gevent
worker + Flask + Postgres NOTIFY cost on this machine, so the notification
API's figures can be read against it.

Run under the same server model as the notification API::

    PYTHONPATH=scripts BENCH_DATABASE_URL=postgresql://... gunicorn -c infra/gunicorn.conf.py \\
        --worker-class gevent --worker-connections 2000 "bench_sse_baseline_app:create_app()"
"""

from __future__ import annotations

import json
import os
import queue
import select
import threading

import psycopg2
from flask import Flask, Response, request

CHANNEL = "bench_sse"
HEARTBEAT_S = 15.0


def create_app() -> Flask:
    """The baseline app (psycopg2 made cooperative when gevent has patched the process)."""
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    dsn = os.environ["BENCH_DATABASE_URL"]
    clients: dict[str, set[queue.Queue]] = {}
    lock = threading.Lock()
    started = threading.Event()

    def listen() -> None:
        conn = psycopg2.connect(dsn)
        conn.set_session(autocommit=True)
        with conn.cursor() as cur:
            cur.execute(f"LISTEN {CHANNEL}")
        started.set()
        while True:
            ready, _, _ = select.select([conn], [], [], 5)
            if not ready:
                continue
            conn.poll()
            while conn.notifies:
                note = conn.notifies.pop(0)
                payload = json.loads(note.payload)
                with lock:
                    targets = list(clients.get(payload["customer"], ()))
                for target in targets:
                    target.put_nowait(note.payload)

    app = Flask("bench_sse_baseline")
    listener: list[threading.Thread] = []

    @app.get("/stream")
    def stream():
        if not listener:
            listener.append(threading.Thread(target=listen, daemon=True))
            listener[0].start()
        started.wait(10)
        customer = request.args["customer"]
        inbox: queue.Queue = queue.Queue()
        with lock:
            clients.setdefault(customer, set()).add(inbox)

        def body():
            try:
                yield ": connected\n\n"
                while True:
                    try:
                        payload = inbox.get(timeout=HEARTBEAT_S)
                    except queue.Empty:
                        yield ": heartbeat\n\n"
                        continue
                    yield f"id: {json.loads(payload)['id']}\ndata: {payload}\n\n"
            finally:
                with lock:
                    clients[customer].discard(inbox)

        return Response(body(), mimetype="text/event-stream")

    @app.get("/health")
    def health():
        return {"status": "ok"}

    return app

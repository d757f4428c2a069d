"""Prometheus metrics shared by every service (one registry per process).

The messaging ones (messages, retries, DLQ moves, outbox) are fed by the
:class:`~shared.messaging.middleware.PrometheusMiddleware` that
:func:`shared.worker.default_middleware` installs; the queue-depth and
outbox-pending gauges by the worker's periodic refresh
(:mod:`shared.worker_gauges`); the HTTP ones by :mod:`shared.web`. Names and
labels are a contract with ``infra/monitoring/`` (dashboard and alert rules;
``tests/unit/test_monitoring.py`` fails when one names a metric that is not
registered here or in a service).

An API runs under gunicorn with several processes: with
``PROMETHEUS_MULTIPROC_DIR`` set, each process writes its values to files in
that directory and ``/metrics`` merges them (:mod:`shared.metrics_export`).
Every gauge therefore says how processes combine (``multiprocess_mode``):
``livesum`` for counts held by each process (SSE clients), ``livemax`` for
"is anything in this state" (a breaker open in any process) and for values a
worker measures (one process; ``live`` drops a dead process' last value).
"""

from prometheus_client import Counter, Gauge, Histogram

# -- HTTP (every API) ----------------------------------------------------------------
# ``endpoint`` is the Flask URL rule (``/v1/orders/<uuid:order_id>``), never the raw
# path: one series per route, whatever ids clients send.
HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["service", "method", "endpoint", "status"])
HTTP_LATENCY = Histogram("http_request_duration_seconds", "HTTP request latency",
                         ["service", "method", "endpoint"])

# -- consumers (every worker) -------------------------------------------------------
# ``consumer`` is ``<service>:<queue>``; ``queue`` the topology name, so dashboards can
# sum by queue without parsing it. ``event_type`` is ``unknown`` for a body that did
# not parse as an envelope.
MESSAGES_RECEIVED = Counter("messages_received_total",
                            "Messages taken up by a consumer's handler (redeliveries included)",
                            ["consumer", "queue", "event_type"])
MESSAGES_HANDLED = Counter("messages_handled_total", "Messages handled by consumers",
                           ["consumer", "queue", "event_type", "outcome"])
MESSAGE_RETRIES = Counter("message_retries_total", "Transient handler failures (message retried)",
                          ["consumer", "queue", "event_type"])
DLQ_MOVES = Counter("dlq_moves_total", "Messages sent to a dead-letter queue by us",
                    ["consumer", "queue", "event_type", "reason"])
MESSAGE_DURATION = Histogram("message_handle_duration_seconds",
                             "From a handler thread taking a message up to its outcome "
                             "(parse, inbox claim, handler, commit)",
                             ["consumer", "queue", "event_type", "outcome"])
CONSUMER_ALIVE = Gauge("consumer_alive", "1 while every poller of a consumer runs (worker health)",
                       ["consumer"], multiprocess_mode="livemax")
CONSUMER_RESTARTS = Counter("consumer_restarts_total", "Crashed consumer pollers restarted",
                            ["consumer"])
CONSUMER_LAST_RECEIVE = Gauge("consumer_last_receive_timestamp_seconds",
                              "Unix time of the consumer's last ReceiveMessage that the broker "
                              "answered (empty answers included)", ["consumer", "queue"],
                              multiprocess_mode="livemax")

# -- outbox (every worker's relay and its periodic refresh) -----------------------------
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox rows published", ["service", "queue"])
OUTBOX_SEND_FAILURES = Counter("outbox_send_failures_total", "Outbox sends that failed (retried)",
                               ["service", "queue"])
OUTBOX_LAG = Gauge("outbox_lag_seconds", "Age of the oldest unpublished outbox row", ["service"],
                   multiprocess_mode="livemax")
OUTBOX_PENDING = Gauge("outbox_pending_rows", "Outbox rows not yet published", ["service"],
                       multiprocess_mode="livemax")

# -- queues (exported by the workers that consume them; shared.worker_gauges) ----------
QUEUE_MESSAGES = Gauge("sqs_queue_messages",
                       "Messages in a work queue by state (visible, in_flight, delayed), "
                       "from GetQueueAttributes", ["queue", "state"], multiprocess_mode="livemax")
DLQ_MESSAGES = Gauge("sqs_dlq_messages", "Messages in the dead-letter queue of a work queue",
                     ["queue", "dlq"], multiprocess_mode="livemax")
QUEUE_METRICS_FAILURES = Counter("sqs_queue_metrics_failures_total",
                                 "Queue-depth refreshes that failed (broker unreachable)", ["queue"])
# Order groups stuck behind a failing or long in-flight head message, per FIFO queue.
# Set by the service that inspects its consumers' groups (the admin/ops side); declared
# here so its producer and the alert rules agree on one name and label set.
FIFO_BLOCKED_GROUPS = Gauge("fifo_blocked_groups",
                            "FIFO message groups blocked behind a failing or long in-flight "
                            "head message", ["service", "queue"], multiprocess_mode="livemax")

# -- resilience (APIs and workers) ------------------------------------------------------
BREAKER_STATE = Gauge("circuit_breaker_open", "1 when a circuit breaker is open", ["breaker"],
                      multiprocess_mode="livemax")

"""Prometheus metrics shared by every service (one registry per process).

The messaging ones (messages, retries, DLQ moves, outbox) are fed by the
:class:`~shared.messaging.middleware.PrometheusMiddleware` that
:func:`shared.worker.default_middleware` installs; names and labels are a
contract with the dashboards.
"""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["service", "method", "endpoint", "status"])
HTTP_LATENCY = Histogram("http_request_duration_seconds", "HTTP request latency",
                         ["service", "method", "endpoint"])
MESSAGES_HANDLED = Counter("messages_handled_total", "Messages handled by consumers",
                           ["consumer", "event_type", "outcome"])
MESSAGE_RETRIES = Counter("message_retries_total", "Transient handler failures (message retried)",
                          ["consumer", "event_type"])
DLQ_MOVES = Counter("dlq_moves_total", "Messages sent to a dead-letter queue by us",
                    ["consumer", "reason"])
CONSUMER_ALIVE = Gauge("consumer_alive", "1 while every poller of a consumer runs (worker health)",
                       ["consumer"])
CONSUMER_RESTARTS = Counter("consumer_restarts_total", "Crashed consumer pollers restarted",
                            ["consumer"])
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Outbox rows published", ["service", "queue"])
OUTBOX_SEND_FAILURES = Counter("outbox_send_failures_total", "Outbox sends that failed (retried)",
                               ["service", "queue"])
OUTBOX_LAG = Gauge("outbox_lag_seconds", "Age of the oldest unpublished outbox row", ["service"])
BREAKER_STATE = Gauge("circuit_breaker_open", "1 when a circuit breaker is open", ["breaker"])

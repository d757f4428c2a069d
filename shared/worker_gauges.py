"""Gauges a worker refreshes on a timer: its queues' depth and its outbox's backlog.

Every ``WORKER_QUEUE_METRICS_INTERVAL_S`` (0: off) a worker asks SQS for the
depth of each queue it consumes and of that queue's DLQ (one cheap
``GetQueueAttributes`` each: no message is touched) and counts its service's
unpublished outbox rows:

- ``sqs_queue_messages{queue, state}`` — ``visible``, ``in_flight``, ``delayed``;
- ``sqs_dlq_messages{queue, dlq}`` — messages waiting in the DLQ of ``queue``;
- ``outbox_pending_rows{service}`` and ``outbox_lag_seconds{service}`` — the
  relay keeps the lag while it runs; measured here too, it stays true when the
  relay is off in this worker or has died.

Several replicas of a worker export the same queue figures: dashboards and
alerts take ``max by (queue)``. A failed refresh of a queue (broker
unreachable) counts ``sqs_queue_metrics_failures_total{queue}`` and keeps the
last values, so a DLQ alert does not clear itself because SQS went away.

On AWS the same figures come from CloudWatch (``ApproximateNumberOfMessagesVisible``
and friends, per queue, at no cost to the workers; docs/architecture.md,
"Monitoring"): set the interval to 0 there if you scrape CloudWatch instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared import metrics
from shared.logging import get_logger
from shared.messaging import outbox_stats
from shared.messaging.sqs import physical_name
from shared.messaging.topology import QueueSpec
from shared.periodic import Task, periodic

log = get_logger(__name__)

# SQS attribute -> the ``state`` label of sqs_queue_messages.
DEPTH_ATTRIBUTES = {
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in_flight",
    "ApproximateNumberOfMessagesDelayed": "delayed",
}


class WorkerGauges:
    """Refreshes the gauges above for one worker: ``refresh()`` once per interval."""

    def __init__(self, db, sqs, service: str, queue_prefix: str, queues: Iterable[QueueSpec]):
        self.db = db
        self.sqs = sqs  # a boto3 SQS client (the refresh runs in a thread)
        self.service = service
        self.prefix = queue_prefix
        self.queues = tuple(queues)
        self._urls: dict[str, str] = {}

    def refresh(self) -> None:
        """Measure everything once; a failing queue does not stop the others."""
        for spec in self.queues:
            try:
                self._refresh_queue(spec)
            except Exception as exc:  # broker down, queue missing: try again next time
                metrics.QUEUE_METRICS_FAILURES.labels(spec.name).inc()
                for name in (spec.name, spec.dlq_name):
                    self._urls.pop(name, None)
                log.warning("queue_metrics_failed", queue=spec.name, error=f"{type(exc).__name__}: {exc}")
        with self.db.transaction() as cur:
            backlog = outbox_stats.backlog(cur)
        metrics.OUTBOX_PENDING.labels(self.service).set(backlog.pending)
        metrics.OUTBOX_LAG.labels(self.service).set(backlog.oldest_age_s)

    def _refresh_queue(self, spec: QueueSpec) -> None:
        depth = self._attributes(spec.name)
        for attribute, state in DEPTH_ATTRIBUTES.items():
            metrics.QUEUE_MESSAGES.labels(spec.name, state).set(int(depth.get(attribute, 0)))
        dead = self._attributes(spec.dlq_name)
        metrics.DLQ_MESSAGES.labels(spec.name, spec.dlq_name).set(
            int(dead.get("ApproximateNumberOfMessages", 0)))

    def _attributes(self, name: str) -> dict[str, str]:
        url = self._urls.get(name)
        if url is None:
            url = self.sqs.get_queue_url(QueueName=physical_name(self.prefix, name))["QueueUrl"]
            self._urls[name] = url
        return self.sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=list(DEPTH_ATTRIBUTES))["Attributes"]


def worker_gauges_task(gauges: WorkerGauges, interval_s: float) -> Task:
    """The worker task running ``gauges.refresh`` every ``interval_s`` seconds."""
    return periodic(gauges.refresh, interval_s, error_event="worker_gauges_failed",
                    started_event="worker_gauges_started", interval_s=interval_s,
                    queues=[q.name for q in gauges.queues])

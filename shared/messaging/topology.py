"""Queue topology: which queues exist, who produces and who consumes what.

A :class:`Topology` is a value the application builds once and passes in:
the outbox routes events by it (:func:`shared.messaging.outbox.add_event`),
the relay reads each queue's kind from it, :func:`shared.messaging.sqs.ensure_queues`
creates it and the DLQ tool (:mod:`shared.messaging.dlq`) walks it. The
library itself holds no queue table.

Rules checked when a topology is built: FIFO queues and only they end in
``.fifo``; ``maxReceiveCount`` is 1..1000; queue names (DLQs included) are
unique; a FIFO queue's DLQ is FIFO (derived from the name).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

DEFAULT_MAX_RECEIVE_COUNT = 5
DEFAULT_VISIBILITY_TIMEOUT_S = 30
# Longest retention SQS allows: dead letters must outlive a long weekend.
DLQ_RETENTION_S = 14 * 24 * 3600
QUEUE_RETENTION_S = 4 * 24 * 3600


@dataclass(frozen=True)
class QueueSpec:
    """One work queue with its dead-letter queue."""

    name: str
    producer: str
    consumers: tuple[str, ...]
    event_types: tuple[str, ...]
    fifo: bool = True
    max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT
    visibility_timeout_s: int = DEFAULT_VISIBILITY_TIMEOUT_S

    @property
    def dlq_name(self) -> str:
        """``<name>-dlq.fifo`` for FIFO queues, ``<name>-dlq`` for standard ones."""
        if self.fifo:
            return self.name.removesuffix(".fifo") + "-dlq.fifo"
        return self.name + "-dlq"

    def __post_init__(self) -> None:
        if self.fifo != self.name.endswith(".fifo"):
            raise ValueError(f"queue {self.name}: FIFO queues and only they end in .fifo")
        if not 1 <= self.max_receive_count <= 1000:
            raise ValueError(f"queue {self.name}: maxReceiveCount must be 1..1000")


@dataclass(frozen=True)
class Topology:
    """Every queue of one system, in declaration order (DLQs are derived)."""

    queues: tuple[QueueSpec, ...]
    queue_retention_s: int = QUEUE_RETENTION_S
    dlq_retention_s: int = DLQ_RETENTION_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", tuple(self.queues))
        names = self.all_queue_names()
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"queue names used twice: {duplicates}")

    def __iter__(self) -> Iterator[QueueSpec]:
        return iter(self.queues)

    def __len__(self) -> int:
        return len(self.queues)

    def queue(self, name: str) -> QueueSpec:
        """The spec of the queue called ``name`` (KeyError if there is none)."""
        for spec in self.queues:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def routes_for(self, producer: str, event_type: str) -> list[QueueSpec]:
        """The queues an event of ``event_type`` from ``producer`` is published to."""
        return [q for q in self.queues if q.producer == producer and event_type in q.event_types]

    def consumed_by(self, service: str) -> list[QueueSpec]:
        """The queues ``service`` consumes."""
        return [q for q in self.queues if service in q.consumers]

    def all_queue_names(self) -> list[str]:
        """Every queue and DLQ name, DLQs first (they must exist before their sources)."""
        return [q.dlq_name for q in self.queues] + [q.name for q in self.queues]

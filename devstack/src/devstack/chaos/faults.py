"""The fault schedule (seeded, printed, reproducible) and the message faults.

:func:`schedule` turns a seed and the run's length into a list of
:class:`Fault` — when, what, for how long — that the run prints before it
starts and replays in order. The same seed and options give the same list.

Kinds:

* ``kill`` — SIGKILL of one API or worker process (every process at least once),
  started again after ``restart_after_s``;
* ``sqs_outage`` — the SQS endpoint unreachable for every service (the proxy
  in front of the emulator refuses connections and cuts the open ones);
* ``postgres_restart`` — PostgreSQL stopped (connections cut) and started;
* ``inventory_freeze`` — the inventory API stopped with SIGSTOP, then SIGCONT;
* ``provider_freeze`` — the payment provider (localstripe) stopped with SIGSTOP:
  a checkout made meanwhile must answer 503 and leave nothing behind; then SIGCONT;
* ``duplicate`` — copies of real envelopes (published outbox rows, with a new
  deduplication id so SQS FIFO does not drop them) sent again, newest first:
  duplicated and reordered deliveries;
* ``poison`` — the malformed-message corpus (:mod:`.corpus`) on every queue;
  each message must end in that queue's DLQ with its entry's reason, and the
  consumers must go on.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

from devstack.chaos.corpus import Entry, corpus_for
from shared.queues import QUEUES

KILL, SQS_OUTAGE, PG_RESTART, FREEZE, DUPLICATE, POISON = (
    "kill", "sqs_outage", "postgres_restart", "inventory_freeze", "duplicate", "poison")
PROVIDER_FREEZE = "provider_freeze"
OUTAGES = (SQS_OUTAGE, PG_RESTART, FREEZE, PROVIDER_FREEZE)
KINDS = frozenset({KILL, *OUTAGES, DUPLICATE, POISON})


@dataclass(frozen=True)
class Fault:
    at_s: float            # seconds after the traffic started
    kind: str
    target: str = ""       # the process of a kill
    duration_s: float = 0  # outage length; for a kill, the pause before the restart
    count: int = 0         # envelopes per duplicate burst

    def describe(self) -> str:
        what = {KILL: f"SIGKILL {self.target}, restart after {self.duration_s:.1f}s",
                SQS_OUTAGE: f"SQS endpoint unreachable for {self.duration_s:.0f}s",
                PG_RESTART: "PostgreSQL restart",
                FREEZE: f"inventory API frozen (SIGSTOP) for {self.duration_s:.0f}s",
                PROVIDER_FREEZE: f"payment provider (localstripe) frozen (SIGSTOP) for "
                                 f"{self.duration_s:.0f}s",
                DUPLICATE: f"{self.count} published envelopes sent again, newest first",
                POISON: f"the malformed corpus on each of the {len(QUEUES)} queues"}[self.kind]
        return f"t+{self.at_s:6.1f}s  {what}"


@dataclass
class Options:
    duration_s: float
    processes: tuple[str, ...]
    kills_per_process: int = 1
    sqs_outage_s: float = 30.0
    freeze_s: float = 10.0
    provider_freeze_s: float = 12.0
    duplicate_bursts: int = 4
    duplicates_per_burst: int = 25
    extra: dict = field(default_factory=dict)


def schedule(seed: int, options: Options) -> list[Fault]:
    """The faults of one run, in time order (the same for the same seed and options)."""
    rng = random.Random(seed)
    length = options.duration_s
    faults: list[Fault] = []
    # The two outages of shared infrastructure apart from each other, so each has its own
    # recovery time: SQS in the first half, PostgreSQL in the second.
    faults.append(Fault(round(rng.uniform(0.15, 0.35) * length, 1), SQS_OUTAGE,
                        duration_s=options.sqs_outage_s))
    faults.append(Fault(round(rng.uniform(0.6, 0.75) * length, 1), PG_RESTART))
    faults.append(Fault(round(rng.uniform(0.1, 0.85) * length, 1), FREEZE, "inventory-api",
                        duration_s=options.freeze_s))
    faults.append(Fault(round(rng.uniform(0.05, 0.5) * length, 1), POISON))
    faults.append(Fault(round(rng.uniform(0.1, 0.85) * length, 1), PROVIDER_FREEZE, "localstripe",
                        duration_s=options.provider_freeze_s))
    for _ in range(options.duplicate_bursts):
        faults.append(Fault(round(rng.uniform(0.1, 0.9) * length, 1), DUPLICATE,
                            count=options.duplicates_per_burst))
    for name in options.processes:
        for _ in range(options.kills_per_process):
            faults.append(Fault(round(rng.uniform(0.05, 0.85) * length, 1), KILL, name,
                                duration_s=round(rng.uniform(0.2, 3.0), 1)))
    return sorted(faults, key=lambda f: (f.at_s, f.kind, f.target))


# ------------------------------------------------------------------ message faults


def send_poison(sqs, queue_urls: dict[str, str], sent: dict[str, list[Entry]]) -> None:
    """The malformed corpus on every queue, recorded in ``sent`` (queue -> entries) as each
    is sent: every one of them must be dead-lettered."""
    for spec in QUEUES:
        for entry in corpus_for(spec):
            message = {"QueueUrl": queue_urls[spec.name], "MessageBody": entry.body}
            if spec.fifo:
                message.update(MessageGroupId=f"chaos-corpus-{uuid.uuid4()}",
                               MessageDeduplicationId=str(uuid.uuid4()))
            sqs.send_message(**message)
            sent.setdefault(spec.name, []).append(entry)


def recent_envelopes(schemas, count: int) -> list[dict]:
    """The ``count`` most recently published outbox rows across the services, newest first
    (``schemas``: :class:`devstack.chaos.invariants.Schemas`)."""
    rows = []
    for service in ("order", "delivery", "inventory", "notification", "payment"):
        rows += [dict(r, service=service) for r in schemas.rows(
            service, "SELECT queue, aggregate_id, event_type, event_id::text AS event_id, body,"
                     " published_at FROM outbox WHERE published_at IS NOT NULL"
                     " ORDER BY published_at DESC LIMIT %s", (count,))]
    rows.sort(key=lambda r: r["published_at"], reverse=True)
    return rows[:count]


def send_duplicates(sqs, queue_urls: dict[str, str], rows: list[dict]) -> int:
    """Send each row again as the relay did, with a fresh deduplication id; how many were sent."""
    by_name = {q.name: q for q in QUEUES}
    sent = 0
    for row in rows:
        spec = by_name.get(row["queue"])
        if spec is None:
            continue
        entry = {"QueueUrl": queue_urls[spec.name], "MessageBody": row["body"],
                 "MessageAttributes": {
                     "event_type": {"DataType": "String", "StringValue": row["event_type"]},
                     "event_id": {"DataType": "String", "StringValue": row["event_id"]}}}
        if spec.fifo:
            entry.update(MessageGroupId=row["aggregate_id"],
                         MessageDeduplicationId=f"chaos-dup-{uuid.uuid4()}")
        sqs.send_message(**entry)
        sent += 1
    return sent

"""The malformed-message corpus for a running system: what each queue must dead-letter, and why.

Per queue: bodies that are no envelope at all (not JSON, truncated, an array, a
string, null, nested 100,000 deep, 200 KB, a NUL character), envelopes with a
missing field, an unknown field or a wrong type in each field (all
``invalid_envelope``), an envelope of an event type the queue does not carry
(``unknown_event_type``) and an envelope of the queue's own event type whose
data breaks its contract (``permanent_error``). Each body is unique on its
queue, so a dead letter can be traced back to the entry that caused it.
(A NUL character, in the suite's corpus, is left out: SQS refuses to accept
such a body at all, so it can never reach a consumer of a real queue.)
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from shared.messaging.envelope import Envelope
from shared.messaging.outcomes import INVALID_ENVELOPE, PERMANENT_ERROR, UNKNOWN_EVENT_TYPE
from shared.messaging.topology import QueueSpec

DEEPLY_NESTED = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError
HUGE_BYTES = 200_000                            # under 256 KiB with the dlq_* attributes
WRONG_FIELD_TYPES = {
    "event_id": 42, "event_type": ["order.created"], "event_version": "1",
    "occurred_at": 1_700_000_000, "producer": {"name": "x"}, "correlation_id": 7,
    "causation_id": "not-a-uuid", "aggregate_id": None, "data": ["not", "a", "dict"],
}
_MISSING = object()


@dataclass(frozen=True)
class Entry:
    label: str
    body: str
    reason: str   # the dlq_reason it must be dead-lettered with


def _envelope(spec: QueueSpec, event_type: str | None = None, data=None) -> Envelope:
    return Envelope(event_type=event_type or spec.event_types[0], aggregate_id=f"corpus-{uuid.uuid4()}",
                    producer="chaos-corpus", data={"corpus": True} if data is None else data)


def _with(spec: QueueSpec, **fields) -> str:
    body = json.loads(_envelope(spec).to_json())
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not _MISSING})


def corpus_for(spec: QueueSpec) -> list[Entry]:
    """Every malformed message for ``spec``'s queue."""
    tag = f"{spec.name} {uuid.uuid4()}"  # makes the bare bodies unique per queue and run
    entries = [Entry("not JSON", f"chaos corpus {tag}: this is not json", INVALID_ENVELOPE),
               Entry("truncated JSON", f'{{"tag": "{tag}", "event_id": ', INVALID_ENVELOPE),
               Entry("a JSON array", json.dumps([tag, 1, 2]), INVALID_ENVELOPE),
               Entry("a JSON string", json.dumps(tag), INVALID_ENVELOPE),
               Entry("deeply nested", DEEPLY_NESTED[:-1] + f'"{tag}"' + "]", INVALID_ENVELOPE),
               Entry("huge", json.dumps({"tag": tag, "blob": "x" * HUGE_BYTES}), INVALID_ENVELOPE),
               Entry("a missing field", _with(spec, producer=_MISSING), INVALID_ENVELOPE),
               Entry("an unknown field", _with(spec, extra="field"), INVALID_ENVELOPE)]
    entries += [Entry(f"wrong type in {name}", _with(spec, **{name: value}), INVALID_ENVELOPE)
                for name, value in WRONG_FIELD_TYPES.items()]
    entries.append(Entry("unknown event type", _envelope(spec, "chaos.unknown_event").to_json(),
                         UNKNOWN_EVENT_TYPE))
    entries.append(Entry("valid envelope, invalid data",
                         _envelope(spec, data={"not": "this event's contract"}).to_json(),
                         PERMANENT_ERROR))
    return entries

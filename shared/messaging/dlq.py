"""Dead-letter queue inspection and replay for operators.

Replay prefers SQS's own ``StartMessageMoveTask`` (AWS, ElasticMQ), naming
both the DLQ (``SourceArn``) and the queue its dead letters came from
(``DestinationArn``: the consumer writes dead letters itself, so SQS has no
record of their source); it refuses when the DLQ's head names another source
queue in ``dlq_source_queue``. Where the backend lacks the API, or a limit is
given, it uses a portable receive -> send -> delete loop (moto, fauxqs) that keeps
each message group's order: messages are re-sent in the order the DLQ hands
them out, one group's messages never overtaking each other.

Every function takes the queue it works on as a :class:`QueueSpec` (or, for
``depths``, the whole :class:`Topology`): the tool knows no queue table of its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from shared.messaging.sqs import MAX_BATCH_ENTRIES, physical_name
from shared.messaging.topology import QueueSpec, Topology

DLQ_ATTRIBUTE_PREFIX = "dlq_"
# Set by the consumer on every dead letter it writes: the logical name of the queue it came from.
SOURCE_ATTRIBUTE = "dlq_source_queue"
# Receive short: a replay must finish, not long-poll an empty queue.
PEEK_WAIT_S = 1
# How long a peeked message stays hidden from other readers of the DLQ.
PEEK_VISIBILITY_S = 0
REPLAY_VISIBILITY_S = 60
MOVE_TASK_UNSUPPORTED = ("UnsupportedOperation", "InvalidAction", "NotImplemented",
                         "AWS.SimpleQueueService.UnsupportedOperation", "InvalidParameterValue")


@dataclass(frozen=True)
class QueueDepth:
    """One queue's approximate message counts and its DLQ's."""

    name: str
    visible: int
    in_flight: int
    dlq_name: str
    dlq_visible: int


def depths(client, topology: Topology, prefix: str = "") -> list[QueueDepth]:
    """Approximate depth of every queue of ``topology`` and its DLQ (SQS's own approximation)."""
    out = []
    for spec in topology:
        main = _attrs(client, physical_name(prefix, spec.name))
        dlq = _attrs(client, physical_name(prefix, spec.dlq_name))
        out.append(QueueDepth(spec.name, int(main.get("ApproximateNumberOfMessages", 0)),
                              int(main.get("ApproximateNumberOfMessagesNotVisible", 0)),
                              spec.dlq_name, int(dlq.get("ApproximateNumberOfMessages", 0))))
    return out


def peek(client, spec: QueueSpec, prefix: str = "", limit: int = 10) -> list[dict[str, Any]]:
    """Up to ``limit`` dead letters with their reason attributes; they stay in the DLQ."""
    url = _url(client, physical_name(prefix, spec.dlq_name))
    seen: list[dict[str, Any]] = []
    handles = []
    while len(seen) < limit:
        batch = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=min(MAX_BATCH_ENTRIES, limit - len(seen)),
            WaitTimeSeconds=PEEK_WAIT_S, VisibilityTimeout=REPLAY_VISIBILITY_S,
            MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            handles.append(message["ReceiptHandle"])
            attrs = {k: v.get("StringValue") for k, v in message.get("MessageAttributes", {}).items()}
            seen.append({"message_id": message["MessageId"],
                         "group": message.get("Attributes", {}).get("MessageGroupId"),
                         "attributes": attrs, "body": message["Body"]})
    for start in range(0, len(handles), MAX_BATCH_ENTRIES):
        chunk = handles[start:start + MAX_BATCH_ENTRIES]
        client.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": PEEK_VISIBILITY_S}
            for i, h in enumerate(chunk)])
    return seen


def replay(client, spec: QueueSpec, prefix: str = "", limit: int | None = None,
           use_move_task: bool = True) -> tuple[str, int]:
    """Move dead letters back to ``spec``'s queue. Returns (method, messages moved or -1)."""
    dlq_url = _url(client, physical_name(prefix, spec.dlq_name))
    source_url = _url(client, physical_name(prefix, spec.name))
    if use_move_task and limit is None:
        try:
            _check_sources(client, spec, prefix)
            client.start_message_move_task(SourceArn=_arn(client, dlq_url),
                                           DestinationArn=_arn(client, source_url))
            return "move-task", -1  # SQS moves them asynchronously back to the source
        except ClientError as exc:
            # moto answers unimplemented actions with a bare 500; the portable path is a
            # correct replay too, so any server-side failure falls back to it.
            code = exc.response.get("Error", {}).get("Code")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code not in MOVE_TASK_UNSUPPORTED and status < 500:
                raise
        except (AttributeError, NotImplementedError):
            pass
    return "portable", _portable_replay(client, spec, dlq_url, source_url, limit)


def _check_sources(client, spec: QueueSpec, prefix: str) -> None:
    """Refuse a move task for dead letters whose ``dlq_source_queue`` is not ``spec``.

    One move task has one destination, and it must be named: the consumer
    sends these dead letters itself (SQS never moved them), so without a
    ``DestinationArn`` AWS does not know where they came from. The DLQ's head
    (what a peek returns, made visible again at once) shows which queue its
    dead letters name; one without the attribute was moved by the source's
    own redrive policy, so it came from ``spec`` too.
    """
    sources = {message["attributes"].get(SOURCE_ATTRIBUTE)
               for message in peek(client, spec, prefix, limit=MAX_BATCH_ENTRIES)}
    foreign = sorted(name for name in sources - {spec.name, None})
    if foreign:
        raise ValueError(f"{spec.dlq_name} holds dead letters of {', '.join(foreign)},"
                         f" not only of {spec.name}: replay them to their own queue")


def _portable_replay(client, spec: QueueSpec, dlq_url: str, source_url: str,
                     limit: int | None) -> int:
    moved = 0
    while limit is None or moved < limit:
        want = MAX_BATCH_ENTRIES if limit is None else min(MAX_BATCH_ENTRIES, limit - moved)
        batch = client.receive_message(
            QueueUrl=dlq_url, MaxNumberOfMessages=want, WaitTimeSeconds=PEEK_WAIT_S,
            VisibilityTimeout=REPLAY_VISIBILITY_S, MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"]).get("Messages", [])
        if not batch:
            break
        # One at a time, in received order: a failure stops before later messages of a group.
        for message in batch:
            _resend(client, spec, source_url, message)
            client.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return moved


def _arn(client, url: str) -> str:
    return client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]


def _url(client, name: str) -> str:
    return client.get_queue_url(QueueName=name)["QueueUrl"]


def _attrs(client, name: str) -> dict[str, str]:
    return client.get_queue_attributes(
        QueueUrl=_url(client, name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]


# -- the ops service's view: every counter, dead letters with their facts, filtered replay ---------
# What SQS's GetQueueAttributes gives; the age of the oldest message is not among them on any
# backend (AWS publishes it only as the CloudWatch metric ApproximateAgeOfOldestMessage).
COUNT_ATTRIBUTES = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed")


@dataclass(frozen=True)
class QueueStats:
    """A queue's and its DLQ's approximate counts (SQS's own approximation)."""

    name: str
    fifo: bool
    visible: int
    in_flight: int
    delayed: int
    dlq_name: str
    dlq_visible: int
    dlq_in_flight: int


def stats(client, topology: Topology, prefix: str = "") -> list[QueueStats]:
    """Visible, in-flight and delayed counts of every queue of ``topology`` and its DLQ."""
    out = []
    for spec in topology:
        main = _counts(client, physical_name(prefix, spec.name))
        dead = _counts(client, physical_name(prefix, spec.dlq_name))
        out.append(QueueStats(spec.name, spec.fifo, main[0], main[1], main[2], spec.dlq_name,
                              dead[0], dead[1]))
    return out


def _counts(client, name: str) -> tuple[int, int, int]:
    attrs = client.get_queue_attributes(QueueUrl=_url(client, name),
                                        AttributeNames=list(COUNT_ATTRIBUTES))["Attributes"]
    return tuple(int(attrs.get(key, 0)) for key in COUNT_ATTRIBUTES)  # type: ignore[return-value]


def describe(message: dict[str, Any]) -> dict[str, Any]:
    """The facts an operator asks about one peeked dead letter (see :func:`peek`)."""
    attrs = message["attributes"]
    event: dict[str, Any] = {}
    try:
        parsed = json.loads(message["body"])
        if isinstance(parsed, dict):
            event = parsed
    except ValueError:
        pass  # an invalid_envelope dead letter: its body is what it is
    count = attrs.get("dlq_receive_count")
    return {
        "message_id": message["message_id"], "group_id": message.get("group"),
        "reason": attrs.get("dlq_reason"), "error": attrs.get("dlq_error"),
        "source_queue": attrs.get(SOURCE_ATTRIBUTE), "consumer": attrs.get("dlq_consumer"),
        "failed_at": attrs.get("dlq_failed_at"),
        "receive_count": int(count) if count and count.isdigit() else None,
        "event_type": _text(event.get("event_type")) or attrs.get("event_type"),
        "event_id": _text(event.get("event_id")) or attrs.get("event_id"),
        "order_id": _text(event.get("aggregate_id")),
        "body": message["body"],
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def replay_matching(client, spec: QueueSpec, match: Callable[[dict[str, Any]], bool],
                    prefix: str = "", limit: int | None = None) -> int:
    """Move the dead letters ``match(describe(message))`` accepts back to ``spec``'s queue.

    Portable (receive -> send -> delete), in the order the DLQ hands them out.
    Per-order order is kept: once a message of a group is left in the DLQ
    (not matched), no later message of that group is moved past it. What is
    left becomes visible again at the end. Returns how many were moved.
    """
    dlq_url = _url(client, physical_name(prefix, spec.dlq_name))
    source_url = _url(client, physical_name(prefix, spec.name))
    moved = 0
    held_groups: set[str] = set()
    left: list[str] = []
    try:
        while limit is None or moved < limit:
            batch = client.receive_message(
                QueueUrl=dlq_url, MaxNumberOfMessages=MAX_BATCH_ENTRIES,
                WaitTimeSeconds=PEEK_WAIT_S, VisibilityTimeout=REPLAY_VISIBILITY_S,
                MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not batch:
                break
            for message in batch:
                group = message.get("Attributes", {}).get("MessageGroupId") or message["MessageId"]
                facts = describe(_peeked(message))
                if (limit is not None and moved >= limit) or group in held_groups \
                        or not match(facts):
                    held_groups.add(group)
                    left.append(message["ReceiptHandle"])
                    continue
                _resend(client, spec, source_url, message)
                client.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
                moved += 1
    finally:
        _release(client, dlq_url, left)
    return moved


def purge(client, spec: QueueSpec, prefix: str = "") -> None:
    """Delete every message of ``spec``'s DLQ (SQS allows one purge per queue per 60 s)."""
    client.purge_queue(QueueUrl=_url(client, physical_name(prefix, spec.dlq_name)))


def _peeked(message: dict) -> dict[str, Any]:
    attrs = {k: v.get("StringValue") for k, v in message.get("MessageAttributes", {}).items()}
    return {"message_id": message["MessageId"],
            "group": message.get("Attributes", {}).get("MessageGroupId"),
            "attributes": attrs, "body": message["Body"]}


def _resend(client, spec: QueueSpec, source_url: str, message: dict) -> None:
    params: dict[str, Any] = {
        "QueueUrl": source_url, "MessageBody": message["Body"],
        "MessageAttributes": {k: v for k, v in message.get("MessageAttributes", {}).items()
                              if not k.startswith(DLQ_ATTRIBUTE_PREFIX)},
    }
    if spec.fifo:
        params["MessageGroupId"] = message["Attributes"].get("MessageGroupId", message["MessageId"])
        # A new dedup id, as SQS's own redrive gives; the consumer's inbox absorbs a repeat.
        params["MessageDeduplicationId"] = str(uuid.uuid4())
    client.send_message(**params)


def _release(client, url: str, handles: list[str]) -> None:
    for start in range(0, len(handles), MAX_BATCH_ENTRIES):
        chunk = handles[start:start + MAX_BATCH_ENTRIES]
        client.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": PEEK_VISIBILITY_S}
            for i, h in enumerate(chunk)])


def dead_letter_count(client, spec: QueueSpec, prefix: str = "") -> int:
    """Approximately how many dead letters ``spec``'s DLQ holds (visible and in flight)."""
    visible, in_flight, _delayed = _counts(client, physical_name(prefix, spec.dlq_name))
    return visible + in_flight

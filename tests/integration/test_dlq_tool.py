"""Operators' dead-letter tooling against the real SQS emulator."""

from __future__ import annotations

import pytest

from shared.messaging import dlq
from shared.queues import TOPOLOGY, queue

SPEC = queue("order-paid.fifo")


def _dead_letter(sqs, url, group: str, seq: int, source: str = SPEC.name) -> None:
    # The attributes the consumer adds when it dead-letters (consumer.py: _send_to_dlq).
    sqs.send_message(
        QueueUrl=url, MessageBody=f'{{"seq": {seq}}}', MessageGroupId=group,
        MessageDeduplicationId=f"{group}-{seq}",
        MessageAttributes={
            "event_type": {"DataType": "String", "StringValue": "order.paid"},
            "dlq_reason": {"DataType": "String", "StringValue": "permanent_error"},
            "dlq_error": {"DataType": "String", "StringValue": "ValidationError: boom"},
            "dlq_source_queue": {"DataType": "String", "StringValue": source},
        })


def _drain(sqs, url) -> list[dict]:
    out = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                    MessageAttributeNames=["All"],
                                    MessageSystemAttributeNames=["All"]).get("Messages", [])
        if not batch:
            return out
        out.extend(batch)
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])


def test_peek_shows_reasons_and_leaves_messages(sqs, queues, queue_prefix):
    _dead_letter(sqs, queues[SPEC.dlq_name], "order-a", 1)
    peeked = dlq.peek(sqs, SPEC, queue_prefix, limit=5)
    assert [m["attributes"]["dlq_reason"] for m in peeked] == ["permanent_error"]
    assert peeked[0]["group"] == "order-a"
    depth = {d.name: d for d in dlq.depths(sqs, TOPOLOGY, queue_prefix)}
    assert depth[SPEC.name].dlq_visible == 1  # still there after peeking


def test_replay_moves_back_in_group_order_without_dlq_attributes(sqs, queues, queue_prefix):
    for seq in range(3):
        _dead_letter(sqs, queues[SPEC.dlq_name], "order-a", seq)
        _dead_letter(sqs, queues[SPEC.dlq_name], "order-b", seq)
    # moto has no StartMessageMoveTask: the portable path must take over by itself.
    method, moved = dlq.replay(sqs, SPEC, queue_prefix)
    assert (method, moved) == ("portable", 6)
    replayed = _drain(sqs, queues[SPEC.name])
    by_group: dict[str, list[str]] = {}
    for message in replayed:
        by_group.setdefault(message["Attributes"]["MessageGroupId"], []).append(message["Body"])
        assert not any(k.startswith("dlq_") for k in message.get("MessageAttributes", {}))
        assert message["MessageAttributes"]["event_type"]["StringValue"] == "order.paid"
    assert by_group == {g: [f'{{"seq": {s}}}' for s in range(3)] for g in ("order-a", "order-b")}
    assert _drain(sqs, queues[SPEC.dlq_name]) == []


class MoveTaskRecorder:
    """The emulator's client, plus a ``StartMessageMoveTask`` that records its call (as AWS's)."""

    def __init__(self, client):
        self._client = client
        self.move_tasks: list[dict] = []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def start_message_move_task(self, **params):
        self.move_tasks.append(params)
        return {"TaskHandle": "task-1"}


def _arn(sqs, url) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]


def test_move_task_names_the_dlq_and_the_queue_its_dead_letters_came_from(sqs, queues,
                                                                          queue_prefix):
    _dead_letter(sqs, queues[SPEC.dlq_name], "order-a", 1)
    client = MoveTaskRecorder(sqs)
    assert dlq.replay(client, SPEC, queue_prefix) == ("move-task", -1)
    # The consumer wrote these dead letters itself: SQS never moved them, so it
    # cannot know their source unless the call names it.
    assert client.move_tasks == [{"SourceArn": _arn(sqs, queues[SPEC.dlq_name]),
                                  "DestinationArn": _arn(sqs, queues[SPEC.name])}]
    depth = {d.name: d for d in dlq.depths(sqs, TOPOLOGY, queue_prefix)}
    assert depth[SPEC.name].dlq_visible == 1  # left for the move task, visible again


def test_move_task_refuses_dead_letters_from_another_queue(sqs, queues, queue_prefix):
    _dead_letter(sqs, queues[SPEC.dlq_name], "order-a", 1, source="order-status.fifo")
    client = MoveTaskRecorder(sqs)
    with pytest.raises(ValueError, match="order-status.fifo"):
        dlq.replay(client, SPEC, queue_prefix)
    assert client.move_tasks == []

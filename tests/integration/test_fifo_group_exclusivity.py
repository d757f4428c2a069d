"""A FIFO message group is in one receiver's hands at a time, on every SQS backend.

The consumer's per-group order rests on this: while any message of a group is
in flight, no other receive may return a message of that group. moto 5.2.5
broke it when receives ran at the same moment (its server is threaded and its
receive scans without a lock), so the suite runs moto through
``devstack.moto_server``; this test holds every backend to it.
"""

from __future__ import annotations

import threading
import uuid

from shared.messaging.sqs import sync_client

REGION = "us-east-1"
GROUPS = "abcdefghij"
PER_GROUP = 3
RECEIVERS = 4
ROUNDS = 10          # unpatched moto split a group in about two rounds of three


def _fifo_queue(client) -> str:
    return client.create_queue(
        QueueName=f"excl-{uuid.uuid4().hex[:12]}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )["QueueUrl"]


def _fill(client, url: str) -> None:
    entries = [{"Id": f"{group}{seq}", "MessageBody": f"{group}-{seq}", "MessageGroupId": group}
               for group in GROUPS for seq in range(PER_GROUP)]
    for start in range(0, len(entries), 10):
        answer = client.send_message_batch(QueueUrl=url, Entries=entries[start:start + 10])
        assert not answer.get("Failed"), answer


def _receive_at_once(clients, url: str) -> list[list[str]]:
    """Every client receives once, all released together; the bodies each got."""
    start = threading.Barrier(len(clients))
    bodies: list[list[str]] = [[] for _ in clients]

    def receive(index: int) -> None:
        start.wait()
        answer = clients[index].receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                WaitTimeSeconds=0)
        bodies[index] = [message["Body"] for message in answer.get("Messages", [])]

    threads = [threading.Thread(target=receive, args=(index,)) for index in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return bodies


def test_simultaneous_receives_never_share_a_group(backend):
    setup = sync_client(backend.endpoint_url, REGION)
    clients = [sync_client(backend.endpoint_url, REGION) for _ in range(RECEIVERS)]
    split: list[list[list[str]]] = []
    received_any = False
    for _ in range(ROUNDS):
        url = _fifo_queue(setup)
        _fill(setup, url)
        bodies = _receive_at_once(clients, url)
        received_any = received_any or any(bodies)
        owners: dict[str, int] = {}
        for receiver, got in enumerate(bodies):
            for body in got:
                group = body.split("-")[0]
                if owners.setdefault(group, receiver) != receiver:
                    split.append(bodies)
                    break
            # each receiver's share of a group is that group's head, in order
            for group in {body.split("-")[0] for body in got}:
                seqs = [int(body.split("-")[1]) for body in got if body.startswith(group)]
                assert seqs == list(range(len(seqs))), (group, got)
        setup.delete_queue(QueueUrl=url)
    assert received_any
    assert not split, f"a group went to two receivers at once in {len(split)} of {ROUNDS} rounds: {split[0]}"


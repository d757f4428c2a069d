"""SQS clients and queue bootstrap, portable across AWS, ElasticMQ, moto and fauxqs.

Rules from docs/sqs-portability.md applied here: JSON protocol via current
botocore, queue URLs only from ``GetQueueUrl`` (never built by hand), DLQs
created before their sources, FIFO source -> FIFO DLQ enforced by us.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import boto3
from aiobotocore.session import get_session
from botocore.config import Config

from shared.messaging.topology import QueueSpec, Topology

# Hard SQS limits (AWS documentation), named so the code says which one it respects.
MAX_BATCH_ENTRIES = 10            # SendMessageBatch / ReceiveMessage / DeleteMessageBatch
MAX_WAIT_TIME_S = 20              # long-poll upper bound
MAX_VISIBILITY_TIMEOUT_S = 43_200  # 12 hours
MAX_MESSAGE_BYTES = 262_144

# Short timeouts with our own retry policy on top; botocore's standard mode
# retries throttling and 5xx a few times.
CONNECT_TIMEOUT_S = 3
READ_TIMEOUT_S = MAX_WAIT_TIME_S + 10
# Emulators accept any credentials; this pair is sent when none are configured.
EMULATOR_AWS_KEY = "local-dev"


def _client_config(max_pool: int = 20) -> Config:
    return Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=max_pool,
    )


def _credentials(endpoint_url: str | None) -> dict[str, str]:
    # Emulators accept any key; on real AWS the default credential chain applies.
    if endpoint_url and not os.environ.get("AWS_ACCESS_KEY_ID"):
        return {"aws_access_key_id": EMULATOR_AWS_KEY, "aws_secret_access_key": EMULATOR_AWS_KEY}
    return {}


def sync_client(endpoint_url: str | None, region: str, max_pool: int = 20):
    """A boto3 SQS client (used by the relay-free tools, bootstrap and tests)."""
    return boto3.client("sqs", endpoint_url=endpoint_url, region_name=region,
                        config=_client_config(max_pool), **_credentials(endpoint_url))


def async_client(endpoint_url: str | None, region: str, max_pool: int = 20):
    """An aiobotocore SQS client context manager (``async with async_client(...) as c``)."""
    return get_session().create_client(
        "sqs", endpoint_url=endpoint_url, region_name=region,
        config=_client_config(max_pool), **_credentials(endpoint_url))


def physical_name(prefix: str, name: str) -> str:
    """The queue's name in the account: an optional environment prefix + logical name."""
    return f"{prefix}{name}" if prefix else name


def _queue_attributes(spec: QueueSpec, dlq_arn: str, retention_s: int) -> dict[str, str]:
    attrs = {
        "VisibilityTimeout": str(spec.visibility_timeout_s),
        "MessageRetentionPeriod": str(retention_s),
        "ReceiveMessageWaitTimeSeconds": str(MAX_WAIT_TIME_S),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(spec.max_receive_count)}
        ),
    }
    if spec.fifo:
        attrs["FifoQueue"] = "true"
        # We always send an explicit MessageDeduplicationId (the event id).
        attrs["ContentBasedDeduplication"] = "false"
    return attrs


def ensure_queues(client, topology: Topology, prefix: str = "") -> dict[str, str]:
    """Create every queue and DLQ of ``topology`` (idempotent); return logical name -> URL."""
    urls: dict[str, str] = {}
    for spec in topology:
        dlq_attrs = {"MessageRetentionPeriod": str(topology.dlq_retention_s)}
        if spec.fifo:
            dlq_attrs["FifoQueue"] = "true"
        dlq_url = client.create_queue(QueueName=physical_name(prefix, spec.dlq_name),
                                      Attributes=dlq_attrs)["QueueUrl"]
        dlq_arn = client.get_queue_attributes(
            QueueUrl=dlq_url, AttributeNames=["QueueArn", "FifoQueue"])["Attributes"]
        # Emulators differ in checking this; AWS rejects it. Check it ourselves.
        if spec.fifo and dlq_arn.get("FifoQueue") != "true":
            raise RuntimeError(f"DLQ of FIFO queue {spec.name} must be FIFO")
        urls[spec.dlq_name] = dlq_url
        attrs = _queue_attributes(spec, dlq_arn["QueueArn"], topology.queue_retention_s)
        try:
            url = client.create_queue(QueueName=physical_name(prefix, spec.name),
                                      Attributes=attrs)["QueueUrl"]
        except client.exceptions.QueueNameExists:
            # Existing queue with other attributes: bring it in line with the topology.
            url = client.get_queue_url(QueueName=physical_name(prefix, spec.name))["QueueUrl"]
            settable = {k: v for k, v in attrs.items() if k != "FifoQueue"}
            client.set_queue_attributes(QueueUrl=url, Attributes=settable)
        urls[spec.name] = url
    return urls


def dlq_name_from_redrive(attributes: dict[str, Any]) -> str | None:
    """The DLQ name from a queue's ``RedrivePolicy`` attribute (ARN's last part)."""
    policy = attributes.get("RedrivePolicy")
    if not policy:
        return None
    arn = json.loads(policy)["deadLetterTargetArn"]
    return arn.rsplit(":", 1)[-1]


@dataclass(frozen=True)
class ResolvedQueue:
    """A consumer's queue as deployed: URLs and the attributes SQS enforces (None if unset)."""

    url: str
    dlq_url: str | None
    visibility_timeout_s: int | None
    max_receive_count: int | None


async def resolve_queue(client, prefix: str, spec: QueueSpec) -> ResolvedQueue:
    """Look ``spec``'s queue up with an async client: URL, DLQ URL from the redrive policy."""
    url = (await client.get_queue_url(QueueName=physical_name(prefix, spec.name)))["QueueUrl"]
    attrs = (await client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["RedrivePolicy", "VisibilityTimeout"]))["Attributes"]
    dlq_name = dlq_name_from_redrive(attrs)
    dlq_url = None
    max_receive_count = None
    if dlq_name:
        dlq_url = (await client.get_queue_url(QueueName=dlq_name))["QueueUrl"]
        max_receive = json.loads(attrs["RedrivePolicy"]).get("maxReceiveCount")
        max_receive_count = int(max_receive) if max_receive is not None else None
    visibility = attrs.get("VisibilityTimeout")
    return ResolvedQueue(url, dlq_url, int(visibility) if visibility is not None else None,
                         max_receive_count)

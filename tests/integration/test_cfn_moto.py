"""The generated CloudFormation template deploys and behaves as the topology says.

``infra/sqs-queues.cfn.yaml`` is deployed into moto (CloudFormation, SQS and
IAM mocked in-process with ``mock_aws``; nothing leaves the machine), then
the stack is read back: exactly the topology's queues with its attributes,
one managed policy per service that touches a queue plus the DLQ operator's,
and a message received past ``maxReceiveCount`` lands in its DLQ (moto
applies the redrive policy on receive, as SQS does). moto's CloudFormation
skips ``AWS::CloudWatch::Alarm`` resources (it warns and creates nothing), so
the alarms are checked on the template itself, with cfn-lint, in
``tests/unit/test_infra_cfn.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from shared.messaging.sqs import MAX_WAIT_TIME_S
from shared.queues import QUEUES, TOPOLOGY, all_queue_names

moto = pytest.importorskip("moto")

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "sqs-queues.cfn.yaml"
REGION = "us-east-1"
PREFIX = "test-"
TOPIC = "arn:aws:sns:us-east-1:123456789012:order-platform-alarms"
STACK = "order-platform-queues"
# moto's CloudFormation warns for each alarm it skips (see the docstring).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Tried to parse AWS..CloudWatch..Alarm:UserWarning")


@pytest.fixture
def stack():
    """The deployed stack's outputs, with clients of the mocked account."""
    with moto.mock_aws():
        cfn = boto3.client("cloudformation", region_name=REGION)
        cfn.create_stack(StackName=STACK, TemplateBody=TEMPLATE.read_text(), Parameters=[
            {"ParameterKey": "QueuePrefix", "ParameterValue": PREFIX},
            {"ParameterKey": "AlarmTopicArn", "ParameterValue": TOPIC},
        ])
        description = cfn.describe_stacks(StackName=STACK)["Stacks"][0]
        assert description["StackStatus"] == "CREATE_COMPLETE", description
        outputs = {o["OutputKey"]: o["OutputValue"] for o in description["Outputs"]}
        yield {
            "outputs": outputs,
            "sqs": boto3.client("sqs", region_name=REGION),
            "iam": boto3.client("iam", region_name=REGION),
            "resources": cfn.list_stack_resources(StackName=STACK)["StackResourceSummaries"],
        }


def _attributes(sqs, name: str) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=PREFIX + name)["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def _redrive_allow_policy(name: str) -> dict:
    # moto keeps a queue's RedriveAllowPolicy but leaves it out of GetQueueAttributes'
    # answer, so it is read from moto's own record of the queue.
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    value = sqs_backends[DEFAULT_ACCOUNT_ID][REGION].queues[PREFIX + name].redrive_allow_policy
    return json.loads(value) if isinstance(value, str) else value


def test_the_stack_creates_exactly_the_topology_with_its_attributes(stack):
    sqs = stack["sqs"]
    urls = sqs.list_queues().get("QueueUrls", [])
    assert sorted(u.rsplit("/", 1)[-1] for u in urls) == sorted(PREFIX + n for n in all_queue_names())
    for spec in QUEUES:
        queue, dlq = _attributes(sqs, spec.name), _attributes(sqs, spec.dlq_name)
        assert (queue.get("FifoQueue") == "true") is spec.fifo, spec.name
        assert (dlq.get("FifoQueue") == "true") is spec.fifo, spec.dlq_name
        assert int(queue["VisibilityTimeout"]) == spec.visibility_timeout_s, spec.name
        assert int(queue["MessageRetentionPeriod"]) == TOPOLOGY.queue_retention_s, spec.name
        assert int(dlq["MessageRetentionPeriod"]) == TOPOLOGY.dlq_retention_s, spec.dlq_name
        assert int(queue["ReceiveMessageWaitTimeSeconds"]) == MAX_WAIT_TIME_S, spec.name
        if spec.fifo:
            assert queue["ContentBasedDeduplication"] == "false", spec.name
        redrive = json.loads(queue["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == dlq["QueueArn"], spec.name
        assert int(redrive["maxReceiveCount"]) == spec.max_receive_count, spec.name
        assert queue.get("SqsManagedSseEnabled") == "true", spec.name
        assert dlq.get("SqsManagedSseEnabled") == "true", spec.dlq_name
        allow = _redrive_allow_policy(spec.dlq_name)
        assert allow == {"redrivePermission": "byQueue", "sourceQueueArns": [queue["QueueArn"]]}
        outputs = stack["outputs"]
        assert queue["QueueArn"] in outputs.values() and dlq["QueueArn"] in outputs.values()


def test_each_service_gets_a_policy_for_exactly_its_queues(stack):
    iam, outputs = stack["iam"], stack["outputs"]
    arn_of = {spec.name: _attributes(stack["sqs"], spec.name)["QueueArn"] for spec in QUEUES}
    dlq_arn_of = {spec.name: _attributes(stack["sqs"], spec.dlq_name)["QueueArn"] for spec in QUEUES}
    documents = {}
    for key, arn in outputs.items():
        if not key.endswith("QueuePolicyArn"):
            continue
        policy = iam.get_policy(PolicyArn=arn)["Policy"]
        version = iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])
        document = version["PolicyVersion"]["Document"]
        documents[key] = json.loads(document) if isinstance(document, str) else document
    expected = {"OrderQueuePolicyArn", "DeliveryQueuePolicyArn", "InventoryQueuePolicyArn",
                "NotificationQueuePolicyArn", "PaymentQueuePolicyArn", "DlqOperatorQueuePolicyArn"}
    assert set(documents) == expected  # auth touches no queue: it gets none

    def allowed(document, action: str) -> set[str]:
        found = set()
        for statement in document["Statement"]:
            if action in statement["Action"] and statement["Effect"] == "Allow":
                resources = statement["Resource"]
                found |= set([resources] if isinstance(resources, str) else resources)
        return found

    for owner in ("order", "delivery", "inventory", "notification", "payment"):
        document = documents[f"{owner.capitalize()}QueuePolicyArn"]
        produced = {arn_of[s.name] for s in QUEUES if s.producer == owner}
        consumed = {arn_of[s.name] for s in QUEUES if owner in s.consumers}
        own_dlqs = {dlq_arn_of[s.name] for s in QUEUES if owner in s.consumers}
        assert allowed(document, "sqs:SendMessage") == produced | own_dlqs, owner
        assert allowed(document, "sqs:ReceiveMessage") == consumed, owner
        assert allowed(document, "sqs:DeleteMessage") == consumed, owner
        assert allowed(document, "sqs:StartMessageMoveTask") == set(), owner
    operator = documents["DlqOperatorQueuePolicyArn"]
    assert allowed(operator, "sqs:StartMessageMoveTask") == set(dlq_arn_of.values())
    assert allowed(operator, "sqs:ReceiveMessage") == set(dlq_arn_of.values())
    assert allowed(operator, "sqs:SendMessage") == set(arn_of.values())


def test_a_message_received_past_max_receive_count_lands_in_its_dlq(stack):
    sqs = stack["sqs"]
    spec = QUEUES[0]
    url = sqs.get_queue_url(QueueName=PREFIX + spec.name)["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=PREFIX + spec.dlq_name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="poison", MessageGroupId="order-1",
                     MessageDeduplicationId="event-1")
    for attempt in range(spec.max_receive_count):
        got = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages", [])
        assert [m["Body"] for m in got] == ["poison"], attempt
    assert sqs.receive_message(QueueUrl=url, VisibilityTimeout=0).get("Messages", []) == []
    dead = sqs.receive_message(QueueUrl=dlq_url).get("Messages", [])
    assert [m["Body"] for m in dead] == ["poison"]


def test_a_kms_key_replaces_sqs_managed_encryption():
    key = "arn:aws:kms:us-east-1:123456789012:key/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    with moto.mock_aws():
        cfn = boto3.client("cloudformation", region_name=REGION)
        cfn.create_stack(StackName=STACK, TemplateBody=TEMPLATE.read_text(), Parameters=[
            {"ParameterKey": "AlarmTopicArn", "ParameterValue": TOPIC},
            {"ParameterKey": "KmsKeyArn", "ParameterValue": key},
        ])
        sqs = boto3.client("sqs", region_name=REGION)
        for name in all_queue_names():
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            # (moto reports SqsManagedSseEnabled=true on every queue whatever it was
            # given; the template leaving it out with a key is checked in
            # tests/unit/test_infra_cfn.py.)
            assert attributes.get("KmsMasterKeyId") == key, name

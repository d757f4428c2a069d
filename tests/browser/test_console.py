"""The operator console in headless Chromium against the running system.

A dead-lettered paid order (its order.paid, the event that drives delivery, in the
delivery consumer's DLQ with the attributes the consumer writes when it gives up) shows in
the console; its Replay button takes the order to DELIVERED; the console's order look-up
then shows the whole story.
A customer who signs in to the console is refused, by the page and by the API (403).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared.messaging.sqs import physical_name
from tests.browser.conftest import DEMO_CUSTOMER, DEMO_OPERATOR, screenshot, sign_in
from tests.integration.test_order_api import ORDER
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

# Delivery ships what is paid for: order.paid is the event that creates the shipment.
SOURCE = "order-paid.fifo"
DLQ = "order-paid-dlq.fifo"
CONSUMER = "delivery:order-paid.fifo"
EVENT = "order.paid"


def dead_letter_the_order_paid(sqs, queues, order_id: str) -> str:
    """Move the order's order.paid from the delivery queue to its DLQ, as the consumer
    does once the message's receives are exhausted (shared/messaging/deadletter.py: the
    producer's attributes kept, the ``dlq_*`` ones added); return the dead letter's body."""
    source = queues[SOURCE]
    message = wait_until(lambda: next(iter(sqs.receive_message(
        QueueUrl=source, MaxNumberOfMessages=1, WaitTimeSeconds=1,
        MessageSystemAttributeNames=["All"], MessageAttributeNames=["All"])
        .get("Messages", [])), None),
        timeout=60, message="the order.paid on the delivery queue")
    assert order_id in message["Body"] and EVENT in message["Body"]
    attributes = {name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
                  for name, value in (message.get("MessageAttributes") or {}).items()}
    attributes.update({k: {"DataType": "String", "StringValue": v} for k, v in {
        "dlq_reason": "max_receives_exceeded", "dlq_source_queue": SOURCE,
        "dlq_consumer": CONSUMER, "dlq_receive_count": "5",
        "dlq_failed_at": datetime.now(UTC).isoformat(),
        "dlq_error": "carrier API unavailable"}.items()})
    sqs.send_message(
        QueueUrl=queues[DLQ], MessageBody=message["Body"],
        MessageGroupId=message["Attributes"].get("MessageGroupId") or order_id,
        MessageDeduplicationId=uuid.uuid4().hex, MessageAttributes=attributes)
    sqs.delete_message(QueueUrl=source, ReceiptHandle=message["ReceiptHandle"])
    return message["Body"]


def test_replay_button_takes_a_dead_lettered_order_to_completion(browser, start_stack, sqs,
                                                                  queues, queue_prefix):
    assert physical_name(queue_prefix, DLQ) in queues[DLQ]
    # No delivery worker yet: the order.paid waits on its queue for us to dead-letter it.
    stack = start_stack(delivery_worker=False, simulator=True)
    placed = stack.call("customer", "POST", "order", "/v1/orders", json=ORDER)
    assert placed.status_code == 201, placed.text
    assert placed.json()["status"] == "PENDING_PAYMENT", placed.text
    order_id = placed.json()["id"]
    stack.pay(order_id)
    dead_letter_the_order_paid(sqs, queues, order_id)
    assert stack.call("customer", "GET", "order", f"/v1/orders/{order_id}").json()["status"] \
        == "PENDING_SHIPMENT"
    stack.processes.worker("delivery")

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{stack.urls['ops']}/console")
    sign_in(page, DEMO_OPERATOR, stack.password(DEMO_OPERATOR))
    depth = page.locator(f'[data-dlq-depth="{SOURCE}"]')
    depth.wait_for(timeout=20_000)
    wait_until(lambda: depth.inner_text() == "1", timeout=20, message="DLQ depth 1 on screen")
    page.get_by_role("button", name=f"Show dead letters of {SOURCE}").click()
    replay = page.get_by_role("button", name=f"Replay {EVENT} of order {order_id}")
    replay.wait_for(timeout=15_000)
    assert page.get_by_role("cell", name="max_receives_exceeded").count() == 1
    screenshot(page, "console-dead-letter")
    replay.click()
    page.get_by_text("Replayed to").wait_for(timeout=15_000)
    wait_until(lambda: stack.call("customer", "GET", "order", f"/v1/orders/{order_id}")
               .json()["status"] == "DELIVERED", timeout=90, message="the replayed order delivered")
    wait_until(lambda: depth.inner_text() == "0", timeout=20, message="DLQ depth 0 on screen")

    page.get_by_label("Order id", exact=True).fill(order_id)
    page.get_by_role("button", name="Look up").click()
    status = page.locator(f'strong[data-order-status="{order_id}"]')
    status.wait_for(timeout=15_000)
    assert status.inner_text() == "DELIVERED"
    assert page.get_by_role("table", name="Notifications").get_by_role("cell", name="DELIVERED").count() >= 1
    screenshot(page, "console-order")
    context.close()

    # An operator-only page refuses a customer: the page says so, the API answered 403.
    context = browser.new_context(viewport={"width": 1000, "height": 600})
    page = context.new_page()
    page.goto(f"{stack.urls['ops']}/console")
    sign_in(page, DEMO_CUSTOMER, stack.password(DEMO_CUSTOMER))
    refused = page.locator("#refused")
    refused.wait_for(timeout=15_000)
    assert "operators only" in refused.inner_text() and "admin" in refused.inner_text()
    assert page.locator("#app").is_hidden()
    screenshot(page, "console-refuses-customer")
    context.close()

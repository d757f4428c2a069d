"""Notification event consumers: what the worker does with each message.

Consuming ``order-status.fifo`` (:class:`OrderEventHandler`): in ONE transaction
(the consumer's inbox transaction) the event becomes a notification row (the
SSE stream), one ``webhook_deliveries`` row per matching subscription with its
``webhook-delivery`` message in the outbox, and one ``email_deliveries`` row.
Each of those is unique per event, so a redelivered event notifies nobody twice
even if its inbox row were gone.

Consuming ``webhook-delivery`` (:class:`WebhookDeliverer`): one attempt of one
delivery; the next attempt is a new message with DelaySeconds (exponential
backoff with jitter; waits over 15 minutes are re-enqueued in steps).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from services.notification import email_repository as email_repo
from services.notification import repository as repo
from services.notification import webhook_repository as webhook_repo
from services.notification.domain import (
    email_template_for,
    retry_delay,
    subscribed_topics,
    webhook_body,
    webhook_topic,
)
from services.notification.secretbox import secret_box
from services.notification.settings import MAX_DELAY_SECONDS, NotificationSettings
from services.notification.webhooks import AttemptResult, WebhookSender
from shared.contracts import event_data, load_data
from shared.logging import get_logger
from shared.messaging.envelope import Envelope
from shared.queues import add_event

log = get_logger(__name__)

WEBHOOK_ATTEMPTS = Counter("webhook_attempts_total", "Webhook delivery attempts by outcome",
                           ["outcome"])
WEBHOOK_DISABLED = Counter("webhook_subscriptions_disabled_total",
                           "Subscriptions disabled by the service", ["reason"])

SERVICE = "notification"
PRODUCER = "notification-service"
DELIVERY_REQUESTED = "webhook.delivery_requested"
# A message arriving this much before its attempt is due is simply early: go ahead.
EARLY_TOLERANCE_S = 1.0
# What OrderEventHandler cannot do without (shared/contracts.py: load_data); everything
# else in an order event is optional to it (read with a fallback, or forwarded as it is).
ORDER_EVENT_NEEDS = ("order_id", "customer_id")


def enqueue_attempt(cur, delivery_id: uuid.UUID, token: uuid.UUID, delay_s: float,
                    cause: Envelope | None = None, correlation_id: str | None = None) -> None:
    """Write the delivery's next ``webhook-delivery`` message to the outbox."""
    data = event_data(DELIVERY_REQUESTED, {"delivery_id": str(delivery_id), "token": str(token)})
    envelope = (cause.caused(DELIVERY_REQUESTED, str(delivery_id), data, PRODUCER) if cause
                else Envelope(event_type=DELIVERY_REQUESTED, aggregate_id=str(delivery_id),
                              data=data, producer=PRODUCER, correlation_id=correlation_id))
    add_event(cur, SERVICE, envelope, delay_s=min(MAX_DELAY_SECONDS, max(0, math.ceil(delay_s))))


# --- order-status.fifo -------------------------------------------------------------------------
@dataclass
class OrderEventHandler:
    """Turns one order event into a notification and its webhook and email deliveries."""

    settings: NotificationSettings

    def __call__(self, cur, event: Envelope) -> None:
        # ValidationError: dead-lettered
        data = load_data(event.event_type, event.data, ORDER_EVENT_NEEDS)
        if repo.notification_exists(cur, event.event_id):
            log.info("notification_already_recorded")
            return
        order_id, customer_id = str(data["order_id"]), data["customer_id"]
        self._remember_contact(cur, event, order_id, data)
        if self.settings.email.enabled:
            self._plan_email(cur, event, order_id)
        topic = webhook_topic(event.event_type, event.data)
        deliveries = self._plan_webhooks(cur, event, customer_id, topic)
        # Last: the notification's id must not be taken before the rest is written.
        notification_id = repo.insert_notification(
            cur, event.event_id, order_id, customer_id, event.event_type, event.data,
            event.occurred_at)
        log.info("notification_recorded", notification_id=notification_id, order_id=order_id,
                 topic=topic, webhooks=deliveries)

    def _remember_contact(self, cur, event: Envelope, order_id: str, data: dict) -> None:
        raw = event.data
        if event.event_type == "order.created":
            details = {key: raw.get(key) for key in ("currency", "total", "lines",
                                                     "shipping_address")}
            repo.upsert_contact(cur, order_id, data["customer_id"],
                                data.get("customer_email"), details)
        elif data.get("carrier") or data.get("tracking_number"):
            repo.upsert_contact(cur, order_id, data["customer_id"], None,
                                {"carrier": data.get("carrier"),
                                 "tracking_number": data.get("tracking_number")})

    def _plan_email(self, cur, event: Envelope, order_id: str) -> None:
        template = email_template_for(event.event_type, event.data)
        if template is None:
            return
        contact = repo.get_contact(cur, order_id)
        recipient = contact["customer_email"] if contact else None
        context = email_context(order_id, contact, event.data)
        if recipient:
            email_repo.insert_email(cur, event.event_id, order_id, template, recipient, context)
        else:  # e.g. an order placed before this service existed: nobody to write to
            email_repo.insert_email(cur, event.event_id, order_id, template, None, context,
                                    status="skipped", error="no email address known for this order")

    def _plan_webhooks(self, cur, event: Envelope, customer_id: str, topic: str) -> int:
        planned = 0
        for sub in webhook_repo.matching_subscriptions(cur, customer_id, subscribed_topics(topic)):
            delivery_id, token = uuid.uuid4(), uuid.uuid4()
            body = webhook_body(str(delivery_id), topic, event.occurred_at, event.data)
            if webhook_repo.insert_delivery(cur, delivery_id, sub["id"], event.event_id, topic, body, token,
                                            self.settings.webhooks.max_attempts):
                enqueue_attempt(cur, delivery_id, token, 0, cause=event)
                planned += 1
        return planned


ADDRESS_KEYS = ("name", "line1", "line2", "city", "region", "postal_code", "country")
LINE_KEYS = ("sku", "quantity", "unit_price", "line_total")


def email_context(order_id: str, contact: dict | None, data: dict) -> dict[str, Any]:
    """Every variable any template uses (templates are strict about missing ones)."""
    details = (contact or {}).get("details") or {}
    address = details.get("shipping_address") or data.get("shipping_address")
    if address is not None:  # optional parts may be absent from the event
        address = {key: address.get(key) for key in ADDRESS_KEYS}
    lines = [{key: line.get(key) for key in LINE_KEYS}
             for line in details.get("lines") or data.get("lines") or []]
    return {
        "order_id": order_id,
        "customer_name": (address or {}).get("name") or "customer",
        "lines": lines,
        "total": details.get("total") or data.get("total"),
        "currency": details.get("currency") or data.get("currency"),
        "shipping_address": address,
        "carrier": data.get("carrier") or details.get("carrier"),
        "tracking_number": data.get("tracking_number") or details.get("tracking_number"),
        "reason": data.get("reason"),
    }


# --- webhook-delivery ----------------------------------------------------------------------------
@dataclass
class WebhookDeliverer:
    """Makes the attempt a ``webhook.delivery_requested`` message asks for."""

    settings: NotificationSettings
    sender: WebhookSender

    def __call__(self, cur, event: Envelope) -> None:
        request = load_data(DELIVERY_REQUESTED, event.data)
        delivery = webhook_repo.lock_delivery(cur, request["delivery_id"])
        if delivery is None:
            log.info("webhook_delivery_gone")  # its subscription was deleted
            return
        if delivery["status"] != "pending" or delivery["schedule_token"] != request["token"]:
            log.info("webhook_message_superseded", delivery_id=str(delivery["id"]))
            return
        if delivery["subscription_status"] != "active":
            webhook_repo.finish_delivery(cur, delivery["id"], "cancelled")
            webhook_repo.record_attempt(cur, delivery["id"], delivery["attempts"], "cancelled", None, None,
                                        None, f"subscription is {delivery['subscription_status']}")
            return
        if delivery["due_in_s"] > EARLY_TOLERANCE_S:
            # A wait longer than SQS allows: one more hop of at most 15 minutes.
            token = uuid.uuid4()
            webhook_repo.set_schedule_token(cur, delivery["id"], token)
            enqueue_attempt(cur, delivery["id"], token, delivery["due_in_s"], cause=event)
            return
        attempt = delivery["attempts"] + 1
        secret = secret_box(self.settings.webhooks.secret_keys).open(delivery["secret"])
        result = self.sender.send(delivery["delivery_url"], secret, str(delivery["id"]),
                                  delivery["topic"], delivery["body"])
        webhook_repo.record_attempt(cur, delivery["id"], attempt, result.outcome, result.status_code,
                                    result.duration_ms, result.excerpt, result.error)
        WEBHOOK_ATTEMPTS.labels(result.outcome).inc()
        self._conclude(cur, event, delivery, attempt, result)

    def _conclude(self, cur, event: Envelope, delivery: dict, attempt: int,
                  result: AttemptResult) -> None:
        delivery_id, sub_id = delivery["id"], delivery["subscription_id"]
        if result.delivered:
            webhook_repo.finish_delivery(cur, delivery_id, "delivered")
            webhook_repo.record_subscription_success(cur, sub_id)
            log.info("webhook_delivered", delivery_id=str(delivery_id), attempt=attempt,
                     status=result.status_code, ms=result.duration_ms)
            return
        if result.outcome == "gone":
            webhook_repo.finish_delivery(cur, delivery_id, "failed")
            webhook_repo.disable_subscription(cur, sub_id, "The endpoint answered 410 Gone.")
            WEBHOOK_DISABLED.labels("gone").inc()
            log.warning("webhook_subscription_disabled", subscription_id=str(sub_id), reason="410")
            return
        cfg = self.settings.webhooks
        if attempt >= delivery["attempt_limit"]:
            webhook_repo.finish_delivery(cur, delivery_id, "failed")
            failures = webhook_repo.record_subscription_failure(cur, sub_id)
            log.warning("webhook_delivery_failed", delivery_id=str(delivery_id), attempts=attempt,
                        consecutive_failures=failures, error=result.error)
            if failures >= cfg.disable_after:
                webhook_repo.disable_subscription(
                            cur, sub_id, f"{failures} deliveries in a row failed after every retry; "
                                         f"last error: {result.error}")
                WEBHOOK_DISABLED.labels("consecutive_failures").inc()
                log.warning("webhook_subscription_disabled", subscription_id=str(sub_id),
                            reason="consecutive_failures", failures=failures)
            return
        delay = retry_delay(attempt, cfg.retry_base_s, cfg.retry_cap_s)
        token = uuid.uuid4()
        webhook_repo.schedule_delivery(cur, delivery_id, token, delay)
        enqueue_attempt(cur, delivery_id, token, delay, cause=event)
        log.info("webhook_retry_scheduled", delivery_id=str(delivery_id), attempt=attempt,
                 retry_in_s=round(delay, 1), error=result.error)

"""Notification rules (pure Python, no I/O): topics, retry schedule, signatures, SSE framing.

* Which webhook topic and which email an order event means.
* The webhook retry schedule: exponential backoff with jitter.
* Webhook signatures: ``Webhook-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``.
* Server-sent event framing (``id:``, ``event:``, ``data:``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.backoff import backoff_delay
from shared.errors import DomainError

# Events of order-status.fifo this service turns into notifications.
ORDER_EVENT_TYPES = ("order.created", "order.status_changed", "order.cancelled")

TOPIC_ALL = "*"
TOPICS = ("order.created", "order.updated", "order.cancelled", "order.delivered", TOPIC_ALL)
PING_TOPIC = "webhook.ping"

# Header names of a webhook delivery.
HEADER_ID = "Webhook-Id"
HEADER_TOPIC = "Webhook-Topic"
HEADER_TIMESTAMP = "Webhook-Timestamp"
HEADER_SIGNATURE = "Webhook-Signature"
SIGNATURE_PREFIX = "sha256="
# Receivers should refuse a delivery whose timestamp is further off than this (replays).
SIGNATURE_TOLERANCE_S = 300

# +-20 % around each nominal delay: retries of many deliveries that failed together
# spread out, and the schedule's length stays predictable.
JITTER = 0.2


# --- topics ---------------------------------------------------------------------------------
def webhook_topic(event_type: str, data: Mapping[str, Any]) -> str:
    """The webhook topic of an order event.

    ``order.status_changed`` is ``order.updated``, except a change to DELIVERED,
    which is ``order.delivered`` (and still reaches ``order.updated`` subscribers).
    """
    if event_type == "order.created":
        return "order.created"
    if event_type == "order.cancelled":
        return "order.cancelled"
    if event_type == "order.status_changed":
        return "order.delivered" if data.get("status") == "DELIVERED" else "order.updated"
    raise ValueError(f"not an order event: {event_type}")


def topic_matches(subscribed: str, topic: str) -> bool:
    """Whether a subscription to ``subscribed`` receives an event of ``topic``."""
    if subscribed in (TOPIC_ALL, topic):
        return True
    # A delivery is a status change like any other for order.updated subscribers.
    return subscribed == "order.updated" and topic == "order.delivered"


def subscribed_topics(topic: str) -> list[str]:
    """Every subscription topic that receives ``topic`` (for a database lookup)."""
    return [t for t in TOPICS if topic_matches(t, topic)]


# --- email ----------------------------------------------------------------------------------
# status_changed -> template; CANCELLED has its own event (order.cancelled), so the
# status change to CANCELLED sends nothing (one cancellation mail, not two).
STATUS_TEMPLATES = {
    "SHIPPED": "order_shipped",
    "DELIVERED": "order_delivered",
    "DELIVERY_FAILED": "order_delivery_failed",
}


def email_template_for(event_type: str, data: Mapping[str, Any]) -> str | None:
    """The email template an order event sends, or None for no mail."""
    if event_type == "order.created":
        return "order_confirmation"
    if event_type == "order.cancelled":
        return "order_cancelled"
    if event_type == "order.status_changed":
        # Only the first move into SHIPPED mails (in_transit etc. keep SHIPPED and emit nothing).
        return STATUS_TEMPLATES.get(str(data.get("status")))
    return None


# --- retries --------------------------------------------------------------------------------
def nominal_delay(failed_attempts: int, base_s: float, cap_s: float) -> float:
    """Seconds before the next attempt after ``failed_attempts`` failures (no jitter)."""
    return backoff_delay(failed_attempts - 1, base_s, cap_s)


def retry_delay(failed_attempts: int, base_s: float, cap_s: float,
                rng: random.Random | None = None) -> float:
    """:func:`nominal_delay` with +-20 % jitter."""
    return backoff_delay(failed_attempts - 1, base_s, cap_s, jitter=JITTER, rng=rng)


def schedule_span(max_attempts: int, base_s: float, cap_s: float, jitter: float = 1.0) -> float:
    """Seconds from the first to the last of ``max_attempts`` attempts (``jitter`` scales delays)."""
    return sum(nominal_delay(n, base_s, cap_s) * jitter for n in range(1, max_attempts))


# --- signatures -----------------------------------------------------------------------------
def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Webhook-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify(secret: str, timestamp_header: str | None, signature_header: str | None, body: bytes,
           tolerance_s: int = SIGNATURE_TOLERANCE_S, now: float | None = None) -> bool:
    """What a receiver does: a fresh timestamp and a matching signature (constant-time)."""
    if not timestamp_header or not signature_header:
        return False
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature_header)


def webhook_body(delivery_id: str, topic: str, occurred_at: str, data: Mapping[str, Any]) -> str:
    """The JSON body of a webhook (stored once, so every retry sends the same bytes)."""
    return json.dumps({"id": delivery_id, "topic": topic, "occurred_at": occurred_at,
                       "data": data}, separators=(",", ":"), sort_keys=True, default=str)


# --- server-sent events ---------------------------------------------------------------------
@dataclass(frozen=True)
class Notification:
    """One stored notification as the stream sends it."""

    id: int
    order_id: str
    customer_id: str
    type: str
    payload: dict[str, Any]
    created_at: str

    def sse(self) -> str:
        """This notification as one SSE event (id = notification id, event = type)."""
        data = json.dumps({"id": self.id, "order_id": self.order_id, "type": self.type,
                           "created_at": self.created_at, "data": self.payload},
                          separators=(",", ":"), default=str)
        return sse_event(data, event=self.type, event_id=str(self.id))


def sse_event(data: str, event: str | None = None, event_id: str | None = None) -> str:
    """Frame one event; multi-line data becomes several ``data:`` lines."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return "\n".join(lines) + "\n\n"


def sse_comment(text: str) -> str:
    """A comment line: ignored by clients, keeps proxies from closing an idle stream."""
    return f": {text}\n\n"


# --- what a command can be refused with (the HTTP layer maps each to a problem) -----------------
class UnsafeDeliveryUrl(DomainError):
    """The delivery URL is not an acceptable webhook target (the detail says why)."""


class SubscriptionLimit(DomainError):
    """The owner has as many subscriptions as one owner may have."""


class DuplicateSubscription(DomainError):
    """The owner already has a subscription for this delivery URL and topic."""


class RedeliverPing(DomainError):
    """A ping is not redelivered; a new one is sent instead."""


class SubscriptionNotActive(DomainError):
    """The subscription is paused or disabled."""

"""Notification commands and queries of the API: webhook subscriptions, their
deliveries, and the notification history.

One function each, dependencies as arguments. A subscription is visible to
its owner and to admins; to anyone else it does not exist (ids cannot be
probed). Refusals are the domain errors of :mod:`services.notification.domain`
(the views map them to problems).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

from services.notification import repository as repo
from services.notification import webhook_repository as webhook_repo
from services.notification.consumers import enqueue_attempt
from services.notification.domain import (
    PING_TOPIC,
    DuplicateSubscription,
    RedeliverPing,
    SubscriptionLimit,
    SubscriptionNotActive,
    UnsafeDeliveryUrl,
    webhook_body,
)
from services.notification.secretbox import secret_box
from services.notification.settings import NotificationSettings
from services.notification.ssrf import UnsafeUrl, UrlPolicy
from services.notification.webhooks import WebhookSender
from shared.auth import Principal
from shared.errors import NotFound
from shared.logging import get_logger

log = get_logger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def _not_found(what: str = "webhook subscription") -> NotFound:
    return NotFound(f"No such {what}.")


def _visible(principal: Principal, sub: dict | None) -> dict:
    if sub is None or not (principal.is_admin or sub["owner_id"] == principal.subject):
        raise _not_found()
    return sub


def check_delivery_url(policy: UrlPolicy, url: str) -> None:
    """Raise :class:`UnsafeDeliveryUrl` unless the URL is an acceptable webhook target."""
    try:
        policy.check_url(url)
    except UnsafeUrl as exc:
        raise UnsafeDeliveryUrl(str(exc)) from None


def _duplicate() -> DuplicateSubscription:
    return DuplicateSubscription("You already have a subscription for this delivery_url and topic.")


def create_subscription(db, settings: NotificationSettings, policy: UrlPolicy,
                        principal: Principal, payload: dict) -> dict:
    """Create a subscription; the response (only this one) carries the secret."""
    check_delivery_url(policy, payload["delivery_url"])
    secret = payload.get("secret") or SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    with db.transaction() as cur:
        # One owner's subscriptions are created one at a time, so the limit holds.
        webhook_repo.lock_owner(cur, principal.subject)
        if webhook_repo.count_subscriptions(cur, principal.subject) >= \
                settings.webhooks.max_subscriptions_per_owner:
            raise SubscriptionLimit(f"At most {settings.webhooks.max_subscriptions_per_owner} "
                                    "webhook subscriptions per owner.")
        row = webhook_repo.insert_subscription(
                    cur, uuid.uuid4(), principal.subject, principal.is_admin, payload["name"],
                    payload["topic"], payload["delivery_url"],
                    secret_box(settings.webhooks.secret_keys).seal(secret), payload["status"])
    if row is None:
        raise _duplicate()
    log.info("webhook_subscription_created", subscription_id=str(row["id"]), topic=row["topic"])
    return {**row, "secret": secret}


def get_subscription(db, principal: Principal, sub_id: uuid.UUID) -> dict:
    with db.transaction() as cur:
        return _visible(principal, webhook_repo.get_subscription(cur, sub_id))


def list_subscriptions(db, principal: Principal, after, limit: int) -> list[dict]:
    with db.transaction() as cur:
        return webhook_repo.list_subscriptions(cur, None if principal.is_admin else principal.subject,
                                               after, limit)


def update_subscription(db, settings: NotificationSettings, policy: UrlPolicy,
                        principal: Principal, sub_id: uuid.UUID, payload: dict) -> dict:
    """Replace a subscription's fields; the response carries the secret only if it changed."""
    check_delivery_url(policy, payload["delivery_url"])
    with db.transaction() as cur:
        _visible(principal, webhook_repo.get_subscription(cur, sub_id, lock=True))
        new_secret = payload.get("secret")
        row = webhook_repo.update_subscription(
                    cur, sub_id, payload["name"], payload["topic"], payload["delivery_url"],
                    payload["status"],
                    secret_box(settings.webhooks.secret_keys).seal(new_secret) if new_secret else None)
    if row is None:
        raise _duplicate()
    return {**row, "secret": payload["secret"]} if payload.get("secret") else row


def delete_subscription(db, principal: Principal, sub_id: uuid.UUID) -> None:
    with db.transaction() as cur:
        _visible(principal, webhook_repo.get_subscription(cur, sub_id, lock=True))
        webhook_repo.delete_subscription(cur, sub_id)


def ping(db, settings: NotificationSettings, sender: WebhookSender, principal: Principal,
         sub_id: uuid.UUID) -> dict:
    """Send a signed ``webhook.ping`` now and return the attempt (recorded like any other)."""
    with db.transaction() as cur:
        sub = _visible(principal, webhook_repo.get_subscription(cur, sub_id, with_secret=True))
        delivery_id = uuid.uuid4()
        occurred_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = webhook_body(str(delivery_id), PING_TOPIC, occurred_at,
                            {"subscription_id": str(sub_id), "message": "ping"})
        webhook_repo.insert_delivery(cur, delivery_id, sub_id, str(uuid.uuid4()), PING_TOPIC, body, None, 1)
    # No transaction is held open over the request.
    secret = secret_box(settings.webhooks.secret_keys).open(sub["secret"])
    result = sender.send(sub["delivery_url"], secret, str(delivery_id), PING_TOPIC, body)
    with db.transaction() as cur:
        webhook_repo.record_attempt(cur, delivery_id, 1, result.outcome, result.status_code,
                                    result.duration_ms, result.excerpt, result.error)
        webhook_repo.finish_delivery(cur, delivery_id, "delivered" if result.delivered else "failed")
    return {"delivery_id": delivery_id, "delivered": result.delivered, "outcome": result.outcome,
            "status_code": result.status_code, "duration_ms": result.duration_ms,
            "response_excerpt": result.excerpt, "error": result.error}


def list_deliveries(db, principal: Principal, sub_id: uuid.UUID, after, limit: int) -> list[dict]:
    with db.transaction() as cur:
        _visible(principal, webhook_repo.get_subscription(cur, sub_id))
        return webhook_repo.list_deliveries(cur, sub_id, after, limit)


def redeliver(db, settings: NotificationSettings, principal: Principal, sub_id: uuid.UUID,
              delivery_id: uuid.UUID, correlation_id: str | None) -> dict:
    """Send a delivery again now, with a fresh retry schedule (same Webhook-Id and body)."""
    with db.transaction() as cur:
        sub = _visible(principal, webhook_repo.get_subscription(cur, sub_id, lock=True))
        delivery = webhook_repo.get_delivery(cur, sub_id, delivery_id, lock=True)
        if delivery is None:
            raise _not_found("delivery")
        if delivery["topic"] == PING_TOPIC:
            raise RedeliverPing("Send a new ping instead.")
        if sub["status"] != "active":
            raise SubscriptionNotActive(f"The subscription is {sub['status']}; activate it first.",
                                        status_now=sub["status"])
        token = uuid.uuid4()
        webhook_repo.schedule_delivery(cur, delivery_id, token, 0, reset=True)
        webhook_repo.extend_attempt_limit(cur, delivery_id, settings.webhooks.max_attempts)
        enqueue_attempt(cur, delivery_id, token, 0, correlation_id=correlation_id)
        delivery = webhook_repo.get_delivery(cur, sub_id, delivery_id)
    delivery["attempt_log"] = []
    log.info("webhook_redelivery_requested", delivery_id=str(delivery_id))
    return delivery


def list_notifications(db, principal: Principal, order_id: str | None, before: int | None,
                       limit: int) -> list[dict]:
    with db.transaction() as cur:
        return repo.notifications_before(cur, before, None if principal.is_admin
                                         else principal.subject, order_id, limit)

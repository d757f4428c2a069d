"""Notification worker: consumes order-status.fifo and webhook-delivery, sends mail,
and relays its outbox (the webhook-delivery messages).

Run with ``python -m services.notification.worker``.
"""

from __future__ import annotations

import sys

from services.notification.consumers import (
    DELIVERY_REQUESTED,
    OrderEventHandler,
    WebhookDeliverer,
)
from services.notification.domain import ORDER_EVENT_TYPES
from services.notification.mailer import EmailDispatcher, build_provider
from services.notification.retention import retention_task
from services.notification.settings import NotificationSettings, load, notification_settings
from services.notification.ssrf import UrlPolicy
from services.notification.webhooks import EndpointBreakers, WebhookSender
from shared.config import Settings
from shared.queues import queue
from shared.resilience import BreakerRegistry
from shared.worker import WorkerPlan, serve_worker

SERVICE = "notification"


def build_plan(db, settings: Settings, own: NotificationSettings | None = None,
               email_provider=None) -> WorkerPlan:
    """Handlers per queue, plus the email dispatcher (the one wiring point of the worker)."""
    own = own or notification_settings(settings)
    policy = UrlPolicy(own.webhooks.allowed_hosts)
    endpoint_breakers = EndpointBreakers(settings.env)
    sender = WebhookSender(policy, endpoint_breakers, own.webhooks.timeout_s)
    on_order_event = OrderEventHandler(own)
    plan = WorkerPlan(consumers={
        queue("order-status.fifo"): {event_type: on_order_event for event_type in ORDER_EVENT_TYPES},
        queue("webhook-delivery"): {DELIVERY_REQUESTED: WebhookDeliverer(own, sender)},
    })
    plan.breakers.append(endpoint_breakers)
    plan.tasks.append(retention_task(db, own.retention))
    if own.email.enabled:
        mail_breakers = BreakerRegistry(settings.env)
        dispatcher = EmailDispatcher(db, email_provider or build_provider(own.email), own.email,
                                     mail_breakers)
        plan.tasks.append(dispatcher.run_async)
        plan.breakers.append(mail_breakers)
    return plan


def main() -> int:
    return serve_worker(load, build_plan)


if __name__ == "__main__":
    sys.exit(main())

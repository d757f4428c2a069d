"""Notification service WSGI app factory.

Served by gunicorn's **gevent** worker (``-k gevent``): every SSE client is a
greenlet, not a thread, so one process holds thousands of idle streams. Under
gevent, psycopg2 is made cooperative with psycogreen before any connection is
opened (``shared.server_model``, called by ``base_app``).
"""

from __future__ import annotations

import os
import signal
import sys

from services.notification.api import PROBLEMS, notifications_blp, webhooks_blp
from services.notification.settings import SERVICE, load
from services.notification.ssrf import UrlPolicy
from services.notification.stream import NotificationHub
from services.notification.webhooks import EndpointBreakers, WebhookSender
from shared.admin.api import mount_admin
from shared.db import database_for
from shared.health import health_blueprint, sqs_check
from shared.logging import configure_logging, get_logger
from shared.messaging.sqs import physical_name, sync_client
from shared.server_model import gevent_active
from shared.web import base_app

log = get_logger(__name__)


def _end_streams_on_sigterm(hub: NotificationHub) -> None:
    """On SIGTERM end every stream at once, so the worker exits without waiting out
    the graceful timeout; clients reconnect (with Last-Event-ID) to another instance."""
    import gevent

    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum, frame):
        # gevent runs this in its loop's callback, where nothing may block (the hub's
        # lock could): end the streams from a greenlet of their own.
        gevent.spawn(hub.shutdown)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)


def create_app(config: dict | None = None):
    """Build the notification API. ``config`` overrides environment variables (tests)."""
    settings, own = load({**os.environ, **(config or {})})
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    under_gevent = gevent_active()  # psycopg2 is made cooperative by base_app then
    if not under_gevent and "gunicorn" in sys.modules:
        log.warning("notification_api_without_gevent",
                    detail="each SSE client holds a thread; run gunicorn with -k gevent")
    app, api = base_app(settings, "Notification service")
    db = database_for(settings)
    hub = NotificationHub(db, own.stream)
    policy = UrlPolicy(own.webhooks.allowed_hosts)
    breakers = EndpointBreakers(settings.env)
    app.extensions.update({
        "db": db,
        "notification_settings": own,
        "notification_hub": hub,
        "webhook_policy": policy,
        "webhook_breakers": breakers,
        "webhook_sender": WebhookSender(policy, breakers, own.webhooks.timeout_s),
    })
    if under_gevent:
        _end_streams_on_sigterm(hub)
    sqs = sync_client(settings.sqs_endpoint_url, settings.aws_region, max_pool=2)
    app.register_blueprint(health_blueprint({
        "database": db.ping,
        "sqs": sqs_check(sqs, physical_name(settings.queue_prefix, "webhook-delivery")),
    }))
    api.register_blueprint(notifications_blp)
    api.register_blueprint(webhooks_blp)
    PROBLEMS.register(app)
    mount_admin(app, api)
    return app

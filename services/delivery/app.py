"""Delivery service WSGI app factory."""

from __future__ import annotations

import os

from services.delivery.api import BLUEPRINTS, PROBLEMS
from services.delivery.settings import SERVICE, load
from shared.admin.api import mount_admin
from shared.db import database_for
from shared.health import health_blueprint, sqs_check
from shared.logging import configure_logging
from shared.messaging.sqs import physical_name, sync_client
from shared.web import base_app


def create_app(config: dict | None = None):
    """Build the delivery API. ``config`` overrides environment variables (tests)."""
    # The API reads no DELIVERY_* itself; validating them here still fails a bad deployment early.
    settings, _own = load({**os.environ, **(config or {})})
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    app, api = base_app(settings, "Delivery service")
    db = database_for(settings)
    app.extensions["db"] = db
    sqs = sync_client(settings.sqs_endpoint_url, settings.aws_region, max_pool=2)
    app.register_blueprint(health_blueprint({
        "database": db.ping,
        "sqs": sqs_check(sqs, physical_name(settings.queue_prefix, "delivery-status.fifo")),
    }))
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    PROBLEMS.register(app)
    mount_admin(app, api)
    return app

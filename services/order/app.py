"""Order service WSGI app factory."""

from __future__ import annotations

from services.order.api import blp
from services.order.inventory import InventoryClient, ServiceToken, inventory_config
from shared.auth import token_settings_from
from shared.config import load_settings
from shared.db import database_for
from shared.health import health_blueprint, sqs_check
from shared.logging import configure_logging
from shared.messaging.sqs import physical_name, sync_client
from shared.resilience import BreakerRegistry
from shared.web import base_app

SERVICE = "order"


def create_app(config: dict | None = None):
    """Build the order API. ``config`` overrides environment variables (tests)."""
    import os

    env = {**os.environ, **(config or {})}
    settings = load_settings(SERVICE, env)
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    app, api = base_app(settings, "Order service")
    db = database_for(settings)
    app.extensions["db"] = db
    breakers = BreakerRegistry(settings.env)
    app.extensions["breakers"] = breakers
    app.extensions["inventory"] = InventoryClient(
        inventory_config(settings), breakers, ServiceToken(token_settings_from(settings)))
    sqs = sync_client(settings.sqs_endpoint_url, settings.aws_region, max_pool=2)
    app.register_blueprint(health_blueprint({
        "database": db.ping,
        "sqs": sqs_check(sqs, physical_name(settings.queue_prefix, "order-created.fifo")),
    }, reports={"breakers": breakers.snapshot}))
    api.register_blueprint(blp)
    return app

"""Order service WSGI app factory."""

from __future__ import annotations

from limits import parse_many

from services.order.api import blp
from services.order.inventory import InventoryClient, inventory_config
from shared.auth import authenticate
from shared.config import ConfigError, env_str, load_settings
from shared.db import database_for
from shared.errors import Problem
from shared.health import health_blueprint, sqs_check
from shared.logging import configure_logging
from shared.messaging.sqs import physical_name, sync_client
from shared.ratelimit import client_ip, create_limiter
from shared.service_token import service_token_from
from shared.web import base_app

SERVICE = "order"
DEFAULT_ORDER_RATE = "60/minute"
# The order service's own token reserves stock; customers never hold this scope.
INVENTORY_SCOPE = "inventory:reserve"


def create_app(config: dict | None = None):
    """Build the order API. ``config`` overrides environment variables (tests)."""
    import os

    env = {**os.environ, **(config or {})}
    settings = load_settings(SERVICE, env)
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    app, api = base_app(settings, "Order service")
    db = database_for(settings)
    app.extensions["db"] = db
    breakers = app.extensions["breakers"]  # base_app's registry: auth-jwks is in it too
    app.extensions["inventory"] = InventoryClient(
        inventory_config(settings), breakers,
        service_token_from(settings, settings.env, INVENTORY_SCOPE, breakers))
    sqs = sync_client(settings.sqs_endpoint_url, settings.aws_region, max_pool=2)
    app.register_blueprint(health_blueprint({
        "database": db.ping,
        "sqs": sqs_check(sqs, physical_name(settings.queue_prefix, "order-created.fifo")),
    }, reports={"breakers": breakers.snapshot}))
    api.register_blueprint(blp)
    _limit_order_creation(app, env)
    return app


def _customer_key() -> str:
    """Rate-limit key: the calling customer (unauthenticated calls get their 401 from the view)."""
    try:
        return "customer:" + authenticate().subject
    except Problem:
        return "anonymous:" + client_ip()


def _limit_order_creation(app, env) -> None:
    """``ORDER_RATE_LIMIT_PER_CUSTOMER`` (default 60/minute) on POST /v1/orders, per customer.

    Idempotent replays count too: a client retrying in a loop is still a loop.
    """
    rate = env_str(env, "ORDER_RATE_LIMIT_PER_CUSTOMER", DEFAULT_ORDER_RATE)
    try:
        parse_many(rate)
    except ValueError:
        raise ConfigError("ORDER_RATE_LIMIT_PER_CUSTOMER",
                          f"must be a rate limit such as '60/minute', got {rate!r}") from None
    limiter = create_limiter(app, env.get("RATE_LIMIT_STORAGE_URI"))
    app.extensions["limiter"] = limiter
    view = "orders.Orders"
    app.view_functions[view] = limiter.limit(rate, key_func=_customer_key, methods=["POST"])(
        app.view_functions[view])

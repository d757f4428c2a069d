"""Order service WSGI app factory."""

from __future__ import annotations

from limits import parse_many

from services.order.api import ORDER_RATE_LIMIT, PROBLEMS, blp
from services.order.inventory import InventoryClient, inventory_config
from shared.config import ConfigError, env_str, load_settings
from shared.db import database_for
from shared.health import health_blueprint, sqs_check
from shared.logging import configure_logging
from shared.messaging.sqs import physical_name, sync_client
from shared.ratelimit import create_limiter
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
    PROBLEMS.register(app)
    app.config[ORDER_RATE_LIMIT] = _order_rate_limit(env)
    create_limiter(app, env.get("RATE_LIMIT_STORAGE_URI"))
    return app


def _order_rate_limit(env) -> str:
    """``ORDER_RATE_LIMIT_PER_CUSTOMER`` (default 60/minute): POST /v1/orders, per customer."""
    rate = env_str(env, ORDER_RATE_LIMIT, DEFAULT_ORDER_RATE)
    try:
        parse_many(rate)
    except ValueError:
        raise ConfigError(ORDER_RATE_LIMIT,
                          f"must be a rate limit such as '60/minute', got {rate!r}") from None
    return rate

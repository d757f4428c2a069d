"""Order service WSGI app factory."""

from __future__ import annotations

import os

from services.order.api import ORDER_RATE_LIMIT, PAYMENT_TTL, PROBLEMS, STUCK_AFTER, blp
from services.order.delivery import SCOPE as DELIVERY_SCOPE
from services.order.delivery import DeliveryClient, delivery_config
from services.order.inventory import InventoryClient, inventory_config
from services.order.payments import SCOPE as PAYMENTS_SCOPE
from services.order.payments import PaymentClient, payment_config
from services.order.reports_api import blp as reports_blp
from services.order.settings import SERVICE, load
from shared.admin.api import mount_admin
from shared.db import database_for
from shared.health import health_blueprint, sqs_check
from shared.logging import configure_logging
from shared.messaging.sqs import physical_name, sync_client
from shared.ratelimit import create_limiter
from shared.service_token import service_token_from
from shared.web import base_app

# The order service's own token reserves stock; customers never hold this scope.
INVENTORY_SCOPE = "inventory:reserve"


def create_app(config: dict | None = None):
    """Build the order API. ``config`` overrides environment variables (tests)."""
    settings, own = load({**os.environ, **(config or {})})
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    app, api = base_app(settings, "Order service")
    db = database_for(settings)
    app.extensions["db"] = db
    breakers = app.extensions["breakers"]  # base_app's registry: auth-jwks is in it too
    app.extensions["inventory"] = InventoryClient(
        inventory_config(settings, own), breakers,
        service_token_from(settings, own.client_id, own.client_secret, INVENTORY_SCOPE, breakers))
    app.extensions["payments"] = PaymentClient(
        payment_config(settings, own), breakers,
        service_token_from(settings, own.client_id, own.client_secret, PAYMENTS_SCOPE, breakers))
    app.extensions["delivery"] = DeliveryClient(
        delivery_config(settings, own), breakers,
        service_token_from(settings, own.client_id, own.client_secret, DELIVERY_SCOPE, breakers))
    sqs = sync_client(settings.sqs_endpoint_url, settings.aws_region, max_pool=2)
    app.register_blueprint(health_blueprint({
        "database": db.ping,
        "sqs": sqs_check(sqs, physical_name(settings.queue_prefix, "order-status.fifo")),
    }, reports={"breakers": breakers.snapshot}))
    api.register_blueprint(blp)
    api.register_blueprint(reports_blp)
    PROBLEMS.register(app)
    # api._order_rate reads it per request; validated (a parseable rate) by OrderSettings.
    app.config[ORDER_RATE_LIMIT] = own.rate_limit_per_customer
    app.config[STUCK_AFTER] = own.stuck_after_s
    app.config[PAYMENT_TTL] = own.payment_ttl_s
    create_limiter(app, settings.rate_limit_storage_uri)
    mount_admin(app, api)  # after its limiter, if it has one
    return app

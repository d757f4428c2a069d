"""Payment service WSGI app factory."""

from __future__ import annotations

import os

from services.payment.api import PROBLEMS, blp
from services.payment.provider import BREAKER, StripeGateway
from services.payment.settings import SERVICE, PaymentSettings, load
from shared.admin.api import mount_admin
from shared.db import database_for
from shared.health import health_blueprint, sqs_check
from shared.logging import configure_logging
from shared.messaging.sqs import physical_name, sync_client
from shared.web import base_app


def gateway_for(own: PaymentSettings, breakers) -> StripeGateway:
    """The Stripe gateway of this process (breaker ``stripe`` from ``breakers``)."""
    return StripeGateway(own.stripe_api_base, own.stripe_secret_key.get_secret_value(),
                         breakers.get(BREAKER), own.stripe_timeout_s, own.stripe_attempts)


def create_app(config: dict | None = None):
    """Build the payment API. ``config`` overrides environment variables (tests)."""
    settings, own = load({**os.environ, **(config or {})})
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    app, api = base_app(settings, "Payment service")
    db = database_for(settings)
    app.extensions["db"] = db
    breakers = app.extensions["breakers"]
    app.extensions["stripe"] = gateway_for(own, breakers)
    app.extensions["payment_settings"] = own
    sqs = sync_client(settings.sqs_endpoint_url, settings.aws_region, max_pool=2)
    app.register_blueprint(health_blueprint({
        "database": db.ping,
        "sqs": sqs_check(sqs, physical_name(settings.queue_prefix, "order-payments.fifo")),
    }, reports={"breakers": breakers.snapshot}))
    api.register_blueprint(blp)
    mount_admin(app, api)
    PROBLEMS.register(app)
    return app

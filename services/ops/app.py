"""Ops service WSGI app factory."""

from __future__ import annotations

import os

from services.ops.api import ACTION_RATE_LIMIT, PROBLEMS, RATE_LIMIT, blp
from services.ops.orders_api import PROBLEM_RULES as ORDER_PROBLEM_RULES
from services.ops.orders_api import orders_blp
from services.ops.peers import Peers
from services.ops.settings import SERVICE, load
from services.ops.web import mount_web
from services.ops.web_settings import WebSettings
from shared.db import database_for
from shared.errors import ProblemMap
from shared.health import health_blueprint, sqs_check
from shared.logging import configure_logging
from shared.messaging.sqs import physical_name, sync_client
from shared.queues import TOPOLOGY
from shared.ratelimit import create_limiter
from shared.web import base_app


def create_app(config: dict | None = None):
    """Build the ops API. ``config`` overrides environment variables (tests)."""
    settings, own = load({**os.environ, **(config or {})})
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    app, api = base_app(settings, "Ops service")
    db = database_for(settings)
    breakers = app.extensions["breakers"]
    sqs = sync_client(settings.sqs_endpoint_url, settings.aws_region, max_pool=4)
    app.extensions.update({
        "db": db, "sqs": sqs,
        "peers": Peers(settings, breakers, own.peer_timeout_s, own.peer_attempts),
    })
    first_queue = next(iter(TOPOLOGY)).name
    app.register_blueprint(health_blueprint({
        "database": db.ping,
        "sqs": sqs_check(sqs, physical_name(settings.queue_prefix, first_queue)),
    }, reports={"breakers": breakers.snapshot}))
    api.register_blueprint(blp)
    api.register_blueprint(orders_blp)
    PROBLEMS.register(app)
    ProblemMap(ORDER_PROBLEM_RULES).register(app)
    mount_web(app, WebSettings.from_env(settings.env, app_env=settings.app_env))
    app.config[RATE_LIMIT] = own.rate_limit
    app.config[ACTION_RATE_LIMIT] = own.action_rate_limit
    create_limiter(app, settings.rate_limit_storage_uri)
    return app

"""Inventory service WSGI app factory."""

from __future__ import annotations

import os

from services.inventory.api import BLUEPRINTS, PROBLEMS
from services.inventory.settings import SERVICE, load
from shared.admin.api import mount_admin
from shared.db import database_for
from shared.health import health_blueprint
from shared.logging import configure_logging
from shared.web import base_app


def create_app(config: dict | None = None):
    """Build the inventory API. ``config`` overrides environment variables (tests)."""
    settings, own = load({**os.environ, **(config or {})})
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    app, api = base_app(settings, "Inventory service")
    app.extensions["inventory"] = own
    db = database_for(settings)
    app.extensions["db"] = db
    # The API never talks to SQS (reservations are synchronous; events are
    # consumed by the worker), so readiness is the database alone.
    app.register_blueprint(health_blueprint({"database": db.ping}))
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    PROBLEMS.register(app)
    mount_admin(app, api)
    return app

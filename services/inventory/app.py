"""Inventory service WSGI app factory."""

from __future__ import annotations

import os
from dataclasses import dataclass

from services.inventory.api import BLUEPRINTS, PROBLEMS
from services.inventory.reservations import DEFAULT_RESERVATION_TTL_S
from shared.config import Settings, env_float, load_settings
from shared.db import database_for
from shared.health import health_blueprint
from shared.logging import configure_logging
from shared.web import base_app

SERVICE = "inventory"
MIN_RESERVATION_TTL_S = 1.0


@dataclass(frozen=True)
class InventorySettings:
    """INVENTORY_* settings."""

    reservation_ttl_s: float


def inventory_settings(settings: Settings) -> InventorySettings:
    """Read and validate the inventory-specific settings."""
    return InventorySettings(
        reservation_ttl_s=env_float(settings.env, settings.service_env("RESERVATION_TTL_S"),
                                    DEFAULT_RESERVATION_TTL_S, minimum=MIN_RESERVATION_TTL_S))


def create_app(config: dict | None = None):
    """Build the inventory API. ``config`` overrides environment variables (tests)."""
    env = {**os.environ, **(config or {})}
    settings = load_settings(SERVICE, env)
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    app, api = base_app(settings, "Inventory service")
    app.extensions["inventory"] = inventory_settings(settings)
    db = database_for(settings)
    app.extensions["db"] = db
    # The API never talks to SQS (reservations are synchronous; events are
    # consumed by the worker), so readiness is the database alone.
    app.register_blueprint(health_blueprint({"database": db.ping}))
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)
    PROBLEMS.register(app)
    return app

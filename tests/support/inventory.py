"""The inventory API as a real HTTP server for tests that place orders, and its catalog.

Checkout calls inventory over HTTP, so every test that places an order needs
one listening: :class:`InventoryServer` serves ``services.inventory.app``'s
``create_app()`` with werkzeug's threaded server on a free loopback port (real
sockets, real concurrency, in this process). Tests that must kill or restart
inventory run it under gunicorn with the ``processes`` fixture instead.
"""

from __future__ import annotations

from decimal import Decimal

from shared.db import Database
from tests.support.servers import ServiceServer

PLENTY = 1_000_000  # stock no test runs out of unless it means to

# sku -> (name, unit price in EUR): the products test orders are made of.
TEST_CATALOG = {
    "SKU-1": ("Test item one", "9.99"),
    "SKU-2": ("Test item two", "0.50"),
    "SKU-3": ("Test item three", "4.50"),
    "COFFEE-1KG": ("Espresso beans, 1 kg", "14.50"),
}


class InventoryServer(ServiceServer):
    """``create_app(config)`` of the inventory service, listening until :meth:`stop`."""

    def __init__(self, config: dict[str, str]):
        super().__init__("inventory", config)


def seed_catalog(database_url: str, catalog: dict[str, tuple[str, str]] | None = None,
                 on_hand: int = PLENTY) -> None:
    """Put ``catalog`` (sku -> (name, price)) into the inventory schema with ``on_hand`` each."""
    from services.inventory.seed import seed

    db = Database(database_url, "inventory_svc", 1, 1)
    try:
        seed(db, [{"sku": sku, "name": name, "price": Decimal(price), "currency": "EUR",
                   "on_hand": on_hand, "allow_backorder": False}
                  for sku, (name, price) in (catalog or TEST_CATALOG).items()])
    finally:
        db.close()


def set_stock(database_url: str, sku: str, on_hand: int) -> None:
    """Set a product's stock on hand (nothing held), e.g. to leave only the last few units."""
    db = Database(database_url, "inventory_svc", 1, 1)
    try:
        with db.transaction() as cur:
            cur.execute("UPDATE products SET on_hand = %s, reserved = 0 WHERE sku = %s",
                        (on_hand, sku))
    finally:
        db.close()

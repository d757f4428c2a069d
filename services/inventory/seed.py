"""Seed the demo catalog (``make run`` does this; the README walkthrough uses it).

Idempotent: products that exist (even deleted ones) are left as they are, so
restarting keeps the stock that earlier orders took.

Run with ``python -m services.inventory.seed`` (reads ``DATABASE_URL``).
"""

from __future__ import annotations

import sys
import uuid
from decimal import Decimal

from services.inventory import repository as repo
from shared.config import load_settings
from shared.db import Database, database_for
from shared.logging import configure_logging, get_logger

log = get_logger(__name__)

SERVICE = "inventory"
SCHEMA = "inventory_svc"

# sku, name, price (EUR), on hand, backorders allowed
DEMO_CATALOG: tuple[tuple[str, str, str, int, bool], ...] = (
    ("COFFEE-1KG", "Espresso beans, 1 kg", "14.50", 500, False),
    ("TEA-EARLGREY-250G", "Earl Grey loose tea, 250 g", "6.90", 200, False),
    ("MUG-STONEWARE", "Stoneware mug, 350 ml", "9.00", 100, False),
    ("GRINDER-BURR", "Manual burr grinder", "89.00", 10, False),
    ("FILTER-PAPER-100", "Paper filters, 100 pcs", "3.20", 0, False),      # out of stock
    ("KETTLE-GOOSENECK", "Gooseneck kettle, 1 l", "49.00", 0, True),       # on backorder
)
CURRENCY = "EUR"


def demo_products() -> list[dict]:
    """The demo catalog as product records."""
    return [{"sku": sku, "name": name, "price": Decimal(price), "currency": CURRENCY,
             "on_hand": on_hand, "allow_backorder": backorder}
            for sku, name, price, on_hand, backorder in DEMO_CATALOG]


def seed(db, products: list[dict] | None = None) -> list[str]:
    """Insert the products that do not exist yet; returns the skus created."""
    created = []
    with db.transaction() as cur:
        for product in products or demo_products():
            if repo.insert_product_if_absent(cur, uuid.uuid4(), product):
                created.append(product["sku"])
    return created


def seed_database(database_url: str, products: list[dict] | None = None) -> list[str]:
    """:func:`seed` against ``database_url`` (``make run`` and the benchmarks call this)."""
    db = Database(database_url, SCHEMA, 1, 1, application_name="inventory-seed")
    try:
        return seed(db, products)
    finally:
        db.close()


def main() -> int:
    settings = load_settings(SERVICE)
    configure_logging(SERVICE, settings.log_level, settings.log_format)
    db = database_for(settings)
    try:
        created = seed(db)
    finally:
        db.close()
    log.info("demo_catalog_seeded", created=created, kept=len(DEMO_CATALOG) - len(created))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Inventory's catalog: products, their prices and stock, and availability.

One function per command or query, dependencies as arguments. Refusals are
the domain errors of :mod:`services.inventory.domain` (the views map them to
problems); results are product rows with their derived fields
(:func:`shape_product`).
"""

from __future__ import annotations

import uuid

import psycopg2.errors

from services.inventory import repository as repo
from services.inventory.domain import (
    NegativeStock,
    ProductExists,
    ProductInUse,
    RequestedLine,
    StockWouldGoNegative,
    adjusted_on_hand,
    available,
    require_known,
    shortages,
    stock_status,
)
from shared.auth import Principal
from shared.errors import NotFound
from shared.logging import get_logger

log = get_logger(__name__)


# --- products -------------------------------------------------------------------------------
def create_product(db, data: dict) -> dict:
    """Create a product; ProductExists if a live product has the sku."""
    with db.transaction() as cur:
        product = repo.insert_product(cur, uuid.uuid4(), data)
    if product is None:
        raise ProductExists(f"A product with sku {data['sku']} already exists.",
                            errors=[{"field": "sku", "message": "Already exists."}])
    log.info("product_created", sku=product["sku"], on_hand=product["on_hand"])
    return shape_product(product)


def get_product(db, sku: str) -> dict:
    with db.transaction() as cur:
        product = repo.get_product(cur, sku)
    if product is None:
        raise _no_product(sku)
    return shape_product(product)


def list_products(db, q, status, currency, after, limit) -> list[dict]:
    with db.transaction() as cur:
        return [shape_product(p) for p in repo.list_products(cur, q, status, currency, after, limit)]


def update_product(db, sku: str, data: dict) -> dict:
    """Replace name, price, currency and the backorder policy."""
    try:
        with db.transaction() as cur:
            product = repo.get_product(cur, sku, lock=True)
            if product is None:
                raise _no_product(sku)
            updated = repo.update_product(cur, sku, data)
    except psycopg2.errors.CheckViolation:
        # Turning backorders off while more is held than on hand would oversell.
        raise NegativeStock("Backorders cannot be turned off while more units are promised than "
                            "are on hand; receive stock first.",
                            errors=[{"field": "allow_backorder",
                                     "message": "Stock would go negative."}]) from None
    log.info("product_updated", sku=sku)
    return shape_product(updated)


def delete_product(db, sku: str) -> None:
    """Delete a product nothing is held for (ProductInUse otherwise: release or confirm first)."""
    with db.transaction() as cur:
        product = repo.get_product(cur, sku, lock=True)
        if product is None:
            raise _no_product(sku)
        if product["reserved"] > 0:
            raise ProductInUse(f"{product['reserved']} units of {sku} are held for orders being "
                               "placed.", reserved=product["reserved"])
        repo.delete_product(cur, sku)
    log.info("product_deleted", sku=sku)


def adjust_stock(db, principal: Principal, sku: str, delta: int, reason: str,
                 note: str | None) -> dict:
    """Add or remove units on hand, with an audit row (who, why, result)."""
    with db.transaction() as cur:
        product = repo.get_product(cur, sku, lock=True)
        if product is None:
            raise _no_product(sku)
        try:
            after = adjusted_on_hand(product["on_hand"], product["reserved"],
                                     product["allow_backorder"], delta)
        except StockWouldGoNegative as exc:
            raise NegativeStock(
                f"{sku} has {exc.on_hand} on hand with {exc.reserved} held for orders; "
                f"{delta} would leave {exc.on_hand + delta - exc.reserved} available.",
                errors=[{"field": "delta", "message": "Stock would go negative."}],
                on_hand=exc.on_hand, reserved=exc.reserved) from None
        updated = repo.set_on_hand(cur, sku, after)
        adjustment = repo.insert_adjustment(cur, sku, delta, reason, note, after, principal.subject)
    log.info("stock_adjusted", sku=sku, delta=delta, reason=reason, on_hand=after)
    return {**adjustment, "product": shape_product(updated)}


# --- availability ----------------------------------------------------------------------------
def check_availability(db, lines: list[RequestedLine]) -> dict:
    """Per line: what could be reserved now, and at what price (a snapshot, nothing held)."""
    with db.transaction() as cur:
        products = repo.find_products(cur, [line.sku for line in lines])
    require_known(products, lines)
    result = []
    for line in lines:
        p = products[line.sku]
        short = shortages(products, [line])
        result.append({
            "sku": line.sku, "name": p["name"], "requested": line.quantity,
            "available": max(0, available(p["on_hand"], p["reserved"])),
            "sufficient": not short, "unit_price": p["price"], "currency": p["currency"].strip(),
            "stock_status": stock_status(p["on_hand"], p["reserved"], p["allow_backorder"]).value})
    return {"lines": result, "all_available": all(r["sufficient"] for r in result)}


# --- shaping ----------------------------------------------------------------------------------
def shape_product(product: dict) -> dict:
    """A product row with its derived fields, for :class:`ProductSchema`."""
    shaped = dict(product)
    shaped["currency"] = product["currency"].strip()
    shaped["available"] = available(product["on_hand"], product["reserved"])
    shaped["stock_status"] = stock_status(product["on_hand"], product["reserved"],
                                          product["allow_backorder"]).value
    return shaped


def _no_product(sku: str) -> NotFound:
    return NotFound(f"No product with sku {sku}.")

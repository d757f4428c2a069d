"""Inventory's reservations: stock held for an order, keyed by the order id.

A reservation is HELD when the order service reserves (``PUT
/v1/reservations/{order_id}``), CONFIRMED when ``order.created`` arrives,
RELEASED when ``order.cancelled`` arrives or its time-to-live runs out
(:func:`release_expired`, run by the worker). Every writer of a reservation
takes its locks in one order (order key, reservation row, products in sku
order), so none can deadlock with another. Refusals are the domain errors of
:mod:`services.inventory.domain`; the views map them to problems.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from services.inventory import repository as repo
from services.inventory.domain import (
    RE_HOLDABLE,
    InsufficientStock,
    MixedCurrencies,
    ReleaseReason,
    RequestedLine,
    ReservationConfirmed,
    ReservationConflict,
    ReservationStatus,
    line_total,
    lines_fingerprint,
    lock_order,
    require_known,
    shortages,
)
from services.inventory.metrics import (
    RESERVATIONS,
    RESERVATIONS_CONFIRMED,
    RESERVATIONS_RELEASED,
)
from services.inventory.settings import DEFAULT_RESERVATION_TTL_S
from shared.contracts import load_data
from shared.errors import NotFound
from shared.logging import get_logger
from shared.messaging.consumer import PermanentError
from shared.messaging.envelope import Envelope

log = get_logger(__name__)

SWEEP_BATCH = 100
ZERO = Decimal("0.00")
RESERVATION_LINE_FIELDS = ("sku", "name", "quantity", "unit_price", "line_total")
# What the consumers below cannot do without (shared/contracts.py: load_data): the lines
# are compared with the reservation when the event carries them.
ORDER_CREATED_NEEDS = ("order_id", "lines.sku", "lines.quantity")
ORDER_CANCELLED_NEEDS = ("order_id",)


@dataclass(frozen=True)
class Reserve:
    """Hold stock for an order (``PUT /v1/reservations/{order_id}``)."""

    order_id: uuid.UUID
    lines: list[RequestedLine]
    requested_by: str
    ttl_s: float = DEFAULT_RESERVATION_TTL_S


@dataclass(frozen=True)
class ReserveResult:
    reservation: dict
    created: bool  # False: the same request again, answered from the stored reservation


# --- reserving --------------------------------------------------------------------------------
def reserve(db, command: Reserve) -> ReserveResult:
    """Hold every line or none (InsufficientStock listing the short lines); idempotent by order id.

    The same lines again answer with the stored reservation (a reservation
    the sweeper released is held again if the stock is still there: the
    caller is retrying an order it never committed); other lines for the
    same order are a ReservationConflict.
    """
    fingerprint = lines_fingerprint(command.lines)
    with db.transaction() as cur:
        # A new order id (nearly every call) takes three statements: lock the products in
        # sku order, insert the reservation unless the order id has one, move the stock.
        # A shortage raises after the insert, which the rollback undoes.
        products = _lock_products(cur, command.lines)
        lines = [{"sku": line.sku, "name": products[line.sku]["name"], "quantity": line.quantity,
                  "unit_price": products[line.sku]["price"],
                  "line_total": line_total(products[line.sku]["price"], line.quantity)}
                 for line in command.lines]
        total = sum((line["line_total"] for line in lines), ZERO)
        currency = products[command.lines[0].sku]["currency"].strip()
        reservation = repo.insert_reservation(cur, command.order_id, fingerprint, currency, total,
                                              command.requested_by, command.ttl_s, lines)
        if reservation is not None:
            _check_stock(products, command.lines)
            repo.move_stock(cur, [(line.sku, 0, line.quantity) for line in command.lines])
            reservation["lines"] = [{k: line[k] for k in RESERVATION_LINE_FIELDS} for line in lines]
    if reservation is None:
        return _reserve_again(db, command, fingerprint)
    RESERVATIONS.labels("held").inc()
    log.info("stock_reserved", order_id=str(command.order_id), lines=len(lines), total=str(total))
    return ReserveResult(reservation, created=True)


def _reserve_again(db, command: Reserve, fingerprint: str) -> ReserveResult:
    """The order id has a reservation already: a retry (same lines) or a conflict.

    Taken in the lock order of every other writer of a reservation (order
    key, reservation row, then products), so it cannot deadlock with the
    worker confirming or releasing the same order.
    """
    with db.transaction() as cur:
        existing = _locked_reservation(cur, command.order_id)
        if existing["lines_hash"] != fingerprint:
            RESERVATIONS.labels("conflict").inc()
            raise ReservationConflict("This order already has a reservation with different lines.",
                                      order_id=str(command.order_id),
                                      status_now=existing["status"])
        if existing["release_reason"] in RE_HOLDABLE \
                and existing["status"] == ReservationStatus.RELEASED.value:
            _take_stock(cur, command.lines)
            repo.hold_again(cur, command.order_id, command.ttl_s)
            existing = repo.get_reservation(cur, command.order_id)
            log.info("reservation_held_again", order_id=str(command.order_id))
    RESERVATIONS.labels("replayed").inc()
    return ReserveResult(existing, created=False)


def _locked_reservation(cur, order_id: uuid.UUID) -> dict | None:
    """The order's reservation, locked in the writers' lock order (order key, then the row)."""
    repo.lock_order_key(cur, order_id)
    return repo.get_reservation(cur, order_id, lock=True)


def _lock_products(cur, lines: list[RequestedLine]) -> dict[str, dict]:
    """Lock the lines' products in sku order; UnknownSku or MixedCurrencies if they do not fit."""
    products = repo.lock_products(cur, lock_order(lines))
    require_known(products, lines)
    currencies = {products[line.sku]["currency"].strip() for line in lines}
    if len(currencies) > 1:
        raise MixedCurrencies(f"These products are priced in different currencies "
                              f"({', '.join(sorted(currencies))}); one reservation takes one "
                              "currency.")
    return products


def _check_stock(products: dict[str, dict], lines: list[RequestedLine]) -> None:
    short = shortages(products, lines)
    if short:
        RESERVATIONS.labels("insufficient").inc()
        raise insufficient_stock(short)


def _take_stock(cur, lines: list[RequestedLine]) -> dict[str, dict]:
    """Lock the lines' products (sku order) and move their quantities to ``reserved``.

    Raises UnknownSku, MixedCurrencies or InsufficientStock before anything
    is written. Returns the products as they were.
    """
    products = _lock_products(cur, lines)
    _check_stock(products, lines)
    repo.move_stock(cur, [(line.sku, 0, line.quantity) for line in lines])
    return products


def abandon(db, order_id: uuid.UUID) -> dict:
    """Checkout gave up before committing the order: give its HELD stock back now.

    Releasing a released reservation is a no-op; a CONFIRMED one belongs to a
    committed order (ReservationConfirmed: only ``order.cancelled`` releases it).
    """
    with db.transaction() as cur:
        reservation = _locked_reservation(cur, order_id)
        if reservation is None:
            raise NotFound("No reservation for this order.")
        if reservation["status"] == ReservationStatus.CONFIRMED.value:
            raise ReservationConfirmed("This reservation belongs to a placed order; cancel the "
                                       "order instead.", status_now=reservation["status"])
        release(cur, reservation, ReleaseReason.ABANDONED)
        return repo.get_reservation(cur, order_id)


def get_reservation(db, order_id: uuid.UUID) -> dict:
    with db.transaction() as cur:
        reservation = repo.get_reservation(cur, order_id)
    if reservation is None:
        raise NotFound("No reservation for this order.")
    return reservation


def insufficient_stock(short) -> InsufficientStock:
    """The refusal for lines that cannot be reserved, each with what is available."""
    described = ", ".join(f"{s.sku} (requested {s.requested}, available {s.available})"
                          for s in short)
    return InsufficientStock(f"Not enough stock for: {described}.",
                             lines=[s.as_dict() for s in short])


# --- consumed events and expiry -------------------------------------------------------------
def on_order_created(cur, event: Envelope) -> None:
    """The order was committed: its HELD reservation is confirmed and no longer expires."""
    data = load_data("order.created", event.data, ORDER_CREATED_NEEDS)
    order_id = data["order_id"]
    reservation = _locked_reservation(cur, order_id)
    if reservation is None:
        raise PermanentError(f"order.created for {order_id}, which has no reservation")
    lines = data.get("lines")
    if lines is not None and _quantities(lines) != _quantities(reservation["lines"]):
        raise PermanentError(f"order.created for {order_id} does not match its reservation")
    status = ReservationStatus(reservation["status"])
    if status == ReservationStatus.CONFIRMED:
        return  # a second copy of the event (new event id, e.g. a replay): already done
    if status == ReservationStatus.RELEASED:
        _confirm_released(cur, reservation)
        return
    repo.move_stock(cur, [(line["sku"], -line["quantity"], -line["quantity"])
                          for line in reservation["lines"]])
    repo.set_reservation_status(cur, order_id, ReservationStatus.CONFIRMED)
    RESERVATIONS_CONFIRMED.inc()
    log.info("reservation_confirmed", order_id=str(order_id))


def on_order_cancelled(cur, event: Envelope) -> None:
    """The order was cancelled: its stock goes back, exactly once."""
    data = load_data("order.cancelled", event.data, ORDER_CANCELLED_NEEDS)
    order_id = data["order_id"]
    reservation = _locked_reservation(cur, order_id)
    if reservation is None:
        log.warning("cancel_without_reservation", order_id=str(order_id))
        return
    release(cur, reservation, ReleaseReason.CANCELLED)


def release(cur, reservation: dict, reason: ReleaseReason) -> bool:
    """Give a reservation's units back; False if it was already released (a no-op)."""
    status = ReservationStatus(reservation["status"])
    if status == ReservationStatus.RELEASED:
        return False
    if status == ReservationStatus.HELD:
        changes = [(line["sku"], 0, -line["quantity"]) for line in reservation["lines"]]
    else:  # CONFIRMED: the units had left on_hand
        changes = [(line["sku"], line["quantity"], 0) for line in reservation["lines"]]
    repo.move_stock(cur, changes)
    repo.set_reservation_status(cur, reservation["order_id"], ReservationStatus.RELEASED,
                                reason.value)
    RESERVATIONS_RELEASED.labels(reason.value).inc()
    log.info("reservation_released", order_id=str(reservation["order_id"]), reason=reason.value,
             was=status.value)
    return True


def release_expired(db, limit: int = SWEEP_BATCH) -> int:
    """Release HELD reservations past their time-to-live; returns how many.

    They belong to orders that were never committed (the order service
    crashed or failed between reserving and committing), so nothing will ever
    confirm them.
    """
    with db.transaction() as cur:
        expired = repo.claim_expired(cur, limit)
        # One product update per sku for the whole batch, in sku order.
        per_sku: dict[str, int] = {}
        for reservation in expired:
            for line in reservation["lines"]:
                per_sku[line["sku"]] = per_sku.get(line["sku"], 0) + line["quantity"]
        repo.move_stock(cur, [(sku, 0, -quantity) for sku, quantity in per_sku.items()])
        for reservation in expired:
            repo.set_reservation_status(cur, reservation["order_id"], ReservationStatus.RELEASED,
                                        ReleaseReason.EXPIRED.value)
    if expired:
        RESERVATIONS_RELEASED.labels(ReleaseReason.EXPIRED.value).inc(len(expired))
        log.info("reservations_expired", count=len(expired),
                 order_ids=[str(r["order_id"]) for r in expired][:20])
    return len(expired)


def _confirm_released(cur, reservation: dict) -> None:
    """order.created for a reservation that is already released.

    After a cancel this cannot happen (events of one order arrive in order);
    after expiry it can, when the order's events waited in its outbox longer
    than the time-to-live (SQS down). The order exists, so the stock is taken
    again if it is still there; if not, the order is oversold and needs a
    person: logged as an error, not retried (waiting brings no stock back).
    """
    order_id = str(reservation["order_id"])
    if reservation["release_reason"] != ReleaseReason.EXPIRED.value:
        log.warning("order_created_after_release_ignored", order_id=order_id,
                    release_reason=reservation["release_reason"])
        return
    lines = [RequestedLine(line["sku"], line["quantity"]) for line in reservation["lines"]]
    products = repo.lock_products(cur, lock_order(lines))
    short = [s.as_dict() for s in shortages(products, lines)] if len(products) == len(lines) \
        else [{"sku": line.sku, "requested": line.quantity, "available": 0} for line in lines
              if line.sku not in products]
    if short:
        log.error("order_confirmed_after_expiry_without_stock", order_id=order_id, short=short)
        return
    repo.move_stock(cur, [(line.sku, -line.quantity, 0) for line in lines])
    repo.set_reservation_status(cur, reservation["order_id"], ReservationStatus.CONFIRMED)
    RESERVATIONS_CONFIRMED.inc()
    log.warning("reservation_confirmed_after_expiry", order_id=order_id)


# --- shaping ----------------------------------------------------------------------------------
def shape_reservation(reservation: dict) -> dict:
    shaped = dict(reservation)
    shaped["currency"] = reservation["currency"].strip()
    return shaped


def _quantities(lines) -> dict[str, int]:
    return {line["sku"]: line["quantity"] for line in lines}



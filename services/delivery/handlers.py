"""Delivery commands and event handlers: one function each, dependencies as arguments.

Commands return shipment rows and raise :class:`~services.delivery.domain.InvalidTransition`
or :class:`~shared.errors.NotFound`; the views map them to problems. A shipment the caller
does not reach (:func:`~services.delivery.domain.reach_of`: another customer's, another
carrier's) is :class:`~shared.errors.NotFound` exactly like one that does not exist, for
reading and for carrier events alike, so its existence is not revealed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.delivery import repository as repo
from services.delivery.domain import (
    EVENT_TYPES,
    SIMULATED_PATH,
    InvalidTransition,
    ShipmentStatus,
    ShipmentUnderway,
    can_transition,
    choose_carrier,
    new_tracking_number,
    reach_of,
)
from shared.auth import Principal
from shared.contracts import event_data, load_data
from shared.errors import NotFound
from shared.logging import get_logger
from shared.messaging.envelope import Envelope
from shared.queues import add_event

log = get_logger(__name__)

SERVICE = "delivery"
PRODUCER = "delivery-service"
# What the consumers below cannot do without (shared/contracts.py: load_data).
ORDER_PAID_NEEDS = ("order_id", "customer_id", "shipping_address")
ORDER_CANCELLED_NEEDS = ("order_id",)


# --- consumed events -----------------------------------------------------------------
def on_order_paid(cur, event: Envelope) -> None:
    """One shipment per paid order, unless a cancel for it arrived first.

    When one did (a tombstone), the order hears ``delivery.shipment_cancelled``
    without a shipment id: the tombstone may come from the order service's own
    cancel whose commit was lost (it crashed after :func:`stop_shipment` said
    yes), and this event is what lets that order finish its cancel. An order
    that is cancelled already ignores it.
    """
    data = load_data("order.paid", event.data, ORDER_PAID_NEEDS)
    order_id = data["order_id"]
    repo.lock_order_key(cur, order_id)
    if repo.is_cancelled(cur, order_id):
        log.info("shipment_skipped_order_cancelled", order_id=str(order_id))
        never_shipped = {"id": None, "order_id": order_id, "status": ShipmentStatus.CANCELLED,
                         "carrier": None, "tracking_number": None}
        add_event(cur, SERVICE, event.caused(
            EVENT_TYPES[ShipmentStatus.CANCELLED], str(order_id),
            _event_data(EVENT_TYPES[ShipmentStatus.CANCELLED], never_shipped, datetime.now(UTC)), PRODUCER))
        return
    shipment_id = uuid.uuid4()
    carrier = choose_carrier(str(order_id))
    created = repo.insert_shipment(cur, shipment_id, order_id, data["customer_id"], carrier,
                                   new_tracking_number(carrier), data["shipping_address"])
    if not created:
        log.info("shipment_exists", order_id=str(order_id))
        return
    repo.add_event(cur, shipment_id, ShipmentStatus.CREATED, None, "order.paid")
    shipment = repo.get_shipment(cur, shipment_id)
    event_type = EVENT_TYPES[ShipmentStatus.CREATED]
    add_event(cur, SERVICE, event.caused(event_type, str(order_id),
                                         _event_data(event_type, shipment, datetime.now(UTC)),
                                         PRODUCER))
    log.info("shipment_created", order_id=str(order_id), shipment_id=str(shipment_id))


def on_order_cancelled(cur, event: Envelope) -> None:
    """Cancel the order's unshipped shipment, or leave a tombstone if it has none yet.

    A paid order's shipment was already stopped by :func:`stop_shipment` before
    the order was cancelled, so for it this finds CANCELLED (or the tombstone)
    and changes nothing; it still does the work for unpaid orders' cancels and
    expiries, which need no synchronous call (no ``order.paid`` was sent).
    """
    data = load_data("order.cancelled", event.data, ORDER_CANCELLED_NEEDS)
    order_id = data["order_id"]
    repo.lock_order_key(cur, order_id)
    shipment = repo.lock_shipment_by_order(cur, order_id)
    if shipment is None:
        repo.record_cancel_tombstone(cur, order_id, data.get("reason"))
        log.info("cancel_before_create_recorded", order_id=str(order_id))
        return
    current = ShipmentStatus(shipment["status"])
    if current == ShipmentStatus.CANCELLED:
        return
    if not can_transition(current, ShipmentStatus.CANCELLED):
        repo.add_event(cur, shipment["id"], current, current, "order.cancelled",
                       note=f"cancel rejected: shipment already {current}")
        log.warning("cancel_rejected_already_shipped", order_id=str(order_id), status=current)
        return
    _transition(cur, shipment, ShipmentStatus.CANCELLED, "order.cancelled", event,
                note=data.get("reason"))


# --- the order service's cancel ---------------------------------------------------------
def stop_shipment(db, principal: Principal, order_id: uuid.UUID, reason: str | None,
                  correlation_id: str | None) -> dict:
    """``PUT /v1/shipment-cancellations/{order_id}``: no shipment of this order may leave.

    Asked by the order service BEFORE it cancels a paid order, so this is the
    one place that decides whether a cancel still stops the parcel. Under the
    order's lock and the shipment's row lock — the ones the consumers and a
    carrier's pick-up (:func:`record_status`) take too — in one transaction:
    no shipment yet -> a tombstone (a later ``order.paid`` creates none); a
    CREATED shipment -> CANCELLED (``delivery.shipment_cancelled``); already
    CANCELLED -> the same answer again; picked up or beyond ->
    :class:`ShipmentUnderway` with ``status_now``, nothing written.
    """
    with db.transaction() as cur:
        repo.lock_order_key(cur, order_id)
        shipment = repo.lock_shipment_by_order(cur, order_id)
        if shipment is None:
            repo.record_cancel_tombstone(cur, order_id, reason)
            log.info("cancel_before_create_recorded", order_id=str(order_id), source="api")
            return {"order_id": order_id, "status": ShipmentStatus.CANCELLED.value,
                    "shipment_id": None}
        current = ShipmentStatus(shipment["status"])
        if current != ShipmentStatus.CANCELLED:
            if not can_transition(current, ShipmentStatus.CANCELLED):
                raise ShipmentUnderway(f"The carrier has the parcel: the shipment is {current}.",
                                       status_now=current.value)
            _transition(cur, shipment, ShipmentStatus.CANCELLED, f"cancel:{principal.subject}",
                        None, note=reason, correlation_id=correlation_id)
        return {"order_id": order_id, "status": ShipmentStatus.CANCELLED.value,
                "shipment_id": shipment["id"]}


# --- carrier updates (API and simulator share this path) -----------------------------
def record_status(cur, shipment: dict, target: ShipmentStatus, source: str,
                  occurred_at: datetime | None = None, location: str | None = None,
                  note: str | None = None, correlation_id: str | None = None) -> bool:
    """Apply a carrier status; False if it is a repeat of the current status.

    Raises :class:`InvalidTransition` for a transition the shipment may not make.
    """
    current = ShipmentStatus(shipment["status"])
    if target == current:
        return False  # carriers retry callbacks; a repeat changes nothing
    if not can_transition(current, target):
        raise InvalidTransition(f"A {current} shipment cannot become {target}.",
                                status_now=current.value)
    _transition(cur, shipment, target, source, None, occurred_at, location, note,
                correlation_id)
    return True


def post_carrier_event(db, principal: Principal, shipment_id: uuid.UUID, payload: dict,
                       correlation_id: str | None) -> dict:
    """``POST /v1/shipments/{id}/events``: a carrier reports a status on one of its shipments
    (an operator holding ``shipments:write`` on any)."""
    with db.transaction() as cur:
        shipment = repo.lock_shipment(cur, shipment_id)
        if shipment is None or not reach_of(principal).covers(shipment):
            raise NotFound("No such shipment.")
        record_status(cur, shipment, ShipmentStatus(payload["status"]),
                      f"carrier:{principal.subject}", payload["occurred_at"],
                      payload["location"], payload["note"], correlation_id)
        return repo.get_shipment(cur, shipment_id)


def advance_simulated(db, step_s: float, batch: int = 50) -> int:
    """Move due shipments one step along the simulated path; returns how many moved."""
    with db.transaction() as cur:
        due = repo.claim_due_for_simulation(cur, step_s, batch)
        for shipment in due:
            target = SIMULATED_PATH[ShipmentStatus(shipment["status"])]
            record_status(cur, shipment, target, "simulator", note="carrier simulator")
    return len(due)


def _transition(cur, shipment: dict, target: ShipmentStatus, source: str,
                cause: Envelope | None, occurred_at: datetime | None = None,
                location: str | None = None, note: str | None = None,
                correlation_id: str | None = None) -> None:
    current = ShipmentStatus(shipment["status"])
    when = occurred_at or datetime.now(UTC)
    repo.set_status(cur, shipment["id"], target)
    repo.add_event(cur, shipment["id"], target, current, source, when, location, note)
    updated = dict(shipment, status=target.value)
    event_type = EVENT_TYPES[target]
    data = _event_data(event_type, updated, when, location)
    order_id = str(shipment["order_id"])
    envelope = (cause.caused(event_type, order_id, data, PRODUCER) if cause else
                Envelope(event_type=event_type, aggregate_id=order_id, data=data,
                         producer=PRODUCER, correlation_id=correlation_id))
    add_event(cur, SERVICE, envelope)
    log.info("shipment_status_changed", shipment_id=str(shipment["id"]), order_id=order_id,
             previous=current.value, status=target.value, source=source)


def _event_data(event_type: str, shipment: dict, occurred_at: datetime,
                location: str | None = None) -> dict:
    return event_data(event_type, {
        "shipment_id": None if shipment["id"] is None else str(shipment["id"]),
        "order_id": str(shipment["order_id"]),
        "status": str(shipment["status"]), "carrier": shipment["carrier"],
        "tracking_number": shipment["tracking_number"], "location": location,
        "occurred_at": occurred_at.isoformat()})


# --- queries ---------------------------------------------------------------------------
def get_shipment(db, principal: Principal, shipment_id: uuid.UUID) -> dict:
    with db.transaction() as cur:
        shipment = repo.get_shipment(cur, shipment_id)
    if shipment is None or not reach_of(principal).covers(shipment):
        raise NotFound("No such shipment.")
    return shipment


def list_shipments(db, principal: Principal, order_id, status, after, limit) -> list[dict]:
    with db.transaction() as cur:
        return repo.list_shipments(cur, reach_of(principal), order_id, status, after, limit)


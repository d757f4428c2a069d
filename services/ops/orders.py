"""Order look-up for operators: one order with its history, shipment and notifications.

Read from the services that own them, over their public APIs with the
operator's own token (``admin`` sees every customer's): the order service's
order (with its status history), the delivery service's shipments (with their
carrier events), the notification service's notifications. A service that
cannot be reached is named in ``unavailable``; the rest is still shown.
"""

from __future__ import annotations

from typing import Any

import requests

from services.ops.handlers import Context, ServiceUnavailable
from shared.errors import DomainError, NotFound
from shared.resilience import BreakerOpen, TransientHttpError

NOTIFICATIONS_SHOWN = 200
SHIPMENTS_SHOWN = 20


class PeerRefused(DomainError):
    """A service refused the operator's query (its problem's field errors are passed on)."""


def _get(ctx: Context, name: str, path: str, params: dict | None = None) -> tuple[int, Any]:
    """``GET path`` on service ``name``: (status, JSON body); ServiceUnavailable if unreachable."""
    client = ctx.peers.clients[name]
    try:
        response = client.request("GET", path, params=params,
                                  headers={"Authorization": ctx.authorization})
    except BreakerOpen:
        raise ServiceUnavailable(f"The {name} service's circuit breaker is open.") from None
    except (TransientHttpError, requests.RequestException) as exc:
        raise ServiceUnavailable(f"The {name} service cannot be reached ({type(exc).__name__}).") \
            from None
    try:
        return response.status_code, response.json()
    except ValueError:
        raise ServiceUnavailable(f"The {name} service answered something that is not JSON.") from None


def search_orders(ctx: Context, status: str | None, limit: int, cursor: str | None) -> dict:
    """Orders newest first (every customer's), optionally of one status; a page."""
    params = {k: v for k, v in {"status": status, "limit": limit, "cursor": cursor}.items()
              if v is not None}
    code, body = _get(ctx, "order", "/v1/orders", params)
    if code in (400, 422):
        raise PeerRefused(body.get("detail", "The order service refused the query."),
                          errors=body.get("errors") or [{"field": "status", "message": "Refused."}])
    if code != 200:
        raise ServiceUnavailable(f"The order service answered {code}.")
    return {"items": body["items"], "next_cursor": body.get("next_cursor")}


def order_view(ctx: Context, order_id: str) -> dict:
    """The order, its shipments with their events, and its notifications (oldest first)."""
    code, order = _get(ctx, "order", f"/v1/orders/{order_id}")
    if code == 404:
        raise NotFound(f"No order {order_id}.")
    if code != 200:
        raise ServiceUnavailable(f"The order service answered {code}.")
    unavailable = []
    shipments: list[dict] = []
    notifications: list[dict] = []
    try:
        code, page = _get(ctx, "delivery", "/v1/shipments",
                          {"order_id": order_id, "limit": SHIPMENTS_SHOWN})
        if code != 200:
            unavailable.append({"service": "delivery", "error": f"answered {code}"})
        for summary in page.get("items", []) if code == 200 else []:
            detail_code, shipment = _get(ctx, "delivery", f"/v1/shipments/{summary['id']}")
            shipments.append(shipment if detail_code == 200 else summary)
    except ServiceUnavailable as exc:
        unavailable.append({"service": "delivery", "error": exc.detail})
    try:
        code, page = _get(ctx, "notification", "/v1/notifications",
                          {"order_id": order_id, "limit": NOTIFICATIONS_SHOWN})
        if code == 200:
            notifications = list(reversed(page["items"]))
        else:
            unavailable.append({"service": "notification", "error": f"answered {code}"})
    except ServiceUnavailable as exc:
        unavailable.append({"service": "notification", "error": exc.detail})
    return {"order": order, "shipments": shipments, "notifications": notifications,
            "unavailable": unavailable}

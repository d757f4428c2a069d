"""Report handlers of the order service: totals by status, sales by period, customer stats.

Every number comes from the order rows as they are now, so a cancelled order
drops out of sales and lifetime value the moment its cancellation commits.
What counts as a sale is decided here, from :class:`services.order.domain.OrderStatus`:
every status except the ones in :data:`NO_SALE` (an order that was cancelled
never became revenue). New statuses are counted by the totals report without
an edit here, because it lists ``OrderStatus`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.order import reports_repository as repo
from services.order.domain import OrderStatus
from shared.auth import Principal
from shared.errors import NotFound

# Cancelled orders were never a sale; unpaid ones are not one yet (they may expire).
NO_SALE = frozenset({OrderStatus.CANCELLED, OrderStatus.PENDING_PAYMENT})
PERIODS = ("day", "week", "month")


@dataclass(frozen=True)
class SalesQuery:
    """Sales per ``period`` for orders placed in [start, end)."""

    period: str
    start: datetime
    end: datetime


def _no_sale() -> list[str]:
    return sorted(str(status) for status in NO_SALE)


def totals(db) -> dict:
    """Order count per status (every status of the domain, zeros included) and overall."""
    with db.transaction() as cur:
        counted = repo.count_by_status(cur)
    by_status = {str(status): counted.pop(str(status), 0) for status in OrderStatus}
    by_status.update(counted)  # a status the rows hold but the enum no longer names stays visible
    return {"total": sum(by_status.values()), "by_status": by_status}


def sales(db, query: SalesQuery) -> dict:
    """Orders, items and revenue per bucket and currency; ``NO_SALE`` orders excluded."""
    with db.transaction() as cur:
        rows = repo.sales(cur, query.period, query.start, query.end, _no_sale())
    buckets = [{"period_start": row["bucket"], "currency": row["currency"].strip(),
                "orders": int(row["orders"]), "items": int(row["items"]),
                "revenue": Decimal(row["revenue"])} for row in rows]
    return {"period": query.period, "from": query.start, "to": query.end, "buckets": buckets}


def customer_stats(db, principal: Principal, customer_id: str) -> dict:
    """A customer's order count, lifetime value per currency and last order.

    Admins may ask about anyone; a customer only about themselves (anyone else
    is NotFound, so customer ids cannot be probed).
    """
    if not principal.is_admin and principal.subject != customer_id:
        raise NotFound("No such customer.")
    with db.transaction() as cur:
        stats = repo.customer_stats(cur, customer_id, _no_sale())
        value = repo.customer_value(cur, customer_id, _no_sale())
    return {"customer_id": customer_id, "orders": int(stats["orders"]),
            "cancelled_or_unsold": int(stats["not_sold"]),
            "lifetime_value": [{"currency": row["currency"].strip(), "orders": int(row["orders"]),
                                "total": Decimal(row["total"])} for row in value],
            "last_order_at": stats["last_order_at"], "last_order_id": stats["last_order_id"]}

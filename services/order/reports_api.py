"""HTTP: the order service's reports (admin), and a customer's own stats."""

from __future__ import annotations

from flask.views import MethodView
from marshmallow import RAISE

from services.order import reports
from services.order.reports_schemas import (
    CustomerStatsSchema,
    SalesQuerySchema,
    SalesReportSchema,
    StatusTotalsSchema,
)
from shared.auth import authenticate, require_any_scope, require_scopes
from shared.web import Blueprint, database

blp = Blueprint("reports", __name__, url_prefix="/v1",
                description="Order totals, sales by period, customer statistics.")

# A customer id is the token subject (shared.auth.MAX_SUBJECT_CHARS).
CUSTOMER_ID = "<string(maxlength=128):customer_id>"


@blp.route("/reports/orders/totals")
class OrderTotals(MethodView):
    @blp.response(200, StatusTotalsSchema)
    @require_scopes("admin")
    def get(self):
        """How many orders are in each status (every status, zeros included)."""
        return reports.totals(database())


@blp.route("/reports/sales")
class Sales(MethodView):
    @blp.response(200, SalesReportSchema)
    @blp.alt_response(422, description="Unknown period, unparseable dates, or `from` not before `to`")
    @require_scopes("admin")
    @blp.arguments(SalesQuerySchema, location="query", unknown=RAISE)
    def get(self, query):
        """Orders, items and revenue per day, week or month (UTC) and currency; cancelled
        orders are not sales."""
        return reports.sales(database(), reports.SalesQuery(query["period"], query["from_"],
                                                            query["to"]))


@blp.route(f"/customers/{CUSTOMER_ID}/stats")
class CustomerStats(MethodView):
    @blp.response(200, CustomerStatsSchema)
    @blp.alt_response(404, description="Not your own id (admins may ask about anyone)")
    @require_any_scope("orders:read", "admin")
    def get(self, customer_id: str):
        """A customer's order count, lifetime value per currency and last order."""
        return reports.customer_stats(database(), authenticate(), customer_id)

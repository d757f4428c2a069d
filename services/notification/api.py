"""HTTP: the live stream (SSE), notification history, webhook subscriptions and deliveries.

:data:`PROBLEMS` is the one table from the commands' refusals to problem documents.
"""

from __future__ import annotations

from uuid import UUID

from flask import Response, current_app, request
from flask.views import MethodView

from services.notification import subscriptions, tickets
from services.notification.domain import (
    DuplicateSubscription,
    RedeliverPing,
    SubscriptionLimit,
    SubscriptionNotActive,
    UnsafeDeliveryUrl,
)
from services.notification.schemas import (
    DeliveryPageSchema,
    DeliverySchema,
    HistoryQuerySchema,
    ListQuerySchema,
    NotificationPageSchema,
    StreamQuerySchema,
    SubscriptionInSchema,
    SubscriptionPageSchema,
    SubscriptionSchema,
    SubscriptionWithSecretSchema,
    TicketRequestSchema,
    TicketSchema,
)
from services.notification.stream import HubUnavailable, event_stream
from shared.auth import authenticate, require_scopes
from shared.errors import Problem, ProblemMap
from shared.openapi import response_headers
from shared.pagination import decode_cursor, keyset_page
from shared.web import Blueprint, correlation_id, database

notifications_blp = Blueprint("notifications", __name__, url_prefix="/v1/notifications",
                              description="Live order notifications (SSE) and their history.")
webhooks_blp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks",
                         description="Signed webhook subscriptions and their delivery log.")

LAST_EVENT_ID_HEADER = "Last-Event-ID"
MAX_EVENT_ID_DIGITS = 18  # a bigint

PROBLEMS = ProblemMap({
    UnsafeDeliveryUrl: lambda exc: Problem(
        422, "Validation failed", "The request has invalid fields; see errors.", "validation-error",
        errors=[{"field": "delivery_url", "message": f"Not allowed: {exc.detail}."}]),
    SubscriptionLimit: (409, "Too many subscriptions", "subscription-limit"),
    DuplicateSubscription: (409, "Duplicate subscription", "duplicate-subscription"),
    RedeliverPing: (409, "Cannot redeliver a ping", "redeliver-ping"),
    SubscriptionNotActive: (409, "Subscription not active", "subscription-not-active"),
    tickets.TooManyTickets: lambda exc: Problem(
        429, "Too many stream tickets", f"At most {tickets.MAX_LIVE_TICKETS} unused tickets at a "
        "time; use one or let them expire.", "too-many-tickets", headers={"Retry-After": "30"}),
})


def _settings():
    return current_app.extensions["notification_settings"]


def _last_event_id(query: dict) -> int | None:
    """Last-Event-ID from the header (what EventSource sends) or the query string."""
    header = request.headers.get(LAST_EVENT_ID_HEADER, "").strip()
    if header:
        if not header.isdigit() or len(header) > MAX_EVENT_ID_DIGITS:
            raise Problem(400, "Bad Last-Event-ID", "Last-Event-ID must be a notification id "
                          "(a non-negative integer).", "bad-last-event-id",
                          errors=[{"field": LAST_EVENT_ID_HEADER, "message": "Invalid value."}])
        return int(header)
    return query.get("last_event_id")


def _stream_reader(query: dict):
    """Who opens the stream, and for which order: a ticket's principal, or the bearer's."""
    order_id = str(query["order_id"]) if query.get("order_id") else None
    ticket = query.get("ticket")
    if ticket is None:
        return require_scopes("orders:read")(authenticate)(), order_id
    bearer = authenticate() if request.headers.get("Authorization") else None
    try:
        return tickets.redeem(database(), ticket, order_id, bearer)
    except tickets.TicketRefused:
        # One answer for every refusal; the ticket (now used, if it existed) is never echoed.
        raise Problem(401, "Unauthorized", "The stream ticket is invalid, used, expired, or not "
                      "for this caller or order; ask for a new one.", "invalid-ticket",
                      errors=[{"field": "ticket", "message": "Not accepted."}]) from None


@notifications_blp.route("/stream")
class Stream(MethodView):
    @notifications_blp.doc(
        parameters=[{"in": "header", "name": LAST_EVENT_ID_HEADER, "required": False,
                     "schema": {"type": "integer", "minimum": 0},
                     "description": "Resume after this event id: missed events are replayed "
                                    "first, then live ones, with no gap and no duplicate."}],
        responses={"200": {"description": "text/event-stream: `id:` = notification id, "
                                          "`event:` = type, `data:` = JSON. A comment every "
                                          "15 s; `event: stream.closed` when the token expires.",
                           "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
    @notifications_blp.alt_response(401, description="No bearer token and no valid ticket")
    @notifications_blp.alt_response(503, description="The stream cannot listen right now")
    @notifications_blp.arguments(StreamQuerySchema, location="query")
    def get(self, query):
        """Stream order notifications (a customer's own orders; admin: any or all). Send a
        bearer token with scope orders:read, or a single-use ``ticket`` (EventSource)."""
        principal, order_id = _stream_reader(query)
        last_event_id = _last_event_id(query)
        customer = None if principal.is_admin else principal.subject
        hub = current_app.extensions["notification_hub"]
        try:
            client = hub.subscribe(customer, order_id)
        except HubUnavailable:
            raise Problem(503, "Stream unavailable", "The notification stream cannot listen "
                          "right now; retry shortly.", "service-unavailable",
                          headers={"Retry-After": "2"}) from None
        body = event_stream(database(), hub, client, last_event_id, principal.expires_at,
                            _settings().stream.heartbeat_s)
        response = Response(body, mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # proxies (nginx) must not buffer it
        return response


@notifications_blp.route("/stream/tickets")
class StreamTickets(MethodView):
    @notifications_blp.response(201, TicketSchema, description="A ticket for one stream, "
                                "valid NOTIFICATION_STREAM_TICKET_TTL_S seconds")
    @notifications_blp.alt_response(429, description="Too many unused tickets held")
    @require_scopes("orders:read")
    @notifications_blp.arguments(TicketRequestSchema, required=False)
    def post(self, payload):
        """A single-use ticket to open the stream without an Authorization header (browsers'
        EventSource): ``GET /v1/notifications/stream?ticket=...``, bound to you (and the order)."""
        order_id = (payload or {}).get("order_id")
        issued = tickets.issue(database(), authenticate(), str(order_id) if order_id else None,
                               _settings().stream.ticket_ttl_s)
        return {"ticket": issued.ticket, "expires_in": issued.expires_in}, 201


@notifications_blp.route("")
class History(MethodView):
    @notifications_blp.response(200, NotificationPageSchema)
    @require_scopes("orders:read")
    @notifications_blp.arguments(HistoryQuerySchema, location="query")
    def get(self, query):
        """Past notifications, newest first (a customer's own; admin: all)."""
        limit = query["limit"]
        order_id = str(query["order_id"]) if query.get("order_id") else None
        rows = subscriptions.list_notifications(database(), authenticate(), order_id, query.get("before"),
                                           limit + 1)
        page = rows[:limit]
        return {"items": page, "next_before": page[-1]["id"] if len(rows) > limit else None}


# --- webhooks ----------------------------------------------------------------------------------
@webhooks_blp.route("")
class Subscriptions(MethodView):
    @webhooks_blp.response(201, SubscriptionWithSecretSchema,
                           description="Created; the secret is shown in this response only.",
                           headers=response_headers("Location"))
    @webhooks_blp.alt_response(409, description="Same delivery_url and topic already subscribed")
    @webhooks_blp.alt_response(422, description="Invalid fields, or a delivery_url not allowed")
    @require_scopes("webhooks:manage")
    @webhooks_blp.arguments(SubscriptionInSchema)
    def post(self, payload):
        """Subscribe a URL to a topic (order.created/updated/cancelled/delivered or *)."""
        app = current_app.extensions
        row = subscriptions.create_subscription(database(), _settings(), app["webhook_policy"],
                                           authenticate(), payload)
        return row, 201, {"Location": f"/v1/webhooks/{row['id']}"}

    @webhooks_blp.response(200, SubscriptionPageSchema)
    @require_scopes("webhooks:manage")
    @webhooks_blp.arguments(ListQuerySchema, location="query")
    def get(self, query):
        """Your subscriptions, newest first (admin: everyone's)."""
        after = decode_cursor(query["cursor"]) if query.get("cursor") else None
        rows = subscriptions.list_subscriptions(database(), authenticate(), after, query["limit"] + 1)
        items, cursor = keyset_page(rows, query["limit"])
        return {"items": items, "next_cursor": cursor}


@webhooks_blp.route("/<uuid:sub_id>")
class SubscriptionById(MethodView):
    @webhooks_blp.response(200, SubscriptionSchema)
    @webhooks_blp.alt_response(404, description="No such subscription (or not yours)")
    @require_scopes("webhooks:manage")
    def get(self, sub_id: UUID):
        """One subscription (without its secret), with why it was disabled if it was."""
        return subscriptions.get_subscription(database(), authenticate(), sub_id)

    @webhooks_blp.response(200, SubscriptionWithSecretSchema,
                           description="Updated; carries the secret only if you set a new one.")
    @webhooks_blp.alt_response(404, description="No such subscription (or not yours)")
    @webhooks_blp.alt_response(409, description="Another subscription has this url and topic")
    @require_scopes("webhooks:manage")
    @webhooks_blp.arguments(SubscriptionInSchema)
    def put(self, payload, sub_id: UUID):
        """Replace name, topic, URL and status (active re-enables a disabled one); rotate
        the secret by sending one."""
        return subscriptions.update_subscription(database(), _settings(),
                                            current_app.extensions["webhook_policy"],
                                            authenticate(), sub_id, payload)

    @webhooks_blp.response(204)
    @webhooks_blp.alt_response(404, description="No such subscription (or not yours)")
    @require_scopes("webhooks:manage")
    def delete(self, sub_id: UUID):
        """Delete a subscription and its delivery log."""
        subscriptions.delete_subscription(database(), authenticate(), sub_id)
        return Response(status=204)


@webhooks_blp.route("/<uuid:sub_id>/ping")
class Ping(MethodView):
    @webhooks_blp.response(200, description="The attempt: delivered, status_code, duration_ms, "
                                            "response_excerpt, error")
    @webhooks_blp.alt_response(404, description="No such subscription (or not yours)")
    @require_scopes("webhooks:manage")
    def post(self, sub_id: UUID):
        """Send a signed webhook.ping now and report what the endpoint answered."""
        result = subscriptions.ping(database(), _settings(), current_app.extensions["webhook_sender"],
                               authenticate(), sub_id)
        return {**result, "delivery_id": str(result["delivery_id"])}


@webhooks_blp.route("/<uuid:sub_id>/deliveries")
class Deliveries(MethodView):
    @webhooks_blp.response(200, DeliveryPageSchema)
    @webhooks_blp.alt_response(404, description="No such subscription (or not yours)")
    @require_scopes("webhooks:manage")
    @webhooks_blp.arguments(ListQuerySchema, location="query")
    def get(self, query, sub_id: UUID):
        """Deliveries, newest first, each with every attempt (time, status, duration, error)."""
        after = decode_cursor(query["cursor"]) if query.get("cursor") else None
        rows = subscriptions.list_deliveries(database(), authenticate(), sub_id, after, query["limit"] + 1)
        items, cursor = keyset_page(rows, query["limit"])
        return {"items": items, "next_cursor": cursor}


@webhooks_blp.route("/<uuid:sub_id>/deliveries/<uuid:delivery_id>/redeliver")
class Redeliver(MethodView):
    @webhooks_blp.response(202, DeliverySchema, description="Queued again with a fresh schedule")
    @webhooks_blp.alt_response(404, description="No such subscription or delivery")
    @webhooks_blp.alt_response(409, description="The subscription is not active")
    @require_scopes("webhooks:manage")
    def post(self, sub_id: UUID, delivery_id: UUID):
        """Deliver again (same Webhook-Id and body, fresh signature and retry schedule)."""
        return subscriptions.redeliver(database(), _settings(), authenticate(), sub_id, delivery_id,
                                  correlation_id())

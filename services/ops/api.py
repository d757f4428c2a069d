"""HTTP: the operators' API (scope ``admin``): queues, dead letters, outboxes, groups, audit.

Every route needs ``admin`` and is rate limited per operator (``OPS_RATE_LIMIT``;
the actions also by ``OPS_ACTION_RATE_LIMIT``). Refusals are problem documents
(:data:`PROBLEMS`); every action is in the audit log (:mod:`services.ops.handlers`).
"""

from __future__ import annotations

from flask import current_app, request
from flask.views import MethodView
from marshmallow import RAISE

from services.ops import handlers
from services.ops.handlers import (
    BrokerUnavailable,
    ConfirmationMismatch,
    Context,
    ReplayFilter,
    ServiceUnavailable,
)
from services.ops.schemas import (
    AuditLogSchema,
    AuditQuerySchema,
    DeadLetterQuerySchema,
    DeadLettersSchema,
    OutboxRetriedSchema,
    PurgedSchema,
    PurgeSchema,
    QueuesSchema,
    ReplayedSchema,
    ReplaySchema,
    ServiceAnswersSchema,
    StatusSchema,
)
from shared.admin.schemas import BlockedQuerySchema, OutboxRetrySchema  # forwarded as they are
from shared.auth import authenticate, require_scopes
from shared.errors import Problem, ProblemMap
from shared.ratelimit import rate_limit
from shared.web import Blueprint, correlation_id, database

blp = Blueprint("ops", __name__, url_prefix="/v1/ops",
                description="Operate the platform: queues, dead letters, outboxes, blocked FIFO "
                            "groups, consumers, breakers, and the audit log (scope admin).")

# app.config keys (set by the app factory from OpsSettings).
RATE_LIMIT = "OPS_RATE_LIMIT"
ACTION_RATE_LIMIT = "OPS_ACTION_RATE_LIMIT"
RETRY_AFTER_S = "5"

PROBLEMS = ProblemMap({
    BrokerUnavailable: lambda exc: Problem(503, "Queue broker unavailable", exc.detail,
                                           "broker-unavailable",
                                           headers={"Retry-After": RETRY_AFTER_S}),
    ServiceUnavailable: lambda exc: Problem(503, "Service unavailable", exc.detail,
                                            "service-unavailable",
                                            headers={"Retry-After": RETRY_AFTER_S}),
    ConfirmationMismatch: (422, "Confirmation does not match", "confirmation-mismatch"),
})


def _rate() -> str:
    return current_app.config[RATE_LIMIT]


def _action_rate() -> str:
    return current_app.config[ACTION_RATE_LIMIT]


def _operator() -> str:
    try:
        return "operator:" + authenticate().subject
    except Problem:
        return "anonymous"


def _ctx() -> Context:
    extensions = current_app.extensions
    return Context(database(), extensions["sqs"], extensions["settings"].queue_prefix,
                   extensions["peers"], authenticate(), request.headers["Authorization"],
                   correlation_id())


QUEUE = "<string:queue_name>"
SERVICE = "<string:service_name>"


@blp.route("/status")
class Status(MethodView):
    @rate_limit(_rate, key=_operator)
    @blp.response(200, StatusSchema)
    @require_scopes("admin")
    def get(self):
        """Queues, DLQs, outboxes, consumers, breakers and blocked groups on one screen; a
        service or broker that cannot be reached is named, the rest still shown."""
        return handlers.status(_ctx())


@blp.route("/queues")
class Queues(MethodView):
    @rate_limit(_rate, key=_operator)
    @blp.response(200, QueuesSchema)
    @blp.alt_response(503, description="The queue broker cannot be reached")
    @require_scopes("admin")
    def get(self):
        """Every queue: visible, in flight, delayed; its DLQ's depth."""
        return {"queues": handlers.queues(_ctx())}


@blp.route(f"/dlq/{QUEUE}")
class DeadLetters(MethodView):
    @rate_limit(_rate, key=_operator)
    @blp.response(200, DeadLettersSchema)
    @blp.alt_response(404, description="No such queue in the topology")
    @blp.alt_response(503, description="The queue broker cannot be reached")
    @require_scopes("admin")
    @blp.arguments(DeadLetterQuerySchema, location="query", unknown=RAISE)
    def get(self, query, queue_name: str):
        """Peek at a queue's dead letters (they stay): reason, source queue, consumer,
        receive count, event type and id, order id."""
        wanted = ReplayFilter(event_type=query["event_type"], order_id=query["order_id"],
                              reason=query["reason"])
        return handlers.dead_letters(_ctx(), queue_name, query["limit"], wanted)


@blp.route(f"/dlq/{QUEUE}/replay")
class Replay(MethodView):
    @rate_limit(_action_rate, key=_operator)
    @rate_limit(_rate, key=_operator)
    @blp.response(200, ReplayedSchema)
    @blp.alt_response(404, description="No such queue in the topology")
    @blp.alt_response(503, description="The queue broker cannot be reached")
    @require_scopes("admin")
    @blp.arguments(ReplaySchema)
    def post(self, payload, queue_name: str):
        """Move dead letters back to their source queue (all, or a filtered set), keeping
        each order's order; an event handled before is absorbed by the consumer's inbox."""
        wanted = ReplayFilter(frozenset(payload["message_ids"] or ()), payload["event_type"],
                              payload["order_id"], payload["reason"], payload["limit"])
        return handlers.replay(_ctx(), queue_name, wanted,
                               {k: v for k, v in payload.items() if v not in (None, False)})


@blp.route(f"/dlq/{QUEUE}/purge")
class Purge(MethodView):
    @rate_limit(_action_rate, key=_operator)
    @rate_limit(_rate, key=_operator)
    @blp.response(200, PurgedSchema)
    @blp.alt_response(404, description="No such queue in the topology")
    @blp.alt_response(422, description="`confirm` does not name the DLQ (nothing was purged)")
    @blp.alt_response(503, description="The queue broker cannot be reached")
    @require_scopes("admin")
    @blp.arguments(PurgeSchema)
    def post(self, payload, queue_name: str):
        """Delete every dead letter of a queue; `confirm` must be the DLQ's name."""
        return handlers.purge(_ctx(), queue_name, payload["confirm"])


def _gathered(path: str, params: dict | None = None) -> dict:
    return {"services": handlers.from_services(_ctx(), path, params)}


@blp.route("/outbox")
class Outbox(MethodView):
    @rate_limit(_rate, key=_operator)
    @blp.response(200, ServiceAnswersSchema)
    @require_scopes("admin")
    def get(self):
        """Each service's outbox: pending count, oldest pending age, failed rows."""
        return _gathered("outbox")


@blp.route(f"/outbox/{SERVICE}/retry")
class OutboxRetry(MethodView):
    @rate_limit(_action_rate, key=_operator)
    @rate_limit(_rate, key=_operator)
    @blp.response(200, OutboxRetriedSchema)
    @blp.alt_response(404, description="No such service with an outbox")
    @blp.alt_response(503, description="The service cannot be reached")
    @require_scopes("admin")
    @blp.arguments(OutboxRetrySchema)
    def post(self, payload, service_name: str):
        """Make a service's failed outbox rows due now."""
        body = {"all_failed": True} if payload["all_failed"] else {"ids": payload["ids"]}
        return handlers.retry_outbox(_ctx(), service_name, body)


@blp.route("/groups/blocked")
class BlockedGroups(MethodView):
    @rate_limit(_rate, key=_operator)
    @blp.response(200, ServiceAnswersSchema)
    @require_scopes("admin")
    @blp.arguments(BlockedQuerySchema, location="query", unknown=RAISE)
    def get(self, query):
        """FIFO groups (orders) stuck behind a failing or long in-flight head, per service."""
        return _gathered("groups/blocked", query)


@blp.route("/consumers")
class Consumers(MethodView):
    @rate_limit(_rate, key=_operator)
    @blp.response(200, ServiceAnswersSchema)
    @require_scopes("admin")
    def get(self):
        """Each worker's consumers: alive, last message, handled/failed/dead-lettered."""
        return _gathered("consumers")


@blp.route("/breakers")
class Breakers(MethodView):
    @rate_limit(_rate, key=_operator)
    @blp.response(200, ServiceAnswersSchema)
    @require_scopes("admin")
    def get(self):
        """Each service API's circuit breakers, and the ops service's own (``ops``)."""
        answers = handlers.from_services(_ctx(), "breakers")
        answers.append({"service": "ops", "error": None, "data": {
            "service": "ops", "breakers": current_app.extensions["breakers"].snapshot()}})
        return {"services": answers}


@blp.route("/audit")
class Audit(MethodView):
    @rate_limit(_rate, key=_operator)
    @blp.response(200, AuditLogSchema)
    @require_scopes("admin")
    @blp.arguments(AuditQuerySchema, location="query", unknown=RAISE)
    def get(self, query):
        """The newest audit entries: who did what, when, with which parameters and outcome."""
        return {"entries": handlers.audit_log(database(), query["limit"], query["action"])}

"""``/v1/admin/*``: one service's outbox, consumers, blocked FIFO groups and breakers.

Mounted by every message-handling service with :func:`mount_admin`; every
route needs the ``admin`` scope, is rate limited per caller
(``ADMIN_RATE_LIMIT``) and logs an ``admin_action`` event for what it changes.
The ``ops`` service aggregates these over HTTP and keeps the audit log.
"""

from __future__ import annotations

from flask import Flask, current_app
from flask.views import MethodView
from marshmallow import RAISE

from shared.admin import repository as repo
from shared.admin.schemas import (
    BlockedGroupsSchema,
    BlockedQuerySchema,
    BreakersSchema,
    ConsumersSchema,
    OutboxQuerySchema,
    OutboxReportSchema,
    OutboxRetriedSchema,
    OutboxRetrySchema,
)
from shared.admin.state import DEFAULT_HEARTBEAT_S, STALE_AFTER_BEATS
from shared.auth import authenticate, require_scopes
from shared.logging import get_logger
from shared.ratelimit import EXTENSION, create_limiter, rate_limit
from shared.web import Blueprint, database

log = get_logger(__name__)

# Per caller, every admin route; app.config["ADMIN_RATE_LIMIT"] overrides it (tests).
ADMIN_RATE_LIMIT = "120/minute"

blp = Blueprint("admin", __name__, url_prefix="/v1/admin",
                description="Operators' view of this service's outbox, consumers, blocked FIFO "
                            "groups and circuit breakers (scope admin).")


def _admin_rate() -> str:
    return current_app.config.get("ADMIN_RATE_LIMIT", ADMIN_RATE_LIMIT)


def _caller() -> str:
    return "admin:" + authenticate().subject


def _service() -> str:
    return current_app.extensions["settings"].service


def mount_admin(app: Flask, api) -> None:
    """Register the admin routes on ``app`` (and a rate limiter if it has none)."""
    if EXTENSION not in app.extensions:
        create_limiter(app, app.extensions["settings"].rate_limit_storage_uri)
    api.register_blueprint(blp)


@blp.route("/outbox")
class Outbox(MethodView):
    @rate_limit(_admin_rate, key=_caller)
    @blp.response(200, OutboxReportSchema)
    @require_scopes("admin")
    @blp.arguments(OutboxQuerySchema, location="query", unknown=RAISE)
    def get(self, query):
        """Unpublished rows per queue (count, oldest age, failed sends), and the failed rows."""
        with database().transaction() as cur:
            queues = repo.outbox_summary(cur)
            failed = repo.failed_outbox_rows(cur, query["limit"], query["queue"])
        return {"service": _service(), "queues": queues, "failed": failed}


@blp.route("/outbox/retry")
class OutboxRetry(MethodView):
    @rate_limit(_admin_rate, key=_caller)
    @blp.response(200, OutboxRetriedSchema)
    @require_scopes("admin")
    @blp.arguments(OutboxRetrySchema)
    def post(self, payload):
        """Make failed outbox rows due now (each stream still publishes in order)."""
        db = database()
        with db.transaction() as cur:
            retried = repo.retry_outbox_now(cur, db.schema, None if payload["all_failed"]
                                            else payload["ids"])
        log.info("admin_action", action="outbox.retry", who=authenticate().subject,
                 requested=payload["ids"] or "all_failed", retried=len(retried))
        return {"service": _service(), "retried": retried}


@blp.route("/consumers")
class Consumers(MethodView):
    @rate_limit(_admin_rate, key=_caller)
    @blp.response(200, ConsumersSchema)
    @require_scopes("admin")
    def get(self):
        """Each worker process's consumers: alive, last message, handled/failed/dead-lettered."""
        with database().transaction() as cur:
            rows = repo.list_heartbeats(cur, STALE_AFTER_BEATS * DEFAULT_HEARTBEAT_S)
        return {"service": _service(), "consumers": rows}


@blp.route("/groups/blocked")
class BlockedGroups(MethodView):
    @rate_limit(_admin_rate, key=_caller)
    @blp.response(200, BlockedGroupsSchema)
    @require_scopes("admin")
    @blp.arguments(BlockedQuerySchema, location="query", unknown=RAISE)
    def get(self, query):
        """FIFO groups stuck behind a failing head (since when, its last error) or a head
        in flight for long."""
        with database().transaction() as cur:
            failing = repo.list_blocked_groups(cur, query["min_age_s"], query["limit"])
            beats = repo.list_heartbeats(cur, STALE_AFTER_BEATS * DEFAULT_HEARTBEAT_S)
        groups = [{**row, "kind": "failing"} for row in failing]
        for beat in beats:
            if not beat["alive"]:
                continue  # a dead worker's in-flight messages come back to the queue
            for head in beat["slow_heads"]:
                if head["group_id"] and head["in_flight_s"] >= query["min_age_s"]:
                    groups.append({"consumer": beat["consumer"], "group_id": head["group_id"],
                                   "kind": "slow", "blocked_for_s": head["in_flight_s"],
                                   "message_id": head["message_id"]})
        groups.sort(key=lambda g: -g["blocked_for_s"])
        return {"service": _service(), "groups": groups[:query["limit"]]}


@blp.route("/breakers")
class Breakers(MethodView):
    @rate_limit(_admin_rate, key=_caller)
    @blp.response(200, BreakersSchema)
    @require_scopes("admin")
    def get(self):
        """State of every circuit breaker of this API process, and of each live worker process
        (from its heartbeat)."""
        with database().transaction() as cur:
            beats = repo.list_heartbeats(cur, STALE_AFTER_BEATS * DEFAULT_HEARTBEAT_S)
        workers = {beat["worker"]: beat["breakers"] for beat in beats if beat["alive"]}
        return {"service": _service(), "breakers": current_app.extensions["breakers"].snapshot(),
                "workers": [{"worker": worker, "breakers": breakers}
                            for worker, breakers in sorted(workers.items())]}

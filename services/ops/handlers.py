"""What the ops service does: read the queues, work the DLQs, ask each service, keep the audit.

Queues and dead letters are read and moved through SQS directly
(:mod:`shared.messaging.dlq`); outboxes, consumers, blocked groups and breakers
are each service's own, asked over HTTP (:mod:`services.ops.peers`). Every
action that changes something (replay, purge, outbox retry) is written to
the audit log, also when it fails, with who, what, when and the parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from services.ops import repository as repo
from services.ops.peers import Peers, PeerUnavailable
from shared.auth import Principal
from shared.errors import DomainError, NotFound
from shared.messaging import dlq
from shared.messaging.topology import QueueSpec
from shared.queues import TOPOLOGY


class BrokerUnavailable(DomainError):
    """SQS could not be reached or refused the call."""


class ConfirmationMismatch(DomainError):
    """A purge whose ``confirm`` does not name the DLQ it would empty."""


class ServiceUnavailable(DomainError):
    """A service's admin API could not be reached (for an action that needs it)."""


@dataclass(frozen=True)
class Context:
    """Who is acting, and where the dependencies are."""

    db: Any
    sqs: Any
    prefix: str
    peers: Peers
    principal: Principal
    authorization: str
    request_id: str | None


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters to replay; empty means all of them."""

    message_ids: frozenset[str] = frozenset()
    event_type: str | None = None
    order_id: str | None = None
    reason: str | None = None
    limit: int | None = None

    @property
    def everything(self) -> bool:
        return not (self.message_ids or self.event_type or self.order_id or self.reason
                    or self.limit)

    def accepts(self, facts: dict) -> bool:
        return ((not self.message_ids or facts["message_id"] in self.message_ids)
                and (self.event_type is None or facts["event_type"] == self.event_type)
                and (self.order_id is None or facts["order_id"] == self.order_id)
                and (self.reason is None or facts["reason"] == self.reason))


def spec_of(queue_name: str) -> QueueSpec:
    """The topology's queue ``queue_name`` (its DLQ's name is accepted too)."""
    for spec in TOPOLOGY:
        if queue_name in (spec.name, spec.dlq_name):
            return spec
    raise NotFound(f"No queue {queue_name!r} in the topology.")


@contextlib.contextmanager
def _broker() -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise BrokerUnavailable(f"The queue broker could not be used: {type(exc).__name__}.") \
            from None


# -- reads ----------------------------------------------------------------------------------------
def queues(ctx: Context) -> list[dict]:
    """Every queue's and DLQ's counts."""
    with _broker():
        return [{**vars(s), "oldest_age_s": None} for s in dlq.stats(ctx.sqs, TOPOLOGY, ctx.prefix)]


def dead_letters(ctx: Context, queue_name: str, limit: int, wanted: ReplayFilter) -> dict:
    """Up to ``limit`` dead letters of the queue (they stay in the DLQ), with their facts."""
    spec = spec_of(queue_name)
    with _broker():
        seen = [dlq.describe(m) for m in dlq.peek(ctx.sqs, spec, ctx.prefix, limit)]
    shown = [m for m in seen if wanted.accepts(m)]
    failed_at = [m["failed_at"] for m in seen if m["failed_at"]]
    return {"queue": spec.name, "dlq": spec.dlq_name, "dead_letters": shown,
            "oldest_failed_at": min(failed_at) if failed_at else None}


def from_services(ctx: Context, path: str, params: dict | None = None) -> list[dict]:
    """``GET /v1/admin/<path>`` of every service: its answer, or the error reaching it."""
    return [{"service": a.service, "data": a.data, "error": a.error}
            for a in ctx.peers.gather(f"/v1/admin/{path}", ctx.authorization, params)]


def status(ctx: Context) -> dict:
    """Queues, DLQs, outboxes, consumers, breakers and blocked groups on one screen."""
    try:
        queue_rows, queue_error = queues(ctx), None
    except BrokerUnavailable as exc:
        queue_rows, queue_error = [], exc.detail
    return {"queues": queue_rows, "queues_error": queue_error,
            "outbox": from_services(ctx, "outbox", {"limit": 10}),
            "consumers": from_services(ctx, "consumers"),
            "breakers": from_services(ctx, "breakers"),
            "blocked_groups": from_services(ctx, "groups/blocked", {"limit": 20})}


def audit_log(db, limit: int, action: str | None) -> list[dict]:
    """The newest audit entries."""
    with db.transaction() as cur:
        return repo.recent(cur, limit, action)


# -- actions (audited) ---------------------------------------------------------------------------
def _audit(ctx: Context, action: str, target: str, parameters: dict, outcome: str,
           result: dict) -> int:
    with ctx.db.transaction() as cur:
        return repo.record(cur, ctx.principal.subject, ctx.principal.client_id, action, target,
                           parameters, outcome, result, ctx.request_id)


@contextlib.contextmanager
def _audited(ctx: Context, action: str, target: str, parameters: dict) -> Iterator[dict]:
    """Run an action; audit it as ``ok`` with what it filled in, or as ``failed``/``refused``."""
    result: dict = {}
    try:
        yield result
    except ConfirmationMismatch as exc:
        _audit(ctx, action, target, parameters, "refused", {"error": exc.detail})
        raise
    except Exception as exc:
        _audit(ctx, action, target, parameters, "failed",
               {"error": getattr(exc, "detail", type(exc).__name__)})
        raise
    result["audit_id"] = _audit(ctx, action, target, parameters, "ok", dict(result))


def replay(ctx: Context, queue_name: str, wanted: ReplayFilter, parameters: dict) -> dict:
    """Move dead letters back to their source queue, keeping each order's order.

    Everything: SQS's own move task where the backend has it (asynchronous),
    else the portable loop. A filter or a limit: the portable, filtered loop.
    """
    spec = spec_of(queue_name)
    with _audited(ctx, "dlq.replay", spec.dlq_name, parameters) as result, _broker():
        if wanted.everything:
            method, moved = dlq.replay(ctx.sqs, spec, ctx.prefix)
        else:
            method, moved = "portable", dlq.replay_matching(ctx.sqs, spec, wanted.accepts,
                                                            ctx.prefix, wanted.limit)
        result.update({"queue": spec.name, "method": method,
                       "moved": None if moved < 0 else moved})
    return result


def purge(ctx: Context, queue_name: str, confirm: str) -> dict:
    """Empty the queue's DLQ, only when ``confirm`` names that DLQ."""
    spec = spec_of(queue_name)
    with _audited(ctx, "dlq.purge", spec.dlq_name, {"confirm": confirm}) as result:
        if confirm != spec.dlq_name:
            raise ConfirmationMismatch(
                f"To purge, confirm with the DLQ's name: {spec.dlq_name}.",
                errors=[{"field": "confirm", "message": f"Must be {spec.dlq_name}."}])
        with _broker():
            before = dlq.dead_letter_count(ctx.sqs, spec, ctx.prefix)
            dlq.purge(ctx.sqs, spec, ctx.prefix)
        result.update({"queue": spec.name, "dlq": spec.dlq_name, "purged_about": before})
    return result


def retry_outbox(ctx: Context, service_name: str, body: dict) -> dict:
    """Ask ``service_name`` to make its failed outbox rows due now."""
    if service_name not in ctx.peers.clients:
        raise NotFound(f"No service {service_name!r} with an outbox.")
    with _audited(ctx, "outbox.retry", service_name, body) as result:
        try:
            answer = ctx.peers.call(service_name, "POST", "/v1/admin/outbox/retry",
                                    ctx.authorization, json=body)
        except PeerUnavailable as exc:
            raise ServiceUnavailable(f"The {service_name} service: {exc.reason}.") from None
        result.update({"service": service_name, "retried": answer["retried"]})
    return result

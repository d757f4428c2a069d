"""All SQL of the ops service (schema ``ops_svc``): the operators' audit log."""

from __future__ import annotations

import json


def record(cur, actor: str, client_id: str | None, action: str, target: str, parameters: dict,
           outcome: str, result: dict, request_id: str | None) -> int:
    """Append one audit entry; returns its id."""
    cur.execute(
        "INSERT INTO audit_log (actor, client_id, action, target, parameters, outcome, result,"
        " request_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (actor, client_id, action, target, json.dumps(parameters, default=str), outcome,
         json.dumps(result, default=str), request_id),
    )
    return cur.fetchone()["id"]


def recent(cur, limit: int, action: str | None) -> list[dict]:
    """The newest ``limit`` audit entries (of ``action`` only, when given)."""
    cur.execute(
        "SELECT id, at, actor, client_id, action, target, parameters, outcome, result, request_id"
        " FROM audit_log WHERE (%s::text IS NULL OR action = %s) ORDER BY at DESC, id DESC"
        " LIMIT %s",
        (action, action, limit),
    )
    return cur.fetchall()

"""``/health/live`` (the process answers) and ``/health/ready`` (its dependencies do)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, jsonify

Check = Callable[[], None]  # raises when the dependency is not usable
Report = Callable[[], Any]  # returns something JSON-ready for operators


def health_blueprint(checks: dict[str, Check], reports: dict[str, Report] | None = None) -> Blueprint:
    """Health endpoints running ``checks`` (name -> callable) for readiness.

    ``reports`` (name -> callable) are shown in ``/health/ready`` beside the
    checks but never make it fail: e.g. circuit breaker states. An open
    breaker means a peer is unwell, not that this process should leave the
    load balancer (it still answers, quickly, and serves what does not need
    that peer); taking every replica out because one peer is down would
    turn a partial outage into a total one.
    """
    bp = Blueprint("health", __name__)

    @bp.get("/health/live")
    def live():
        return jsonify(status="ok")

    @bp.get("/health/ready")
    def ready():
        results = {}
        healthy = True
        for name, check in checks.items():
            started = time.perf_counter()
            try:
                check()
                results[name] = {"status": "ok"}
            except Exception as exc:  # report, never raise: this is a probe
                healthy = False
                results[name] = {"status": "failing", "error": type(exc).__name__}
            results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
        body: dict[str, Any] = {"status": "ok" if healthy else "failing", "checks": results}
        for name, report in (reports or {}).items():
            try:
                body[name] = report()
            except Exception as exc:  # a broken report must not break the probe
                body[name] = {"error": type(exc).__name__}
        return jsonify(body), 200 if healthy else 503

    return bp


def sqs_check(client, queue_name: str) -> Check:
    """A readiness check that the SQS endpoint answers for ``queue_name``."""

    def check() -> None:
        client.get_queue_url(QueueName=queue_name)

    return check

"""``/health/live`` (the process answers) and ``/health/ready`` (its dependencies do)."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Blueprint, jsonify

Check = Callable[[], None]  # raises when the dependency is not usable


def health_blueprint(checks: dict[str, Check]) -> Blueprint:
    """Health endpoints running ``checks`` (name -> callable) for readiness."""
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
        return jsonify(status="ok" if healthy else "failing", checks=results), (
            200 if healthy else 503)

    return bp


def sqs_check(client, queue_name: str) -> Check:
    """A readiness check that the SQS endpoint answers for ``queue_name``."""

    def check() -> None:
        client.get_queue_url(QueueName=queue_name)

    return check

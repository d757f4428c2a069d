"""What every service's Flask app has: request ids, logging, problem errors,
JSON-only bodies with a size limit, OpenAPI via flask-smorest, health, metrics."""

from __future__ import annotations

import json
import time
import uuid

import flask_smorest
import structlog
from flask import Flask, Response, g, request
from flask_smorest import Api
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from webargs.flaskparser import FlaskParser

from shared.auth import token_settings_from
from shared.errors import Problem, register_problem_handlers
from shared.logging import get_logger
from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_CHARS = 200
_BODY_METHODS = ("POST", "PUT", "PATCH")
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
# app.config key: endpoints that take form bodies (OAuth2 token/revocation, RFC 6749 4.4.2).
FORM_BODY_ENDPOINTS = "FORM_BODY_ENDPOINTS"


class BodyParser(FlaskParser):
    """webargs turns only ``JSONDecodeError`` into a 400. A body nested deeper than the
    recursion limit, or an integer longer than ``int()`` accepts, both fit in 64 KiB and
    would otherwise surface as a 500; they are malformed input like any other."""

    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise
        except (RecursionError, ValueError) as exc:
            raise json.JSONDecodeError(f"unparseable body ({type(exc).__name__})", "<body>", 0) from None


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest Blueprint whose request bodies are parsed by :class:`BodyParser`."""

    ARGUMENTS_PARSER = BodyParser()


class ProblemApi(Api):
    """flask-smorest Api whose errors are problem documents like the rest."""

    def _register_error_handlers(self):  # smorest would register its own JSON errors
        register_problem_handlers(self._app)


def base_app(settings, title: str, version: str = "1.0.0") -> tuple[Flask, ProblemApi]:
    """A Flask app with the shared middleware, and its OpenAPI ``Api``."""
    app = Flask(settings.service)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        API_TITLE=title,
        API_VERSION=version,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        # The Swagger UI page loads its assets from a CDN in the reader's browser.
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        JSON_SORT_KEYS=False,
    )
    app.extensions["settings"] = settings
    app.extensions["token_settings"] = token_settings_from(settings)
    api = ProblemApi(app, spec_kwargs={"components": {"securitySchemes": {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        "security": [{"bearerAuth": []}]})
    service = settings.service

    @app.before_request
    def _start():
        g.started = time.perf_counter()
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if 0 < len(incoming) <= MAX_REQUEST_ID_CHARS and incoming.isprintable() \
            else str(uuid.uuid4())
        g.request_id = request_id
        structlog.contextvars.bind_contextvars(correlation_id=request_id)
        has_body = bool(request.content_length) or "Transfer-Encoding" in request.headers
        if request.method in _BODY_METHODS and has_body:
            expected = FORM_MEDIA_TYPE if request.endpoint in app.config.get(FORM_BODY_ENDPOINTS, ()) \
                else "application/json"
            if request.mimetype != expected:
                raise Problem(415, "Unsupported Media Type",
                              f"Send the body as {expected}.", "unsupported-media-type")
            if (request.content_length or 0) > MAX_BODY_BYTES:
                raise Problem(413, "Payload Too Large",
                              f"The body must be at most {MAX_BODY_BYTES} bytes.",
                              "payload-too-large")

    @app.after_request
    def _finish(response: Response):
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        HTTP_REQUESTS.labels(service, request.method, endpoint, response.status_code).inc()
        HTTP_LATENCY.labels(service, request.method, endpoint).observe(elapsed)
        if not request.path.startswith(("/health", "/metrics")):
            log.info("http_request", method=request.method, path=request.path,
                     status=response.status_code, ms=round(elapsed * 1000, 1))
        return response

    @app.teardown_request
    def _unbind(_exc):
        structlog.contextvars.unbind_contextvars("correlation_id")

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

    return app, api


def allow_form_body(app: Flask, *endpoints: str) -> None:
    """Let ``endpoints`` take ``application/x-www-form-urlencoded`` bodies instead of JSON."""
    app.config[FORM_BODY_ENDPOINTS] = frozenset({*app.config.get(FORM_BODY_ENDPOINTS, ()), *endpoints})


def correlation_id() -> str | None:
    """The current request's correlation id (from X-Request-ID or generated)."""
    return g.get("request_id")

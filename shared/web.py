"""What every service's Flask app has: request ids, logging, problem errors,
JSON-only bodies with a size limit, OpenAPI via flask-smorest, health, metrics."""

from __future__ import annotations

import functools
import json
import time
import uuid
from decimal import Decimal

import structlog
from flask import Flask, Response, current_app, g, request
from marshmallow import Schema
from marshmallow import fields as ma_fields
from webargs.flaskparser import FlaskParser

from shared import openapi, tracecontext
from shared.auth import SCOPES, token_settings_from
from shared.errors import Problem, register_problem_handlers
from shared.logging import get_logger
from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS
from shared.metrics_export import render as render_metrics
from shared.resilience import BreakerRegistry
from shared.server_model import cooperate_with_the_worker

log = get_logger(__name__)

MAX_BODY_BYTES = 64 * 1024
REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_CHARS = 200
_BODY_METHODS = ("POST", "PUT", "PATCH")
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
# Every response: an API answers JSON and is never framed, sniffed or given a referrer.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
}
# The Swagger UI page: assets from this app (shared/openapi.py), one inline script.
DOCS_PATH = "/docs"
HSTS = "max-age=31536000; includeSubDomains"
# CORS for browser clients: only the origins in CORS_ALLOWED_ORIGINS, bearer tokens (no cookies).
CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "Last-Event-ID"]
CORS_EXPOSE_HEADERS = ["Location", "Retry-After", "X-Request-ID", "Idempotent-Replayed", "WWW-Authenticate"]
CORS_MAX_AGE_S = 600
# app.config key: endpoints that take form bodies (OAuth2 token/revocation, RFC 6749 4.4.2).
FORM_BODY_ENDPOINTS = "FORM_BODY_ENDPOINTS"


class BodyParser(FlaskParser):
    """webargs turns only ``JSONDecodeError`` into a 400. A body nested deeper than the
    recursion limit, or an integer longer than ``int()`` accepts, both fit in 64 KiB and
    would otherwise surface as a 500; they are malformed input like any other.

    Given a schema class (``@blp.arguments(CreateOrderSchema)``), webargs builds a
    new instance — deep-copying its declared and nested fields — on every request;
    that was ~5 % of the order API's CPU at peak (py-spy). Schemas hold no
    per-request state, so one instance per class serves every request."""

    def _get_schema(self, argmap, req):
        if isinstance(argmap, type) and issubclass(argmap, Schema):
            return _schema_instance(argmap)
        return super()._get_schema(argmap, req)

    def _raw_load_json(self, req):
        try:
            data = super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise
        except (RecursionError, ValueError) as exc:
            raise json.JSONDecodeError(f"unparseable body ({type(exc).__name__})", "<body>", 0) from None
        if _has_nul(data):  # PostgreSQL text cannot hold NUL: refuse it here, not with a 500 there
            raise json.JSONDecodeError("NUL character in a string", "<body>", 0)
        return data


def _has_nul(node) -> bool:
    if isinstance(node, str):
        return "\x00" in node
    if isinstance(node, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in node.items())
    if isinstance(node, list):
        return any(_has_nul(v) for v in node)
    return False


@functools.cache
def _schema_instance(schema_class: type[Schema]) -> Schema:
    return schema_class()


class Blueprint(openapi.DocumentedBlueprint):
    """flask-smorest Blueprint whose request bodies are parsed by :class:`BodyParser` and
    whose operations document their problems and security (:mod:`shared.openapi`)."""

    ARGUMENTS_PARSER = BodyParser()


class ProblemApi(openapi.ProblemDocsApi):
    """flask-smorest Api whose errors are problem documents like the rest."""

    def _register_error_handlers(self):  # smorest would register its own JSON errors
        register_problem_handlers(self._app)

    def _openapi_json(self):
        """The OpenAPI document, with bounds on decimal strings made valid JSON Schema."""
        return Response(json.dumps(valid_bounds(self.spec.to_dict()), indent=2, default=str),
                        mimetype="application/json")


def _decimal_as_string(_converter, field, **_kwargs) -> dict:
    """apispec documents every Decimal as a number; ``as_string`` ones are sent as strings."""
    if isinstance(field, ma_fields.Decimal) and field.as_string:
        return {"type": "string", "format": "decimal"}
    return {}


def valid_bounds(node):
    """Fix what apispec emits for ``Decimal(as_string=True)`` fields with a Range.

    It writes ``{"type": "string", "minimum": Decimal(...)}``: JSON Schema
    bounds apply to numbers only, and tools such as schemathesis reject the
    document. The bounds move to ``x-minimum`` / ``x-maximum`` (still
    documented; enforced by the marshmallow validator as before), and Decimal
    bounds of numeric fields become plain numbers.
    """
    if isinstance(node, list):
        return [valid_bounds(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: valid_bounds(value) for key, value in node.items()}
    for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if bound not in out or isinstance(out[bound], bool):
            continue
        if out.get("type") == "string":
            out[f"x-{bound}"] = str(out.pop(bound))
        elif isinstance(out[bound], Decimal | str):  # apispec may already have made it a string
            value = Decimal(str(out[bound]))
            out[bound] = int(value) if value == value.to_integral_value() else float(value)
    return out


def base_app(settings, title: str, version: str = "1.0.0") -> tuple[Flask, ProblemApi]:
    """A Flask app with the shared middleware, and its OpenAPI ``Api``."""
    cooperate_with_the_worker()  # before the app opens its database pool
    # No static folder: an API serves no files (Flask would serve ./static of the working directory).
    app = Flask(settings.service, static_folder=None)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        API_TITLE=title,
        API_VERSION=version,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        JSON_SORT_KEYS=False,
        **openapi.docs_config(DOCS_PATH),
    )
    app.extensions["settings"] = settings
    breakers = app.extensions.setdefault("breakers", BreakerRegistry(settings.env))
    app.extensions["token_settings"] = token_settings_from(settings, breakers)
    _enable_cors(app, settings)
    token_endpoint = openapi.token_url(settings)
    api = ProblemApi(app, spec_kwargs={"components": {
        "securitySchemes": openapi.security_schemes(SCOPES, token_endpoint)}})
    openapi.serve_docs_assets(app)
    docs_csp = openapi.docs_csp(token_endpoint)
    api.ma_plugin.converter.add_attribute_function(_decimal_as_string)
    service = settings.service

    @app.before_request
    def _start():
        g.started = time.perf_counter()
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if 0 < len(incoming) <= MAX_REQUEST_ID_CHARS and incoming.isprintable() \
            else str(uuid.uuid4())
        g.request_id = request_id
        structlog.contextvars.bind_contextvars(correlation_id=request_id)
        # The caller's trace continued (or a new one): in the logs and in every event written.
        g.trace, g.trace_entered = tracecontext.begin(request.headers.get(tracecontext.TRACEPARENT_HEADER))
        if any("\x00" in value for value in request.args.values()):
            raise Problem(400, "Bad Request", "Query parameters must not contain NUL characters.",
                          "bad-request")
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
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.path == DOCS_PATH:
            response.headers["Content-Security-Policy"] = docs_csp
        # Browsers ignore HSTS received over plain HTTP (RFC 6797 8.1), so local runs are unaffected.
        response.headers.setdefault("Strict-Transport-Security", HSTS)
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
        entered = g.pop("trace_entered", None)
        if entered is not None:
            tracecontext.end(entered)
        structlog.contextvars.unbind_contextvars("correlation_id")

    @app.get("/metrics")
    def metrics():
        # Every gunicorn process' figures when PROMETHEUS_MULTIPROC_DIR is set (shared.metrics_export).
        body, content_type = render_metrics()
        return Response(body, content_type=content_type)

    return app, api


def _enable_cors(app: Flask, settings) -> None:
    origins = list(settings.cors_allowed_origins)
    if not origins:
        return
    from flask_cors import CORS

    CORS(app, origins=origins, allow_headers=CORS_ALLOW_HEADERS, expose_headers=CORS_EXPOSE_HEADERS,
         supports_credentials=False, max_age=CORS_MAX_AGE_S)


def allow_form_body(app: Flask, *endpoints: str) -> None:
    """Let ``endpoints`` take ``application/x-www-form-urlencoded`` bodies instead of JSON."""
    app.config[FORM_BODY_ENDPOINTS] = frozenset({*app.config.get(FORM_BODY_ENDPOINTS, ()), *endpoints})


def database():
    """The current app's database (every app factory puts it in ``app.extensions["db"]``)."""
    return current_app.extensions["db"]


def correlation_id() -> str | None:
    """The current request's correlation id (from X-Request-ID or generated)."""
    return g.get("request_id")

"""OpenAPI documents that say what the responses really are.

Every error of every API is an RFC 9457 ``application/problem+json`` document
(:mod:`shared.errors`), so every operation declares its error statuses with
the :data:`PROBLEM_SCHEMA` under that media type, never flask-smorest's
``Error`` object under ``application/json``. The statuses are worked out per
operation from what the view is declared with, so a new endpoint is covered
without listing them by hand, and each one is true for that operation:

====  ==========================================================================
400   a JSON body (malformed JSON) or query parameters (NUL characters, bad cursors)
401   a scope decorator (``shared.auth.require_scopes`` / ``require_any_scope``)
403   the same: the token lacks the scope (``WWW-Authenticate: insufficient_scope``)
404   a path parameter (a value the route refuses, or no such resource)
413   a method with a body (POST, PUT, PATCH) beyond ``MAX_BODY_BYTES``
415   the same, with a body of another media type
422   a request schema (``blp.arguments``) the request does not satisfy
429   a rate limit (``shared.ratelimit.rate_limit``), with ``Retry-After``
500   every operation (an unexpected error, logged, said in a generic problem)
503   every operation: the database is unreachable (``database-unavailable``), or
      for a scope decorator the auth service's keys cannot be had (``Retry-After``)
====  ==========================================================================

Conflicts (409) and other refusals of a domain rule are declared where they
are raised, with ``blp.alt_response``; their body becomes the problem schema
here too, unless the view documents a body of its own (the OAuth2 endpoints
answer RFC 6749 errors). Response headers are declared on the responses that
carry them: the generic ones here (``X-Request-ID`` on every response,
``WWW-Authenticate``, ``Retry-After``), the others on the view's decorator
with :func:`response_headers` (``Location``, ``Idempotent-Replayed``, ...).

Security: an OAuth2 scheme whose flows point at the auth service's token
endpoint (client credentials, and the password grant of first-party
clients), required per operation with the scopes its decorator names, and a
plain bearer scheme for a token obtained elsewhere. The docs page (Swagger UI)
is served from the ``flask-swagger-ui`` package's files: nothing is loaded
from another origin except the token request to the auth service.
"""

from __future__ import annotations

import http
import re
from pathlib import Path

import flask_smorest
from flask import Flask, send_from_directory
from flask.views import MethodView

from shared.errors import PROBLEM_MEDIA_TYPE

PROBLEM_SCHEMA_NAME = "Problem"
PROBLEM_REF = {"$ref": f"#/components/schemas/{PROBLEM_SCHEMA_NAME}"}
OAUTH2 = "oauth2"
BEARER = "bearerAuth"
# A scope decorator leaves this attribute on the view: ("all" | "any", scopes).
SCOPES_ATTRIBUTE = "required_scopes"
# shared.ratelimit.rate_limit leaves its declarations on the view under this name.
RATE_LIMITS_ATTRIBUTE = "_rate_limits"
BODY_METHODS = ("post", "put", "patch")
DOCS_ASSETS_PATH = "/docs/assets"
# Swagger UI's files, as the flask-swagger-ui wheel ships them (pinned in pyproject.toml).
ASSETS_PACKAGE = "flask_swagger_ui"
ASSETS_MAX_AGE_S = 3600

PROBLEM_SCHEMA = {
    "type": "object",
    "description": "RFC 9457 problem details. Members beyond these are facts of the problem "
                   "type (e.g. `lines` for insufficient-stock, `retry_after_s`).",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A stable URI reference naming the problem, "
                                                  "e.g. `/problems/validation-error`."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "nullable": True, "description": "The request path."},
        "errors": {
            "type": "array",
            "description": "The request fields at fault (dotted paths; `_body` for the whole body).",
            "items": {"type": "object", "required": ["field", "message"],
                      "properties": {"field": {"type": "string"}, "message": {"type": "string"}}},
        },
    },
    "additionalProperties": True,
}

# The response headers the APIs send, by name. ``required`` on a declaration means
# "always present on that response", which schemathesis' header check holds us to.
HEADERS: dict[str, dict] = {
    "X-Request-ID": {"description": "The request's correlation id (the one sent, or a new one).",
                     "schema": {"type": "string"}},
    "Location": {"description": "Where the created resource is.",
                 "schema": {"type": "string", "format": "uri-reference"}},
    "Idempotent-Replayed": {"description": "`true` when this is the stored response of an earlier "
                                           "request with the same Idempotency-Key.",
                            "schema": {"type": "string", "enum": ["true"]}},
    "Retry-After": {"description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 1}},
    "WWW-Authenticate": {"description": "The authentication challenge (RFC 6750 3.1).",
                         "schema": {"type": "string"}},
    "Cache-Control": {"description": "How long the response may be cached.",
                      "schema": {"type": "string"}},
    "ETag": {"description": "The entity tag of the representation.", "schema": {"type": "string"}},
    "Link": {"description": "RFC 8288 links (e.g. the next page).", "schema": {"type": "string"}},
}

# Headers every response of a status carries, besides X-Request-ID.
_STATUS_HEADERS = {401: ("WWW-Authenticate",), 403: ("WWW-Authenticate",), 429: ("Retry-After",),
                   503: ("Retry-After",)}
_NOTES = {
    400: "Malformed request (unparseable JSON, a NUL character, a bad cursor or header).",
    401: "No valid bearer token.",
    403: "The token lacks a required scope.",
    404: "No such resource (or not yours).",
    413: "The body is too large.",
    415: "The body is not of the media type this operation takes.",
    422: "Invalid fields; `errors` names each.",
    429: "Rate limited; see Retry-After.",
    500: "Unexpected error (logged; the problem says nothing more).",
    503: "A dependency is unavailable (the database, or the token keys); see Retry-After.",
}


def header_ref(name: str) -> dict:
    """A reference to the declaration of header ``name`` as always present (components/headers)."""
    if name not in HEADERS:
        raise KeyError(f"undeclared response header {name!r} (known: {', '.join(HEADERS)})")
    return {"$ref": f"#/components/headers/{name}"}


def response_headers(*always: str, sometimes: tuple[str, ...] = ()) -> dict[str, dict]:
    """Header declarations for a response: ``always`` present on it, or only ``sometimes``.

    For the ``headers=`` of ``blp.response`` / ``blp.alt_response``.
    """
    declared = {name: header_ref(name) for name in always}
    declared.update({name: {**HEADERS[name], "required": False} for name in sometimes})
    return declared


def scope_requirement(view, mode: str, scopes: tuple[str, ...]):
    """Mark ``view`` as guarded by ``scopes`` (``mode`` "all" or "any"), for its document."""
    setattr(view, SCOPES_ATTRIBUTE, (mode, tuple(scopes)))
    return view


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


class DocumentedBlueprint(flask_smorest.Blueprint):
    """A flask-smorest Blueprint whose operations document their problems and security.

    At registration it notes what each view is declared with (scopes, rate
    limits, path parameters); when the document is built,
    :meth:`_prepare_problem_doc` turns that into responses and security.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._prepare_doc_cbks.append(self._prepare_problem_doc)

    def add_url_rule(self, rule, endpoint=None, view_func=None, provide_automatic_options=None,
                     **options):
        super().add_url_rule(rule, endpoint, view_func, provide_automatic_options, **options)
        endpoint = self._endpoints[-1]  # smorest may have made the name unique
        has_path_parameters = "<" in (self.url_prefix or "") + rule
        for method, doc in self._docs[endpoint].items():
            if method == "parameters":
                continue
            function = getattr(view_func, method) if isinstance(view_func, type(MethodView)) \
                else view_func
            doc["facts"] = {
                "operation_id": f"{self.name}_{_snake(endpoint)}_{method}",
                "scopes": getattr(function, SCOPES_ATTRIBUTE, None),
                "rate_limited": bool(getattr(function, RATE_LIMITS_ATTRIBUTE, None)),
                "path_parameters": has_path_parameters,
            }

    @staticmethod
    def _prepare_problem_doc(doc, doc_info, *, method, **_kwargs):
        facts = doc_info.get("facts")
        if facts is None:  # a route added some other way: leave its doc as smorest made it
            return doc
        doc.setdefault("operationId", facts["operation_id"])
        responses = doc.setdefault("responses", {})
        for status in sorted(_error_statuses(doc, facts, method) | _declared_errors(responses)):
            responses[str(status)] = _problem_response(status, responses.get(str(status),
                                                                              responses.get(status)))
            responses.pop(status, None)
        for response in responses.values():
            if isinstance(response, dict):
                response.setdefault("headers", {}).setdefault("X-Request-ID", header_ref("X-Request-ID"))
        doc["security"] = _security(facts["scopes"])
        return doc


def _declared_errors(responses: dict) -> set[int]:
    return {int(status) for status in responses if str(status).isdigit() and int(status) >= 400}


def _error_statuses(doc: dict, facts: dict, method: str) -> set[int]:
    # Any operation may find its database gone (answered 503 with Retry-After).
    statuses = {500, 503}
    parameters = doc.get("parameters", [])
    has_json_body = "application/json" in doc.get("requestBody", {}).get("content", {})
    if has_json_body or any(p.get("in") == "query" for p in parameters if isinstance(p, dict)):
        statuses.add(400)
    if has_json_body or parameters:
        statuses.add(422)
    if facts["scopes"]:
        statuses |= {401, 403}
    if facts["path_parameters"]:
        statuses.add(404)
    if method in BODY_METHODS:
        statuses |= {413, 415}
    if facts["rate_limited"]:
        statuses.add(429)
    return statuses


def _problem_response(status: int, declared) -> dict:
    """The response for ``status``: the declared one, with the problem body unless it has its own."""
    response = dict(declared) if isinstance(declared, dict) else {}
    phrase = http.HTTPStatus(status).phrase
    if not response.get("description") or response["description"] == phrase:
        response["description"] = _NOTES.get(status, phrase)
    if "content" in response:  # a body of its own (e.g. RFC 6749 errors): the view knows best
        return response
    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}
    headers = response.setdefault("headers", {})
    for name in _STATUS_HEADERS.get(status, ()):
        headers.setdefault(name, header_ref(name))
    return response


def _security(requirement) -> list[dict]:
    """OpenAPI security of an operation guarded by ``requirement`` (none: public)."""
    if not requirement:
        return []
    mode, scopes = requirement
    alternatives = [{OAUTH2: list(scopes)}] if mode == "all" else [{OAUTH2: [s]} for s in scopes]
    return [*alternatives, {BEARER: []}]


class ProblemDocsApi(flask_smorest.Api):
    """A flask-smorest Api that documents problems, not smorest's ``Error`` object."""

    DEFAULT_ERROR_RESPONSE_NAME = None  # each operation lists its own statuses instead

    def _register_responses(self):
        # The named responses (``response="NOT_FOUND"``, the 422 of ``arguments``) as problems.
        self.spec.components.schema(PROBLEM_SCHEMA_NAME, PROBLEM_SCHEMA)
        for name, header in HEADERS.items():
            self.spec.components.header(name, {**header, "required": True})
        for status in http.HTTPStatus:
            if status >= 400:
                self.spec.components.response(status.name, _problem_response(status, None), lazy=True)


def token_url(settings) -> str:
    """The auth service's token endpoint, as a browser on the docs page reaches it.

    ``DOCS_TOKEN_URL`` when the services reach the auth service at an address
    browsers cannot (an internal host name); else the ``AUTH_URL`` peer.
    """
    from shared.services import service

    if settings.docs_token_url:
        return settings.docs_token_url
    base = settings.peers.get("auth") or service("auth").local_url()
    return base.rstrip("/") + "/oauth/token"


def security_schemes(scopes: tuple[str, ...], url: str) -> dict[str, dict]:
    """The OAuth2 scheme (client credentials and password flows at ``url``) and bearer."""
    described = {scope: f"`{scope}`" for scope in scopes}
    return {
        OAUTH2: {"type": "oauth2", "description": "Tokens from the auth service's token endpoint.",
                 "flows": {"clientCredentials": {"tokenUrl": url, "scopes": described},
                           "password": {"tokenUrl": url, "scopes": described}}},
        BEARER: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                 "description": "An access token obtained elsewhere (e.g. `orderctl token`)."},
    }


def docs_config(docs_path: str) -> dict:
    """Flask config for the Swagger UI page at ``docs_path``, its assets served by the app."""
    return {
        "OPENAPI_SWAGGER_UI_PATH": docs_path,
        "OPENAPI_SWAGGER_UI_URL": DOCS_ASSETS_PATH + "/",
        # No validator badge: it would send the document to validator.swagger.io.
        "OPENAPI_SWAGGER_UI_CONFIG": {"validatorUrl": None, "persistAuthorization": False},
    }


def docs_csp(token_endpoint: str) -> str:
    """The docs page's Content-Security-Policy: its own assets, and the token request."""
    origin = "/".join(token_endpoint.split("/")[:3])
    return ("default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data:; connect-src 'self' {origin}; frame-ancestors 'none'; "
            "base-uri 'none'")


def assets_dir() -> Path:
    """Where the installed Swagger UI files are."""
    import importlib.util

    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{ASSETS_PACKAGE} is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "dist"


def serve_docs_assets(app: Flask) -> None:
    """Serve Swagger UI's files under :data:`DOCS_ASSETS_PATH` from the installed package."""
    directory = assets_dir()

    @app.get(DOCS_ASSETS_PATH + "/<path:filename>", endpoint="docs_assets")
    def docs_assets(filename: str):
        response = send_from_directory(directory, filename, max_age=ASSETS_MAX_AGE_S)
        response.headers["Cache-Control"] = f"public, max-age={ASSETS_MAX_AGE_S}"
        return response

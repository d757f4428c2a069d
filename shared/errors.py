"""RFC 9457 ``application/problem+json`` errors for every failure an API reports.

Two kinds of error reach the HTTP layer:

* :class:`DomainError` subclasses, raised by a service's handlers when a rule
  refuses a command. They say what went wrong in the domain's terms (a
  detail, the facts a caller needs, the offending fields) and nothing about
  HTTP. Each service's views declare one :class:`ProblemMap` saying which
  problem (status, title, type, headers) answers each of them.
* :class:`Problem`, raised by the HTTP layer itself (authentication, request
  parsing, rate limits), and werkzeug/flask-smorest HTTPExceptions.

:func:`register_problem_handlers` turns Problems, HTTPExceptions and any
unexpected exception into a problem document. Unexpected exceptions are
logged with their traceback and answered with a generic 500 that leaks nothing,
except that the database being unreachable (a lost or refused connection,
:func:`shared.db.connection_lost`, or no pooled connection free in time) is no
bug: it is answered 503 ``database-unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

from shared.db import PoolExhausted, connection_lost
from shared.logging import get_logger

log = get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"

# Stable problem types, by HTTP status, for errors raised by the framework.
_DEFAULT_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "too-many-requests",
    500: "internal-error",
    503: "service-unavailable",
}
# A database restart takes a few seconds; a client retrying sooner meets it still down.
DATABASE_RETRY_AFTER_S = 2


class Problem(Exception):
    """An error the API reports deliberately."""

    def __init__(self, status: int, title: str, detail: str, type_: str | None = None,
                 errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None,
                 **extensions: Any):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_ or _DEFAULT_TYPES.get(status, "error")
        self.errors = errors
        self.headers = headers or {}
        self.extensions = extensions


class DomainError(Exception):
    """A command refused by a rule of its service, said without HTTP.

    ``detail`` is the sentence a caller reads; ``errors`` the request fields
    at fault (``[{field, message}]``); ``facts`` extra members of the problem
    document (e.g. ``status_now``).
    """

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None, **facts: Any):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.facts = facts


class NotFound(DomainError):
    """No such thing, or one the caller may not see (so ids cannot be probed)."""


# How a ProblemMap answers one error class: (status, title, type), the problem's
# detail, errors and facts taken from the DomainError; or a function building the Problem.
ProblemRule = tuple[int, str, str] | Callable[[Exception], Problem]


class ProblemMap:
    """The problem document each error class of one service is answered with.

    Lookup follows the class hierarchy (the most specific rule wins), as
    Flask's own error handlers do; an error without a rule is unexpected and
    answered like any other (a logged 500).
    """

    def __init__(self, rules: Mapping[type[Exception], ProblemRule]):
        self.rules = {NotFound: (404, "Not Found", "not-found"), **rules}

    def problem(self, exc: Exception) -> Problem:
        """The Problem that answers ``exc`` (LookupError if none is declared for it)."""
        for cls in type(exc).__mro__:
            rule = self.rules.get(cls)
            if rule is None:
                continue
            if callable(rule):
                return rule(exc)
            status, title, type_ = rule
            return Problem(status, title, exc.detail, type_, errors=exc.errors, **exc.facts)
        raise LookupError(f"no problem declared for {type(exc).__name__}")

    def register(self, app: Flask) -> None:
        """Answer each declared error class raised in ``app``'s views with its problem."""
        def answer(exc: Exception):
            return problem_response(self.problem(exc))

        for cls in self.rules:
            app.register_error_handler(cls, answer)


def flatten_field_errors(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """Turn marshmallow's nested messages into ``[{field, message}]`` (dotted paths)."""
    out: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.extend(flatten_field_errors(value, path))
    elif isinstance(messages, list | tuple):
        if all(isinstance(m, str) for m in messages):
            out.extend({"field": prefix or "_body", "message": m} for m in messages)
        else:
            for item in messages:
                out.extend(flatten_field_errors(item, prefix))
    else:
        out.append({"field": prefix or "_body", "message": str(messages)})
    return out


def problem_response(problem: Problem) -> Response:
    """Render ``problem`` as an ``application/problem+json`` response."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.path if request else None,
    }
    if problem.errors:
        body["errors"] = problem.errors
    body.update(problem.extensions)
    response = Response(json.dumps(body), status=problem.status, mimetype=PROBLEM_MEDIA_TYPE)
    for key, value in problem.headers.items():
        response.headers[key] = value
    return response


def _from_http_exception(exc: HTTPException) -> Problem:
    status = exc.code or 500
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages")
    errors = None
    detail = exc.description or exc.name
    if messages:
        # webargs nests by location ({"json": {...}}, {"query": {...}}): keep the field paths.
        if isinstance(messages, dict) and len(messages) == 1:
            location, inner = next(iter(messages.items()))
            errors = flatten_field_errors(inner)
            if location == "json" and status == 400:
                return Problem(400, "Malformed request body", "The request body is not valid JSON.",
                               "malformed-json", errors)
        else:
            errors = flatten_field_errors(messages)
        detail = "The request has invalid fields; see errors."
    headers = {}
    if status == 405 and exc.get_response().headers.get("Allow"):
        headers["Allow"] = exc.get_response().headers["Allow"]
    title = {422: "Validation failed"}.get(status, exc.name)
    return Problem(status, title, detail, errors=errors, headers=headers)


def database_unavailable() -> Problem:
    """The 503 for a request the database could not serve (it is down, restarting or saturated)."""
    return Problem(503, "Service Unavailable",
                   "The database is unavailable right now; retry later.", "database-unavailable",
                   headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})


def register_problem_handlers(app: Flask) -> None:
    """Make every error of ``app`` a problem document."""

    @app.errorhandler(Problem)
    def _problem(exc: Problem):
        return problem_response(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        return problem_response(_from_http_exception(exc))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, HTTPException):
            return problem_response(_from_http_exception(exc))
        if connection_lost(exc) or isinstance(exc, PoolExhausted):
            # Transient and nobody's bug: one line, no traceback; the client retries.
            log.warning("database_unavailable", path=request.path, error=type(exc).__name__,
                        detail=str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            return problem_response(database_unavailable())
        log.exception("unhandled_exception", path=request.path)
        return problem_response(Problem(500, "Internal Server Error",
                                        "An unexpected error occurred; it has been logged."))

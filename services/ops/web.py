"""The web pages: the operator console (``/console``) and the customer tracking page
(``/track``), their static files, their settings, and sign-in.

Plain HTML, CSS and JavaScript modules from ``services/ops/static`` (no build
step, nothing from a CDN). The pages talk to the APIs directly with a bearer
token held in memory (sessionStorage at most): the console to this service's
``/v1/ops``, the tracking page to the order and notification APIs (CORS), and
the live timeline opens the notification stream with a single-use ticket.

Sign-in (``POST /web/session``): the page sends a user name and password; this
service asks the auth service for a token with the page's first-party client
(password grant, RFC 6749 4.3) and answers only the access token. The client
secret never reaches the browser; the refresh token that comes with it is
dropped, not revoked: revoking it would also deny the access token just issued
from the same grant. A page signs in again when its token expires.

Why here and not in the notification service: one origin serves both pages and
their sign-in; the notification API stays an API (gevent, long-lived streams).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory
from marshmallow import ValidationError, fields, validate

from shared.errors import Problem, flatten_field_errors
from shared.logging import get_logger
from shared.queues import queue
from shared.ratelimit import rate_limit
from shared.resilience import BreakerOpen, ResilientHttp, TransientHttpError
from shared.schemas import StrictSchema
from shared.services import service
from shared.settings import secret_value

log = get_logger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
PAGES = {"console": "console.html", "track": "track.html"}
# The page names the app it signs in to; each has its own first-party client.
APPS = ("console", "tracking")
SIGN_IN_RATE = "OPS_WEB_SIGN_IN_RATE_LIMIT"
AUTH_TIMEOUT_S = 5.0
MAX_USERNAME_CHARS = 254
MAX_PASSWORD_CHARS = 256
# The queue whose events become the customers' notifications (shared/queues.py).
CUSTOMER_EVENTS = "order-status.fifo"

web = Blueprint("web", __name__)


class SignInSchema(StrictSchema):
    app = fields.String(required=True, validate=validate.OneOf(APPS))
    username = fields.String(required=True, validate=validate.Length(1, MAX_USERNAME_CHARS))
    password = fields.String(required=True, validate=validate.Length(1, MAX_PASSWORD_CHARS))


def _settings():
    return current_app.extensions["web_settings"]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def api_urls() -> dict[str, str]:
    """The API base URLs the browser uses (public ones if configured, else the peers')."""
    settings, peers = _settings(), current_app.extensions["settings"].peers

    def url(name: str, configured: str | None) -> str:
        return (configured or peers.get(name) or service(name).local_url()).rstrip("/")

    return {"order": url("order", settings.order_url),
            "notification": url("notification", settings.notification_url)}


def page_csp() -> str:
    """Scripts, styles and images from this origin only; calls to this origin and the APIs."""
    connect = " ".join(["'self'", *sorted({_origin(u) for u in api_urls().values()})])
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src {connect}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _static_response(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = page_csp()
    response.headers["Cache-Control"] = "no-cache"  # revalidate: a new release shows at once
    return response


@web.get("/console")
def console_page():
    """The operator console (signs in with the admin scope)."""
    return _static_response(send_from_directory(STATIC_DIR, PAGES["console"]))


@web.get("/track")
def tracking_page():
    """The customer's order-tracking page."""
    return _static_response(send_from_directory(STATIC_DIR, PAGES["track"]))


@web.get("/web/static/<path:name>")
def static_file(name: str):
    """The pages' CSS and JavaScript modules (send_from_directory refuses ``..``)."""
    return _static_response(send_from_directory(STATIC_DIR, name))


@web.get("/web/config")
def web_config():
    """Where the pages find the APIs (no secret in here)."""
    # The stream's event names (EventSource needs one listener per name), from the topology.
    return jsonify({"api": api_urls(), "stream_event_types": list(queue(CUSTOMER_EVENTS).event_types)})


def _sign_in_rate() -> str:
    return current_app.config[SIGN_IN_RATE]


def _auth_client() -> ResilientHttp:
    return current_app.extensions["web_auth"]


def _client_of(app: str) -> tuple[str, str]:
    settings = _settings()
    client_id, secret = ((settings.console_client_id, settings.console_client_secret) if app == "console"
                         else (settings.tracking_client_id, settings.tracking_client_secret))
    if secret is None:
        raise Problem(503, "Sign-in unavailable", "This page has no sign-in client configured "
                      "(OPS_WEB_*_CLIENT_SECRET).", "sign-in-unavailable")
    return client_id, secret_value(secret)


@web.post("/web/session")
@rate_limit(_sign_in_rate)
def sign_in():
    """Exchange a user name and password for an access token of the page's client."""
    try:
        form = SignInSchema().load(request.get_json(silent=False) or {})
    except ValidationError as exc:
        raise Problem(422, "Validation failed", "The request has invalid fields; see errors.",
                      "validation-error", errors=flatten_field_errors(exc.messages)) from None
    client = _client_of(form["app"])
    try:
        answer = _auth_client().request("POST", "/oauth/token", auth=client, data={
            "grant_type": "password", "username": form["username"], "password": form["password"]})
    except (BreakerOpen, TransientHttpError, requests.RequestException):
        raise Problem(503, "Sign-in unavailable", "The auth service cannot be reached; retry "
                      "shortly.", "service-unavailable", headers={"Retry-After": "5"}) from None
    if answer.status_code != 200:
        # invalid_grant (wrong password, locked out) and the rest: one answer, nothing to probe.
        raise Problem(401, "Sign-in failed", "Wrong user name or password, or the account may "
                      "not sign in here right now.", "sign-in-failed")
    token = answer.json()
    # The refresh token is dropped here, not revoked: revoking it would also deny every access
    # token of its grant (the auth service's deny-list), i.e. the one handed to the page. It
    # never leaves this process and expires on its own (AUTH_REFRESH_TOKEN_TTL_S).
    return jsonify({"access_token": token["access_token"], "token_type": "Bearer",
                    "expires_in": token.get("expires_in"), "scope": token.get("scope", "")})


def mount_web(app, web_settings) -> None:
    """Serve the pages and sign-in on ``app`` (the ops service)."""
    settings = app.extensions["settings"]
    auth_url = settings.peers.get("auth") or service("auth").local_url()
    app.extensions["web_settings"] = web_settings
    app.extensions["web_auth"] = ResilientHttp(auth_url, app.extensions["breakers"].get("ops-auth"),
                                               AUTH_TIMEOUT_S, attempts=1)
    app.config[SIGN_IN_RATE] = web_settings.sign_in_rate_limit
    app.register_blueprint(web)

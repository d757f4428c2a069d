"""HTTP calls of orderctl: every failure becomes one :class:`CtlError` with an exit code."""

from __future__ import annotations

from typing import Any

import requests

from orderctl.config import IDENTITIES, Endpoints, credentials_path, load_credentials

TIMEOUT_S = 30  # a replay chunk can take a while on a loaded broker

# Exit codes (README "Operating it"); click itself exits 2 on a usage error.
OK = 0
REFUSED = 1        # the API answered with a problem (bad input, not found, conflict)
USAGE = 2
UNREACHABLE = 3    # a service or the broker cannot be reached (connection, timeout, 503)
UNAUTHORIZED = 4   # no token could be had, or it was refused (401/403)


class CtlError(Exception):
    """One line for the operator, and the exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _problem_line(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} {response.reason}"
    if not isinstance(body, dict):
        return f"{response.status_code} {response.reason}"
    if "error" in body and "title" not in body:  # an OAuth2 error (RFC 6749 5.2)
        return f"{response.status_code} {body['error']}: {body.get('error_description', '')}"
    line = f"{response.status_code} {body.get('title', response.reason)}: {body.get('detail', '')}"
    fields = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in body.get("errors") or [])
    return f"{line} ({fields})" if fields else line


class Api:
    """The APIs orderctl uses, with one token."""

    def __init__(self, endpoints: Endpoints, token: str | None, session=None):
        self.endpoints = endpoints
        self.token = token
        self.session = session or requests.Session()

    def call(self, base: str, method: str, path: str, what: str, **kwargs) -> Any:
        """``method base+path``; the JSON body of a 2xx, else a :class:`CtlError`."""
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            response = self.session.request(method, f"{base}{path}", headers=headers,
                                            timeout=TIMEOUT_S, **kwargs)
        except requests.RequestException as exc:
            raise CtlError(f"{what} unreachable at {base} ({type(exc).__name__})",
                           UNREACHABLE) from None
        if response.status_code < 300:
            try:
                return response.json()
            except ValueError:
                raise CtlError(f"{what} at {base} answered something that is not JSON",
                               UNREACHABLE) from None
        code = {401: UNAUTHORIZED, 403: UNAUTHORIZED}.get(response.status_code)
        if code is None:
            code = UNREACHABLE if response.status_code in (502, 503, 504) else REFUSED
        raise CtlError(f"{what}: {_problem_line(response)}", code)

    def ops(self, method: str, path: str, **kwargs) -> Any:
        return self.call(self.endpoints.ops, method, f"/v1/ops{path}", "ops service", **kwargs)

    def order(self, method: str, path: str, **kwargs) -> Any:
        return self.call(self.endpoints.order, method, path, "order service", **kwargs)

    def inventory(self, method: str, path: str, **kwargs) -> Any:
        return self.call(self.endpoints.inventory, method, path, "inventory service", **kwargs)

    def payment(self, method: str, path: str, **kwargs) -> Any:
        return self.call(self.endpoints.payment, method, path, "payment service", **kwargs)


def demo_token(endpoints: Endpoints, who: str, scopes: tuple[str, ...] = (),
               env=None) -> dict:
    """A token response for a demo identity, from the auth service, with the demo credentials."""
    path = credentials_path(env)
    saved = load_credentials(path)
    if saved is None:
        raise CtlError(f"no demo credentials at {path}: start `make run` first, or set "
                       "ORDERCTL_TOKEN", UNAUTHORIZED)
    auth_url = (endpoints.auth or saved.get("auth_url") or "http://127.0.0.1:8005").rstrip("/")
    client_id, username = IDENTITIES[who]
    form = {"grant_type": "client_credentials"}
    try:
        secret = saved["clients"][client_id]
        if username:
            form = {"grant_type": "password", "username": username,
                    "password": saved["users"][username]}
    except (KeyError, TypeError):
        raise CtlError(f"the demo credentials at {path} have no {who} identity", UNAUTHORIZED) \
            from None
    if scopes:
        form["scope"] = " ".join(scopes)
    try:
        response = requests.post(f"{auth_url}/oauth/token", data=form, auth=(client_id, secret),
                                 timeout=TIMEOUT_S)
    except requests.RequestException as exc:
        raise CtlError(f"auth service unreachable at {auth_url} ({type(exc).__name__})",
                       UNREACHABLE) from None
    if response.status_code != 200:
        raise CtlError(f"auth service: {_problem_line(response)}", UNAUTHORIZED)
    return response.json()

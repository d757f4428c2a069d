"""Access-token revocation end to end: logout and RFC 7009 end the access tokens already issued.

The auth API listens on a real socket (werkzeug, threaded); the order and
delivery APIs under test verify tokens with its JWKS and follow its
revocation feed (``GET /v1/revocations``) exactly as in production. A token
refused after a revocation is refused with 401 ``invalid_token`` by every
API within the documented bound (one feed round trip; we allow
``PROPAGATION_BOUND_S``, generous for a loaded machine), also when the API had
it in its verified-token cache.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import uuid

import pytest
import requests
from werkzeug.serving import make_server

from devstack.paths import REPO_ROOT
from devstack.readiness import wait_for_http
from services.auth import handlers
from services.auth import token_repository as token_repo
from shared.config import DEV_REVOCATION_FEED_KEY
from shared.revocations import STALE, FeedSettings, RevocationList
from tests.support.auth import client_token, make_client, make_user, password_login
from tests.support.wait import wait_until

LOOPBACK = "127.0.0.1"
# The feed answers a long poll as soon as an entry commits; this is the margin a loaded
# machine needs for that answer to travel and the next request to be checked.
PROPAGATION_BOUND_S = 5.0
FEED_HEADERS = {"Authorization": f"Bearer {DEV_REVOCATION_FEED_KEY}"}


class AuthServer:
    """The auth app on a loopback port until :meth:`stop` (and again after :meth:`start`)."""

    def __init__(self, app, port: int = 0):
        self.app = app
        self.port = port
        self.start()

    def start(self) -> None:
        self._server = make_server(LOOPBACK, self.port, self.app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


@pytest.fixture
def auth_server(auth_app):
    server = AuthServer(auth_app)
    yield server
    server.stop()


@pytest.fixture
def verifying(app_for, auth_server):
    """``verifying(name)``: the API ``name`` trusting the real auth service (keys and deny-list)."""

    def make(name: str, **env: str):
        return app_for(name, AUTH_URL=auth_server.url,
                       AUTH_JWKS_URL=f"{auth_server.url}/.well-known/jwks.json",
                       AUTH_REVOCATION_POLL_S="0.2", AUTH_REVOCATION_WAIT_S="5", **env)

    return make


@pytest.fixture
def storefront(auth_app):
    return make_client(auth_app, "Storefront", ("orders:read", "orders:write"),
                       ("password", "refresh_token"), first_party=True)


def _login(auth_app, storefront, username="ada@example.com"):
    make_user(auth_app, username)
    tokens = password_login(auth_app.test_client(), storefront, username).json
    assert "access_token" in tokens, tokens
    return tokens


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _refused(client, path: str, token: str) -> bool:
    response = client.get(path, headers=_bearer(token))
    if response.status_code == 401:
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        return True
    assert response.status_code == 200, response.get_data(as_text=True)
    return False


def test_logout_ends_the_access_token_at_the_order_api_even_when_cached(auth_app, storefront,
                                                                      verifying):
    order_app = verifying("order")
    orders = order_app.test_client()
    session = _login(auth_app, storefront)
    other = password_login(auth_app.test_client(), storefront, "ada@example.com").json
    assert not _refused(orders, "/v1/orders", session["access_token"])
    assert not _refused(orders, "/v1/orders", session["access_token"])
    cache = order_app.extensions["token_settings"].cache
    assert len(cache) >= 1  # the second request was answered from the verified-token cache

    logout = auth_app.test_client().post("/oauth/logout", headers=_bearer(session["access_token"]))
    assert logout.status_code == 204
    started = time.monotonic()
    wait_until(lambda: _refused(orders, "/v1/orders", session["access_token"]),
               timeout=PROPAGATION_BOUND_S, interval=0.05)
    assert time.monotonic() - started < PROPAGATION_BOUND_S
    # The user's other session was not logged out: its token still works.
    assert not _refused(orders, "/v1/orders", other["access_token"])


def test_logout_everywhere_ends_every_session_and_a_refreshed_token(auth_app, storefront, verifying):
    orders = verifying("order").test_client()
    laptop = _login(auth_app, storefront)
    phone = password_login(auth_app.test_client(), storefront, "ada@example.com").json
    refreshed = auth_app.test_client().post(
        "/oauth/token", data={"grant_type": "refresh_token", "refresh_token": phone["refresh_token"]},
        auth=(storefront.client_id, storefront.client_secret)).json
    tokens = (laptop["access_token"], phone["access_token"], refreshed["access_token"])
    for token in tokens:
        assert not _refused(orders, "/v1/orders", token)
    response = auth_app.test_client().post("/oauth/logout", json={"everywhere": True},
                                           headers=_bearer(laptop["access_token"]))
    assert response.status_code == 204
    wait_until(lambda: all(_refused(orders, "/v1/orders", t) for t in tokens),
               timeout=PROPAGATION_BOUND_S, interval=0.05)


def test_revoking_a_carriers_access_token_ends_it_at_the_delivery_api(auth_app, verifying):
    shipments = verifying("delivery").test_client()
    carrier = handlers.create_client(auth_app.extensions["db"], "UPS", ["shipments:read"],
                                     ["client_credentials"], carrier="UPS")
    kept = client_token(auth_app.test_client(), carrier)
    revoked = client_token(auth_app.test_client(), carrier)
    for token in (kept, revoked):
        assert not _refused(shipments, "/v1/shipments", token)
    foreign = make_client(auth_app, "Other", ["shipments:read"])
    refused = auth_app.test_client().post("/oauth/revoke", data={"token": revoked},
                                          auth=(foreign.client_id, foreign.client_secret))
    assert refused.status_code == 400  # only the client it was issued to may revoke it
    response = auth_app.test_client().post("/oauth/revoke",
                                           data={"token": revoked, "token_type_hint": "access_token"},
                                           auth=(carrier.client_id, carrier.client_secret))
    assert response.status_code == 200
    wait_until(lambda: _refused(shipments, "/v1/shipments", revoked), timeout=PROPAGATION_BOUND_S,
               interval=0.05)
    assert not _refused(shipments, "/v1/shipments", kept)
    # Deleting the client ends every access token it still holds.
    handlers.delete_client(auth_app.extensions["db"], carrier.client_id)
    wait_until(lambda: _refused(shipments, "/v1/shipments", kept), timeout=PROPAGATION_BOUND_S,
               interval=0.05)


def test_a_feed_outage_keeps_the_last_set_and_catches_up_when_it_is_back(auth_app, auth_server,
                                                                         storefront, verifying):
    order_app = verifying("order", AUTH_REVOCATION_MAX_STALENESS_S="1")
    orders = order_app.test_client()
    revoked_before = _login(auth_app, storefront)
    revoked_during = password_login(auth_app.test_client(), storefront, "ada@example.com").json
    for tokens in (revoked_before, revoked_during):
        assert not _refused(orders, "/v1/orders", tokens["access_token"])
    auth_app.test_client().post("/oauth/logout", headers=_bearer(revoked_before["access_token"]))
    wait_until(lambda: _refused(orders, "/v1/orders", revoked_before["access_token"]),
               timeout=PROPAGATION_BOUND_S, interval=0.05)

    auth_server.stop()
    feed = order_app.extensions["token_settings"].revocations
    # Once the feed has been unreachable past AUTH_REVOCATION_MAX_STALENESS_S (no request of
    # it still in flight), a token revoked now is the window the architecture documents.
    wait_until(lambda: STALE._value.get() == 1, timeout=15, interval=0.1)
    assert feed.staleness_s() > 1
    auth_app.test_client().post("/oauth/logout", headers=_bearer(revoked_during["access_token"]))
    time.sleep(1)  # several feed retries
    assert _refused(orders, "/v1/orders", revoked_before["access_token"])  # the last set is kept
    assert not _refused(orders, "/v1/orders", revoked_during["access_token"])  # not known yet

    auth_server.start()
    wait_until(lambda: _refused(orders, "/v1/orders", revoked_during["access_token"]),
               timeout=PROPAGATION_BOUND_S + 5, interval=0.1)
    wait_until(lambda: STALE._value.get() == 0, timeout=5, interval=0.1)


def test_entries_live_until_their_token_expires(auth_app, auth_server, auth_db):
    now = int(time.time())
    with auth_db.transaction() as cur:
        token_repo.deny_access_token(cur, "expired-long-ago", now - 3600, "test")
        token_repo.deny_access_token(cur, "just-expired", now - 5, "test")   # within the clock skew
        token_repo.deny_access_token(cur, "live", now + 600, "test")
    feed = requests.get(f"{auth_server.url}/v1/revocations", headers=FEED_HEADERS, timeout=10).json()
    assert {e["jti"] for e in feed["revocations"]} == {"just-expired", "live"}
    with auth_db.transaction() as cur:
        assert token_repo.purge_expired_access_tokens(cur, 30) == 1
        cur.execute("SELECT jti FROM revoked_access_tokens ORDER BY jti")
        assert [r["jti"] for r in cur.fetchall()] == ["just-expired", "live"]
    # The verifier's set drops an entry once its token has expired (plus the skew) too.
    revocations = RevocationList(FeedSettings(auth_server.url, DEV_REVOCATION_FEED_KEY, wait_s=0))
    revocations._apply({"revocations": [{"jti": "old", "exp": now - 31}, {"jti": "new", "exp": now + 60}],
                        "cursor": 2})
    revocations._apply({"revocations": [], "cursor": 2})
    assert revocations._denied == {"new": now + 60}


def test_the_feed_long_polls_and_is_only_for_services(auth_app, auth_server, auth_db):
    url = f"{auth_server.url}/v1/revocations"
    assert requests.get(url, timeout=10).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    operator = make_client(auth_app, "Ops", ["admin"])  # even an admin's access token is no key
    admin_token = client_token(auth_app.test_client(), operator)
    assert requests.get(url, headers=_bearer(admin_token), timeout=10).status_code == 401
    for bad in ({"after": "-1"}, {"wait": "100"}, {"after": "x"}, {"wait": "nan"}):
        response = requests.get(url, params=bad, headers=FEED_HEADERS, timeout=10)
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["Content-Type"].startswith("application/problem+json")
    start = requests.get(url, headers=FEED_HEADERS, timeout=10).json()
    assert start == {"revocations": [], "cursor": 0, "reset": False, "more": False}

    answers = []
    waiter = threading.Thread(target=lambda: answers.append(
        requests.get(url, params={"after": 0, "wait": 15}, headers=FEED_HEADERS, timeout=30).json()))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.5)
    jti = str(uuid.uuid4())
    with auth_db.transaction() as cur:
        token_repo.deny_access_token(cur, jti, int(time.time()) + 600, "test")
    waiter.join(20)
    assert time.monotonic() - started < 8  # answered on the NOTIFY, not at the end of the wait
    assert [e["jti"] for e in answers[0]["revocations"]] == [jti]
    # A cursor the server never handed out (a restored database): everything, and reset.
    ahead = requests.get(url, params={"after": answers[0]["cursor"] + 100}, headers=FEED_HEADERS,
                         timeout=10).json()
    assert ahead["reset"] is True and [e["jti"] for e in ahead["revocations"]] == [jti]


def test_a_revoked_test_token_is_refused_by_the_order_api(order_client, jwks_server, make_token):
    """The suite's own JWKS server serves a deny-list too: every API checks it."""
    import jwt

    token = make_token()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert not _refused(order_client, "/v1/orders", token)
    jwks_server.revoke(claims["jti"], claims["exp"])
    wait_until(lambda: _refused(order_client, "/v1/orders", token), timeout=PROPAGATION_BOUND_S + 2,
               interval=0.05)


@pytest.mark.slow
def test_sigterm_answers_waiting_long_polls_at_once(processes, auth_db, port):
    """A rolling restart must not wait out the graceful timeout for the feed's long polls."""
    api = processes.start("auth-api", [
        sys.executable, "-m", "gunicorn", "-c", str(REPO_ROOT / "infra" / "gunicorn.conf.py"),
        "--bind", f"{LOOPBACK}:{port}", "services.auth.app:create_app()"],
        WEB_CONCURRENCY="1", GUNICORN_GRACEFUL_TIMEOUT="30")
    url = f"http://{LOOPBACK}:{port}"
    wait_for_http(f"{url}/health/live", timeout=30, statuses=(200,), proc=api.proc)
    answers: list[requests.Response] = []
    waiters = [threading.Thread(target=lambda: answers.append(requests.get(
        f"{url}/v1/revocations", params={"after": 0, "wait": 20}, headers=FEED_HEADERS,
        timeout=40))) for _ in range(2)]
    for waiter in waiters:
        waiter.start()
    time.sleep(1.0)  # both are waiting now
    stopped = time.monotonic()
    api.proc.send_signal(signal.SIGTERM)
    assert api.proc.wait(15) == 0
    took = time.monotonic() - stopped
    for waiter in waiters:
        waiter.join(5)
    assert took < 5, f"the worker waited {took:.1f}s for its long polls"
    assert [answer.status_code for answer in answers] == [200, 200]
    assert all(answer.json()["revocations"] == [] for answer in answers)

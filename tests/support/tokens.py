"""Test tokens: one RS256 key pair for the whole run, served as a JWKS over HTTP.

Every service under test verifies tokens exactly as in production (RS256 via
``AUTH_JWKS_URL``); the suite points that URL at :class:`JwksServer`, which
serves :data:`TEST_SIGNER`'s public key. Tests that need the real auth
service's keys point the URL at an auth API instead.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import jwt

from shared.auth import DevSigner, TokenSettings

ISSUER = "order-platform-dev"
AUDIENCE = "order-platform"
TEST_SIGNER = DevSigner(ISSUER, AUDIENCE, kid="test-key-1")
# The services' own clients (client credentials) that the test token endpoint knows.
SERVICE_CLIENTS = {"order-service": "test-order-service-secret"}
SERVICE_TOKEN_TTL_S = 900


def _basic(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return "", ""
    return client_id, secret


class StaticKeys:
    """A key source for unit tests: the keys of a JWKS document, no I/O."""

    def __init__(self, jwks: dict):
        self._keys = {k["kid"]: jwt.PyJWK(k, algorithm="RS256") for k in jwks["keys"]}

    def key_for(self, kid):
        return self._keys.get(kid)


def static_settings(signer: DevSigner = TEST_SIGNER) -> TokenSettings:
    """TokenSettings that trust exactly ``signer`` (unit tests)."""
    return TokenSettings(signer.issuer, signer.audience, StaticKeys(signer.jwks()))


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 for the services under test.

    ``documents`` returns the JWKS to serve (so a test can add a key);
    ``failing`` makes it answer 503; ``hits`` counts requests. It also answers
    ``POST /oauth/token`` (client credentials) for :data:`SERVICE_CLIENTS` with
    :data:`TEST_SIGNER` tokens, so services that call peers with their own
    token (order -> inventory) work without an auth service.
    """

    def __init__(self, documents: Callable[[], dict], signer: DevSigner | None = None):
        self.documents = documents
        self.signer = signer or TEST_SIGNER
        self.failing = False
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                server.hits += 1
                if server.failing:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps(server.documents()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                server.hits += 1
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode()))
                client_id, secret = _basic(self.headers.get("Authorization", ""))
                if self.path != "/oauth/token" or SERVICE_CLIENTS.get(client_id) != secret \
                        or form.get("grant_type") != "client_credentials":
                    self._json(401, {"error": "invalid_client"})
                    return
                claims = server.signer.claims(client_id, form.get("scope", "").split(),
                                              SERVICE_TOKEN_TTL_S, client_id=client_id)
                self._json(200, {"access_token": server.signer.sign(claims), "token_type": "Bearer",
                                 "expires_in": SERVICE_TOKEN_TTL_S, "scope": form.get("scope", "")})

            def _json(self, status, document):
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):  # keep pytest output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="jwks-server",
                                        daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/.well-known/jwks.json"

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

"""Test tokens: one RS256 key pair for the whole run, served as a JWKS over HTTP.

Every service under test verifies tokens exactly as in production (RS256 via
``AUTH_JWKS_URL``); the suite points that URL at :class:`JwksServer`, which
serves :data:`TEST_SIGNER`'s public key. Tests that need the real auth
service's keys point the URL at an auth API instead.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

from shared.auth import DevSigner, TokenSettings

ISSUER = "order-platform-dev"
AUDIENCE = "order-platform"
TEST_SIGNER = DevSigner(ISSUER, AUDIENCE, kid="test-key-1")


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
    ``failing`` makes it answer 503; ``hits`` counts requests.
    """

    def __init__(self, documents: Callable[[], dict]):
        self.documents = documents
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

            def log_message(self, *_args):  # keep pytest output clean
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="jwks-server",
                                        daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/.well-known/jwks.json"

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

"""Token signing for the tests and the benchmarks, and a JWKS server for their services.

The services verify every token exactly as in production (RS256 against the
JWKS at ``AUTH_JWKS_URL``). Tests and benchmarks do not run the auth service
for that: they sign tokens with a :class:`DevSigner` (a key pair of its own)
and point ``AUTH_JWKS_URL`` at a :class:`JwksServer` on 127.0.0.1 serving its
public key. The same server answers the client-credentials grant for the
services' own clients (:data:`SERVICE_CLIENTS`).

Never used by the services: the auth service signs the tokens it issues with
its own keys (``services/auth``), and verification is ``shared.auth``'s.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth import TokenSettings

DEFAULT_TTL_S = 3600
# The services' own clients (client credentials) that the JWKS server's token endpoint knows.
SERVICE_CLIENTS = {"order-service": "test-order-service-secret"}
SERVICE_TOKEN_TTL_S = 900


class DevSigner:
    """Signs RS256 tokens with its own key pair, as the auth service would.

    Serve :meth:`jwks` where the services look for keys (``AUTH_JWKS_URL``);
    a production deployment points them at the auth service instead.
    """

    def __init__(self, issuer: str, audience: str, bits: int = 2048, kid: str | None = None):
        self.issuer = issuer
        self.audience = audience
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.kid = kid or f"dev-{uuid.uuid4().hex[:12]}"

    def jwks(self) -> dict:
        """The public key as a JWKS document."""
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return {"keys": [jwk]}

    def sign(self, claims: dict, headers: dict | None = None) -> str:
        """Sign arbitrary claims (tests build broken tokens with this)."""
        return jwt.encode(claims, self.private_key, algorithm="RS256",
                          headers={"kid": self.kid, "typ": "at+jwt", **(headers or {})})

    def claims(self, subject: str, scopes, ttl_s: int = DEFAULT_TTL_S,
               client_id: str | None = None, carrier: str | None = None) -> dict:
        """The claims the auth service would put in such a token (``carrier``: a carrier-bound
        client's)."""
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.audience, "sub": subject,
                  "client_id": client_id or "dev-client", "scope": " ".join(scopes), "iat": now,
                  "nbf": now, "exp": now + ttl_s, "jti": str(uuid.uuid4())}
        if carrier is not None:
            claims["carrier"] = carrier
        return claims


def mint_dev_token(signer: DevSigner, subject: str, scopes: list[str] | tuple[str, ...],
                   ttl_s: int = DEFAULT_TTL_S) -> str:
    """A token as the auth service would issue it, signed by ``signer``."""
    return signer.sign(signer.claims(subject, scopes, ttl_s))


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


def static_settings(signer: DevSigner) -> TokenSettings:
    """TokenSettings that trust exactly ``signer`` (unit tests)."""
    return TokenSettings(signer.issuer, signer.audience, StaticKeys(signer.jwks()))


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 for the services under test.

    ``documents`` returns the JWKS to serve (so a test can add a key);
    ``failing`` makes it answer 503; ``hits`` counts requests. It also answers
    ``POST /oauth/token`` (client credentials) for :data:`SERVICE_CLIENTS` with
    tokens from ``signer``, so services that call peers with their own token
    (order -> inventory) work without an auth service, and ``GET /v1/revocations``
    (the access-token deny-list feed, answered at once, not counted in ``hits``) with
    what :meth:`revoke` added.
    """

    def __init__(self, documents: Callable[[], dict], signer: DevSigner):
        self.documents = documents
        self.signer = signer
        self.failing = False
        self.hits = 0
        self.revoked: list[dict] = []   # deny-list entries, in order; an entry's cursor is index + 1
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                if self.path.startswith("/v1/revocations"):
                    query = dict(parse_qsl(self.path.partition("?")[2]))
                    after = int(query.get("after") or 0)
                    entries = list(server.revoked)
                    self._json(200, {"revocations": entries[after:], "cursor": len(entries),
                                     "reset": False, "more": False})
                    return
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

    def revoke(self, jti: str, exp: int) -> None:
        """Put an access token on the deny-list the feed serves."""
        self.revoked.append({"jti": jti, "exp": exp})

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

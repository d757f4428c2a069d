"""Authlib's client, user and token models over rows of ``clients``, ``users`` and
``refresh_tokens`` (the rest of the OAuth2 server is :mod:`services.auth.oauth`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin

from services.auth import crypto

CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
GRANT_TYPES = ("client_credentials", "password", "refresh_token")


@dataclass
class Client(ClientMixin):
    """A registered client (a row of ``clients``)."""

    client_id: str
    name: str
    secret_hash: str
    previous_secret_hash: str | None
    previous_secret_valid: bool
    allowed_scopes: tuple[str, ...]
    grant_types: tuple[str, ...]
    first_party: bool
    carrier: str | None = None   # the carrier this client is bound to, if it is a carrier's

    @classmethod
    def from_row(cls, row: dict) -> Client:
        expires = row["previous_secret_expires_at"]
        return cls(row["client_id"], row["name"], row["secret_hash"], row["previous_secret_hash"],
                   expires is not None and expires.timestamp() > time.time(),
                   tuple(row["allowed_scopes"]), tuple(row["grant_types"]), row["first_party"],
                   row.get("carrier"))

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        """Everything allowed when no scope is asked for; None (invalid_scope) when
        any asked-for scope is not allowed to this client."""
        if not scope:
            return " ".join(self.allowed_scopes)
        requested = list(dict.fromkeys(scope.split()))
        if not set(requested) <= set(self.allowed_scopes):
            return None
        return " ".join(requested)

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        if crypto.secret_matches(self.secret_hash, client_secret):
            return True
        return self.previous_secret_valid and crypto.secret_matches(self.previous_secret_hash,
                                                                    client_secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method in CLIENT_AUTH_METHODS

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        if grant_type == "password" and not self.first_party:
            return False
        return grant_type in self.grant_types


@dataclass
class User:
    """A customer or operator account."""

    id: uuid.UUID
    username: str
    role: str
    scopes: tuple[str, ...]

    @classmethod
    def from_row(cls, row: dict) -> User:
        return cls(row["id"], row["username"], row["role"], tuple(row["scopes"]))

    def get_user_id(self):
        return str(self.id)



@dataclass(frozen=True)
class IssuedAccessToken:
    """The jti and expiry (epoch seconds) of an access token just signed."""

    jti: str
    expires_at: int


@dataclass
class RefreshToken(TokenMixin):
    """A stored refresh token (only its hash is kept)."""

    id: uuid.UUID
    family_id: uuid.UUID
    client_id: str
    user_id: uuid.UUID
    scope: str
    token_hash: str

    @classmethod
    def from_row(cls, row: dict) -> RefreshToken:
        return cls(row["id"], row["family_id"], row["client_id"], row["user_id"], row["scope"],
                   row["token_hash"])

    def check_client(self, client):
        return self.client_id == client.get_client_id()

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return 0

    def is_expired(self):
        return False  # only live tokens are ever turned into this object

    def is_revoked(self):
        return False

    def get_user(self):
        return self.user_id

    def get_client(self):
        return self.client_id

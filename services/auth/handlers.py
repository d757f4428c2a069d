"""Auth commands: one function each, dependencies as arguments.

Used by the HTTP API (registration, logout), the management CLI and
``make run`` (demo clients and accounts). Secrets are returned to the caller
exactly once and never logged. Management commands refuse with
:class:`AuthError` (a message for the operator); self-registration refuses
with :class:`PasswordRefused` or :class:`AccountExists`, which the API
answers as problems.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

import psycopg2.errors

from services.auth import crypto
from services.auth import repository as repo
from services.auth import token_repository as token_repo
from services.auth.oauth_models import GRANT_TYPES
from shared.auth import SCOPES
from shared.errors import DomainError
from shared.logging import get_logger

log = get_logger(__name__)

CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{3,64}$")
# A carrier id as the delivery service stores it on shipments (e.g. DHL); also a CHECK on
# clients.carrier (migrations/versions/0002_client_carrier.py).
CARRIER_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ROLES = ("customer", "operator")
# Operators run the platform: every scope, admin included.
OPERATOR_SCOPES = SCOPES
# A secret chosen outside (ensure-client) must still be long enough not to be guessed.
MIN_GIVEN_SECRET_CHARS = 24


class AuthError(ValueError):
    """A management command was given something it cannot do (message is for the operator)."""


class PasswordRefused(DomainError):
    """The password breaks the policy; the detail says which rule."""


class AccountExists(DomainError):
    """The username is taken."""


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    client_secret: str


def _check_scopes(scopes) -> list[str]:
    scopes = list(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise AuthError(f"unknown scope(s): {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return scopes


def check_carrier(carrier: str | None) -> str | None:
    """``carrier`` if it is a well-formed carrier id (or None); AuthError otherwise."""
    if carrier is not None and not CARRIER_PATTERN.fullmatch(carrier):
        raise AuthError("carrier must be 1-64 characters of letters, digits, '.', '_' or '-'"
                        " (the carrier id on shipments, e.g. DHL)")
    return carrier


def create_client(db, name: str, scopes, grant_types, first_party: bool = False,
                  client_id: str | None = None, secret: str | None = None,
                  carrier: str | None = None) -> ClientCredentials:
    """Register a client; return its id and its secret (shown once, stored hashed).

    ``secret``: use this one instead of generating one (``ensure-client`` for deployments
    whose secret store already holds it); at least MIN_GIVEN_SECRET_CHARS characters.
    ``carrier``: bind a carrier's client to its carrier; its tokens carry it as the
    ``carrier`` claim and reach only that carrier's shipments.
    """
    check_carrier(carrier)
    client_id = client_id or f"{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')[:40]}-" \
                             f"{uuid.uuid4().hex[:8]}"
    if not CLIENT_ID_PATTERN.match(client_id):
        raise AuthError("client id must be 3-64 characters of letters, digits, '.', '_' or '-'")
    grant_types = list(dict.fromkeys(grant_types))
    bad = [gt for gt in grant_types if gt not in GRANT_TYPES]
    if bad or not grant_types:
        raise AuthError(f"grant types must be among {', '.join(GRANT_TYPES)}")
    if "password" in grant_types and not first_party:
        raise AuthError("the password grant is for first-party clients only (--first-party)")
    if secret is not None and len(secret) < MIN_GIVEN_SECRET_CHARS:
        raise AuthError(f"a given client secret must be at least {MIN_GIVEN_SECRET_CHARS} characters")
    secret = secret or crypto.new_secret()
    try:
        with db.transaction() as cur:
            repo.insert_client(cur, client_id, name, crypto.digest_secret(secret), _check_scopes(scopes),
                               grant_types, first_party, carrier)
    except psycopg2.errors.UniqueViolation:
        raise AuthError(f"client {client_id} already exists") from None
    log.info("client_created", client_id=client_id, grant_types=grant_types, first_party=first_party,
             carrier=carrier)
    return ClientCredentials(client_id, secret)


def bind_client_carrier(db, client_id: str, carrier: str | None) -> None:
    """Bind an existing client to ``carrier`` (None: unbind); its next tokens say so."""
    check_carrier(carrier)
    with db.transaction() as cur:
        if not repo.set_client_carrier(cur, client_id, carrier):
            raise AuthError(f"no client {client_id}")
    log.info("client_carrier_bound", client_id=client_id, carrier=carrier)


def rotate_client_secret(db, client_id: str, grace_s: int = 0,
                         secret: str | None = None) -> ClientCredentials:
    """A new secret; the old one keeps working ``grace_s`` seconds so deployments can roll."""
    if secret is not None and len(secret) < MIN_GIVEN_SECRET_CHARS:
        raise AuthError(f"a given client secret must be at least {MIN_GIVEN_SECRET_CHARS} characters")
    secret = secret or crypto.new_secret()
    with db.transaction() as cur:
        if not repo.rotate_client_secret(cur, client_id, crypto.digest_secret(secret), grace_s):
            raise AuthError(f"no client {client_id}")
    log.info("client_secret_rotated", client_id=client_id, grace_s=grace_s)
    return ClientCredentials(client_id, secret)


def delete_client(db, client_id: str) -> int:
    """Delete a client: it can no longer authenticate; its refresh tokens are revoked."""
    with db.transaction() as cur:
        if not repo.delete_client(cur, client_id):
            raise AuthError(f"no client {client_id}")
        revoked = token_repo.revoke_client_tokens(cur, client_id, "client_deleted")
    log.info("client_deleted", client_id=client_id, refresh_tokens_revoked=revoked)
    return revoked


def check_password_policy(config, username: str, password: str) -> str | None:
    """Why ``password`` is not acceptable, or None."""
    if len(password) < config.password_min_length:
        return f"Must be at least {config.password_min_length} characters."
    if len(password) > config.password_max_length:
        return f"Must be at most {config.password_max_length} characters."
    if password.strip().lower() == username.strip().lower():
        return "Must not be the username."
    return None


def create_user(db, passwords: crypto.PasswordHashing, config, username: str, password: str,
                role: str, scopes=None, update_existing: bool = False) -> uuid.UUID:
    """Create a customer or operator account; with ``update_existing`` reset an existing one."""
    if role not in ROLES:
        raise AuthError(f"role must be one of {', '.join(ROLES)}")
    problem = check_password_policy(config, username, password)
    if problem:
        raise AuthError(f"password: {problem}")
    scopes = _check_scopes(scopes if scopes is not None else
                           (OPERATOR_SCOPES if role == "operator" else config.customer_scopes))
    password_hash = passwords.hash(password)
    with db.transaction() as cur:
        existing = repo.get_user_by_username(cur, username)
        if existing is not None:
            if not update_existing:
                raise AuthError(f"user {username} already exists")
            repo.set_user_password_and_scopes(cur, existing["id"], password_hash, scopes)
            user_id = existing["id"]
        else:
            user_id = uuid.uuid4()
            try:
                repo.insert_user(cur, user_id, username, password_hash, role, scopes)
            except psycopg2.errors.UniqueViolation:
                raise AuthError(f"user {username} already exists") from None
    log.info("user_saved", user_id=str(user_id), role=role, updated=existing is not None)
    return user_id


def register_customer(db, passwords, config, username: str, password: str) -> dict:
    """Self-registration through a first-party storefront: a customer account."""
    problem = check_password_policy(config, username, password)
    if problem:
        raise PasswordRefused(problem)
    try:
        user_id = create_user(db, passwords, config, username, password, "customer")
    except AuthError:
        raise AccountExists("An account with this username already exists.") from None
    with db.transaction() as cur:
        row = repo.get_user(cur, user_id)
    return {"id": str(row["id"]), "username": row["username"], "scopes": list(row["scopes"]),
            "created_at": row["created_at"]}


def logout(db, user_id: str, client_id: str, session_id: str | None, everywhere: bool,
           access_token: tuple[str, int] | None = None) -> int:
    """Revoke the session's refresh-token family, or every session of the user with this client,
    and the access tokens issued to them; ``access_token`` (jti, exp), the one presented, is
    denied too (it may predate the recording of issued tokens)."""
    with db.transaction() as cur:
        if everywhere or session_id is None:
            count = token_repo.revoke_user_tokens(cur, uuid.UUID(user_id), None if everywhere else client_id,
                                            "logout")
        else:
            count = token_repo.revoke_family(cur, uuid.UUID(session_id), "logout")
        if access_token is not None:
            token_repo.deny_access_token(cur, str(access_token[0]), int(access_token[1]), "logout")
    log.info("logout", user_id=user_id, client_id=client_id, everywhere=everywhere, tokens=count)
    return count


def access_token_denied(db, jti: str) -> bool:
    """Whether the access token ``jti`` is on the deny-list."""
    with db.transaction() as cur:
        return token_repo.is_access_token_denied(cur, jti)


def disable_user(db, username: str) -> None:
    """Disable an account and revoke its sessions."""
    with db.transaction() as cur:
        row = repo.get_user_by_username(cur, username)
        if row is None or not repo.disable_user(cur, row["id"]):
            raise AuthError(f"no active user {username}")
        token_repo.revoke_user_tokens(cur, row["id"], None, "user_disabled")


def unlock_account(db, username: str) -> None:
    """Clear the failed-login counter of ``username``."""
    with db.transaction() as cur:
        repo.clear_login_failures(cur, username)

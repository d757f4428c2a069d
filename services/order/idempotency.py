"""Idempotency keys: a command sent again under the same key runs once.

The layer around a command that creates something (like eShop's
IdentifiedCommand); the views call it explicitly, the handlers know nothing
of it. Per ``(owner, key)``:

* **claim** — before the command runs, the key is claimed in a transaction of
  its own, together with the id the new resource will have. A key that is
  expired, released (an earlier attempt failed) or left in progress by a
  crashed request is taken over; a takeover with the same request keeps the
  earlier attempt's resource id, so what that attempt did elsewhere (stock
  held under that id) is found again instead of done twice.
* **replay** — a completed key answers with the response stored the first
  time, marked ``Idempotent-Replayed: true``. The same key with another
  request body is :class:`KeyReused`; one whose first attempt still runs is
  :class:`KeyInProgress`.
* **store** — the command stores its response in its own transaction, so a
  stored response exists exactly when the command committed.
* **release** — a failed attempt frees the key at once for a retry.

Requests are told apart by :func:`fingerprint`, a hash of the validated
body. Expired keys are deleted by ``repository.purge_expired_idempotency_keys``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2.errors

from services.order import repository as repo
from shared.errors import DomainError

REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class StoredResponse:
    """A response to send, and what a key replays."""

    status: int
    body: str
    headers: dict[str, str]


class KeyReused(DomainError):
    """The key was used before with a different request body."""


class KeyInProgress(DomainError):
    """The first request under this key has not finished yet."""


def fingerprint(payload: dict) -> str:
    """A hash of the validated request, to tell "same body" from "different body"."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """One run of a command: the resource id to create, and where its response goes."""

    owner: str
    key: str | None
    resource_id: uuid.UUID

    def store(self, cur, response: StoredResponse) -> StoredResponse:
        """Keep ``response`` for replays; call inside the command's own transaction."""
        if self.key:
            repo.complete_idempotency_key(cur, self.owner, self.key, response.status,
                                          response.body, response.headers)
        return response


def run_once(db, owner: str, key: str | None, request_fingerprint: str,
             command: Callable[[Attempt], StoredResponse]) -> StoredResponse:
    """Run ``command`` unless ``key`` already answered this request; without a key, just run it.

    ``command`` gets the :class:`Attempt` (its resource id, and ``store`` for
    its response) and returns the response to send.
    """
    resource_id = uuid.uuid4()
    if key:
        with db.transaction() as cur:
            claimed, existing = repo.claim_idempotency_key(cur, owner, key, request_fingerprint,
                                                           resource_id)
        if existing is not None:
            return _replay(existing, request_fingerprint)
        resource_id = claimed
    attempt = Attempt(owner, key, resource_id)
    try:
        return command(attempt)
    except psycopg2.errors.UniqueViolation:
        # A taken-over key whose first attempt was still running, and has just committed.
        _release(db, attempt)
        raise _in_progress() from None
    except BaseException:
        _release(db, attempt)
        raise


def _replay(existing: dict, request_fingerprint: str) -> StoredResponse:
    if existing["request_hash"] != request_fingerprint:
        raise KeyReused("This Idempotency-Key was used with a different request body.")
    if existing["state"] == "in_progress":
        raise _in_progress()
    headers = dict(existing["response_headers"] or {})
    headers[REPLAYED_HEADER] = "true"
    return StoredResponse(existing["response_status"], existing["response_body"], headers)


def _release(db, attempt: Attempt) -> None:
    if attempt.key:
        with db.transaction() as cur:
            repo.release_idempotency_key(cur, attempt.owner, attempt.key)


def _in_progress() -> KeyInProgress:
    return KeyInProgress("A request with this Idempotency-Key is still being processed; retry later.")

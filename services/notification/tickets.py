"""Stream tickets: a short-lived, single-use credential for ``GET /v1/notifications/stream``.

A browser's ``EventSource`` cannot send ``Authorization``, and a bearer token in
a URL ends up in histories, proxies and logs. So the page first asks for a
ticket with its bearer token (``POST /v1/notifications/stream/tickets``) and
opens the stream with ``?ticket=...``:

* 32 random bytes (URL-safe base64); only their SHA-256 is stored. A fast hash
  is enough: the ticket is random, not a password, so there is nothing to guess;
* valid for ``NOTIFICATION_STREAM_TICKET_TTL_S`` (30 s) and redeemed at most
  once: the redeeming ``UPDATE ... WHERE used_at IS NULL`` is atomic, so two
  racing requests cannot both open a stream with one ticket;
* bound to the principal (subject, admin or not, the token's expiry: the
  stream closes when the token would have expired) and to the order it names.

Reconnecting (after a dropped connection) takes a new ticket; the stream's
``last_event_id`` parameter resumes without gap or duplicate.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from services.notification import repository as repo
from shared.auth import Principal

TICKET_BYTES = 32
# URL-safe base64 of 32 bytes, without padding.
TICKET_CHARS = 43
TICKET_PATTERN = r"^[A-Za-z0-9_-]{43}$"
# Unused, unexpired tickets one principal may hold: a page needs one per connection attempt;
# more means a loop, and each is a row until it expires.
MAX_LIVE_TICKETS = 20


class TicketRefused(Exception):
    """The ticket is unknown, used, expired, or not for this principal or order."""


class TooManyTickets(Exception):
    """The principal holds MAX_LIVE_TICKETS unused tickets already."""


@dataclass(frozen=True)
class IssuedTicket:
    ticket: str
    expires_in: int


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode("ascii")).digest()


def issue(db, principal: Principal, order_id: str | None, ttl_s: int) -> IssuedTicket:
    """A new ticket for ``principal`` (and ``order_id``, if given)."""
    ticket = base64.urlsafe_b64encode(secrets.token_bytes(TICKET_BYTES)).rstrip(b"=").decode()
    token_expires = (datetime.fromtimestamp(principal.expires_at, UTC)
                     if principal.expires_at is not None else None)
    with db.transaction() as cur:
        repo.delete_expired_tickets(cur)
        if repo.live_tickets(cur, principal.subject) >= MAX_LIVE_TICKETS:
            raise TooManyTickets(principal.subject)
        repo.insert_ticket(cur, _digest(ticket), principal.subject, principal.is_admin, order_id,
                           token_expires, ttl_s)
    return IssuedTicket(ticket, ttl_s)


def redeem(db, ticket: str, order_id: str | None, bearer: Principal | None) -> tuple[Principal, str | None]:
    """The principal and order a ticket was issued for; it cannot be used again.

    ``order_id`` (the stream's query) must be the ticket's order when both are
    given; ``bearer``, a token sent with the ticket, must be the same subject.
    Every refusal is the same :class:`TicketRefused` (nothing to learn from it).
    """
    with db.transaction() as cur:
        row = repo.redeem_ticket(cur, _digest(ticket))
    if row is None:
        raise TicketRefused("unknown, used or expired")
    if bearer is not None and bearer.subject != row["subject"]:
        raise TicketRefused("issued to another principal")
    if order_id is not None and row["order_id"] is not None and order_id != row["order_id"]:
        raise TicketRefused("issued for another order")
    expires = row["token_expires_at"]
    principal = Principal(subject=row["subject"],
                          scopes=frozenset({"orders:read", *(("admin",) if row["is_admin"] else ())}),
                          expires_at=int(expires.timestamp()) if expires is not None else None)
    return principal, row["order_id"] or order_id

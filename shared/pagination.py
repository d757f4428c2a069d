"""Opaque keyset cursors for list endpoints (stable under inserts, unlike OFFSET)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from shared.errors import Problem


def encode_cursor(created_at: datetime, row_id) -> str:
    """An opaque cursor pointing just after (created_at, id) in descending order."""
    raw = json.dumps({"t": created_at.isoformat(), "i": str(row_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Parse a cursor made by :func:`encode_cursor`; a bad one is a 400 problem."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        created_at = datetime.fromisoformat(raw["t"])
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, uuid.UUID(raw["i"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError):
        raise Problem(400, "Bad cursor", "The cursor is not one this API issued.", "bad-cursor",
                      errors=[{"field": "cursor", "message": "Invalid cursor."}]) from None


def keyset_page(rows: list[dict], limit: int) -> tuple[list[dict], str | None]:
    """Split ``limit + 1`` fetched rows into the page and the cursor for the next one.

    Rows must be ordered by (created_at, id) descending and carry both keys.
    """
    page = rows[:limit]
    more = len(rows) > limit
    return page, encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None

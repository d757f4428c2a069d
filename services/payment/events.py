"""Who the payment service is in the topology and in envelopes, and its events' timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

from services.payment.settings import SERVICE

PRODUCER = "payment-service"

__all__ = ["PRODUCER", "SERVICE", "now_iso"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()

"""The payment service's only door to Stripe: the official ``stripe`` library, hardened.

Every call:

* carries an idempotency key derived from the order and the action
  (``order-<id>-capture``...), so a retry after a timeout does not charge twice
  where the provider honours the key (Stripe does);
* does not depend on the provider honouring it: before a refund the intent's
  refunds are listed and one with our ``refund_id`` in its metadata is reused;
  a capture or cancel the provider refuses is looked up, and an intent
  already in the wanted state counts as done (the local emulator, localstripe,
  ignores ``Idempotency-Key``);
* goes over a kept-alive urllib3 pool (:mod:`services.payment.stripe_http`)
  rather than the library's ``requests`` client, and has a timeout
  (``PAYMENT_STRIPE_TIMEOUT_S``; the library's own retries are off) and a
  tenacity retry for transient failures only (``PAYMENT_STRIPE_ATTEMPTS``:
  connection errors, timeouts, 429, 5xx);
* goes through the named breaker ``stripe``: while it is open nothing is
  sent and :class:`ProviderUnavailable` carries the seconds until the next try.

Refusals (a declined card, an invalid request) are :class:`ProviderRefused`;
they never open the breaker.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import stripe

from services.payment.domain import INTENT_AUTHORIZED, INTENT_CANCELED, INTENT_SUCCEEDED
from services.payment.stripe_http import PooledStripeHttpClient
from shared.logging import get_logger
from shared.resilience import BreakerOpen, TransientError, resilient_call

log = get_logger(__name__)

BREAKER = "stripe"
# A 503 of our own when the provider failed on every attempt (the breaker may still be closed).
UNAVAILABLE_RETRY_AFTER_S = 1.0
# Test mode and live mode both accept card PaymentMethods; the storefront collects them.
PAYMENT_METHOD_TYPES = ["card"]


@dataclass(frozen=True)
class Intent:
    """What we read of a PaymentIntent."""

    id: str
    status: str
    amount: int
    currency: str
    client_secret: str | None = None

    @classmethod
    def of(cls, obj) -> Intent:
        data = obj if isinstance(obj, dict) else obj.to_dict()
        return cls(id=data["id"], status=data["status"], amount=int(data["amount"]),
                   currency=str(data["currency"]), client_secret=data.get("client_secret"))


@dataclass(frozen=True)
class ProviderRefund:
    id: str
    amount: int
    status: str


class ProviderTransient(TransientError):
    """Stripe could not answer (connection, timeout, 429, 5xx): worth retrying."""


class ProviderUnavailable(Exception):
    """Stripe cannot be used now: breaker open, or every attempt failed transiently."""

    def __init__(self, reason: str, retry_after_s: float):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class ProviderRefused(Exception):
    """Stripe refused the request (declined card, invalid state...): not retried."""

    def __init__(self, message: str, code: str | None, http_status: int | None):
        super().__init__(message)
        self.code = code
        self.http_status = http_status


def _is_transient(exc: stripe.StripeError) -> bool:
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    return isinstance(exc, stripe.APIError) and (exc.http_status or 500) >= 500


class StripeGateway:
    """PaymentIntents with manual capture, and Refunds, for orders."""

    def __init__(self, api_base: str, secret_key: str, breaker, timeout_s: float, attempts: int):
        self.breaker = breaker
        self.attempts = attempts
        self.client = stripe.StripeClient(
            secret_key, base_addresses={"api": api_base.rstrip("/")},
            max_network_retries=0,  # ours are transient-only and counted by the breaker
            http_client=PooledStripeHttpClient(timeout_s))
        # The library imports its resource modules on first use (PaymentIntent's alone
        # is thousands of typed classes): do it now, not inside the first checkout of
        # every fresh or restarted worker.
        _ = (stripe.PaymentIntent, stripe.Refund)

    # --- the calls ------------------------------------------------------------------------
    def create_intent(self, order_id: uuid.UUID, amount: int, currency: str) -> Intent:
        """An uncaptured PaymentIntent for the order's amount (the client secret comes back)."""
        return Intent.of(self._call("create_intent", order_id, lambda: self.client.v1.payment_intents.create(
            params={"amount": amount, "currency": currency.strip().lower(),
                    "capture_method": "manual", "payment_method_types": PAYMENT_METHOD_TYPES,
                    "metadata": {"order_id": str(order_id)}},
            options={"idempotency_key": f"order-{order_id}-create-intent"})))

    def retrieve(self, order_id: uuid.UUID, intent_id: str) -> Intent:
        return Intent.of(self._call("retrieve", order_id,
                                    lambda: self.client.v1.payment_intents.retrieve(intent_id)))

    def confirm(self, order_id: uuid.UUID, intent_id: str, payment_method_id: str) -> Intent:
        """Attach the storefront's PaymentMethod id (never card data) and confirm the intent.

        Two calls (attach, then confirm without a method) rather than one
        confirm with ``payment_method``: Stripe takes both, the emulator only
        the first. An intent the provider already authorized (a retry after
        the first confirm's answer was lost; localstripe keeps no idempotency
        keys, so it refuses the second) counts as done, like capture and cancel.
        """
        try:
            self._call("attach_method", order_id, lambda: self.client.v1.payment_intents.update(
                intent_id, params={"payment_method": payment_method_id},
                options={"idempotency_key": f"order-{order_id}-attach-{payment_method_id}"}))
            return Intent.of(self._call("confirm", order_id, lambda: self.client.v1.payment_intents.confirm(
                intent_id, options={"idempotency_key": f"order-{order_id}-confirm-{payment_method_id}"})))
        except ProviderRefused:
            intent = self.retrieve(order_id, intent_id)
            if intent.status in (INTENT_AUTHORIZED, INTENT_SUCCEEDED):
                return intent
            raise

    def capture(self, order_id: uuid.UUID, intent_id: str, amount: int) -> Intent:
        """Charge ``amount`` of the authorization; an intent already captured counts as done."""
        try:
            return Intent.of(self._call("capture", order_id, lambda: self.client.v1.payment_intents.capture(
                intent_id, params={"amount_to_capture": amount},
                options={"idempotency_key": f"order-{order_id}-capture"})))
        except ProviderRefused:
            intent = self.retrieve(order_id, intent_id)
            if intent.status == INTENT_SUCCEEDED:
                return intent
            raise

    def cancel(self, order_id: uuid.UUID, intent_id: str) -> Intent:
        """Void the intent (release the authorization); one already cancelled counts as done."""
        try:
            return Intent.of(self._call("cancel", order_id, lambda: self.client.v1.payment_intents.cancel(
                intent_id, options={"idempotency_key": f"order-{order_id}-cancel"})))
        except ProviderRefused:
            intent = self.retrieve(order_id, intent_id)
            if intent.status == INTENT_CANCELED:
                return intent
            raise

    def refund(self, order_id: uuid.UUID, intent_id: str, refund_id: uuid.UUID,
               amount: int) -> ProviderRefund:
        """Refund ``amount`` once per ``refund_id``, even against a provider without idempotency."""
        existing = self._call("list_refunds", order_id, lambda: self.client.v1.refunds.list(
            params={"payment_intent": intent_id, "limit": 100}))
        for item in existing.data:
            if (item.to_dict().get("metadata") or {}).get("refund_id") == str(refund_id):
                return ProviderRefund(item.id, int(item.amount), item.status)
        created = self._call("refund", order_id, lambda: self.client.v1.refunds.create(
            params={"payment_intent": intent_id, "amount": amount,
                    "metadata": {"refund_id": str(refund_id), "order_id": str(order_id)}},
            options={"idempotency_key": f"order-{order_id}-refund-{refund_id}"}))
        return ProviderRefund(created.id, int(created.amount), created.status)

    # --- the one path every call takes ------------------------------------------------------
    def _call(self, action: str, order_id: uuid.UUID, fn):
        def once():
            try:
                return fn()
            except stripe.StripeError as exc:
                if _is_transient(exc):
                    raise ProviderTransient(f"{type(exc).__name__}: {exc.user_message or exc}") from exc
                raise

        try:
            return resilient_call(self.breaker, once, self.attempts)
        except BreakerOpen as exc:
            raise ProviderUnavailable("breaker_open", exc.retry_after_s) from None
        except ProviderTransient as exc:
            log.warning("stripe_unavailable", action=action, order_id=str(order_id),
                        error=str(exc)[:300], breaker=self.breaker.current_state)
            raise ProviderUnavailable(str(exc), UNAVAILABLE_RETRY_AFTER_S) from None
        except stripe.StripeError as exc:
            code = getattr(exc, "code", None)
            log.info("stripe_refused", action=action, order_id=str(order_id), code=code,
                     status=exc.http_status)
            raise ProviderRefused(exc.user_message or str(exc), code, exc.http_status) from None

"""HTTP views of the payment service: parse with a schema, call a handler, serialize.

* ``PUT /v1/payments/{order_id}`` — the order service opens the order's payment at
  checkout (its own token, scope ``payments:create``); idempotent by order id.
* ``GET /v1/payments/{order_id}`` — the payment, its history and refunds (the
  customer's own, or any for ``admin``).
* ``POST /v1/payments/{order_id}/confirm`` — the storefront confirms with a
  PaymentMethod id from Stripe.js (``orders:write``, the customer's own order).
* ``POST /v1/payments/{order_id}/refunds`` — an operator refunds (``admin``):
  everything left, some lines, or an amount; ``Idempotency-Key`` makes a retry safe.
* ``POST /v1/payments/stripe-events`` — Stripe's webhook, authenticated by its
  signature alone (``STRIPE_WEBHOOK_SECRET``); a bad or stale one is 400 and
  changes nothing.
"""

from __future__ import annotations

import math
from uuid import UUID

import stripe
from flask import current_app, request
from flask.views import MethodView

from services.payment import handlers, refunds
from services.payment.domain import (
    AmountMismatch,
    AmountRefused,
    NotRefundable,
    PaymentConflict,
    PaymentDeclined,
    PaymentNotPayable,
    RefundRefused,
    RefundRequest,
)
from services.payment.provider import ProviderRefused, ProviderUnavailable
from services.payment.schemas import (
    ConfirmPaymentSchema,
    CreatePaymentSchema,
    PaymentSchema,
    RefundOutSchema,
    RefundSchema,
)
from shared.auth import authenticate, require_scopes
from shared.errors import Problem, ProblemMap
from shared.web import Blueprint, database

blp = Blueprint("payments", __name__, url_prefix="/v1/payments",
                description="Payments of orders: authorize at checkout, capture on shipment, refunds.")

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY_CHARS = 255
SIGNATURE_HEADER = "Stripe-Signature"

PROBLEMS = ProblemMap({
    AmountRefused: (422, "Amount refused", "amount-refused"),
    PaymentConflict: (409, "Payment conflict", "payment-conflict"),
    PaymentNotPayable: (409, "Payment not payable", "payment-not-payable"),
    PaymentDeclined: (402, "Payment declined", "payment-declined"),
    AmountMismatch: (409, "Amount mismatch", "amount-mismatch"),
    NotRefundable: (409, "Not refundable", "not-refundable"),
    RefundRefused: (409, "Refund refused", "refund-refused"),
    ProviderRefused: lambda exc: Problem(
        422 if (exc.http_status or 400) < 500 else 502, "Refused by the payment provider",
        "The payment provider refused the request.", "provider-refused",
        provider_code=exc.code),
    ProviderUnavailable: lambda exc: Problem(
        503, "Payment provider unavailable",
        "The payment provider cannot be reached right now; nothing was charged. Retry later.",
        "payment-provider-unavailable",
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}),
})


def _gateway():
    return current_app.extensions["stripe"]


def _request_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise Problem(400, "Bad Idempotency-Key",
                      f"{IDEMPOTENCY_HEADER} must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable "
                      "characters.", "bad-idempotency-key",
                      errors=[{"field": IDEMPOTENCY_HEADER, "message": "Invalid value."}])
    return key


@blp.route("/<uuid:order_id>")
class PaymentByOrder(MethodView):
    @blp.response(200, PaymentSchema, description="The same lines again: the stored payment (201 "
                                                  "when created)")
    @blp.alt_response(201, description="Payment created with its PaymentIntent")
    @blp.alt_response(409, description="This order already has a payment for other lines")
    @blp.alt_response(422, description="Invalid fields, or prices that make no chargeable amount")
    @blp.alt_response(503, description="The payment provider is unavailable (see Retry-After); "
                                       "nothing was kept")
    @require_scopes("payments:create")
    @blp.arguments(CreatePaymentSchema)
    def put(self, payload, order_id: UUID):
        """Open the order's payment: an uncaptured PaymentIntent for the lines' amount."""
        payment, created = handlers.create_payment(database(), _gateway(), handlers.CreatePayment(
            order_id=order_id, customer_id=payload["customer_id"], currency=payload["currency"],
            lines=[(line["sku"], line["quantity"], line["unit_price"]) for line in payload["lines"]]))
        payment.setdefault("history", [])
        payment.setdefault("refunds", [])
        return payment, 201 if created else 200

    @blp.response(200, PaymentSchema)
    @blp.alt_response(404, description="No payment for this order (or not yours)")
    @require_scopes("orders:read")
    def get(self, order_id: UUID):
        """The order's payment with its history and refunds."""
        return handlers.get_payment(database(), authenticate(), order_id)


@blp.route("/<uuid:order_id>/confirm")
class ConfirmPayment(MethodView):
    @blp.response(200, PaymentSchema, description="Confirmed: AUTHORIZED when the card holds the "
                                                  "amount")
    @blp.alt_response(402, description="The payment method was declined (try another)")
    @blp.alt_response(404, description="No payment for this order (or not yours)")
    @blp.alt_response(409, description="Voided or refused payment, or the provider's amount is "
                                       "not the order's (amount-mismatch: refused and cancelled)")
    @blp.alt_response(503, description="The payment provider is unavailable (see Retry-After)")
    @require_scopes("orders:write")
    @blp.arguments(ConfirmPaymentSchema)
    def post(self, payload, order_id: UUID):
        """Confirm with a PaymentMethod id made by Stripe.js (card data never comes here)."""
        return handlers.confirm_payment(database(), _gateway(), authenticate(), order_id,
                                        payload["payment_method"])


@blp.route("/<uuid:order_id>/refunds")
class Refunds(MethodView):
    @blp.response(201, RefundOutSchema, description="Refunded; its lines go back to stock")
    @blp.alt_response(404, description="No payment for this order")
    @blp.alt_response(409, description="Not captured, or more than is left to refund")
    @blp.alt_response(503, description="The payment provider is unavailable: the refund is kept "
                                       "pending and finished by the worker; see Retry-After")
    @blp.doc(parameters=[{"in": "header", "name": IDEMPOTENCY_HEADER, "required": False,
                          "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
                          "description": "A retry with the same key is the same refund."}])
    @require_scopes("admin")
    @blp.arguments(RefundSchema)
    def post(self, payload, order_id: UUID):
        """Refund a captured payment: ``full``, some ``lines`` (restocked), or an ``amount_minor``."""
        refund_request = RefundRequest(
            full=payload.get("full", False),
            lines=tuple((line["sku"], line["quantity"]) for line in payload.get("lines", ())),
            amount_minor=payload.get("amount_minor"))
        return refunds.refund(database(), _gateway(), authenticate(), order_id, refund_request,
                               _request_key())


@blp.route("/stripe-events")
class StripeEvents(MethodView):
    @blp.response(200, description="Handled (or a duplicate, or not ours)")
    @blp.alt_response(400, description="Missing, bad or stale signature: nothing changed")
    @blp.alt_response(503, description="The provider was needed and is unavailable: Stripe retries")
    def post(self):
        """Stripe's webhook: each signed event once; duplicates and reordering are harmless."""
        settings = current_app.extensions["payment_settings"]
        try:
            event = stripe.Webhook.construct_event(
                request.get_data(), request.headers.get(SIGNATURE_HEADER),
                settings.stripe_webhook_secret.get_secret_value(),
                tolerance=settings.webhook_tolerance_s)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise Problem(400, "Bad webhook", "The event's signature or body is not valid.",
                          "bad-webhook-signature",
                          errors=[{"field": SIGNATURE_HEADER, "message": _reason(exc)}]) from None
        outcome = handlers.on_stripe_event(database(), _gateway(), event.to_dict())
        return {"received": True, "outcome": outcome}


def _reason(exc: Exception) -> str:
    if isinstance(exc, stripe.SignatureVerificationError):
        return "Signature missing, wrong or too old."
    return "Body is not a JSON event."

"""The payment service: Stripe PaymentIntents for orders (authorize, capture, void, refund)."""

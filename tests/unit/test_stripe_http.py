"""services/payment/stripe_http.py: the stripe library over a urllib3 pool, against a loopback server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

import pytest
import stripe

from services.payment.stripe_http import PooledStripeHttpClient
from tests.support.servers import serving

SECRET = "sk_test_unit"  # a made-up test-mode key for a loopback fake


class _FakeStripe(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict] = []
    connections: set[tuple] = set()

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode())
        _FakeStripe.seen.append({"path": self.path, "form": form, "headers": dict(self.headers)})
        _FakeStripe.connections.add(self.client_address)
        if self.path.startswith("/slow"):
            time.sleep(0.6)
        if "declined" in form.get("metadata[case]", []):
            status, reply = 402, {"error": {"type": "card_error", "code": "card_declined",
                                            "message": "Your card was declined."}}
        else:
            status, reply = 200, {"id": "pi_1", "object": "payment_intent", "status":
                                  "requires_payment_method", "amount": int(form["amount"][0]),
                                  "currency": form["currency"][0]}
        body = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Request-Id", "req_unit")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args) -> None:
        pass


@pytest.fixture
def fake_stripe() -> Iterator[str]:
    _FakeStripe.seen, _FakeStripe.connections = [], set()
    with serving(_FakeStripe) as url:
        yield url


def _client(base: str, timeout_s: float = 5.0) -> stripe.StripeClient:
    return stripe.StripeClient(SECRET, base_addresses={"api": base}, max_network_retries=0,
                               http_client=PooledStripeHttpClient(timeout_s))


def _create(client: stripe.StripeClient, **metadata):
    return client.v1.payment_intents.create(
        params={"amount": 1250, "currency": "eur", "capture_method": "manual",
                "metadata": metadata},
        options={"idempotency_key": "order-1-create-intent"})


def test_the_library_request_goes_through_whole_and_the_answer_comes_back_parsed(fake_stripe):
    intent = _create(_client(fake_stripe), order_id="o-1")
    assert (intent.id, intent.status, intent.amount, intent.currency) == (
        "pi_1", "requires_payment_method", 1250, "eur")
    (request,) = _FakeStripe.seen
    assert request["path"] == "/v1/payment_intents"
    assert request["form"]["amount"] == ["1250"]
    assert request["form"]["metadata[order_id]"] == ["o-1"]
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert request["headers"]["Idempotency-Key"] == "order-1-create-intent"
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"


def test_calls_reuse_one_kept_alive_connection(fake_stripe):
    client = _client(fake_stripe)
    for _ in range(5):
        _create(client)
    assert len(_FakeStripe.seen) == 5
    assert len(_FakeStripe.connections) == 1


def test_a_refusal_is_the_library_error_with_its_code(fake_stripe):
    with pytest.raises(stripe.CardError) as refused:
        _create(_client(fake_stripe), case="declined")
    assert refused.value.code == "card_declined"
    assert refused.value.http_status == 402


def test_a_timeout_is_a_retryable_connection_error(fake_stripe):
    client = _client(fake_stripe + "/slow", timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError) as failed:
        _create(client)
    assert time.monotonic() - started < 0.55
    assert failed.value.should_retry is True
    assert SECRET not in str(failed.value)


def test_a_refused_connection_is_a_retryable_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(stripe.APIConnectionError) as failed:
        _create(_client(f"http://127.0.0.1:{port}"))
    assert failed.value.should_retry is True

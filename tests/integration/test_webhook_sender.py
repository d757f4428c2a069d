"""One webhook attempt against real local receivers: outcomes, the per-endpoint breaker,
and the SSRF guard at connect time (no database, no queue)."""

from __future__ import annotations

import pytest

from services.notification.ssrf import UrlPolicy
from services.notification.webhooks import EndpointBreakers, WebhookSender
from tests.support.receiver import Receiver

LOCAL = UrlPolicy(("127.0.0.1",))


@pytest.fixture
def receivers():
    started = []

    def start(script=lambda n: 200) -> Receiver:
        receiver = Receiver(script=script).start()
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        receiver.stop()


def sender(policy=LOCAL, **env) -> WebhookSender:
    return WebhookSender(policy, EndpointBreakers(env), timeout_s=1.0)


def test_outcomes_by_status(receivers):
    ok, gone, failing = receivers(lambda n: 204), receivers(lambda n: 410), receivers(lambda n: 503)
    s = sender()
    assert s.send(ok.url, "k" * 16, "d-1", "order.created", "{}").outcome == "delivered"
    assert s.send(gone.url, "k" * 16, "d-2", "order.created", "{}").outcome == "gone"
    result = s.send(failing.url, "k" * 16, "d-3", "order.created", "{}")
    assert (result.outcome, result.status_code, result.error) == ("retry", 503, "HTTP 503")
    assert result.excerpt == "answer 503 to request 1"
    assert len(ok.verified("k" * 16)) == 1


def test_breaker_stops_calling_a_failing_endpoint(receivers):
    failing, healthy = receivers(lambda n: 500), receivers()
    s = sender(BREAKER_WEBHOOK_FAIL_MAX="2", BREAKER_WEBHOOK_RESET_TIMEOUT_S="60")
    outcomes = [s.send(failing.url, "k" * 16, f"d-{n}", "order.updated", "{}").outcome
                for n in range(4)]
    assert outcomes == ["retry", "retry", "breaker_open", "breaker_open"]
    assert failing.count() == 2  # the open breaker made no request
    # Per endpoint: another endpoint is not affected.
    assert s.send(healthy.url, "k" * 16, "d-9", "order.updated", "{}").outcome == "delivered"


def test_connect_time_guard_blocks_addresses_the_policy_forbids(receivers):
    receiver = receivers()
    result = sender(UrlPolicy()).send(receiver.url, "k" * 16, "d-1", "order.created", "{}")
    assert result.outcome == "blocked" and "loopback" in result.error
    assert receiver.count() == 0  # refused before a byte was sent

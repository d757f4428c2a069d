"""Breakers and retries (no network: the calls are plain functions)."""

from __future__ import annotations

import time

import pytest
import requests

from shared.resilience import (
    RETRY_WAIT_INITIAL_S,
    BreakerOpen,
    BreakerRegistry,
    TransientHttpError,
    resilient_call,
    retry_after_header,
)


def _registry(**env: str) -> BreakerRegistry:
    return BreakerRegistry({"BREAKER_FAIL_MAX": "3", "BREAKER_RESET_TIMEOUT_S": "0.3", **env})


def test_opens_after_fail_max_transient_failures_and_then_fails_fast():
    breaker = _registry().get("peer")
    calls = []

    def down():
        calls.append(1)
        raise requests.ConnectionError("refused")

    for _ in range(3):
        with pytest.raises((requests.ConnectionError, BreakerOpen)):
            resilient_call(breaker, down, attempts=1)
    assert breaker.current_state == "open"
    started = time.perf_counter()
    with pytest.raises(BreakerOpen) as info:
        resilient_call(breaker, down)
    assert (time.perf_counter() - started) < 0.01
    assert len(calls) == 3  # the open breaker did not call
    assert 0 < info.value.retry_after_s <= 0.3
    assert retry_after_header(info.value) == "1"


def test_half_open_trial_call_closes_it_again():
    breaker = _registry().get("peer")
    for _ in range(3):
        with pytest.raises((TransientHttpError, BreakerOpen)):
            resilient_call(breaker, _raise(TransientHttpError(503)), attempts=1)
    time.sleep(0.35)
    assert resilient_call(breaker, lambda: "ok") == "ok"
    assert breaker.current_state == "closed"


def test_transient_errors_are_retried_within_the_attempt_budget():
    breaker = _registry(BREAKER_FAIL_MAX="10").get("peer")
    outcomes = iter([requests.Timeout("slow"), TransientHttpError(502), "done"])

    def flaky():
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert resilient_call(breaker, flaky, attempts=3) == "done"


def test_every_attempt_failing_makes_exactly_the_budget_of_calls_with_the_waits_between():
    breaker = _registry(BREAKER_FAIL_MAX="10").get("peer")
    calls: list[float] = []

    def down():
        calls.append(time.perf_counter())
        raise TransientHttpError(503 + len(calls))

    with pytest.raises(TransientHttpError) as last:
        resilient_call(breaker, down, attempts=3)
    assert len(calls) == 3
    assert last.value.status == 506  # the last attempt's error, not the first's
    gaps = [later - earlier for earlier, later in zip(calls, calls[1:], strict=False)]
    assert all(gap >= RETRY_WAIT_INITIAL_S for gap in gaps), gaps
    assert breaker.fail_counter == 3


def test_caller_errors_are_neither_retried_nor_counted():
    breaker = _registry().get("peer")
    calls = []

    def bad_request():
        calls.append(1)
        raise ValueError("422 from peer")

    for _ in range(5):
        with pytest.raises(ValueError):
            resilient_call(breaker, bad_request)
    assert len(calls) == 5
    assert breaker.current_state == "closed" and breaker.fail_counter == 0


def test_per_breaker_settings_override_the_global_ones():
    registry = _registry(BREAKER_INVENTORY_FAIL_MAX="7")
    assert registry.settings_for("inventory").fail_max == 7
    assert registry.settings_for("other").fail_max == 3
    registry.get("inventory")
    assert registry.snapshot()["inventory"]["fail_max"] == 7


def _raise(exc):
    def fn():
        raise exc

    return fn

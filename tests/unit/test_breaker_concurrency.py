"""Calls through one breaker run concurrently; half-open admits one trial call (no network)."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from shared.resilience import BreakerOpen, BreakerRegistry, resilient_call

THREADS = 8
CALL_S = 0.2
RESET_S = 0.2


def _breaker(fail_max: int = 1):
    return BreakerRegistry({"BREAKER_FAIL_MAX": str(fail_max),
                            "BREAKER_RESET_TIMEOUT_S": str(RESET_S)}).get("peer")


def test_calls_through_one_breaker_run_at_the_same_time():
    breaker = _breaker(fail_max=5)
    in_flight, peak = 0, 0
    lock = threading.Lock()

    def slow_call():
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(CALL_S)
        with lock:
            in_flight -= 1
        return "ok"

    results = []
    threads = [threading.Thread(target=lambda: results.append(resilient_call(breaker, slow_call)))
               for _ in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    assert results == ["ok"] * THREADS
    assert peak == THREADS  # pybreaker's own call() would make this 1
    assert elapsed < CALL_S * THREADS / 2


def _open(breaker) -> None:
    def down():
        raise requests.ConnectionError("refused")

    with pytest.raises((requests.ConnectionError, BreakerOpen)):
        resilient_call(breaker, down, attempts=1)
    assert breaker.current_state == "open"


@pytest.mark.parametrize("trial_succeeds, final_state", [(True, "closed"), (False, "open")])
def test_half_open_admits_one_trial_call_that_decides(trial_succeeds, final_state):
    breaker = _breaker()
    _open(breaker)
    time.sleep(RESET_S + 0.05)
    trial_started, finish_trial = threading.Event(), threading.Event()
    calls = []

    def trial():
        calls.append("trial")
        trial_started.set()
        finish_trial.wait(5)
        if not trial_succeeds:
            raise requests.ConnectionError("still down")
        return "ok"

    outcome = {}

    def run_trial():
        try:
            outcome["value"] = resilient_call(breaker, trial, attempts=1)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion below
            outcome["error"] = exc

    thread = threading.Thread(target=run_trial)
    thread.start()
    assert trial_started.wait(5)
    assert breaker.current_state == "half-open"
    # While the trial runs, everyone else fails fast without calling.
    with pytest.raises(BreakerOpen):
        resilient_call(breaker, lambda: calls.append("other"))
    finish_trial.set()
    thread.join(5)
    assert calls == ["trial"]
    assert breaker.current_state == final_state
    if trial_succeeds:
        assert outcome == {"value": "ok"}
        assert resilient_call(breaker, lambda: "next") == "next"
    else:
        assert isinstance(outcome["error"], BreakerOpen)
        with pytest.raises(BreakerOpen):
            resilient_call(breaker, lambda: calls.append("too early"))
        assert calls == ["trial"]

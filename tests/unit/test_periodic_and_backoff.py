"""The periodic job helper and the one backoff formula (no I/O)."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from shared.backoff import backoff_delay
from shared.messaging.relay import RetryPolicy
from shared.periodic import periodic
from tests.support.logs import capture_logs

LONG_S = 30.0  # an interval no test may wait out


def run_until(task, stop_when, timeout_s: float = 5.0) -> float:
    """Run ``task`` until ``stop_when()`` holds (checked often); return the seconds it took."""

    async def main() -> float:
        stop = asyncio.Event()
        started = time.monotonic()
        runner = asyncio.create_task(task(stop))
        while not stop_when():
            assert time.monotonic() - started < timeout_s, "condition not reached"
            await asyncio.sleep(0.005)
        stop.set()
        await asyncio.wait_for(runner, 2)
        return time.monotonic() - started

    return asyncio.run(main())


# --- periodic ------------------------------------------------------------------------------------
def test_a_full_batch_runs_again_at_once_then_waits_the_interval():
    results = iter([10, 10, 3])
    calls: list[int] = []

    def job() -> int:
        calls.append(1)
        return next(results, 0)

    took = run_until(periodic(job, LONG_S, full_batch=10, error_event="e"), lambda: len(calls) >= 3)
    assert took < 2  # two full batches did not wait the interval
    time.sleep(0.05)
    assert len(calls) == 3  # after a partial batch it waits (and the stop ended that wait)


def test_without_a_full_batch_it_waits_the_interval_between_runs():
    calls: list[float] = []
    task = periodic(lambda: calls.append(time.monotonic()) or 10, 0.1, error_event="e")
    run_until(task, lambda: len(calls) >= 3)
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert all(gap >= 0.09 for gap in gaps)


def test_an_exception_is_logged_and_the_job_keeps_going():
    calls: list[int] = []

    def job() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database down")
        return 0

    with capture_logs() as logs:
        run_until(periodic(job, 0.01, error_event="sweeper_error", started_event="sweeper_started",
                           interval_s=0.01), lambda: len(calls) >= 3)
    assert {"event": "sweeper_started", "interval_s": 0.01, "log_level": "info"} in logs
    errors = [entry for entry in logs if entry["event"] == "sweeper_error"]
    assert errors == [{"event": "sweeper_error", "error": "database down", "log_level": "warning"}]


def test_the_stop_event_ends_the_wait_at_once():
    calls: list[int] = []
    took = run_until(periodic(lambda: calls.append(1), LONG_S, error_event="e"), lambda: calls)
    assert took < 2 and calls == [1]


def test_a_negative_interval_is_refused():
    with pytest.raises(ValueError):
        periodic(lambda: None, -1, error_event="e")


# --- backoff -------------------------------------------------------------------------------------
def test_exponential_from_the_base_up_to_the_cap():
    assert [backoff_delay(n, 2.0, 900.0) for n in range(11)] == [
        2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]
    assert backoff_delay(-3, 2.0, 900.0) == 2.0  # before the first retry: the base


def test_the_exponent_is_clamped_before_the_power():
    assert backoff_delay(10**9, 30.0, 4 * 3600) == 4 * 3600
    assert backoff_delay(25, 1.0, float("inf"), max_exponent=20) == 2.0**20


def test_jitter_modes_stay_in_their_ranges():
    rng = random.Random(7)
    nominal = backoff_delay(3, 1.0, 100.0)
    full = [backoff_delay(3, 1.0, 100.0, jitter="full", rng=rng) for _ in range(300)]
    equal = [backoff_delay(3, 1.0, 100.0, jitter="equal", rng=rng) for _ in range(300)]
    spread = [backoff_delay(3, 1.0, 100.0, jitter=0.2, rng=rng) for _ in range(300)]
    assert all(0 <= d <= nominal for d in full) and min(full) < nominal / 2
    assert all(nominal / 2 <= d <= nominal for d in equal)
    assert all(0.8 * nominal <= d <= 1.2 * nominal for d in spread)
    assert max(spread) > nominal > min(spread)


def test_unknown_jitter_is_refused():
    with pytest.raises(ValueError):
        backoff_delay(1, 1.0, 10.0, jitter="half")
    with pytest.raises(ValueError):
        backoff_delay(1, 1.0, 10.0, jitter=1.5)


def test_the_outbox_retry_policy_keeps_its_schedule():
    policy = RetryPolicy(base_s=0.5, cap_s=10.0)
    for attempts, ceiling in [(1, 1.0), (2, 2.0), (4, 8.0), (5, 10.0), (40, 10.0)]:
        delays = [policy.delay(attempts) for _ in range(100)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), attempts

"""shared/ratelimit_storage.py: limits' in-memory store without a thread per hit."""

from __future__ import annotations

import threading
import time

import pytest
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from shared import ratelimit_storage
from shared.ratelimit_storage import SweptMemoryStorage

SPACING_S = 0.015  # longer than the parent's 10 ms timer: it would start again each time


def _threads_started_for(storage, hits) -> int:
    """Threads ``storage`` started (timers or its sweeper) while ``hits()`` ran.

    Only threads whose work is a method of ``storage`` count: other tests in
    the same process may start threads of their own meanwhile.
    """
    started = []
    original = threading.Thread.start

    def counting(thread):
        work = getattr(thread, "function", None) or getattr(thread, "_target", None)
        if getattr(work, "__self__", None) is storage:
            started.append(thread.name)
        return original(thread)

    threading.Thread.start = counting
    try:
        hits()
    finally:
        threading.Thread.start = original
    return len(started)


def _spaced_hits(storage, count: int = 12) -> None:
    limiter = MovingWindowRateLimiter(storage)
    item = RateLimitItemPerMinute(1000)
    for n in range(count):
        assert limiter.hit(item, "client", str(n % 3))
        time.sleep(SPACING_S)


def test_the_memory_scheme_of_create_limiter_is_the_swept_store():
    assert isinstance(storage_from_string(f"{ratelimit_storage.SCHEME}://"), SweptMemoryStorage)


def test_spaced_hits_start_one_sweeper_thread_not_one_per_hit():
    storage = SweptMemoryStorage()
    try:
        assert _threads_started_for(storage, lambda: _spaced_hits(storage)) == 1
        assert _threads_started_for(storage, lambda: _spaced_hits(storage)) == 0
    finally:
        storage.close()


def test_the_parent_store_does_start_a_thread_per_spaced_hit():
    # What the override exists for; if an upgrade of limits changes this, revisit it.
    storage = MemoryStorage()
    assert _threads_started_for(storage, lambda: _spaced_hits(storage)) >= 10


def test_limits_hold_and_expired_entries_are_swept(monkeypatch):
    monkeypatch.setattr(ratelimit_storage, "SWEEP_S", 0.05)
    storage = SweptMemoryStorage()
    try:
        moving, fixed = MovingWindowRateLimiter(storage), FixedWindowRateLimiter(storage)
        per_second = RateLimitItemPerSecond(3)
        assert [moving.hit(per_second, "ip") for _ in range(4)] == [True, True, True, False]
        assert [fixed.hit(per_second, "other") for _ in range(4)] == [True, True, True, False]
        assert storage.events and storage.storage
        deadline = time.monotonic() + 3
        while (any(storage.events.values()) or storage.storage) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(storage.events.values()) and not storage.storage  # swept: windows ended
        assert moving.hit(per_second, "ip")  # a new window
    finally:
        storage.close()


@pytest.mark.parametrize("limiter_class", [MovingWindowRateLimiter, FixedWindowRateLimiter])
def test_concurrent_hits_never_exceed_the_limit(limiter_class):
    storage = SweptMemoryStorage()
    try:
        limiter = limiter_class(storage)
        item = RateLimitItemPerMinute(50)
        granted = []

        def hammer():
            granted.extend(limiter.hit(item, "shared") for _ in range(40))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert granted.count(True) == 50
    finally:
        storage.close()

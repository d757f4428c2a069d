"""Supervision of a consumer's pollers: restart a crashed one, give up after too many.

A poller runs ``consumer._poll_once`` until stop. An exception escaping one
iteration (processing a message never raises, so this is a bug or an
unforeseen client failure) restarts the poller after a capped exponential
backoff: ``restart_base_s * 2^(n-1)``, at most ``restart_cap_s``; it is
logged (``consumer_poller_crashed``) and reported to the
``on_poller_restart`` hook. A completed iteration resets the count. After
more than ``restart_limit`` crashes in a row the poller raises
:class:`ConsumerFailed`: :func:`run_pollers`
then stops the other pollers, waits for them to drain (the client stays open
until the last one returns) and re-raises, so the worker exits non-zero.

``on_consumer_alive(consumer, alive)`` is True while every poller runs.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from shared.backoff import backoff_delay

log = structlog.get_logger(__name__)


class ConsumerFailed(RuntimeError):
    """A poller kept crashing past ``restart_limit``: the consumer gave up (the worker exits 1)."""


async def run_pollers(consumer, client, halt: asyncio.Event) -> None:
    """Run ``consumer.config.pollers`` supervised pollers until ``halt``; raise a failure."""
    state = _Pollers(consumer)
    tasks = [asyncio.create_task(_poller(consumer, client, halt, state))
             for _ in range(consumer.config.pollers)]
    failure: BaseException | None = None
    try:
        for finished in asyncio.as_completed(tasks):
            try:
                await finished
            except Exception as exc:
                failure = failure or exc
                halt.set()  # the others finish their batch and return
    finally:
        for task in tasks:
            task.cancel()
    if failure is not None:
        raise failure


class _Pollers:
    """How many pollers of a consumer run; tells the hooks when that changes."""

    def __init__(self, consumer):
        self.consumer = consumer
        self.up = consumer.config.pollers
        consumer.hooks.emit("on_consumer_alive", consumer, True)

    def down(self) -> None:
        self.up -= 1
        self.consumer.hooks.emit("on_consumer_alive", self.consumer, False)

    def back(self) -> None:
        self.up += 1
        if self.up == self.consumer.config.pollers:
            self.consumer.hooks.emit("on_consumer_alive", self.consumer, True)


async def _poller(consumer, client, stop: asyncio.Event, state: _Pollers) -> None:
    config = consumer.config
    crashes = 0
    while not stop.is_set():
        try:
            await consumer._poll_once(client, stop)
            crashes = 0
        except Exception as exc:
            crashes += 1
            error = f"{type(exc).__name__}: {exc}"
            if crashes > config.restart_limit:
                log.error("consumer_failed", consumer=consumer.name, crashes=crashes, error=error)
                raise ConsumerFailed(f"{consumer.name}: poller crashed {crashes} times in a row;"
                                     f" last: {error}") from exc
            delay = backoff_delay(crashes - 1, config.restart_base_s, config.restart_cap_s)
            log.error("consumer_poller_crashed", consumer=consumer.name, crashes=crashes,
                      restart_in_s=round(delay, 2), error=error, exc_info=True)
            state.down()
            consumer.hooks.emit("on_poller_restart", consumer, error, delay)
            await wait(stop, delay)
            state.back()


async def wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set, whichever comes first."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def set_when(source: asyncio.Event, target: asyncio.Event) -> None:
    """Set ``target`` once ``source`` is set."""
    await source.wait()
    target.set()

"""Periodic jobs for worker processes: run a batch job every interval until stopped.

``periodic(job, interval_s, ...)`` returns a worker task (a coroutine factory
taking the stop event, as ``WorkerPlan.tasks`` expects) that:

* runs ``job()`` at once, in a thread (jobs do blocking database work);
* runs it again AT ONCE when it reports a full batch (``job()`` returned a
  count ``>= full_batch``): more is probably due, so the backlog drains without
  an interval between batches; otherwise waits ``interval_s`` — fixed, no
  jitter — before the next run;
* survives exceptions: each is logged as a warning (``error_event``, with the
  error text) and the job runs again after the interval;
* stops when the stop event is set: during a wait at once, during a run as
  soon as that run returns (a job is never interrupted halfway).

Several workers may run the same job at once; jobs that must not do the same
work twice claim their rows (e.g. ``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from shared.logging import get_logger

log = get_logger(__name__)

Task = Callable[[asyncio.Event], Awaitable[None]]


def periodic(job: Callable[[], Any], interval_s: float, /, *, error_event: str,
             full_batch: int | None = None, started_event: str | None = None,
             **started_fields: Any) -> Task:
    """A worker task running ``job`` every ``interval_s`` seconds (see the module docstring).

    ``started_event`` (with ``started_fields``) is logged once when the task starts.
    """
    if interval_s < 0:
        raise ValueError(f"interval_s must not be negative, got {interval_s}")

    async def run(stop: asyncio.Event) -> None:
        if started_event:
            log.info(started_event, **started_fields)
        while not stop.is_set():
            try:
                result = await asyncio.to_thread(job)
            except Exception as exc:  # keep going through database hiccups
                log.warning(error_event, error=str(exc))
                result = None
            if full_batch is not None and isinstance(result, int) and result >= full_batch:
                continue  # a full batch: more may be due, go on at once
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    return run

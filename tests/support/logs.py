"""structlog's ``capture_logs`` that sees every level, whatever an earlier test configured.

Every in-process app configures structlog globally (``shared.logging``), some of them at
WARNING (the session's inventory and payment servers): a later test capturing an ``info``
event would then see nothing. This lets everything through while capturing and puts the
previous configuration back afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import structlog
from structlog.testing import capture_logs as _capture_logs


@contextmanager
def capture_logs(processors: Iterable = ()) -> Iterator[list[dict]]:
    """As structlog's: ``processors`` run before the capture (e.g. merge_contextvars)."""
    previous = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with _capture_logs(processors) as logs:
            yield logs
    finally:
        structlog.configure(**previous)

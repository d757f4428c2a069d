"""Rate limits (flask-limiter) whose 429s are problem documents with ``Retry-After``.

Limits are declared on the views themselves with :func:`rate_limit`; the app
factory creates the app's limiter with :func:`create_limiter`, and each
declaration binds to it on the view's first call (a view module is imported
once but may serve several apps, e.g. in tests, each with its own limiter).

Storage: ``RATE_LIMIT_STORAGE_URI`` (default ``memory://``, served by
:class:`shared.ratelimit_storage.SweptMemoryStorage`). The in-memory
store is per process: with gunicorn's 2 workers and N replicas, a limit of L
lets through up to 2*N*L. For a limit that must hold across instances point
it at shared storage, e.g. ``redis://redis:6379/0`` (needs the ``redis``
package) or ``memcached://...`` — the same URI for every process.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Flask, current_app, g, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.errors import RateLimitExceeded
from werkzeug.middleware.proxy_fix import ProxyFix

from shared import ratelimit_storage
from shared.errors import Problem, problem_response
from shared.logging import get_logger

log = get_logger(__name__)

DEFAULT_STORAGE_URI = "memory://"
EXTENSION = "limiter"
_LIMITS = "_rate_limits"


def client_ip() -> str:
    """The caller's address (ProxyFix has already applied trusted X-Forwarded-For hops)."""
    return request.remote_addr or "unknown"


def retry_after_s(limit: RequestLimit) -> int:
    """Whole seconds until ``limit`` lets the next request through (at least 1)."""
    return max(1, math.ceil(limit.reset_at - time.time()))


def _on_breach(limit: RequestLimit):
    retry = retry_after_s(limit)
    log.warning("rate_limited", endpoint=request.endpoint, limit=str(limit.limit), retry_after_s=retry)
    g.rate_limit_problem = Problem(
        429, "Too Many Requests", f"Rate limit exceeded ({limit.limit}); retry later.",
        "too-many-requests", headers={"Retry-After": str(retry)}, retry_after_s=retry)
    return problem_response(g.rate_limit_problem)


def create_limiter(app: Flask, storage_uri: str | None = None, trusted_proxy_hops: int = 0) -> Limiter:
    """A Limiter on ``app`` with no default limits (each route states its own).

    ``trusted_proxy_hops``: how many reverse proxies in front of the app set
    X-Forwarded-For; the per-IP key is then the address they saw.
    """
    if trusted_proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted_proxy_hops)
    storage_uri = storage_uri or DEFAULT_STORAGE_URI
    if storage_uri.startswith("memory://"):  # one sweeper thread, not a thread per hit
        storage_uri = f"{ratelimit_storage.SCHEME}://" + storage_uri[len("memory://"):]
    limiter = Limiter(
        key_func=client_ip, app=app, storage_uri=storage_uri,
        default_limits=[], headers_enabled=False, on_breach=_on_breach,
        # Fail open when shared storage is down: an outage of Redis must not take
        # the API with it; the breach is logged by the library.
        swallow_errors=True, strategy="moving-window",
    )

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(exc: RateLimitExceeded):
        if exc.response is not None:
            return exc.response
        return problem_response(Problem(429, "Too Many Requests", "Rate limit exceeded; retry later.",
                                        "too-many-requests", headers={"Retry-After": "1"}))

    app.extensions[EXTENSION] = limiter
    return limiter


@dataclass(frozen=True)
class _Limit:
    rate: str | Callable[[], str]
    key: Callable[[], str]
    deduct_when: Callable[[Any], bool] | None


def rate_limit(rate: str | Callable[[], str], key: Callable[[], str] = client_ip,
               deduct_when: Callable[[Any], bool] | None = None):
    """Declare a limit on a view function or a MethodView method.

    ``rate``: a limit such as ``"60/minute"``, or a function returning it
    (called per request, so it can come from the app's settings). ``key``:
    what is counted (default: the caller's address). ``deduct_when(response)``:
    count a request only when this is true. Checked before the view runs.
    Stacked declarations keep their order, innermost first, and are checked
    together like stacked flask-limiter decorators.
    """
    limit = _Limit(rate, key, deduct_when)

    def declare(view):
        declared = getattr(view, _LIMITS, None)
        if declared is not None:  # another rate_limit under this one: one wrapper for all
            declared.append(limit)
            return view
        return _limited(view, [limit])

    return declare


def _limited(view, limits: list[_Limit]):
    bound: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def bind(limiter: Limiter):
        with lock:  # binding twice would register (and count) every limit twice
            if limiter not in bound:
                wrapped = view
                for limit in limits:
                    wrapped = limiter.limit(limit.rate, key_func=limit.key,
                                            deduct_when=limit.deduct_when)(wrapped)
                bound[limiter] = wrapped
            return bound[limiter]

    @wraps(view)
    def checked(*args, **kwargs):
        limiter = current_app.extensions[EXTENSION]
        wrapped = bound.get(limiter) or bind(limiter)
        return wrapped(*args, **kwargs)

    setattr(checked, _LIMITS, limits)
    return checked

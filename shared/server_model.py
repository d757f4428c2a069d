"""What an API process must do for the gunicorn worker class it runs under.

Under gevent (``GUNICORN_WORKER_CLASS=gevent``, or ``-k gevent`` as the
notification API always runs) sockets are cooperative but psycopg2's libpq
calls are not: one query would stop every greenlet of the process. psycogreen
makes psycopg2 wait through gevent; it must happen before the first
connection is opened, so :func:`shared.web.base_app` calls
:func:`cooperate_with_the_worker` before any app builds its pool.
"""

from __future__ import annotations

import sys


def gevent_active() -> bool:
    """True when gevent has monkey-patched this process (gunicorn's gevent worker)."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return monkey.is_module_patched("socket")


def cooperate_with_the_worker() -> bool:
    """Make psycopg2 cooperative when running under gevent; True if it did."""
    if not gevent_active():
        return False
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()  # idempotent: it installs one wait callback
    return True

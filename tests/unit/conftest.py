"""Start the lock's installability check as soon as it is selected (see test_lock_installable)."""

from __future__ import annotations


def pytest_collection_finish(session):
    # The check waits on PyPI and pip for tens of seconds: begun now, it runs
    # while the rest of the suite does, and its tests only collect the results.
    if any(item.nodeid.startswith("tests/unit/test_lock_installable.py::") for item in session.items):
        from tests.unit.test_lock_installable import start_checks

        start_checks()

"""Assertions the test files share: problem documents, "nothing was written", queue depths.

One definition each, so every caller checks the same things: a copy that
drifts (one checking ``detail``, another not) silently weakens some tests.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from psycopg2 import sql

from tests.support.wait import wait_until

PROBLEM_TYPE = "application/problem+json"


def assert_problem(response, status: int, type_: str, fields: Iterable[str] = ()) -> dict:
    """An RFC 9457 problem: HTTP ``status``, its media type, type ``/problems/<type_>``,
    the same status in the body, a detail, and at least ``fields`` among its ``errors``.

    Returns the parsed body for further checks.
    """
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM_TYPE
    body = json.loads(response.get_data(as_text=True))
    assert body["type"] == f"/problems/{type_}"
    assert body["status"] == status
    assert body["detail"]
    fields = set(fields)
    if fields:
        reported = {error["field"] for error in body.get("errors", [])}
        assert fields <= reported, body
    return body


def row_counts(db, tables: Iterable[str]) -> dict[str, int]:
    """Rows in each of ``tables`` of ``db``'s schema."""
    counts = {}
    with db.transaction() as cur:
        for table in tables:
            cur.execute(sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table)))
            counts[table] = cur.fetchone()["n"]
    return counts


@contextlib.contextmanager
def nothing_written(db, tables: Iterable[str],
                    snapshot: Callable[[], Any] | None = None) -> Iterator[None]:
    """The block leaves the row count of every table in ``tables`` (and ``snapshot()``,
    when given, e.g. the stock of every product) exactly as it found them."""
    tables = tuple(tables)

    def state():
        return row_counts(db, tables), snapshot() if snapshot else None

    before = state()
    yield
    assert state() == before


def queue_depths(sqs, url: str) -> tuple[int, int]:
    """``(visible, in flight)`` messages of the queue at ``url``."""
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                      "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def queue_is_empty(sqs, url: str) -> bool:
    """Nothing visible or in flight in the queue."""
    return queue_depths(sqs, url) == (0, 0)


def assert_queue_empty(sqs, url: str, timeout: float = 10.0) -> None:
    """Within ``timeout``, nothing visible or in flight, and a receive gets nothing
    (the messages were deleted, not merely hidden)."""
    wait_until(lambda: queue_is_empty(sqs, url), timeout=timeout, interval=0.2,
               message="queue empty")
    response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    assert response.get("Messages", []) == []

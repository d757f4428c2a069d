"""Which database errors mean "the database is unreachable", and how an API answers them (no I/O).

A lost or refused connection is no bug: every API answers it 503
``database-unavailable`` with ``Retry-After`` (and logs one line, no traceback).
A statement's own failure (a timeout, a deadlock, a constraint) is still
unexpected at the HTTP layer: a logged 500. The pool's behaviour against a real
server is in tests/integration/test_db_restart.py.
"""

from __future__ import annotations

import psycopg2
import psycopg2.errors
import pytest
from flask import Flask

from shared.db import PoolExhausted, connection_lost
from shared.errors import PROBLEM_MEDIA_TYPE, register_problem_handlers

LOST = [
    psycopg2.OperationalError("server closed the connection unexpectedly"),
    psycopg2.OperationalError('connection to server on socket "/x/.s.PGSQL.5432" failed: '
                              "No such file or directory"),
    psycopg2.InterfaceError("connection already closed"),
    psycopg2.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg2.errors.CannotConnectNow("the database system is starting up"),
    psycopg2.errors.TooManyConnections("sorry, too many clients already"),
    psycopg2.errors.ConnectionFailure("connection failure"),
]
STATEMENT_FAILURES = [
    psycopg2.errors.QueryCanceled("canceling statement due to statement timeout"),
    psycopg2.errors.DeadlockDetected("deadlock detected"),
    psycopg2.errors.UniqueViolation("duplicate key value"),
    psycopg2.errors.RaiseException("injected"),
    psycopg2.DatabaseError("something else"),
]


def _ids(errors):
    return [type(error).__name__ for error in errors]


@pytest.mark.parametrize("error", LOST, ids=_ids(LOST))
def test_a_lost_or_refused_connection_is_connection_level(error):
    assert connection_lost(error)


@pytest.mark.parametrize("error", STATEMENT_FAILURES, ids=_ids(STATEMENT_FAILURES))
def test_a_statement_failure_is_not(error):
    assert not connection_lost(error)


def _client_raising(error: Exception):
    app = Flask(__name__)
    register_problem_handlers(app)

    @app.get("/work")
    def work():
        raise error

    return app.test_client()


@pytest.mark.parametrize("error", [*LOST, PoolExhausted("no database connection free within 10s")],
                         ids=[*_ids(LOST), "PoolExhausted"])
def test_an_api_answers_an_unreachable_database_503_with_retry_after(error):
    response = _client_raising(error).get("/work")
    assert response.status_code == 503
    assert response.mimetype == PROBLEM_MEDIA_TYPE
    assert response.get_json()["type"] == "/problems/database-unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert "PGSQL" not in response.get_data(as_text=True)  # no server detail leaks


@pytest.mark.parametrize("error", STATEMENT_FAILURES, ids=_ids(STATEMENT_FAILURES))
def test_a_statement_failure_is_still_a_generic_500(error):
    response = _client_raising(error).get("/work")
    assert response.status_code == 500
    assert response.get_json()["type"] == "/problems/internal-error"

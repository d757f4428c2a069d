"""schemathesis against each service's own OpenAPI document (in process, real Postgres).

For every operation, generated requests (valid and invalid) must never get a
5xx, and every response must be documented: its status, its media type
(problems are ``application/problem+json``), its body's schema and the
headers declared as always present. A drift between an API and its document
fails here.
Bounded: SCHEMATHESIS_MAX_EXAMPLES (default 12) examples per operation.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.auth import SCOPES
from tests.support.servers import AppServer
from tests.support.tokens import TEST_SIGNER

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
SERVICES = ("order", "delivery", "inventory", "notification", "auth", "payment", "ops")
# Server-sent event streams never end by themselves; their own tests drive them
# (tests/integration/test_notification_stream.py).
STREAMING = {("notification", "GET /v1/notifications/stream")}


@pytest.fixture
def ops_with_peers(app_for, catalog):
    """The ops app with the services its order look-up asks over HTTP (else each is a 503)."""
    servers = {name: AppServer(app_for(name), name) for name in ("order", "delivery", "notification")}
    yield app_for("ops", **{f"{name.upper()}_URL": server.url for name, server in servers.items()})
    for server in servers.values():
        server.stop()


def _app(request, service):
    if service == "ops":
        return request.getfixturevalue("ops_with_peers")
    return request.getfixturevalue(f"{service}_app")


@pytest.mark.parametrize("service", SERVICES)
def test_no_5xx_and_responses_match_the_schema(request, service):
    app = _app(request, service)
    # Mostly an operator's token with every scope, so requests reach the handlers; now and
    # then no token, or one without scopes, so the documented 401s and 403s are held too.
    operator = TEST_SIGNER.sign(TEST_SIGNER.claims("schemathesis-operator", SCOPES, 3600))
    scopeless = TEST_SIGNER.sign(TEST_SIGNER.claims("schemathesis-nobody", [], 3600))
    callers = st.sampled_from([operator, operator, operator, None, scopeless])
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    failures = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if (service, operation.label) in STREAMING:
            continue
        operations += 1

        @given(case=operation.as_strategy(), token=callers)
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def check(case, token):
            # The auth service's own endpoints authenticate clients (HTTP Basic), not bearers.
            headers = {"Authorization": f"Bearer {token}"} if token and service != "auth" else None
            response = case.call(headers=headers)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert operations > 0
    assert not failures, "\n\n".join(failures)

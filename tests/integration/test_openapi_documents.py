"""docs/openapi/ holds what each service serves as /openapi.json (no drift), and that is sound.

The files are written by ``make openapi`` (scripts/gen_openapi.py); this test
builds the same documents on the test database and compares.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from shared.errors import PROBLEM_MEDIA_TYPE
from shared.services import SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_openapi", ROOT / "scripts" / "gen_openapi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(database_url) -> dict[str, str]:
    return _generator().documents(database_url)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_the_committed_document_is_what_the_service_serves(generated, service):
    committed = ROOT / "docs" / "openapi" / f"{service}.json"
    assert committed.exists(), f"{committed.name} is missing: run `make openapi`"
    assert committed.read_text() == generated[service], f"{committed.name} is out of date: run `make openapi`"


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_error_is_a_problem_and_every_operation_says_how_to_authenticate(generated, service):
    document = json.loads(generated[service])
    validate(document)  # a valid OpenAPI 3.0 document
    assert "Error" not in document["components"].get("schemas", {})
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":  # the path's own, not an operation
                continue
            label = f"{method.upper()} {path}"
            assert "default" not in operation["responses"], label
            assert "500" in operation["responses"], label
            assert "security" in operation, label
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                media_types = set(response.get("content", {}))
                # RFC 6749 errors of the OAuth2 endpoints are plain JSON by that RFC.
                assert media_types in ({PROBLEM_MEDIA_TYPE}, {"application/json"}), (label, status)
                if media_types == {"application/json"}:
                    assert path.startswith("/oauth/") and status in ("400", "401"), (label, status)

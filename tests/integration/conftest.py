"""Fixtures for the integration tests: the SQS backends of the messaging contract tests."""

from __future__ import annotations

import os

import pytest

from tests.support.backends import BACKEND_NAMES, MOTO, Backend, BackendPool, BackendUnavailable


@pytest.fixture(scope="session")
def backend_pool(sqs_endpoint, tmp_path_factory):
    """Every SQS backend this machine offers, each started at most once per session."""
    env_endpoint = os.environ.get("SQS_ENDPOINT_URL") or None
    pool = BackendPool(tmp_path_factory.mktemp("backends"), sqs_endpoint,
                       suite_endpoint_is_moto=env_endpoint is None, env_endpoint=env_endpoint)
    yield pool
    pool.close()


# Every backend but the suite's own moto server is a process started for it: slow.
@pytest.fixture(params=[name if name == MOTO else pytest.param(name, marks=pytest.mark.slow)
                        for name in BACKEND_NAMES])
def backend(request, backend_pool) -> Backend:
    """One SQS implementation per parameter; an absent one is skipped with the reason."""
    try:
        return backend_pool.get(request.param)
    except BackendUnavailable as exc:
        pytest.skip(f"SQS backend {request.param} unavailable: {exc}")

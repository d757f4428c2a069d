"""docker-compose.yml and the Dockerfile: valid, complete, and at parity with ``make run``.

No container engine runs here: the compose file is validated against the
Compose Specification's JSON schema (vendored in ``infra/schemas/`` from
compose-spec/compose-spec) and checked against the service list, the ports,
the topology's worker set and the settings declarations; the Dockerfile is
read for what the image must (not) carry. ``tests/unit/test_infra_config.py``
checks the compose wiring of Postgres, ElasticMQ and the auth client.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from shared.queues import TOPOLOGY
from shared.services import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "infra" / "schemas" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"
IMAGE = "order-platform:local"
# Variables the app containers get that are not settings of ours: boto3 reads them.
BOTO_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}


def _load(name: str, path: Path):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _app_containers(compose: dict) -> dict[str, dict]:
    return {n: s for n, s in compose["services"].items() if s.get("image") == IMAGE}


def _env(service: dict) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def test_the_compose_file_is_valid_against_the_compose_specification():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(_compose()), key=str)
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []


def test_the_schema_check_does_catch_an_invalid_file():
    schema = json.loads(SCHEMA.read_text())
    broken = _compose()
    broken["services"]["order-api"]["healthcheck"]["intervall"] = "5s"
    broken["services"]["order-worker"]["depends_on"] = {"bootstrap": {"condition": "sometime"}}
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_every_service_api_and_worker_of_the_service_list_runs():
    services = _compose()["services"]
    for svc in SERVICES:
        api = services[f"{svc.name}-api"]
        assert _env(api)["PORT"] == str(svc.port)
        assert f"127.0.0.1:{svc.port}:{svc.port}" in api["ports"]
        assert api["command"][-1] == svc.app
        assert list(svc.gunicorn_args) == api["command"][3:-1]
        assert api["healthcheck"]["test"] == ["CMD", "python", "infra/healthcheck.py"]
        worker = services.get(f"{svc.name}-worker")
        if svc.worker is None:
            assert worker is None
            continue
        assert worker["command"] == ["python", "-m", svc.worker]
        # The worker's healthcheck probes its metrics endpoint, so the port must be set.
        assert int(_env(worker)["WORKER_METRICS_PORT"]) > 0
        assert worker["healthcheck"]["test"] == ["CMD", "python", "infra/healthcheck.py"]
    # Every queue's producer (its outbox relay) and consumers run in a worker.
    for spec in TOPOLOGY:
        for name in (spec.producer, *spec.consumers):
            assert f"{name}-worker" in services, (spec.name, name)
    expected = {f"{s.name}-api" for s in SERVICES} | {f"{s.name}-worker" for s in SERVICES if s.worker}
    long_running = {n for n, s in _app_containers(_compose()).items() if s.get("restart") != "no"}
    assert long_running == expected


def test_every_variable_the_compose_file_sets_is_a_declared_setting():
    gen = _load("gen_k8s", ROOT / "scripts" / "gen_k8s.py")
    declared = {v for variables in gen.scopes().values() for v in variables}
    for name, service in _app_containers(_compose()).items():
        unknown = set(_env(service)) - declared - BOTO_VARIABLES
        assert unknown == set(), f"{name}: {sorted(unknown)}"


def test_emulators_are_healthy_before_the_services_start():
    services = _compose()["services"]
    assert "healthcheck" in services["elasticmq"] and "healthcheck" in services["postgres"]
    for name, service in _app_containers(_compose()).items():
        deps = service.get("depends_on", {})
        assert deps.get("postgres", {}).get("condition") == "service_healthy", name
        if name != "bootstrap":
            assert deps["elasticmq"]["condition"] == "service_healthy", name


def test_the_demo_catalog_and_identities_are_seeded_where_the_host_reads_them():
    services = _compose()["services"]
    demo = services["auth-demo"]
    assert demo["command"][:2] == ["python", "infra/compose_demo.py"]
    credentials = Path(demo["command"][2])
    # scripts/token reads .data/demo-credentials.json (devstack's DATA_DIR), as after `make run`.
    assert f"./.data:{credentials.parent}" in demo["volumes"]
    assert credentials.name == "demo-credentials.json"
    assert re.fullmatch(r"\$\{HOST_UID:-\d+\}:\$\{HOST_GID:-\d+\}", demo["user"])
    # auth-demo gives clients it does not know a new secret: the order client's is set after it.
    assert services["auth-setup"]["depends_on"]["auth-demo"]["condition"] == \
        "service_completed_successfully"
    assert services["order-api"]["depends_on"]["auth-setup"]["condition"] == \
        "service_completed_successfully"
    assert services["inventory-api"]["depends_on"]["inventory-seed"]["condition"] == \
        "service_completed_successfully"
    for one_shot in ("bootstrap", "inventory-seed", "auth-demo", "auth-setup"):
        assert services[one_shot]["restart"] == "no", one_shot


def test_the_image_carries_only_the_runtime_as_a_numeric_non_root_user():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)", text, flags=re.M)
    assert stages == ["build", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert "pip install -c requirements.lock ." in text
    assert re.search(r"^USER \d+:\d+$", runtime, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*infra/healthcheck.py", runtime, flags=re.M)
    copies = re.findall(r"^COPY (.+)$", runtime, flags=re.M)
    assert not any("devstack" in c or "tests" in c or "scripts" in c for c in copies), copies
    for needed in ("infra/healthcheck.py", "infra/compose_demo.py", "infra/gunicorn.conf.py"):
        assert needed in runtime
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"devstack", "tests", "scripts", ".data", ".venv"} <= set(ignored)


@pytest.mark.parametrize("env, url", [
    ({"PORT": "8001"}, "http://127.0.0.1:8001/health/ready"),
    ({"WORKER_METRICS_PORT": "9100"}, "http://127.0.0.1:9100/metrics"),
    ({"WORKER_METRICS_PORT": "0"}, None),
    ({}, None),
])
def test_the_image_healthcheck_probes_what_the_container_runs(env, url):
    healthcheck = _load("infra_healthcheck", ROOT / "infra" / "healthcheck.py")
    assert healthcheck.target(env) == url

"""The infrastructure files agree with the topology and with each other.

``elasticmq.conf`` and ``infra/sqs-queues.cfn.yaml`` are generated from
the topology (``shared/queues.py``) by ``scripts/gen_infra.py``;
``docker-compose.yml`` is written by hand (``tests/unit/test_compose.py``
validates it against the Compose Specification). These tests read the committed files (no network, no
processes) and check them against the topology and ``shared.services``. Each
checker returns a list of problems, and is also run on a deliberately broken
copy to show it does catch them.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import re
import runpy
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from pyhocon import ConfigFactory

from shared.config import SQS_EMULATOR_PORT
from shared.queues import QUEUES, all_queue_names
from shared.services import port_of, service

ROOT = Path(__file__).resolve().parents[2]
ELASTICMQ_CONF = ROOT / "elasticmq.conf"
CFN_TEMPLATE = ROOT / "infra" / "sqs-queues.cfn.yaml"
COMPOSE = ROOT / "docker-compose.yml"
GUNICORN_CONF = ROOT / "infra" / "gunicorn.conf.py"
INCLUDE_LINE = 'include classpath("application.conf")'
APP_SERVICES = ("order", "delivery", "inventory", "notification", "payment")
# Services with an API but no worker (they neither consume nor publish messages).
API_ONLY_SERVICES = ("auth", "ops")


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_infra", ROOT / "scripts" / "gen_infra.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ elasticmq


def _seconds(value) -> float:
    """A HOCON duration (as pyhocon parses it) or a number, in seconds."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, int | float):
        return float(value)
    if hasattr(value, "seconds") and hasattr(value, "days"):  # dateutil relativedelta
        return (value.days * 86400 + value.hours * 3600 + value.minutes * 60 + value.seconds
                + value.microseconds / 1e6)
    match = re.fullmatch(r"\s*(\d+)\s*(s|seconds?)?\s*", str(value))
    if match is None:
        raise AssertionError(f"not a duration: {value!r}")
    return float(match.group(1))


def parse_elasticmq(text: str):
    """Parse ElasticMQ's HOCON (pyhocon cannot resolve ``include classpath``)."""
    return ConfigFactory.parse_string(text.replace(INCLUDE_LINE, ""))


def elasticmq_queues(conf) -> dict:
    """Queue name -> its config tree (pyhocon keeps the quotes of quoted keys)."""
    return {key.strip('"'): dict.__getitem__(conf["queues"], key) for key in conf["queues"]}


def elasticmq_problems(text: str) -> list[str]:
    """Everything in an elasticmq.conf text that disagrees with the topology."""
    problems = []
    if INCLUDE_LINE not in text:
        problems.append("missing the application.conf include (ElasticMQ's defaults)")
    conf = parse_elasticmq(text)
    if conf.get("node-address.host") != "*":
        problems.append("node-address.host must be '*' (URLs from the Host header)")
    if conf.get("rest-sqs.bind-port") != SQS_EMULATOR_PORT:
        problems.append(f"rest-sqs.bind-port must be {SQS_EMULATOR_PORT}")
    if conf.get("rest-sqs.bind-hostname") != "0.0.0.0":
        problems.append("rest-sqs must bind 0.0.0.0 inside its container")
    queues = elasticmq_queues(conf)
    order = list(queues)
    for spec in QUEUES:
        queue = queues.get(spec.name)
        dlq = queues.get(spec.dlq_name)
        if queue is None:
            problems.append(f"{spec.name}: not declared")
            continue
        if dlq is None:
            problems.append(f"{spec.dlq_name}: DLQ of {spec.name} not declared")
        else:
            if bool(dlq.get("fifo", False)) != spec.fifo:
                problems.append(f"{spec.dlq_name}: fifo must be {spec.fifo}")
            if order.index(spec.dlq_name) > order.index(spec.name):
                problems.append(f"{spec.dlq_name}: must be declared before {spec.name}")
        if bool(queue.get("fifo", False)) != spec.fifo:
            problems.append(f"{spec.name}: fifo must be {spec.fifo}")
        if spec.fifo and queue.get("contentBasedDeduplication", None) is not False:
            problems.append(f"{spec.name}: contentBasedDeduplication must be false")
        if _seconds(queue.get("defaultVisibilityTimeout", 30)) != spec.visibility_timeout_s:
            problems.append(f"{spec.name}: defaultVisibilityTimeout must be "
                            f"{spec.visibility_timeout_s} seconds")
        redrive = queue.get("deadLettersQueue", None)
        if redrive is None:
            problems.append(f"{spec.name}: no deadLettersQueue")
            continue
        if redrive.get("name") != spec.dlq_name:
            problems.append(f"{spec.name}: deadLettersQueue.name must be {spec.dlq_name}")
        if redrive.get("maxReceiveCount") != spec.max_receive_count:
            problems.append(f"{spec.name}: maxReceiveCount must be {spec.max_receive_count}")
    extra = set(queues) - set(all_queue_names())
    if extra:
        problems.append(f"queues not in the topology: {sorted(extra)}")
    return problems


def test_elasticmq_conf_declares_every_queue_as_the_topology_says():
    assert elasticmq_problems(ELASTICMQ_CONF.read_text()) == []


def test_elasticmq_conf_queue_set_is_exactly_the_topology():
    queues = elasticmq_queues(parse_elasticmq(ELASTICMQ_CONF.read_text()))
    assert sorted(queues) == sorted(all_queue_names())
    first = QUEUES[0]
    assert queues[first.name]["deadLettersQueue"]["name"] == first.dlq_name
    assert queues[first.name]["deadLettersQueue"]["maxReceiveCount"] == first.max_receive_count
    assert queues[first.name]["fifo"] is first.fifo


@pytest.mark.parametrize("mutation, expected", [
    (lambda t: t.replace("maxReceiveCount = 5", "maxReceiveCount = 7", 1), "maxReceiveCount"),
    (lambda t: t.replace("defaultVisibilityTimeout = 30 seconds",
                         "defaultVisibilityTimeout = 31 seconds", 1), "defaultVisibilityTimeout"),
    (lambda t: t.replace("fifo = true", "fifo = false", 1), "fifo must be True"),
    (lambda t: t.replace(f'name = "{QUEUES[0].dlq_name}"', 'name = "other-dlq.fifo"'),
     "deadLettersQueue.name"),
    (lambda t: t.replace(f'"{QUEUES[-1].name}" {{', '"renamed.fifo" {'), "not declared"),
    (lambda t: t.replace('host = "*"', "host = localhost"), "node-address.host"),
])
def test_elasticmq_checker_catches_drift(mutation, expected):
    broken = mutation(ELASTICMQ_CONF.read_text())
    assert broken != ELASTICMQ_CONF.read_text(), "mutation did not apply"
    problems = elasticmq_problems(broken)
    assert any(expected in p for p in problems), problems


def test_committed_generated_files_equal_the_generator_output():
    gen = _load_generator()
    assert ELASTICMQ_CONF.read_text() == gen.elasticmq_conf(), \
        "elasticmq.conf is stale: run `make elasticmq-conf`"
    assert CFN_TEMPLATE.read_text() == gen.cfn_template(), \
        "infra/sqs-queues.cfn.yaml is stale: run `make elasticmq-conf`"


# ------------------------------------------------------------- CloudFormation


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation's short-form tags as {"!Tag": value}."""


def _tag(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node)
    else:
        value = loader.construct_mapping(node)
    return {"!" + tag_suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


def cfn_problems(text: str) -> list[str]:
    """Everything in a CloudFormation template that disagrees with the topology."""
    template = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
    problems = []
    if "QueuePrefix" not in template.get("Parameters", {}):
        problems.append("no QueuePrefix parameter")
    by_name = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::SQS::Queue":
            continue
        name = resource["Properties"]["QueueName"].get("!Sub", "")
        if not name.startswith("${QueuePrefix}"):
            problems.append(f"{logical_id}: QueueName must start with ${{QueuePrefix}}")
        by_name[name.removeprefix("${QueuePrefix}")] = (logical_id, resource["Properties"])
    if sorted(by_name) != sorted(all_queue_names()):
        problems.append(f"queues {sorted(by_name)} != topology {sorted(all_queue_names())}")
    for spec in QUEUES:
        if spec.name not in by_name or spec.dlq_name not in by_name:
            continue
        _, props = by_name[spec.name]
        dlq_id, dlq_props = by_name[spec.dlq_name]
        if bool(props.get("FifoQueue", False)) != spec.fifo:
            problems.append(f"{spec.name}: FifoQueue must be {spec.fifo}")
        if bool(dlq_props.get("FifoQueue", False)) != spec.fifo:
            problems.append(f"{spec.dlq_name}: FifoQueue must be {spec.fifo}")
        if props.get("VisibilityTimeout") != spec.visibility_timeout_s:
            problems.append(f"{spec.name}: VisibilityTimeout must be {spec.visibility_timeout_s}")
        redrive = props.get("RedrivePolicy") or {}
        if redrive.get("deadLetterTargetArn") != {"!GetAtt": f"{dlq_id}.Arn"}:
            problems.append(f"{spec.name}: RedrivePolicy must target {spec.dlq_name}")
        if redrive.get("maxReceiveCount") != spec.max_receive_count:
            problems.append(f"{spec.name}: maxReceiveCount must be {spec.max_receive_count}")
    return problems


def test_cloudformation_template_declares_the_topology():
    assert cfn_problems(CFN_TEMPLATE.read_text()) == []


def test_cloudformation_checker_catches_drift():
    text = CFN_TEMPLATE.read_text()
    broken = text.replace("maxReceiveCount: 5", "maxReceiveCount: 6", 1)
    assert any("maxReceiveCount" in p for p in cfn_problems(broken))
    dropped = text.replace(f'"${{QueuePrefix}}{QUEUES[0].dlq_name}"', '"${QueuePrefix}x.fifo"')
    assert any("!= topology" in p for p in cfn_problems(dropped))


# ------------------------------------------------------------- docker-compose


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the KEY=value list form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _app_services(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items()
            if name.endswith(("-api", "-worker")) or name == "bootstrap"}


def test_compose_has_every_process():
    services = _compose()["services"]
    expected = {"postgres", "elasticmq", "bootstrap"}
    for name in APP_SERVICES:
        expected |= {f"{name}-api", f"{name}-worker"}
    expected |= {f"{name}-api" for name in API_ONLY_SERVICES}
    assert expected <= set(services), sorted(expected - set(services))
    assert services["postgres"]["image"].split(":")[1].startswith("16")
    assert services["elasticmq"]["image"].startswith("softwaremill/elasticmq-native")
    assert "healthcheck" in services["postgres"]


def test_compose_api_ports_match_service_ports():
    services = _compose()["services"]
    for name in APP_SERVICES + API_ONLY_SERVICES:
        api = services[f"{name}-api"]
        port = port_of(name)
        assert _env(api).get("PORT") == str(port), f"{name}-api must listen on {port}"
        published = [str(p).rsplit(":", 2)[-2:] for p in api.get("ports", [])]
        assert [str(port), str(port)] in published, f"{name}-api must publish {port}:{port}"
        command = " ".join(api["command"])
        assert f"services.{name}.app:create_app()" in command
        assert "infra/gunicorn.conf.py" in command
        if name in API_ONLY_SERVICES:
            assert f"{name}-worker" not in services
            continue
        worker = " ".join(services[f"{name}-worker"]["command"])
        assert f"services.{name}.worker" in worker


def test_compose_app_env_points_at_compose_postgres_and_elasticmq():
    compose = _compose()
    services = compose["services"]
    pg_env = _env(services["postgres"])
    apps = _app_services(compose)
    assert len(apps) == 1 + 2 * len(APP_SERVICES) + len(API_ONLY_SERVICES)
    for name, svc in apps.items():
        env = _env(svc)
        db = urlsplit(env.get("DATABASE_URL", ""))
        assert db.scheme in ("postgresql", "postgres"), name
        assert db.hostname == "postgres" and (db.port or 5432) == 5432, name
        assert db.username == pg_env["POSTGRES_USER"], name
        assert db.password == pg_env["POSTGRES_PASSWORD"], name
        assert db.path.lstrip("/") == pg_env["POSTGRES_DB"], name
        sqs = urlsplit(env.get("SQS_ENDPOINT_URL", ""))
        assert (sqs.hostname, sqs.port) == ("elasticmq", SQS_EMULATOR_PORT), name
        assert env.get("LOG_FORMAT") == "json", name
        if name != "bootstrap":
            deps = svc.get("depends_on", {})
            assert deps.get("bootstrap", {}).get("condition") == "service_completed_successfully"
    assert _env(services["delivery-worker"]).get("DELIVERY_SIMULATOR_ENABLED") == "true"


def test_compose_region_matches_elasticmq_arns():
    region = parse_elasticmq(ELASTICMQ_CONF.read_text()).get("aws.region")
    for name, svc in _app_services(_compose()).items():
        assert _env(svc).get("AWS_REGION") == region, name


def test_compose_mounts_the_generated_elasticmq_conf():
    elasticmq = _compose()["services"]["elasticmq"]
    mounts = [str(v) for v in elasticmq.get("volumes", [])]
    assert any(m.split(":")[:2] == ["./elasticmq.conf", "/opt/elasticmq.conf"] for m in mounts), \
        mounts
    ports = [str(p) for p in elasticmq.get("ports", [])]
    assert any(p.endswith(f"{SQS_EMULATOR_PORT}:{SQS_EMULATOR_PORT}") for p in ports), ports


def test_bootstrap_migrates_without_redeclaring_queues():
    command = _compose()["services"]["bootstrap"]["command"]
    assert command[:3] == ["python", "-m", "shared.bootstrap"]
    assert "--skip-queues" in command
    assert set(APP_SERVICES + API_ONLY_SERVICES) <= set(command[3:]), \
        "every service's schema is migrated"


def test_the_order_service_client_is_registered_with_the_secret_the_order_service_gets():
    services = _compose()["services"]
    setup = services["auth-setup"]
    command = setup["command"]
    assert command[:4] == ["python", "-m", "services.auth.cli", "ensure-client"]
    assert command[command.index("--client-id") + 1] == _env(services["order-api"])["ORDER_CLIENT_ID"]
    assert command[command.index("--secret-env") + 1] == "ORDER_CLIENT_SECRET"
    assert _env(setup)["ORDER_CLIENT_SECRET"] == _env(services["order-api"])["ORDER_CLIENT_SECRET"]
    assert setup["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"


def test_every_app_process_knows_where_the_auth_service_is():
    for name, svc in _app_services(_compose()).items():
        url = urlsplit(_env(svc).get("AUTH_URL", ""))
        assert (url.hostname, url.port) == ("auth-api", port_of("auth")), name


def test_inventory_is_seeded_after_bootstrap_and_reachable_by_the_order_service():
    services = _compose()["services"]
    seed = services["inventory-seed"]
    assert seed["command"] == ["python", "-m", "services.inventory.seed"]
    assert seed["restart"] == "no"
    assert seed["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
    url = urlsplit(_env(services["order-api"]).get("INVENTORY_URL", ""))
    assert (url.hostname, url.port) == ("inventory-api", port_of("inventory"))


# ------------------------------------------------------------------- gunicorn


def test_gunicorn_conf_is_env_driven(monkeypatch):
    for name in ("BIND", "WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_CONTROL_SOCKET",
                 "GUNICORN_WORKER_CLASS", "GUNICORN_WORKER_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PORT", "8002")
    conf = runpy.run_path(str(GUNICORN_CONF))
    assert conf["bind"] == ["0.0.0.0:8002"]
    assert (conf["worker_class"], conf["workers"], conf["threads"]) == ("gthread", 2, 8)
    assert conf["graceful_timeout"] == 10
    assert conf["accesslog"] is None
    assert conf["max_requests"] > 0 and conf["max_requests_jitter"] > 0
    assert conf["control_socket_disable"] is True

    monkeypatch.setenv("BIND", "127.0.0.1:9000")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("GUNICORN_THREADS", "4")
    conf = runpy.run_path(str(GUNICORN_CONF))
    assert (conf["bind"], conf["workers"], conf["threads"]) == (["127.0.0.1:9000"], 3, 4)

    monkeypatch.setenv("GUNICORN_WORKER_CLASS", "gevent")
    monkeypatch.setenv("GUNICORN_WORKER_CONNECTIONS", "500")
    conf = runpy.run_path(str(GUNICORN_CONF))
    assert (conf["worker_class"], conf["worker_connections"]) == ("gevent", 500)
    monkeypatch.setenv("GUNICORN_WORKER_CLASS", "eventlet")  # not one we make cooperative
    with pytest.raises(SystemExit, match="GUNICORN_WORKER_CLASS"):
        runpy.run_path(str(GUNICORN_CONF))


@pytest.mark.parametrize("worker_class, recycled_after", [("gevent", 0), ("gthread", 5000)])
def test_stream_holding_workers_are_never_recycled_by_request_count(monkeypatch, worker_class,
                                                                     recycled_after):
    """A gevent worker with 10,000 SSE streams was restarted after ~5,000 requests (bench_sse)."""
    from types import SimpleNamespace

    from gunicorn.config import Config

    monkeypatch.delenv("GUNICORN_CONTROL_SOCKET", raising=False)
    conf = runpy.run_path(str(GUNICORN_CONF))
    cfg = Config()
    cfg.set("worker_class", worker_class)
    cfg.set("max_requests", conf["max_requests"])
    conf["_no_recycling_for_streams"](SimpleNamespace(cfg=cfg, log=SimpleNamespace(info=print)))
    assert cfg.max_requests == recycled_after


def test_notification_api_runs_gevent_workers():
    # Long-lived SSE streams: one greenlet per client, not one thread (README, Notification).
    command = _compose()["services"]["notification-api"]["command"]
    assert command[command.index("--worker-class") + 1] == "gevent"
    # make run and the tests' process fixtures start each API with its service's gunicorn options.
    args = service("notification").gunicorn_args
    assert args[args.index("--worker-class") + 1] == "gevent"
    assert "*svc.gunicorn_args" in (ROOT / "scripts" / "run.py").read_text()

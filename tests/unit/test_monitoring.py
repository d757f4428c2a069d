"""infra/monitoring/: the alert rules and the Grafana dashboard are valid and name real metrics.

- The rule file has promtool's shape (groups of rules with alert, expr, for,
  labels, annotations) and every expression parses with a PromQL parser
  (promql-parser, the Rust one promtool-compatible tools use); with promtool
  installed (Debian's ``prometheus`` package) ``promtool check rules`` and the
  alert unit tests of ``alerts_test.yaml`` run too.
- Every metric an expression selects, in the rules and in the dashboard, is
  registered once the services' modules are imported (whatever
  shared/services.py lists), and every label it matches on is one of the
  metric's labels.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

from shared.services import SERVICES

MONITORING = Path(__file__).resolve().parents[2] / "infra" / "monitoring"
RULES = MONITORING / "alerts.yaml"
RULE_TESTS = MONITORING / "alerts_test.yaml"
DASHBOARD = MONITORING / "dashboard.json"
# What the issue asks alerts for, by the name each has here.
REQUIRED_ALERTS = {"DeadLetterQueueNotEmpty", "OutboxLagHigh", "CircuitBreakerOpen",
                   "ConsumerNotReceiving", "FifoGroupBlocked"}
# Labels Prometheus itself adds at scrape time, and the histogram bucket label.
SCRAPE_LABELS = {"job", "instance", "le"}
DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",)}


def _rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    rules = []
    for group in document["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"], group.get("name")
        rules.extend(group["rules"])
    return rules


def _dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def registered_metrics() -> dict[str, set[str]]:
    """Sample name -> label names of every metric registered by shared/ and every service."""
    importlib.import_module("shared.metrics")
    for svc in SERVICES:
        importlib.import_module(f"services.{svc.name}.app")
        if svc.worker:
            importlib.import_module(svc.worker)
    out: dict[str, set[str]] = {}
    # The registry's collector table is the one place that also lists metrics with no
    # sample yet (labelled, never used); prometheus_client is pinned in the lock.
    for collector, names in list(REGISTRY._collector_to_names.items()):
        labels = set(getattr(collector, "_labelnames", ()))
        kind = getattr(collector, "_type", None)
        base = getattr(collector, "_name", None)
        if base is None or kind is None:  # the process/platform collectors: their own names
            out.update({name: set() for name in names})
            continue
        out.update({f"{base}{suffix}": labels for suffix in SUFFIXES.get(kind, ("",))})
    return out


def selectors(expression: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) for every vector selector of ``expression``."""
    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            labels = {m.name for m in node.matchers.matchers if m.name != "__name__"}
            found.append((node.name, labels))

    promql_parser.walk(promql_parser.parse(expression), visit)
    return found


def test_every_rule_has_the_shape_promtool_checks():
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    assert REQUIRED_ALERTS <= set(names)
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
        assert DURATION.fullmatch(rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        parsed = promql_parser.parse(rule["expr"])  # raises on a syntax or type error
        assert parsed is not None


def test_the_thresholds_are_the_ones_operators_were_promised():
    by_name = {rule["alert"]: rule for rule in _rules()}
    assert re.search(r"\bsqs_dlq_messages\b.*> 0$", by_name["DeadLetterQueueNotEmpty"]["expr"])
    assert by_name["OutboxLagHigh"]["expr"].endswith("(outbox_lag_seconds) > 60")
    assert by_name["CircuitBreakerOpen"]["for"] == "1m"
    assert by_name["FifoGroupBlocked"]["for"] == "5m"


def test_the_parser_does_reject_a_bad_expression():
    for bad in ("sum by (queue (rate(x[5m]))", "max(rate(x[5m])[5m])", "up{"):
        with pytest.raises(ValueError):
            promql_parser.parse(bad)


def test_every_metric_in_the_rules_and_the_dashboard_is_registered_with_those_labels():
    metrics = registered_metrics()
    expressions = [rule["expr"] for rule in _rules()] + _dashboard_expressions()
    assert len(_dashboard_expressions()) >= 20
    for expression in expressions:
        for name, labels in selectors(expression):
            assert name in metrics, f"{name} (in {expression!r}) is not a registered metric"
            unknown = labels - metrics[name] - SCRAPE_LABELS
            assert not unknown, f"{name} has no label(s) {sorted(unknown)} (in {expression!r})"


def test_the_registry_check_does_catch_a_metric_that_does_not_exist():
    metrics = registered_metrics()
    assert "messages_handled_total" in metrics and "queue" in metrics["messages_handled_total"]
    assert [name for name, _ in selectors("rate(messages_handeld_total[5m])")
            if name not in metrics] == ["messages_handeld_total"]
    [(name, labels)] = selectors('rate(http_requests_total{status="500", route="/x"}[5m])')
    assert labels - metrics[name] == {"route"}


def test_the_blocked_group_metric_is_declared_for_its_producer():
    # Set by the admin side's blocked-group inspection; declared in shared/metrics.py.
    assert registered_metrics()["fifo_blocked_groups"] == {"service", "queue"}


def test_dashboard_is_a_grafana_dashboard_on_a_prometheus_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    assert [v["type"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package `prometheus`); "
                                             "the PromQL parser checks above still ran")
def test_promtool_checks_the_rules_and_their_unit_tests_pass():
    checked = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True,
                            text=True, timeout=60, cwd=MONITORING)
    assert tested.returncode == 0, tested.stdout + tested.stderr

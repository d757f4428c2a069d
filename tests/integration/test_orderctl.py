"""orderctl (click's CliRunner) against real services over HTTP, Postgres and SQS.

The ops, order and delivery APIs are served over HTTP in this process; the
notification service is "down" (a closed port). The operator's token comes
from ORDERCTL_TOKEN (the test key), except where the demo credentials path
is under test (``token``, ``seed``): there a real auth service is served and
its demo identities are created as ``make run`` creates them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner

from orderctl import cli as orderctl
from orderctl.client import REFUSED, UNAUTHORIZED, UNREACHABLE
from services.auth import demo
from shared.messaging import outbox
from shared.queues import queue
from tests.integration.test_messaging_contract import envelope
from tests.support.asserts import queue_depths
from tests.support.payments import PaymentServer, authorize
from tests.support.servers import AppServer
from tests.support.wait import wait_until

SPEC = queue("inventory-events.fifo")
ADDRESS = {"name": "Ada Lovelace", "line1": "1 Main St", "city": "Berlin",
           "postal_code": "10115", "country": "DE"}


@pytest.fixture
def down_url(port) -> str:
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def stack(app_for, inventory_url, down_url):
    """ops + order + delivery over HTTP (notification down): name -> base URL."""
    order = AppServer(app_for("order"), "order")
    delivery = AppServer(app_for("delivery"), "delivery")
    ops = AppServer(app_for("ops", ORDER_URL=order.url, DELIVERY_URL=delivery.url,
                            INVENTORY_URL=inventory_url, NOTIFICATION_URL=down_url,
                            OPS_PEER_TIMEOUT_S="1", OPS_PEER_ATTEMPTS="1"), "ops")
    yield {"ops": ops.url, "order": order.url, "inventory": inventory_url}
    for server in (ops, order, delivery):
        server.stop()


@pytest.fixture
def run(stack, make_token, monkeypatch, tmp_path):
    """``run(*args)`` -> click Result of ``orderctl args`` against ``stack`` as an operator."""
    monkeypatch.setenv("ORDERCTL_OPS_URL", stack["ops"])
    monkeypatch.setenv("ORDER_URL", stack["order"])
    monkeypatch.setenv("INVENTORY_URL", stack["inventory"])
    monkeypatch.setenv("ORDERCTL_TOKEN", make_token("operator-1", ["admin", "orders:read"]))
    monkeypatch.setenv("DEMO_CREDENTIALS", str(tmp_path / "none.json"))
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps cells to the terminal's width

    def invoke(*args, input=None):
        return CliRunner().invoke(orderctl.cli, list(args), input=input, catch_exceptions=False)

    return invoke


def _dead_letter(sqs, queues, event) -> None:
    sqs.send_message(
        QueueUrl=queues[SPEC.dlq_name], MessageBody=event.to_json(),
        MessageGroupId=event.aggregate_id, MessageDeduplicationId=uuid.uuid4().hex,
        MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in {
            "dlq_reason": "max_receives_exceeded", "dlq_source_queue": SPEC.name,
            "dlq_consumer": "inventory:inventory-events.fifo", "dlq_receive_count": "5",
            "dlq_error": "RuntimeError: carrier down"}.items()})


def _one_line(result) -> str:
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("orderctl: ")
    return lines[0]


def test_status_as_tables_and_as_json(run, sqs, queues):
    _dead_letter(sqs, queues, envelope("order-1"))
    tables = run("status")
    assert tables.exit_code == 0, tables.output
    for title in ("Queues", "Outboxes", "Consumers", "Circuit breakers", "Blocked FIFO groups"):
        assert title in tables.output
    assert "notification" in tables.output and "not available" in tables.output
    answer = json.loads(run("status", "--json").output)
    by_name = {q["name"]: q for q in answer["queues"]}
    assert by_name[SPEC.name]["dlq_visible"] == 1
    assert json.loads(run("--json", "status").output)["queues"] == answer["queues"]


def test_dlq_list_peek_and_a_filtered_replay(run, sqs, queues):
    first, second = envelope("order-1"), envelope("order-2")
    for event in (first, second):
        _dead_letter(sqs, queues, event)
    listed = json.loads(run("dlq", "list", "--json").output)
    assert {q["name"]: q["dlq_visible"] for q in listed}[SPEC.name] == 2
    peeked = run("dlq", "peek", SPEC.name, "--order-id", "order-2", "--json")
    [letter] = json.loads(peeked.output)["dead_letters"]
    assert letter["event_id"] == second.event_id and letter["receive_count"] == 5
    table = run("dlq", "peek", SPEC.name)
    assert table.exit_code == 0 and "max_receives_exceeded" in table.output
    replayed = run("dlq", "replay", SPEC.name, "--order-id", "order-1", "--yes")
    assert replayed.exit_code == 0, replayed.output
    assert "moved 1 dead letter(s) back to inventory-events.fifo" in replayed.output
    wait_until(lambda: queue_depths(sqs, queues[SPEC.name])[0] == 1, timeout=10,
               message="one message back in the source queue")


def test_replay_all_goes_in_chunks_and_asks_first(run, sqs, queues, monkeypatch):
    monkeypatch.setattr(orderctl, "REPLAY_CHUNK", 2)
    for n in range(5):
        _dead_letter(sqs, queues, envelope(f"order-{n}"))
    declined = run("dlq", "replay", SPEC.name, "--all", input="n\n")
    assert declined.exit_code == 1 and queue_depths(sqs, queues[SPEC.dlq_name])[0] == 5
    answer = run("dlq", "replay", SPEC.name, "--all", "--yes", "--json")
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.output) == {"queue": SPEC.name, "moved": 5, "method": "portable"}
    wait_until(lambda: queue_depths(sqs, queues[SPEC.name])[0] == 5, timeout=10,
               message="all five back")


def test_purge_wants_the_dlq_name(run, sqs, queues):
    _dead_letter(sqs, queues, envelope("order-1"))
    wrong = run("dlq", "purge", SPEC.name, "--confirm", "yes")
    assert wrong.exit_code == REFUSED
    assert "422 Confirmation does not match" in _one_line(wrong)
    right = run("dlq", "purge", SPEC.name, input=f"{SPEC.dlq_name}\n")
    assert right.exit_code == 0, right.output
    assert f"purged {SPEC.dlq_name}" in right.output


def test_outbox_list_and_retry(run, order_db):
    event = envelope("order-9")
    with order_db.transaction() as cur:
        outbox.add_event(cur, _OneQueue(), "order", event)
        cur.execute("SELECT id FROM outbox")
        row_id = cur.fetchone()["id"]
        outbox.record_failure(cur, row_id, 4, "EndpointConnectionError: broker down", 600)
    table = run("outbox", "list")
    assert table.exit_code == 0 and "Failed outbox rows" in table.output
    assert "EndpointConnectionError" in table.output
    retried = run("outbox", "retry", "order", "--id", str(row_id), "--json")
    assert json.loads(retried.output)["retried"] == [row_id]
    down = run("outbox", "retry", "notification", "--all-failed")
    assert down.exit_code == UNREACHABLE and "503" in _one_line(down)
    usage = run("outbox", "retry", "order")
    assert usage.exit_code == 2


class _OneQueue:
    def routes_for(self, service, event_type):
        return [SPEC]


def test_blocked_groups(run, order_db):
    with order_db.transaction() as cur:
        cur.execute("INSERT INTO blocked_groups (consumer, group_id, blocked_since, receive_count,"
                    " retry_in_s, last_error) VALUES ('order:delivery-status.fifo', 'order-7',"
                    " now() - interval '7 minutes', 3, 8, 'IntegrityError: boom')")
    table = run("groups", "blocked", "--min-age", "300")
    assert table.exit_code == 0 and "order-7" in table.output and "IntegrityError" in table.output
    answer = json.loads(run("groups", "blocked", "--json").output)
    order = next(a for a in answer if a["service"] == "order")
    assert order["data"]["groups"][0]["group_id"] == "order-7"


def test_orders_get_and_list(run, order_client, order_db, auth_header):
    placed = order_client.post("/v1/orders", headers=auth_header("customer-a"), json={
        "items": [{"sku": "SKU-1", "quantity": 1}], "customer_email": "a@example.com",
        "shipping_address": ADDRESS}).json
    authorize(order_db, placed)
    listed = json.loads(run("orders", "list", "--json").output)
    assert [o["id"] for o in listed] == [placed["id"]]
    one = run("orders", "get", placed["id"])
    assert one.exit_code == 0 and "PENDING_SHIPMENT" in one.output and "SKU-1" in one.output
    missing = run("orders", "get", str(uuid.uuid4()))
    assert missing.exit_code == REFUSED and "404" in _one_line(missing)


def test_an_unreachable_service_is_one_line_and_exit_3(run, monkeypatch, down_url):
    monkeypatch.setenv("ORDERCTL_OPS_URL", down_url)
    for args in (("status",), ("dlq", "list"), ("groups", "blocked", "--json")):
        result = run(*args)
        assert result.exit_code == UNREACHABLE
        assert _one_line(result) == f"orderctl: ops service unreachable at {down_url} (ConnectionError)"


def test_an_unreachable_broker_is_exit_3(app_for, down_url, make_token, monkeypatch):
    ops = AppServer(app_for("ops", SQS_ENDPOINT_URL=down_url), "ops")
    try:
        monkeypatch.setenv("ORDERCTL_OPS_URL", ops.url)
        monkeypatch.setenv("ORDERCTL_TOKEN", make_token("operator-1", ["admin"]))
        result = CliRunner().invoke(orderctl.cli, ["dlq", "list"])
        assert result.exit_code == UNREACHABLE
        assert "503 Queue broker unavailable" in _one_line(result)
    finally:
        ops.stop()


def test_a_refused_token_is_exit_4(run, monkeypatch, make_token):
    monkeypatch.setenv("ORDERCTL_TOKEN", make_token("customer-a", ["orders:read"]))
    result = run("status")
    assert result.exit_code == UNAUTHORIZED and "403" in _one_line(result)


def test_without_credentials_token_says_how_to_get_them(run, monkeypatch):
    monkeypatch.delenv("ORDERCTL_TOKEN")
    for args in (("token",), ("status",)):
        result = run(*args)
        assert result.exit_code == UNAUTHORIZED
        assert "start `make run` first" in _one_line(result)


@pytest.fixture
def demo_stack(app_for, auth_app, catalog, service_env, tmp_path, monkeypatch):
    """A real auth service with the demo identities, and order/inventory/payment APIs trusting
    it: the order service signs in with its demo client, as under `make run`."""
    auth = AppServer(auth_app, "auth")
    ext = auth_app.extensions
    credentials = tmp_path / "demo-credentials.json"
    demo.ensure_demo_identities(ext["db"], ext["passwords"], ext["auth_config"], credentials,
                                "development", auth.url)
    trust = {"AUTH_JWKS_URL": f"{auth.url}/.well-known/jwks.json", "AUTH_URL": auth.url,
             **demo.service_client_env(credentials)}
    inventory = AppServer(app_for("inventory", **trust), "inventory")
    payment = PaymentServer({**service_env, **trust})
    order = AppServer(app_for("order", **trust, INVENTORY_URL=inventory.url,
                              PAYMENT_URL=payment.url), "order")
    for name, value in {"DEMO_CREDENTIALS": str(credentials), "ORDER_URL": order.url,
                        "INVENTORY_URL": inventory.url, "PAYMENT_URL": payment.url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ORDERCTL_TOKEN", raising=False)
    monkeypatch.delenv("AUTH_URL", raising=False)
    yield
    for server in (order, payment, inventory, auth):
        server.stop()


def test_token_and_seed_with_the_demo_credentials(demo_stack):
    runner = CliRunner()
    operator = runner.invoke(orderctl.cli, ["token"])
    assert operator.exit_code == 0, operator.output
    claims = jwt.decode(operator.output.strip(), options={"verify_signature": False})
    assert "admin" in claims["scope"].split()
    customer = json.loads(runner.invoke(orderctl.cli, ["token", "--as", "customer", "--scope",
                                                       "orders:read", "--json"]).output)
    assert customer["scope"] == "orders:read" and customer["refresh_token"]
    seeded = runner.invoke(orderctl.cli, ["seed", "--orders", "3", "--seed", "7", "--json"])
    assert seeded.exit_code == 0, seeded.output
    orders = json.loads(seeded.output)
    # Placed, then paid as the storefront pays (the order moves on once its worker applies
    # payment.authorized; no worker runs here).
    assert len(orders) == 3 and all(o["status"] == "PENDING_PAYMENT" for o in orders)
    assert all(o["payment"]["status"] == "AUTHORIZED" for o in orders)
    unpaid = json.loads(runner.invoke(orderctl.cli, ["seed", "--orders", "1", "--unpaid",
                                                     "--json"]).output)
    assert unpaid[0]["payment"].get("status") is None
    listed = json.loads(runner.invoke(orderctl.cli, ["orders", "list", "--json"]).output)
    assert {o["id"] for o in listed} == {o["id"] for o in orders + unpaid}


@pytest.mark.slow
@pytest.mark.parametrize("command, code, line", [
    (["scripts/dlq", "depth"], UNREACHABLE, "orderctl: ops service unreachable at {down} "
                                            "(ConnectionError)"),
    (["scripts/token"], UNAUTHORIZED, "orderctl: no demo credentials at {creds}: start `make run` "
                                      "first, or set ORDERCTL_TOKEN"),
    ([str(Path(sys.executable).parent / "orderctl"), "status", "--json"], UNREACHABLE,
     "orderctl: ops service unreachable at {down} (ConnectionError)"),
])
def test_the_installed_command_and_the_aliases_fail_in_one_line(command, code, line, down_url,
                                                                 tmp_path):
    """As an operator runs them: a real process, no traceback, the documented exit code."""
    root = Path(__file__).resolve().parents[2]
    creds = tmp_path / "none.json"
    env = {**os.environ, "ORDERCTL_OPS_URL": down_url, "ORDERCTL_TOKEN": "not-checked",
           "DEMO_CREDENTIALS": str(creds)}
    if command[0] == "scripts/token":
        env.pop("ORDERCTL_TOKEN")
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.strip() == line.format(down=down_url, creds=creds)

"""The auth management CLI against real Postgres, its effects checked over HTTP."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from services.auth.cli import cli
from tests.support.auth import PASSWORD, decode, password_login, token_request


@pytest.fixture
def run_cli(service_env, monkeypatch):
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)

    def run(*args, input=None):
        result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
        return result

    return run


def _creds(result):
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)

    class Creds:
        client_id = data["client_id"]
        client_secret = data["client_secret"]

    return Creds


def test_create_client_then_rotate_its_secret(run_cli, auth_client):
    creds = _creds(run_cli("create-client", "--name", "DHL", "--client-id", "carrier-dhl",
                           "--scope", "shipments:write", "--json"))
    assert creds.client_id == "carrier-dhl"
    assert token_request(auth_client, creds, grant_type="client_credentials").status_code == 200

    rotated = _creds(run_cli("rotate-client-secret", "carrier-dhl", "--json"))
    assert rotated.client_secret != creds.client_secret
    assert token_request(auth_client, creds, grant_type="client_credentials").status_code == 401
    assert token_request(auth_client, rotated, grant_type="client_credentials").status_code == 200

    graceful = _creds(run_cli("rotate-client-secret", "carrier-dhl", "--grace-s", "600", "--json"))
    # During the grace period both the previous and the new secret work.
    assert token_request(auth_client, rotated, grant_type="client_credentials").status_code == 200
    assert token_request(auth_client, graceful, grant_type="client_credentials").status_code == 200

    listing = run_cli("list-clients")
    assert "carrier-dhl" in listing.output and graceful.client_secret not in listing.output
    duplicate = CliRunner().invoke(cli, ["create-client", "--name", "x", "--client-id", "carrier-dhl",
                                         "--scope", "shipments:write"])
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output

    assert run_cli("delete-client", "carrier-dhl").exit_code == 0
    assert token_request(auth_client, graceful, grant_type="client_credentials").status_code == 401


def test_password_grant_needs_first_party(run_cli):
    result = CliRunner().invoke(cli, ["create-client", "--name", "x", "--scope", "orders:read",
                                      "--grant", "password"])
    assert result.exit_code != 0 and "first-party" in result.output


def test_create_operator_gets_admin_through_a_first_party_console(run_cli, auth_client):
    console = _creds(run_cli("create-client", "--name", "Ops console", "--scope", "admin",
                             "--scope", "orders:read", "--grant", "password", "--first-party", "--json"))
    result = run_cli("create-operator", "ops@example.com", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    response = password_login(auth_client, console, "ops@example.com", scope="admin orders:read")
    assert response.status_code == 200
    assert decode(auth_client, response.json["access_token"])["scope"] == "admin orders:read"
    weak = CliRunner().invoke(cli, ["create-customer", "c@example.com", "--password", "short"])
    assert weak.exit_code != 0 and "at least" in weak.output


def test_rotate_keys_publishes_a_new_key(run_cli, auth_client):
    first = auth_client.get("/.well-known/jwks.json").json["keys"][0]["kid"]
    result = run_cli("rotate-keys", "--activate-after-s", "0", "--json")
    assert result.exit_code == 0, result.output
    new_kid = json.loads(result.output)["kid"]
    kids = {k["kid"] for k in auth_client.get("/.well-known/jwks.json").json["keys"]}
    assert kids == {first, new_kid}
    assert "SIGNING" in run_cli("list-keys").output
    new_key = run_cli("new-encryption-key").output.strip()
    assert len(new_key) == 44


def test_ensure_client_sets_the_secret_it_is_given_and_is_idempotent(run_cli, auth_client, monkeypatch):
    given = "a-deployment-secret-0123456789abcdef"
    monkeypatch.setenv("ORDER_CLIENT_SECRET", given)
    args = ("ensure-client", "--client-id", "order-service", "--name", "Order service",
            "--scope", "inventory:reserve", "--secret-env", "ORDER_CLIENT_SECRET")
    assert "created" in run_cli(*args).output
    assert "already there" in run_cli(*args).output

    class Creds:
        client_id, client_secret = "order-service", given

    assert token_request(auth_client, Creds, grant_type="client_credentials").status_code == 200
    monkeypatch.setenv("ORDER_CLIENT_SECRET", given + "-rotated")
    assert "secret set" in run_cli(*args).output
    assert token_request(auth_client, Creds, grant_type="client_credentials").status_code == 401

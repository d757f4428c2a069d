"""Carrier clients are bound to their carrier, and their tokens say which (``carrier`` claim).

Registration (``create-client --carrier``, ``ensure-client --carrier``, the
``carrier-dhl`` demo client) stores the binding; every access token the client
gets carries it, and the delivery API limits the client to that carrier's
shipments (tests/security/test_access_table.py). The claim is verified like
any other: a malformed one makes the token invalid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from services.auth import handlers
from services.auth.cli import cli
from services.auth.demo import CARRIER, DEMO_CARRIER_ID, DEMO_CLIENTS, ensure_demo_identities
from shared.auth import InvalidToken, verify_bearer_token
from tests.support.auth import client_token, decode, token_request
from tests.support.tokens import TEST_SIGNER, static_settings

SCOPES = ("shipments:read", "shipments:write")


@pytest.fixture
def run_cli(service_env, monkeypatch):
    for name, value in service_env.items():
        monkeypatch.setenv(name, value)

    def run(*args):
        result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
        # CliRunner captures sys.stdout for the whole process: a log line written meanwhile by
        # another test's background thread (seen when files share a process) lands in it too.
        return _CliAnswer(result.exit_code, "".join(
            line for line in result.output.splitlines(keepends=True) if not _is_log_line(line)))

    return run


@dataclass(frozen=True)
class _CliAnswer:
    exit_code: int
    output: str


def _is_log_line(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and {"event", "level", "timestamp"} <= record.keys()


class _Creds:
    def __init__(self, client_id, secret):
        self.client_id, self.client_secret = client_id, secret


def test_a_carrier_bound_client_gets_tokens_naming_its_carrier(auth_app, auth_client):
    db = auth_app.extensions["db"]
    bound = handlers.create_client(db, "UPS", SCOPES, ("client_credentials",), carrier="UPS")
    unbound = handlers.create_client(db, "Partner", ("shipments:read",), ("client_credentials",))
    claims = decode(auth_client, client_token(auth_client, bound))
    assert claims["carrier"] == "UPS"
    assert claims["sub"] == claims["client_id"] == bound.client_id
    # Asking for fewer scopes changes nothing about whose shipments they are.
    assert decode(auth_client, client_token(auth_client, bound, "shipments:read"))["carrier"] == "UPS"
    assert "carrier" not in decode(auth_client, client_token(auth_client, unbound))


@pytest.mark.parametrize("carrier", ["", "has space", "x" * 65, "DHL;drop"])
def test_a_malformed_carrier_id_is_refused_at_registration(auth_app, carrier):
    with pytest.raises(handlers.AuthError, match="carrier"):
        handlers.create_client(auth_app.extensions["db"], "Bad", SCOPES, ("client_credentials",),
                               carrier=carrier)


def test_the_cli_binds_a_carrier_and_lists_it(run_cli, auth_client, monkeypatch):
    created = run_cli("create-client", "--name", "GLS", "--client-id", "carrier-gls",
                      "--scope", "shipments:write", "--carrier", "GLS", "--json")
    assert created.exit_code == 0, created.output
    creds = _Creds("carrier-gls", json.loads(created.output)["client_secret"])
    assert decode(auth_client, client_token(auth_client, creds))["carrier"] == "GLS"
    listing = run_cli("list-clients", "--json")
    [row] = [r for r in json.loads(listing.output) if r["client_id"] == "carrier-gls"]
    assert row["carrier"] == "GLS"

    # ensure-client (a deployment's secret store) binds, and re-binds an existing client.
    monkeypatch.setenv("UPS_SECRET", "u" * 32)
    ensured = run_cli("ensure-client", "--client-id", "carrier-ups", "--name", "UPS",
                      "--scope", "shipments:write", "--carrier", "UPS",
                      "--secret-env", "UPS_SECRET")
    assert ensured.exit_code == 0, ensured.output
    again = run_cli("ensure-client", "--client-id", "carrier-ups", "--name", "UPS",
                    "--scope", "shipments:write", "--carrier", "DHL",
                    "--secret-env", "UPS_SECRET")
    assert again.exit_code == 0 and "carrier DHL" in again.output, again.output
    ups = _Creds("carrier-ups", "u" * 32)
    assert decode(auth_client, client_token(auth_client, ups))["carrier"] == "DHL"
    bad = CliRunner().invoke(cli, ["create-client", "--name", "x", "--scope", "shipments:write",
                                   "--carrier", "no spaces please"])
    assert bad.exit_code != 0 and "carrier" in bad.output


def test_the_cli_binds_an_existing_client_and_unbinds_it(run_cli, auth_app, auth_client):
    # A carrier client registered before clients were bound: its tokens name no carrier.
    legacy = handlers.create_client(auth_app.extensions["db"], "Legacy carrier", SCOPES,
                                    ("client_credentials",), client_id="carrier-legacy")
    assert "carrier" not in decode(auth_client, client_token(auth_client, legacy))
    bound = run_cli("bind-carrier", "carrier-legacy", "GLS")
    assert bound.exit_code == 0 and "bound to carrier GLS" in bound.output, bound.output
    assert decode(auth_client, client_token(auth_client, legacy))["carrier"] == "GLS"
    unbound = run_cli("bind-carrier", "carrier-legacy", "--none")
    assert unbound.exit_code == 0, unbound.output
    assert "carrier" not in decode(auth_client, client_token(auth_client, legacy))
    for args in (["carrier-legacy"], ["carrier-legacy", "GLS", "--none"], ["ghost-client", "GLS"],
                 ["carrier-legacy", "not a carrier"]):
        refused = CliRunner().invoke(cli, ["bind-carrier", *args])
        assert refused.exit_code != 0, (args, refused.output)


def test_the_demo_carrier_client_is_bound_and_a_stale_binding_repaired(auth_app, auth_client,
                                                                      tmp_path):
    ext = auth_app.extensions
    path = tmp_path / "demo-credentials.json"

    def ensure():
        return ensure_demo_identities(ext["db"], ext["passwords"], ext["auth_config"], path,
                                      "test", "http://127.0.0.1:8005")

    ensure()
    assert DEMO_CLIENTS[CARRIER]["carrier"] == DEMO_CARRIER_ID == "DHL"
    secret = json.loads(path.read_text())["clients"][CARRIER]
    token = token_request(auth_client, _Creds(CARRIER, secret), grant_type="client_credentials")
    assert decode(auth_client, token.json["access_token"])["carrier"] == DEMO_CARRIER_ID
    # A database from before the binding existed: the next `make run` binds the client.
    with ext["db"].transaction() as cur:
        cur.execute("UPDATE clients SET carrier = NULL WHERE client_id = %s", (CARRIER,))
    assert ensure() == [f"client {CARRIER} (carrier {DEMO_CARRIER_ID})"]
    token = token_request(auth_client, _Creds(CARRIER, secret), grant_type="client_credentials")
    assert decode(auth_client, token.json["access_token"])["carrier"] == DEMO_CARRIER_ID
    assert ensure() == []


@pytest.mark.parametrize("carrier", ["", 42, ["DHL"], "x" * 65])
def test_a_malformed_carrier_claim_makes_the_token_invalid(carrier):
    claims = TEST_SIGNER.claims("carrier-client", SCOPES, 600)
    claims["carrier"] = carrier
    with pytest.raises(InvalidToken):
        verify_bearer_token(TEST_SIGNER.sign(claims), static_settings())


def test_a_carrier_claim_becomes_the_principals_carrier():
    token = TEST_SIGNER.sign(TEST_SIGNER.claims("carrier-client", SCOPES, 600, carrier="DHL"))
    principal = verify_bearer_token(token, static_settings())
    assert principal.carrier == "DHL"
    plain = verify_bearer_token(TEST_SIGNER.sign(TEST_SIGNER.claims("c", SCOPES, 600)),
                                static_settings())
    assert plain.carrier is None

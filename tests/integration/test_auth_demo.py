"""`make run`'s demo identities: created once, usable, repaired when the credentials file is lost."""

from __future__ import annotations

import json
import stat

from services.auth.demo import (
    CARRIER,
    DEMO_CUSTOMER,
    DEMO_OPERATOR,
    OPS_CONSOLE,
    STOREFRONT,
    ensure_demo_identities,
)
from tests.support.auth import decode, password_login, token_request


class _Creds:
    def __init__(self, client_id, secret):
        self.client_id, self.client_secret = client_id, secret


def _ensure(app, path):
    ext = app.extensions
    return ensure_demo_identities(ext["db"], ext["passwords"], ext["auth_config"], path, "test",
                                  "http://127.0.0.1:8005")


def test_demo_identities_are_idempotent_and_work(auth_app, auth_client, tmp_path):
    path = tmp_path / "demo-credentials.json"
    changed = _ensure(auth_app, path)
    assert len(changed) == 6
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert _ensure(auth_app, path) == []  # second run: nothing to do
    assert json.loads(path.read_text()) == saved

    clients = {cid: _Creds(cid, secret) for cid, secret in saved["clients"].items()}
    carrier = token_request(auth_client, clients[CARRIER], grant_type="client_credentials")
    assert decode(auth_client, carrier.json["access_token"])["scope"] == "shipments:read shipments:write"
    customer = password_login(auth_client, clients[STOREFRONT], DEMO_CUSTOMER,
                              saved["users"][DEMO_CUSTOMER])
    assert customer.status_code == 200 and "refresh_token" in customer.json
    operator = password_login(auth_client, clients[OPS_CONSOLE], DEMO_OPERATOR,
                              saved["users"][DEMO_OPERATOR])
    assert "admin" in decode(auth_client, operator.json["access_token"])["scope"].split()
    # The customer cannot reach admin even through the operators' console.
    assert password_login(auth_client, clients[OPS_CONSOLE], DEMO_CUSTOMER,
                          saved["users"][DEMO_CUSTOMER], scope="admin").status_code == 400


def test_a_lost_credentials_file_gets_new_secrets(auth_app, auth_client, tmp_path):
    path = tmp_path / "demo-credentials.json"
    _ensure(auth_app, path)
    old = json.loads(path.read_text())
    path.unlink()
    assert len(_ensure(auth_app, path)) == 6
    new = json.loads(path.read_text())
    assert new["clients"][CARRIER] != old["clients"][CARRIER]
    stale = token_request(auth_client, _Creds(CARRIER, old["clients"][CARRIER]),
                          grant_type="client_credentials")
    assert stale.status_code == 401
    fresh = token_request(auth_client, _Creds(CARRIER, new["clients"][CARRIER]),
                          grant_type="client_credentials")
    assert fresh.status_code == 200

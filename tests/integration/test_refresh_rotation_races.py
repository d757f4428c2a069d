"""Refresh-token rotation against revocations that land in the middle of it.

A rotation claims the old token and stores its successor. A logout, an RFC 7009
revocation, a client deletion or a reuse detection that lands between the two,
from another connection, must still leave the family with no live token: the
successor is stored only while the family is active, in the claim's transaction,
and a revocation that was waiting on the claimed row also ends the successor.

The interleaving is forced at the seam: the repository's claim is wrapped so that,
once the old token is claimed, the revocation starts on another thread and the
rotation goes on only when that revocation has finished or waits on a lock.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from services.auth import handlers
from services.auth import token_repository as token_repo
from services.auth.crypto import digest_secret
from tests.support.auth import decode, make_client, make_user, password_login, token_request

CUSTOMER_SCOPES = ("orders:read", "orders:write")
SEAM_WAIT_S = 10.0


@pytest.fixture
def storefront(auth_app):
    return make_client(auth_app, "Storefront", CUSTOMER_SCOPES, ("password", "refresh_token"),
                       first_party=True)


@pytest.fixture
def customer(auth_app):
    return str(make_user(auth_app, "race@example.com"))


def _waiting_on_a_lock(db) -> bool:
    with db.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()")
        return cur.fetchone()["n"] > 0


def _unrevoked_tokens(db, family_id) -> list[dict]:
    with db.transaction() as cur:
        cur.execute("SELECT id, rotated_at, replaced_by FROM refresh_tokens WHERE family_id = %s"
                    " AND revoked_at IS NULL", (family_id,))
        return cur.fetchall()


def _revocations(auth_app, storefront, user_id, family_id, old_refresh):
    """Each kind of revocation, as a callable run on another thread."""
    db = auth_app.extensions["db"]

    def reuse():
        # The old refresh token presented again by someone else: reuse detection.
        response = token_request(auth_app.test_client(), storefront, grant_type="refresh_token",
                                 refresh_token=old_refresh)
        assert response.status_code == 400, response.get_data(as_text=True)

    return {
        "logout": lambda: handlers.logout(db, user_id, storefront.client_id, str(family_id), False),
        "logout-everywhere": lambda: handlers.logout(db, user_id, storefront.client_id, None, True),
        "revocation": lambda: auth_app.test_client().post(
            "/oauth/revoke", data={"token": old_refresh, "token_type_hint": "refresh_token"},
            auth=(storefront.client_id, storefront.client_secret)),
        "user-disabled": lambda: handlers.disable_user(db, "race@example.com"),
        "reuse-detected": reuse,
    }


@pytest.mark.parametrize("kind", ["logout", "logout-everywhere", "revocation", "user-disabled",
                                  "reuse-detected"])
def test_a_revocation_between_claim_and_save_leaves_no_live_token(auth_app, auth_client, auth_db,
                                                                 storefront, customer, kind,
                                                                 monkeypatch):
    login = password_login(auth_client, storefront, "race@example.com")
    assert login.status_code == 200, login.get_data(as_text=True)
    old_refresh = login.json["refresh_token"]
    family_id = uuid.UUID(decode(auth_client, login.json["access_token"])["sid"])
    revoke = _revocations(auth_app, storefront, customer, family_id, old_refresh)[kind]
    old_digest = digest_secret(old_refresh)
    errors: list[BaseException] = []
    revoker: list[threading.Thread] = []
    claim = token_repo.claim_refresh_token

    def run_revocation():
        try:
            revoke()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    def claim_then_revoke(cur, *args, **kwargs):
        claimed = claim(cur, *args, **kwargs)
        if claimed is not None and claimed["token_hash"] == old_digest and not revoker:
            thread = threading.Thread(target=run_revocation, name=f"revoke-{kind}")
            revoker.append(thread)
            thread.start()
            deadline = time.monotonic() + SEAM_WAIT_S
            while thread.is_alive() and not _waiting_on_a_lock(auth_db):
                assert time.monotonic() < deadline, "the revocation neither ran nor waited"
                time.sleep(0.01)
        return claimed

    monkeypatch.setattr(token_repo, "claim_refresh_token", claim_then_revoke)
    rotated = token_request(auth_client, storefront, grant_type="refresh_token",
                            refresh_token=old_refresh)
    assert revoker, "the rotation never claimed the old token"
    revoker[0].join(SEAM_WAIT_S)
    assert not revoker[0].is_alive() and not errors, errors
    monkeypatch.setattr(token_repo, "claim_refresh_token", claim)

    # Every token of the family is revoked, the successor (if one was stored) included ...
    assert _unrevoked_tokens(auth_db, family_id) == []
    # ... so either the rotation was refused, or the token it handed out is already dead.
    assert rotated.status_code in (200, 400), rotated.get_data(as_text=True)
    if rotated.status_code == 200:
        again = token_request(auth_client, storefront, grant_type="refresh_token",
                              refresh_token=rotated.json["refresh_token"])
        assert again.status_code == 400, "the token handed out by the rotation still works"
    else:
        # invalid_request: Authlib's answer when the token's user is gone (disabled).
        assert rotated.json["error"] in ("invalid_grant", "invalid_request"), rotated.json


def test_no_token_is_stored_into_a_revoked_family(auth_app, auth_client, auth_db, storefront,
                                                  customer):
    login = password_login(auth_client, storefront, "race@example.com")
    family_id = uuid.UUID(decode(auth_client, login.json["access_token"])["sid"])
    with auth_db.transaction() as cur:
        assert token_repo.revoke_family(cur, family_id, "logout") == 1
        stored = token_repo.insert_refresh_token(cur, uuid.uuid4(), digest_secret("late successor"),
                                           family_id, storefront.client_id, uuid.UUID(customer),
                                           "orders:read", 3600, 86400)
        assert stored is False
        cur.execute("SELECT count(*) AS n FROM refresh_tokens WHERE family_id = %s", (family_id,))
        assert cur.fetchone()["n"] == 1
    # A new family is not held back by anything.
    with auth_db.transaction() as cur:
        assert token_repo.insert_refresh_token(cur, uuid.uuid4(), digest_secret("new session"),
                                         uuid.uuid4(), storefront.client_id, uuid.UUID(customer),
                                         "orders:read", 3600, 86400) is True

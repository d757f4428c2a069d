"""`make run` hands the ops service its web pages' sign-in clients from the demo credentials."""

from __future__ import annotations

import json

from services.auth.demo import OPS_CONSOLE, STOREFRONT, web_client_env


def test_the_page_clients_come_from_the_credentials_file(tmp_path):
    path = tmp_path / "demo-credentials.json"
    path.write_text(json.dumps({"clients": {OPS_CONSOLE: "console-secret", STOREFRONT: "shop-secret",
                                            "carrier-dhl": "not-for-the-pages"}}))
    assert web_client_env(path) == {
        "OPS_WEB_CONSOLE_CLIENT_ID": OPS_CONSOLE, "OPS_WEB_CONSOLE_CLIENT_SECRET": "console-secret",
        "OPS_WEB_TRACKING_CLIENT_ID": STOREFRONT, "OPS_WEB_TRACKING_CLIENT_SECRET": "shop-secret"}


def test_no_file_no_clients(tmp_path):
    assert web_client_env(tmp_path / "missing.json") == {}

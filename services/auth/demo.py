"""Demo identities for local development (``make run``), created idempotently.

Clients: ``storefront`` (first-party: customer registration and password
login, refresh tokens), ``carrier-dhl`` (client credentials, shipment
scopes, bound to the carrier ``DHL``: it reaches DHL's shipments only),
``ops-console`` (first-party, for operators: admin), and ``order-service``
(the order service's own client, ``inventory:reserve`` and ``payments:create``). Accounts: a demo
customer and a demo operator. Secrets and passwords are generated, never
fixed in code, and kept in a credentials file (mode 0600) that
``scripts/token`` and ``scripts/demo.sh`` read. Refused when APP_ENV=production.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from services.auth import handlers
from services.auth import repository as repo
from services.auth.crypto import new_secret, secret_matches
from shared.auth import SCOPES

STOREFRONT = "storefront"
CARRIER = "carrier-dhl"
# The carrier id the delivery service gives DHL's shipments.
DEMO_CARRIER_ID = "DHL"
OPS_CONSOLE = "ops-console"
# The order service's own client: it reserves stock at the inventory service.
ORDER_SERVICE = "order-service"
DEMO_CUSTOMER = "demo@example.com"
DEMO_OPERATOR = "ops@example.com"

DEMO_CLIENTS = {
    # webhooks:manage: customers manage their own subscriptions through the storefront.
    STOREFRONT: dict(name="Demo storefront", scopes=("orders:read", "orders:write", "webhooks:manage"),
                     grants=("password", "refresh_token"), first_party=True, carrier=None),
    CARRIER: dict(name="DHL (demo carrier)", scopes=("shipments:read", "shipments:write"),
                  grants=("client_credentials",), first_party=False, carrier=DEMO_CARRIER_ID),
    OPS_CONSOLE: dict(name="Operations console", scopes=SCOPES,
                      grants=("password", "refresh_token"), first_party=True, carrier=None),
    ORDER_SERVICE: dict(name="Order service",
                        scopes=("inventory:reserve", "payments:create", "shipments:cancel"),
                        grants=("client_credentials",), first_party=False, carrier=None),
}
# Which service process runs as which client: <SERVICE>_CLIENT_ID / _CLIENT_SECRET.
SERVICE_CLIENTS = {"order": ORDER_SERVICE}
DEMO_USERS = {DEMO_CUSTOMER: "customer", DEMO_OPERATOR: "operator"}


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.replace(tmp, path)


def ensure_demo_identities(db, passwords, config, credentials_path: Path, app_env: str,
                           auth_url: str) -> list[str]:
    """Create what is missing; return what changed (for the log line). Idempotent."""
    if app_env == "production":
        raise RuntimeError("demo identities are for development only")
    saved = _load(credentials_path)
    clients = saved.get("clients", {})
    users = saved.get("users", {})
    changed: list[str] = []
    for client_id, spec in DEMO_CLIENTS.items():
        with db.transaction() as cur:
            row = repo.get_client(cur, client_id)
        known = clients.get(client_id)
        if row is not None and row["carrier"] != spec["carrier"]:
            # A database from before carriers were bound (or bound otherwise): bind it now.
            handlers.bind_client_carrier(db, client_id, spec["carrier"])
            changed.append(f"client {client_id} (carrier {spec['carrier']})")
        if row is not None and not set(spec["scopes"]) <= set(row["allowed_scopes"]):
            # A database from before a scope was added (the order client's payments:create,
            # shipments:cancel).
            with db.transaction() as cur:
                repo.update_client(cur, client_id, sorted({*row["allowed_scopes"], *spec["scopes"]}),
                                   None)
            changed.append(f"client {client_id} (scopes {' '.join(spec['scopes'])})")
        if row is None:
            creds = handlers.create_client(db, spec["name"], spec["scopes"], spec["grants"],
                                           spec["first_party"], client_id,
                                           carrier=spec["carrier"])
            changed.append(f"client {client_id}")
        elif known is None or not secret_matches(row["secret_hash"], known):
            creds = handlers.rotate_client_secret(db, client_id)  # the file lost it: issue a new one
            changed.append(f"client {client_id} (new secret)")
        else:
            continue
        clients[client_id] = creds.client_secret
    for username, role in DEMO_USERS.items():
        with db.transaction() as cur:
            row = repo.get_user_by_username(cur, username)
        password = users.get(username)
        if row is not None and password and passwords.verify(row["password_hash"], password):
            continue
        password = new_secret()[:24]
        handlers.create_user(db, passwords, config, username, password, role, update_existing=True)
        users[username] = password
        changed.append(f"{role} {username}")
    _save(credentials_path, {"auth_url": auth_url, "clients": clients, "users": users,
                             "note": "Local development credentials made by `make run`."})
    return changed


def service_client_env(credentials_path: Path) -> dict[str, str]:
    """``<SERVICE>_CLIENT_ID`` / ``_CLIENT_SECRET`` for the service processes, from the file."""
    clients = _load(credentials_path).get("clients", {})
    env = {}
    for service, client_id in SERVICE_CLIENTS.items():
        if client_id in clients:
            env[f"{service.upper()}_CLIENT_ID"] = client_id
            env[f"{service.upper()}_CLIENT_SECRET"] = clients[client_id]
    return env


# The ops service's web pages sign in with these first-party clients (OPS_WEB_*).
WEB_CLIENTS = {"CONSOLE": OPS_CONSOLE, "TRACKING": STOREFRONT}


def web_client_env(credentials_path: Path) -> dict[str, str]:
    """``OPS_WEB_<PAGE>_CLIENT_ID`` / ``_CLIENT_SECRET`` for the ops service, from the file."""
    clients = _load(credentials_path).get("clients", {})
    return {name: value for page, client_id in WEB_CLIENTS.items() if client_id in clients
            for name, value in ((f"OPS_WEB_{page}_CLIENT_ID", client_id),
                                (f"OPS_WEB_{page}_CLIENT_SECRET", clients[client_id]))}


def ensure_demo(database_url: str, credentials_path: Path, auth_url: str,
                env: dict[str, str] | None = None) -> list[str]:
    """:func:`ensure_demo_identities` with components built from the environment (``make run``)."""
    from services.auth.app import build_components
    from services.auth.settings import load

    settings, config = load({**(os.environ if env is None else env), "DATABASE_URL": database_url})
    db, passwords, _keys = build_components(settings, config)
    try:
        return ensure_demo_identities(db, passwords, config, credentials_path, settings.app_env,
                                      auth_url)
    finally:
        db.close()

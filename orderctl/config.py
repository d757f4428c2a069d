"""Where orderctl finds the APIs and a token, with no setting needed against ``make run``.

* ``ORDERCTL_OPS_URL`` / ``ORDER_URL`` / ``INVENTORY_URL`` / ``PAYMENT_URL`` / ``AUTH_URL``: the
  APIs; by default the local ports of :mod:`shared.services`.
* ``ORDERCTL_TOKEN``: a bearer token to use as is. Without it, orderctl asks
  the auth service for one with the demo credentials ``make run`` writes
  (``DEMO_CREDENTIALS``, default ``.data/demo-credentials.json``): the demo
  operator's for the admin commands, as ``scripts/token`` always did.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from shared.services import service

CREDENTIALS_FILE = "demo-credentials.json"
# The demo identities (services/auth/demo.py creates them): client id, user name or None.
IDENTITIES = {
    "customer": ("storefront", "demo@example.com"),
    "carrier": ("carrier-dhl", None),
    "operator": ("ops-console", "ops@example.com"),
}


def _local(name: str, variable: str, env) -> str:
    return (env.get(variable) or service(name).local_url()).rstrip("/")


@dataclass(frozen=True)
class Endpoints:
    """The base URLs orderctl talks to."""

    ops: str
    order: str
    inventory: str
    payment: str
    auth: str | None   # None: from the credentials file, else the local port

    @classmethod
    def from_env(cls, env=None) -> Endpoints:
        env = os.environ if env is None else env
        return cls(_local("ops", "ORDERCTL_OPS_URL", env), _local("order", "ORDER_URL", env),
                   _local("inventory", "INVENTORY_URL", env), _local("payment", "PAYMENT_URL", env),
                   (env.get("AUTH_URL") or "").rstrip("/") or None)


def credentials_path(env=None) -> Path:
    """The demo credentials file: ``DEMO_CREDENTIALS``, else the local stack's data directory."""
    env = os.environ if env is None else env
    if env.get("DEMO_CREDENTIALS"):
        return Path(env["DEMO_CREDENTIALS"])
    try:  # a development install has the local stack; the runtime image does not
        from devstack.paths import DATA_DIR
    except ImportError:
        return Path.cwd() / ".data" / CREDENTIALS_FILE
    return DATA_DIR / CREDENTIALS_FILE


def load_credentials(path: Path) -> dict | None:
    """The saved demo credentials, or None when there are none (no ``make run`` yet)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None

"""Write every service's OpenAPI document to docs/openapi/<service>.json.

Each document is what the service's own ``GET /openapi.json`` answers, from
an app built with fixed settings (so the files do not depend on who runs
this): the local development URLs, and a database that only has to accept
connections (an app opens its pool when it is built). The services are
those of ``shared.services.SERVICES``, so a new service is covered without
editing this. ``--check`` changes nothing and exits 1 when a file differs
(``tests/integration/test_openapi_documents.py`` runs the same comparison).

    python scripts/gen_openapi.py            # rewrite docs/openapi/
    python scripts/gen_openapi.py --check    # fail when one is out of date

DATABASE_URL, when set, is used; otherwise an embedded PostgreSQL is started
for the run (the local stack's, as ``make run`` does).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import click  # noqa: E402

from devstack.generated import sync  # noqa: E402
from shared.services import SERVICES, service  # noqa: E402

OUT_DIR = REPO_ROOT / "docs" / "openapi"
# Settings a service refuses to start without, beyond the common ones: their values
# never reach a document (the app is only asked for /openapi.json).
REQUIRED_SETTINGS: dict[str, dict[str, str]] = {
    "order": {"ORDER_CLIENT_ID": "openapi-docs", "ORDER_CLIENT_SECRET": "unused-by-the-document"},
}


def document_settings(database_url: str) -> dict[str, str]:
    """The settings every document is built with (they override the environment)."""
    return {"APP_ENV": "development", "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING",
            "AUTH_URL": service("auth").local_url(), "DOCS_TOKEN_URL": "", "CORS_ALLOWED_ORIGINS": ""}


def document(name: str, database_url: str) -> str:
    """Service ``name``'s OpenAPI document, as its app serves it."""
    create_app = importlib.import_module(f"services.{name}.app").create_app
    app = create_app({**document_settings(database_url), **REQUIRED_SETTINGS.get(name, {})})
    try:
        response = app.test_client().get("/openapi.json")
        if response.status_code != 200:
            raise RuntimeError(f"{name}: GET /openapi.json answered {response.status_code}")
        return response.get_data(as_text=True).rstrip("\n") + "\n"
    finally:
        app.extensions["db"].close()


def documents(database_url: str) -> dict[str, str]:
    """Every service's document, by service name."""
    return {svc.name: document(svc.name, database_url) for svc in SERVICES}


def path_of(name: str) -> Path:
    return OUT_DIR / f"{name}.json"


def _with_database():
    """A database URL, and what stops the server started for it (None when given)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, None
    from devstack.postgres import start_embedded_postgres, stop_embedded_postgres

    data_dir = Path(tempfile.mkdtemp(prefix="openapi-pg-", dir=_scratch()))
    handle, url = start_embedded_postgres(data_dir)

    def stop() -> None:
        stop_embedded_postgres(handle)
        shutil.rmtree(data_dir, ignore_errors=True)

    return url, stop


def _scratch() -> Path:
    # Under the repo, not /tmp: the embedded server runs postgres as its own user when we are root.
    from devstack.paths import DATA_DIR

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    return DATA_DIR


@click.command()
@click.option("--check", is_flag=True, help="Change nothing; exit 1 when a document is out of date.")
def main(check: bool) -> None:
    url, stop = _with_database()
    try:
        stale = [name for name, text in documents(url).items()
                 if sync(path_of(name), text, check, REPO_ROOT)]
    finally:
        if stop is not None:
            stop()
    if stale:
        click.echo("run `make openapi`", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

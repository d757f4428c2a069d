"""Per-service schema migrations with Alembic.

Each service has ``services/<name>/migrations`` (an Alembic script directory
whose ``env.py`` calls :func:`run_env`). Its version table lives in the
service's own schema, so services migrate independently. A transaction-level
advisory lock serializes concurrent migrators (e.g. several containers
starting at once).
"""

from __future__ import annotations

import zlib
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import create_engine, text

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def _sqlalchemy_url(database_url: str) -> str:
    if database_url.startswith("postgres://"):
        database_url = "postgresql://" + database_url[len("postgres://"):]
    return database_url.replace("postgresql://", "postgresql+psycopg2://", 1)


def alembic_config(service: str, database_url: str) -> Config:
    """An Alembic config for ``service`` targeting its ``<service>_svc`` schema."""
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["schema"] = f"{service}_svc"
    return cfg


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    """Apply ``service``'s migrations up to ``revision`` in its own schema."""
    command.upgrade(alembic_config(service, database_url), revision)


def current_revision(service: str, database_url: str) -> str | None:
    """The applied revision of ``service``'s schema, or None before any migration."""
    schema = f"{service}_svc"
    engine = create_engine(_sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            exists = conn.execute(
                text("SELECT to_regclass(:t)"), {"t": f"{schema}.alembic_version"}
            ).scalar()
            if not exists:
                return None
            return conn.execute(text(f'SELECT version_num FROM "{schema}".alembic_version')).scalar()
    finally:
        engine.dispose()


def run_env() -> None:
    """Body of every service's ``migrations/env.py`` (online mode only)."""
    cfg = context.config
    schema = cfg.attributes["schema"]
    engine = create_engine(_sqlalchemy_url(cfg.attributes["database_url"]))
    lock_key = zlib.crc32(f"migrate:{schema}".encode())
    try:
        with engine.connect() as conn:
            with conn.begin():
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key})
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                conn.execute(text(f'SET LOCAL search_path TO "{schema}", public'))
                context.configure(
                    connection=conn,
                    version_table_schema=schema,
                    transaction_per_migration=False,
                )
                context.run_migrations()
    finally:
        engine.dispose()

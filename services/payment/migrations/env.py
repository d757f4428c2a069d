"""Alembic environment for this service's schema (shared implementation)."""
from shared.migrations import run_env

run_env()

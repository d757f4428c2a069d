"""The README's configuration tables are what scripts/gen_config_docs.py generates (no drift)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_configuration_tables_are_generated_from_the_settings():
    gen = _generator()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert gen.updated(readme) == readme, "README.md is out of date: run `make config-docs`"


def test_every_declared_variable_has_a_row_and_no_secret_value_is_shown():
    gen = _generator()
    block = gen.render()
    from services.auth.settings import DEV_KEY_ENCRYPTION_KEY
    from services.notification.settings import DEV_SECRET_KEY

    for _heading, _readers, classes in gen.scopes():
        for cls in classes:
            for variable, field_name in cls.variables().items():
                assert f"| `{variable}` |" in block, variable
                assert cls.model_fields[field_name].description, f"{variable} has no description"
    for required in ("AUTH_ACCESS_TOKEN_TTL_S", "AUTH_KEY_ENCRYPTION_KEYS", "GUNICORN_THREADS",
                     "WEB_CONCURRENCY", "CONSUMER_POLLERS", "BREAKER_<NAME>_FAIL_MAX"):
        assert f"| `{required}` |" in block
    assert DEV_KEY_ENCRYPTION_KEY not in block and DEV_SECRET_KEY not in block


def test_a_drifted_readme_is_detected():
    gen = _generator()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    row = "| `GUNICORN_THREADS` | integer | `8` |"
    drifted = readme.replace(row, row.replace("`8`", "`16`"))
    assert drifted != readme
    assert gen.updated(drifted) == readme
    assert gen.main(["--check"]) == 0

"""Settings validation: a bad environment fails at start naming the variable (no I/O)."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, load_settings
from shared.settings import Bool, EnvSettings, Float, Int, var

DATABASE_URL = "postgresql://app@localhost/orders"


def env(**changes) -> dict[str, str]:
    """A minimal valid environment with ``changes`` (None removes a variable)."""
    values = {"DATABASE_URL": DATABASE_URL}
    values.update(changes)
    return {k: v for k, v in values.items() if v is not None}


def config_error(service: str = "order", **changes) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(service, env(**changes))
    return info.value


def test_defaults_for_local_development():
    settings = load_settings("order", env())
    assert settings.app_env == "development"
    assert settings.database_url == DATABASE_URL
    assert settings.sqs_endpoint_url is None  # unset means real AWS
    assert settings.aws_region == "us-east-1"
    assert settings.queue_prefix == ""
    assert (settings.db_pool_min, settings.db_pool_max) == (1, 10)
    assert (settings.schema, settings.producer) == ("order_svc", "order-service")
    assert settings.service_env("SIMULATOR_STEP_S") == "ORDER_SIMULATOR_STEP_S"
    assert settings.peers == {}


def test_values_are_read_from_the_given_environment():
    settings = load_settings("delivery", env(
        SQS_ENDPOINT_URL="http://localhost:9324", QUEUE_PREFIX=" staging- ", DB_POOL_MIN="2",
        DB_POOL_MAX="4", LOG_LEVEL="DEBUG", LOG_FORMAT="console", ORDER_URL="http://order:8001",
        AWS_REGION="eu-central-1"))
    assert settings.sqs_endpoint_url == "http://localhost:9324"
    assert settings.queue_prefix == "staging-"
    assert (settings.db_pool_min, settings.db_pool_max) == (2, 4)
    assert (settings.log_level, settings.log_format) == ("DEBUG", "console")
    assert settings.peers == {"order": "http://order:8001"}
    assert settings.aws_region == "eu-central-1"
    assert settings.schema == "delivery_svc"


@pytest.mark.parametrize(("changes", "variable", "words"), [
    ({"DATABASE_URL": None}, "DATABASE_URL", "required"),
    ({"DATABASE_URL": "   "}, "DATABASE_URL", "required"),
    ({"DATABASE_URL": "mysql://app@localhost/orders"}, "DATABASE_URL", "postgresql://"),
    ({"DB_POOL_MAX": "ten"}, "DB_POOL_MAX", "integer"),
    ({"DB_POOL_MIN": "1.5"}, "DB_POOL_MIN", "integer"),
    ({"DB_POOL_MIN": "-1"}, "DB_POOL_MIN", ">= 0"),
    ({"DB_POOL_MIN": "5", "DB_POOL_MAX": "2"}, "DB_POOL_MAX", ">= 5"),
    ({"DB_POOL_MAX": "0"}, "DB_POOL_MAX", ">= 1"),
    ({"APP_ENV": "staging"}, "APP_ENV", "one of"),
    ({"LOG_LEVEL": "VERBOSE"}, "LOG_LEVEL", "one of"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "one of"),
])
def test_invalid_settings_name_the_variable(changes, variable, words):
    error = config_error(**changes)
    assert error.variable == variable
    assert str(error).startswith(f"{variable}: ")
    assert words in str(error)


def test_production_needs_no_signing_secret():
    # Services verify tokens with the auth service's public keys (JWKS); they hold no secret.
    settings = load_settings("order", env(APP_ENV="production", AUTH_URL="https://auth.internal"))
    assert settings.app_env == "production"
    assert settings.peers["auth"] == "https://auth.internal"
    assert not hasattr(settings, "jwt_secret")


def test_an_explicit_environment_ignores_the_process_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-process/db")
    monkeypatch.setenv("QUEUE_PREFIX", "leaked-")
    settings = load_settings("order", env(DATABASE_URL="postgresql://given/db"))
    assert settings.database_url == "postgresql://given/db"
    assert settings.queue_prefix == ""


def test_the_process_environment_is_read_when_none_is_given(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://from-process/db")
    monkeypatch.delenv("APP_ENV", raising=False)
    assert load_settings("order").database_url == "postgresql://from-process/db"


# --- the typed readers -------------------------------------------------------------------------
class Readers(EnvSettings):
    """One variable of each declared type, as the settings classes declare theirs."""

    n: Int = var("N", 7, "an integer")
    bounded: Int = var("BOUNDED", 5, "an integer between 1 and 10", ge=1, le=10)
    b: Bool = var("B", True, "a boolean")
    simulator: Bool = var("DELIVERY_SIMULATOR_ENABLED", False, "a boolean")
    f: Float = var("F", 0.5, "a number", ge=0.0)


@pytest.mark.parametrize(("raw", "expected"), [
    (None, 7), ("", 7), ("  ", 7), ("0", 0), ("12", 12), (" 3 ", 3),
])
def test_int_variables(raw, expected):
    values = {} if raw is None else {"N": raw}
    assert Readers.from_env(values).n == expected


@pytest.mark.parametrize(("raw", "words"), [("x", "integer"), ("2.0", "integer"), ("11", "between 1 and 10"),
                                            ("0", "between 1 and 10")])
def test_int_variables_reject(raw, words):
    with pytest.raises(ConfigError, match=words) as info:
        Readers.from_env({"BOUNDED": raw})
    assert info.value.variable == "BOUNDED"


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", True), ("true", True), ("YES", True), ("on", True),
    ("0", False), ("False", False), ("no", False), ("off", False), ("", True),
])
def test_bool_variables(raw, expected):
    assert Readers.from_env({"B": raw}).b is expected


def test_bool_variables_reject_anything_else():
    with pytest.raises(ConfigError, match="true or false") as info:
        Readers.from_env({"DELIVERY_SIMULATOR_ENABLED": "maybe"})
    assert info.value.variable == "DELIVERY_SIMULATOR_ENABLED"


def test_float_variables():
    assert Readers.from_env({}).f == 0.5
    assert Readers.from_env({"F": "0.2"}).f == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="number"):
        Readers.from_env({"F": "fast"})
    with pytest.raises(ConfigError, match=">= 0"):
        Readers.from_env({"F": "-1"})

"""The typed settings declarations: every variable's type and bounds errors name it,
production refusals, defaults, and secrets kept out of reprs (no I/O)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from services.auth.settings import AuthSettings
from services.delivery.settings import DeliverySettings
from services.delivery.settings import load as load_delivery
from services.inventory.settings import InventorySettings
from services.notification.settings import SETTINGS_CLASSES as NOTIFICATION_CLASSES
from services.notification.settings import EmailSettings
from services.notification.settings import load as load_notification
from services.order.settings import OrderSettings
from services.order.settings import load as load_order
from shared.config import (
    BreakerOverride,
    BreakerThresholds,
    ConfigError,
    Settings,
    WorkerSettings,
    load_settings,
)
from shared.settings import bounds_text, choices_of

ROOT = Path(__file__).resolve().parents[2]
DB = {"DATABASE_URL": "postgresql://app@localhost/db"}
GUNICORN = runpy.run_path(str(ROOT / "infra" / "gunicorn.conf.py"))["GunicornSettings"]
CLASSES = (Settings, WorkerSettings, BreakerThresholds, BreakerOverride, OrderSettings, DeliverySettings,
           InventorySettings, *NOTIFICATION_CLASSES, AuthSettings, GUNICORN)


def _read(cls, env):
    """``cls`` from ``env`` the way its processes read it."""
    if cls is Settings:
        return load_settings("order", {**DB, **env})
    if cls is BreakerOverride:
        return cls.from_env(env, name="INVENTORY")
    return cls.from_env(env)


def _bad_values(cls):
    """(variable, bad value, words the error must contain) for every declared variable."""
    for variable, field_name in cls.variables("INVENTORY" if cls is BreakerOverride else None).items():
        field = cls.model_fields[field_name]
        text = repr(field.annotation) + repr(field.metadata)  # Annotated validators live in metadata
        if choices_of(field.annotation):
            yield variable, "no-such-choice", "one of"
        elif "parse_int" in text:
            yield variable, "x", "integer"
        elif "parse_float" in text:
            yield variable, "fast", "number"
        elif "parse_bool" in text:
            yield variable, "maybe", "true or false"
        ge = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
        le = next((m.le for m in field.metadata if hasattr(m, "le")), None)
        if ge is not None:
            yield variable, str(ge - 1), bounds_text(field)
        if le is not None:
            yield variable, str(le + 1), bounds_text(field)


CASES = [(cls, variable, value, words) for cls in CLASSES for variable, value, words in _bad_values(cls)]


@pytest.mark.parametrize(("cls", "variable", "value", "words"), CASES,
                         ids=[f"{case[1]}={case[2]}" for case in CASES])
def test_every_bad_value_names_its_variable(cls, variable, value, words):
    with pytest.raises(ConfigError) as info:
        _read(cls, {variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")
    assert words in str(info.value)


def test_the_cases_cover_the_typed_variables():
    # The generated cases above must not silently shrink to nothing.
    assert len(CASES) > 100
    assert {"AUTH_RSA_BITS", "CONSUMER_WAIT_TIME_S", "GUNICORN_THREADS", "BREAKER_INVENTORY_FAIL_MAX",
            "NOTIFICATION_SMTP_PORT", "DELIVERY_SIMULATOR_ENABLED"} <= {case[1] for case in CASES}


def test_blank_values_take_the_default_and_values_are_stripped():
    worker = WorkerSettings.from_env({"CONSUMER_POLLERS": "  ", "CONSUMER_WAIT_TIME_S": " 5 "})
    assert (worker.consumer_pollers, worker.consumer_wait_time_s) == (2, 5)


def test_defaults_are_the_documented_ones():
    worker = WorkerSettings.from_env({})
    assert (worker.consumer_wait_time_s, worker.consumer_max_messages, worker.consumer_pollers) == (20, 10, 2)
    assert (worker.consumer_retry_base_s, worker.consumer_retry_cap_s) == (2.0, 900.0)
    assert (worker.relay_enabled, worker.relay_poll_interval_s, worker.relay_retry_max_s) == (True, 1.0, 10.0)
    assert (worker.shutdown_timeout_s, worker.metrics_port) == (25.0, 0)
    _, order = load_order(DB)
    assert (order.rate_limit_per_customer, order.inventory_timeout_s, order.inventory_attempts) == (
        "60/minute", 1.0, 3)
    assert (order.client_id, order.client_secret) == (None, None)
    _, delivery = load_delivery(DB)
    assert (delivery.simulator_enabled, delivery.simulator_step_s) == (False, 2.0)
    assert delivery.simulator_tick == 0.5
    assert DeliverySettings.from_env({"DELIVERY_SIMULATOR_STEP_S": "0.1"}).simulator_tick == 0.05
    assert DeliverySettings.from_env({"DELIVERY_SIMULATOR_TICK_S": "3"}).simulator_tick == 3.0
    inventory = InventorySettings.from_env({})
    assert (inventory.reservation_ttl_s, inventory.sweep_interval_s) == (600.0, 5.0)
    breakers = BreakerThresholds.from_env({})
    assert (breakers.fail_max, breakers.reset_timeout_s) == (5, 10.0)
    common = load_settings("order", DB)
    assert common.cors_allowed_origins == ()
    assert (common.rate_limit_storage_uri, common.auth_jwks_url) == (None, None)
    assert (common.jwks_cache_ttl_s, common.jwks_min_refresh_s) == (300.0, 10.0)
    gunicorn = GUNICORN.from_env({})
    assert (gunicorn.port, gunicorn.workers, gunicorn.threads, gunicorn.timeout) == (8000, 2, 8, 30)
    assert (gunicorn.log_level, gunicorn.forwarded_allow_ips, gunicorn.control_socket) == (
        "info", "127.0.0.1", None)


def test_notification_ses_region_defaults_to_aws_region():
    _, own = load_notification({**DB, "AWS_REGION": "eu-west-1"})
    assert own.email.ses_region == "eu-west-1"
    _, own = load_notification({**DB, "AWS_REGION": "eu-west-1", "NOTIFICATION_SES_REGION": "us-west-2"})
    assert own.email.ses_region == "us-west-2"


# --- production refusals ---------------------------------------------------------------------------
def test_production_refuses_the_carrier_simulator():
    with pytest.raises(ConfigError) as info:
        load_delivery({**DB, "APP_ENV": "production", "DELIVERY_SIMULATOR_ENABLED": "true"})
    assert info.value.variable == "DELIVERY_SIMULATOR_ENABLED"
    assert load_delivery({**DB, "DELIVERY_SIMULATOR_ENABLED": "true"})[1].simulator_enabled


def test_production_refuses_any_origin_for_cors():
    with pytest.raises(ConfigError, match="not allowed in production"):
        load_settings("order", {**DB, "APP_ENV": "production", "CORS_ALLOWED_ORIGINS": "*"})
    assert load_settings("order", {**DB, "CORS_ALLOWED_ORIGINS": "https://a.example/, http://b:8080"}
                         ).cors_allowed_origins == ("https://a.example", "http://b:8080")


def test_production_mail_needs_an_explicit_provider_and_sender_and_tls_for_credentials():
    production = {**DB, "APP_ENV": "production", "NOTIFICATION_SECRET_KEYS": Fernet.generate_key().decode()}
    with pytest.raises(ConfigError) as info:
        load_notification({**production, "NOTIFICATION_EMAIL_PROVIDER": "smtp"})
    assert info.value.variable == "NOTIFICATION_EMAIL_FROM"
    smtp = {**production, "NOTIFICATION_EMAIL_PROVIDER": "smtp",
            "NOTIFICATION_EMAIL_FROM": "shop@example.com",
            "NOTIFICATION_SMTP_USERNAME": "shop", "NOTIFICATION_SMTP_PASSWORD": "pw"}
    with pytest.raises(ConfigError) as info:
        load_notification(smtp)
    assert info.value.variable == "NOTIFICATION_SMTP_STARTTLS"
    assert load_notification({**smtp, "NOTIFICATION_SMTP_STARTTLS": "true"})[1].email.smtp_starttls
    with pytest.raises(ConfigError) as info:
        load_notification({**DB, "NOTIFICATION_SMTP_USERNAME": "shop"})
    assert info.value.variable == "NOTIFICATION_SMTP_PASSWORD"


# --- cross-variable rules and secrets ---------------------------------------------------------------
def test_password_max_length_must_not_be_below_the_minimum():
    with pytest.raises(ConfigError) as info:
        AuthSettings.from_env({"AUTH_PASSWORD_MIN_LENGTH": "20", "AUTH_PASSWORD_MAX_LENGTH": "12"})
    assert info.value.variable == "AUTH_PASSWORD_MAX_LENGTH"
    assert "between 20 and 1024" in str(info.value)


def test_per_breaker_variables_fall_back_to_the_global_ones():
    assert BreakerOverride.from_env({"BREAKER_FAIL_MAX": "9"}, name="INVENTORY").fail_max is None
    own = BreakerOverride.from_env({"BREAKER_INVENTORY_RESET_TIMEOUT_S": "2.5"}, name="INVENTORY")
    assert (own.fail_max, own.reset_timeout_s) == (None, 2.5)


def test_secrets_never_appear_in_reprs():
    key = Fernet.generate_key().decode()
    auth = AuthSettings.from_env({"AUTH_KEY_ENCRYPTION_KEYS": key})
    assert key not in repr(auth) and auth.key_encryption_keys == (key,)
    _, order = load_order({**DB, "ORDER_CLIENT_ID": "order-service", "ORDER_CLIENT_SECRET": "s3cret-value"})
    assert isinstance(order.client_secret, SecretStr) and "s3cret-value" not in repr(order)
    assert order.client_secret.get_secret_value() == "s3cret-value"
    email = EmailSettings.from_env({"NOTIFICATION_SMTP_USERNAME": "u", "NOTIFICATION_SMTP_PASSWORD": " pw "})
    assert "pw" not in repr(email)
    assert email.smtp_password.get_secret_value() == " pw "  # passwords keep their whitespace
    common = load_settings("order", {"DATABASE_URL": "postgresql://app:db-password@db/app"})
    assert "db-password" not in repr(common) and common.database_url.endswith("@db/app")


def test_an_explicit_environment_is_never_mixed_with_the_process_one(monkeypatch):
    monkeypatch.setenv("CONSUMER_POLLERS", "7")
    assert WorkerSettings.from_env({}).consumer_pollers == 2
    assert WorkerSettings.from_env().consumer_pollers == 7

"""Settings from environment variables only (12-factor), validated at start.

Every service reads the common settings below; service-specific ones are read
with :func:`env_int` / :func:`env_bool` / :func:`env_str` under a
``<SERVICE>_`` prefix. A missing or invalid variable raises
:class:`ConfigError` naming the variable, so a bad deployment fails at boot
with a message an operator can act on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.services import SERVICE_NAMES

DEV_AWS_KEY = "local-dev"  # emulators accept any credentials

SQS_EMULATOR_PORT = 9324


class ConfigError(RuntimeError):
    """A required environment variable is missing or invalid."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


def env_str(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    """Return a non-empty string variable, or ``default``; raise when neither exists."""
    value = env.get(name)
    if value is None or value.strip() == "":
        if default is None:
            raise ConfigError(name, "is required but not set")
        return default
    return value.strip()


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0,
            maximum: int | None = None) -> int:
    """Return an integer variable within ``[minimum, maximum]``."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(name, f"must be {bound}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    """Return a float variable that is at least ``minimum``."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Return a boolean variable written as true/false, 1/0, yes/no or on/off."""
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, f"must be true or false, got {raw!r}")


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    """Return a variable that must be one of ``choices``."""
    value = env_str(env, name, default)
    if value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """The settings every service reads. Build with :func:`load_settings`."""

    service: str
    app_env: str
    database_url: str
    sqs_endpoint_url: str | None
    aws_region: str
    queue_prefix: str
    log_level: str
    log_format: str
    jwt_issuer: str
    jwt_audience: str
    db_pool_min: int
    db_pool_max: int
    peers: dict[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def schema(self) -> str:
        """The PostgreSQL schema this service owns."""
        return f"{self.service}_svc"

    @property
    def producer(self) -> str:
        """The envelope ``producer`` name, e.g. ``order-service``."""
        return f"{self.service}-service"

    def service_env(self, suffix: str) -> str:
        """The name of a service-specific variable, e.g. ``ORDER_`` + suffix."""
        return f"{self.service.upper()}_{suffix}"


def load_settings(service: str, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the common settings for ``service`` from ``env``."""
    env = dict(os.environ if env is None else env)
    app_env = env_choice(env, "APP_ENV", "development", ("development", "test", "production"))
    database_url = env_str(env, "DATABASE_URL")
    if not database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("DATABASE_URL", "must be a postgresql:// URL")
    peers = {
        name: env[f"{name.upper()}_URL"]
        for name in SERVICE_NAMES
        if env.get(f"{name.upper()}_URL")
    }
    db_pool_min = env_int(env, "DB_POOL_MIN", 1, minimum=0)
    return Settings(
        service=service,
        app_env=app_env,
        database_url=database_url,
        sqs_endpoint_url=env.get("SQS_ENDPOINT_URL") or None,
        aws_region=env_str(env, "AWS_REGION", "us-east-1"),
        queue_prefix=env.get("QUEUE_PREFIX", "").strip(),
        log_level=env_choice(env, "LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
        log_format=env_choice(env, "LOG_FORMAT", "json", ("json", "console")),
        jwt_issuer=env_str(env, "JWT_ISSUER", "order-platform-dev"),
        jwt_audience=env_str(env, "JWT_AUDIENCE", "order-platform"),
        db_pool_min=db_pool_min,
        db_pool_max=env_int(env, "DB_POOL_MAX", 10, minimum=max(1, db_pool_min)),
        peers=peers,
        env=env,
    )

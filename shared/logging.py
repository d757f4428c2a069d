"""structlog configuration: JSON in production, readable in a terminal.

Every line carries ``service`` and, via contextvars, ``correlation_id`` (and in
consumers ``event_id`` / ``event_type``). Values whose key looks secret are
redacted so tokens and passwords never reach the logs.
"""

from __future__ import annotations

import logging
import sys

import structlog

SECRET_KEY_PARTS = ("password", "secret", "token", "authorization", "api_key")
REDACTED = "[redacted]"


def _redact_secrets(_logger, _method, event_dict):
    for key in list(event_dict):
        if any(part in key.lower() for part in SECRET_KEY_PARTS):
            event_dict[key] = REDACTED
    return event_dict


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog + stdlib logging for this process (call once, at start)."""
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    shared_processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    structlog.configure(
        processors=[*shared_processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Library loggers (gunicorn, botocore, alembic) go through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "aiobotocore", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str | None = None):
    """A structlog logger."""
    return structlog.get_logger(name)

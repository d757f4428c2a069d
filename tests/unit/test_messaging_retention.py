"""Settings of the messaging retention job: defaults, and the floor that keeps duplicates out."""

from __future__ import annotations

import pytest

from shared.config import ConfigError, WorkerSettings
from shared.messaging import retention
from shared.messaging.topology import DLQ_RETENTION_S


def retention_settings(env: dict[str, str]) -> WorkerSettings:
    return WorkerSettings.from_env(env)


def test_defaults_keep_a_month_and_run_hourly():
    settings = retention_settings({})
    assert (settings.retention_days, settings.retention_interval_s) == (30, 3600.0)


def test_retention_settings_are_read_from_the_environment():
    settings = retention_settings({"MESSAGING_RETENTION_DAYS": "45",
                                             "MESSAGING_RETENTION_INTERVAL_S": "60"})
    assert (settings.retention_days, settings.retention_interval_s) == (45, 60.0)


def test_inbox_retention_outlives_every_redelivery_window():
    # SQS keeps a message at most 14 days in its queue, and a dead letter our
    # consumer writes starts a new 14 days in the DLQ, from where it may be
    # replayed: an inbox row younger than both together can still see its event.
    longest_sqs_retention_days = 14
    assert DLQ_RETENTION_S == longest_sqs_retention_days * 86400
    assert retention.MIN_RETENTION_DAYS > 2 * longest_sqs_retention_days
    assert retention_settings({}).retention_days >= retention.MIN_RETENTION_DAYS
    with pytest.raises(ConfigError, match="MESSAGING_RETENTION_DAYS"):
        retention_settings({"MESSAGING_RETENTION_DAYS": "14"})
    with pytest.raises(ConfigError, match="MESSAGING_RETENTION_DAYS"):
        retention_settings(
            {"MESSAGING_RETENTION_DAYS": str(retention.MIN_RETENTION_DAYS - 1)})
    with pytest.raises(ConfigError, match="MESSAGING_RETENTION_INTERVAL_S"):
        retention_settings({"MESSAGING_RETENTION_INTERVAL_S": "0"})

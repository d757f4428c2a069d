"""Money movements keep retrying through a provider outage instead of dead-lettering."""

from shared.backoff import backoff_delay
from shared.config import WorkerSettings
from shared.queues import queue


def _retry_budget_s(max_receive_count: int, base_s: float, cap_s: float) -> float:
    # The consumer waits base * 2^(n-1) (capped) after the n-th failed receive, and the
    # message is dead-lettered on the receive that reaches max_receive_count.
    return sum(backoff_delay(n - 1, base_s, cap_s) for n in range(1, max_receive_count))


def test_captures_and_voids_survive_hours_of_provider_outage():
    defaults = WorkerSettings()
    spec = queue("order-payments.fifo")
    budget = _retry_budget_s(spec.max_receive_count, defaults.consumer_retry_base_s,
                             defaults.consumer_retry_cap_s)
    assert budget >= 4 * 3600, f"only {budget:.0f} s of retries before the DLQ"


def test_other_queues_keep_the_short_default_budget():
    # The long budget is for the provider-facing consumer only: elsewhere a poison message
    # should reach its DLQ (and an operator) within a minute.
    assert queue("order-paid.fifo").max_receive_count == 5

#!/usr/bin/env python3
"""The chaos run: the whole system under a seeded fault schedule, then invariant checks.

    make chaos                                   # defaults below, report in RELIABILITY.md
    make chaos CHAOS_ARGS="--seed 42 --duration 120 --orders 2000"
    .venv/bin/python scripts/chaos.py --help

Prints the schedule before it starts (the same seed and options give the same
schedule), progress while it runs, and every violation at the end. Exit code 0
when every invariant held, 1 otherwise, 2 when the run itself failed.
See docs/architecture.md ("The chaos run") and devstack/src/devstack/chaos/.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click

from devstack.chaos import report
from devstack.chaos.run import Config, chaos_run, new_seed
from devstack.paths import REPO_ROOT


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt


@click.command()
@click.option("--seed", type=int, default=None, help="Fault schedule and traffic seed (default: random).")
@click.option("--duration", default=300.0, show_default=True, type=click.FloatRange(20, 7200),
              help="Seconds of traffic (faults fall within it).")
@click.option("--orders", default=10_000, show_default=True, type=click.IntRange(1),
              help="Stop placing orders after this many requests.")
@click.option("--clients", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Concurrent customers placing orders.")
@click.option("--cancel-ratio", default=0.2, show_default=True, type=click.FloatRange(0, 1),
              help="Share of orders cancelled: half before paying, half after.")
@click.option("--sqs", type=click.Choice(["fauxqs", "moto"]), default="fauxqs", show_default=True,
              help="SQS emulator (fauxqs: several times faster than moto under load).")
@click.option("--sqs-outage", default=30.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds the SQS endpoint is unreachable.")
@click.option("--freeze", default=10.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds the inventory API is frozen (SIGSTOP).")
@click.option("--provider-freeze", default=12.0, show_default=True, type=click.FloatRange(1, 600),
              help="Seconds the payment provider (localstripe) is frozen (SIGSTOP); at least as long "
                   "as the checkout made meanwhile takes to be refused.")
@click.option("--unpaid-ratio", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Share of orders left unpaid (they expire after ORDER_PAYMENT_TTL_S).")
@click.option("--kills-per-process", default=1, show_default=True, type=click.IntRange(0, 20))
@click.option("--keep-data", is_flag=True, help="Keep the run's PostgreSQL data (the logs are always kept).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              default=REPO_ROOT / "RELIABILITY.md", show_default=True,
              help="Where the run's section is written ('-': nowhere).")
def main(seed, duration, orders, clients, cancel_ratio, sqs, sqs_outage, freeze, provider_freeze,
         unpaid_ratio, kills_per_process, keep_data, report_path):
    """Run the system under faults, check the invariants, write the report."""
    # SIGTERM (and SIGINT, which a background job ignores) stop the run and everything it started.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    config = Config(seed=new_seed() if seed is None else seed, duration_s=duration, max_orders=orders,
                    clients=clients, cancel_ratio=cancel_ratio, sqs=sqs, sqs_outage_s=sqs_outage,
                    freeze_s=freeze, provider_freeze_s=provider_freeze, unpaid_ratio=unpaid_ratio,
                    kills_per_process=kills_per_process, keep_data=keep_data)
    try:
        result = chaos_run(config, say)
    except KeyboardInterrupt:
        say("interrupted")
        sys.exit(130)
    except Exception as exc:  # the run could not be made: say so plainly
        say(f"the run failed: {type(exc).__name__}: {exc}")
        sys.exit(2)
    if str(report_path) != "-":
        report.write(result, report_path)
        say(f"report written to {report_path}")
    for name, violations in result.violations.items():
        say(f"{'ok  ' if not violations else 'FAIL'} {name}")
        for violation in violations:
            say(f"       {violation}")
    say(f"{len(result.accepted)} orders accepted; "
        f"{'every invariant held' if result.ok else 'violations found'}")
    sys.exit(0 if result.ok else 1)


if __name__ == "__main__":
    main()

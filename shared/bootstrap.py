"""Bootstrap a deployment: create every queue of the topology, migrate every schema.

Needed wherever the platform runs — docker-compose's one-shot ``bootstrap``
service, a migrations job before a rollout, ``make run`` and the test and
benchmark stacks (which call :func:`bootstrap` directly). Idempotent: queues
that exist are kept, migrations already applied are skipped.

Command line::

    python -m shared.bootstrap [--skip-queues] [SERVICE ...]

reads ``DATABASE_URL`` (required), ``SQS_ENDPOINT_URL`` (unset = AWS),
``AWS_REGION`` (default us-east-1) and ``QUEUE_PREFIX`` from the
environment; without services it migrates every one that has migrations
(:func:`shared.services.with_migrations`). ``--skip-queues`` only migrates,
for when something else declares the queues (ElasticMQ's config, CloudFormation).
Exit code 0 on success, 2 when DATABASE_URL is missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Sequence

from shared.migrations import SERVICES_DIR
from shared.services import SERVICE_NAMES, with_migrations

log = logging.getLogger(__name__)


def bootstrap(database_url: str | None, sqs_endpoint_url: str | None, region: str,
              queue_prefix: str = "", services: Iterable[str] | None = None,
              create_queues: bool = True) -> dict[str, str]:
    """Create every queue of the topology and migrate each service's schema.

    ``services`` defaults to every service with migrations; a service whose
    ``migrations`` directory is missing is skipped (an API without a schema),
    one with the directory but no ``env.py`` is an error. Returns the queue
    name -> URL map (empty when ``create_queues`` is false).
    """
    from shared import migrations
    from shared.messaging.sqs import ensure_queues, sync_client
    from shared.queues import TOPOLOGY

    urls: dict[str, str] = {}
    if create_queues:
        urls = ensure_queues(sync_client(sqs_endpoint_url, region), TOPOLOGY, queue_prefix)
        log.info("queues ready: %s", ", ".join(sorted(urls)))
    for service in (with_migrations() if services is None else services):
        migrations_dir = SERVICES_DIR / service / "migrations"
        if not migrations_dir.is_dir():
            log.info("service %s has no migrations; skipped", service)
            continue
        if not (migrations_dir / "env.py").exists():
            raise RuntimeError(f"{migrations_dir} has no env.py: not an Alembic directory")
        if database_url is None:
            raise RuntimeError("DATABASE_URL is required to migrate service schemas")
        migrations.upgrade(service, database_url)
        log.info("schema %s_svc migrated", service)
    return urls


def main(argv: Sequence[str] | None = None) -> int:
    """The command line above; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m shared.bootstrap",
                                     description="Create the queues and migrate the schemas "
                                                 "(configured by environment variables).")
    parser.add_argument("--skip-queues", action="store_true",
                        help="only migrate (e.g. ElasticMQ already declares the queues)")
    parser.add_argument("services", nargs="*", metavar="SERVICE",
                        help=f"default: every service with migrations ({', '.join(with_migrations())})")
    args = parser.parse_args(argv)
    unknown = [s for s in args.services if s not in SERVICE_NAMES]
    if unknown:
        parser.error(f"unknown service(s): {', '.join(unknown)} (known: {', '.join(SERVICE_NAMES)})")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s bootstrap %(message)s")
    database_url = os.environ.get("DATABASE_URL") or None
    if database_url is None:
        print("DATABASE_URL: is required but not set", file=sys.stderr)
        return 2
    bootstrap(database_url, os.environ.get("SQS_ENDPOINT_URL") or None,
              os.environ.get("AWS_REGION") or "us-east-1", os.environ.get("QUEUE_PREFIX", ""),
              args.services or None, create_queues=not args.skip_queues)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""docker-compose's demo identities: what ``make run`` creates, written where the host finds it.

Runs :func:`services.auth.demo.ensure_demo` (idempotent; refused when
APP_ENV=production) against the compose database and writes the demo client
secrets and passwords to the file named by its argument (docker-compose
mounts the repository's ``.data/`` at its directory, so ``scripts/token`` and ``scripts/demo.sh`` on
the host read ``.data/demo-credentials.json`` as after ``make run``). The
file records the auth service's URL as the host reaches it (the published
port), not as the containers do.

Usage: ``python infra/compose_demo.py /demo/demo-credentials.json``
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from services.auth.demo import ensure_demo
from shared.services import service


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python infra/compose_demo.py CREDENTIALS_FILE", file=sys.stderr)
        return 2
    path = Path(argv[0])
    # The URL scripts/token uses from the host: the auth API's published port.
    changed = ensure_demo(os.environ["DATABASE_URL"], path, service("auth").local_url())
    print(f"demo clients and accounts: {', '.join(changed) if changed else 'already there'} "
          f"(credentials in {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Where the local stack finds the repository and keeps its files.

The repository root is where the runtime packages (``shared``, ``services``)
live: ``make venv`` installs them editable, so that is the checkout itself.
``.data/`` holds the embedded Postgres, emulator logs, benchmark runs and the
demo credentials (``make clean`` removes it); ``.tools/`` holds npm packages.
"""

from __future__ import annotations

from pathlib import Path

import shared

REPO_ROOT = Path(shared.__file__).resolve().parent.parent
SERVICES_DIR = REPO_ROOT / "services"
GUNICORN_CONF = REPO_ROOT / "infra" / "gunicorn.conf.py"
DATA_DIR = REPO_ROOT / ".data"
TOOLS_DIR = REPO_ROOT / ".tools"
LOOPBACK = "127.0.0.1"

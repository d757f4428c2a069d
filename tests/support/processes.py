"""Start service processes (workers, APIs) as a user would, with logs captured.

A thin layer over the local stack's supervisor (:mod:`devstack.supervisor`):
each process runs in its own session with a parent-death signal, its output
in a log file of the test's temporary directory, and whatever a test leaves
running is stopped at teardown.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from devstack.paths import GUNICORN_CONF, LOOPBACK
from devstack.supervisor import Child, Supervisor
from shared.services import service

# Each process' drain at teardown: workers run with WORKER_SHUTDOWN_TIMEOUT_S=20
# but have nothing in flight by then; what is still up after this is killed.
STOP_BUDGET_S = 10.0


@dataclass
class ProcessManager:
    """Starts processes for one test and stops whatever is left at teardown."""

    base_env: dict[str, str]
    log_dir: Path
    supervisor: Supervisor = field(default_factory=lambda: Supervisor(stream=sys.stderr, label="processes"))
    started: list[Child] = field(default_factory=list)

    def start(self, name: str, args: list[str], **env: str) -> Child:
        full_env = {**os.environ, **self.base_env, **{k: str(v) for k, v in env.items()},
                    "PYTHONUNBUFFERED": "1"}
        log_path = self.log_dir / f"{name}-{len(self.started)}.log"
        process = self.supervisor.start(name, args, full_env, log_path=log_path)
        self.started.append(process)
        return process

    def worker(self, name: str, **env: str) -> Child:
        """The service's queue worker (``python -m services.<name>.worker``)."""
        module = service(name).worker
        if module is None:
            raise ValueError(f"service {name} has no worker")
        return self.start(f"{name}-worker", [sys.executable, "-m", module], **env)

    def api(self, name: str, port: int, **env: str) -> Child:
        """The service's API under gunicorn, as in production."""
        svc = service(name)
        return self.start(
            f"{name}-api",
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF),
             "--bind", f"{LOOPBACK}:{port}", *svc.gunicorn_args, svc.app],
            **env)

    def stop_all(self) -> None:
        self.supervisor.stop_all(STOP_BUDGET_S)

"""Start service processes (workers, APIs) as a user would, with logs captured."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from shared.devstack import REPO_ROOT, spawn, stop_process


@dataclass
class ServiceProcess:
    """A running child process with its log file."""

    name: str
    proc: subprocess.Popen
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup (a crash)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM (only the process itself, as an orchestrator would) and wait for exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class ProcessManager:
    """Starts processes for one test and stops whatever is left at teardown."""

    base_env: dict[str, str]
    log_dir: Path
    started: list[ServiceProcess] = field(default_factory=list)

    def start(self, name: str, args: list[str], **env: str) -> ServiceProcess:
        full_env = {**os.environ, **self.base_env, **{k: str(v) for k, v in env.items()},
                    "PYTHONUNBUFFERED": "1"}
        log_path = self.log_dir / f"{name}-{len(self.started)}.log"
        log_file = open(log_path, "wb")  # noqa: SIM115 - the child owns it
        try:
            proc = spawn(args, env=full_env, cwd=REPO_ROOT, stdout=log_file,
                         stderr=subprocess.STDOUT)
        finally:
            log_file.close()
        process = ServiceProcess(name, proc, log_path)
        self.started.append(process)
        return process

    def worker(self, service: str, **env: str) -> ServiceProcess:
        """``python -m services.<service>.worker``."""
        return self.start(f"{service}-worker", [sys.executable, "-m", f"services.{service}.worker"],
                          **env)

    def api(self, service: str, port: int, **env: str) -> ServiceProcess:
        """The service's API under gunicorn, as in production."""
        return self.start(
            f"{service}-api",
            [sys.executable, "-m", "gunicorn", "-c", str(REPO_ROOT / "infra" / "gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{port}", f"services.{service}.app:create_app()"],
            **env)

    def stop_all(self) -> None:
        for process in self.started:
            stop_process(process.proc, timeout=10)

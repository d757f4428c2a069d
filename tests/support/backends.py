"""The SQS implementations the messaging contract tests run against (docs/sqs-portability.md section 8).

* ``moto`` — always: the suite's moto server, or a private one when the suite
  itself points at another endpoint;
* ``fauxqs`` — when ``node`` is on PATH and fauxqs is installed under
  ``.tools/fauxqs`` or can be installed there with npm;
* ``endpoint`` — whatever ``SQS_ENDPOINT_URL`` names (ElasticMQ, another emulator).

A backend that cannot be had is reported with the reason (the fixture turns
that into a pytest skip), never silently passed over.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.emulators import (
    DEFAULT_FAUXQS_DIR,
    fauxqs_package_dir,
    install_fauxqs,
    start_fauxqs,
    start_moto_server,
)
from devstack.supervisor import stop_process

MOTO = "moto"
FAUXQS = "fauxqs"
ENDPOINT = "endpoint"
BACKEND_NAMES = (MOTO, FAUXQS, ENDPOINT)

MIN_NODE_MAJOR = 20  # fauxqs 1.9.2 needs Node >= 20 (docs/sqs-portability.md section 5)
# Set to 0 to test fauxqs only when it is already installed (no npm run).
INSTALL_FAUXQS_ENV = "TEST_INSTALL_FAUXQS"


@dataclass(frozen=True)
class Backend:
    """One reachable SQS implementation."""

    name: str
    endpoint_url: str
    # fauxqs returns at most one message per group per receive; others may return several.
    one_message_per_group: bool = False

    def __str__(self) -> str:
        return f"{self.name}@{self.endpoint_url}"


class BackendUnavailable(RuntimeError):
    """This backend cannot run here; the message says why (shown as the skip reason)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_major(node: str) -> int:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=10,
                         check=True).stdout.strip()
    return int(out.lstrip("v").split(".")[0])


class BackendPool:
    """Starts each backend at most once per session and stops what it started."""

    def __init__(self, log_dir: Path, suite_endpoint: str, suite_endpoint_is_moto: bool,
                 env_endpoint: str | None):
        self.log_dir = Path(log_dir)
        self.suite_endpoint = suite_endpoint
        self.suite_endpoint_is_moto = suite_endpoint_is_moto
        self.env_endpoint = env_endpoint
        self._backends: dict[str, Backend | BackendUnavailable] = {}
        self._processes: list[subprocess.Popen] = []

    def get(self, name: str) -> Backend:
        """The backend called ``name``; raises :class:`BackendUnavailable` with the reason."""
        if name not in self._backends:
            try:
                self._backends[name] = self._start(name)
            except BackendUnavailable as exc:
                self._backends[name] = exc
        found = self._backends[name]
        if isinstance(found, BackendUnavailable):
            raise found
        return found

    def close(self) -> None:
        """Stop every emulator this pool started."""
        for proc in self._processes:
            stop_process(proc)
        self._processes.clear()

    # -- per backend ----------------------------------------------------------
    def _start(self, name: str) -> Backend:
        if name == MOTO:
            return self._moto()
        if name == FAUXQS:
            return self._fauxqs()
        if name == ENDPOINT:
            if not self.env_endpoint:
                raise BackendUnavailable("SQS_ENDPOINT_URL is not set")
            return Backend(ENDPOINT, self.env_endpoint)
        raise KeyError(name)

    def _moto(self) -> Backend:
        if self.suite_endpoint_is_moto:
            return Backend(MOTO, self.suite_endpoint)
        port = _free_port()
        proc = start_moto_server(port, log_file=self.log_dir / "moto-contract.log")
        self._processes.append(proc)
        return Backend(MOTO, f"http://127.0.0.1:{port}")

    def _fauxqs(self) -> Backend:
        node = shutil.which("node")
        if node is None:
            raise BackendUnavailable("node is not on PATH (fauxqs needs Node.js >= 20)")
        try:
            major = _node_major(node)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise BackendUnavailable(f"cannot tell the node version: {exc}") from None
        if major < MIN_NODE_MAJOR:
            raise BackendUnavailable(f"node {major} is too old for fauxqs (needs >= 20)")
        if fauxqs_package_dir(DEFAULT_FAUXQS_DIR) is None:
            if os.environ.get(INSTALL_FAUXQS_ENV, "1") == "0":
                raise BackendUnavailable(f"fauxqs is not installed under {DEFAULT_FAUXQS_DIR} "
                                         f"and {INSTALL_FAUXQS_ENV}=0")
            try:
                install_fauxqs(DEFAULT_FAUXQS_DIR)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                raise BackendUnavailable(f"fauxqs could not be installed: {exc}") from None
        port = _free_port()
        try:
            proc = start_fauxqs(port, DEFAULT_FAUXQS_DIR, log_file=self.log_dir / "fauxqs.log")
        except (RuntimeError, TimeoutError) as exc:
            raise BackendUnavailable(f"fauxqs did not start: {exc}") from None
        self._processes.append(proc)
        return Backend(FAUXQS, f"http://127.0.0.1:{port}", one_message_per_group=True)

"""Waiting until something is up: a TCP port accepts, an HTTP endpoint answers.

Every wait is bounded (``timeout``) and, given the process that should be
serving, fails at once when that process exits instead of waiting out the
timeout. Failures name what was awaited and the last thing seen.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterable

import requests

POLL_INTERVAL_S = 0.1


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_alive(proc: subprocess.Popen | None, what: str) -> None:
    """Raise RuntimeError when ``proc`` (if given) has exited."""
    if proc is not None and proc.poll() is not None:
        raise RuntimeError(f"process for {what} exited with code {proc.returncode}")


def wait_for_port(host: str, port: int, timeout: float = 30.0,
                  proc: subprocess.Popen | None = None) -> None:
    """Wait until ``host:port`` accepts connections; raise TimeoutError after ``timeout``.

    With ``proc``, fail at once (RuntimeError) if that process exits meanwhile.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_is_open(host, port):
            return
        check_alive(proc, f"{host}:{port}")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s")
        time.sleep(POLL_INTERVAL_S)


def wait_for_http(url: str, timeout: float = 30.0, statuses: Iterable[int] | None = None,
                  proc: subprocess.Popen | None = None) -> requests.Response:
    """Poll ``url`` until it answers (with one of ``statuses`` if given); return the response.

    Raises TimeoutError naming the last status or error after ``timeout``, or
    RuntimeError at once if ``proc`` exits meanwhile.
    """
    wanted = set(statuses) if statuses is not None else None
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            response = requests.get(url, timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if wanted is None or response.status_code in wanted:
                return response
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        check_alive(proc, url)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} not ready after {timeout:.0f}s (last: {last})")
        time.sleep(POLL_INTERVAL_S)

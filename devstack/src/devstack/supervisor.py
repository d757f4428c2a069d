"""The one process supervisor of the local stack.

``make run``, the benchmarks and the tests' process fixtures all start and
stop their children through :class:`Supervisor`:

- **spawn** — each child runs in its own session (a terminal's Ctrl-C reaches
  only the supervisor, which then stops the children in order) and, on Linux,
  with a parent-death signal (SIGTERM), so children die with the process that
  started them even when that process is killed outright;
- **output** — either copied line by line to the supervisor's stream with a
  name prefix (``make run``), or written to a log file per child (tests,
  benchmarks);
- **check-alive** — :meth:`Supervisor.dead` / :meth:`Supervisor.check_alive`
  report children that exited while they should be running;
- **stop** — SIGTERM to each child's process group (so grandchildren such as
  gunicorn's workers are reached), SIGKILL for whatever outlives the budget:
  either all together within one budget, or one by one newest first;
- **kill** — :meth:`Child.kill` for a crash without any cleanup.

Readiness waits are in :mod:`devstack.readiness`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from devstack.paths import REPO_ROOT

log = logging.getLogger(__name__)

KILL_WAIT_S = 0.5   # after SIGKILL: a process that is still there then is reported
PUMP_JOIN_S = 0.3   # for the output threads to print the last lines, all of them together
PREFIX_WIDTH = 16
COLORS = ("36", "33", "35", "32", "34", "31")

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# Resolved in the parent: the child between fork and exec should do as little
# as possible (no imports, no library loading).
_libc_prctl: Any = None
if sys.platform.startswith("linux"):
    try:
        _libc_prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not glibc/musl-like: no parent-death signal
        _libc_prctl = None


def _die_with_parent() -> None:
    # Runs in the child before exec. The signal fires when the *thread* that
    # forked us ends, so start children from a long-lived thread (the main one).
    if _libc_prctl is not None:
        _libc_prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def spawn(args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | str | None = None,
          stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
          ) -> subprocess.Popen:
    """Start a child in its own session that receives SIGTERM if its parent dies."""
    return subprocess.Popen(
        list(args), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
        start_new_session=True, preexec_fn=_die_with_parent if _libc_prctl else None,
    )


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to ``proc``'s process group (it leads one: see :func:`spawn`)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def stop_process(proc: subprocess.Popen, timeout: float = 5.0,
                 kill_wait: float = 2.0) -> int | None:
    """SIGTERM ``proc``'s process group, SIGKILL it after ``timeout``; return the exit code.

    Returns None if it still runs ``kill_wait`` seconds after SIGKILL.
    """
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            try:
                proc.wait(kill_wait)
            except subprocess.TimeoutExpired:
                log.warning("pid %s survived SIGKILL for %.1fs", proc.pid, kill_wait)
    return proc.returncode


class ChildDied(Exception):
    """A supervised process exited while it should be running."""


@dataclass
class Child:
    """A supervised process, with its log file or the thread copying its output."""

    name: str
    proc: subprocess.Popen
    log_path: Path | None = None
    pump: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        """Everything it wrote so far ("" when its output is not in a file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def kill(self, wait: float = 5.0) -> None:
        """SIGKILL its whole group: no drain, no cleanup (a crash)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(wait)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM the process itself only (as an orchestrator would) and wait for its exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        return self.proc.returncode

    def describe_exit(self) -> str:
        where = f", log {self.log_path}" if self.log_path is not None else ""
        return f"{self.name} (exit {self.proc.returncode}{where})"


class Supervisor:
    """Starts children, routes their output, watches them and stops them in order.

    ``stream`` receives prefixed child output and :meth:`say` lines, never
    interleaved mid-line. ``color`` colours the prefixes (a terminal).
    ``label`` prefixes the supervisor's own lines about stopping (``run: ...``);
    ``say`` replaces the stream for those lines (a benchmark's logger).
    """

    def __init__(self, *, stream: IO[str] | None = None, color: bool = False,
                 cwd: Path | str = REPO_ROOT, say: Callable[[str], None] | None = None,
                 label: str = ""):
        self.children: list[Child] = []
        self._stream = stream if stream is not None else sys.stdout
        self._color = color
        self._cwd = cwd
        self._out_lock = threading.Lock()
        self._say = say
        self._label = f"{label}: " if label else ""

    # ------------------------------------------------------------ output
    def say(self, text: str) -> None:
        """Print a supervisor line (never interleaved with a child's line)."""
        if self._say is not None:
            self._say(text)
            return
        with self._out_lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def _pump(self, proc: subprocess.Popen, prefix: str) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._out_lock:
                self._stream.write(prefix + line + "\n")
                self._stream.flush()
        proc.stdout.close()

    # ------------------------------------------------------------- start
    def start(self, name: str, args: Sequence[str], env: dict[str, str] | None = None, *,
              log_path: Path | None = None, cwd: Path | str | None = None) -> Child:
        """Start ``args`` as ``name``.

        With ``log_path`` its output (stdout and stderr) is appended to that
        file; without, it is copied to the stream prefixed with ``name``.
        """
        cwd = self._cwd if cwd is None else cwd
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as log_file:  # the child holds its own copy
                proc = spawn(args, env=env, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT)
            return self.adopt(name, proc, log_path)
        proc = spawn(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        prefix = f"{name:<{PREFIX_WIDTH}}| "
        if self._color:
            prefix = f"\x1b[{COLORS[len(self.children) % len(COLORS)]}m{prefix}\x1b[0m"
        pump = threading.Thread(target=self._pump, args=(proc, prefix), name=f"out-{name}",
                                daemon=True)
        pump.start()
        child = Child(name, proc, None, pump)
        self.children.append(child)
        return child

    def adopt(self, name: str, proc: subprocess.Popen, log_path: Path | None = None) -> Child:
        """Supervise ``proc`` (started by :func:`spawn` elsewhere, e.g. an emulator)."""
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    # ------------------------------------------------------------- watch
    def dead(self) -> list[Child]:
        """The children that have exited."""
        return [c for c in self.children if c.proc.poll() is not None]

    def check_alive(self) -> None:
        """Raise ChildDied for the first child that has exited."""
        for child in self.dead():
            raise ChildDied(f"{child.name} exited unexpectedly with code {child.proc.returncode}")

    # -------------------------------------------------------------- stop
    def stop(self, child: Child, timeout: float = 10.0, kill_wait: float = KILL_WAIT_S) -> int | None:
        """Stop one child (SIGTERM to its group, SIGKILL after ``timeout``) and forget it."""
        code = stop_process(child.proc, timeout, kill_wait)
        if child.pump is not None:
            child.pump.join(PUMP_JOIN_S)
        if child in self.children:
            self.children.remove(child)
        return code

    def stop_all(self, budget_s: float, kill_wait_s: float = KILL_WAIT_S, *,
                 one_by_one: bool = False) -> None:
        """Stop every child and forget them.

        Together (default): SIGTERM every group at once, wait up to
        ``budget_s`` in all, then SIGKILL the stragglers. ``one_by_one``:
        newest first, each given ``budget_s`` (a worker then still has the
        emulator it was started after while it drains).
        """
        if one_by_one:
            for child in reversed(list(self.children)):
                self.stop(child, budget_s, kill_wait_s)
            return
        for child in self.children:
            if child.proc.poll() is None:
                signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + budget_s
        for child in self.children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        stragglers = [c for c in self.children if c.proc.poll() is None]
        deadline = time.monotonic() + kill_wait_s
        for child in stragglers:
            self.say(f"{self._label}{child.name} did not stop in {budget_s:.1f}s; killing it")
            signal_group(child.proc, signal.SIGKILL)
        for child in stragglers:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{self._label}{child.name} (pid {child.proc.pid}) survived SIGKILL")
        # Let the pumps print the last lines; a grandchild may still hold a
        # pipe open, so bound the wait for all of them together.
        pump_deadline = time.monotonic() + PUMP_JOIN_S
        for child in self.children:
            if child.pump is not None:
                child.pump.join(max(0.0, pump_deadline - time.monotonic()))
        self.children.clear()

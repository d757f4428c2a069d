"""The local stack's one process supervisor (devstack.supervisor), with real processes.

Output prefixed or logged, a dead child reported, SIGTERM to the whole group
(grandchildren included) within the budget and SIGKILL after it, newest-first
stops, and children that die with a parent killed outright (parent-death signal).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from devstack.supervisor import ChildDied, Supervisor, spawn, stop_process
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow

PY = sys.executable


def _py(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): count it as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_output_is_prefixed_with_the_child_name():
    stream = io.StringIO()
    supervisor = Supervisor(stream=stream)
    child = supervisor.start("greeter", _py("print('hello'); print('world')"))
    child.proc.wait(10)
    supervisor.stop_all(1.0)
    lines = stream.getvalue().splitlines()
    assert [line.split("| ", 1) for line in lines] == [["greeter".ljust(16), "hello"],
                                                       ["greeter".ljust(16), "world"]]


def test_output_goes_to_the_log_file_and_a_dead_child_is_reported(tmp_path):
    supervisor = Supervisor(stream=io.StringIO())
    log_path = tmp_path / "quitter.log"
    child = supervisor.start("quitter", _py("import sys; print('bye', flush=True); sys.exit(3)"),
                             log_path=log_path)
    wait_until(lambda: not child.alive(), timeout=10, message="the child to exit")
    assert child.log_text() == "bye\n"
    assert supervisor.dead() == [child]
    with pytest.raises(ChildDied, match="quitter exited unexpectedly with code 3"):
        supervisor.check_alive()


def test_stop_all_reaches_grandchildren_and_kills_what_ignores_sigterm(tmp_path):
    stream = io.StringIO()
    supervisor = Supervisor(stream=stream, label="run")
    pid_file = tmp_path / "grandchild.pid"
    # A parent that forks a grandchild (like gunicorn's workers), both sleeping.
    parent = supervisor.start("parent", _py(f"""
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(grandchild.pid))
        time.sleep(60)
    """), log_path=tmp_path / "parent.log")
    stubborn = supervisor.start("stubborn", _py("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """), log_path=tmp_path / "stubborn.log")
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=10, message="grandchild")
    wait_until(lambda: "ready" in stubborn.log_text(), timeout=10, message="stubborn child")
    grandchild = int(pid_file.read_text())

    started = time.monotonic()
    supervisor.stop_all(1.0, kill_wait_s=2.0)
    elapsed = time.monotonic() - started

    assert parent.proc.returncode == -signal.SIGTERM
    assert stubborn.proc.returncode == -signal.SIGKILL
    assert elapsed < 1.0 + 2.0 + 0.5
    assert "run: stubborn did not stop in 1.0s; killing it" in stream.getvalue()
    wait_until(lambda: not _alive(grandchild), timeout=5, message="the grandchild to be gone")
    assert supervisor.children == []


def test_one_by_one_stops_newest_first(tmp_path):
    order_file = tmp_path / "order"
    supervisor = Supervisor(stream=io.StringIO())
    children = []
    for name in ("first", "second", "third"):
        children.append(supervisor.start(name, _py(f"""
            import signal, sys, time
            def stop(*_):
                with open({str(order_file)!r}, "a") as f:
                    f.write({name!r} + "\\n")
                sys.exit(0)
            signal.signal(signal.SIGTERM, stop)
            print("ready", flush=True)
            time.sleep(60)
        """), log_path=tmp_path / f"{name}.log"))
    for child in children:
        wait_until(lambda c=child: "ready" in c.log_text(), timeout=10, message=child.name)
    supervisor.stop_all(5.0, one_by_one=True)
    assert order_file.read_text().split() == ["third", "second", "first"]
    assert all(c.proc.returncode == 0 for c in children)


def test_a_child_dies_with_its_parent_killed_outright(tmp_path):
    pid_file = tmp_path / "child.pid"
    # The middle process starts a child through spawn(), then is SIGKILLed:
    # no cleanup runs in it, so only the parent-death signal can stop the child.
    middle = subprocess.Popen(_py(f"""
        import sys, time
        from devstack.supervisor import spawn
        child = spawn([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """))
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=10, message="child")
        child = int(pid_file.read_text())
        assert _alive(child)
        middle.kill()
        middle.wait(5)
        wait_until(lambda: not _alive(child), timeout=5, message="the orphan to get SIGTERM")
    finally:
        if middle.poll() is None:
            middle.kill()
            middle.wait(5)


def test_stop_process_returns_the_exit_code_and_child_kill_is_immediate(tmp_path):
    proc = spawn(_py("import time; time.sleep(60)"))
    assert stop_process(proc, timeout=5) == -signal.SIGTERM
    supervisor = Supervisor(stream=io.StringIO())
    child = supervisor.start("victim", _py("import time; time.sleep(60)"), log_path=tmp_path / "v.log")
    child.kill()
    assert child.proc.returncode == -signal.SIGKILL

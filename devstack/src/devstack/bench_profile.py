"""CPU profiles of benchmark processes with py-spy, summarized as text.

:class:`Profiler` attaches ``py-spy record`` (sampling, from outside the
process: nothing in the measured code changes) to the processes a benchmark
names, for a fixed duration, writing py-spy's *raw* format (one collapsed
stack per line, then its sample count). :func:`summarize` turns such a file
into what BENCHMARKS.md quotes: the functions that were on CPU themselves
(self time) and the share of samples each library was anywhere on the stack
(inclusive time), which is how "botocore is 40 % of a worker" is read.
Two recordings per process: the thread holding the GIL only (``--gil``: Python
burning CPU, not threads blocked in a socket read or a commit), and every
non-idle thread (py-spy's default, which also counts threads waiting in a
database call: the view the first profiles of this project were taken with).

py-spy comes from PyPI (``pip install py-spy``); when it is missing or cannot
attach (no ptrace permission), the benchmark says so and runs unprofiled.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE_RATE_HZ = 100
STOP_GRACE_S = 15.0

# Inclusive shares reported per profile: a sample counts for a group when any frame
# of its stack is in a file under one of the group's top-level packages (py-spy
# names library files relative to site-packages, e.g. ``botocore/endpoint.py``).
GROUPS: dict[str, tuple[str, ...]] = {
    "SQS client (botocore, aiobotocore, aiohttp)": ("botocore", "aiobotocore", "aiohttp", "boto3"),
    "psycopg2 (Postgres round trips)": ("psycopg2",),
    "structlog and logging": ("structlog", "logging"),
    "marshmallow (schemas)": ("marshmallow",),
    "prometheus_client": ("prometheus_client",),
    "jwt / cryptography (token checks)": ("jwt", "cryptography"),
    "flask / werkzeug / gunicorn": ("flask", "werkzeug", "gunicorn", "flask_smorest"),
    "HTTP client (requests, tenacity, urllib3)": ("requests", "tenacity", "urllib3"),
    "asyncio event loop": ("asyncio",),
    "the project (shared/, services/)": ("shared", "services"),
}

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def available() -> str | None:
    """The py-spy executable, or None when it is not installed."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


@dataclass
class Profiler:
    """``py-spy record`` on several processes at once, each into its own raw file."""

    out_dir: Path
    say: Callable[[str], None] = print
    runs: list[tuple[str, Path, subprocess.Popen]] = field(default_factory=list)

    def start(self, name: str, pid: int, duration_s: float, subprocesses: bool = False) -> None:
        """Sample ``pid`` (and its children with ``subprocesses``) for ``duration_s``, twice:
        ``name`` (GIL holder only) and ``name + " (all threads)"``."""
        self._start(name, pid, duration_s, subprocesses, gil=True)
        self._start(f"{name} (all threads)", pid, duration_s, subprocesses, gil=False)

    def _start(self, name: str, pid: int, duration_s: float, subprocesses: bool,
               gil: bool) -> None:
        exe = available()
        if exe is None:
            self.say("py-spy is not installed (pip install py-spy): no profile taken")
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        out = self.out_dir / f"{slug}.raw.txt"
        args = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(duration_s))),
                "--rate", str(SAMPLE_RATE_HZ), "--format", "raw", "--output", str(out),
                "--nonblocking"]
        if gil:
            args.append("--gil")
        if subprocesses:
            args.append("--subprocesses")
        log = open(self.out_dir / f"{slug}.py-spy.log", "wb")  # noqa: SIM115 (closed with the run)
        self.runs.append((name, out, subprocess.Popen(args, stdout=log, stderr=log)))

    def finish(self) -> dict[str, Path]:
        """Wait for every recording; return name -> raw file for those that produced one."""
        done: dict[str, Path] = {}
        for name, out, proc in self.runs:
            try:
                proc.wait(timeout=STOP_GRACE_S + 600)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if out.exists() and out.stat().st_size:
                done[name] = out
            else:
                self.say(f"py-spy produced no profile for {name} (see {out.parent})")
        self.runs.clear()
        return done


@dataclass
class Summary:
    """One profile: total samples, self time by function, inclusive share by library."""

    samples: int
    self_top: list[tuple[str, int]]
    groups: list[tuple[str, int]]

    def render(self, title: str, top: int = 12) -> str:
        """Plain text for a terminal and for BENCHMARKS.md."""
        if not self.samples:
            return f"{title}: no samples"
        lines = [f"{title}: {self.samples} samples at {SAMPLE_RATE_HZ} Hz",
                 "  inclusive share by library:"]
        for name, count in self.groups:
            lines.append(f"    {100 * count / self.samples:5.1f}%  {name}")
        lines.append("  self time, top functions:")
        for frame, count in self.self_top[:top]:
            lines.append(f"    {100 * count / self.samples:5.1f}%  {frame}")
        return "\n".join(lines)


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        for marker in ("/shared/", "/services/", "/scripts/"):
            if marker in path:
                path = marker.strip("/") + "/" + path.split(marker, 1)[1]
                break
    return f"{match['func']} ({path})"


def _package(frame: str) -> str:
    # The top-level package of a frame's file: "botocore" for "... (botocore/endpoint.py:12)".
    match = _FRAME.match(frame.strip())
    if not match:
        return ""
    path = match["file"].rsplit("site-packages/", 1)[-1]
    return path.split("/", 1)[0].removesuffix(".py")


def summarize(raw_file: Path) -> Summary:
    """Read one py-spy raw file (``frame;frame;... count`` per line)."""
    self_time: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    for line in raw_file.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        self_time[_short(frames[-1])] += count
        packages = {_package(frame) for frame in frames}
        for name, tops in GROUPS.items():
            if packages.intersection(tops):
                groups[name] += count
    return Summary(total, self_time.most_common(), sorted(groups.items(), key=lambda kv: -kv[1]))

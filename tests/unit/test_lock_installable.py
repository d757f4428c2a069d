"""The lock stays installable on every supported Python, so it cannot regress.

For each of CPython 3.11, 3.12 and 3.13 on Linux x86_64 (manylinux), pip
resolves every package pinned in requirements.lock against PyPI as a dry run
(no install; wheels only, except the pure-Python packages in
:data:`SOURCE_ONLY` whose locked version ships a source distribution alone).
A pin without a distribution for one of the versions — like pgserver 0.1.4,
which had wheels up to 3.12 only — fails the test naming the package.

The check is independent of this machine's pip configuration (constraints,
find-links, a local wheel directory): pip runs with no configuration file and
no PIP_* variables, so it sees PyPI as CI and a new contributor do. It needs
PyPI access; ``SKIP_LOCK_CHECK=1`` skips it (offline), and says so.
The three versions are checked at once, and as soon as collection finished
(``tests/unit/conftest.py`` calls :func:`start_checks`), so the pip runs
overlap with the rest of the suite instead of adding to it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
SUPPORTED = ("3.11", "3.12", "3.13")
# pip takes these literally (plus older manylinux_2_x of the same arch for the
# first): what a Linux x86_64 machine with glibc >= 2.28 accepts.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "linux_x86_64")
# Pure-Python packages whose locked version has no wheel on PyPI: a source
# distribution installs on any version, so only these may come as one.
SOURCE_ONLY = {
    "psycogreen": "1.0.2: a few lines making psycopg2 cooperative under gevent",
    "pyhocon": "0.3.63: the HOCON parser the tests read elasticmq.conf with",
    "localstripe": "1.15.10: the Stripe API emulator of `make run` and the tests (devstack)",
}
PIP_TIMEOUT_S = 300


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    """name (normalized) -> pinned version, from requirements.lock."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements.lock: not an exact pin: {line!r}"
            pins[_normalize(name)] = version.strip()
    return pins


def _pip_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no pip.conf at all: not even the global one
    return env


def _start_check(version: str, workdir: Path) -> tuple[subprocess.Popen, Path]:
    output = workdir / f"pip-{version}.log"
    args = [sys.executable, "-m", "pip", "install", "--isolated", "--disable-pip-version-check",
            "--dry-run", "--ignore-installed", "--no-deps", "--target", str(workdir / f"target-{version}"),
            "--python-version", version, "--implementation", "cp",
            *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
            "--only-binary=:all:", f"--no-binary={','.join(sorted(SOURCE_ONLY))}",
            "-r", str(LOCK)]
    with open(output, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=_pip_env(),
                                stdin=subprocess.DEVNULL)
    return proc, output


# version -> (pip process, its output file), started once per test run.
_CHECKS: dict[str, tuple[subprocess.Popen, Path]] = {}


def start_checks() -> None:
    """Start the dry runs for every supported version (once; a no-op when skipped)."""
    if _CHECKS or os.environ.get("SKIP_LOCK_CHECK") == "1":
        return
    workdir = Path(tempfile.mkdtemp(prefix="lock-check-"))
    for version in SUPPORTED:
        _CHECKS[version] = _start_check(version, workdir)


@pytest.fixture(scope="module")
def pip_checks():
    """One dry-run resolution per supported version, all started together."""
    if os.environ.get("SKIP_LOCK_CHECK") == "1":
        pytest.skip("SKIP_LOCK_CHECK=1: the lock's installability on 3.11-3.13 was NOT checked")
    start_checks()
    yield _CHECKS
    for proc, _output in _CHECKS.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_source_only_packages_are_still_locked():
    # An exemption for a package that left the lock would silently allow the next sdist.
    stale = set(SOURCE_ONLY) - set(locked())
    assert not stale, f"SOURCE_ONLY names packages that are not locked any more: {sorted(stale)}"


@pytest.mark.parametrize("version", SUPPORTED)
@pytest.mark.slow
def test_every_locked_package_installs_on(version, pip_checks):
    proc, output = pip_checks[version]
    try:
        proc.wait(PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"pip did not finish resolving the lock for Python {version} in {PIP_TIMEOUT_S}s")
    text = output.read_text(errors="replace")
    missing = re.findall(r"No matching distribution found for (\S+)", text)
    assert proc.returncode == 0, (
        f"requirements.lock is not installable on CPython {version} / Linux x86_64: "
        f"{', '.join(missing) or 'see pip output'}\n" + "\n".join(text.splitlines()[-15:]))
    would_install = re.search(r"^Would install (.*)$", text, re.MULTILINE)
    assert would_install, text[-2000:]
    assert len(would_install.group(1).split()) == len(locked()), \
        "every locked package is resolved, none skipped"

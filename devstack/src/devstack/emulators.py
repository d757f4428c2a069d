"""SQS emulators for the local stack: moto's server and fauxqs.

- :func:`start_moto_server` — moto in server mode, the default emulator
  (``make run``, the test suite);
- :func:`install_fauxqs` / :func:`start_fauxqs` — fauxqs (npm, needs
  Node.js >= 20), a much faster emulator for load tests and the messaging
  contract tests;
- :func:`start_localstripe` — localstripe (PyPI), a stateful Stripe API
  emulator for the payment service (``make run``, the test suite), and
  :func:`register_localstripe_webhook` to have it sign and post its events.

Both bind loopback only, wait until the emulator answers before returning
(failing at once if it exits), and are started through
:func:`devstack.supervisor.spawn` (own session, parent-death signal). What
the code relies on in each SQS emulator is in docs/sqs-portability.md; what was
verified against localstripe only is in the README's payment section.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from devstack.paths import LOOPBACK, TOOLS_DIR
from devstack.readiness import port_is_open, wait_for_http
from devstack.supervisor import spawn, stop_process
from shared.config import SQS_EMULATOR_PORT

# npm prefix for fauxqs (its node_modules/ lands inside); `make fauxqs` installs it.
DEFAULT_FAUXQS_DIR = TOOLS_DIR / "fauxqs"
FAUXQS_VERSION = "1.9.2"  # 2.x needs Node >= 22.5 (node:sqlite)
EMULATOR_START_TIMEOUT_S = 30.0
NPM_INSTALL_TIMEOUT_S = 300


def _open_log(log_file: Path | None) -> int | IO[Any]:
    if log_file is None:
        return subprocess.DEVNULL
    log_file.parent.mkdir(parents=True, exist_ok=True)
    return open(log_file, "ab")  # noqa: SIM115 - handed to the child, closed by the caller


def _start(args: list[str], ready_url: str, log_file: Path | None, timeout: float,
           statuses: tuple[int, ...] | None = None) -> subprocess.Popen:
    out = _open_log(log_file)
    try:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        proc = spawn(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if not isinstance(out, int):
            out.close()  # the child holds its own copy
    try:
        wait_for_http(ready_url, timeout=timeout, statuses=statuses, proc=proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def start_moto_server(port: int = SQS_EMULATOR_PORT, host: str = LOOPBACK,
                      log_file: Path | None = None, timeout: float = EMULATOR_START_TIMEOUT_S,
                      ) -> subprocess.Popen:
    """Start moto's server (``devstack.moto_server``: FIFO groups kept exclusive) on ``host:port``.

    Its request log goes to ``log_file`` (or is discarded): moto logs every
    long poll, which would drown the services' output.
    """
    if port_is_open(host, port):
        raise RuntimeError(f"port {host}:{port} is already in use; stop what holds it "
                           f"or point SQS_ENDPOINT_URL at it")
    return _start([sys.executable, "-m", "devstack.moto_server", "-H", host, "-p", str(port)],
                  f"http://{host}:{port}/moto-api/", log_file, timeout)


def fauxqs_package_dir(prefix: Path) -> Path | None:
    """The installed fauxqs package under ``prefix`` (an npm prefix or a node_modules dir)."""
    prefix = Path(prefix)
    for candidate in (prefix / "node_modules" / "fauxqs", prefix / "fauxqs"):
        if (candidate / "package.json").exists():
            return candidate
    return None


def install_fauxqs(prefix: Path = DEFAULT_FAUXQS_DIR, version: str = FAUXQS_VERSION) -> Path:
    """``npm install`` fauxqs into ``prefix`` unless present; return the package dir."""
    found = fauxqs_package_dir(prefix)
    if found is not None:
        return found
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: fauxqs needs Node.js >= 20 and npm")
    Path(prefix).mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix),
                    f"fauxqs@{version}"], check=True, stdin=subprocess.DEVNULL,
                   timeout=NPM_INSTALL_TIMEOUT_S)
    found = fauxqs_package_dir(prefix)
    if found is None:
        raise RuntimeError(f"npm install finished but fauxqs is not under {prefix}")
    return found


# fauxqs' own CLI binds 0.0.0.0 (not configurable in 1.9.2); its buildApp export
# lets us bind loopback only.
_FAUXQS_LAUNCHER = """\
import { buildApp } from "fauxqs";
const port = Number(process.argv[2]);
const host = process.argv[3] ?? "127.0.0.1";
const app = buildApp({ logger: false });
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => { app.close().finally(() => process.exit(0)); });
}
await app.listen({ port, host });
console.log(`fauxqs listening on http://${host}:${port}`);
"""


def start_fauxqs(port: int = SQS_EMULATOR_PORT, node_modules_dir: Path = DEFAULT_FAUXQS_DIR,
                 host: str = LOOPBACK, log_file: Path | None = None,
                 timeout: float = EMULATOR_START_TIMEOUT_S) -> subprocess.Popen:
    """Start fauxqs (already installed under ``node_modules_dir``) on ``host:port``.

    ``node_modules_dir`` is the npm prefix given to ``npm install --prefix``
    (or the ``node_modules`` directory inside it). Raises RuntimeError when
    node or the package is missing.
    """
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: fauxqs needs Node.js >= 20")
    package = fauxqs_package_dir(Path(node_modules_dir))
    if package is None:
        raise RuntimeError(f"fauxqs is not installed under {node_modules_dir} (run `make fauxqs`"
                           f" or npm install --prefix DIR fauxqs@{FAUXQS_VERSION})")
    if port_is_open(host, port):
        raise RuntimeError(f"port {host}:{port} is already in use")
    # The launcher must sit beside node_modules/ so the bare "fauxqs" import resolves.
    launcher = package.parent.parent / "fauxqs-launcher.mjs"
    if not launcher.exists() or launcher.read_text() != _FAUXQS_LAUNCHER:
        launcher.write_text(_FAUXQS_LAUNCHER)
    return _start([node, str(launcher), str(port), host], f"http://{host}:{port}/health",
                  log_file, timeout, statuses=(200,))


# localstripe's own command binds every interface ("::") and keeps its state in
# /tmp/localstripe.pickle, shared by every instance on the machine. This launcher
# serves the same aiohttp app on loopback only, with no state file (each
# instance starts empty and keeps its objects in memory).
_LOCALSTRIPE_LAUNCHER = """\
import sys
from aiohttp import web
from localstripe import server
from localstripe.resources import store
store.dump_to_disk = lambda: None
web.run_app(server.app, host=sys.argv[2], port=int(sys.argv[1]), print=None)
"""
LOCALSTRIPE_PORT = 8420  # localstripe's own default
# Any key that starts with sk_ is accepted by the emulator; this one says what it is.
LOCALSTRIPE_SECRET_KEY = "sk_test_local_development_only"


def start_localstripe(port: int = LOCALSTRIPE_PORT, host: str = LOOPBACK,
                      log_file: Path | None = None, timeout: float = EMULATOR_START_TIMEOUT_S,
                      ) -> subprocess.Popen:
    """Start localstripe on ``host:port`` (loopback) and wait until its API answers."""
    if port_is_open(host, port):
        raise RuntimeError(f"port {host}:{port} is already in use; stop what holds it "
                           f"or point STRIPE_API_BASE at it")
    # The readiness probe is an unauthenticated API call: localstripe answers 401.
    return _start([sys.executable, "-c", _LOCALSTRIPE_LAUNCHER, str(port), host],
                  f"http://{host}:{port}/v1/payment_intents", log_file, timeout, statuses=(401,))


def register_localstripe_webhook(api_base: str, url: str, secret: str,
                                 webhook_id: str = "order-platform") -> None:
    """Have localstripe sign its events with ``secret`` and POST them to ``url``.

    Its own endpoint (``/_config/webhooks/{id}``), not Stripe's WebhookEndpoint
    API, which the emulator does not have.
    """
    import requests

    response = requests.post(f"{api_base.rstrip('/')}/_config/webhooks/{webhook_id}",
                             data={"url": url, "secret": secret}, timeout=5)
    response.raise_for_status()

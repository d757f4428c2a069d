"""The image's HEALTHCHECK: is this container's process serving?

- an API (``PORT`` set, as docker-compose and Kubernetes set it): its
  ``GET /health/ready`` answers 200 (shared/health.py);
- a worker (``WORKER_METRICS_PORT`` set and not 0): its Prometheus endpoint
  answers, which it serves only while the worker runs, on 127.0.0.1 (the
  default ``WORKER_METRICS_HOST``) or every interface (``0.0.0.0``, as compose
  and Kubernetes set it to be scraped): either way the loopback answers;
- anything else (the one-shot bootstrap and seed commands): healthy, there is
  nothing to probe.

Exit 0 when healthy, 1 otherwise (what Docker's HEALTHCHECK expects).
"""

from __future__ import annotations

import os
import sys
import urllib.request

TIMEOUT_S = 3


def target(env: dict[str, str]) -> str | None:
    """The URL to probe for this container's process, or None when there is none."""
    if env.get("PORT"):
        return f"http://127.0.0.1:{env['PORT']}/health/ready"
    if env.get("WORKER_METRICS_PORT", "0") not in ("", "0"):
        return f"http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics"
    return None


def main() -> int:
    url = target(dict(os.environ))
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - loopback only
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


if __name__ == "__main__":
    sys.exit(main())

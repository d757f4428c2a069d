"""Regenerate ``elasticmq.conf`` (and the CloudFormation template) from the topology.

Kept under this name because the topology module and the docs point here;
the generators live in ``scripts/gen_infra.py``. Pass ``--check`` to verify.
"""

from __future__ import annotations

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).with_name("gen_infra.py")), run_name="__main__")

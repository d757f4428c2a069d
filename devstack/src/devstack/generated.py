"""Files generated from the code (elasticmq.conf, the CloudFormation template, infra/k8s/).

The generators share one rule: write a file only when its text changed, and
with ``--check`` report it instead, so ``make infra-check`` fails on drift.
"""

from __future__ import annotations

from pathlib import Path

import click


def sync(path: Path, text: str, check: bool, root: Path) -> bool:
    """Write ``text`` to ``path`` unless it is there already; with ``check``, only report.

    Returns True when the file is stale (differs and ``check`` is set).
    """
    current = path.read_text() if path.exists() else None
    name = path.relative_to(root)
    if current == text:
        return False
    if check:
        click.echo(f"{name}: out of date", err=True)
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    click.echo(f"{name}: written")
    return False

"""Shaping query results in repository modules (no SQL here, no I/O).

A parent's child rows are read for a whole page of parents with one query
(``WHERE parent_id = ANY(%s)``) instead of one query per parent;
:func:`grouped` hands each parent its children.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def grouped(rows: Iterable[dict], key: str, keys: Iterable[Any] = ()) -> dict[Any, list[dict]]:
    """``rows`` by their ``key`` column (taken out of each row), in their order.

    Every one of ``keys`` is in the result, with an empty list when no row has it.
    """
    result: dict[Any, list[dict]] = {k: [] for k in keys}
    for row in rows:
        result.setdefault(row.pop(key), []).append(row)
    return result

"""Exponential backoff, the one formula every retry schedule here uses.

``backoff_delay(attempt, base_s, cap_s)`` is ``min(cap_s, base_s * 2 ** attempt)``
with ``attempt`` counted from 0 (the first retry waits ``base_s``), negative
attempts treated as 0 and the exponent clamped to ``max_exponent`` before the
power, so a long run of failures can never overflow a float.

``jitter`` spreads the nominal delay ``d`` so that many clients failing together
do not retry together:

* ``None`` — no jitter, exactly ``d``;
* ``"full"`` — uniform in ``[0, d]``;
* ``"equal"`` — uniform in ``[d/2, d]`` (never less than half the delay);
* a float ``f`` in ``(0, 1)`` — ``d`` times uniform in ``[1 - f, 1 + f]``
  (may exceed ``cap_s`` by the factor ``1 + f``).

Pure and dependency-free: no I/O, the random source can be passed in.
"""

from __future__ import annotations

import random
from typing import Literal

Jitter = Literal["full", "equal"] | float | None

# 2 ** 30 already turns any sensible base into more than 30 years.
DEFAULT_MAX_EXPONENT = 30


def backoff_delay(attempt: int, base_s: float, cap_s: float, *, jitter: Jitter = None,
                  max_exponent: int = DEFAULT_MAX_EXPONENT,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (see the module docstring)."""
    exponent = min(max(0, attempt), max_exponent)
    nominal = min(cap_s, base_s * (2 ** exponent))
    if jitter is None:
        return nominal
    source = rng or random
    if jitter == "full":
        return source.uniform(0, nominal)
    if jitter == "equal":
        return source.uniform(nominal / 2, nominal)
    if isinstance(jitter, float | int) and 0 < jitter < 1:
        return nominal * source.uniform(1 - jitter, 1 + jitter)
    raise ValueError(f"jitter must be None, 'full', 'equal' or a fraction in (0, 1), got {jitter!r}")

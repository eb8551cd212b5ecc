"""Percentiles and medians of measured samples (no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``samples``, nearest-rank method.

    Returns NaN for no samples.

    Raises
    ------
    ValueError
        If ``q`` is outside 0..100.
    """
    if not 0 <= q <= 100:
        raise ValueError(f'q must be within 0..100, got {q!r}')
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (mean of the middle two for an even count); NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2

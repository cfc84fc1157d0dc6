"""Summaries of step times: median, p10, p90, min, max, n."""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def summarize(values: Iterable[float]) -> dict[str, float | int | None]:
    """Median, 10th and 90th percentiles (linear interpolation), min, max, mean and n."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "median": None, "p10": None, "p90": None, "min": None, "max": None, "mean": None}
    return {
        "n": int(a.size),
        "median": float(np.median(a)),
        "p10": float(np.percentile(a, 10)),
        "p90": float(np.percentile(a, 90)),
        "min": float(a.min()),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None where either is missing or b is zero."""
    if a is None or b is None or not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    if isinstance(a, bool) or isinstance(b, bool) or b == 0 or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b

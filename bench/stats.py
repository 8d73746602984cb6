"""Significance of an accuracy gap, shared by the learning benchmarks' verdicts."""
from __future__ import annotations

import math


def above(hi: dict, lo: dict) -> bool:
    """Whether accuracy `hi` is above `lo` beyond noise: a one-sided two-proportion z-test at 5% ({n, acc} each)."""
    var = hi["acc"] * (1 - hi["acc"]) / hi["n"] + lo["acc"] * (1 - lo["acc"]) / lo["n"]
    return hi["acc"] - lo["acc"] > 1.645 * math.sqrt(var) if var > 0 else hi["acc"] > lo["acc"]

"""Numbers that can be trusted: paired per-image differences with a bootstrap interval.

A mean AUC next to a baseline's mean AUC says nothing about whether the gap is noise. Every
comparison here is paired (the same image, heatmap order vs random order, or method vs centre
map), summarised by its mean and a percentile-bootstrap 95% interval over images (Efron &
Tibshirani 1993), and called "better" only when the interval lies above 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...results import Interval

BOOTSTRAP_RESAMPLES = 10000
CONFIDENCE = 0.95


def bootstrap_mean_ci(values, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES,
                      confidence: float = CONFIDENCE) -> Interval | None:
    """The mean and percentile-bootstrap interval of the finite values; None when there are none.

    Seeded, so the same values always give the same interval; one value gives a zero-width interval.
    """
    data = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return Interval(mean=float(data.mean()), ci95=[float(low), float(high)], n=int(data.size))


def excludes_zero_above(interval: Interval | None) -> bool | None:
    """True when the whole interval is above 0 (better), False otherwise, None without data."""
    if interval is None:
        return None
    return bool(interval.ci95[0] > 0.0)


def curve_auc(curve) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    curve = np.asarray(curve, dtype=np.float64)
    if len(curve) < 2:
        return float("nan")
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


def mean_or_none(values: Sequence[float]) -> float | None:
    """Mean of the finite values; None (JSON null) when there are none."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None

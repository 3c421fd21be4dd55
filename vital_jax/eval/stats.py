"""Uncertainty of evaluation numbers: bootstrap intervals over samples, and paired differences.

A held-out mean of a few hundred 0/1 or IoU values moves by several points between two draws of
the data, so a table of point estimates cannot tell "RL > SFT" from noise. These helpers give:

- ``interval(values)`` → ``{"mean", "ci": [lo, hi], "n"}``: the 95 % percentile bootstrap
  interval of the mean over samples;
- ``paired(a, b)`` → the same for ``mean(a) − mean(b)`` with ``a`` and ``b`` keyed by sample
  id: both runs are resampled with the *same* sample indices, so the difference between two models
  on the same questions is not blurred by how hard each question is (its interval is much narrower
  than the one of two independent means when the runs are correlated).

The resampling is scipy's (``scipy.stats.bootstrap``, ``paired=True`` for differences), seeded,
2000 resamples by default. The percentile method, not BCa: BCa's jackknife is undefined on the
all-equal vectors a weak model produces (every answer wrong), where the percentile interval is
the honest ``[m, m]``. Fewer than 2 samples give ``[nan, nan]``. Read ``n`` next to an
interval: the bootstrap only sees the values drawn, so with few samples, or all equal (0 of 10
right gives ``[0, 0]``), it is narrower than the truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

N_RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0


def bootstrap_ci(values: Sequence[float] | np.ndarray, other: Sequence[float] | np.ndarray | None = None, *,
                 n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                 seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(values)``, or of ``mean(values − other)`` with
    ``other`` resampled at the same indices (paired)."""
    from scipy.stats import bootstrap

    x = np.asarray(values, np.float64)
    if x.ndim != 1:
        raise ValueError(f"bootstrap_ci: values must be 1-D, got shape {x.shape}")
    data: tuple[np.ndarray, ...] = (x,)
    if other is not None:
        y = np.asarray(other, np.float64)
        if y.shape != x.shape:
            raise ValueError(f"bootstrap_ci: paired values need equal lengths, got {x.shape} and {y.shape}")
        data = (x, y)
    if x.size < 2:
        return (float("nan"), float("nan"))
    if not np.isfinite(np.concatenate(data)).all():
        raise ValueError("bootstrap_ci: non-finite values")

    def diff(a, b, axis=-1):
        return np.mean(a, axis=axis) - np.mean(b, axis=axis)

    stat = (lambda a, axis=-1: np.mean(a, axis=axis)) if other is None else diff
    res = bootstrap(data, stat, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                    paired=other is not None, vectorized=True, rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    # a constant vector gives lo == hi == its mean; scipy may return nan or round off there
    m = float(np.mean(x) - (np.mean(data[1]) if other is not None else 0.0))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        lo = hi = m
    return (min(lo, m), max(hi, m))


def interval(values: Mapping[str, float] | Sequence[float], **kw) -> dict:
    """``{"mean", "ci": [lo, hi], "n"}`` of the values (a mapping id → value, or a sequence)."""
    x = np.asarray(list(values.values()) if isinstance(values, Mapping) else list(values), np.float64)
    mean = float(np.mean(x)) if x.size else float("nan")
    return {"mean": mean, "ci": list(bootstrap_ci(x, **kw)), "n": int(x.size)}


def paired(a: Mapping[str, float], b: Mapping[str, float], **kw) -> dict:
    """``{"mean", "ci", "n"}`` of ``mean(a) − mean(b)`` over the sample ids, resampled in pairs.
    Both must hold the same ids: a difference over two different sample sets is not paired."""
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"paired: the two runs cover different samples ({len(only_a)} only in the first, "
                         f"e.g. {only_a[:3]}; {len(only_b)} only in the second, e.g. {only_b[:3]})")
    ids = sorted(a)
    x = np.asarray([a[i] for i in ids], np.float64)
    y = np.asarray([b[i] for i in ids], np.float64)
    mean = float(np.mean(x) - np.mean(y)) if ids else float("nan")
    return {"mean": mean, "ci": list(bootstrap_ci(x, y, **kw)), "n": len(ids)}


__all__ = ["CONFIDENCE", "N_RESAMPLES", "SEED", "bootstrap_ci", "interval", "paired"]

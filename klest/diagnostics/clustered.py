"""Means and standard errors clustered by sequence, from per-sequence sums.

Tokens of one response are not independent, so the sequences are the independent units.
With Y_s the sum of a per-token value over the counted tokens of sequence s, N_s their
number and S the number of sequences:

- **token level**, θ = Σ Y_s / Σ N_s (the mean over all tokens): a ratio estimator, whose
  cluster-robust (sandwich, CR1) standard error is
  SE = √(S/(S−1) · Σ_s (Y_s − θ N_s)²) / Σ_s N_s — the OLS regression of the value on a
  constant with errors clustered by sequence (Stata's ``vce(cluster)`` for one regressor);
- **sequence level**, the mean of Y_s (the sequence KL): SE = sd(Y_s) / √S.

Non-finite sums give a non-finite estimate and a NaN SE (never a plausible number). Fewer
than two sequences: the SE is NaN.

>>> import numpy as np
>>> y, n = np.array([1.0, 3.0, 2.0]), np.array([1, 2, 1])
>>> est, se = token_mean(y, n)
>>> round(est, 6), round(se, 6)
(1.5, 0.216506)
>>> sequence_mean(y)
(2.0, 0.5773502691896258)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["sequence_mean", "token_mean"]


def token_mean(sums: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """(Σ Y_s / Σ N_s, its SE clustered by sequence)."""
    y = np.asarray(sums, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    total = float(n.sum())
    if total == 0:
        return math.nan, math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        est = float(y.sum()) / total
    s = len(y)
    if s < 2 or not math.isfinite(est):
        return est, math.nan
    resid = y - est * n
    return est, math.sqrt(s / (s - 1) * float(np.dot(resid, resid))) / total


def sequence_mean(sums: np.ndarray) -> tuple[float, float]:
    """(mean of Y_s, sd(Y_s)/√S)."""
    y = np.asarray(sums, dtype=np.float64)
    s = len(y)
    if s == 0:
        return math.nan, math.nan
    with np.errstate(invalid="ignore", over="ignore"):
        est = float(y.mean())
    if s < 2 or not math.isfinite(est):
        return est, math.nan
    return est, float(np.std(y, ddof=1)) / math.sqrt(s)

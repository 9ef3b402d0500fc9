"""Mergeable streaming statistics of several per-sample series evaluated on the same draws.

A :class:`Moments` holds, for each of E series (estimators, plus the control variate r - 1):
the count of finite values, their mean and central power sums M2, M3, M4, min/max, the count
of negative and non-finite values, and a histogram on shared bins; and, over the draws where
*every* series is finite, the joint mean vector and co-moment matrix (for covariances between
estimators). Two Moments merge exactly (Chan et al.'s pairwise update, extended to third and
fourth moments by Pébay 2008); merging in a fixed order makes results bit-reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Moments", "block_moments", "merge"]


@dataclass(frozen=True)
class Moments:
    """Streaming statistics of E series; every array has leading dimension E."""

    count: np.ndarray  # (E,) int64: finite values per series
    mean: np.ndarray  # (E,)
    m2: np.ndarray  # (E,) sum of squared deviations from the mean
    m3: np.ndarray  # (E,)
    m4: np.ndarray  # (E,)
    minimum: np.ndarray  # (E,)
    maximum: np.ndarray  # (E,)
    negative: np.ndarray  # (E,) int64
    nonfinite: np.ndarray  # (E,) int64
    joint_count: int  # draws where all series are finite
    joint_mean: np.ndarray  # (E,)
    comoment: np.ndarray  # (E, E) sum of products of deviations over joint draws
    histogram: np.ndarray  # (E, bins + 2) int64: [underflow, bins..., overflow]

    @property
    def n_series(self) -> int:
        return len(self.count)


def _central_sums(values: np.ndarray) -> tuple[float, float, float, float, float]:
    """(n, mean, M2, M3, M4) of a 1-D array of finite values, two-pass."""
    n = values.size
    if n == 0:
        return 0, 0.0, 0.0, 0.0, 0.0
    mean = float(values.sum()) / n
    d = values - mean
    d2 = d * d
    residual = float(d.sum())  # rounding residue of the mean, folded back in exactly
    m2 = float(d2.sum()) - residual * residual / n
    return n, mean + residual / n, m2, float(d2 @ d), float(d2 @ d2)


# A block whose |mean| exceeds this many standard deviations is recomputed with two passes:
# raw power sums lose about (|mean|/std)^4 ulp in the fourth central moment.
_RAW_SUMS_MAX_MEAN_OVER_STD = 30.0


def block_moments(
    values: np.ndarray | list[np.ndarray],
    edges: np.ndarray | None,
    hist_stride: int,
    may_be_negative: np.ndarray | None = None,
    hist_rows: int | None = None,
    full_rows: int | None = None,
) -> Moments:
    """Statistics of one block: ``values`` is an (E, m) array or a list of E rows of m values.

    ``edges`` are the shared histogram bin edges (``None``: no histogram); the histogram uses
    every ``hist_stride``-th draw of the block. Rows flagged False in ``may_be_negative``
    (estimators non-negative by construction) skip the negative count. Only the first
    ``hist_rows`` rows get a histogram (the others get zero counts). Rows from ``full_rows``
    on (auxiliary series such as the control variate) only get their mean and co-moments:
    their third and fourth moments and min/max are NaN on the fast path.

    The fast path (all values finite) takes raw power sums in a single sweep per row and
    converts them to central sums; rows whose mean is large against their spread fall back
    to two passes.
    """
    rows = list(values)
    n_series, m = len(rows), len(rows[0])
    if m == 0:
        raise ValueError("a block needs at least one draw")
    ones = _ones(m)
    sums = np.array([row @ ones for row in rows])  # BLAS: faster than row.sum()
    if not np.isfinite(sums).all():
        return _block_moments_with_nonfinite(np.stack(rows), edges, hist_stride, hist_rows)
    gram = _gram(rows)
    mean = sums / m
    m2 = np.diag(gram) - sums * mean
    full = n_series if full_rows is None else full_rows
    m3, m4 = np.full(n_series, np.nan), np.full(n_series, np.nan)
    square = np.empty(m)
    for i, row in enumerate(rows[:full]):
        if mean[i] ** 2 > _RAW_SUMS_MAX_MEAN_OVER_STD**2 * max(m2[i], 0.0) / m:
            _, mean[i], m2[i], m3[i], m4[i] = _central_sums(row)
            continue
        np.multiply(row, row, out=square)
        s2, s3, s4 = gram[i, i], float(square @ row), float(square @ square)
        a = mean[i]
        m3[i] = s3 - 3.0 * a * s2 + 2.0 * m * a**3
        m4[i] = s4 - 4.0 * a * s3 + 6.0 * a * a * s2 - 3.0 * m * a**4
    comoment = gram - np.outer(sums, sums) / m
    # the two-pass values are more accurate where they were used: keep them on the diagonal
    comoment[np.diag_indices(n_series)] = m2
    negative = np.zeros(n_series, dtype=np.int64)
    flagged = range(n_series) if may_be_negative is None else np.flatnonzero(may_be_negative)
    for i in flagged:
        negative[i] = np.count_nonzero(rows[i] < 0)
    return Moments(
        np.full(n_series, m, dtype=np.int64), mean, m2, m3, m4,
        np.array([row.min() if i < full else np.nan for i, row in enumerate(rows)]),
        np.array([row.max() if i < full else np.nan for i, row in enumerate(rows)]),
        negative, np.zeros(n_series, dtype=np.int64), m, mean.copy(), comoment,
        _histogram(rows, edges, hist_stride, hist_rows),
    )  # fmt: skip


_ONES: dict[int, np.ndarray] = {}


def _ones(m: int) -> np.ndarray:
    """A cached read-only vector of m ones (row sums as BLAS dot products)."""
    if m not in _ONES:
        if len(_ONES) > 8:
            _ONES.clear()
        ones = np.ones(m)
        ones.flags.writeable = False
        _ONES[m] = ones
    return _ONES[m]


def _gram(dev: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """dev @ dev.T by row dot products (faster than a small-by-long BLAS gemm here)."""
    k = len(dev)
    out = np.empty((k, k))
    for i in range(k):
        for j in range(i, k):
            out[i, j] = out[j, i] = dev[i] @ dev[j]
    return out


def _block_moments_with_nonfinite(
    values: np.ndarray, edges: np.ndarray | None, hist_stride: int, hist_rows: int | None
) -> Moments:
    """The slow path: each row's statistics over its finite values; co-moments over the
    draws where every row is finite."""
    n_series, m = values.shape
    finite = np.isfinite(values)
    nonfinite = (m - finite.sum(axis=1)).astype(np.int64)
    count = (m - nonfinite).astype(np.int64)
    mean, m2, m3, m4 = (np.zeros(n_series) for _ in range(4))
    for i in range(n_series):
        _, mean[i], m2[i], m3[i], m4[i] = _central_sums(values[i][finite[i]])
    joint = finite.all(axis=0)
    joint_count = int(joint.sum())
    if joint_count:
        jv = values[:, joint]
        joint_mean = jv.sum(axis=1) / joint_count
        dev = jv - joint_mean[:, None]
        residual = dev.sum(axis=1)
        joint_mean = joint_mean + residual / joint_count
        comoment = _gram(dev) - np.outer(residual, residual) / joint_count
    else:
        joint_mean, comoment = np.zeros(n_series), np.zeros((n_series, n_series))
    masked = np.where(finite, values, np.nan)
    with np.errstate(invalid="ignore"):
        minimum = np.where(count > 0, np.fmin.reduce(masked, axis=1), np.inf)
        maximum = np.where(count > 0, np.fmax.reduce(masked, axis=1), -np.inf)
        negative = ((values < 0) & finite).sum(axis=1).astype(np.int64)
    return Moments(
        count, mean, m2, m3, m4, minimum, maximum, negative, nonfinite,
        joint_count, joint_mean, comoment, _histogram(values, edges, hist_stride, hist_rows),
    )  # fmt: skip


def _histogram(
    values: np.ndarray | list[np.ndarray], edges: np.ndarray | None, stride: int, rows: int | None
) -> np.ndarray:
    """Counts of every ``stride``-th value of the first ``rows`` rows on ``edges``, with an
    underflow and an overflow bin; non-finite values are not counted."""
    n_series = len(values)
    if edges is None:
        return np.zeros((n_series, 0), dtype=np.int64)
    bins = len(edges) - 1
    lo, width = edges[0], (edges[-1] - edges[0]) / bins
    out = np.zeros((n_series, bins + 2), dtype=np.int64)
    for i in range(n_series if rows is None else rows):
        row = values[i][::stride]
        row = row[np.isfinite(row)]
        idx = np.floor((row - lo) / width)
        np.clip(idx, -1, bins, out=idx)
        out[i] = np.bincount(idx.astype(np.intp) + 1, minlength=bins + 2)
    return out


def merge(a: Moments, b: Moments) -> Moments:
    """Combine the statistics of two disjoint sets of draws (a first, then b)."""
    na, nb = a.count.astype(np.float64), b.count.astype(np.float64)
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = b.mean - a.mean
        safe = np.where(n > 0, n, 1.0)
        mean = np.where(n > 0, a.mean + delta * nb / safe, 0.0)
        m2 = a.m2 + b.m2 + delta**2 * na * nb / safe
        m3 = (
            a.m3 + b.m3
            + delta**3 * na * nb * (na - nb) / safe**2
            + 3.0 * delta * (na * b.m2 - nb * a.m2) / safe
        )  # fmt: skip
        m4 = (
            a.m4 + b.m4
            + delta**4 * na * nb * (na * na - na * nb + nb * nb) / safe**3
            + 6.0 * delta**2 * (na * na * b.m2 + nb * nb * a.m2) / safe**2
            + 4.0 * delta * (na * b.m3 - nb * a.m3) / safe
        )  # fmt: skip
    ja, jb = a.joint_count, b.joint_count
    jn = ja + jb
    if jn:
        jdelta = b.joint_mean - a.joint_mean
        joint_mean = a.joint_mean + jdelta * (jb / jn)
        comoment = a.comoment + b.comoment + np.outer(jdelta, jdelta) * (ja * jb / jn)
    else:
        joint_mean, comoment = a.joint_mean, a.comoment
    return Moments(
        count=a.count + b.count,
        mean=mean,
        m2=m2,
        m3=m3,
        m4=m4,
        minimum=np.minimum(a.minimum, b.minimum),
        maximum=np.maximum(a.maximum, b.maximum),
        negative=a.negative + b.negative,
        nonfinite=a.nonfinite + b.nonfinite,
        joint_count=jn,
        joint_mean=joint_mean,
        comoment=comoment,
        histogram=a.histogram + b.histogram,
    )

"""Compiled accumulation of the engine's per-block statistics (behind :mod:`klest.moments`).

NumPy would need a pass over the block per statistic (sum, four powers, min, max,
negatives, each co-moment, the histogram), each streaming the block through the cache
again. Here a block is cut into tiles of :data:`TILE` draws, small enough that all E series
of a tile stay in the L1 cache: each tile's statistics are computed there, two-pass (mean,
then central sums), and merged into a running accumulator in tile order (Chan et al.'s
update, extended to the third and fourth moments by Pébay 2008). The order of every sum is
fixed by the code, so results do not depend on the worker count.

A tile whose values are all finite (its row sums are) takes vectorised fast-math loops;
fast math lets the compiler reassociate sums and assume no NaN or inf, which holds there.
Any other tile takes a plain loop that excludes non-finite values per series, and computes
co-moments over the draws where every series is finite.

The accumulator is three arrays: ``stats`` (E, 9) with the columns of :data:`FIELDS`,
``joint`` (E + 1) = [joint count, joint means...], and ``comoment`` (E, E).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["FIELDS", "TILE", "accumulate", "new_accumulator"]

TILE = 1024  # draws per tile: E series of 8 KB each stay in a 48 KB L1 cache
FIELDS = ("count", "mean", "m2", "m3", "m4", "minimum", "maximum", "negative", "nonfinite")
COUNT, MEAN, M2, M3, M4, MINIMUM, MAXIMUM, NEGATIVE, NONFINITE = range(len(FIELDS))

_PLAIN = {"nogil": True, "cache": True, "boundscheck": False}


def new_accumulator(n_series: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stats, joint, comoment) of no draws."""
    stats = np.zeros((n_series, len(FIELDS)))
    stats[:, MINIMUM], stats[:, MAXIMUM] = np.inf, -np.inf
    return stats, np.zeros(n_series + 1), np.zeros((n_series, n_series))


def _min_max_intrinsic(name: str):  # type: ignore[no-untyped-def]
    """LLVM's minnum/maxnum with no-NaN flags: unlike Python's min, these vectorise."""

    @intrinsic
    def op(typingctx, a, b):  # type: ignore[no-untyped-def]
        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            double = ir.DoubleType()
            fn = builder.module.declare_intrinsic(
                name, [double], ir.FunctionType(double, [double, double])
            )
            return builder.call(fn, args, fastmath=("nnan", "nsz"))

        return types.float64(types.float64, types.float64), codegen

    return op


_fmin = _min_max_intrinsic("llvm.minnum")
_fmax = _min_max_intrinsic("llvm.maxnum")


@numba.njit(fastmath={"reassoc", "contract"}, **_PLAIN)
def _tile_sum(tile: np.ndarray) -> float:
    """Sum of a tile; NaN or inf exactly when a value is not finite."""
    total = 0.0
    # loops over range(len) vectorise; `for v in tile` or range(start, stop) with an
    # offset (numba then guards against negative indices) do not
    for i in range(tile.shape[0]):
        total += tile[i]
    return total


@numba.njit(fastmath=True, **_PLAIN)
def _tile_central(tile: np.ndarray, center: float, deviation: np.ndarray):  # type: ignore[no-untyped-def]
    """(S1, S2, S3, S4, min, max, negatives) with S_k = sum (v - center)^k over a tile of
    finite values; stores v - center in ``deviation`` for the co-moments."""
    s1 = s2 = s3 = s4 = 0.0
    lo, hi = math.inf, -math.inf
    negative = 0
    for i in range(tile.shape[0]):
        v = tile[i]
        d = v - center
        deviation[i] = d
        d2 = d * d
        s1 += d
        s2 += d2
        s3 += d2 * d
        s4 += d2 * d2
        lo = _fmin(lo, v)
        hi = _fmax(hi, v)
        negative += v < 0.0
    return s1, s2, s3, s4, lo, hi, negative


@numba.njit(fastmath=True, **_PLAIN)
def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """sum a * b over two tiles of finite values."""
    total = 0.0
    for i in range(a.shape[0]):
        total += a[i] * b[i]
    return total


@numba.njit(**_PLAIN)
def _merge_series(stats: np.ndarray, e: int, nb: float, mean_b: float, m2b: float, m3b: float, m4b: float) -> None:  # noqa: E501  # fmt: skip
    """Fold nb values with mean and central sums (mean_b, m2b, m3b, m4b) into row e."""
    na = stats[e, COUNT]
    if nb == 0.0:
        return
    if na == 0.0:
        stats[e, COUNT], stats[e, MEAN], stats[e, M2], stats[e, M3], stats[e, M4] = (
            nb, mean_b, m2b, m3b, m4b
        )  # fmt: skip
        return
    m2a, m3a = stats[e, M2], stats[e, M3]
    n = na + nb
    delta = mean_b - stats[e, MEAN]
    stats[e, MEAN] += delta * nb / n
    stats[e, M4] += (
        m4b
        + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
        + 6.0 * delta**2 * (na * na * m2b + nb * nb * m2a) / n**2
        + 4.0 * delta * (na * m3b - nb * m3a) / n
    )
    stats[e, M3] += m3b + delta**3 * na * nb * (na - nb) / n**2 + 3.0 * delta * (na * m2b - nb * m2a) / n  # noqa: E501  # fmt: skip
    stats[e, M2] += m2b + delta**2 * na * nb / n
    stats[e, COUNT] = n


@numba.njit(**_PLAIN)
def _merge_joint(joint: np.ndarray, comoment: np.ndarray, nb: float, mean_b: np.ndarray, cb: np.ndarray, delta: np.ndarray) -> None:  # noqa: E501  # fmt: skip
    """Fold nb joint draws (means mean_b, co-moments cb) into the joint accumulator
    (``delta``: scratch of length E)."""
    na = joint[0]
    if nb == 0.0:
        return
    n = na + nb
    size = mean_b.shape[0]
    for i in range(size):
        delta[i] = mean_b[i] - joint[1 + i]
    for i in range(size):
        for j in range(size):
            comoment[i, j] += cb[i, j] + delta[i] * delta[j] * (na * nb / n)
    for i in range(size):
        joint[1 + i] += delta[i] * (nb / n)
    joint[0] = n


@numba.njit(**_PLAIN)
def _finite_tile(rows, stats, joint, comoment, start: int, stop: int, sums: np.ndarray, deviation: np.ndarray, scratch: np.ndarray) -> None:  # type: ignore[no-untyped-def]  # noqa: E501  # fmt: skip
    """Statistics of a tile whose values are all finite, merged into the accumulator.
    ``deviation`` (E, >= tile length) and ``scratch`` (E + 3, E) are work space."""
    size = len(rows)
    t = float(stop - start)
    cross, mean, shift, delta = scratch[:size], scratch[size], scratch[size + 1], scratch[size + 2]
    for e in range(size):
        center = sums[e] / t
        s1, s2, s3, s4, lo, hi, negative = _tile_central(
            rows[e][start:stop], center, deviation[e, : stop - start]
        )
        shift[e] = s1 / t  # the rounding residue of the first mean, folded back in exactly
        h = shift[e]
        mean[e] = center + h
        m2 = s2 - s1 * h
        m3 = s3 - 3.0 * h * s2 + 2.0 * t * h**3
        m4 = s4 - 4.0 * h * s3 + 6.0 * h**2 * s2 - 3.0 * t * h**4
        cross[e, e] = m2
        _merge_series(stats, e, t, mean[e], m2, m3, m4)
        stats[e, MINIMUM] = min(stats[e, MINIMUM], lo)
        stats[e, MAXIMUM] = max(stats[e, MAXIMUM], hi)
        stats[e, NEGATIVE] += negative
    for i in range(size):
        for j in range(i + 1, size):
            # deviations are about the first means; sum (a - mean_a)(b - mean_b) = that - t h_a h_b
            cij = _dot(deviation[i, : stop - start], deviation[j, : stop - start])
            cross[i, j] = cross[j, i] = cij - t * shift[i] * shift[j]
    _merge_joint(joint, comoment, t, mean, cross, delta)


@numba.njit(**_PLAIN)
def _tile_with_nonfinite(rows, stats, joint, comoment, start: int, stop: int) -> None:  # type: ignore[no-untyped-def]
    """Statistics of a tile with non-finite values: each series over its finite values,
    co-moments over the draws where every series is finite."""
    size = len(rows)
    for e in range(size):
        row = rows[e]
        count, total = 0, 0.0
        lo, hi = math.inf, -math.inf
        negative = 0
        for i in range(start, stop):
            v = row[i]
            if math.isfinite(v):
                count += 1
                total += v
                lo, hi = min(lo, v), max(hi, v)
                negative += v < 0.0
        stats[e, NONFINITE] += stop - start - count
        if count == 0:
            continue
        mean = total / count
        s1 = s2 = s3 = s4 = 0.0
        for i in range(start, stop):
            v = row[i]
            if math.isfinite(v):
                d = v - mean
                s1 += d
                s2 += d * d
                s3 += d * d * d
                s4 += d * d * d * d
        shift = s1 / count
        m2 = s2 - s1 * shift
        m3 = s3 - 3.0 * shift * s2 + 2.0 * count * shift**3
        m4 = s4 - 4.0 * shift * s3 + 6.0 * shift**2 * s2 - 3.0 * count * shift**4
        _merge_series(stats, e, float(count), mean + shift, m2, m3, m4)
        stats[e, MINIMUM] = min(stats[e, MINIMUM], lo)
        stats[e, MAXIMUM] = max(stats[e, MAXIMUM], hi)
        stats[e, NEGATIVE] += negative
    all_finite = np.ones(stop - start, dtype=np.bool_)
    for e in range(size):
        for i in range(start, stop):
            if not math.isfinite(rows[e][i]):
                all_finite[i - start] = False
    joint_count = int(all_finite.sum())
    if joint_count == 0:
        return
    mean = np.zeros(size)
    for e in range(size):
        for i in range(start, stop):
            if all_finite[i - start]:
                mean[e] += rows[e][i]
        mean[e] /= joint_count
    cross = np.zeros((size, size))
    for i in range(start, stop):
        if all_finite[i - start]:
            for a in range(size):
                da = rows[a][i] - mean[a]
                for b in range(a, size):
                    cross[a, b] += da * (rows[b][i] - mean[b])
    for a in range(size):
        for b in range(a + 1, size):
            cross[b, a] = cross[a, b]
    _merge_joint(joint, comoment, float(joint_count), mean, cross, np.empty(size))


@numba.njit(**_PLAIN)
def _histogram(row: np.ndarray, start: int, stop: int, stride: int, low: float, width: float, counts: np.ndarray) -> None:  # noqa: E501  # fmt: skip
    """Count every stride-th finite value of row[start:stop] (indices from 0) in
    counts = [underflow, bins..., overflow]."""
    bins = counts.shape[0] - 2
    inverse_width = 1.0 / width  # a multiply per value instead of a (slow) division
    first = (start + stride - 1) // stride * stride
    for i in range(first, stop, stride):
        v = row[i]
        if not math.isfinite(v):
            continue
        position = (v - low) * inverse_width  # floor(position), clipped to [-1, bins], plus one
        if position < 0.0:
            counts[0] += 1
        elif position >= bins:
            counts[bins + 1] += 1
        else:
            counts[int(position) + 1] += 1


@numba.njit(**_PLAIN)
def accumulate(rows, stats, joint, comoment, histogram, hist_rows: int, stride: int, low: float, width: float) -> None:  # type: ignore[no-untyped-def]  # noqa: E501  # fmt: skip
    """Fold one block, ``rows`` (a tuple of E equal-length float64 arrays), into the
    accumulator; the first ``hist_rows`` series also go into ``histogram`` (E, bins + 2)."""
    size = len(rows)
    m = rows[0].shape[0]
    sums = np.empty(size)
    deviation = np.empty((size, TILE))
    scratch = np.empty((size + 3, size))
    for start in range(0, m, TILE):
        stop = min(start + TILE, m)
        finite = True
        for e in range(size):
            sums[e] = _tile_sum(rows[e][start:stop])
            finite = finite and math.isfinite(sums[e])
        if finite:
            _finite_tile(rows, stats, joint, comoment, start, stop, sums, deviation, scratch)
        else:
            _tile_with_nonfinite(rows, stats, joint, comoment, start, stop)
        if histogram.shape[1] > 0:
            for e in range(hist_rows):
                _histogram(rows[e], start, stop, stride, low, width, histogram[e])

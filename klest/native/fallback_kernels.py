"""The moment accumulator in NumPy: bindings.accumulate and bindings.merge, the compiled
kernels' arithmetic written again (klest/native/csrc/kernels.c, read beside this).

A block is cut into tiles of :data:`~klest.native.fallback.TILE` draws. Each tile's sums are
eight interleaved lanes (lane k sums the positions = k mod 8, in order, from 0.0), combined
as ((0+1)+(2+3))+((4+5)+(6+7)): here a (rows, tiles, 8) array added up row after row, so
each lane is the same additions in the same order as in the C. The tile's mean, central
sums, extremes and co-moments are computed as the C computes them, vectorised over the
tiles of a block; then each tile is folded into the
running record in tile order (Chan et al.; Pebay 2008) with Python floats, the C's
expressions operation for operation. Tiles with a non-finite value take the C's plain-loop
path (sequential sums). The results are the compiled kernels' bits (the minimum and maximum
included, the sign of a zero too); tests/test_native_fallback.py checks that on finite
and non-finite blocks, tile remainders, histograms and merges. The one place the C and NumPy
could part is the C library's or NumPy's choice of instructions for an elementwise
operation, and every operation here is an IEEE add, subtract, multiply or divide, correctly
rounded in both: the documented bound is therefore 0 (bit-identical), and the engine's
statistics meet the issue's 1e-12 relative with room to spare.

>>> import numpy as np
>>> stats = np.zeros((1, 11)); stats[:, 5], stats[:, 6] = np.inf, -np.inf
>>> joint, comoment = np.zeros(2), np.zeros((1, 1))
>>> accumulate([np.arange(5.0)], None, None, stats, joint, comoment,
...            np.zeros((1, 0), np.int64), 0, 1, 0.0, 1.0)
>>> stats[0, :3].tolist(), joint.tolist()
([5.0, 2.0, 10.0], [5.0, 2.0])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from klest.native.checks import (
    COMPUTED_SERIES,
    check_accumulate_args,
    check_block_stats_args,
    check_categorical_block_stats_args,
    check_laplace_block_stats_args,
    check_merge_args,
)
from klest.native.fallback import TILE, expm1, inverse_cdf, k3_values, log
from klest.native.fallback_sampler import fill_normal, laplace_draws, uniform_doubles
from klest.native.mixture_kernel import (
    check_mixture_block_stats_args,
    mixture_draws,
    mixture_log_ratio,
)

__all__ = [
    "accumulate",
    "block_stats",
    "categorical_block_stats",
    "laplace_block_stats",
    "merge",
    "mixture_block_stats",
]

_LANES = 8
# the columns of a stats row (kernels.c's enum)
_COUNT, _MEAN, _M2, _M3, _M4, _MIN, _MAX, _NEG, _NONFINITE, _POSINF, _NEGINF = range(11)


def accumulate(
    series: Sequence[np.ndarray | str],
    log_ratio: np.ndarray | None,
    expm1_log_ratio: np.ndarray | None,
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    histogram: np.ndarray,
    hist_rows: int,
    stride: int,
    low: float,
    width: float,
) -> None:
    """bindings.accumulate in NumPy: fold one block into the accumulator arrays in place."""
    check_accumulate_args(
        series, log_ratio, expm1_log_ratio, stats, joint, comoment, histogram, hist_rows,
        stride, low, width,
    )  # fmt: skip
    with np.errstate(all="ignore"):  # the C raises nothing: inf and NaN are values
        rows = [_series(s, log_ratio, expm1_log_ratio) for s in series]
        record = _Record(stats, joint, comoment)
        m, full = rows[0].size, rows[0].size // TILE * TILE
        if full:
            _fold_tiles(record, [row[:full].reshape(-1, TILE) for row in rows])
        if m > full:
            _fold_tiles(record, [row[full:].reshape(1, -1) for row in rows])
        record.store(stats, joint, comoment)
        bins = histogram.shape[1] - 2 if histogram.shape[1] else 0
        if bins > 0:
            for e in range(int(hist_rows)):
                histogram[e] += _histogram(rows[e], int(stride), float(low), float(width), bins)


def block_stats(
    series: Sequence[str],
    log_ratio: np.ndarray | None,
    normal: tuple[np.ndarray, np.ndarray, float, float, tuple[float, float, float] | None] | None,
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    histogram: np.ndarray,
    hist_rows: int,
    stride: int,
    low: float,
    width: float,
) -> None:
    """bindings.block_stats in NumPy: each block's log-ratio (given, or drawn by
    :func:`fill_normal`), its expm1, then :func:`accumulate` -- what the C does tile by tile."""
    check_block_stats_args(
        series, log_ratio, normal, stats, joint, comoment, histogram, hist_rows, stride, low,
        width,
    )  # fmt: skip
    blocks: list[np.ndarray] = []
    if normal is None:
        blocks.append(log_ratio)  # type: ignore[arg-type]
    else:
        states, lengths, scale, loc, quadratic = normal
        for state, m in zip(states, lengths.tolist(), strict=True):  # rows: views, advanced
            blocks.append(np.empty(m))
            fill_normal(state, blocks[-1], scale, loc, quadratic)
    for l in blocks:
        em1 = expm1(l, np.empty_like(l))
        accumulate(list(series), l, em1, stats, joint, comoment, histogram, hist_rows,
                   stride, low, width)  # fmt: skip


def categorical_block_stats(
    series: Sequence[str],
    categorical: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    histogram: np.ndarray,
    hist_rows: int,
    stride: int,
    low: float,
    width: float,
) -> None:
    """bindings.categorical_block_stats in NumPy: each block's uniforms
    (:func:`uniform_doubles` of its state), their categories (:func:`inverse_cdf`), the
    log-ratio and expm1 of each looked up in ``pairs``, then :func:`accumulate`."""
    check_categorical_block_stats_args(
        series, categorical, stats, joint, comoment, histogram, hist_rows, stride, low, width
    )
    states, lengths, cdf, guide, pairs = categorical
    for state, m in zip(states, lengths.tolist(), strict=True):  # rows: views, advanced
        category = inverse_cdf(cdf, guide, uniform_doubles(state, m))
        accumulate(list(series), pairs[category, 0], pairs[category, 1], stats, joint,
                   comoment, histogram, hist_rows, stride, low, width)  # fmt: skip


def laplace_block_stats(
    series: Sequence[str],
    laplace: tuple[np.ndarray, np.ndarray, float, float, tuple[float, ...]],
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    histogram: np.ndarray,
    hist_rows: int,
    stride: int,
    low: float,
    width: float,
) -> None:
    """bindings.laplace_block_stats in NumPy: each block's draws (:func:`laplace_draws` of
    its state), their log-ratio by the same operations in the same order, its expm1, then
    :func:`accumulate`."""
    loc, scale, a, b, c, d, e = check_laplace_block_stats_args(
        series, laplace, stats, joint, comoment, histogram, hist_rows, stride, low, width
    )
    states, lengths = laplace[:2]
    for state, m in zip(states, lengths.tolist(), strict=True):  # rows: views, advanced
        x = laplace_draws(state, m, loc, scale)
        with np.errstate(all="ignore"):  # NaN and inf are arithmetic, as in the C
            l = (np.abs(x - a) * b - np.abs(x - c) * d) + e
        accumulate(list(series), l, expm1(l, np.empty_like(l)), stats, joint, comoment,
                   histogram, hist_rows, stride, low, width)  # fmt: skip


def mixture_block_stats(
    series: Sequence[str],
    mixture: tuple[np.ndarray, ...],
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    histogram: np.ndarray,
    hist_rows: int,
    stride: int,
    low: float,
    width: float,
) -> None:
    """bindings.mixture_block_stats in NumPy: each block's uniforms (:func:`uniform_doubles`
    of its state), then its standard normal draws z (:func:`fill_normal`), x = z * scale +
    loc of each uniform's component (:func:`~klest.native.mixture_kernel.mixture_draws`),
    the log-ratio (:func:`klest.native.mixture_kernel.mixture_log_ratio`), its expm1, then
    :func:`accumulate`."""
    check_mixture_block_stats_args(
        series, mixture, stats, joint, comoment, histogram, hist_rows, stride, low, width
    )
    states, lengths, cuts, locs, scales, q_terms, p_terms = mixture
    for state, m in zip(states, lengths.tolist(), strict=True):  # rows: views, advanced
        u = uniform_doubles(state, m)
        x = np.empty(m)
        fill_normal(state, x, 1.0, 0.0)
        mixture_draws(u, x, cuts, locs, scales)
        l = mixture_log_ratio(x, q_terms, p_terms, x, expm1, log)
        accumulate(list(series), l, expm1(l, np.empty_like(l)), stats, joint, comoment,
                   histogram, hist_rows, stride, low, width)  # fmt: skip


def merge(
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    stats_b: np.ndarray,
    joint_b: np.ndarray,
    comoment_b: np.ndarray,
) -> None:
    """bindings.merge in NumPy: fold accumulator arrays b (draws after a's) into a's."""
    check_merge_args(stats, joint, comoment, stats_b, joint_b, comoment_b)
    record = _Record(stats, joint, comoment)
    for row, b in zip(record.stats, stats_b.tolist(), strict=True):
        _fold_series(row, *b)
    joint_b_list = joint_b.tolist()
    record.merge_joint(joint_b_list[0], joint_b_list[1:], comoment_b.tolist())
    record.store(stats, joint, comoment)


def _series(s: np.ndarray | str, l: np.ndarray | None, em1: np.ndarray | None) -> np.ndarray:
    """A given series, or the computed one (k1 = -l, k2 = 0.5 * l * l, k3 from expm1)."""
    if not isinstance(s, str):
        return s
    kind = COMPUTED_SERIES[s]
    if kind == 1:
        return -l  # type: ignore[operator]
    if kind == 2:
        return 0.5 * l * l  # type: ignore[operator]
    if kind == 4:
        return em1  # type: ignore[return-value]
    return k3_values(em1, l)  # type: ignore[arg-type]


class _Record:
    """The accumulator arrays as Python floats (lists), folded tile by tile."""

    def __init__(self, stats: np.ndarray, joint: np.ndarray, comoment: np.ndarray) -> None:
        self.stats, self.joint, self.comoment = stats.tolist(), joint.tolist(), comoment.tolist()

    def store(self, stats: np.ndarray, joint: np.ndarray, comoment: np.ndarray) -> None:
        stats[...], joint[...], comoment[...] = self.stats, self.joint, self.comoment

    def merge_joint(self, nb: float, mean_b: list[float], cb: list[list[float]]) -> None:
        """kernels.c's merge_joint: nb joint draws with means mean_b, co-moments cb."""
        joint, comoment = self.joint, self.comoment
        na = joint[0]
        if nb == 0.0:
            return
        n = na + nb
        w = na * nb / n
        delta = [mb - ja for mb, ja in zip(mean_b, joint[1:], strict=True)]
        for i, di in enumerate(delta):
            row, cb_row = comoment[i], cb[i]
            for j, dj in enumerate(delta):
                row[j] = row[j] + (cb_row[j] + di * dj * w)
        for i, di in enumerate(delta):
            joint[1 + i] = joint[1 + i] + di * (nb / n)
        joint[0] = n


def _merge_series(st: list[float], nb: float, mean_b: float, m2b: float, m3b: float,
                  m4b: float) -> None:  # fmt: skip
    """kernels.c's merge_series, operation for operation."""
    na = st[_COUNT]
    if nb == 0.0:
        return
    if na == 0.0:
        st[_COUNT], st[_MEAN], st[_M2], st[_M3], st[_M4] = nb, mean_b, m2b, m3b, m4b
        return
    m2a, m3a, n, delta = st[_M2], st[_M3], na + nb, mean_b - st[_MEAN]
    d2 = delta * delta
    st[_MEAN] = st[_MEAN] + delta * nb / n
    st[_M4] = st[_M4] + (
        m4b
        + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n)
        + 6.0 * d2 * (na * na * m2b + nb * nb * m2a) / (n * n)
        + 4.0 * delta * (na * m3b - nb * m3a) / n
    )
    st[_M3] = st[_M3] + (
        m3b + d2 * delta * na * nb * (na - nb) / (n * n) + 3.0 * delta * (na * m2b - nb * m2a) / n
    )
    st[_M2] = st[_M2] + (m2b + d2 * na * nb / n)
    st[_COUNT] = n


def _fold_series(st: list[float], count: float, mean: float, m2: float, m3: float, m4: float,
                 lo: float, hi: float, negative: float, nonfinite: float, posinf: float,
                 neginf: float) -> None:  # fmt: skip
    """kernels.c's fold_series: a whole series record into the row ``st``."""
    _merge_series(st, count, mean, m2, m3, m4)
    st[_MIN] = lo if lo < st[_MIN] else st[_MIN]
    st[_MAX] = hi if hi > st[_MAX] else st[_MAX]
    st[_NEG] = st[_NEG] + negative
    st[_NONFINITE] = st[_NONFINITE] + nonfinite
    st[_POSINF] = st[_POSINF] + posinf
    st[_NEGINF] = st[_NEGINF] + neginf


def _lane_sums(values: np.ndarray) -> np.ndarray:
    """The C's tile sums of each row of (tiles, t) ``values``: eight lanes summed in order
    from 0.0 (the missing entries of a last partial row of eight are + 0.0: no change, as a
    lane never holds -0.0), combined ((0+1)+(2+3))+((4+5)+(6+7))."""
    tiles, t = values.shape
    rows = -(-t // _LANES)
    padded = np.zeros((rows, tiles, _LANES))  # row r of every tile, contiguous
    if t % _LANES == 0:
        padded[...] = values.reshape(tiles, rows, _LANES).transpose(1, 0, 2)
    else:
        padded.transpose(1, 0, 2).reshape(tiles, -1)[:, :t] = values
    s = padded[0] + 0.0  # 0.0 + v: the lanes start from +0.0, as in the C
    for row in padded[1:]:  # then each lane adds its values in order
        s += row
    return ((s[:, 0] + s[:, 1]) + (s[:, 2] + s[:, 3])) + ((s[:, 4] + s[:, 5]) + (s[:, 6] + s[:, 7]))


def _sequential_sum(values: np.ndarray) -> float:
    """0.0 + v[0] + v[1] + ..., in order (the C's plain loops)."""
    return float(np.add.accumulate(np.concatenate(([0.0], values)))[-1])


def _extreme(values: np.ndarray, order: np.ndarray, smallest: bool) -> float:
    """The C's running minimum (maximum) over ``values`` visited in ``order``: the value,
    and, for a zero, the sign of the first zero visited (``x < lo`` keeps the first of
    equal values)."""
    value = float(values.min() if smallest else values.max())
    if value == 0.0:
        zeros = order[values[order] == 0.0]
        value = float(values[zeros[0]])
    return value


def _lane_order(t: int) -> np.ndarray:
    """Positions 0..t-1 in the order the C's lane extremes let them win: lane 0 first (its
    positions in order), then lane 1, ... (``llo[k] < a`` keeps the lowest lane's value)."""
    positions = np.arange(t)
    return positions[np.lexsort((positions, positions % _LANES))]


def _fold_tiles(record: _Record, tiles: list[np.ndarray]) -> None:
    """kernels.c's loop over tiles for E series, each (tiles, t): finite_tile for the tiles
    whose every series sums to a finite value, tile_with_nonfinite for the others."""
    count, t = tiles[0].shape
    tt = float(t)
    sums = [_lane_sums(v) for v in tiles]
    finite = np.logical_and.reduce([np.isfinite(s) for s in sums])
    size = len(tiles)
    if finite.any():  # computed for every tile; the non-finite ones are not used
        dev, shifts, per_series = [], [], []
        order = _lane_order(t)
        for v, total in zip(tiles, sums, strict=True):
            center = total / tt
            d = v - center[:, None]
            d2 = d * d
            s1, s2, s3, s4 = _lane_sums(d), _lane_sums(d2), _lane_sums(d2 * d), _lane_sums(d2 * d2)
            h = s1 / tt
            m2 = s2 - s1 * h
            m3 = s3 - 3.0 * h * s2 + 2.0 * tt * h * h * h
            m4 = s4 - 4.0 * h * s3 + 6.0 * h * h * s2 - 3.0 * tt * h * h * h * h
            negative = np.count_nonzero(v < 0.0, axis=1).astype(np.float64)
            lo, hi = v.min(axis=1), v.max(axis=1)
            for k in np.flatnonzero((lo == 0.0) | (hi == 0.0)):  # the sign of a zero
                lo[k] = _extreme(v[k], order, True)
                hi[k] = _extreme(v[k], order, False)
            dev.append(d)
            shifts.append(h)
            per_series.append([x.tolist() for x in (center + h, m2, m3, m4, lo, hi, negative)])
        cross = {
            (i, j): _lane_sums(dev[i] * dev[j]) - tt * shifts[i] * shifts[j]
            for i in range(size) for j in range(i + 1, size)
        }  # fmt: skip
        cross_lists = {key: value.tolist() for key, value in cross.items()}
    for k in range(count):
        if not finite[k]:
            _nonfinite_tile(record, [v[k] for v in tiles])
            continue
        means = [series[0][k] for series in per_series]
        block = [[0.0] * size for _ in range(size)]
        for e, (st, series) in enumerate(zip(record.stats, per_series, strict=True)):
            mean, m2, m3, m4, lo, hi, negative = (column[k] for column in series)
            block[e][e] = m2
            _fold_series(st, tt, mean, m2, m3, m4, lo, hi, negative, 0.0, 0.0, 0.0)
        for (i, j), values in cross_lists.items():
            block[i][j] = block[j][i] = values[k]
        record.merge_joint(tt, means, block)


def _nonfinite_tile(record: _Record, tile: list[np.ndarray]) -> None:
    """kernels.c's tile_with_nonfinite: each series over its finite values, the co-moments
    over the draws where every series is finite; sequential sums."""
    t = tile[0].size
    for st, v in zip(record.stats, tile, strict=True):
        ok = np.isfinite(v)
        values = v[ok]
        count = values.size
        posinf, neginf = float(np.count_nonzero(v == np.inf)), float(np.count_nonzero(v == -np.inf))
        if count == 0:
            st[_NONFINITE] = st[_NONFINITE] + float(t)
            st[_POSINF], st[_NEGINF] = st[_POSINF] + posinf, st[_NEGINF] + neginf
            continue
        c = float(count)
        mean = _sequential_sum(values) / c
        order = np.arange(count)
        lo, hi = _extreme(values, order, True), _extreme(values, order, False)
        d = values - mean
        s = [_sequential_sum(x) for x in (d, d * d, d * d * d, d * d * d * d)]
        h = s[0] / c
        m2 = s[1] - s[0] * h
        m3 = s[2] - 3.0 * h * s[1] + 2.0 * c * h * h * h
        m4 = s[3] - 4.0 * h * s[2] + 6.0 * h * h * s[1] - 3.0 * c * h * h * h * h
        negative = float(np.count_nonzero(values < 0.0))
        _fold_series(st, c, mean + h, m2, m3, m4, lo, hi, negative, float(t - count), posinf,
                     neginf)  # fmt: skip
    ok = np.logical_and.reduce([np.isfinite(v) for v in tile])
    joint_count = int(np.count_nonzero(ok))
    if joint_count == 0:
        return
    rows = [v[ok] for v in tile]
    means = [_sequential_sum(row) / float(joint_count) for row in rows]
    size = len(tile)
    block = [[0.0] * size for _ in range(size)]
    for a in range(size):
        da = rows[a] - means[a]
        for b in range(a, size):
            block[a][b] = block[b][a] = _sequential_sum(da * (rows[b] - means[b]))
    record.merge_joint(float(joint_count), means, block)


def _histogram(v: np.ndarray, stride: int, low: float, width: float, bins: int) -> np.ndarray:
    """kernels.c's histogram_tile over a whole block: every stride-th finite value counted
    into [underflow, bins..., overflow]."""
    x = v[::stride]
    x = x[np.isfinite(x)]
    position = (x - low) * (1.0 / width)
    position = np.where(position < 0.0, -1.0, position)
    position = np.where(position >= float(bins), float(bins), position)
    return np.bincount(position.astype(np.int64) + 1, minlength=bins + 2)

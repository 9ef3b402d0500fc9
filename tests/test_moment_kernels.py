"""The compiled accumulator against plain two-pass NumPy statistics."""

from __future__ import annotations

import numpy as np
import pytest

from klest import _special, estimators
from klest import native as _native
from klest.engine.moments import Accumulator, block_moments, merge
from klest.native import TILE


def reference(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row statistics over finite values, co-moments over jointly finite draws (NumPy)."""
    finite = np.isfinite(values)
    out: dict[str, list] = {k: [] for k in ("count", "mean", "m2", "m3", "m4", "min", "max", "neg")}
    for row, ok in zip(values, finite, strict=True):
        v = row[ok]
        d = v - v.mean()
        for key, value in zip(
            out,
            (v.size, v.mean(), (d**2).sum(), (d**3).sum(), (d**4).sum(), v.min(), v.max(),
             (v < 0).sum()),
            strict=True,
        ):  # fmt: skip
            out[key].append(value)
    joint = values[:, finite.all(axis=0)]
    centred = joint - joint.mean(axis=1, keepdims=True)
    result = {k: np.array(v) for k, v in out.items()}
    result["joint_count"] = np.array(joint.shape[1])
    result["comoment"] = centred @ centred.T
    return result


def assert_matches(stats, values: np.ndarray, rtol: float = 1e-12) -> None:
    ref = reference(values)
    scale = np.sqrt(ref["m2"] / ref["count"])  # absolute tolerances in units of the spread
    assert stats.count.tolist() == ref["count"].tolist()
    assert stats.nonfinite.tolist() == (values.shape[1] - ref["count"]).tolist()
    assert np.allclose(stats.mean, ref["mean"], rtol=rtol, atol=rtol * scale.max())
    for key, power in (("m2", 2), ("m3", 3), ("m4", 4)):
        n_scale = ref["count"] * scale**power
        assert np.allclose(getattr(stats, key), ref[key], rtol=rtol, atol=rtol * n_scale.max())
    assert np.array_equal(stats.minimum, ref["min"])
    assert np.array_equal(stats.maximum, ref["max"])
    assert stats.negative.tolist() == ref["neg"].tolist()
    assert stats.joint_count == int(ref["joint_count"])
    assert np.allclose(stats.comoment, ref["comoment"], rtol=rtol, atol=rtol * np.abs(ref["comoment"]).max())  # noqa: E501  # fmt: skip


@pytest.mark.parametrize("m", [1, 2, TILE - 1, TILE, TILE + 1, 5 * TILE + 17])
def test_one_block_matches_two_pass_numpy(m: int) -> None:
    rng = np.random.default_rng(m)
    values = np.stack([rng.standard_normal(m), rng.gamma(0.5, 3.0, m) - 1.0, rng.standard_t(3, m)])
    if m == 1:  # a single draw: no spread, every central sum 0
        stats = block_moments(values, None, 1)
        assert stats.m2.tolist() == [0.0] * 3 and stats.mean.tolist() == values[:, 0].tolist()
        return
    assert_matches(block_moments(values, None, 1), values)


def test_blocks_folded_in_order_match_the_whole() -> None:
    rng = np.random.default_rng(1)
    values = np.stack([rng.exponential(size=50_000), rng.standard_normal(50_000) * 1e-3 + 5.0])
    acc = Accumulator(2)
    for a, b in ((0, 1), (1, 3000), (3000, 3001), (3001, 50_000)):
        acc.add(values[:, a:b])
    assert_matches(acc.to_moments(), values)
    halves = [block_moments(values[:, a:b], None, 1) for a, b in ((0, 20_000), (20_000, 50_000))]
    assert_matches(merge(*halves), values)


def test_large_mean_against_small_spread_keeps_its_precision() -> None:
    # raw power sums would lose every digit of the variance here
    values = 1e8 + np.random.default_rng(2).standard_normal((1, 30_000))
    stats = block_moments(values, None, 1)
    ref = reference(values)
    assert stats.m2[0] == pytest.approx(ref["m2"][0], rel=1e-8)
    assert stats.m4[0] == pytest.approx(ref["m4"][0], rel=1e-6)


def test_nonfinite_values_in_some_tiles() -> None:
    rng = np.random.default_rng(3)
    values = rng.standard_normal((3, 4 * TILE + 100))
    values[0, [5, TILE + 3, 4 * TILE + 50]] = [np.inf, -np.inf, np.nan]
    values[1, [6, 2 * TILE]] = np.nan
    values[2, :TILE] = np.inf  # a whole tile of one series
    stats = block_moments(values, np.linspace(-4, 4, 17), 1)
    assert_matches(stats, values)
    assert stats.histogram.sum(axis=1).tolist() == np.isfinite(values).sum(axis=1).tolist()


def test_a_series_with_no_finite_value() -> None:
    values = np.array([[np.nan, np.inf, 1.0], [np.nan, np.nan, np.nan]])
    stats = block_moments(values, None, 1)
    assert stats.count.tolist() == [1, 0] and stats.nonfinite.tolist() == [2, 3]
    assert stats.minimum[1] == np.inf and stats.maximum[1] == -np.inf
    assert stats.joint_count == 0 and not stats.comoment.any()


@pytest.mark.parametrize("stride", [1, 16])
def test_histogram_counts_every_stride_th_draw(stride: int) -> None:
    rng = np.random.default_rng(4)
    values = rng.standard_normal((2, 3 * TILE + 5)) * 2.0
    edges = np.linspace(-3.0, 3.0, 13)
    acc = Accumulator(2, edges, stride, hist_rows=1)
    acc.add(values[:, : TILE + 16])  # block boundaries at multiples of the stride
    acc.add(values[:, TILE + 16 :])
    hist = acc.to_moments().histogram
    width = (edges[-1] - edges[0]) / 12
    sampled = values[0, ::stride]
    bins = np.clip(np.floor((sampled - edges[0]) * (1.0 / width)), -1, 12).astype(int) + 1
    assert hist[0].tolist() == np.bincount(bins, minlength=14).tolist()
    assert hist[1].sum() == 0  # only the first hist_rows series are histogrammed


def test_bad_blocks_are_refused() -> None:
    acc = Accumulator(2)
    with pytest.raises(ValueError, match="expected 2 series"):
        acc.add([np.zeros(3)])
    with pytest.raises(ValueError, match="same number"):
        acc.add([np.zeros(3), np.zeros(4)])
    with pytest.raises(ValueError, match="at least one draw"):
        acc.add([np.zeros(0), np.zeros(0)])
    with pytest.raises(ValueError, match="hist_stride"):
        Accumulator(1, None, 0)


def stats_tuple(stats) -> tuple:
    return tuple(np.asarray(getattr(stats, f)).tobytes() for f in stats.__dataclass_fields__)


def test_computed_series_equal_the_estimators_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    l = np.concatenate([rng.standard_normal(3 * TILE) * 3.0, rng.standard_normal(500) * 1e-3])
    l[[7, TILE + 1, 2 * TILE + 9]] = [np.inf, -np.inf, np.nan]  # tiles with non-finite values
    em1 = _special.expm1(l)  # klest's expm1 in NumPy (the engine's r - 1 is its compiled twin)
    assert _native.expm1(l, np.empty_like(l)).tobytes() == em1.tobytes()
    names = ("k1", "k2", "k3")
    # the values each computed series must give, from NumPy alone (not klest's C k3)
    arrays = [-l, 0.5 * l * l, _special.expm1_minus(l), em1]
    for name, want in zip(names, arrays, strict=False):  # and the estimators give them too
        assert np.asarray(estimators.get(name)(l)).tobytes() == want.tobytes()
    computed = [estimators.get(n).computed_series for n in names] + [em1]
    assert all(isinstance(c, str) for c in computed[:3])
    edges = np.linspace(-3.0, 10.0, 41)
    by_arrays, by_kernel = Accumulator(4, edges, 16, 3), Accumulator(4, edges, 16, 3)
    by_arrays.add(arrays)
    by_kernel.add(computed, l, em1)
    assert stats_tuple(by_arrays.to_moments()) == stats_tuple(by_kernel.to_moments())


def test_simd_variants_agree_bit_for_bit() -> None:
    rng = np.random.default_rng(6)
    values = np.stack([rng.standard_normal(10 * TILE + 13), rng.gamma(0.3, size=10 * TILE + 13)])
    values[1, 5] = np.nan
    results = []
    try:
        for level in range(_native.best_simd_level() + 1):
            _native.set_simd_level(level)
            results.append(stats_tuple(block_moments(values, np.linspace(-3, 3, 7), 16)))
    finally:
        _native.set_simd_level(_native.best_simd_level())
    assert len(set(results)) == 1
    with pytest.raises(ValueError, match="not supported"):
        _native.set_simd_level(len(_native.SIMD_LEVELS))


def test_computed_series_need_the_log_ratio() -> None:
    acc = Accumulator(2)
    with pytest.raises(ValueError, match="log-ratio"):
        acc.add(["negate", np.zeros(3)])
    with pytest.raises(ValueError, match="expm1"):
        acc.add(["k3", np.zeros(3)], log_ratio=np.zeros(3))
    with pytest.raises(ValueError, match="unknown computed series 'k9'"):
        acc.add(["k9", np.zeros(3)], log_ratio=np.zeros(3))


@pytest.mark.parametrize("stride", [4096, 4097, 2**62, 2**63 - 1])
def test_a_stride_beyond_the_block_counts_only_the_first_draw(stride: int) -> None:
    # block indices 0, stride, 2 stride, ...: with stride >= m only draw 0 is counted (a huge
    # stride once overflowed start + stride - 1 in the kernel and read before the tile)
    l = np.full(4096, 0.5)
    e = 1
    stats, joint = np.zeros((e, len(_native.FIELDS))), np.zeros(e + 1)
    comoment, histogram = np.zeros((e, e)), np.zeros((e, 12), dtype=np.int64)
    _native.accumulate(
        ["negate"], l, _native.expm1(l, np.empty_like(l)), stats, joint, comoment, histogram,
        1, stride, -5.0, 1.0,
    )  # fmt: skip
    assert histogram.sum() == 1

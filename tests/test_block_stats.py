"""klest.native.block_stats, the engine's one-pass block: the bits of expm1 then accumulate.

For a block whose every series is computed from its log-ratio, the compiled kernel makes
expm1(l), k1, k2, k3 and (for a Gaussian pair) the draws themselves tile by tile, in cache.
It must give exactly what the arrays path gives (the sampler, then klest's expm1, then the
accumulator), at every SIMD level and in the NumPy fallback, and leave the generator where
the sampler leaves it. ~2 s (one core).
"""

from __future__ import annotations

import numpy as np
import pytest
from block_passes import EDGES, NAMES, arrays_route, record, two_block_run

import klest
from klest import native
from klest.engine import runner
from klest.engine.moments import Accumulator
from klest.engine.plan import RunPlan, block_generator
from klest.native import fallback, fallback_kernels

QUADRATIC = (0.1, 0.7, -0.3)  # a Gaussian log-ratio with unequal scales (transform 2)
compiled = fallback.COMPILED


@pytest.mark.parametrize("m", [1, 3, 8, 1023, 1024, 1025, 2048, 5 * 1024 + 17])
@pytest.mark.parametrize("quadratic", [(0.0, 1.0, -0.5), QUADRATIC, None])
def test_drawn_blocks_give_the_arrays_bits_and_leave_the_generator_alike(
    m: int, quadratic: tuple[float, float, float] | None, each_level: list[int]
) -> None:
    for level in each_level:
        native.set_simd_level(level)
        sampled = block_generator(11, 2, 3)
        l = native.scaled_normal(sampled, m, 1.3, -0.2, quadratic=quadratic)
        fused_rng = block_generator(11, 2, 3)
        fused = Accumulator(4, EDGES, 5, hist_rows=3)
        fused.add_normal_blocks(NAMES, [fused_rng], [m], 1.3, -0.2, quadratic)
        assert record(fused) == record(arrays_route(l, EDGES)), (level, m)
        assert fused_rng.bit_generator.state == sampled.bit_generator.state


def test_several_blocks_in_one_call_are_those_blocks_one_after_the_other(each_level) -> None:
    lengths = [1024, 3000, 17]
    for level in each_level:
        native.set_simd_level(level)
        one_call, apart = Accumulator(4, EDGES, 5, 3), Accumulator(4, EDGES, 5, 3)
        firsts = [block_generator(4, 0, k) for k in range(3)]
        one_call.add_normal_blocks(NAMES, firsts, lengths, 0.7, 1.0, QUADRATIC)
        for k, m in enumerate(lengths):
            rng = block_generator(4, 0, k)
            apart.add_normal_blocks(NAMES, [rng], [m], 0.7, 1.0, QUADRATIC)
            assert rng.bit_generator.state == firsts[k].bit_generator.state
        assert record(one_call) == record(apart), level


def test_given_log_ratios_with_nonfinite_values_give_the_arrays_bits(each_level) -> None:
    rng = np.random.default_rng(3)
    l = rng.standard_normal(4 * 1024 + 5) * 2.0
    l[[3, 1030, 2047, 4100]] = [np.inf, -np.inf, np.nan, 800.0]  # 800: expm1 overflows
    l[2 * 1024 : 2 * 1024 + 300] = rng.standard_normal(300) * 1e-3  # k3 takes its series
    l[2 * 1024 + 300 : 2 * 1024 + 310] = [0.0, -0.0, 1e-300, -1e-300, 5e-324, 0.01, -0.01,
                                          0.0101, -0.0099, 0.347]  # fmt: skip
    for level in each_level:
        native.set_simd_level(level)
        fused = Accumulator(4, EDGES, 5, hist_rows=3)
        fused.add_computed(NAMES, l)
        assert record(fused) == record(arrays_route(l, EDGES)), level


@pytest.mark.skipif(compiled is None, reason="compares against the compiled library")
def test_the_fallback_gives_the_compiled_bits() -> None:
    l = np.random.default_rng(2).standard_normal(2500)
    l[17] = np.nan

    def drawn(module):  # block_stats(series, None, normal=(states, lengths, ...), ...)
        return lambda names, normal, *rest: module.block_stats(names, None, normal, *rest)

    def given(module):  # block_stats(series, l, None, ...): the states stay as they are
        return lambda names, _blocks, *rest: module.block_stats(names, l, None, *rest)

    for source, call in (("normal", drawn), ("log_ratio", given)):
        runs = [
            two_block_run(call(module), 1.0, 0.5, QUADRATIC)
            for module in (fallback_kernels, compiled)
        ]
        assert runs[0] == runs[1], source


def test_the_engine_takes_the_one_pass_path_with_the_same_result(monkeypatch) -> None:
    q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.4, scale=1.5)
    plan = RunPlan(q, p, ("k1", "k2", "k3"), 70_000, 5, 1, 30_000, EDGES)
    assert runner._computed_names(plan.estimators) == NAMES
    one_pass = runner._run_blocks(plan, 0, 3)
    monkeypatch.setattr(runner, "_computed_names", lambda estimators: None)
    through_arrays = runner._run_blocks(plan, 0, 3)
    for field in ("count", "mean", "m2", "m3", "m4", "minimum", "maximum", "comoment",
                  "histogram"):  # fmt: skip
        assert getattr(one_pass, field).tobytes() == getattr(through_arrays, field).tobytes()


def test_bad_arguments_are_refused_with_their_name() -> None:
    accumulator = Accumulator(4, EDGES, 5, hist_rows=3)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="computes every series"):
        accumulator.add_computed(["negate", "half_square", "k3", "k9"], np.zeros(4))
    with pytest.raises(ValueError, match="exactly one of log_ratio and normal"):
        accumulator.add_computed(NAMES, None)
    with pytest.raises(ValueError, match="stats must have shape"):
        accumulator.add_computed(NAMES[:3], np.zeros(4))
    with pytest.raises(ValueError, match="lengths must be an integer in"):
        accumulator.add_normal_blocks(NAMES, [rng], [0], 1.0, 0.0, None)
    with pytest.raises(ValueError, match=r"lengths must have shape \(1,\)"):
        accumulator.add_normal_blocks(NAMES, [rng], [5, 6], 1.0, 0.0, None)
    with pytest.raises(ValueError, match="at least one block"):
        accumulator.add_normal_blocks(NAMES, [], [], 1.0, 0.0, None)
    with pytest.raises(TypeError, match="PCG64"):
        mt = np.random.Generator(np.random.MT19937(0))
        accumulator.add_normal_blocks(NAMES, [mt], [5], 1.0, 0.0, None)
    with pytest.raises(ValueError, match="one was given twice"):
        accumulator.add_normal_blocks(NAMES, [rng, rng], [5, 5], 1.0, 0.0, None)
    with pytest.raises(TypeError, match="scale must be a real number"):
        accumulator.add_normal_blocks(NAMES, [rng], [5], "x", 0.0, None)
    with pytest.raises(ValueError, match="a block needs at least one draw"):
        accumulator.add_computed(NAMES, np.zeros(0))
    with pytest.raises(ValueError, match="states must have shape"):
        native.block_stats(NAMES, None, (np.zeros(4, np.uint64), np.ones(1, np.int64), 1.0,
                                         0.0, None), *accumulator._arrays())  # fmt: skip
    assert not accumulator.stats[:, 0].any()  # nothing was folded in
    assert rng.bit_generator.state == np.random.default_rng(0).bit_generator.state

"""The engine's compiled passes that draw a Categorical or a Laplace pair's blocks themselves
(klest.native.categorical_block_stats, laplace_block_stats); the GaussianMixture pass's own
tests are tests/test_mixture_pass.py, its engine and several-block checks here.

The Categorical pass draws each block's uniforms itself (Generator.random's doubles of its
PCG64 state), finds their categories by the inverse CDF's guide table and looks up each
category's log-ratio and its expm1 in one table, tile by tile, without writing a draw out or
taking an expm1 per draw. The Laplace pass draws NumPy's laplace and takes the pair's
log-ratio in the same operations as the NumPy code. Each must give exactly what the arrays
route gives (the sampler, the pair's log-ratio, klest's expm1, the accumulator), at every
SIMD level and in the NumPy fallback, and leave each generator where the sampler leaves it.
"""

from __future__ import annotations

import numpy as np
import pytest
from block_passes import EDGES, MIXTURE_PAIRS, NAMES, arrays_route, record, two_block_run

import klest
from klest import native
from klest.distributions.log_ratio import (
    categorical_tables,
    fused_laplace_parameters,
    fused_mixture_parameters,
    sample_log_ratio,
)
from klest.engine import runner
from klest.engine.moments import Accumulator
from klest.engine.plan import RunPlan, block_generator
from klest.native import fallback, fallback_kernels

compiled = fallback.COMPILED


def pairs_of_categoricals() -> dict[str, tuple[klest.Categorical, klest.Categorical]]:
    rng = np.random.default_rng(8)
    wide = rng.standard_normal(5000) * 2.0
    # p gives no mass to some categories q draws: l = -inf there (k1, k2 = inf: non-finite)
    holes = wide + rng.standard_normal(5000)
    holes[rng.random(5000) < 0.01] = -np.inf
    # 2048 categories in the guide table's first bucket (width 2^-12): its binary search
    crowded = [2.0**-20] * 2048 + [0.5] + [0.5 - 2048 * 2.0**-20]
    # past LOOK_AHEAD_CATEGORIES (32,768, kernels.c): the searches that prefetch ahead
    large = rng.standard_normal(40_000) * 2.0
    return {
        "four, one empty": (
            klest.Categorical(probs=[0.1, 0.0, 0.5, 0.4]),
            klest.Categorical(probs=[0.3, 0.3, 0.2, 0.2]),
        ),
        "5000 logits": (klest.Categorical(logits=wide), klest.Categorical(logits=wide * 0.8)),
        "p with holes": (klest.Categorical(logits=wide), klest.Categorical(logits=holes)),
        "crowded bucket": (
            klest.Categorical(probs=crowded),
            klest.Categorical(probs=crowded[::-1]),
        ),
        "one category": (klest.Categorical(probs=[1.0]), klest.Categorical(probs=[1.0])),
        "40,000 logits": (klest.Categorical(logits=large), klest.Categorical(logits=large * 0.9)),
    }


PAIRS = pairs_of_categoricals()


def by_arrays(q: klest.Categorical, p: klest.Categorical, rng: np.random.Generator, m: int):
    """The arrays route of one block: Generator.random, the inverse CDF, expm1, accumulate."""
    l = q.inverse_cdf(rng.random(m), table=q.log_ratio_table(p))
    assert np.array_equal(l, sample_log_ratio(q, p, rng_copy(rng, m), m), equal_nan=True)
    return arrays_route(l, EDGES)


def rng_copy(rng: np.random.Generator, m: int) -> np.random.Generator:
    """A generator where ``rng`` was before its last m doubles (to draw them again)."""
    again = np.random.Generator(np.random.PCG64())
    again.bit_generator.state = rng.bit_generator.state
    again.bit_generator.advance(-m)
    return again


@pytest.mark.parametrize("m", [1, 3, 1023, 1024, 1025, 5 * 1024 + 17])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_drawn_blocks_give_the_arrays_bits_and_leave_the_generator_alike(
    m: int, pair: str, each_level: list[int]
) -> None:
    q, p = PAIRS[pair]
    for level in each_level:
        native.set_simd_level(level)
        sampled, fused_rng = block_generator(11, 2, 3), block_generator(11, 2, 3)
        expected = by_arrays(q, p, sampled, m)
        fused = Accumulator(4, EDGES, 5, hist_rows=3)
        fused.add_categorical_blocks(NAMES, [fused_rng], [m], categorical_tables(q, p))
        assert record(fused) == record(expected), (level, m)
        assert fused_rng.bit_generator.state == sampled.bit_generator.state


def test_the_pairs_reach_the_rare_paths() -> None:
    q, p = PAIRS["p with holes"]
    l = q.inverse_cdf(block_generator(11, 2, 3).random(5 * 1024), table=q.log_ratio_table(p))
    assert np.isneginf(l).sum() > 10  # tiles with non-finite values: their plain loops
    q = PAIRS["crowded bucket"][0]
    guide = q._guide
    assert guide[1] - guide[0] > 16  # a bucket searched by bisection ...
    u = block_generator(11, 2, 3).random(5 * 1024)
    assert (u < 1.0 / (guide.size - 1)).sum() > 0  # ... that the draws fall in


def test_several_blocks_in_one_call_are_those_blocks_one_after_the_other(each_level) -> None:
    q, p = PAIRS["5000 logits"]
    lengths = [1024, 3000, 17]
    for level in each_level:
        native.set_simd_level(level)
        one_call, apart = Accumulator(4, EDGES, 5, 3), Accumulator(4, EDGES, 5, 3)
        firsts = [block_generator(4, 0, k) for k in range(3)]
        one_call.add_categorical_blocks(NAMES, firsts, lengths, categorical_tables(q, p))
        for k, m in enumerate(lengths):
            rng = block_generator(4, 0, k)
            apart.add_categorical_blocks(NAMES, [rng], [m], categorical_tables(q, p))
            assert rng.bit_generator.state == firsts[k].bit_generator.state
        assert record(one_call) == record(apart), level


@pytest.mark.skipif(compiled is None, reason="compares against the compiled library")
def test_the_fallback_gives_the_compiled_bits() -> None:
    for pair in PAIRS:
        tables = categorical_tables(*PAIRS[pair])
        runs = [
            two_block_run(module.categorical_block_stats, *tables)
            for module in (fallback_kernels, compiled)
        ]
        assert runs[0] == runs[1], pair


def test_log_ratio_pairs_are_the_table_and_its_expm1_kept_read_only() -> None:
    q, p = PAIRS["p with holes"]
    pairs = q.log_ratio_pairs(p)
    table = q.log_ratio_table(p)
    assert pairs.shape == (q.num_categories, 2) and pairs.flags.c_contiguous
    assert np.array_equal(pairs[:, 0], table, equal_nan=True)
    assert np.array_equal(pairs[:, 1], native.expm1(table.copy(), np.empty(table.size)),
                          equal_nan=True)  # fmt: skip
    assert q.log_ratio_pairs(p) is pairs  # kept for the last p
    with pytest.raises(ValueError, match="read-only"):
        pairs[0, 0] = 1.0
    other = klest.Categorical(logits=np.zeros(q.num_categories))
    assert not np.array_equal(q.log_ratio_pairs(other), pairs, equal_nan=True)


def test_only_unbatched_categoricals_over_the_same_categories_take_the_pass() -> None:
    q, p = PAIRS["four, one empty"]
    assert categorical_tables(q, klest.Categorical(probs=[0.5, 0.5])) is None
    assert categorical_tables(klest.Categorical(probs=[[0.5, 0.5]]), p) is None
    assert categorical_tables(klest.Normal(loc=0.0, scale=1.0), p) is None
    cdf, guide, pairs = categorical_tables(q, p)
    assert cdf is q._cdf and guide is q._guide and pairs is q.log_ratio_pairs(p)


@pytest.mark.parametrize("module", [native, fallback_kernels], ids=["in-use", "fallback"])
def test_bad_arguments_are_refused_with_their_name(module) -> None:
    q, p = PAIRS["5000 logits"]
    cdf, guide, pairs = categorical_tables(q, p)
    accumulator = Accumulator(4, EDGES, 5, hist_rows=3)
    state = np.array([[1, 2, 3, 5]], dtype=np.uint64)
    lengths = np.array([100], np.int64)
    broken_guide = guide.copy()
    broken_guide[7] = q.num_categories
    cases = [
        ((state, lengths, cdf, guide, pairs[:-1]), ValueError, r"pairs must have shape"),
        ((state, lengths, cdf, guide, pairs[:, :1]), ValueError, r"pairs must have shape"),
        ((state, lengths, cdf, guide, pairs.astype(np.float32)), TypeError, "pairs"),
        ((state, lengths, cdf[::-1].copy(), guide, pairs), ValueError, "nondecreasing"),
        ((state, lengths, cdf, broken_guide, pairs), ValueError, "guide entries"),
        ((state, lengths, cdf, guide[:-1], pairs), ValueError, "power of two"),
        ((state.reshape(-1), lengths, cdf, guide, pairs), ValueError, "states must have shape"),
        ((state, np.array([0], np.int64), cdf, guide, pairs), ValueError, "at least one draw"),
        ((state, lengths, cdf, guide), TypeError, r"categorical must be \(states"),
    ]
    for categorical, error, words in cases:
        with pytest.raises(error, match=words):
            module.categorical_block_stats(NAMES, categorical, *accumulator._arrays())
    with pytest.raises(ValueError, match="computes every series"):
        module.categorical_block_stats(["negate", "k9"], (state, lengths, cdf, guide, pairs),
                                       *accumulator._arrays())  # fmt: skip
    assert not accumulator.stats[:, 0].any()  # nothing was folded in
    assert state.tolist() == [[1, 2, 3, 5]]  # nor drawn


# ---- Laplace pairs -------------------------------------------------------------------------

LAPLACE_PAIRS = {
    "unit q (its passes skipped)": (
        klest.Laplace(loc=0.0, scale=1.0),
        klest.Laplace(loc=0.5, scale=2.0),
    ),
    "general": (klest.Laplace(loc=-1.5, scale=0.3), klest.Laplace(loc=2.0, scale=1.7)),
    "unit p": (klest.Laplace(loc=3.0, scale=4.0), klest.Laplace(loc=0.0, scale=1.0)),
}


def laplace_by_arrays(q, p, rng: np.random.Generator, m: int) -> Accumulator:
    """The arrays route of one block: q.sample, the pair's log-ratio, expm1, accumulate."""
    return arrays_route(sample_log_ratio(q, p, rng, m), EDGES)


@pytest.mark.parametrize("m", [1, 3, 1023, 1025, 5 * 1024 + 17])
@pytest.mark.parametrize("pair", list(LAPLACE_PAIRS))
def test_laplace_blocks_give_the_arrays_bits_and_leave_the_generator_alike(
    m: int, pair: str, each_level: list[int]
) -> None:
    q, p = LAPLACE_PAIRS[pair]
    parameters = fused_laplace_parameters(q, p)
    assert parameters is not None
    for level in each_level:
        native.set_simd_level(level)
        sampled, fused_rng = block_generator(11, 2, 3), block_generator(11, 2, 3)
        expected = laplace_by_arrays(q, p, sampled, m)
        fused = Accumulator(4, EDGES, 5, hist_rows=3)
        fused.add_laplace_blocks(NAMES, [fused_rng], [m], parameters)
        assert record(fused) == record(expected), (level, m)
        assert fused_rng.bit_generator.state == sampled.bit_generator.state


@pytest.mark.parametrize(
    ("parameters", "method"),
    [
        (fused_laplace_parameters(*LAPLACE_PAIRS["general"]), "add_laplace_blocks"),
        (fused_mixture_parameters(*MIXTURE_PAIRS["two and two"]), "add_mixture_blocks"),
    ],
    ids=["Laplace", "GaussianMixture"],
)
def test_several_drawn_blocks_in_one_call_are_those_blocks_one_after_the_other(
    parameters, method
) -> None:
    lengths = [1024, 3000, 17]
    one_call, apart = Accumulator(4, EDGES, 5, 3), Accumulator(4, EDGES, 5, 3)
    firsts = [block_generator(4, 0, k) for k in range(3)]
    getattr(one_call, method)(NAMES, firsts, lengths, parameters)
    for k, m in enumerate(lengths):
        rng = block_generator(4, 0, k)
        getattr(apart, method)(NAMES, [rng], [m], parameters)
        assert rng.bit_generator.state == firsts[k].bit_generator.state
    assert record(one_call) == record(apart)


@pytest.mark.skipif(compiled is None, reason="compares against the compiled library")
def test_the_fallback_gives_the_compiled_laplace_bits() -> None:
    for pair in LAPLACE_PAIRS:
        loc, scale, coefficients = fused_laplace_parameters(*LAPLACE_PAIRS[pair])
        runs = [
            two_block_run(module.laplace_block_stats, loc, scale, coefficients)
            for module in (fallback_kernels, compiled)
        ]
        assert runs[0] == runs[1], pair


@pytest.mark.parametrize(
    ("pair", "method"),
    [
        (PAIRS["p with holes"], "add_categorical_blocks"),
        (LAPLACE_PAIRS["general"], "add_laplace_blocks"),
        (MIXTURE_PAIRS["two and two"], "add_mixture_blocks"),
    ],
    ids=["Categorical", "Laplace", "GaussianMixture"],
)
def test_the_engine_takes_the_drawn_pass_with_the_same_result(monkeypatch, pair, method) -> None:
    q, p = pair
    plan = RunPlan(q, p, ("k1", "k2", "k3"), 70_000, 5, 1, 30_000, EDGES)
    calls = []
    original = getattr(Accumulator, method)

    def counted(self, *args):
        calls.append(args[2])
        return original(self, *args)

    monkeypatch.setattr(Accumulator, method, counted)
    one_pass = runner._run_blocks(plan, 0, 3)
    assert calls == [[30_000, 30_000, 10_000]]  # the task's three blocks, in one call
    monkeypatch.setattr(runner, "_computed_names", lambda estimators: None)
    through_arrays = runner._run_blocks(plan, 0, 3)
    for field in ("count", "mean", "m2", "m3", "m4", "minimum", "maximum", "negative",
                  "nonfinite", "posinf", "neginf", "comoment", "histogram"):  # fmt: skip
        assert getattr(one_pass, field).tobytes() == getattr(through_arrays, field).tobytes()


def test_only_laplace_pairs_whose_log_ratio_cannot_overflow_take_the_pass() -> None:
    q, p = LAPLACE_PAIRS["general"]
    assert fused_laplace_parameters(q, klest.Normal(loc=0.0, scale=1.0)) is None
    assert fused_laplace_parameters(klest.Normal(loc=0.0, scale=1.0), p) is None
    far = klest.Laplace(loc=1e290, scale=1e-5)  # |x - loc_far| / scale_far reaches ~1e295
    assert fused_laplace_parameters(q, far) is None
    assert fused_laplace_parameters(far, q) is None
    loc, scale, (a, b, c, d, e) = fused_laplace_parameters(q, p)
    assert (loc, scale, a, c) == (q.loc, q.scale, q.loc, p.loc)
    assert (b, d) == (1.0 / q.scale, 1.0 / p.scale)
    assert e == pytest.approx(np.log(q.scale / p.scale), rel=1e-14)  # log(2 s_q) - log(2 s_p)


@pytest.mark.parametrize("module", [native, fallback_kernels], ids=["in-use", "fallback"])
def test_bad_laplace_arguments_are_refused_with_their_name(module) -> None:
    accumulator = Accumulator(4, EDGES, 5, hist_rows=3)
    state = np.array([[1, 2, 3, 5]], dtype=np.uint64)
    lengths = np.array([100], np.int64)
    good = (1.0, 2.0, 3.0, 4.0, 5.0)
    cases = [
        ((state, lengths, 0.0, 0.0, good), ValueError, "scale > 0"),
        ((state, lengths, np.inf, 1.0, good), ValueError, "finite loc"),
        ((state, lengths, 0.0, "x", good), TypeError, "scale must be a real number"),
        ((state, lengths, 0.0, 1.0, good[:4]), TypeError, "coefficients must be 5"),
        ((state, lengths, 0.0, 1.0, (*good[:4], "e")), TypeError, "coefficients must be a real"),
        ((state.reshape(-1), lengths, 0.0, 1.0, good), ValueError, "states must have shape"),
        ((state, lengths, 0.0, 1.0), TypeError, r"laplace must be \(states"),
    ]
    for laplace, error, words in cases:
        with pytest.raises(error, match=words):
            module.laplace_block_stats(NAMES, laplace, *accumulator._arrays())
    assert not accumulator.stats[:, 0].any()  # nothing was folded in
    assert state.tolist() == [[1, 2, 3, 5]]  # nor drawn

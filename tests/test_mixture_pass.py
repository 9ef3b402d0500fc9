"""The engine's compiled pass that draws a GaussianMixture pair's blocks itself
(klest.native.mixture_block_stats).

Each block's uniforms come first in its stream (Generator.random's doubles: the components),
its standard normal draws after them (read from a copy of the stream jumped ahead by the
block's length), x = z * scale + loc of each draw's component, then klest's mixture
log-ratio, expm1 and the accumulator, tile by tile. It must give exactly what the arrays
route gives (GaussianMixture.sample, the pair's log-ratio, expm1, the accumulator), at every
SIMD level and in the NumPy fallback, and leave each generator where sampling leaves it.
"""

from __future__ import annotations

import numpy as np
import pytest
from block_passes import EDGES, GM, MIXTURE_PAIRS, NAMES, arrays_route, record, two_block_run

import klest
from klest import native
from klest.distributions.log_ratio import fused_mixture_parameters, log_ratio_function
from klest.engine.moments import Accumulator
from klest.engine.plan import block_generator
from klest.native import fallback, fallback_kernels

compiled = fallback.COMPILED


def mixture_by_arrays(q, p, rng: np.random.Generator, m: int) -> Accumulator:
    """The arrays route of one block: q.sample, the pair's log-ratio, expm1, accumulate."""
    return arrays_route(log_ratio_function(q, p)(q.sample(rng, m)), EDGES)


@pytest.mark.parametrize("m", [1, 3, 1023, 1025, 5 * 1024 + 17])
@pytest.mark.parametrize("pair", list(MIXTURE_PAIRS))
def test_mixture_blocks_give_the_arrays_bits_and_leave_the_generator_alike(
    m: int, pair: str, each_level: list[int]
) -> None:
    q, p = MIXTURE_PAIRS[pair]
    parameters = fused_mixture_parameters(q, p)
    assert parameters is not None
    for level in each_level:
        native.set_simd_level(level)
        sampled, fused_rng = block_generator(11, 2, 3), block_generator(11, 2, 3)
        expected = mixture_by_arrays(q, p, sampled, m)
        fused = Accumulator(4, EDGES, 5, hist_rows=3)
        fused.add_mixture_blocks(NAMES, [fused_rng], [m], parameters)
        assert record(fused) == record(expected), (level, m)
        assert fused_rng.bit_generator.state == sampled.bit_generator.state


@pytest.mark.skipif(compiled is None, reason="compares against the compiled library")
def test_the_fallback_gives_the_compiled_mixture_bits() -> None:
    from klest.native import row_bindings  # deferred: importing it loads the compiled library

    for pair in MIXTURE_PAIRS:
        parameters = fused_mixture_parameters(*MIXTURE_PAIRS[pair])
        runs = [
            two_block_run(module.mixture_block_stats, *parameters)
            for module in (fallback_kernels, row_bindings)
        ]
        assert runs[0] == runs[1], pair


def test_only_tame_mixture_pairs_take_the_pass() -> None:
    q, p = MIXTURE_PAIRS["two and two"]
    assert fused_mixture_parameters(q, klest.Normal(loc=0.0, scale=1.0)) is None
    assert fused_mixture_parameters(klest.Normal(loc=0.0, scale=1.0), p) is None
    # the most extreme tame pair: draws near 1e50, standardized by scales of 1e-50
    edge = GM(weights=[0.5, 0.5], locs=[-1e50, 1e50], scales=[1e50, 1e-50])
    assert fused_mixture_parameters(edge, edge) is not None
    lr = log_ratio_function(edge, GM(weights=[1.0], locs=[1e50], scales=[1e-50]))
    assert np.isfinite(lr(edge.sample(np.random.default_rng(0), 10_000))).all()
    for wild in (GM(weights=[1.0], locs=[1e60], scales=[1.0]),
                 GM(weights=[0.5, 0.5], locs=[0.0, 1.0], scales=[1.0, 1e-60])):  # fmt: skip
        assert fused_mixture_parameters(wild, q) is None
        assert fused_mixture_parameters(q, wild) is None
    cuts, locs, scales, q_terms, p_terms = fused_mixture_parameters(q, p)
    assert cuts.tolist() == [0.3] and locs is q.locs and scales is q.scales
    assert q_terms is q.terms and p_terms is p.terms


@pytest.mark.parametrize("module", [native, fallback_kernels], ids=["in-use", "fallback"])
def test_bad_mixture_arguments_are_refused_with_their_name(module) -> None:
    accumulator = Accumulator(4, EDGES, 5, hist_rows=3)
    state = np.array([[1, 2, 3, 5]], dtype=np.uint64)
    lengths = np.array([100], np.int64)
    cuts, locs, scales, q_terms, p_terms = fused_mixture_parameters(*MIXTURE_PAIRS["two and two"])
    bad_terms = p_terms.copy()
    bad_terms[2, 0] = 0.0
    cases = [
        ((state, lengths, cuts, locs, scales, q_terms), TypeError, r"mixture must be \(states"),
        ((state.reshape(-1), lengths, cuts, locs, scales, q_terms, p_terms), ValueError,
         "states must have shape"),
        ((state, lengths, np.zeros(2), locs, scales, q_terms, p_terms), ValueError,
         r"cuts must have shape \(1,\)"),
        ((state, lengths, cuts, locs, scales[:1], q_terms, p_terms), ValueError,
         r"scales must have shape \(2,\)"),
        ((state, lengths, cuts, np.array([0.0, np.nan]), scales, q_terms, p_terms), ValueError,
         "locs must be finite"),
        ((state, lengths, np.array([0.0, 0.7, 0.5]), np.zeros(4), np.ones(4), q_terms, p_terms),
         ValueError, "cuts must be nondecreasing"),
        ((state, lengths, np.zeros(0), np.zeros(0), np.zeros(0), q_terms, p_terms), ValueError,
         "locs must have at least one component"),
        ((state, lengths, cuts, locs, scales, q_terms, bad_terms), ValueError,
         "p_terms must be finite with positive c"),
        ((state, lengths, cuts, locs.astype(np.float32), scales, q_terms, p_terms), TypeError,
         "locs"),
    ]  # fmt: skip
    for mixture, error, words in cases:
        with pytest.raises(error, match=words):
            module.mixture_block_stats(NAMES, mixture, *accumulator._arrays())
    assert not accumulator.stats[:, 0].any()  # nothing was folded in
    assert state.tolist() == [[1, 2, 3, 5]]  # nor drawn

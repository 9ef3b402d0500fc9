"""Pair-specialised log-ratios (klest.distributions.log_ratio) against the generic difference.

The bound: where the generic ``p.log_prob(x) - q.log_prob(x)`` is finite, the closed form is
within ``ULPS * eps * (|log p(x)| + |log q(x)| + 1)`` of it, ULPS = 8 (both are differences
of rounded terms of about that size; the closed form folds the constants of both sides into
one and takes each log once; the largest error seen is 3.8 eps times that scale). Where the
generic difference is not finite (x = 0, a Beta draw of 0 or 1, x outside the support, inf,
NaN), the specialisation returns exactly what it returns. The draws never change:
``sample_log_ratio`` is the specialised function of ``q.sample``'s draws, and
GaussianMixture still draws what the searchsorted rule and NumPy's ``standard_normal`` drew.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

import klest
from klest.distributions.log_ratio import _generic, log_ratio_function, sample_log_ratio
from klest.distributions.multivariate_normal import mvn_log_ratio
from klest.engine.plan import block_generator

ULPS = 8  # observed at most 3.8 over 200,000 draws of each pair and the edge draws
EPS = np.finfo(float).eps

G, B, T, L = klest.Gamma, klest.Beta, klest.StudentT, klest.Laplace
E, LN, GM = klest.Exponential, klest.LogNormal, klest.GaussianMixture

PAIRS = [
    (G(shape=2.0, rate=1.0), G(shape=3.0, rate=1.5)),  # the benchmark's pair
    (G(shape=0.3, rate=2.0), G(shape=0.7, rate=0.5)),  # shape < 1: draws of exactly 0
    (G(shape=2.5, rate=1.0), G(shape=2.5, rate=3.0)),  # equal shapes: no log
    (G(shape=1.0, rate=1.0), G(shape=4.0, rate=1.0)),  # equal rates
    (B(alpha=2.0, beta=3.0), B(alpha=3.0, beta=2.0)),
    (B(alpha=0.2, beta=0.3), B(alpha=0.5, beta=0.25)),  # draws of exactly 0 and 1
    (B(alpha=2.0, beta=0.5), B(alpha=2.0, beta=3.0)),  # equal alphas: no log x
    (B(alpha=0.5, beta=2.0), B(alpha=3.0, beta=2.0)),  # equal betas: no log1p(-x)
    (B(alpha=1.5, beta=2.5), B(alpha=1.5, beta=2.5)),  # equal: no log at all
    (T(df=5.0), T(df=3.0, loc=0.5)),
    (T(df=2.5, loc=-1.0, scale=0.3), T(df=30.0, loc=2.0, scale=4.0)),
    (T(df=4.0, loc=1.0, scale=2.0), T(df=2e4, loc=1.0, scale=2.0)),  # the large-df series
    (L(loc=0.0, scale=1.0), L(loc=0.5, scale=2.0)),
    (L(loc=-3.0, scale=0.2), L(loc=3.0, scale=0.2)),
    (E(rate=2.0), E(rate=0.3)),
    (E(rate=1.5), E(rate=1.5)),
    (LN(loc=0.0, scale=1.0), LN(loc=0.5, scale=0.25)),
    (LN(loc=-1.0, scale=0.5), LN(loc=-1.0, scale=0.5)),
    (
        GM(weights=[0.3, 0.7], locs=[-1.0, 1.0], scales=[0.5, 1.0]),
        GM(weights=[0.5, 0.5], locs=[-0.5, 1.5], scales=[1.0, 0.7]),
    ),
    (  # one component against three, a zero weight
        GM(weights=[1.0], locs=[0.0], scales=[1.0]),
        GM(weights=[0.2, 0.0, 0.8], locs=[-2.0, 0.0, 1.0], scales=[0.3, 1.0, 2.0]),
    ),
    (  # many components: the searchsorted pick
        GM(weights=np.full(10, 0.1), locs=np.linspace(-3, 3, 10), scales=np.full(10, 0.4)),
        GM(weights=[0.5, 0.5], locs=[-1.0, 1.0], scales=[1.0, 1.0]),
    ),
]
IDS = [f"{type(q).__name__}-{i}" for i, (q, _) in enumerate(PAIRS)]

EDGES = np.array(
    [0.0, -0.0, 5e-324, 1e-300, 1e-20, 0.5, 1.0 - 2.0**-53, 1.0, 1.0 + 2.0**-52, 2.0, -1.0,
     -1e-300, 1e20, 1e49, 1e60, 1e200, -1e200, 1e300, -1e300, np.inf, -np.inf, np.nan]
)  # fmt: skip


def _generic_and_scale(q, p, x):
    with np.errstate(all="ignore"):
        lp, lq = np.asarray(p.log_prob(x)), np.asarray(q.log_prob(x))
        return lp - lq, np.abs(lp) + np.abs(lq) + 1.0


def _assert_agrees(got, want, scale):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    finite = np.isfinite(want)
    err = np.abs(got[finite] - want[finite])
    assert np.all(err <= ULPS * EPS * scale[finite]), float(np.max(err / scale[finite]) / EPS)
    # not finite: the generic difference itself, bit for bit (the same inf, or NaN)
    assert np.array_equal(got[~finite], want[~finite], equal_nan=True)


@pytest.mark.parametrize(("q", "p"), PAIRS, ids=IDS)
def test_pair_is_specialised_and_agrees_with_the_generic_difference(q, p) -> None:
    f = log_ratio_function(q, p)
    assert "_generic" not in f.__qualname__  # the closed form, not p.log_prob - q.log_prob
    x = np.concatenate([q.sample(np.random.default_rng(0), 20_000), EDGES])
    _assert_agrees(f(x), *_generic_and_scale(q, p, x))
    # the edge draws one at a time too (each call takes its own path) and as 0-d input
    for v in EDGES:
        want, scale = _generic_and_scale(q, p, np.array([v]))
        _assert_agrees(f(np.array([v])), want, scale)
        _assert_agrees(np.asarray(f(v)).reshape(1), want, scale)
    assert np.ndim(f(0.5)) == 0 and f(np.empty(0)).shape == (0,)
    assert f(x.reshape(2, -1)).shape == (2, x.size // 2)


@pytest.mark.parametrize(("q", "p"), PAIRS, ids=IDS)
def test_engine_path_is_the_specialised_function_of_unchanged_draws(q, p) -> None:
    rng = block_generator(3, 1, 2)
    fused = sample_log_ratio(q, p, rng, 30_000)
    draws = q.sample(block_generator(3, 1, 2), 30_000)
    assert np.array_equal(fused, log_ratio_function(q, p)(draws))
    nxt = block_generator(3, 1, 2)
    q.sample(nxt, 30_000)
    assert rng.random() == nxt.random()  # the same stream consumed


def test_edge_draws_are_drawn_and_handled_as_before() -> None:
    # shape 0.002: a fifth of NumPy's gamma draws underflow to exactly 0
    q, p = G(shape=0.002, rate=1.0), G(shape=0.5, rate=1.0)
    x = q.sample(np.random.default_rng(1), 20_000)
    assert (x == 0.0).any()
    got = log_ratio_function(q, p)(x)
    want, _ = _generic_and_scale(q, p, x)
    assert np.array_equal(got[x == 0.0], want[x == 0.0], equal_nan=True)
    # Beta(0.002, 0.002) draws exactly 0 and exactly 1
    q, p = B(alpha=0.002, beta=0.002), B(alpha=0.5, beta=2.0)
    x = q.sample(np.random.default_rng(2), 20_000)
    assert (x == 0.0).any() and (x == 1.0).any()
    _assert_agrees(log_ratio_function(q, p)(x), *_generic_and_scale(q, p, x))


@pytest.mark.parametrize(
    ("q", "p"),
    [
        (G(shape=2.0, rate=1e-60), G(shape=3.0, rate=1.0)),
        (L(loc=1e60, scale=1.0), L(loc=0.0, scale=1.0)),
        (T(df=3.0, scale=1e-80), T(df=3.0)),
        (
            GM(weights=[1.0], locs=[0.0], scales=[1e-60]),
            GM(weights=[1.0], locs=[0.0], scales=[1.0]),
        ),
    ],
    ids=repr,
)
def test_extreme_parameters_take_the_generic_difference(q, p) -> None:
    assert "_generic" in log_ratio_function(q, p).__qualname__


def _old_mixture_sample(mixture, rng, size):
    # the searchsorted rule and NumPy's standard_normal, as GaussianMixture drew before
    cumulative = np.cumsum(mixture.weights)
    cumulative /= cumulative[-1]
    u = rng.random(size)
    component = np.minimum(np.searchsorted(cumulative, u, side="right"), len(cumulative) - 1)
    return mixture.locs[component] + mixture.scales[component] * rng.standard_normal(size)


@pytest.mark.parametrize(
    "mixture",
    [
        GM(weights=[1.0], locs=[0.5], scales=[2.0]),
        GM(weights=[0.3, 0.7], locs=[-1.0, 1.0], scales=[0.5, 1.0]),
        GM(weights=[0.2, 0.0, 0.5, 0.3], locs=[-2.0, 0.0, 1.0, 4.0], scales=[0.3, 1, 2, 0.1]),
        GM(weights=np.full(12, 1 / 12), locs=np.arange(12.0), scales=np.full(12, 0.5)),
    ],
    ids=lambda m: f"K={m.n_components}",
)
def test_mixture_stream_is_unchanged(mixture) -> None:
    a, b = block_generator(5, 0, 1), block_generator(5, 0, 1)
    assert np.array_equal(mixture.sample(a, 70_001), _old_mixture_sample(mixture, b, 70_001))
    assert a.random() == b.random()
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    assert np.array_equal(mixture.sample(a, (3, 4)), _old_mixture_sample(mixture, b, (3, 4)))


def test_mixture_log_prob_is_the_log_sum_exp() -> None:
    m = GM(weights=[0.2, 0.0, 0.5, 0.3], locs=[-2.0, 0.0, 1.0, 4.0], scales=[0.3, 1.0, 2.0, 0.1])
    x = np.concatenate([m.sample(np.random.default_rng(4), 5000), EDGES])
    with np.errstate(all="ignore"):
        z = (x[:, None] - m.locs) / m.scales
        terms = np.log(m.weights) - np.log(m.scales) - 0.5 * math.log(2 * math.pi) - 0.5 * z * z
        want = special.logsumexp(terms, axis=-1)
    _assert_agrees(m.log_prob(x), want, np.abs(want) + 1.0)
    assert np.ndim(m.log_prob(0.0)) == 0


def _random_mvn(rng, d, mean_scale):
    a = rng.standard_normal((d, d))
    return klest.MultivariateNormal(
        mean=rng.standard_normal(d) * mean_scale, cov=a @ a.T / d + 0.5 * np.eye(d)
    )


@pytest.mark.parametrize("d", [1, 3, 16])
def test_mvn_pair_agrees_with_the_generic_difference(d: int) -> None:
    rng = np.random.default_rng(d)
    q, p = _random_mvn(rng, d, 1.0), _random_mvn(rng, d, 1.0)
    f = log_ratio_function(q, p)
    x = q.sample(np.random.default_rng(0), 40_000)
    x[:3] = np.array([np.inf, np.nan, 1e300])[
        :, None
    ]  # rows that are not finite or overflow: as generic
    x[3, -1], x[4, 0] = -np.inf, np.nan
    _assert_agrees(f(x), *_generic_and_scale(q, p, x))
    assert np.isnan(f(x[:5])).all()
    assert np.ndim(f(x[10])) == 0 and f(x.reshape(2, -1, d)).shape == (2, 20_000)
    # the engine's path: from the standard normal rows, chunk by chunk, the same stream
    rng_a, rng_b = block_generator(1, 0, 0), block_generator(1, 0, 0)
    fused = sample_log_ratio(q, p, rng_a, 40_000)
    draws = q.sample(rng_b, 40_000)
    _assert_agrees(fused, *_generic_and_scale(q, p, draws))
    assert rng_a.random() == rng_b.random()
    # equal distributions: exactly 0 (no cancellation between two squared norms)
    assert np.all(mvn_log_ratio(q, q, draws) == 0.0)


def test_mvn_engine_path_falls_back_where_not_finite() -> None:
    q = klest.MultivariateNormal(mean=[0.0, 0.0], cov=np.eye(2))
    p = klest.MultivariateNormal(mean=[0.0, 0.0], cov=np.eye(2) * 1e-310)
    fused = sample_log_ratio(q, p, block_generator(2, 0, 0), 1000)
    want = _generic(q, p)(q.sample(block_generator(2, 0, 0), 1000))
    assert np.array_equal(fused, want, equal_nan=True) and not np.isfinite(want).all()

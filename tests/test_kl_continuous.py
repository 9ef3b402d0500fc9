"""Closed-form KLs of the 1-D continuous families, cross-checked against quadrature.

Every registered pair is compared with ``kl(a, b, method="quadrature")`` over parameters drawn
by hypothesis from the declared typical ranges. Tolerance: |closed - quadrature| <=
1e-7·|closed| + abs_error. The quadrature aims at 1e-11 of ∫|q·log-ratio| and reports a bound
(``abs_error``, which also charges the rounding of log a - log b); 1e-7 relative leaves room
for integrands that are non-smooth inside a piece (endpoint singularities of Beta/Gamma
densities, the kink of a Laplace log-density), while any error in a formula shows up far
above it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special
from strategies import instances, mixtures, uniforms_containing, uniforms_within

from klest.distributions import (
    Beta,
    Exponential,
    Gamma,
    GaussianMixture,
    Laplace,
    LogNormal,
    Normal,
    StudentT,
    Uniform,
)
from klest.divergence.closed_forms import continuous, cross_entropy
from klest.divergence.registry import _CLOSED_FORMS, NoKLMethodError, kl, kl_result

MINE = {Laplace, LogNormal, StudentT, Exponential, Gamma, Beta, Uniform, GaussianMixture}
SAME_FAMILY = [
    (Laplace, Laplace),
    (LogNormal, LogNormal),
    (Exponential, Exponential),
    (Gamma, Gamma),
    (Beta, Beta),
    (Uniform, Uniform),
    (Exponential, Gamma),
    (Gamma, Exponential),
]
PAIRS = SAME_FAMILY + list(cross_entropy.CROSS_ENTROPY_PAIRS)
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
RTOL = 1e-7
EULER = 0.5772156649015329


def _ids(pair: tuple[type, type]) -> str:
    return f"{pair[0].__name__}-{pair[1].__name__}"


def pairs(type_a: type, type_b: type) -> st.SearchStrategy:
    """(a, b) with a's support inside b's (the case where a closed form is evaluated)."""
    if type_a is Uniform:
        return instances(type_b).flatmap(
            lambda b: st.tuples(uniforms_within(b.support.low, b.support.high), st.just(b))
        )
    if type_b is Uniform:
        return instances(type_a).flatmap(
            lambda a: st.tuples(st.just(a), uniforms_containing(a.support.low, a.support.high))
        )
    return st.tuples(instances(type_a), instances(type_b))


def test_every_registered_pair_is_cross_checked() -> None:
    registered = {pair for pair in _CLOSED_FORMS if set(pair) & MINE}
    assert registered == set(PAIRS)


@pytest.mark.parametrize("pair", PAIRS, ids=_ids)
@given(data=st.data())
@SETTINGS
def test_closed_form_matches_quadrature(pair: tuple[type, type], data: st.DataObject) -> None:
    a, b = data.draw(pairs(*pair))
    closed = kl_result(a, b)
    assert closed.method == "closed_form" and closed.abs_error == 0.0
    numeric = kl_result(a, b, method="quadrature")
    assert numeric.method == "quadrature"
    assert closed.value >= 0.0
    assert abs(closed.value - numeric.value) <= RTOL * abs(closed.value) + numeric.abs_error, (
        a,
        b,
        closed.value,
        numeric.value,
        numeric.abs_error,
    )


# Narrow or edge-touching uniforms: E log X and Var log X of U(l, h) must stay accurate when
# h - l << h (where the textbook antiderivative formulas cancel) and when l = 0 or h = 1.
EDGE_UNIFORMS = [
    (Uniform(low=1.0, high=1.0 + 1e-6), LogNormal(loc=0.0, scale=0.5)),
    (Uniform(low=1000.0, high=1001.0), LogNormal(loc=6.5, scale=0.3)),
    (Uniform(low=0.0, high=1e-3), Gamma(shape=0.5, rate=1.0)),
    (Uniform(low=0.0, high=1.0), LogNormal(loc=-1.0, scale=1.0)),
    (Uniform(low=0.999, high=1.0), Beta(alpha=2.0, beta=0.5)),
    (Uniform(low=0.3, high=0.3 + 1e-7), Beta(alpha=3.0, beta=4.0)),
    (Uniform(low=2.0, high=2.0 + 1e-5), Exponential(rate=3.0)),
]


@pytest.mark.parametrize(("a", "b"), EDGE_UNIFORMS, ids=lambda v: repr(v)[:30])
def test_edge_uniforms_match_quadrature(a, b) -> None:
    closed, numeric = kl_result(a, b), kl_result(a, b, method="quadrature")
    assert closed.method == "closed_form"
    assert abs(closed.value - numeric.value) <= RTOL * closed.value + numeric.abs_error


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (1.0, 1.0 + 1e-6),
        (2.0, 2.0 + 1e-6),
        (1e3, 1e3 + 1),
        (2.0, 2.5),
        (0.0, 3.0),
        (1e-9, 1.0),
        (3.0, 300.0),
    ],
)
def test_uniform_log_moments(low: float, high: float) -> None:
    # against scipy.integrate.quad over u = x - high in [-(high - low), 0], with
    # log x = log(high) + log1p(u / high) so that the deviations from the mean keep their
    # digits; the variance as ∫ (log x - m)² dx, which has no cancellation
    width = high - low

    def y(u: float) -> float:
        return math.log1p(u / high)

    opts = {"epsabs": 0.0, "epsrel": 1e-13, "limit": 200}
    mean_y = integrate.quad(y, -width, 0.0, **opts)[0] / width
    var = integrate.quad(lambda u: (y(u) - mean_y) ** 2, -width, 0.0, **opts)[0] / width
    got_mean, got_var = cross_entropy._uniform_log_moments(low, high)
    assert got_mean == pytest.approx(math.log(high) + mean_y, rel=1e-12, abs=1e-15)
    assert got_var == pytest.approx(var, rel=1e-9)


# Regression cases: the kink of log b at a Laplace b's loc once fell between a piece's end
# and its first Gauss-Kronrod node, so both rules saw a smooth function and the value was off
# by ~1e-6 relative with an error estimate of ~1e-15. Quadrature now splits at b's
# breakpoints(). (The closed forms agree with 30-digit mpmath quadrature to < 1e-15.)
KINK_CASES = [
    (
        Laplace(loc=-0.026266365312890727, scale=4.250164877331328),
        Laplace(loc=-2.9770747452050585, scale=3.396595553543412),
    ),
    (
        StudentT(df=5.0, loc=-1.1895359176885205, scale=3.2690560496659558),
        Laplace(loc=0.0, scale=1.8063409870573386),
    ),
    (Uniform(low=-1.1563505726119052, high=5.0), Laplace(loc=0.3843649427388095, scale=1.0)),
]


@pytest.mark.parametrize(("a", "b"), KINK_CASES, ids=lambda v: repr(v)[:30])
def test_quadrature_at_a_kink_of_log_b(a, b) -> None:
    numeric = kl_result(a, b, method="quadrature")
    assert abs(kl(a, b) - numeric.value) <= RTOL * kl(a, b) + numeric.abs_error


HAND_CHECKED = [
    (Exponential(rate=1.0), Exponential(rate=2.0), 1.0 - math.log(2.0)),
    (Laplace(loc=0.0, scale=1.0), Laplace(loc=1.0, scale=1.0), math.exp(-1.0)),
    (Laplace(loc=0.0, scale=1.0), Laplace(loc=0.0, scale=2.0), math.log(2.0) - 0.5),
    (LogNormal(loc=0.0, scale=1.0), LogNormal(loc=1.0, scale=1.0), 0.5),
    (Uniform(low=0.0, high=1.0), Uniform(low=-1.0, high=2.0), math.log(3.0)),
    (Gamma(shape=2.0, rate=1.0), Exponential(rate=1.0), 1.0 - EULER),  # ψ(2)
    (Exponential(rate=1.0), Gamma(shape=2.0, rate=1.0), EULER),  # -E log X
    (Gamma(shape=2.0, rate=1.0), Gamma(shape=2.0, rate=2.0), 2.0 * (1.0 - math.log(2.0))),
    (Beta(alpha=1.0, beta=1.0), Beta(alpha=2.0, beta=2.0), 2.0 - math.log(6.0)),
    (Beta(alpha=2.0, beta=2.0), Uniform(low=0.0, high=1.0), math.log(6.0) - 5.0 / 3.0),
    (Uniform(low=0.0, high=1.0), Beta(alpha=2.0, beta=1.0), 1.0 - math.log(2.0)),
    (Uniform(low=0.0, high=1.0), Normal(loc=0.0, scale=1.0), 0.5 * math.log(2 * math.pi) + 1 / 6),
    (Uniform(low=0.0, high=1.0), Exponential(rate=1.0), 0.5),
    (Uniform(low=0.0, high=2.0), Laplace(loc=0.0, scale=1.0), 1.0),
    (
        Normal(loc=0.0, scale=1.0),
        Laplace(loc=0.0, scale=1.0),
        math.log(2.0) - 0.5 * math.log(2 * math.pi * math.e) + math.sqrt(2.0 / math.pi),
    ),
    (
        Laplace(loc=0.0, scale=1.0),
        Normal(loc=0.0, scale=1.0),
        0.5 * math.log(2 * math.pi) - math.log(2.0),  # -(1 + log 2) + log√(2π) + E x²/2
    ),
    # E log X = -γ and Var log X = π²/6 under Exp(1); LogNormal(0, 1) has log-density
    # -log x - log²x/2 - log√(2π); H(Exp(1)) = 1
    (
        Exponential(rate=1.0),
        LogNormal(loc=0.0, scale=1.0),
        -EULER + 0.5 * (math.pi**2 / 6 + EULER**2) + 0.5 * math.log(2 * math.pi) - 1.0,
    ),
]


@pytest.mark.parametrize(("a", "b", "expected"), HAND_CHECKED, ids=lambda v: repr(v)[:30])
def test_hand_checked_values(a, b, expected: float) -> None:
    assert kl(a, b) == pytest.approx(expected, rel=1e-14, abs=1e-15)


SELF_FAMILIES = [Laplace, LogNormal, Exponential, Gamma, Beta, Uniform]


@pytest.mark.parametrize("cls", SELF_FAMILIES, ids=lambda c: c.__name__)
@given(data=st.data())
@SETTINGS
def test_kl_of_a_distribution_with_itself_is_zero(cls: type, data: st.DataObject) -> None:
    a = data.draw(instances(cls))
    assert kl(a, a) == 0.0


@given(rate=st.floats(0.2, 5.0))
@SETTINGS
def test_same_law_in_two_families_has_zero_kl(rate: float) -> None:
    assert abs(kl(Exponential(rate=rate), Gamma(shape=1.0, rate=rate))) <= 1e-15
    assert abs(kl(Gamma(shape=1.0, rate=rate), Exponential(rate=rate))) <= 1e-15
    assert abs(kl(Beta(alpha=1.0, beta=1.0), Uniform(low=0.0, high=1.0))) <= 1e-15
    assert abs(kl(Uniform(low=0.0, high=1.0), Beta(alpha=1.0, beta=1.0))) <= 1e-15


# Near-equal parameters: KL ≈ ½ δᵀ I δ (I the Fisher information), with relative error O(δ).
# With δ = 1e-7 the KL is ~1e-15, so a formula that cancels O(1) terms would be off by ~100%;
# the stable forms must agree with the quadratic approximation to 1e-5.
DELTA = 1e-7


def _fisher_cases():
    a, b, s = 2.5, 0.7, 1.3
    return [
        (Exponential(rate=s), Exponential(rate=s * (1 + DELTA)), 0.5 * DELTA**2),
        (
            Gamma(shape=a, rate=s),
            Gamma(shape=a * (1 + DELTA), rate=s * (1 - DELTA)),
            # δ = (a·DELTA, -s·DELTA); I = [[ψ1(a), -1/s], [-1/s, a/s²]]
            0.5 * DELTA**2 * (a * a * special.polygamma(1, a) + 2 * a + a),
        ),
        (
            Beta(alpha=a, beta=b),
            Beta(alpha=a + DELTA, beta=b - DELTA),
            # δ = (DELTA, -DELTA) keeps a + b fixed, so the ψ1(a + b) terms cancel
            0.5 * DELTA**2 * (special.polygamma(1, a) + special.polygamma(1, b)),
        ),
        (Laplace(loc=0.3, scale=s), Laplace(loc=0.3, scale=s * (1 + DELTA)), 0.5 * DELTA**2),
        (Laplace(loc=0.3, scale=s), Laplace(loc=0.3 + s * DELTA, scale=s), 0.5 * DELTA**2),
        (LogNormal(loc=0.3, scale=s), LogNormal(loc=0.3, scale=s * (1 + DELTA)), DELTA**2),
    ]


@pytest.mark.parametrize(("a", "b", "quadratic"), _fisher_cases(), ids=lambda v: repr(v)[:30])
def test_near_equal_parameters_are_stable(a, b, quadratic: float) -> None:
    assert kl(a, b) == pytest.approx(quadratic, rel=1e-5)


# --------------------------------------------------------------------------------------
# Support mismatches, method labels, pairs without a closed form
# --------------------------------------------------------------------------------------

MISMATCHED = [
    (Normal(loc=0.0, scale=1.0), Exponential(rate=1.0)),
    (Laplace(loc=0.0, scale=1.0), LogNormal(loc=0.0, scale=1.0)),
    (Uniform(low=-1.0, high=1.0), Gamma(shape=2.0, rate=1.0)),
    (Uniform(low=0.5, high=1.5), Beta(alpha=2.0, beta=2.0)),
    (Uniform(low=0.0, high=2.0), Uniform(low=0.0, high=1.0)),
    (Uniform(low=-1.0, high=0.5), Uniform(low=0.0, high=1.0)),
    (Beta(alpha=2.0, beta=2.0), Uniform(low=0.0, high=0.5)),
    (Exponential(rate=1.0), Beta(alpha=2.0, beta=2.0)),
    (StudentT(df=3.0, loc=0.0, scale=1.0), Gamma(shape=2.0, rate=1.0)),
]


@pytest.mark.parametrize(("a", "b"), MISMATCHED, ids=lambda v: repr(v)[:30])
def test_support_mismatch_is_infinite(a, b) -> None:
    for method in ("auto", "closed_form", "quadrature"):
        res = kl_result(a, b, method=method)
        assert res.value == math.inf and res.method == "support"


def test_closed_forms_guard_their_own_support() -> None:
    u01, u02 = Uniform(low=0.0, high=1.0), Uniform(low=0.0, high=2.0)
    assert continuous.kl_uniform_uniform(u02, u01) == math.inf
    assert continuous.kl_uniform_uniform(u01, u02) == pytest.approx(math.log(2.0))
    assert cross_entropy.kl_cross_entropy(Uniform(low=-1.0, high=1.0), Exponential()) == math.inf
    assert cross_entropy.kl_cross_entropy(
        Beta(alpha=2.0, beta=2.0), Uniform(low=0.1, high=1.0)
    ) == (math.inf)


@pytest.mark.parametrize("df", [0.5, 1.0, 1.5, 2.0])
def test_student_t_without_variance_has_infinite_kl_to_normal(df: float) -> None:
    a, b = StudentT(df=df, loc=0.0, scale=1.0), Normal(loc=0.0, scale=1.0)
    assert kl_result(a, b).value == math.inf and kl_result(a, b).method == "closed_form"
    assert kl(a, b, method="quadrature") == math.inf


def test_pairs_without_closed_form_use_quadrature() -> None:
    t1, t2 = StudentT(df=4.0, loc=0.0, scale=1.0), StudentT(df=9.0, loc=0.5, scale=1.5)
    res = kl_result(t1, t2)
    assert res.method == "quadrature" and 0.0 < res.value < 1.0 and res.abs_error < 1e-9
    assert abs(kl(t1, t1)) <= 1e-12
    with pytest.raises(NoKLMethodError, match=r"StudentT.*StudentT"):
        kl(t1, t2, method="closed_form")
    mix = GaussianMixture(weights=[0.5, 0.5], locs=[-1.0, 1.0], scales=[1.0, 1.0])
    assert kl_result(mix, Normal(loc=0.0, scale=2.0)).method == "quadrature"
    assert kl_result(Laplace(loc=0.0, scale=1.0), mix).method == "quadrature"
    with pytest.raises(NoKLMethodError, match=r"GaussianMixture.*Normal"):
        kl(mix, Normal(), method="closed_form")


def test_student_t_approaches_normal() -> None:
    # KL(t_ν || N(0, 1)) -> 0 as ν -> inf, monotonically
    values = [kl(StudentT(df=df, loc=0.0, scale=1.0), Normal()) for df in (3.0, 10.0, 100.0)]
    assert values[0] > values[1] > values[2] > 0.0 and values[2] < 1e-3


@given(mix=mixtures(), normal=instances(Normal))
@SETTINGS
def test_one_component_mixture_matches_normal_closed_form(mix, normal: Normal) -> None:
    single = GaussianMixture(weights=[1.0], locs=mix.locs[:1], scales=mix.scales[:1])
    as_normal = Normal(loc=float(mix.locs[0]), scale=float(mix.scales[0]))
    for a, b in ((single, normal), (normal, single)):
        res = kl_result(a, b)
        ref_a = as_normal if a is single else a
        ref_b = as_normal if b is single else b
        exact = kl(ref_a, ref_b)
        assert res.method == "quadrature"
        assert abs(res.value - exact) <= RTOL * exact + res.abs_error


@given(mix=mixtures())
@SETTINGS
def test_mixture_kl_with_itself_is_zero(mix: GaussianMixture) -> None:
    res = kl_result(mix, mix)
    assert res.method == "quadrature" and abs(res.value) <= res.abs_error + 1e-15


def test_mixture_of_identical_components_is_that_normal() -> None:
    mix = GaussianMixture(weights=[0.25, 0.75], locs=[0.5, 0.5], scales=[2.0, 2.0])
    b = Normal(loc=-1.0, scale=1.0)
    assert kl(mix, b) == pytest.approx(kl(Normal(loc=0.5, scale=2.0), b), rel=1e-9)


def test_values_are_python_floats_or_inf() -> None:
    value = kl(Gamma(shape=2.0, rate=1.0), Beta(alpha=2.0, beta=2.0))
    assert value == math.inf  # Gamma's support is not inside [0, 1]
    value = kl(Beta(alpha=2.0, beta=3.0), Gamma(shape=2.0, rate=1.0))
    assert isinstance(value, float) and np.isfinite(value)

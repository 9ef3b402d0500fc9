"""expect_discrete: exact enumeration of finite supports and bounded series for countable ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from scipy.special import gammaln
from strategies import instances

import klest
from klest.distributions import Bernoulli, Categorical, Normal, Poisson
from klest.distributions.base import Distribution, Support
from klest.integrate.enumeration import expect_discrete


class _Die(Distribution):
    """A fair die on {1, ..., 6}: a finite support not starting at 0 (local to these tests)."""

    discrete = True

    def __init__(self) -> None:
        self._init_params()

    @property
    def support(self) -> Support:
        return Support(1.0, 6.0, discrete=True)

    def log_prob(self, x):
        x = np.asarray(x, dtype=float)
        return np.where((x >= 1) & (x <= 6) & (x == np.round(x)), -math.log(6.0), -np.inf)


def _close(res, exact: float, rel: float = 0.0) -> bool:
    """|value - exact| within the reported bound (plus an explicit relative allowance)."""
    return abs(res.value - exact) <= res.abs_error + rel * abs(exact)


# --------------------------------------------------------------------------------------
# Finite supports
# --------------------------------------------------------------------------------------


def test_finite_support_means_and_variances() -> None:
    res = expect_discrete(_Die(), lambda x: x)
    assert res.method == "enumeration" and res.finite and res.reason == ""
    assert _close(res, 3.5, rel=2 * np.finfo(float).eps)
    assert _close(expect_discrete(_Die(), lambda x: (x - 3.5) ** 2), 35.0 / 12.0, rel=4e-16)
    bern = Bernoulli(probs=0.3)
    assert expect_discrete(bern, lambda x: x).value == pytest.approx(0.3, rel=1e-15)
    assert expect_discrete(bern, lambda x: (x - 0.3) ** 2).value == pytest.approx(0.21, rel=1e-14)


def test_batched_categorical_moments_have_batch_shape() -> None:
    rng = np.random.default_rng(0)
    q = Categorical(logits=rng.normal(size=(4, 3, 7)))
    seen = []

    def g(x: np.ndarray) -> np.ndarray:
        seen.append(x.shape)
        return x

    res = expect_discrete(q, g)
    assert all(shape[1:] == (1, 1) for shape in seen)  # points arranged as (m, 1, 1)
    assert res.value.shape == (4, 3) and np.shape(res.abs_error) == (4, 3)
    np.testing.assert_allclose(res.value, q.mean(), rtol=1e-14)
    var = expect_discrete(q, lambda x: (x - q.mean()) ** 2)
    np.testing.assert_allclose(var.value, q.variance(), rtol=1e-13)


def test_chunked_enumeration_of_a_large_batched_vocabulary() -> None:
    # 8 rows x 100,000 categories = 800,000 terms: enumerated in several chunks.
    rng = np.random.default_rng(1)
    q = Categorical(logits=2.0 * rng.standard_normal((8, 100_000)))
    calls = []

    def g(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return np.sqrt(x)

    res = expect_discrete(q, g)
    assert sum(calls) - 1 == 100_000 and len(calls) > 2  # minus the one-point shape probe
    direct = np.sum(q.probs * np.sqrt(np.arange(100_000)), axis=-1)
    assert np.all(np.abs(res.value - direct) <= res.abs_error + 1e-15 * direct)


def test_zero_mass_points_contribute_nothing() -> None:
    q = Categorical(probs=[0.5, 0.0, 0.5])
    with np.errstate(divide="ignore"):
        res = expect_discrete(q, lambda x: 1.0 / (x - 1.0) + np.where(x == 1, np.nan, 0.0))
    assert res.finite and res.value == 0.0  # 0.5 * (-1) + 0.5 * 1; inf/NaN at x = 1 ignored
    res = expect_discrete(Bernoulli(probs=0.0), lambda x: np.log(1.0 - x))  # -inf at x = 1
    assert res.finite and res.value == 0.0


@pytest.mark.parametrize(("sign", "value"), [(1.0, math.inf), (-1.0, -math.inf)])
def test_infinite_g_where_q_has_mass(sign: float, value: float) -> None:
    q = Categorical(probs=[0.25, 0.25, 0.5])
    res = expect_discrete(q, lambda x: np.where(x == 2, sign * np.inf, x))
    assert res.value == value and not res.finite
    assert "x = 2" in res.reason and "infinite" in res.reason


def test_undefined_expectations_are_nan_with_a_reason() -> None:
    q = Categorical(probs=[0.25, 0.25, 0.5])
    both = expect_discrete(q, lambda x: np.where(x == 0, np.inf, np.where(x == 1, -np.inf, 0.0)))
    assert math.isnan(both.value) and not both.finite and "undefined" in both.reason
    nan = expect_discrete(q, lambda x: np.where(x == 1, np.nan, x))
    assert math.isnan(nan.value) and not nan.finite and "nan" in nan.reason


def test_batched_infinities_are_per_entry() -> None:
    q = Categorical(probs=[[0.5, 0.5], [1.0, 0.0]])
    res = expect_discrete(q, lambda x: np.where(x == 1, np.inf, 1.0))
    assert res.value[0] == math.inf and res.value[1] == 1.0 and not res.finite
    assert "1 of 2 batch entries" in res.reason
    assert res.abs_error[0] == math.inf and np.isfinite(res.abs_error[1])


def test_overflowing_g_on_a_finite_support_uses_log_space() -> None:
    # q = (1, e^-800)/(1 + e^-800); g = exp(800 x) overflows at x = 1, but q(1) g(1) = 1.
    q = Categorical(logits=[0.0, -800.0])
    with np.errstate(over="ignore"):
        res = expect_discrete(q, lambda x: np.exp(800.0 * x), log_abs_g=lambda x: 800.0 * x)
    assert res.finite and res.value == pytest.approx(2.0, rel=1e-13)
    with np.errstate(over="ignore"):
        blind = expect_discrete(q, lambda x: np.exp(800.0 * x))
    assert blind.value == math.inf and not blind.finite


def test_g_broadcasting_against_a_larger_batch() -> None:
    # q unbatched, g batched (as b.log_prob is in KL(a||b) with a batched b).
    q = Categorical(probs=[0.2, 0.8])
    weights = np.array([[1.0, 2.0, 3.0]])
    res = expect_discrete(q, lambda x: x * weights)
    assert res.value.shape == (1, 3)
    np.testing.assert_allclose(res.value, 0.8 * weights)


# --------------------------------------------------------------------------------------
# Countable supports: series
# --------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(instances(Poisson))
def test_poisson_moments_within_the_series_bound(q: Poisson) -> None:
    lam = q.rate
    cases = [
        (lambda x: np.ones_like(x), 1.0),
        (lambda x: x, lam),
        (lambda x: x * x, lam + lam * lam),
        (lambda x: x * (x - 1) * (x - 2), lam**3),  # factorial moment
        (lambda x: (x - lam) ** 2, lam),
        (lambda x: np.exp(0.5 * x), math.exp(lam * math.expm1(0.5))),  # the mgf at 0.5
    ]
    for g, exact in cases:
        res = expect_discrete(q, g)
        assert res.method == "series" and res.finite
        # g's own rounding (a few ulp of |g|) is not part of the series bound: 8 eps E|g|.
        assert _close(res, exact, rel=8 * np.finfo(float).eps)
        assert res.abs_error <= 1e-12 * max(abs(exact), 1.0)


def test_overflowing_g_in_the_series_uses_log_space() -> None:
    # E[exp(3 X)] = exp(λ (e^3 - 1)) for X ~ Poisson(λ); exp(3k) overflows for k > 236, but
    # the terms q(k) exp(3k) peak near k = λ e^3 = 603: only log_abs_g keeps them finite.
    q = Poisson(rate=30.0)
    exact_log = 30.0 * math.expm1(3.0)
    assert exact_log < 709.0 and 30.0 * math.exp(3.0) > 236.0
    with np.errstate(over="ignore"):
        res = expect_discrete(q, lambda x: np.exp(3.0 * x), log_abs_g=lambda x: 3.0 * x)
    assert res.finite
    assert math.log(res.value) == pytest.approx(exact_log, rel=1e-12)
    with np.errstate(over="ignore"):
        blind = expect_discrete(q, lambda x: np.exp(3.0 * x))
    assert not blind.finite and blind.value == math.inf and "where q has mass" in blind.reason


def _factorial(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.exp(gammaln(x + 1.0))


def _log_factorial(x: np.ndarray) -> np.ndarray:
    return gammaln(x + 1.0)


@pytest.mark.parametrize("lam", [0.1, 0.5, 0.9])
def test_factorial_g_converges_below_rate_one(lam: float) -> None:
    # E[X!] = e^-λ sum λ^k = e^-λ / (1 - λ): a geometric series with ratio λ.
    res = expect_discrete(Poisson(rate=lam), _factorial, log_abs_g=_log_factorial)
    exact = math.exp(-lam) / (1.0 - lam)
    assert res.finite and _close(res, exact, rel=8 * np.finfo(float).eps)


@pytest.mark.parametrize("lam", [1.0, 2.0, 10.0])
def test_factorial_g_diverges_at_and_above_rate_one(lam: float) -> None:
    res = expect_discrete(Poisson(rate=lam), _factorial, log_abs_g=_log_factorial)
    assert res.value == math.inf and not res.finite and res.abs_error == math.inf
    assert res.method == "series" and res.reason


def test_zero_function_stops_immediately() -> None:
    res = expect_discrete(Poisson(rate=3.0), lambda x: np.zeros_like(x))
    assert res.value == 0.0 and res.abs_error == 0.0 and res.finite


def test_kl_by_series_and_exact_moments() -> None:
    a, b = Poisson(rate=3.0), Poisson(rate=4.5)
    res = klest.kl_result(a, b, method="enumeration")
    assert res.method == "series"
    assert abs(res.value - klest.kl(a, b)) <= res.abs_error + 1e-15
    m = klest.exact_moments(a, b, "k1")
    assert m.method == "series" and m.mean == pytest.approx(klest.kl(a, b), rel=1e-12)
    # Var of k1 = Var[log q(X) - log p(X)] = Var[X] (log(λa/λb))^2 for Poissons.
    assert m.var == pytest.approx(3.0 * math.log(3.0 / 4.5) ** 2, rel=1e-12)


def test_invalid_arguments() -> None:
    with pytest.raises(TypeError, match="discrete"):
        expect_discrete(Normal(loc=0.0, scale=1.0), lambda x: x)
    for rtol in (0.0, -1e-3, 1.5, math.nan):
        with pytest.raises(ValueError, match="rtol"):
            expect_discrete(Poisson(rate=1.0), lambda x: x, rtol=rtol)

"""Adaptive quadrature with divergence detection (klest.integrate.quadrature.expect_continuous)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klest.distributions import Normal
from klest.distributions.base import Distribution, Support
from klest.integrate.quadrature import expect_continuous


class _UnitInterval(Distribution):
    """Uniform on (0, 1), local to these tests (not a registered family)."""

    def __init__(self) -> None:
        self._init_params()

    @property
    def support(self) -> Support:
        return Support(0.0, 1.0)

    def log_prob(self, x):
        x = np.asarray(x, dtype=float)
        return np.where((x > 0) & (x < 1), 0.0, -np.inf)

    def quantile(self, u):
        return np.asarray(u, dtype=float)


STANDARD = Normal(loc=0.0, scale=1.0)


@pytest.mark.parametrize(("power", "moment"), [(0, 1.0), (2, 1.0), (4, 3.0), (6, 15.0), (8, 105.0)])
def test_normal_moments(power: int, moment: float) -> None:
    res = expect_continuous(STANDARD, lambda x: x**power)
    assert res.finite and res.method == "quadrature"
    assert abs(res.value - moment) <= max(res.abs_error, 4e-15 * moment)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.0, 0.49))
def test_gaussian_exponential_integral(c: float) -> None:
    # E[exp(c X^2)] = (1 - 2c)^(-1/2) for X ~ N(0, 1) and c < 1/2; the integrand overflows
    # float64 far out, so log|g| is supplied.
    res = expect_continuous(STANDARD, lambda x: np.exp(c * x * x), log_abs_g=lambda x: c * x * x)
    exact = 1.0 / math.sqrt(1.0 - 2.0 * c)
    assert res.finite
    assert res.value == pytest.approx(exact, rel=1e-9)
    assert abs(res.value - exact) <= res.abs_error + 1e-10 * exact


@pytest.mark.parametrize("c", [0.5, 0.51, 1.0])
def test_non_integrable_gaussian_tail_is_inf(c: float) -> None:
    res = expect_continuous(STANDARD, lambda x: np.exp(c * x * x), log_abs_g=lambda x: c * x * x)
    assert not res.finite and res.value == math.inf
    assert "not integrable" in res.reason


def test_power_tail_at_infinity() -> None:
    # q(x) g(x) with q = N(0,1), g = exp(x^2/2) / (1 + x^2) is 1/(sqrt(2 pi) (1 + x^2)),
    # whose integral is pi / sqrt(2 pi)
    def g(x):
        return np.exp(0.5 * x * x) / (1.0 + x * x)

    def log_abs_g(x):
        return 0.5 * x * x - np.log1p(x * x)

    res = expect_continuous(STANDARD, g, log_abs_g=log_abs_g)
    exact = math.pi / math.sqrt(2.0 * math.pi)
    assert res.finite
    assert res.value == pytest.approx(exact, rel=1e-9)
    assert abs(res.value - exact) <= res.abs_error


def test_barely_non_integrable_power_tail() -> None:
    # integrand ~ 1/|x|: diverges logarithmically
    res = expect_continuous(
        STANDARD,
        lambda x: np.exp(0.5 * x * x) / (1.0 + np.abs(x)),
        log_abs_g=lambda x: 0.5 * x * x - np.log1p(np.abs(x)),
    )
    assert not res.finite and "not integrable" in res.reason


def test_endpoint_singularities() -> None:
    q = _UnitInterval()
    ok = expect_continuous(q, lambda x: x**-0.5)
    assert ok.finite and ok.value == pytest.approx(2.0, rel=1e-9)
    log_sing = expect_continuous(q, lambda x: -np.log(x))
    assert log_sing.finite and log_sing.value == pytest.approx(1.0, rel=1e-9)
    bad = expect_continuous(q, lambda x: 1.0 / x)
    assert not bad.finite and bad.value == math.inf
    assert "x - 0" in bad.reason


def test_negative_divergence_and_mixed_signs() -> None:
    q = _UnitInterval()
    neg = expect_continuous(q, lambda x: -1.0 / x)
    assert not neg.finite and neg.value == -math.inf
    both = expect_continuous(q, lambda x: 1.0 / x - 1.0 / (1.0 - x))
    assert not both.finite and math.isnan(both.value)


def test_integrand_far_from_bulk() -> None:
    # the integrand's mass sits near x = 20, far outside q's 1 - 1e-12 quantile range
    def g(x):
        return np.exp(20.0 * x - 200.0)

    res = expect_continuous(STANDARD, g, log_abs_g=lambda x: 20.0 * x - 200.0)
    assert res.value == pytest.approx(1.0, rel=1e-9)  # E[exp(20 X)] = exp(200)


def test_rejects_discrete_or_multivariate() -> None:
    class _Coin(_UnitInterval):
        discrete = True

    with pytest.raises(ValueError, match="1-D continuous"):
        expect_continuous(_Coin(), lambda x: x)


def test_overflow_without_log_abs_is_reported() -> None:
    res = expect_continuous(STANDARD, lambda x: np.exp(0.49 * x * x))
    assert not res.finite and "log_abs_g" in res.reason

"""exact_moments: dispatch, forced methods, divergent moments, targets, bad input."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import integrate

import klest
from klest import NoExactMethodError, exact_moments

N01 = klest.Normal(loc=0.0, scale=1.0)


def _quad_moments(q, p, name):
    """Independent reference: scipy.integrate.quad over q's support, two passes."""
    est = klest.estimators.get(name)
    lo, hi = q.support.low, q.support.high

    @functools.cache  # the two passes visit many of the same nodes
    def density_and_value(x):
        log_q = float(q.log_prob(x))
        if log_q < -700.0:
            # q(x) < e^-700: negligible against any g here (|log g| grows at most linearly),
            # and skipping it avoids 0 * inf at x = ±inf or at the ends of the support
            return None
        return math.exp(log_q), float(est(p.log_prob(x) - log_q))

    def weighted(x, h):
        point = density_and_value(x)
        return 0.0 if point is None else point[0] * h(point[1])

    def integral(h):
        return integrate.quad(lambda x: weighted(x, h), lo, hi, epsabs=0, epsrel=1e-12, limit=500)

    mean = integral(lambda v: v)[0]
    var = integral(lambda v: (v - mean) ** 2)[0]
    return mean, var


@pytest.mark.parametrize(
    ("q", "p"),
    [
        (klest.Gamma(shape=3.0, rate=1.0), klest.Gamma(shape=2.5, rate=0.8)),
        (klest.Laplace(loc=0.0, scale=1.0), klest.Laplace(loc=0.3, scale=1.4)),
        (klest.Beta(alpha=2.0, beta=3.0), klest.Beta(alpha=3.0, beta=2.0)),
        (klest.StudentT(df=6.0, loc=0.0, scale=1.0), klest.Normal(loc=0.2, scale=1.3)),
    ],
    ids=["gamma", "laplace", "beta", "student_t-normal"],
)
@pytest.mark.parametrize("name", ["k1", "k2", "k3", "abs", "low_var_kl", "rev_kl"])
@pytest.mark.filterwarnings("ignore::scipy.integrate.IntegrationWarning")  # the reference's
def test_quadrature_moments_match_an_independent_integrator(q, p, name) -> None:
    got = exact_moments(q, p, name)
    assert got.method == "quadrature"
    if isinstance(q, klest.StudentT) and name == "k2":
        # k2 grows like x^4 against p = Normal; Var needs E[x^8] under t_6, which is infinite.
        # (scipy's quad returns a finite number here: this is what the tail analysis is for.)
        assert math.isfinite(got.mean)
        assert math.isinf(got.var) and "not integrable" in got.note
        return
    mean, var = _quad_moments(q, p, name)
    assert got.mean == pytest.approx(mean, rel=1e-8, abs=1e-12)
    assert got.var == pytest.approx(var, rel=1e-7, abs=1e-12)


def test_normal_closed_form_matches_forced_quadrature() -> None:
    p = klest.Normal(loc=0.4, scale=1.3)
    for name in ["k1", "k2", "k3", "rev_kl", "pearson_chi2", "squared_hellinger"]:
        closed = exact_moments(N01, p, name)
        numeric = exact_moments(N01, p, name, method="quadrature")
        assert closed.method == "closed_form" and numeric.method == "quadrature"
        assert numeric.mean == pytest.approx(closed.mean, rel=1e-9)
        assert numeric.var == pytest.approx(closed.var, rel=1e-8)


def test_f_divergence_truths_in_closed_form() -> None:
    mu = 0.7
    p = klest.Normal(loc=mu, scale=1.0)
    # chi2(p||q) = exp(mu^2) - 1 and H^2 = 1 - exp(-mu^2 / 8) for unit-variance Gaussians
    assert exact_moments(N01, p, "pearson_chi2").truth == pytest.approx(math.expm1(mu**2))
    assert exact_moments(N01, p, "squared_hellinger").truth == pytest.approx(
        -math.expm1(-(mu**2) / 8)
    )
    # TV(N(0,1), N(mu,1)) = 2 Phi(mu/2) - 1
    from scipy.stats import norm

    tv = exact_moments(N01, p, "total_variation")
    assert tv.truth == pytest.approx(2 * norm.cdf(mu / 2) - 1, rel=1e-9)
    assert abs(tv.bias) < 1e-9  # f-divergence estimators are unbiased


def test_targets_and_bias() -> None:
    p = klest.Normal(loc=1.0, scale=1.0)
    k2 = exact_moments(N01, p, "k2")
    assert k2.target == "KL(q||p)" and k2.truth == 0.5 and k2.bias == pytest.approx(0.125)
    rev = exact_moments(N01, klest.Normal(loc=0.0, scale=1.5), "rev_kl")
    assert rev.target == "KL(p||q)"
    assert rev.truth == pytest.approx(klest.kl(klest.Normal(loc=0.0, scale=1.5), N01))
    assert abs(rev.bias) < 1e-12


@pytest.mark.parametrize(("scale_p", "finite"), [(2.0, False), (1.5, True)])
def test_laplace_k3_variance_diverges_when_p_is_twice_as_wide(scale_p, finite) -> None:
    # E_q[r^2] = int p^2/q: with Laplace tails exp(-2|x|/b_p + |x|/b_q) this needs b_p < 2 b_q
    m = exact_moments(
        klest.Laplace(loc=0.0, scale=1.0), klest.Laplace(loc=0.0, scale=scale_p), "k3"
    )
    assert math.isfinite(m.mean)
    assert math.isfinite(m.var) is finite
    if not finite:
        assert "diverges" in m.note


@pytest.mark.parametrize(("df_p", "finite"), [(2.4, False), (3.0, True)])
def test_student_t_k3_variance_diverges_for_heavy_q_tails(df_p, finite) -> None:
    # q = t_5, p = t_nu: p^2/q ~ |x|^-(2 nu - 5 + 1) integrable iff 2 nu - 5 > 0
    q = klest.StudentT(df=5.0, loc=0.0, scale=1.0)
    p = klest.StudentT(df=df_p, loc=0.0, scale=1.0)
    m = exact_moments(q, p, "k3")
    assert math.isfinite(m.var) is finite


def test_normal_scale_divergence_boundary() -> None:
    for sigma2, finite in [(1.99, True), (2.0, False), (3.0, False)]:
        m = exact_moments(N01, klest.Normal(loc=0.0, scale=math.sqrt(sigma2)), "k3")
        assert math.isfinite(m.var) is finite, sigma2
        assert math.isfinite(m.mean)
    assert "E_q[r^2]" in exact_moments(N01, klest.Normal(loc=0.0, scale=2.0), "k3").note


def test_discrete_pairs_are_enumerated() -> None:
    q = klest.Categorical(probs=[0.2, 0.3, 0.5])
    p = klest.Categorical(probs=[0.4, 0.4, 0.2])
    m = exact_moments(q, p, "k3")
    lr = np.log(p.probs) - np.log(q.probs)
    values = np.expm1(lr) - lr
    assert m.method == "enumeration"
    assert m.mean == pytest.approx(float(q.probs @ values), rel=1e-14)
    assert m.var == pytest.approx(float(q.probs @ (values - m.mean) ** 2), rel=1e-12)
    poisson = exact_moments(klest.Poisson(rate=3.0), klest.Poisson(rate=4.0), "k1")
    assert poisson.method == "series"
    assert poisson.mean == pytest.approx(klest.kl(klest.Poisson(rate=3.0), klest.Poisson(rate=4.0)))


def test_forced_methods_and_errors() -> None:
    gamma = klest.Gamma(shape=2.0, rate=1.0)
    with pytest.raises(NoExactMethodError, match="closed_form"):
        exact_moments(gamma, gamma, "k3", method="closed_form")
    with pytest.raises(ValueError, match="unknown exact method 'magic'"):
        exact_moments(N01, N01, "k3", method="magic")
    with pytest.raises(KeyError, match="unknown estimator 'k7'"):
        exact_moments(N01, N01, "k7")
    with pytest.raises(TypeError, match="two klest distributions"):
        exact_moments(N01, 1.0, "k1")  # type: ignore[arg-type]
    cov_q, cov_p = np.eye(2), np.array([[2.0, 0.3], [0.3, 1.0]])
    q2 = klest.MultivariateNormal(mean=[0.0, 0.0], cov=cov_q)
    p2 = klest.MultivariateNormal(mean=[0.0, 1.0], cov=cov_p)
    with pytest.raises(NoExactMethodError, match=r"generali[sz]ed chi-square"):
        exact_moments(q2, p2, "abs")
    assert exact_moments(q2, p2, "k3").method == "closed_form"


def test_identical_distributions_have_zero_everything() -> None:
    for name in ["k1", "k2", "k3", "rev_kl", "abs", "low_var_kl"]:
        m = exact_moments(klest.Gamma(shape=2.0, rate=1.0), klest.Gamma(shape=2.0, rate=1.0), name)
        assert m.truth == 0.0
        assert abs(m.mean) < 1e-12 and m.var < 1e-20


def test_q_outside_p_support_gives_infinite_mean_for_estimators_infinite_at_zero_ratio() -> None:
    q, p = klest.Uniform(low=0.0, high=1.0), klest.Uniform(low=0.5, high=3.0)
    for name in ("k1", "k2", "k3", "abs"):
        m = exact_moments(q, p, name)
        assert m.mean == math.inf and m.var == math.inf
        assert "outside p's support" in m.note
    # total variation stays finite: |r - 1|/2 = 1/2 where p = 0
    assert math.isfinite(exact_moments(q, p, "total_variation").mean)


def test_f_divergence_truth_counts_p_mass_outside_q_support() -> None:
    # q = U(0,1), p = U(0.5,3): TV = (0.5 + 0.3 + 0.8)/2 = 0.8, H^2 = 1 - 0.5*sqrt(0.4),
    # chi2(p||q) = inf; E_q[f(r)] alone sees only [0, 1] (0.4 for TV), so the estimators
    # are biased by exactly the missing mass times lim f(t)/t.
    q, p = klest.Uniform(low=0.0, high=1.0), klest.Uniform(low=0.5, high=3.0)
    tv = exact_moments(q, p, "total_variation")
    assert tv.truth == pytest.approx(0.8, rel=1e-12) and tv.mean == pytest.approx(0.4)
    hellinger = exact_moments(q, p, "squared_hellinger")
    assert hellinger.truth == pytest.approx(1 - 0.5 * math.sqrt(0.4), rel=1e-12)
    assert exact_moments(q, p, "pearson_chi2").truth == math.inf
    # TV is symmetric: swapping q and p (each has mass outside the other's support) agrees
    assert exact_moments(p, q, "total_variation").truth == pytest.approx(0.8, rel=1e-12)
    # nested supports: p = U(0.5, 1) << q = U(0, 1), nothing is missing, TV = 0.5
    nested = exact_moments(q, klest.Uniform(low=0.5, high=1.0), "total_variation")
    assert nested.truth == pytest.approx(0.5, rel=1e-12)

"""The 1-D continuous families: densities vs scipy, sampling, config round trip, validation.

Statistical checks use fixed seeds. Moment checks require |estimate - exact| <= z·SE with
z = 5 (two-sided false-failure probability 5.7e-7 per check; ~40 checks, so < 3e-5 for the
whole file); KS checks require p > 1e-6.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from strategies import instances, mixtures

from klest.distributions import (
    FAMILIES,
    Beta,
    Distribution,
    Exponential,
    Gamma,
    GaussianMixture,
    Laplace,
    LogNormal,
    StudentT,
    Uniform,
)
from klest.integrate.quadrature import expect_continuous

SCIPY_FAMILIES = [Laplace, LogNormal, StudentT, Exponential, Gamma, Beta, Uniform]
NAMES = {
    Laplace: "laplace",
    LogNormal: "lognormal",
    StudentT: "student_t",
    Exponential: "exponential",
    Gamma: "gamma",
    Beta: "beta",
    Uniform: "uniform",
    GaussianMixture: "gaussian_mixture",
}
Z = 5.0
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)

# --------------------------------------------------------------------------------------
# Densities
# --------------------------------------------------------------------------------------

# float64 evaluations of the same density arranged differently agree to a few ulp of the
# largest term (|terms| < ~100 here): 1e-12 relative plus 1e-12 absolute is ample.
RTOL = ATOL = 1e-12
LEVELS = np.array([1e-10, 1e-6, 1e-3, 0.05, 0.3, 0.5, 0.7, 0.95, 0.999, 1 - 1e-6])


@pytest.mark.parametrize("cls", SCIPY_FAMILIES, ids=lambda c: c.__name__)
@given(data=st.data())
@SETTINGS
def test_log_prob_matches_scipy(cls: type[Distribution], data: st.DataObject) -> None:
    d = data.draw(instances(cls))
    ref = d._scipy()
    x = ref.ppf(LEVELS)
    np.testing.assert_allclose(d.log_prob(x), ref.logpdf(x), rtol=RTOL, atol=ATOL)
    assert d.log_prob(x).shape == x.shape and d.log_prob(x).dtype == np.float64
    # scalar in, 0-d out; the support's finite ends agree with scipy too (0, inf or finite)
    ends = [e for e in (d.support.low, d.support.high) if math.isfinite(e)]
    for e in ends:
        assert float(d.log_prob(e)) == pytest.approx(float(ref.logpdf(e)), rel=RTOL, abs=ATOL)


@pytest.mark.parametrize("cls", SCIPY_FAMILIES, ids=lambda c: c.__name__)
@given(data=st.data())
@SETTINGS
def test_log_prob_off_support_and_never_nan(cls: type[Distribution], data: st.DataObject) -> None:
    d = data.draw(instances(cls))
    lo, hi = d.support.low, d.support.high
    outside = [v for v in (lo - 1.0, lo - 1e-9 * max(1.0, abs(lo)), hi + 1.0, -1e300, 1e300)]
    outside = [v for v in outside if not lo <= v <= hi]
    outside += [-np.inf, np.inf]
    assert np.all(d.log_prob(np.array(outside)) == -np.inf)
    x = data.draw(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1))
    assert not np.isnan(d.log_prob(np.array(x))).any()
    assert np.isnan(d.log_prob(np.nan))


def test_boundary_densities_of_singular_shapes() -> None:
    assert Gamma(shape=0.5, rate=1.0).log_prob(0.0) == np.inf
    assert Gamma(shape=1.0, rate=2.0).log_prob(0.0) == pytest.approx(math.log(2.0))
    assert Gamma(shape=3.0, rate=2.0).log_prob(0.0) == -np.inf
    assert Beta(alpha=0.5, beta=2.0).log_prob(0.0) == np.inf
    assert Beta(alpha=2.0, beta=0.5).log_prob(1.0) == np.inf
    assert Beta(alpha=1.0, beta=1.0).log_prob(np.array([0.0, 0.5, 1.0])).tolist() == [0.0] * 3
    assert Exponential(rate=2.0).log_prob(0.0) == pytest.approx(math.log(2.0))
    assert Uniform(low=-1.0, high=1.0).log_prob([-1.0, 1.0]).tolist() == [-math.log(2.0)] * 2


def test_mixture_log_prob_cdf_against_components() -> None:
    w, m, s = np.array([0.2, 0.5, 0.3]), np.array([-2.0, 0.0, 3.0]), np.array([0.5, 1.0, 2.0])
    mix = GaussianMixture(weights=w, locs=m, scales=s)
    x = np.linspace(-8, 10, 41).reshape(1, 41)
    ref = special.logsumexp(stats.norm.logpdf(x[..., None], m, s), b=w, axis=-1)
    np.testing.assert_allclose(mix.log_prob(x), ref, rtol=RTOL, atol=ATOL)
    assert mix.log_prob(x).shape == (1, 41)
    np.testing.assert_allclose(mix.cdf(x), stats.norm.cdf(x[..., None], m, s) @ w, rtol=RTOL)
    np.testing.assert_allclose(mix.sf(x), stats.norm.sf(x[..., None], m, s) @ w, rtol=RTOL)
    assert mix.log_prob(np.inf) == -np.inf and mix.log_prob(-1e308) == -np.inf
    assert np.isnan(mix.log_prob(np.nan))


def test_mixture_zero_weight_component_is_inert() -> None:
    with_zero = GaussianMixture(weights=[0.4, 0.0, 0.6], locs=[0.0, 50.0, 1.0], scales=[1, 1, 2])
    without = GaussianMixture(weights=[0.4, 0.6], locs=[0.0, 1.0], scales=[1.0, 2.0])
    x = np.linspace(-5, 60, 27)
    np.testing.assert_allclose(with_zero.log_prob(x), without.log_prob(x), rtol=1e-15)
    draws = with_zero.sample(np.random.default_rng(3), 100_000)
    assert draws.max() < 20.0  # the component at 50 is never chosen
    np.testing.assert_allclose(with_zero.quantile([0.1, 0.9]), without.quantile([0.1, 0.9]))


@given(mix=mixtures(), u=st.lists(st.floats(1e-12, 1 - 1e-12), min_size=1, max_size=5))
@SETTINGS
def test_mixture_quantile_inverts_cdf(mix: GaussianMixture, u: list[float]) -> None:
    u_arr = np.array(u)
    x = mix.quantile(u_arr)
    assert x.shape == u_arr.shape and np.all(np.diff(x[np.argsort(u_arr)]) >= 0)
    lower = u_arr <= 0.5
    np.testing.assert_allclose(mix.cdf(x[lower]), u_arr[lower], rtol=1e-10)
    np.testing.assert_allclose(mix.sf(x[~lower]), 1 - u_arr[~lower], rtol=1e-10)


def test_mixture_quantile_edges_and_single_component() -> None:
    one = GaussianMixture(weights=[1.0], locs=[1.5], scales=[2.0])
    u = np.array([[1e-9, 0.25], [0.5, 0.999]])
    np.testing.assert_allclose(one.quantile(u), stats.norm(1.5, 2.0).ppf(u), rtol=1e-14)
    mix = GaussianMixture(weights=[0.5, 0.5], locs=[-1.0, 1.0], scales=[1.0, 1.0])
    assert mix.quantile(0.0) == -np.inf and mix.quantile(1.0) == np.inf
    assert np.isnan(mix.quantile([-0.1, 1.1, np.nan])).all()
    assert mix.quantile(0.5) == pytest.approx(0.0, abs=1e-14)
    assert np.ndim(mix.quantile(0.3)) == 0


@given(mix=mixtures())
@SETTINGS
def test_mixture_mean_variance_by_quadrature(mix: GaussianMixture) -> None:
    mean = expect_continuous(mix, lambda x: x)
    assert mix.mean() == pytest.approx(mean.value, abs=1e-9)
    var = expect_continuous(mix, lambda x: (x - mix.mean()) ** 2)
    assert mix.variance() == pytest.approx(var.value, rel=1e-9)


@pytest.mark.parametrize("cls", SCIPY_FAMILIES, ids=lambda c: c.__name__)
@given(data=st.data())
@SETTINGS
def test_mean_variance_quantile_match_scipy(cls: type[Distribution], data: st.DataObject) -> None:
    d = data.draw(instances(cls))
    ref = d._scipy()
    assert d.mean() == pytest.approx(ref.mean(), rel=1e-12, abs=1e-12)
    assert d.variance() == pytest.approx(ref.var(), rel=1e-12)
    inner = LEVELS[(LEVELS >= 1e-6) & (LEVELS <= 1 - 1e-6)]
    np.testing.assert_allclose(d.quantile(inner), ref.ppf(inner), rtol=1e-10)


@given(beta=instances(Beta), u=st.sampled_from([1e-100, 1e-12, 1e-9, 0.3, 0.7, 1 - 1e-9]))
@SETTINGS
def test_beta_quantile_inverts_cdf_in_both_tails(beta: Beta, u: float) -> None:
    # scipy.stats.beta.ppf is off by orders of magnitude for e.g. Beta(0.5, 2) at 1e-12;
    # Beta.quantile must satisfy cdf(quantile(u)) = u (lower half) or sf = 1 - u (upper half)
    x = float(beta.quantile(u))
    eps = np.finfo(float).eps
    if u <= 0.5:
        assert special.betainc(beta.alpha, beta.beta, x) == pytest.approx(u, rel=1e-9, abs=0)
    elif x < 1.0:
        # 1 - x carries a rounding error of eps / (1 - x) relative; sf ∝ (1 - x)^beta near 1
        tol = 4 * max(1.0, beta.beta) * eps / (1.0 - x) + 1e-9
        sf = special.betainc(beta.beta, beta.alpha, 1.0 - x)
        assert sf == pytest.approx(1 - u, rel=tol, abs=0)
    assert beta.quantile(0.0) == 0.0 and beta.quantile(1.0) == 1.0
    assert np.isnan(beta.quantile([-0.5, 1.5, np.nan])).all()


def test_beta_quantile_far_lower_tail() -> None:
    # betaincinv returns NaN here; the leading term x^a / (a B(a, b)) of the CDF takes over
    b = Beta(alpha=2.0, beta=4.0)
    x = b.quantile(np.array([1e-250, 1e-200]))
    assert np.all(np.isfinite(x))
    np.testing.assert_allclose(special.betainc(2.0, 4.0, x), [1e-250, 1e-200], rtol=1e-12)


def test_student_t_moments_outside_typical_range() -> None:
    assert StudentT(df=2.0, loc=1.0, scale=1.0).variance() == math.inf
    assert math.isnan(StudentT(df=1.0, loc=1.0, scale=1.0).mean())
    assert math.isnan(StudentT(df=0.5, loc=0.0, scale=1.0).variance())


# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------

SAMPLED = [
    Laplace(loc=-1.0, scale=2.0),
    Laplace(loc=2.5, scale=0.3),
    LogNormal(loc=0.5, scale=0.4),
    LogNormal(loc=-1.0, scale=1.0),
    StudentT(df=10.0, loc=1.0, scale=2.0),
    StudentT(df=5.5, loc=-2.0, scale=0.5),
    Exponential(rate=0.3),
    Exponential(rate=4.0),
    Gamma(shape=0.5, rate=2.0),
    Gamma(shape=7.0, rate=0.5),
    Beta(alpha=0.5, beta=0.7),
    Beta(alpha=6.0, beta=2.0),
    Uniform(low=-2.0, high=3.0),
    Uniform(low=1.0, high=1.5),
    GaussianMixture(weights=[0.3, 0.7], locs=[-2.0, 1.0], scales=[0.5, 1.5]),
    GaussianMixture(weights=[0.1, 0.2, 0.7], locs=[3.0, 0.0, -1.0], scales=[0.3, 2.0, 1.0]),
]
N = 200_000


def _fourth_central_moment(d: Distribution) -> float:
    if isinstance(d, GaussianMixture):
        c = d.locs - d.mean()
        return float(d.weights @ (c**4 + 6 * c**2 * d.scales**2 + 3 * d.scales**4))
    excess = float(d._scipy().stats(moments="k"))
    return (excess + 3.0) * d.variance() ** 2


@pytest.mark.parametrize("d", SAMPLED, ids=repr)
def test_sample_mean_and_variance_within_z_se(d: Distribution) -> None:
    x = d.sample(np.random.default_rng(20260101), N)
    assert x.shape == (N,) and x.dtype == np.float64
    mean, var = d.mean(), d.variance()
    se_mean = math.sqrt(var / N)
    assert abs(x.mean() - mean) <= Z * se_mean
    # Var of the unbiased sample variance: (mu4 - var² (n - 3) / (n - 1)) / n
    se_var = math.sqrt((_fourth_central_moment(d) - var**2 * (N - 3) / (N - 1)) / N)
    assert abs(x.var(ddof=1) - var) <= Z * se_var


@pytest.mark.parametrize("d", SAMPLED, ids=repr)
def test_sample_distribution_ks(d: Distribution) -> None:
    x = d.sample(np.random.default_rng(7), 20_000)
    assert np.all(d.log_prob(x) > -np.inf)  # every draw lies in the support
    cdf = d.cdf if isinstance(d, GaussianMixture) else d._scipy().cdf
    assert stats.kstest(x, cdf).pvalue > 1e-6


@pytest.mark.parametrize("d", SAMPLED, ids=repr)
def test_sample_shapes_and_reproducibility(d: Distribution) -> None:
    a = d.sample(np.random.default_rng(11), (2, 3))
    b = d.sample(np.random.default_rng(11), (2, 3))
    assert a.shape == (2, 3) and np.array_equal(a, b)
    assert np.shape(d.sample(np.random.default_rng(0))) == ()
    assert d.sample(np.random.default_rng(0), 0).shape == (0,)
    with pytest.raises(TypeError, match="Generator"):
        d.sample(np.random.RandomState(0), 3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# Config round trip, repr, equality, hashing, immutability
# --------------------------------------------------------------------------------------

ALL_FAMILIES = [*SCIPY_FAMILIES, GaussianMixture]


@pytest.mark.parametrize("cls", ALL_FAMILIES, ids=lambda c: c.__name__)
def test_family_name_is_registered(cls: type[Distribution]) -> None:
    assert cls.family == NAMES[cls]
    assert FAMILIES[NAMES[cls]] is cls


@pytest.mark.parametrize("cls", ALL_FAMILIES, ids=lambda c: c.__name__)
@given(data=st.data())
@SETTINGS
def test_round_trip_equality_hash(cls: type[Distribution], data: st.DataObject) -> None:
    d = data.draw(instances(cls))
    config = d.to_dict()
    assert config["family"] == cls.family
    assert all(isinstance(v, float | list) for k, v in config.items() if k != "family")
    again = Distribution.from_dict(config)
    assert type(again) is cls and again == d and hash(again) == hash(d)
    assert cls.from_dict(config) == d
    assert pickle.loads(pickle.dumps(d)) == d
    assert repr(d).startswith(f"{cls.__name__}(")
    assert all(f"{p.name}=" in repr(d) for p in cls.params)
    if cls is not GaussianMixture:  # scalar reprs are exact: eval gives the same object
        assert eval(repr(d), {cls.__name__: cls}) == d


@pytest.mark.parametrize("cls", ALL_FAMILIES, ids=lambda c: c.__name__)
@given(data=st.data())
@SETTINGS
def test_immutable(cls: type[Distribution], data: st.DataObject) -> None:
    d = data.draw(instances(cls))
    for p in cls.params:
        with pytest.raises(AttributeError, match="immutable"):
            setattr(d, p.name, getattr(d, p.name))
        value = getattr(d, p.name)
        if isinstance(value, np.ndarray):
            with pytest.raises(ValueError, match="read-only"):
                value[0] = 0.5


def test_inequality() -> None:
    assert Laplace(loc=0.0, scale=1.0) != Laplace(loc=0.0, scale=1.5)
    assert Laplace(loc=0.0, scale=1.0) != StudentT(df=3.0, loc=0.0, scale=1.0)
    assert Exponential(rate=1.0) != Gamma(shape=1.0, rate=1.0)  # same law, different family
    a = GaussianMixture(weights=[0.5, 0.5], locs=[0.0, 1.0], scales=[1.0, 1.0])
    b = GaussianMixture(weights=[0.5, 0.5], locs=[1.0, 0.0], scales=[1.0, 1.0])
    assert a != b and a == GaussianMixture(weights=[0.5, 0.5], locs=[0, 1], scales=[1, 1])
    assert len({a, GaussianMixture(**{k: v for k, v in a.to_dict().items() if k != "family"})}) == 1


def test_keyword_only() -> None:
    with pytest.raises(TypeError):
        Laplace(0.0, 1.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Beta(2.0, 3.0)  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# Invalid parameters: ValueError naming the parameter and the offending value
# --------------------------------------------------------------------------------------

NAN, INF = math.nan, math.inf


def _mix(weights, locs, scales) -> dict:
    return {"weights": weights, "locs": locs, "scales": scales}


INVALID = [
    (Laplace, {"loc": 0.0, "scale": 0.0}, ["scale", "0.0"]),
    (Laplace, {"loc": 0.0, "scale": -1.0}, ["scale", "-1.0"]),
    (Laplace, {"loc": NAN, "scale": 1.0}, ["loc", "nan"]),
    (Laplace, {"loc": INF, "scale": 1.0}, ["loc", "inf"]),
    (LogNormal, {"loc": 0.0, "scale": -0.5}, ["scale", "-0.5"]),
    (LogNormal, {"loc": -INF, "scale": 1.0}, ["loc", "-inf"]),
    (StudentT, {"df": 0.0, "loc": 0.0, "scale": 1.0}, ["df", "0.0"]),
    (StudentT, {"df": NAN, "loc": 0.0, "scale": 1.0}, ["df", "nan"]),
    (StudentT, {"df": 3.0, "loc": 0.0, "scale": 0.0}, ["scale", "0.0"]),
    (StudentT, {"df": 3.0, "loc": INF, "scale": 1.0}, ["loc", "inf"]),
    (Exponential, {"rate": 0.0}, ["rate", "0.0"]),
    (Exponential, {"rate": -2.0}, ["rate", "-2.0"]),
    (Exponential, {"rate": INF}, ["rate", "inf"]),
    (Exponential, {"rate": NAN}, ["rate", "nan"]),
    (Gamma, {"shape": 0.0, "rate": 1.0}, ["shape", "0.0"]),
    (Gamma, {"shape": 2.0, "rate": -1.0}, ["rate", "-1.0"]),
    (Gamma, {"shape": INF, "rate": 1.0}, ["shape", "inf"]),
    (Beta, {"alpha": 0.0, "beta": 1.0}, ["alpha", "0.0"]),
    (Beta, {"alpha": 1.0, "beta": -3.0}, ["beta", "-3.0"]),
    (Beta, {"alpha": NAN, "beta": 1.0}, ["alpha", "nan"]),
    (Uniform, {"low": 1.0, "high": 1.0}, ["low", "high", "1.0"]),
    (Uniform, {"low": 2.0, "high": -1.5}, ["low=2.0", "high=-1.5"]),
    (Uniform, {"low": -INF, "high": 1.0}, ["low", "-inf"]),
    (Uniform, {"low": 0.0, "high": NAN}, ["high", "nan"]),
    (Uniform, {"low": -1e308, "high": 1e308}, ["low", "high", "1e+308"]),
    (
        GaussianMixture,
        {"weights": [0.5, 0.4], "locs": [0, 1], "scales": [1, 1]},
        ["weights", "0.9"],
    ),
    (
        GaussianMixture,
        {"weights": [1.2, -0.2], "locs": [0, 1], "scales": [1, 1]},
        ["weights", "1.2"],
    ),
    (GaussianMixture, _mix([0.5, 0.5], [0, 1, 2], [1, 1]), ["locs", "3"]),
    (GaussianMixture, _mix([0.5, 0.5], [0, 1], [1, 0]), ["scales", "0.0"]),
    (GaussianMixture, _mix([0.5, 0.5], [0, NAN], [1, 1]), ["locs", "nan"]),
    (GaussianMixture, _mix([1.0], [INF], [1]), ["locs", "inf"]),
    (GaussianMixture, _mix([], [], []), ["weights", "non-empty"]),
    (GaussianMixture, _mix(1.0, 0.0, 1.0), ["weights", "1-D"]),
    (GaussianMixture, _mix([[1.0]], [0.0], [1.0]), ["weights", "1-D"]),
    (GaussianMixture, _mix(["a"], [0.0], [1.0]), ["weights", "'a'"]),
]


@pytest.mark.parametrize(("cls", "kwargs", "words"), INVALID, ids=lambda v: repr(v)[:40])
def test_invalid_parameters_are_named(cls: type, kwargs: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_weights_sum_tolerance() -> None:
    GaussianMixture(weights=[0.3, 0.7 + 5e-10], locs=[0.0, 1.0], scales=[1.0, 1.0])
    with pytest.raises(ValueError, match=r"weights.*sum"):
        GaussianMixture(weights=[0.3, 0.7 + 5e-9], locs=[0.0, 1.0], scales=[1.0, 1.0])


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(ValueError, match="'mean'"):
        Distribution.from_dict({"family": "laplace", "mean": 0.0, "scale": 1.0})

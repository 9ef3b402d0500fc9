"""Exact estimator moments for Gaussian pairs (klest.exact.gaussian), checked independently."""

from __future__ import annotations

import functools
import itertools
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from klest import (
    Laplace,
    MultivariateNormal,
    NoExactMethodError,
    Normal,
    estimators,
    exact_moments,
    kl,
)
from klest.exact.gaussian import gaussian_log_ratio, gaussian_moments

Z = 5.0  # |estimate - exact| <= Z * SE: false-failure rate ~6e-7 per comparison
LOC_LO, LOC_HI = Normal.params[0].typical
SCALE_LO, SCALE_HI = Normal.params[1].typical
TERMS_NAMES = [name for name, est in estimators.registry().items() if est.terms is not None]
NO_TERMS_NAMES = [name for name, est in estimators.registry().items() if est.terms is None]
STD = Normal(loc=0.0, scale=1.0)


def test_registered_estimators_cover_both_paths() -> None:
    assert {"k1", "k2", "k3", "rev_kl"} <= set(TERMS_NAMES)
    assert {"abs", "low_var_kl", "total_variation"} <= set(NO_TERMS_NAMES)


# --------------------------------------------------------------------------------------
# Schulman (2020), table for q = N(0, 1)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mu, name, rel_bias, rel_std",
    [
        (0.1, "k1", 0.0, 20.0),
        (0.1, "k2", 0.0025, 1.418),
        (0.1, "k3", 0.0, 1.417),
        (1.0, "k1", 0.0, 2.0),
        (1.0, "k2", 0.25, 1.732),
        (1.0, "k3", 0.0, 1.695),
    ],
)
def test_schulman_table(mu: float, name: str, rel_bias: float, rel_std: float) -> None:
    m = exact_moments(STD, Normal(loc=mu, scale=1.0), name)
    assert m.method == "closed_form"
    assert round(float(m.rel_std), 3) == rel_std
    if rel_bias == 0.0:
        assert abs(m.rel_bias) < 1e-12
    else:
        assert float(m.rel_bias) == pytest.approx(rel_bias, rel=1e-12)


def test_k1_rel_std_for_a_mean_shift_is_exact() -> None:
    # l ~ N(-KL, 2 KL) for a unit mean shift: std(k1)/KL = sqrt(2 KL)/KL = sqrt(2/KL)
    m = exact_moments(STD, Normal(loc=0.1, scale=1.0), "k1")
    assert m.rel_std == pytest.approx(20.0, rel=1e-13)


# --------------------------------------------------------------------------------------
# closed forms vs independent numerical integration over x (1-D Normal pairs)
# --------------------------------------------------------------------------------------


def _bumps(q: Normal, p: Normal, rates: set[float]) -> list[float]:
    """Break points around the centre of each Gaussian bump q(x) e^{s l(x)}."""
    points = []
    for s in rates:
        precision = (1 - s) / q.scale**2 + s / p.scale**2
        if precision <= 0:
            continue
        centre = ((1 - s) * q.loc / q.scale**2 + s * p.loc / p.scale**2) / precision
        width = 1.0 / math.sqrt(precision)
        points += [centre + k * width for k in (-30, -12, -6, -3, -1, 0, 1, 3, 6, 12, 30)]
    return sorted(points)


def _integrate(f, points: list[float], epsabs: float = 0.0) -> float:
    edges = [-math.inf, *points, math.inf]
    total = 0.0
    for a, b in itertools.pairwise(edges):
        # quad may warn that 1e-12 is out of reach on a piece; the comparison's 1e-8
        # tolerance is what matters, and a poor reference can only make the test fail.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", integrate.IntegrationWarning)
            value, _ = integrate.quad(f, a, b, epsabs=epsabs, epsrel=1e-12, limit=400)
        total += value
    return total


def _log_ratio(q: Normal, p: Normal, x: float) -> float:
    """log p(x) - log q(x) as (u - v)(u + v)/2 - log(sp/sq), free of cancellation."""
    u, v = (x - q.loc) / q.scale, (x - p.loc) / p.scale
    dscale = p.scale - q.scale
    diff = (x * dscale + q.scale * (p.loc - q.loc) - q.loc * dscale) / (q.scale * p.scale)
    return 0.5 * diff * (u + v) - math.log1p(dscale / q.scale)


def _quad_moments(q: Normal, p: Normal, est: estimators.Estimator, mean: float):
    """(E[g], E|g|, E[(g - mean)^2]) by scipy quad over x, in log space against overflow."""
    rates = {0.0} | {s for _, _, s in est.terms} | {2 * s for _, _, s in est.terms}
    points = _bumps(q, p, rates)

    @functools.cache  # the three integrals visit many of the same nodes
    def parts(x: float) -> tuple[float, float, float]:
        lq = float(q.log_prob(x))
        lr = _log_ratio(q, p, x)
        value = float(est(np.array([lr]))[0])
        log_abs = float(est.log_abs(np.array([lr]))[0])
        return lq, value, log_abs

    def first(x: float) -> float:
        lq, value, log_abs = parts(x)
        return 0.0 if value == 0 else math.copysign(math.exp(lq + log_abs), value)

    def absolute(x: float) -> float:
        lq, value, log_abs = parts(x)
        return 0.0 if value == 0 else math.exp(lq + log_abs)

    def centred(x: float) -> float:
        lq, value, log_abs = parts(x)
        if math.isinf(value):
            return math.exp(lq + 2 * log_abs)
        diff = abs(value - mean)
        return 0.0 if diff == 0 else math.exp(lq + 2 * math.log(diff))

    l1 = _integrate(absolute, points)
    return _integrate(first, points, epsabs=1e-14 * l1), l1, _integrate(centred, points)


def _diverges(ratio: float, s: float) -> bool:
    """E_q[r^s] = inf for Normal q, p with var_p / var_q = ratio (s > 1 only)."""
    return s > 1 and ratio >= s / (s - 1)


normals = st.builds(
    lambda loc, scale: Normal(loc=loc, scale=scale),
    st.floats(LOC_LO, LOC_HI),
    st.floats(SCALE_LO, SCALE_HI),
)


@pytest.mark.parametrize("name", TERMS_NAMES)
@settings(max_examples=20, deadline=None)
@given(q=normals, p=normals)
def test_closed_form_matches_quadrature_over_x(name: str, q: Normal, p: Normal) -> None:
    est = estimators.get(name)
    m = exact_moments(q, p, name)
    assert m.method == "closed_form"
    ratio = p.scale**2 / q.scale**2
    s_max = max(s for _, _, s in est.terms)
    if _diverges(ratio, s_max):
        assert m.mean == math.inf and m.var == math.inf
        assert "diverges" in m.note and f"E[{name}] is infinite" in m.note
        return
    if _diverges(ratio, 2 * s_max):
        assert m.var == math.inf
        assert "diverges" in m.note and f"Var[{name}] is infinite" in m.note
        return
    if "exceed the float64 range" in m.note:  # finite, but e.g. E[r^2] = e^900
        assert m.var == math.inf
        return
    assert np.isfinite(m.mean) and np.isfinite(m.var) and m.note == ""
    mean, l1, var = _quad_moments(q, p, est, m.mean)
    assert abs(m.mean - mean) <= 1e-8 * l1
    assert m.var == pytest.approx(var, rel=1e-8)


# --------------------------------------------------------------------------------------
# divergence detection
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("var_p", [2.0, 2.0 + 1e-9, 2.5, 4.0, 25.0])
def test_k3_variance_diverges_when_p_is_twice_as_wide(var_p: float) -> None:
    m = exact_moments(STD, Normal(loc=0.0, scale=math.sqrt(var_p)), "k3")
    assert m.var == math.inf
    assert math.isfinite(m.mean) and m.mean == pytest.approx(kl(STD, m_p(var_p)), rel=1e-12)
    assert m.note.startswith("E_q[r^2] diverges: p's variance is at least twice q's")
    assert m.note.endswith("so Var[k3] is infinite")


def m_p(var_p: float) -> Normal:
    return Normal(loc=0.0, scale=math.sqrt(var_p))


@pytest.mark.parametrize("var_p", [1.5, 1.99, 1.9999])
def test_k3_variance_just_below_the_boundary_is_finite_and_right(var_p: float) -> None:
    # q = N(0,1), p = N(0, v): E_q[r^2] = 1 / (sigma sqrt(2 - v)), E_q[r l] = KL(p||q),
    # l = -log sigma + x^2 (1 - 1/v) / 2, so E[l^2] = KL(q||p)^2 + (1 - 1/v)^2 / 2 and
    # E[k3^2] = E[r^2] - 1 + E[l^2] - 2 KL(q||p) - 2 KL(p||q).
    sigma = math.sqrt(var_p)
    kl_qp, kl_pq = kl(STD, m_p(var_p)), kl(m_p(var_p), STD)
    second = (
        1.0 / (sigma * math.sqrt(2.0 - var_p))
        - 1.0
        + kl_qp**2
        + 0.5 * (1.0 - 1.0 / var_p) ** 2
        - 2.0 * kl_qp
        - 2.0 * kl_pq
    )
    m = exact_moments(STD, m_p(var_p), "k3")
    assert math.isfinite(m.var) and m.note == ""
    assert m.var == pytest.approx(second - kl_qp**2, rel=1e-9)


def test_divergent_mean_and_reverse_direction_notes() -> None:
    wide = Normal(loc=0.3, scale=3.0)
    m = exact_moments(STD, wide, "pearson_chi2")
    assert m.mean == math.inf and m.var == math.inf
    assert "E_q[r^2] diverges" in m.note and "E[pearson_chi2] is infinite" in m.note
    # q wider than p: E_q[r^s] is finite for every s > 0, so chi2's variance is finite
    m = exact_moments(wide, STD, "pearson_chi2")
    assert math.isfinite(m.mean) and math.isfinite(m.var)


# --------------------------------------------------------------------------------------
# tiny KL: the moments keep their digits
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kl_target", [1e-4, 1e-8, 1e-12])
def test_tiny_kl_mean_shift_rel_std(kl_target: float) -> None:
    p = Normal(loc=math.sqrt(2 * kl_target), scale=1.0)
    eps = kl(STD, p)  # 0.5 * shift^2: l ~ N(-eps, 2 eps)
    k1, k2, k3 = (exact_moments(STD, p, name) for name in ("k1", "k2", "k3"))
    assert k1.rel_std == pytest.approx(math.sqrt(2.0 / eps), rel=1e-12)
    assert k1.rel_bias == pytest.approx(0.0, abs=1e-12)
    # k2 = l^2 / 2: mean eps + eps^2 / 2, variance (8 eps^2 + 8 eps^3) / 4
    assert k2.rel_bias == pytest.approx(eps / 2, rel=1e-9)
    assert k2.rel_std == pytest.approx(math.sqrt(2.0 + 2.0 * eps), rel=1e-12)
    # k3: Var = expm1(2 eps) - 2 eps = sum_{n>=2} (2 eps)^n / n!
    var3 = math.fsum((2 * eps) ** n / math.factorial(n) for n in range(2, 12))
    assert k3.rel_std == pytest.approx(math.sqrt(var3) / eps, rel=1e-9)
    assert k3.rel_bias == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    "q, p",
    [
        (STD, Normal(loc=0.0, scale=1.0 + 1e-4)),  # KL ~ 1e-8 from the scale alone
        (Normal(loc=0.2, scale=1.3), Normal(loc=0.2 + 1e-4, scale=1.3 * (1 - 7e-5))),
    ],
)
def test_tiny_kl_against_high_precision_quadrature(q: Normal, p: Normal) -> None:
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    mq, sq, mpp, sp = (mp.mpf(v) for v in (q.loc, q.scale, p.loc, p.scale))

    def log_ratio(x):
        return -((x - mpp) ** 2) / (2 * sp**2) + (x - mq) ** 2 / (2 * sq**2) - mp.log(sp / sq)

    def density(x):
        return mp.exp(-((x - mq) ** 2) / (2 * sq**2)) / (sq * mp.sqrt(2 * mp.pi))

    fns = {"k1": lambda v: -v, "k2": lambda v: v * v / 2, "k3": lambda v: mp.expm1(v) - v}
    points = [-mp.inf, *(mq + k * sq for k in (-8, -3, 0, 3, 8)), mp.inf]
    for name, g in fns.items():
        mean = mp.quad(lambda x, g=g: g(log_ratio(x)) * density(x), points)
        var = mp.quad(lambda x, g=g, m=mean: (g(log_ratio(x)) - m) ** 2 * density(x), points)
        m = exact_moments(q, p, name)
        assert m.mean == pytest.approx(float(mean), rel=1e-10), name
        assert m.var == pytest.approx(float(var), rel=1e-9), name
    mp.mp.dps = 15


def test_identical_distributions_give_zero() -> None:
    q = Normal(loc=0.7, scale=1.3)
    for name in estimators.names():
        m = exact_moments(q, q, name)
        assert m.mean == 0.0 and m.var == 0.0, name
    mvn = MultivariateNormal(mean=[0.0, 1.0], cov=[[1.0, 0.3], [0.3, 2.0]])
    for name in estimators.names():
        mean, var, *_ = gaussian_moments(mvn, mvn, estimators.get(name))
        assert mean == 0.0 and var == 0.0, name


# --------------------------------------------------------------------------------------
# MultivariateNormal pairs
# --------------------------------------------------------------------------------------


def _cov(variances: list[float], seed: int, corr: float = 0.6) -> np.ndarray:
    d = len(variances)
    g = np.random.default_rng(seed).standard_normal((d, d))
    c = g @ g.T + 0.1 * np.eye(d)
    c = c / np.sqrt(np.outer(np.diag(c), np.diag(c)))
    c = corr * c + (1.0 - corr) * np.eye(d)
    sd = np.sqrt(variances)
    return c * np.outer(sd, sd)


def _monte_carlo_check(q, p, names, n: int, seed: int) -> None:
    x = q.sample(np.random.default_rng(seed), n)
    log_ratio = p.log_prob(x) - q.log_prob(x)
    for name in names:
        m = exact_moments(q, p, name)
        g = estimators.get(name)(log_ratio)
        centred = g - g.mean()
        var = float(np.mean(centred**2))
        se_mean = math.sqrt(var / n)
        se_var = math.sqrt(float(np.mean(centred**4)) - var**2) / math.sqrt(n)
        assert abs(g.mean() - m.mean) <= Z * se_mean, name
        assert abs(var - m.var) <= Z * se_var, name


def test_mvn_moments_match_monte_carlo() -> None:
    # var_p / var_q < 4/3 along every direction, so E[k^4] (the SE of the variance) is finite
    cov = _cov([1.0, 2.0, 0.5], seed=1)
    q = MultivariateNormal(mean=[0.2, -0.1, 0.4], cov=cov)
    p = MultivariateNormal(mean=[0.0, 0.2, 0.3], cov=0.9 * cov + 0.05 * np.eye(3))
    assert gaussian_log_ratio(q, p).max_var_ratio < 4 / 3
    _monte_carlo_check(q, p, TERMS_NAMES, n=400_000, seed=12345)


def test_equal_covariance_mvn_without_terms_matches_monte_carlo() -> None:
    cov = _cov([1.0, 0.5], seed=2)
    q = MultivariateNormal(mean=[0.0, 0.0], cov=cov)
    p = MultivariateNormal(mean=[1.5, -0.8], cov=cov)
    for name in NO_TERMS_NAMES:
        assert exact_moments(q, p, name).method == "quadrature"
    _monte_carlo_check(q, p, NO_TERMS_NAMES, n=400_000, seed=777)


def test_mvn_with_unequal_covariances_and_no_terms_is_refused() -> None:
    q = MultivariateNormal(mean=[0.0, 0.0], cov=np.eye(2))
    p = MultivariateNormal(mean=[0.0, 0.0], cov=[[2.0, 0.1], [0.1, 1.0]])
    for name in NO_TERMS_NAMES:
        with pytest.raises(NoExactMethodError, match=r"generalised chi-square.*simulate"):
            exact_moments(q, p, name)


def test_one_dimensional_mvn_matches_normal() -> None:
    q1, p1 = Normal(loc=0.3, scale=1.2), Normal(loc=-0.5, scale=1.1)
    qd = MultivariateNormal(mean=[0.3], cov=[[1.44]])
    pd = MultivariateNormal(mean=[-0.5], cov=[[1.21]])
    for name in estimators.names():
        a, b = exact_moments(qd, pd, name), exact_moments(q1, p1, name)
        assert a.method == b.method, name
        assert a.mean == pytest.approx(b.mean, rel=1e-10), name
        assert a.var == pytest.approx(b.var, rel=1e-9), name


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_mvn_moments_are_invariant_under_a_common_rotation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = MultivariateNormal(mean=rng.uniform(-1, 1, 3), cov=_cov(list(rng.uniform(0.5, 2, 3)), 1))
    p = MultivariateNormal(mean=rng.uniform(-1, 1, 3), cov=_cov(list(rng.uniform(0.5, 2, 3)), 2))
    rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))

    def move(m: MultivariateNormal) -> MultivariateNormal:
        return MultivariateNormal(mean=rot @ m.mean(), cov=rot @ m.cov @ rot.T)

    for name in TERMS_NAMES:
        a, b = exact_moments(q, p, name), exact_moments(move(q), move(p), name)
        assert b.mean == pytest.approx(a.mean, rel=1e-8), name
        assert b.var == pytest.approx(a.var, rel=1e-7), name


@pytest.mark.parametrize("rotate", [False, True])
@pytest.mark.parametrize(
    "vars_q, vars_p",
    [([1.0, 0.6, 1.5], [1.2, 0.7, 1.3]), ([1e-8, 0.6, 4.0], [1.0, 0.7, 1e-3])],
)
def test_mvn_with_independent_coordinates_factorises(vars_q, vars_p, rotate) -> None:
    # For independent coordinates E_q[r^s] is a product: chi2 = prod(1 + chi2_i) - 1 and
    # H^2 = 1 - prod(1 - H^2_i); cumulants of l add, so Var[k1] is a sum and
    # E[k2] = (Var[l] + KL^2) / 2. A common rotation changes none of this.
    locs_q, locs_p = [0.1, -0.4, 0.7], [0.3, 0.2, 0.5]
    rot = np.linalg.qr(np.random.default_rng(3).standard_normal((3, 3)))[0] if rotate else None

    def mvn(locs, variances):
        mean, cov = np.array(locs), np.diag(variances)
        if rot is not None:
            mean, cov = rot @ mean, rot @ cov @ rot.T
        return MultivariateNormal(mean=mean, cov=cov)

    q, p = mvn(locs_q, vars_q), mvn(locs_p, vars_p)
    pairs = [
        (Normal(loc=a, scale=math.sqrt(u)), Normal(loc=b, scale=math.sqrt(v)))
        for a, b, u, v in zip(locs_q, locs_p, vars_q, vars_p, strict=True)
    ]
    chi2 = [exact_moments(a, b, "pearson_chi2").mean for a, b in pairs]
    expected_chi2 = math.prod(1 + c for c in chi2) - 1
    assert exact_moments(q, p, "pearson_chi2").mean == pytest.approx(expected_chi2, rel=1e-9)
    h2 = [exact_moments(a, b, "squared_hellinger").mean for a, b in pairs]
    assert exact_moments(q, p, "squared_hellinger").mean == pytest.approx(
        1 - math.prod(1 - h for h in h2), rel=1e-9
    )
    var1 = math.fsum(exact_moments(a, b, "k1").var for a, b in pairs)
    kl_total = math.fsum(kl(a, b) for a, b in pairs)
    assert kl(q, p) == pytest.approx(kl_total, rel=1e-9)
    assert exact_moments(q, p, "k1").var == pytest.approx(var1, rel=1e-9)
    assert exact_moments(q, p, "k2").mean == pytest.approx((var1 + kl_total**2) / 2, rel=1e-9)


def test_tiny_kl_mvn_with_nearly_equal_covariances() -> None:
    # Diagonal covariances: l = l_1 + l_2 with independent l_i, so the moments of k1/k2/k3
    # follow from 1-D moments computed in 40-digit arithmetic.
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 40
    coords = [(0.0, 1.0, 1e-5, 1.0 + 3e-5), (0.5, 2.0, 0.5 - 2e-5, 2.0 * (1 - 4e-5))]
    q = MultivariateNormal(mean=[c[0] for c in coords], cov=np.diag([c[1] for c in coords]))
    p = MultivariateNormal(mean=[c[2] for c in coords], cov=np.diag([c[3] for c in coords]))
    moments = []  # per coordinate: E[l^k] (k = 0..4), E[r^2], E[r l]
    for mq, vq, mpp, vp in coords:
        mq, vq, mpp, vp = (mp.mpf(v) for v in (mq, vq, mpp, vp))

        def lr(x, mq=mq, vq=vq, mpp=mpp, vp=vp):
            return -((x - mpp) ** 2) / (2 * vp) + (x - mq) ** 2 / (2 * vq) - mp.log(vp / vq) / 2

        def dens(x, mq=mq, vq=vq):
            return mp.exp(-((x - mq) ** 2) / (2 * vq)) / mp.sqrt(2 * mp.pi * vq)

        pts = [-mp.inf, *(mq + k * mp.sqrt(vq) for k in (-8, -3, 0, 3, 8)), mp.inf]
        raw = [mp.quad(lambda x, k=k: lr(x) ** k * dens(x), pts) for k in range(5)]
        r2 = mp.quad(lambda x: mp.exp(2 * lr(x)) * dens(x), pts)
        rl = mp.quad(lambda x: lr(x) * mp.exp(lr(x)) * dens(x), pts)
        moments.append((raw, r2, rl))
    (a, r2a, rla), (b, r2b, rlb) = moments
    raw = [sum(mp.binomial(n, k) * a[k] * b[n - k] for k in range(n + 1)) for n in range(5)]
    kl_qp = -raw[1]
    ref = {
        "k1": (kl_qp, raw[2] - raw[1] ** 2),
        "k2": (raw[2] / 2, (raw[4] - raw[2] ** 2) / 4),
        # E[k3^2] = E[r^2] - 1 + E[l^2] + 2 E[l] - 2 E[r l], with E[r l] = rl_a + rl_b
        "k3": (kl_qp, r2a * r2b - 1 + raw[2] + 2 * raw[1] - 2 * (rla + rlb) - kl_qp**2),
    }
    assert 1e-10 < float(kl_qp) < 1e-8
    for name, (mean, var) in ref.items():
        m = exact_moments(q, p, name)
        assert m.mean == pytest.approx(float(mean), rel=1e-9), name
        assert m.var == pytest.approx(float(var), rel=1e-8), name
    mp.mp.dps = 15


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------


def test_mixed_or_mismatched_pairs_are_errors() -> None:
    k3 = estimators.get("k3")
    one = MultivariateNormal(mean=[0.0], cov=[[1.0]])
    two = MultivariateNormal(mean=[0.0, 0.0], cov=np.eye(2))
    with pytest.raises(ValueError, match="same space"):
        gaussian_moments(STD, one, k3)
    with pytest.raises(ValueError, match="same dimension"):
        gaussian_moments(one, two, k3)
    with pytest.raises(NoExactMethodError, match="Normal"):
        gaussian_moments(STD, Laplace(loc=0.0, scale=1.0), k3)

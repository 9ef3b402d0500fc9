"""MultivariateNormal: density, sampling, validation, config round trip and the closed-form KL."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from klest import MultivariateNormal, Normal, kl, kl_result
from klest.distributions import from_dict
from klest.distributions.log_ratio import log_ratio_function, sample_log_ratio
from klest.distributions.multivariate_normal import cholesky_difference

Z = 5.0  # |estimate - exact| <= Z * SE: false-failure rate ~6e-7 per comparison

MEAN_LO, MEAN_HI = MultivariateNormal.params[0].typical
VAR_LO, VAR_HI = MultivariateNormal.params[1].typical
MAX_CORR = 0.8  # off-diagonal entries: |rho| <= MAX_CORR, as the Param doc says


def make_cov(variances: np.ndarray, seed: int) -> np.ndarray:
    """A covariance with the given variances and a random correlation, |rho| <= MAX_CORR."""
    d = len(variances)
    g = np.random.default_rng(seed).standard_normal((d, d))
    c = g @ g.T + 0.1 * np.eye(d)
    c = c / np.sqrt(np.outer(np.diag(c), np.diag(c)))
    corr = MAX_CORR * c + (1.0 - MAX_CORR) * np.eye(d)
    sd = np.sqrt(variances)
    return corr * np.outer(sd, sd)


@st.composite
def mvns(draw, d: int | None = None) -> MultivariateNormal:
    if d is None:
        d = draw(st.integers(1, 4))
    floats = st.floats
    mean = draw(st.lists(floats(MEAN_LO, MEAN_HI), min_size=d, max_size=d))
    var = draw(st.lists(floats(VAR_LO, VAR_HI), min_size=d, max_size=d))
    seed = draw(st.integers(0, 2**32 - 1))
    return MultivariateNormal(mean=mean, cov=make_cov(np.array(var), seed))


@st.composite
def mvn_pairs(draw) -> tuple[MultivariateNormal, MultivariateNormal]:
    d = draw(st.integers(1, 4))
    return draw(mvns(d)), draw(mvns(d))


# --------------------------------------------------------------------------------------
# density
# --------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(mvns(), st.integers(0, 2**32 - 1))
def test_log_prob_matches_scipy(q: MultivariateNormal, seed: int) -> None:
    x = np.random.default_rng(seed).normal(scale=3.0, size=(7, q.dim))
    ref = stats.multivariate_normal(mean=q.mean(), cov=q.cov).logpdf(x)
    got = q.log_prob(x)
    assert got.shape == (7,)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_log_prob_shapes_and_edge_values() -> None:
    q = MultivariateNormal(mean=[1.0, -1.0], cov=[[2.0, 0.3], [0.3, 0.5]])
    one = q.log_prob([1.0, -1.0])
    assert np.ndim(one) == 0
    ref = stats.multivariate_normal(mean=[1.0, -1.0], cov=[[2.0, 0.3], [0.3, 0.5]])
    assert float(one) == pytest.approx(ref.logpdf([1.0, -1.0]), rel=1e-14)
    assert q.log_prob(np.zeros((3, 4, 2))).shape == (3, 4)
    edge = q.log_prob([[np.inf, 0.0], [np.nan, 0.0], [0.0, 0.0]])
    assert edge[0] == -np.inf and np.isnan(edge[1]) and np.isfinite(edge[2])
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        q.log_prob([0.0, 1.0, 2.0])


# --------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------


def test_sample_mean_and_cov_within_standard_errors() -> None:
    cov = make_cov(np.array([0.5, 2.0, 3.5]), seed=3)
    q = MultivariateNormal(mean=[1.0, -2.0, 0.5], cov=cov)
    n = 200_000
    x = q.sample(np.random.default_rng(20240601), n)
    assert x.shape == (n, 3) and x.dtype == np.float64
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(axis=0) - q.mean()) <= Z * se_mean)
    # SE of a sample covariance entry of a Gaussian: sqrt((S_ij^2 + S_ii S_jj) / n)
    centred = x - q.mean()
    emp = centred.T @ centred / n
    se_cov = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    assert np.all(np.abs(emp - cov) <= Z * se_cov)


def test_sample_shapes_and_reproducibility() -> None:
    q = MultivariateNormal(mean=[0.0, 0.0], cov=np.eye(2))
    assert q.sample(np.random.default_rng(0)).shape == (2,)
    assert q.sample(np.random.default_rng(0), (4, 5)).shape == (4, 5, 2)
    a = q.sample(np.random.default_rng(7), 10)
    b = q.sample(np.random.default_rng(7), 10)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="Generator"):
        q.sample(np.random.RandomState(0), 3)


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


def test_asymmetric_cov_is_rejected_naming_cov() -> None:
    with pytest.raises(ValueError, match=r"'cov' must be symmetric.*cov\[1, 0\] = 0\.1"):
        MultivariateNormal(mean=[0.0, 0.0], cov=[[1.0, 0.3], [0.1, 1.0]])


def test_rounding_asymmetry_is_symmetrised() -> None:
    cov = np.array([[2.0, 0.3], [0.3 * (1 + 1e-14), 1.0]])
    q = MultivariateNormal(mean=[0.0, 0.0], cov=cov)
    assert np.array_equal(q.cov, q.cov.T)
    np.testing.assert_allclose(q.cov, cov, rtol=1e-13)


@pytest.mark.parametrize(
    "cov, smallest",
    [([[1.0, 2.0], [2.0, 1.0]], -1.0), ([[1.0, 1.0], [1.0, 1.0]], 0.0), ([[-1.0]], -1.0)],
)
def test_non_positive_definite_cov_names_smallest_eigenvalue(cov, smallest) -> None:
    d = len(cov)
    with pytest.raises(ValueError, match="'cov' must be positive definite") as info:
        MultivariateNormal(mean=[0.0] * d, cov=cov)
    value = float(str(info.value).rsplit(" ", 1)[-1])
    assert value == pytest.approx(smallest, abs=1e-12)


@pytest.mark.parametrize(
    "mean, cov, name",
    [
        ([0.0, np.nan], np.eye(2), "mean"),
        ([0.0, 0.0], [[1.0, np.nan], [np.nan, 1.0]], "cov"),
        ([0.0, np.inf], np.eye(2), "mean"),
        ([0.0, 0.0], [[np.inf, 0.0], [0.0, 1.0]], "cov"),
        ([[0.0, 0.0]], np.eye(2), "mean"),
        ([], np.zeros((0, 0)), "mean"),
        (["a", "b"], np.eye(2), "mean"),
    ],
)
def test_invalid_values_name_the_parameter(mean, cov, name) -> None:
    with pytest.raises(ValueError, match=f"'{name}'"):
        MultivariateNormal(mean=mean, cov=cov)


def test_shape_mismatch_names_both_parameters() -> None:
    with pytest.raises(ValueError, match=r"'cov'.*'mean'") as info:
        MultivariateNormal(mean=[0.0, 0.0, 0.0], cov=np.eye(2))
    assert "(3, 3)" in str(info.value) and "(2, 2)" in str(info.value)
    with pytest.raises(ValueError, match="'cov'"):
        MultivariateNormal(mean=[0.0, 0.0], cov=[1.0, 1.0])


def test_keyword_only_and_required() -> None:
    with pytest.raises(TypeError):
        MultivariateNormal([0.0], [[1.0]])  # type: ignore[misc]
    with pytest.raises(TypeError):
        MultivariateNormal(mean=[0.0])  # type: ignore[call-arg]


# --------------------------------------------------------------------------------------
# round trip, repr, equality, immutability
# --------------------------------------------------------------------------------------


def test_round_trip_repr_equality_and_immutability() -> None:
    q = MultivariateNormal(mean=[1.0, 2.0], cov=[[2.0, 0.5], [0.5, 1.0]])
    config = q.to_dict()
    assert config == {
        "family": "multivariate_normal",
        "mean": [1.0, 2.0],
        "cov": [[2.0, 0.5], [0.5, 1.0]],
    }
    assert from_dict(config) == q
    assert MultivariateNormal.from_dict(config) == q
    assert pickle.loads(pickle.dumps(q)) == q
    assert hash(from_dict(config)) == hash(q)
    assert q != MultivariateNormal(mean=[1.0, 2.0], cov=[[2.0, 0.4], [0.4, 1.0]])
    text = repr(q)
    assert text.startswith("MultivariateNormal(mean=[1., 2.], cov=")
    assert "0.5" in text
    with pytest.raises(AttributeError, match="immutable"):
        q.cov = np.eye(2)
    with pytest.raises(AttributeError, match="immutable"):
        q.mean = np.zeros(2)
    with pytest.raises(ValueError):
        q.cov[0, 0] = 5.0  # read-only array
    with pytest.raises(ValueError, match="unknown parameter 'loc'"):
        from_dict({"family": "multivariate_normal", "loc": [0.0], "cov": [[1.0]]})


def test_moments_and_support() -> None:
    cov = [[2.0, 0.5], [0.5, 1.0]]
    q = MultivariateNormal(mean=[1.0, 2.0], cov=cov)
    np.testing.assert_array_equal(q.mean(), [1.0, 2.0])
    np.testing.assert_array_equal(q.variance(), cov)
    assert q.event_shape == (2,) and q.dim == 2
    assert q.support.dim == 2 and q.support.low == -math.inf and q.support.high == math.inf
    np.testing.assert_allclose(q.scale_tril @ q.scale_tril.T, cov, rtol=1e-15)
    assert not q.discrete


def test_input_arrays_are_copied() -> None:
    mean, cov = np.array([0.0, 1.0]), np.eye(2)
    q = MultivariateNormal(mean=mean, cov=cov)
    mean[0], cov[0, 0] = 9.0, 9.0
    np.testing.assert_array_equal(q.mean(), [0.0, 1.0])
    np.testing.assert_array_equal(q.cov, np.eye(2))


# --------------------------------------------------------------------------------------
# KL closed form
# --------------------------------------------------------------------------------------


def test_kl_matches_monte_carlo() -> None:
    q = MultivariateNormal(mean=[0.5, -0.2, 1.0], cov=make_cov(np.array([1.0, 2.0, 0.5]), 11))
    p = MultivariateNormal(mean=[0.0, 0.3, 0.8], cov=make_cov(np.array([1.5, 1.0, 0.8]), 12))
    n = 400_000
    x = q.sample(np.random.default_rng(99), n)
    values = q.log_prob(x) - p.log_prob(x)
    se = values.std(ddof=1) / math.sqrt(n)
    result = kl_result(q, p)
    assert result.method == "closed_form"
    assert abs(values.mean() - result.value) <= Z * se


@settings(max_examples=40, deadline=None)
@given(
    st.floats(MEAN_LO, MEAN_HI),
    st.floats(VAR_LO, VAR_HI),
    st.floats(MEAN_LO, MEAN_HI),
    st.floats(VAR_LO, VAR_HI),
)
def test_kl_in_one_dimension_is_the_normal_formula(m1, v1, m2, v2) -> None:
    a = MultivariateNormal(mean=[m1], cov=[[v1]])
    b = MultivariateNormal(mean=[m2], cov=[[v2]])
    ref = math.log(math.sqrt(v2 / v1)) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5
    assert kl(a, b) == pytest.approx(ref, rel=1e-12, abs=1e-15)
    assert kl(a, b) == pytest.approx(
        kl(Normal(loc=m1, scale=math.sqrt(v1)), Normal(loc=m2, scale=math.sqrt(v2))),
        rel=1e-10,
        abs=1e-15,
    )


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_kl_of_diagonal_covariances_is_a_sum_of_one_dimensional_kls(data) -> None:
    d = data.draw(st.integers(1, 5))
    coords = st.tuples(st.floats(MEAN_LO, MEAN_HI), st.floats(VAR_LO, VAR_HI))
    qa = data.draw(st.lists(coords, min_size=d, max_size=d))
    pa = data.draw(st.lists(coords, min_size=d, max_size=d))
    q = MultivariateNormal(mean=[m for m, _ in qa], cov=np.diag([v for _, v in qa]))
    p = MultivariateNormal(mean=[m for m, _ in pa], cov=np.diag([v for _, v in pa]))
    parts = [
        kl(Normal(loc=mq, scale=math.sqrt(vq)), Normal(loc=mp, scale=math.sqrt(vp)))
        for (mq, vq), (mp, vp) in zip(qa, pa, strict=True)
    ]
    assert kl(q, p) == pytest.approx(math.fsum(parts), rel=1e-10, abs=1e-15)


@settings(max_examples=30, deadline=None)
@given(mvn_pairs(), st.integers(0, 2**32 - 1))
def test_kl_is_invariant_under_a_common_rotation(pair, seed) -> None:
    q, p = pair
    rot, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((q.dim, q.dim)))
    shift = np.arange(q.dim, dtype=float)

    def move(m: MultivariateNormal) -> MultivariateNormal:
        return MultivariateNormal(mean=rot @ m.mean() + shift, cov=rot @ m.cov @ rot.T)

    value = kl(q, p)
    assert value >= 0.0
    assert kl(move(q), move(p)) == pytest.approx(value, rel=1e-8, abs=1e-12)


@settings(max_examples=20, deadline=None)
@given(mvns())
def test_kl_of_identical_arguments_is_exactly_zero(q) -> None:
    assert kl(q, q) == 0.0
    assert kl(q, MultivariateNormal(mean=q.mean(), cov=q.cov)) == 0.0


def test_equal_covariances_share_one_factor_whatever_its_last_bits() -> None:
    # LAPACK's Cholesky of one matrix is not bit-reproducible everywhere: in a CI run the
    # factor of an equal covariance came out different in its last bits (KL = 4.9e-32, not
    # 0, for equal arguments). Equal covariances must give exactly zero whatever the factors.
    q = MultivariateNormal(mean=[0.5, -1.0, 2.0], cov=[[2.0, 0.3, 0.1], [0.3, 1.0, -0.2],
                                                       [0.1, -0.2, 0.7]])  # fmt: skip
    twin = MultivariateNormal(mean=q.mean(), cov=q.cov)
    nudged = twin.scale_tril.copy()
    nudged[1, 0] = np.nextafter(nudged[1, 0], np.inf)
    nudged[2, 2] = np.nextafter(nudged[2, 2], np.inf)
    nudged.setflags(write=False)
    object.__setattr__(twin, "_chol", nudged)
    assert kl(q, twin) == 0.0 and kl(twin, q) == 0.0
    assert not np.any(cholesky_difference(q, twin))
    x = q.sample(np.random.default_rng(0), 1000)
    assert np.array_equal(log_ratio_function(q, twin)(x), np.zeros(1000))
    assert np.array_equal(sample_log_ratio(q, twin, np.random.default_rng(0), 1000), np.zeros(1000))


def test_kl_stays_accurate_for_nearly_equal_covariances() -> None:
    # cov_b = (1 + eta) cov_a, same mean: KL = d/2 (log(1+eta) - eta/(1+eta))
    # = d/2 * sum_{k>=2} (-1)^k (k-1)/k eta^k (the series avoids the cancellation). The
    # entries are multiples of 1/64 and eta a power of 2, so (1 + eta) * cov is exact; what
    # remains is the rounding of the two Cholesky factors, ~eps relative, i.e. ~eps/eta
    # relative in KL ~ eta^2. A naive trace - d - log det would be off by ~eps/eta^2.
    cov = np.array([[1.0, 0.25, -0.125], [0.25, 2.0, 0.5], [-0.125, 0.5, 0.5]])
    eps = np.finfo(float).eps
    for eta in (2.0**-10, 2.0**-20, 2.0**-30):
        a = MultivariateNormal(mean=[0.0, 0.0, 0.0], cov=cov)
        b = MultivariateNormal(mean=[0.0, 0.0, 0.0], cov=(1.0 + eta) * cov)
        ref = 1.5 * math.fsum((-1) ** k * (k - 1) / k * eta**k for k in range(2, 12))
        assert kl(a, b) == pytest.approx(ref, rel=100 * eps / eta)


def test_kl_between_different_dimensions_is_an_error() -> None:
    a = MultivariateNormal(mean=[0.0], cov=[[1.0]])
    b = MultivariateNormal(mean=[0.0, 0.0], cov=np.eye(2))
    with pytest.raises(ValueError, match="different spaces"):
        kl(a, b)
    with pytest.raises(ValueError, match="different spaces"):
        kl(a, Normal(loc=0.0, scale=1.0))

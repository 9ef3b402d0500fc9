"""The Distribution base class, exercised through Normal: validation, round trip, sampling."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import klest
from klest.distributions import FAMILIES, Distribution, Normal, from_dict
from klest.distributions.base import Domain


def test_every_design_family_is_registered() -> None:
    expected = {
        "normal",
        "multivariate_normal",
        "laplace",
        "lognormal",
        "student_t",
        "exponential",
        "gamma",
        "beta",
        "uniform",
        "bernoulli",
        "poisson",
        "categorical",
        "gaussian_mixture",
    }
    assert expected <= set(FAMILIES)
    for family, cls in FAMILIES.items():
        assert cls.family == family
        assert getattr(klest, cls.__name__) is cls  # exported at top level
        for spec in cls.params:
            lo, hi = spec.typical
            assert lo < hi, (family, spec.name)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"loc": 0.0, "scale": -1.0}, "'scale' must be reals in (0, inf), got -1.0"),
        ({"loc": 0.0, "scale": 0.0}, "'scale'"),
        ({"loc": math.nan, "scale": 1.0}, "'loc' must be finite reals, got nan"),
        ({"loc": math.inf, "scale": 1.0}, "'loc'"),
        ({"loc": 0.0, "scale": math.nan}, "'scale'"),
        ({"loc": "abc", "scale": 1.0}, "'loc' must be numeric"),
        ({"loc": [0.0, 1.0], "scale": 1.0}, "'loc' must be a scalar"),
    ],
)
def test_invalid_parameters_name_parameter_and_value(kwargs, fragment) -> None:
    with pytest.raises(ValueError) as info:
        Normal(**kwargs)
    assert fragment in str(info.value)
    assert "Normal" in str(info.value)


def test_parameters_are_keyword_only_and_immutable() -> None:
    with pytest.raises(TypeError):
        Normal(0.0, 1.0)  # type: ignore[misc]
    q = Normal(loc=1.0, scale=2.0)
    with pytest.raises(AttributeError, match="immutable"):
        q.scale = 3.0  # type: ignore[misc]
    assert isinstance(q.loc, float) and q.scale == 2.0


def test_round_trip_repr_equality_hash_pickle() -> None:
    q = Normal(loc=0.5, scale=2.0)
    config = q.to_dict()
    assert config == {"family": "normal", "loc": 0.5, "scale": 2.0}
    assert from_dict(config) == q
    assert Distribution.from_dict(config) == q
    assert Normal.from_dict(config) == q
    assert repr(q) == "Normal(loc=0.5, scale=2.0)"
    assert q != Normal(loc=0.5, scale=2.5)
    assert hash(q) == hash(Normal(loc=0.5, scale=2.0))
    assert len({q, Normal(loc=0.5, scale=2.0)}) == 1
    assert pickle.loads(pickle.dumps(q)) == q
    assert (q == "normal") is False


def test_from_dict_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown distribution family 'gauss'.*normal"):
        from_dict({"family": "gauss", "loc": 0.0})
    with pytest.raises(ValueError, match="unknown parameter 'mu'"):
        from_dict({"family": "normal", "mu": 0.0, "scale": 1.0})
    with pytest.raises(ValueError, match="must be a table"):
        from_dict(["normal"])  # type: ignore[arg-type]


def test_sample_requires_a_generator() -> None:
    q = Normal(loc=0.0, scale=1.0)
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        q.sample(np.random.RandomState(0), 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"numpy\.random\.Generator"):
        q.sample(0, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative"):
        q.sample(np.random.default_rng(0), -1)


def test_sample_shapes_and_dtype() -> None:
    q = Normal(loc=0.0, scale=1.0)
    rng = np.random.default_rng(0)
    assert q.sample(rng).shape == ()
    assert q.sample(rng, 5).shape == (5,)
    assert q.sample(rng, (2, 3)).shape == (2, 3)
    assert q.sample(rng, 5).dtype == np.float64


def test_sampling_is_reproducible_from_the_generator_alone() -> None:
    q = Normal(loc=1.0, scale=3.0)
    a = q.sample(np.random.default_rng(42), 1000)
    b = q.sample(np.random.default_rng(42), 1000)
    assert np.array_equal(a, b)


def test_normal_sample_moments_within_standard_errors() -> None:
    # n = 200k draws; z = 5 per check (two checks): false-failure rate < 1.2e-6
    q = Normal(loc=-1.5, scale=2.5)
    x = q.sample(np.random.default_rng(7), 200_000)
    n, var = x.size, q.variance()
    assert abs(x.mean() - q.mean()) <= 5 * math.sqrt(var / n)
    se_var = math.sqrt(2 * var**2 / (n - 1))  # Normal: Var[s^2] = 2 sigma^4 / (n - 1)
    assert abs(x.var(ddof=1) - var) <= 5 * se_var


@settings(max_examples=50, deadline=None)
@given(st.floats(-3.0, 3.0), st.floats(0.2, 5.0), st.floats(-20, 20, allow_nan=False))
def test_normal_log_prob_matches_scipy(loc: float, scale: float, x: float) -> None:
    q = Normal(loc=loc, scale=scale)
    assert float(q.log_prob(x)) == pytest.approx(float(q._scipy().logpdf(x)), rel=1e-13, abs=1e-13)


def test_domain_descriptions() -> None:
    assert Domain(low=0.0).describe() == "reals in (0, inf)"
    assert (
        Domain(low=0.0, high=1.0, low_open=False, high_open=False).describe() == "reals in [0, 1]"
    )
    assert Domain(low=0.0, integer=True).describe() == "integers in (0, inf)"
    assert Domain(integer=True).violations(np.array([1.0, 1.5])).tolist() == [False, True]

"""Bernoulli, Poisson and Categorical: log mass, shapes, sampling, validation, round trip."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special, stats
from strategies import instances

import klest
from klest.distributions import Bernoulli, Categorical, Poisson, from_dict

# Sampling checks: each cell's frequency is compared with its probability within Z standard
# errors, SE = sqrt(p (1 - p) / n). Z = 5 has a two-sided false-failure rate of 5.7e-7 per
# cell; over the ~60 cells checked below the family-wide rate stays below 1e-4.
Z = 5.0
V = 262_144  # a large language-model vocabulary


def _probs_strategy(max_k: int = 8, zeros: bool = True) -> st.SearchStrategy[np.ndarray]:
    """Probability vectors from Categorical's typical probs range, optionally with zeros."""
    low, high = Categorical.params[0].typical

    @st.composite
    def draw(draw) -> np.ndarray:
        k = draw(st.integers(1, max_k))
        raw = np.array(draw(st.lists(st.floats(low, high), min_size=k, max_size=k)))
        if zeros and k > 1:
            mask = np.array(draw(st.lists(st.booleans(), min_size=k, max_size=k)))
            mask[draw(st.integers(0, k - 1))] = True  # keep at least one positive entry
            raw = np.where(mask, raw, 0.0)
        return raw / raw.sum()

    return draw()


# --------------------------------------------------------------------------------------
# log_prob against scipy.stats
# --------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(instances(Bernoulli))
def test_bernoulli_log_prob_matches_scipy(q: Bernoulli) -> None:
    x = np.array([0, 1])
    np.testing.assert_allclose(q.log_prob(x), stats.bernoulli(q.probs).logpmf(x), rtol=1e-14)
    assert np.all(q.log_prob([-1, 2, 0.5, np.nan]) == -np.inf)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_bernoulli_point_masses(p: float) -> None:
    q = Bernoulli(probs=p)
    assert q.log_prob(p) == 0.0 and q.log_prob(1.0 - p) == -np.inf
    assert np.all(q.sample(np.random.default_rng(0), 1000) == p)
    assert q.mean() == p and q.variance() == 0.0


@settings(max_examples=30, deadline=None)
@given(instances(Poisson))
def test_poisson_log_prob_matches_scipy(q: Poisson) -> None:
    k = np.arange(0, 200)
    np.testing.assert_allclose(q.log_prob(k), stats.poisson(q.rate).logpmf(k), rtol=1e-12)
    assert np.all(q.log_prob([-1, 0.5, 2.25, np.inf, np.nan]) == -np.inf)
    assert q.mean() == q.rate and q.variance() == q.rate
    np.testing.assert_allclose(
        q.quantile([0.1, 0.5, 0.9]), stats.poisson(q.rate).ppf([0.1, 0.5, 0.9])
    )


@settings(max_examples=30, deadline=None)
@given(_probs_strategy())
def test_categorical_log_prob_matches_scipy(p: np.ndarray) -> None:
    q = Categorical(probs=p)
    k = len(p)
    reference = stats.multinomial(1, p).logpmf(np.eye(k))
    np.testing.assert_allclose(q.log_prob(np.arange(k)), reference, rtol=1e-13)
    assert np.all(q.log_prob([-1, k, 0.5, np.nan]) == -np.inf)
    index = np.arange(k)
    mean = float(np.sum(index * p))
    assert q.mean() == pytest.approx(mean, rel=1e-13, abs=1e-15)
    assert q.variance() == pytest.approx(float(np.sum(p * (index - mean) ** 2)), abs=1e-13)


# --------------------------------------------------------------------------------------
# Batched Categorical
# --------------------------------------------------------------------------------------


def test_batched_categorical_shapes() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 3, 5))
    q = Categorical(logits=logits)
    assert q.batch_shape == (2, 3) and q.event_shape == () and q.num_categories == 5
    assert q.log_probs.shape == (2, 3, 5) and q.probs.shape == (2, 3, 5)
    assert q.log_prob(4).shape == (2, 3)
    x = np.arange(7).reshape(7, 1, 1)
    lp = q.log_prob(x)
    assert lp.shape == (7, 2, 3)
    np.testing.assert_allclose(lp[:5], np.moveaxis(special.log_softmax(logits, axis=-1), -1, 0))
    assert np.all(lp[5:] == -np.inf)
    per_row = np.array([[0, 1, 2], [3, 4, 0]])  # one index per batch entry
    np.testing.assert_allclose(
        q.log_prob(per_row), np.take_along_axis(q.log_probs, per_row[..., None], -1)[..., 0]
    )
    draws = q.sample(rng, (4, 6))
    assert draws.shape == (4, 6, 2, 3) and draws.dtype == np.int64
    assert draws.min() >= 0 and draws.max() <= 4
    assert q.sample(rng).shape == (2, 3)
    assert q.mean().shape == (2, 3) and q.variance().shape == (2, 3)
    np.testing.assert_allclose(q.mean(), np.sum(q.probs * np.arange(5), axis=-1))
    assert q.support == klest.Support(0.0, 4.0, discrete=True)
    with pytest.raises(ValueError, match=r"shape \(4,\) does not broadcast against batch_shape"):
        q.log_prob(np.arange(4))


def test_large_vocabulary() -> None:
    rng = np.random.default_rng(2)
    logits = 3.0 * rng.standard_normal(V)
    logits[:10] = -np.inf  # a few impossible tokens
    q = Categorical(logits=logits)
    reference = special.log_softmax(logits)
    np.testing.assert_array_equal(q.log_prob(np.arange(V)), reference)
    assert q.log_prob(V) == -np.inf
    draws = q.sample(rng, 100_000)
    assert draws.shape == (100_000,) and draws.dtype == np.int64
    assert draws.min() >= 10 and draws.max() < V
    from_probs = Categorical(probs=np.exp(reference))
    np.testing.assert_allclose(from_probs.log_probs[10:], reference[10:], rtol=1e-12)
    p = Categorical(logits=3.0 * rng.standard_normal(V))
    res = klest.kl_result(q, p, method="enumeration")
    assert res.method == "enumeration"
    assert abs(klest.kl(q, p) - res.value) <= res.abs_error + 1e-13 * res.value
    mean = float(np.sum(q.probs * np.arange(V)))
    assert q.mean() == pytest.approx(mean, rel=1e-12)


# --------------------------------------------------------------------------------------
# Sampling frequencies (fixed seeds, each cell within Z standard errors)
# --------------------------------------------------------------------------------------


def _check_frequencies(draws: np.ndarray, probs: np.ndarray) -> None:
    n = draws.size
    counts = np.bincount(draws.ravel(), minlength=len(probs))
    assert len(counts) == len(probs)
    se = np.sqrt(probs * (1.0 - probs) / n)
    freq = counts / n
    assert np.all(np.abs(freq - probs) <= Z * se), (freq, probs)


def test_categorical_sampling_frequencies() -> None:
    probs = np.array([0.05, 0.0, 0.2, 0.3, 0.0, 0.45])
    q = Categorical(probs=probs)
    _check_frequencies(q.sample(np.random.default_rng(10), 200_000), probs)


def test_batched_categorical_sampling_frequencies() -> None:
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.3, 0.3, 0.4]])
    draws = Categorical(probs=probs).sample(np.random.default_rng(11), 100_000)
    assert draws.shape == (100_000, 4)
    for row in range(4):
        _check_frequencies(draws[:, row], probs[row])


def test_bernoulli_and_poisson_sampling_frequencies() -> None:
    p = 0.3
    _check_frequencies(
        Bernoulli(probs=p).sample(np.random.default_rng(12), 200_000), np.array([1 - p, p])
    )
    rate = 4.0
    draws = Poisson(rate=rate).sample(np.random.default_rng(13), 200_000)
    assert draws.dtype == np.int64
    cells = 16
    probs = stats.poisson(rate).pmf(np.arange(cells))
    probs = np.append(probs, stats.poisson(rate).sf(cells - 1))  # last cell: k >= 16
    _check_frequencies(np.minimum(draws, cells), probs)


def test_sampling_is_reproducible_and_needs_a_generator() -> None:
    q = Categorical(probs=[0.2, 0.3, 0.5])
    a = q.sample(np.random.default_rng(5), 50)
    b = q.sample(np.random.default_rng(5), 50)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="Generator"):
        q.sample(5, 3)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# probs vs logits
# --------------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(_probs_strategy(), st.floats(-50.0, 50.0))
def test_logits_and_probs_are_equivalent(p: np.ndarray, shift: float) -> None:
    with np.errstate(divide="ignore"):
        logits = np.log(p) + shift  # any constant shift gives the same distribution
    from_probs, from_logits = Categorical(probs=p), Categorical(logits=logits)
    np.testing.assert_allclose(from_logits.probs, from_probs.probs, rtol=1e-12, atol=1e-300)
    x = np.arange(len(p))
    np.testing.assert_allclose(from_logits.log_prob(x), from_probs.log_prob(x), rtol=1e-12)
    assert klest.kl(from_probs, from_logits) == pytest.approx(0.0, abs=1e-14)
    assert from_probs.mean() == pytest.approx(from_logits.mean(), rel=1e-12, abs=1e-15)


def test_logits_and_probs_sample_identically() -> None:
    p = np.array([0.1, 0.25, 0.0, 0.65])
    with np.errstate(divide="ignore"):
        logits = np.log(p)
    a = Categorical(probs=p).sample(np.random.default_rng(3), 1000)
    b = Categorical(logits=logits).sample(np.random.default_rng(3), 1000)
    np.testing.assert_array_equal(a, b)


def test_probs_rows_are_renormalised() -> None:
    q = Categorical(probs=[0.5, 0.5 + 5e-7])
    np.testing.assert_allclose(q.probs.sum(), 1.0, rtol=1e-15)
    assert q.to_dict()["probs"] == [0.5, 0.5 + 5e-7]  # the config keeps what was given


# --------------------------------------------------------------------------------------
# Invalid parameters
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "fragments"),
    [
        (Bernoulli, {"probs": -0.1}, ["'probs'", "-0.1"]),
        (Bernoulli, {"probs": 1.5}, ["'probs'", "1.5"]),
        (Bernoulli, {"probs": math.nan}, ["'probs'", "nan"]),
        (Bernoulli, {"probs": [0.5, 0.5]}, ["'probs'", "scalar"]),
        (Bernoulli, {"probs": "half"}, ["'probs'", "numeric"]),
        (Poisson, {"rate": 0.0}, ["'rate'", "0.0"]),
        (Poisson, {"rate": -2.0}, ["'rate'", "-2.0"]),
        (Poisson, {"rate": math.inf}, ["'rate'", "inf"]),
        (Poisson, {"rate": math.nan}, ["'rate'", "nan"]),
        (Categorical, {}, ["'probs'", "'logits'", "neither"]),
        (Categorical, {"probs": [1.0], "logits": [0.0]}, ["'probs'", "'logits'", "both"]),
        (Categorical, {"probs": [0.5, -0.1, 0.6]}, ["'probs'", "-0.1", "(1,)"]),
        (Categorical, {"probs": [0.5, math.nan, 0.5]}, ["'probs'", "nan"]),
        (Categorical, {"probs": [0.5, math.inf]}, ["'probs'", "inf"]),
        (Categorical, {"probs": [0.5, 0.4]}, ["'probs'", "sum 0.9", "batch index ()"]),
        (
            Categorical,
            {"probs": [[0.5, 0.5], [0.5, 0.6]]},
            ["'probs'", "sum 1.1", "batch index (1,)"],
        ),
        (Categorical, {"probs": 1.0}, ["'probs'", "shape ()"]),
        (Categorical, {"probs": []}, ["'probs'", "shape (0,)"]),
        (Categorical, {"probs": ["a", "b"]}, ["'probs'", "numeric"]),
        (Categorical, {"logits": [0.0, math.nan]}, ["'logits'", "nan", "(1,)"]),
        (Categorical, {"logits": [0.0, math.inf]}, ["'logits'", "inf"]),
        (
            Categorical,
            {"logits": [[0.0, 1.0], [-math.inf, -math.inf]]},
            ["'logits'", "-inf", "batch index (1,)"],
        ),
        (Categorical, {"logits": 0.0}, ["'logits'", "shape ()"]),
    ],
)
def test_invalid_parameters_raise_value_error(cls, kwargs, fragments) -> None:
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    message = str(info.value)
    assert cls.__name__ in message
    for fragment in fragments:
        assert fragment in message, message


def test_constructors_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Bernoulli(0.5)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Categorical([0.5, 0.5])  # type: ignore[misc]


# --------------------------------------------------------------------------------------
# Config round trip, repr, equality, hash, immutability
# --------------------------------------------------------------------------------------

EXAMPLES = [
    Bernoulli(probs=0.25),
    Bernoulli(probs=1.0),
    Poisson(rate=3.5),
    Categorical(probs=[0.2, 0.3, 0.5]),
    Categorical(logits=[0.0, -np.inf, 2.0]),
    Categorical(probs=[[0.5, 0.5], [1.0, 0.0]]),
]


@pytest.mark.parametrize("q", EXAMPLES, ids=repr)
def test_round_trip_equality_hash_pickle(q) -> None:
    config = q.to_dict()
    assert config["family"] == q.family
    again = from_dict(config)
    assert again == q and hash(again) == hash(q) and type(again) is type(q)
    assert type(q).from_dict(config) == q
    assert pickle.loads(pickle.dumps(q)) == q
    x = np.arange(3).reshape(3, *([1] * len(q.batch_shape)))
    np.testing.assert_array_equal(again.log_prob(x), q.log_prob(x))


def test_to_dict_emits_the_given_parameterisation() -> None:
    assert Categorical(probs=[0.25, 0.75]).to_dict() == {
        "family": "categorical",
        "probs": [0.25, 0.75],
    }
    assert Categorical(logits=[0.0, 1.0]).to_dict() == {
        "family": "categorical",
        "logits": [0.0, 1.0],
    }
    assert Bernoulli(probs=0.25).to_dict() == {"family": "bernoulli", "probs": 0.25}
    assert Poisson(rate=2.0).to_dict() == {"family": "poisson", "rate": 2.0}
    with pytest.raises(ValueError, match="unknown parameter 'weights'"):
        from_dict({"family": "categorical", "weights": [1.0]})


def test_repr_and_inequality() -> None:
    assert repr(Bernoulli(probs=0.25)) == "Bernoulli(probs=0.25)"
    assert repr(Poisson(rate=2.0)) == "Poisson(rate=2.0)"
    assert repr(Categorical(probs=[0.25, 0.75])) == "Categorical(probs=[0.25, 0.75])"
    assert repr(Categorical(logits=np.zeros(V))) == f"Categorical(logits=array(shape=({V},)))"
    assert Categorical(probs=[0.25, 0.75]) != Categorical(probs=[0.75, 0.25])
    assert Bernoulli(probs=0.25) != Bernoulli(probs=0.5)
    assert Poisson(rate=1.0) != Bernoulli(probs=1.0)
    # Equality is on the parameters as given (what to_dict emits), not on the law.
    assert Categorical(probs=[0.5, 0.5]) != Categorical(logits=[0.0, 0.0])


def test_immutability() -> None:
    given_probs = np.array([0.2, 0.8])
    q = Categorical(probs=given_probs)
    given_probs[0] = 0.9  # the distribution keeps its own copy
    assert q.probs[0] == 0.2
    for name in ("probs", "logits", "log_probs", "anything"):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(q, name, 1.0)
    for array in (q.probs, q.log_probs, q.logits):
        with pytest.raises(ValueError):
            array[0] = 0.0
    with pytest.raises(AttributeError, match="immutable"):
        Bernoulli(probs=0.5).probs = 0.1  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        Poisson(rate=1.0).rate = 2.0  # type: ignore[misc]

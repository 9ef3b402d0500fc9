"""Closed-form KL between discrete families, cross-checked by enumeration and series."""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import instances

import klest
from klest.distributions import Bernoulli, Categorical, Poisson
from klest.divergence.closed_forms import discrete as forms
from klest.divergence.registry import _CLOSED_FORMS, kl, kl_result

EPS = float(np.finfo(float).eps)
DISCRETE = (Bernoulli, Categorical, Poisson)


@st.composite
def categoricals(draw, k: int | None = None, batch: tuple[int, ...] = ()) -> Categorical:
    """Categorical from the declared typical probs range, with some exact zeros."""
    low, high = Categorical.params[0].typical
    k = k if k is not None else draw(st.integers(1, 6))
    n = k * math.prod(batch)
    raw = np.array(draw(st.lists(st.floats(low, high), min_size=n, max_size=n)))
    raw = raw.reshape((*batch, k))
    zero = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n))).reshape(raw.shape)
    zero[..., draw(st.integers(0, k - 1))] = False  # at least one positive entry per row
    raw = np.where(zero & draw(st.booleans()), 0.0, raw)
    return Categorical(probs=raw / raw.sum(axis=-1, keepdims=True))


def _check_against_enumeration(a, b) -> None:
    """closed form == enumeration/series within the numerical bound, or both inf."""
    closed = np.asarray(kl(a, b, method="closed_form"))
    res = kl_result(a, b, method="enumeration")
    numeric = np.asarray(res.value)
    assert closed.shape == numeric.shape
    assert np.array_equal(np.isinf(closed), np.isinf(numeric)), (closed, numeric)
    finite = np.isfinite(closed)
    # The closed form sums at most K + 2 non-negative terms, each within a few ulp: its own
    # rounding is below 8 (K + 2) eps relative; the numerical bound is res.abs_error.
    k = max(getattr(d, "num_categories", 2) for d in (a, b))
    bound = np.broadcast_to(res.abs_error, finite.shape)[finite]
    closed, numeric = closed[finite], numeric[finite]
    assert np.all(np.abs(closed - numeric) <= bound + 8 * (k + 2) * EPS * closed)
    assert np.all(closed >= 0.0)


def test_every_registered_discrete_pair_is_covered() -> None:
    registered = {
        (ta, tb)
        for ta, tb in _CLOSED_FORMS
        if issubclass(ta, DISCRETE) and issubclass(tb, DISCRETE)
    }
    assert registered == {
        (Bernoulli, Bernoulli),
        (Categorical, Categorical),
        (Poisson, Poisson),
        (Bernoulli, Categorical),
        (Categorical, Bernoulli),
        (Bernoulli, Poisson),
        (Categorical, Poisson),
    }


@settings(max_examples=60, deadline=None)
@given(instances(Bernoulli), instances(Bernoulli))
def test_bernoulli_bernoulli(a, b) -> None:
    _check_against_enumeration(a, b)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6).flatmap(lambda k: st.tuples(categoricals(k), categoricals(k))))
def test_categorical_categorical(pair) -> None:
    _check_against_enumeration(*pair)


@settings(max_examples=40, deadline=None)
@given(instances(Poisson), instances(Poisson))
def test_poisson_poisson_series_bound_is_honoured(a, b) -> None:
    res = kl_result(a, b, method="enumeration")
    assert res.method == "series"
    closed = kl(a, b)
    # Closed form: two non-negative-term evaluations, rounding below 16 eps relative.
    assert abs(closed - res.value) <= res.abs_error + 16 * EPS * closed
    assert res.abs_error <= 1e-11 * max(closed, 1.0)


@settings(max_examples=40, deadline=None)
@given(instances(Bernoulli), categoricals(k=2))
def test_bernoulli_categorical_both_ways(a, b) -> None:
    _check_against_enumeration(a, b)
    _check_against_enumeration(b, a)
    as_categorical = Categorical(probs=[1.0 - a.probs, a.probs])
    assert kl(a, b) == pytest.approx(kl(as_categorical, b), rel=1e-13, abs=1e-15)


@settings(max_examples=40, deadline=None)
@given(instances(Bernoulli), instances(Poisson))
def test_bernoulli_poisson(a, b) -> None:
    _check_against_enumeration(a, b)


@settings(max_examples=40, deadline=None)
@given(categoricals(), instances(Poisson))
def test_categorical_poisson(a, b) -> None:
    _check_against_enumeration(a, b)


# --------------------------------------------------------------------------------------
# Zero probabilities, point masses, support
# --------------------------------------------------------------------------------------


def test_bernoulli_at_zero_and_one() -> None:
    assert kl(Bernoulli(probs=0.0), Bernoulli(probs=0.0)) == 0.0
    assert kl(Bernoulli(probs=1.0), Bernoulli(probs=1.0)) == 0.0
    assert kl(Bernoulli(probs=0.0), Bernoulli(probs=0.25)) == pytest.approx(-math.log(0.75))
    assert kl(Bernoulli(probs=1.0), Bernoulli(probs=0.25)) == pytest.approx(math.log(4.0))
    assert kl(Bernoulli(probs=0.5), Bernoulli(probs=0.0)) == math.inf
    assert kl(Bernoulli(probs=0.5), Bernoulli(probs=1.0)) == math.inf
    assert kl(Bernoulli(probs=1.0), Bernoulli(probs=0.0)) == math.inf
    for pa, pb in [(0.0, 0.0), (1.0, 0.25), (0.5, 0.0), (0.0, 1.0)]:
        _check_against_enumeration(Bernoulli(probs=pa), Bernoulli(probs=pb))


def test_categorical_zero_entries() -> None:
    a = Categorical(probs=[0.5, 0.5, 0.0])
    assert kl(a, Categorical(probs=[0.5, 0.0, 0.5])) == math.inf
    assert kl(a, Categorical(probs=[0.25, 0.25, 0.5])) == pytest.approx(math.log(2.0))
    assert kl(Categorical(probs=[0.25, 0.25, 0.5]), a) == math.inf
    res = kl_result(a, Categorical(probs=[0.5, 0.0, 0.5]), method="enumeration")
    assert res.value == math.inf and res.method == "enumeration"
    batch = Categorical(probs=[[0.5, 0.0, 0.5], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0]])
    value = kl(a, batch)
    assert value[0] == math.inf and value[2] == 0.0
    assert value[1] == pytest.approx(0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.3))
    _check_against_enumeration(a, batch)
    _check_against_enumeration(batch, a)


def test_support_mismatch_is_inf_by_support() -> None:
    for a, b in [
        (Poisson(rate=1.0), Bernoulli(probs=0.5)),
        (Categorical(probs=[0.2, 0.3, 0.5]), Bernoulli(probs=0.5)),
        (Poisson(rate=1.0), Categorical(probs=[0.5, 0.5])),
    ]:
        res = kl_result(a, b)
        assert res.value == math.inf and res.method == "support"


def test_different_numbers_of_categories() -> None:
    # a on {0, 1} inside b on {0, 1, 2}: the shorter vector is padded with zeros.
    a, b = Categorical(probs=[0.5, 0.5]), Categorical(probs=[0.25, 0.25, 0.5])
    assert kl(a, b) == pytest.approx(math.log(2.0), rel=1e-15)
    _check_against_enumeration(a, b)
    assert kl_result(b, a).method == "support"


def test_large_vocabulary_is_stable() -> None:
    rng = np.random.default_rng(7)
    logits = 4.0 * rng.standard_normal(262_144)
    a = Categorical(logits=logits)
    b = Categorical(logits=logits + 1e-7 * rng.standard_normal(logits.size))
    value = kl(a, b)
    # For a tiny logit perturbation d, KL ≈ Var_a(d) / 2 (second order).
    d = b.logits - a.logits
    approx = 0.5 * float(np.sum(a.probs * d**2) - np.sum(a.probs * d) ** 2)
    assert value == pytest.approx(approx, rel=1e-5)
    assert kl(a, a) == 0.0


# --------------------------------------------------------------------------------------
# Accuracy near zero against high-precision references
# --------------------------------------------------------------------------------------


def _decimal_kl(a_masses, b_masses) -> float:
    getcontext().prec = 60
    total = Decimal(0)
    for x, y in zip(a_masses, b_masses, strict=True):
        if x > 0:
            total += Decimal(x) * (Decimal(x) / Decimal(y)).ln()
    return float(total)


@pytest.mark.parametrize("delta", [1e-3, 1e-6, 1e-9])
def test_near_identical_pairs_keep_relative_accuracy(delta: float) -> None:
    p, q = 0.3, 0.3 + delta
    exact = _decimal_kl([1 - p, p], [1 - q, q])
    assert kl(Bernoulli(probs=p), Bernoulli(probs=q)) == pytest.approx(exact, rel=1e-6)
    la, lb = 5.0, 5.0 * (1 + delta)
    getcontext().prec = 60
    da, db = Decimal(la), Decimal(lb)
    exact_poisson = float(da * (da / db).ln() - da + db)
    assert kl(Poisson(rate=la), Poisson(rate=lb)) == pytest.approx(exact_poisson, rel=1e-12)
    pa, pb = np.array([0.2, 0.3, 0.5]), np.array([0.2 + delta, 0.3, 0.5 - delta])
    exact_cat = _decimal_kl(pa.tolist(), pb.tolist())
    assert kl(Categorical(probs=pa), Categorical(probs=pb)) == pytest.approx(exact_cat, rel=1e-6)


# --------------------------------------------------------------------------------------
# Batched shapes
# --------------------------------------------------------------------------------------


def test_batched_kl_shapes_and_entries() -> None:
    rng = np.random.default_rng(4)
    a = Categorical(logits=rng.normal(size=(3, 5)))
    b = Categorical(logits=rng.normal(size=(4, 3, 5)))
    c = Categorical(logits=rng.normal(size=5))
    assert np.shape(kl(a, b)) == (4, 3)
    assert np.shape(kl(c, b)) == (4, 3) and np.shape(kl(b, c)) == (4, 3)
    assert isinstance(kl(c, c), float)
    value = kl(a, b)
    for i in range(4):
        for j in range(3):
            row_a = Categorical(probs=a.probs[j])
            row_b = Categorical(probs=b.probs[i, j])
            assert value[i, j] == pytest.approx(kl(row_a, row_b), rel=1e-12)
    for x, y in [(a, b), (c, b), (b, c), (a, a)]:
        _check_against_enumeration(x, y)
    bern = Bernoulli(probs=0.3)
    two = Categorical(logits=rng.normal(size=(6, 2)))
    assert np.shape(kl(bern, two)) == (6,) and np.shape(kl(two, bern)) == (6,)
    _check_against_enumeration(bern, two)
    _check_against_enumeration(two, bern)
    assert np.shape(kl(two, Poisson(rate=1.5))) == (6,)
    _check_against_enumeration(two, Poisson(rate=1.5))


def test_top_level_names() -> None:
    assert klest.Bernoulli is Bernoulli and klest.Categorical is Categorical
    assert klest.Poisson is Poisson
    assert forms.kl_poisson_poisson(Poisson(rate=1.0), Poisson(rate=1.0)) == 0.0

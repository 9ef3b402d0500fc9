"""kl(): dispatch, method selection, provenance and every error path (Normal closed form)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import klest
from klest import NoKLMethodError, Normal, kl, kl_result, register_kl

normal_params = st.tuples(st.floats(-3.0, 3.0), st.floats(0.2, 5.0))


@settings(max_examples=60, deadline=None)
@given(normal_params, normal_params)
def test_normal_closed_form_matches_quadrature(a, b) -> None:
    qa, qb = Normal(loc=a[0], scale=a[1]), Normal(loc=b[0], scale=b[1])
    closed = kl_result(qa, qb, method="closed_form")
    numeric = kl_result(qa, qb, method="quadrature")
    assert closed.method == "closed_form" and numeric.method == "quadrature"
    assert abs(closed.value - numeric.value) <= numeric.abs_error + 1e-12 * closed.value


def test_known_values_and_direction() -> None:
    q, p = Normal(loc=0.0, scale=1.0), Normal(loc=0.0, scale=2.0)
    # KL(N(0,1)||N(0,4)) = log 2 + 1/8 - 1/2 ; KL(N(0,4)||N(0,1)) = -log 2 + 2 - 1/2
    assert kl(q, p) == pytest.approx(math.log(2) + 1 / 8 - 0.5, rel=1e-15)
    assert kl(p, q) == pytest.approx(-math.log(2) + 2 - 0.5, rel=1e-15)
    assert kl(q, q) == 0.0
    assert kl(Normal(loc=0.0, scale=1.0), Normal(loc=1e-9, scale=1.0)) == pytest.approx(5e-19)
    # nearly equal scales: no cancellation (u = 2 log(1 + 1e-9))
    near = kl(Normal(loc=0.0, scale=1.0), Normal(loc=0.0, scale=1.0 + 1e-9))
    assert near == pytest.approx(2e-18, rel=1e-6)


def test_auto_reports_the_method() -> None:
    res = kl_result(Normal(loc=0.0, scale=1.0), Normal(loc=1.0, scale=1.0))
    assert res.method == "closed_form" and res.value == 0.5 and res.abs_error == 0.0


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown KL method 'magic'"):
        kl(Normal(loc=0.0, scale=1.0), Normal(loc=0.0, scale=1.0), method="magic")


def test_impossible_method_names_both_types() -> None:
    q = Normal(loc=0.0, scale=1.0)
    with pytest.raises(NoKLMethodError, match=r"\(Normal, Normal\)"):
        kl(q, q, method="enumeration")


def test_non_distribution_arguments() -> None:
    with pytest.raises(TypeError, match="two klest distributions"):
        kl(Normal(loc=0.0, scale=1.0), 3.0)  # type: ignore[arg-type]


def test_different_spaces_raise() -> None:
    mvn = klest.MultivariateNormal(mean=[0.0, 0.0], cov=[[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="different spaces"):
        kl(Normal(loc=0.0, scale=1.0), mvn)


MIXED_SPACES = [
    (Normal(loc=0.0, scale=1.0), klest.Poisson(rate=1.0)),
    (Normal(loc=0.0, scale=1.0), klest.Categorical(probs=[0.5, 0.5])),
    (klest.Exponential(rate=1.0), klest.Bernoulli(probs=0.5)),
    (
        klest.MultivariateNormal(mean=[0.0, 0.0], cov=[[1.0, 0.0], [0.0, 1.0]]),
        Normal(loc=0.0, scale=1.0),
    ),
]


@pytest.mark.parametrize(("a", "b"), MIXED_SPACES, ids=lambda d: type(d).__name__)
def test_different_spaces_raise_both_ways_naming_types_and_spaces(a, b) -> None:
    # one rule: continuous vs discrete is a different space, like R^2 vs R (no inf)
    for x, y in ((a, b), (b, a)):
        for method in ("auto", "closed_form", "quadrature", "enumeration"):
            with pytest.raises(ValueError, match="different spaces") as err:
                kl_result(x, y, method=method)
            msg = str(err.value)
            assert "\n" not in msg
            assert type(x).__name__ in msg and type(y).__name__ in msg
            assert ("discrete" in msg) == (x.discrete or y.discrete)
        for name in ("k1", "k3", "rev_kl"):
            with pytest.raises(ValueError, match="different spaces"):
                klest.exact_moments(x, y, name)


def test_same_space_support_mismatch_is_still_inf() -> None:
    res = kl_result(klest.Poisson(rate=1.0), klest.Bernoulli(probs=0.5))
    assert res.value == math.inf and res.method == "support"
    res = kl_result(Normal(loc=0.0, scale=1.0), klest.Exponential(rate=1.0))
    assert res.value == math.inf and res.method == "support"
    m = klest.exact_moments(Normal(loc=0.0, scale=1.0), klest.Exponential(rate=1.0), "k1")
    assert m.mean == math.inf and m.truth == math.inf


def test_support_mismatch_is_infinite_for_every_method() -> None:
    wide, narrow = Normal(loc=0.0, scale=1.0), klest.Exponential(rate=1.0)
    for method in ("auto", "closed_form", "quadrature"):
        assert kl_result(wide, narrow, method=method).value == math.inf


def test_no_method_at_all_names_both_types() -> None:
    a = klest.MultivariateNormal(mean=[0.0, 0.0], cov=[[1.0, 0.0], [0.0, 1.0]])

    class Shifted(klest.MultivariateNormal):
        family = ""

    b = Shifted(mean=[0.0, 1.0], cov=[[1.0, 0.0], [0.0, 1.0]])
    # Shifted inherits the MVN closed form through the MRO ...
    assert kl_result(a, b).method == "closed_form"
    # ... but nothing integrates a 2-D pair numerically
    with pytest.raises(NoKLMethodError, match=r"\(MultivariateNormal, Shifted\)"):
        kl(a, b, method="quadrature")


def test_register_kl_prefers_the_most_specific_pair() -> None:
    class Special(Normal):
        family = ""

    @register_kl(Special, Normal)
    def _special(a, b):  # pragma: no cover - the value is what is tested
        return 42.0

    assert kl(Special(loc=0.0, scale=1.0), Normal(loc=0.0, scale=1.0)) == 42.0
    assert kl(Normal(loc=0.0, scale=1.0), Special(loc=0.0, scale=1.0)) == 0.0  # Normal-Normal


def test_register_kl_needs_classes() -> None:
    with pytest.raises(TypeError, match="two classes"):
        register_kl(Normal, "normal")  # type: ignore[arg-type]

"""The estimator registry: values against high-precision references, metadata, lookups."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from klest import _special, estimators
from klest.estimators import Estimator, Target, f_divergence

EXTREME_LOG_RATIOS = [-800.0, -50.0, -1.0, -1e-3, -1e-8, 0.0, 1e-8, 1e-3, 1.0, 50.0, 700.0]


def _reference(name: str, l: float) -> float:
    """The estimator in 60-digit arithmetic (mpmath), rounded to float64."""
    with mpmath.workdps(60):
        return _reference_at_current_precision(name, l)


def _reference_at_current_precision(name: str, l: float) -> float:
    L = mpmath.mpf(l)
    r = mpmath.exp(L)
    if name == "k1":
        value = -L
    elif name == "k2":
        value = L * L / 2
    elif name == "k3":
        value = (r - 1) - L
    elif name == "abs":
        value = abs(L)
    elif name == "low_var_kl":
        c = min(max(L, -20), 20)
        value = min(max(mpmath.exp(c) - 1 - c, -10), 10)
    elif name == "rev_kl":
        value = r * L - (r - 1)
    elif name == "pearson_chi2":
        value = (r - 1) ** 2
    elif name == "squared_hellinger":
        value = (mpmath.sqrt(r) - 1) ** 2 / 2
    elif name == "total_variation":
        value = abs(r - 1) / 2
    else:  # pragma: no cover - a new estimator needs a reference here
        raise AssertionError(f"no reference for {name}")
    return float(value)


@pytest.mark.parametrize("name", estimators.names())
@pytest.mark.parametrize("l", EXTREME_LOG_RATIOS)
def test_value_matches_high_precision_reference(name: str, l: float) -> None:
    got = float(estimators.get(name)(l))
    want = _reference(name, l)
    if math.isinf(want):
        assert got == want
    else:
        # a few ulp of the result, plus a tiny absolute floor for exact zeros
        assert got == pytest.approx(want, rel=8 * np.finfo(float).eps, abs=1e-300)


@pytest.mark.parametrize(
    "name", ["k3", "rev_kl", "pearson_chi2", "squared_hellinger", "total_variation"]
)
def test_overflow_gives_inf_never_nan(name: str) -> None:
    values = estimators.get(name)(np.array([710.0, 800.0, np.inf]))
    assert np.all(np.isposinf(values))


@pytest.mark.parametrize("name", estimators.names())
def test_no_nan_for_any_non_nan_input(name: str) -> None:
    l = np.array([-np.inf, -800.0, -1e-300, 0.0, 1e-300, 800.0, np.inf])
    values = estimators.get(name)(l)
    assert not np.isnan(values).any(), dict(zip(l, values, strict=True))
    assert values.dtype == np.float64


@pytest.mark.parametrize("name", estimators.names())
def test_nan_input_propagates(name: str) -> None:
    assert np.isnan(estimators.get(name)(np.array([np.nan]))).all()


@pytest.mark.parametrize("name", estimators.names())
def test_shapes_and_scalars(name: str) -> None:
    est = estimators.get(name)
    assert est(0.5).shape == ()
    assert est(np.zeros((3, 4))).shape == (3, 4)
    assert est(np.zeros(0)).shape == (0,)


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-700.0, max_value=700.0))
def test_nonnegative_metadata_holds(l: float) -> None:
    for name, est in estimators.registry().items():
        if est.nonnegative:
            assert est(l) >= 0.0, name


def test_k1_is_not_nonnegative() -> None:
    assert estimators.get("k1")(1.0) < 0 and not estimators.get("k1").nonnegative


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-700.0, max_value=700.0))
def test_log_abs_agrees_with_value(l: float) -> None:
    for name, est in estimators.registry().items():
        value = float(est(l))
        if value != 0.0 and math.isfinite(value):
            assert float(est.log_abs(l)) == pytest.approx(math.log(abs(value)), abs=1e-12), name


@pytest.mark.parametrize(
    "name", ["k3", "rev_kl", "pearson_chi2", "squared_hellinger", "total_variation"]
)
def test_log_abs_is_finite_where_value_overflows(name: str) -> None:
    l = np.array([720.0, 5000.0])
    log_abs = estimators.get(name).log_abs(l)
    assert np.all(np.isfinite(log_abs))
    rate = {"pearson_chi2": 2.0}.get(name, 1.0)
    # the leading behaviour is rate * l (plus a log of the polynomial prefactor)
    assert np.all(log_abs >= rate * l - 1.0) and np.all(log_abs <= rate * l + np.log(l) + 1.0)


def test_low_var_kl_clamps_like_verl() -> None:
    est = estimators.get("low_var_kl")
    k3 = estimators.get("k3")
    assert est(50.0) == 10.0  # input clamped to 20, exp(20) - 21 clamped to 10
    assert est(-50.0) == 10.0  # k3(-20) = 19 + e^-20, clamped to 10
    assert est(2.0) == pytest.approx(k3(2.0))  # below both clamps: plain k3
    assert est(3.0) == 10.0  # k3(3) = 16.09 > 10


def test_low_var_kl_kinks_are_the_correctly_rounded_roots() -> None:
    """Where k3 = e^l - 1 - l meets the output clamp 10: the float nearest each exact root."""
    _, lo, hi, _ = estimators.get("low_var_kl").kinks
    with mpmath.workdps(50):
        for got, start in ((lo, -11.0), (hi, 2.6)):
            exact = mpmath.findroot(lambda x: mpmath.expm1(x) - x - 10, start)
            assert got == float(exact), (got, exact)


def test_registry_names_and_aliases() -> None:
    names = estimators.names()
    for required in ["k1", "k2", "k3", "abs", "low_var_kl", "rev_kl"]:
        assert required in names
    assert {"pearson_chi2", "squared_hellinger", "total_variation"} <= set(names)
    assert estimators.get("kl") is estimators.get("k1")
    assert estimators.get("mse") is estimators.get("k2")
    assert "kl" not in names and "kl" in estimators.names(include_aliases=True)
    assert len(set(names)) == len(names)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(KeyError) as info:
        estimators.get("k7")
    message = str(info.value)
    assert "'k7'" in message
    for name in estimators.names(include_aliases=True):
        assert name in message


def test_get_rejects_non_strings() -> None:
    with pytest.raises(KeyError):
        estimators.get(3)  # type: ignore[arg-type]


def test_registering_a_taken_name_fails() -> None:
    clash = Estimator("k1", lambda l: l, Target("kl_qp", "KL(q||p)"), True, False, "", "")
    with pytest.raises(ValueError, match="already registered"):
        estimators.register(clash)
    alias_clash = Estimator(
        "new_name", lambda l: l, Target("kl_qp", "KL(q||p)"), True, False, "", "", aliases=("mse",)
    )
    with pytest.raises(ValueError, match="'mse'"):
        estimators.register(alias_clash)
    assert "new_name" not in estimators.names()


def test_metadata() -> None:
    reg = estimators.registry()
    assert reg["k1"].unbiased and reg["k3"].unbiased and reg["rev_kl"].unbiased
    assert not reg["k2"].unbiased and not reg["abs"].unbiased and not reg["low_var_kl"].unbiased
    assert reg["k1"].target.label == "KL(q||p)" and reg["rev_kl"].target.label == "KL(p||q)"
    assert reg["pearson_chi2"].target.kind == "f_divergence"
    for est in reg.values():
        info = est.info()
        assert info["name"] == est.name and info["source"]


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-30.0, max_value=30.0))
def test_f_divergence_factory_reproduces_k3_and_rev_kl(l: float) -> None:
    k3_f = f_divergence("k3_f", lambda x: -x, -1.0, target_label="KL(q||p)", formula="")
    rev_f = f_divergence("rev_f", lambda x: x * np.exp(x), 1.0, target_label="KL(p||q)", formula="")
    scale = 1e-14 * (1.0 + abs(l) + math.exp(l) * (1.0 + abs(l)))  # cancellation in f - f'(1)(r-1)
    assert float(k3_f(l)) == pytest.approx(float(estimators.get("k3")(l)), abs=scale)
    assert float(rev_f(l)) == pytest.approx(float(estimators.get("rev_kl")(l)), abs=scale)


@pytest.mark.parametrize("name", [n for n in estimators.names() if estimators.get(n).terms])
@pytest.mark.parametrize("l", [-5.0, -0.3, 0.7, 4.0])
def test_terms_representation_matches_function(name: str, l: float) -> None:
    est = estimators.get(name)
    via_terms = sum(c * l**j * math.exp(s * l) for c, j, s in est.terms)
    assert via_terms == pytest.approx(float(est(l)), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", estimators.names())
def test_evaluate_with_expm1_gives_the_same_values(name: str) -> None:
    # the engine passes klest's expm1(l), which it computes anyway for r - 1; the values must
    # not change
    rng = np.random.default_rng(0)
    l = np.concatenate(
        [rng.standard_normal(5000) * s for s in (1e-4, 1e-2, 1.0, 30.0)]
        + [np.array([0.0, -0.0, 0.01, -0.01, 709.0, 710.0, -800.0, np.inf, -np.inf, np.nan])]
    )
    est = estimators.get(name)
    expm1_l = _special.expm1(l)
    assert np.array_equal(est.evaluate(l, expm1_l), est(l), equal_nan=True)
    assert est.evaluate(l, expm1_l).dtype == np.float64


def test_k3_kernel_matches_the_subtract_then_series_reference() -> None:
    # expm1(l) - l (klest's expm1) where that keeps its digits (>= 5.02e-5), the series below
    l = np.random.default_rng(1).standard_normal(20_000) * np.geomspace(1e-6, 50, 20_000)
    direct = _special.expm1(l) - l
    acc = np.zeros_like(l)
    for n in range(9, 1, -1):
        acc = acc * l + 1.0 / math.factorial(n)
    want = np.where(direct >= 5.02e-5, direct, acc * l * l)
    assert np.array_equal(estimators.get("k3")(l), want)
    assert estimators.get("k3")(np.array([np.inf, -np.inf, np.nan])).tolist()[:2] == [
        np.inf,
        np.inf,
    ]


@pytest.mark.parametrize("name", ["k1", "k3", "low_var_kl", "rev_kl"])
def test_complex_log_ratios_are_an_error_not_a_dropped_imaginary_part(name) -> None:
    with pytest.raises(TypeError, match="log_ratio must be real numbers, got complex128"):
        estimators.get(name)(np.array([0.1 + 0.5j, 0.2]))

"""The log-ratio of two Gaussian mixtures: klest/native/csrc/mixture.c against its NumPy
definition (klest/native/mixture_kernel.py) bit for bit at every SIMD level, both against an
independent log-sum-exp, and the checks that keep bad arguments out of the C. Runs in both
modes (FALLBACK_TESTS): under KLEST_NATIVE=0 the seam is the NumPy definition itself.
"""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
from scipy import special

from klest import native
from klest.distributions.mixture import GaussianMixture, mixture_log_ratio
from klest.native import fallback, mixture_kernel
from klest.native.mixture_kernel import mixture_terms

compiled = fallback.COMPILED
# the compiled row kernels (loading them loads the library: not in the fallback mode)
row_bindings = None if compiled is None else importlib.import_module("klest.native.row_bindings")
needs_compiled = pytest.mark.skipif(
    compiled is None, reason="compares against the compiled library, which is not in use"
)
EXTREMES = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e200, -1e300, 5e-324, 1e20, -1e154, 1e155]


def random_terms(rng: np.random.Generator, k: int, zero_weight: bool = False) -> np.ndarray:
    weights = rng.random(k) + 0.1
    if zero_weight:
        weights[0] = 0.0  # left out of the terms
    weights /= weights.sum()
    return mixture_terms(weights, rng.normal(size=k) * 2.0, rng.random(k) * 2.0 + 0.2)


def draws(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=n) * 4.0
    x[: min(n, len(EXTREMES))] = EXTREMES[: min(n, len(EXTREMES))]
    return x


def numpy_definition(x: np.ndarray, q_terms: np.ndarray, p_terms: np.ndarray) -> np.ndarray:
    return mixture_kernel.mixture_log_ratio(
        x, q_terms, p_terms, np.empty_like(x), fallback.expm1, fallback.log
    )


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(
        np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))
    )


@needs_compiled
@pytest.mark.parametrize("n", [0, 1, 11, 1023, 1024, 1025, 5000])
def test_the_compiled_kernel_is_its_numpy_definition_at_every_simd_level(
    n: int, each_level: list[int]
) -> None:
    rng = np.random.default_rng(n)
    x = draws(rng, n)
    for kq, kp in itertools.product([1, 2, 3, 5], [1, 2, 4]):
        q_terms, p_terms = random_terms(rng, kq), random_terms(rng, kp, zero_weight=kp > 1)
        want = numpy_definition(x, q_terms, p_terms)
        for level in each_level:
            native.set_simd_level(level)
            got = row_bindings.mixture_log_ratio(x, q_terms, p_terms, np.empty_like(x))
            assert same_bits(got, want), (kq, kp, level)


@needs_compiled
def test_the_compiled_kernel_may_write_over_its_draws() -> None:
    rng = np.random.default_rng(2)
    x = draws(rng, 3000)
    q_terms, p_terms = random_terms(rng, 3), random_terms(rng, 2)
    want = numpy_definition(x, q_terms, p_terms)
    assert row_bindings.mixture_log_ratio(x, q_terms, p_terms, x) is x
    assert same_bits(x, want)


@pytest.mark.parametrize(("kq", "kp"), [(1, 1), (2, 2), (3, 2), (5, 4)])
def test_the_log_ratio_is_the_difference_of_two_independent_log_sum_exps(kq: int, kp: int) -> None:
    """Against scipy's logsumexp of the components' log-densities: within a few ulp of the
    larger log-density (the float64 rounding of both sides' terms, of size |t_j| + 1)."""
    rng = np.random.default_rng(10 * kq + kp)
    x = rng.normal(size=4000) * 3.0

    def mixture(k: int) -> tuple[GaussianMixture, np.ndarray]:
        w = rng.random(k) + 0.1
        m = GaussianMixture(
            weights=w / w.sum(), locs=rng.normal(size=k), scales=rng.random(k) + 0.3
        )
        pairs = zip(m.locs, m.scales, strict=True)
        logs = np.log(m.weights) + np.stack(
            [-0.5 * ((x - mu) / s) ** 2 - np.log(s) for mu, s in pairs], axis=1
        )
        return m, logs

    (q, q_logs), (p, p_logs) = mixture(kq), mixture(kp)
    want = special.logsumexp(p_logs, axis=1) - special.logsumexp(q_logs, axis=1)
    scale = np.maximum(np.abs(q_logs).max(axis=1), np.abs(p_logs).max(axis=1)) + 1.0
    error = np.abs(native.mixture_log_ratio(x, q.terms, p.terms, np.empty_like(x)) - want)
    assert (error <= 16 * np.finfo(float).eps * scale).all(), float((error / scale).max())
    assert np.array_equal(mixture_log_ratio(q, p, x), native.mixture_log_ratio(
        x, q.terms, p.terms, np.empty_like(x)))  # fmt: skip


def test_both_sides_minus_infinity_give_nan_and_one_side_an_infinity() -> None:
    q = GaussianMixture(weights=[0.5, 0.5], locs=[0.0, 1.0], scales=[1.0, 1.0])
    p = GaussianMixture(weights=[1.0], locs=[0.0], scales=[1e-3])
    x = np.array([np.inf, -np.inf, np.nan, 1e152])
    got = native.mixture_log_ratio(x, q.terms, p.terms, np.empty_like(x))
    assert np.isnan(got[:3]).all()
    assert got[3] == -np.inf  # p's square overflows to -inf, q's does not


def test_the_terms_are_read_only_and_leave_out_components_of_zero_weight() -> None:
    m = GaussianMixture(weights=[0.0, 0.25, 0.75], locs=[9.0, 0.0, 2.0], scales=[1.0, 1.0, 0.5])
    assert m.terms is m.terms
    assert m.terms.shape == (3, 2) and not m.terms.flags.writeable
    assert m.terms[1].tolist() == [0.0, 2.0]
    assert m.terms[2].tolist() == [np.sqrt(0.5), np.sqrt(0.5) / 0.5]


GOOD = mixture_terms(np.array([0.5, 0.5]), np.array([0.0, 1.0]), np.array([1.0, 2.0]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x": np.zeros((2, 2))}, "x must have shape"),
        ({"x": np.zeros(4, np.float32)}, "x must have dtype float64"),
        ({"x": [0.0, 1.0]}, "x must be a NumPy array"),
        ({"out": np.zeros(3)}, "out must have shape"),
        ({"out": np.zeros(8)[::2]}, "out must be C-contiguous"),
        ({"q_terms": GOOD[:2]}, "q_terms must have shape"),
        ({"p_terms": GOOD.T.copy()}, "p_terms must have shape"),
        ({"q_terms": np.zeros((3, 0))}, "q_terms must have at least one component"),
        ({"p_terms": GOOD.astype(np.float32)}, "p_terms must have dtype float64"),
        ({"q_terms": np.where(GOOD == 0.0, np.nan, GOOD)}, "q_terms must be finite"),
        ({"p_terms": GOOD * np.array([[1.0], [1.0], [-1.0]])}, "positive c"),
    ],
)
def test_bad_arguments_get_one_line_errors_in_both_modes(change: dict, message: str) -> None:
    args = {"x": np.zeros(4), "q_terms": GOOD, "p_terms": GOOD, "out": np.zeros(4)}
    args.update(change)
    out = args["out"]
    readonly = np.zeros(4)
    readonly.setflags(write=False)
    with pytest.raises((TypeError, ValueError), match=message) as raised:
        native.mixture_log_ratio(args["x"], args["q_terms"], args["p_terms"], out)
    assert "\n" not in str(raised.value)
    with pytest.raises(ValueError, match="out must be writable"):
        native.mixture_log_ratio(np.zeros(4), GOOD, GOOD, readonly)

"""The multivariate normal log-ratio from standardized rows: klest/native/csrc/mvn.c against
its NumPy definition (klest/native/mvn_kernel.py) bit for bit at every SIMD level, both
against the difference of two log-densities, the sampled path against the draws of
q.sample, and the checks that keep bad arguments out of the C. Runs in both modes
(FALLBACK_TESTS): under KLEST_NATIVE=0 the seam is the NumPy definition itself.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from klest import native
from klest.distributions.multivariate_normal import (
    MultivariateNormal,
    mvn_log_ratio,
    sample_mvn_log_ratio,
)
from klest.native import fallback, mvn_kernel

compiled = fallback.COMPILED
# the compiled row kernels (loading them loads the library: not in the fallback mode)
row_bindings = None if compiled is None else importlib.import_module("klest.native.row_bindings")
needs_compiled = pytest.mark.skipif(
    compiled is None, reason="compares against the compiled library, which is not in use"
)


def random_pair(rng: np.random.Generator, d: int) -> tuple[MultivariateNormal, MultivariateNormal]:
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    q = MultivariateNormal(mean=rng.standard_normal(d), cov=a @ a.T / d + np.eye(d))
    p = MultivariateNormal(mean=rng.standard_normal(d), cov=b @ b.T / d + 0.5 * np.eye(d))
    return q, p


@needs_compiled
@pytest.mark.parametrize("d", [1, 2, 3, 16, 17, 40])
def test_the_compiled_kernel_is_its_numpy_definition_at_every_simd_level(
    d: int, each_level: list[int]
) -> None:
    rng = np.random.default_rng(d)
    for rows in (0, 1, 15, 16, 17, 127, 128, 129, 1000):
        y = rng.standard_normal((rows, d)) * 3.0
        if rows > 3:
            y[1, 0], y[2, d - 1], y[3, 0] = np.inf, np.nan, 1e200
        g, delta = np.tril(rng.standard_normal((d, d))) * 0.3, rng.standard_normal(d)
        g[0, d - 1] = 7.0 if d > 1 else g[0, 0]  # above the diagonal: never read
        want = mvn_kernel.ratio_from_standardized(y, g, delta, 0.7, np.empty(rows))
        for level in each_level:
            native.set_simd_level(level)
            got = row_bindings.mvn_ratio_from_standardized(y, g, delta, 0.7, np.empty(rows))
            assert np.array_equal(got, want, equal_nan=True), (d, rows, level)


@pytest.mark.parametrize("d", [1, 2, 5, 16])
def test_the_log_ratio_is_the_difference_of_the_two_log_densities(d: int) -> None:
    """Within a few ulp of the larger log-density (both sides' rounding, of size |log p| + 1)."""
    rng = np.random.default_rng(100 + d)
    q, p = random_pair(rng, d)
    x = q.sample(rng, 3000)
    want = p.log_prob(x) - q.log_prob(x)
    scale = np.maximum(np.abs(p.log_prob(x)), np.abs(q.log_prob(x))) + 1.0
    error = np.abs(mvn_log_ratio(q, p, x) - want)
    assert (error <= 64 * d * np.finfo(float).eps * scale).all(), float((error / scale).max())


@pytest.mark.parametrize("size", [1, 2047, 2048, 2049, 10_000])
def test_the_sampled_path_is_the_ratio_at_the_draws_of_q_sample(size: int) -> None:
    rng = np.random.default_rng(7)
    q, p = random_pair(rng, 16)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    sampled = sample_mvn_log_ratio(q, p, a, size)
    at_draws = mvn_log_ratio(q, p, q.sample(b, size))
    assert a.bit_generator.state == b.bit_generator.state
    scale = np.abs(at_draws) + 1.0
    assert (np.abs(sampled - at_draws) <= 1e-12 * scale).all()
    again = sample_mvn_log_ratio(q, p, np.random.default_rng(3), size)
    assert np.array_equal(sampled, again)  # the same stream, the same bits
    other = sample_mvn_log_ratio(q, p, np.random.Generator(np.random.MT19937(3)), size)
    assert np.isfinite(other).all()  # a non-PCG64 generator goes through NumPy's sampler


GOOD = (np.zeros((4, 3)), np.eye(3), np.zeros(3), 0.5, np.zeros(4))


@pytest.mark.parametrize(
    ("index", "value", "message"),
    [
        (0, np.zeros(12), "y must have shape"),
        (0, np.zeros((4, 0)), "y must have at least one column"),
        (0, np.zeros((4, 3), np.float32), "y must have dtype float64"),
        (0, np.zeros((4, 6))[:, ::2], "y must be C-contiguous"),
        (1, np.eye(2), "difference must have shape"),
        (1, np.full((3, 3), np.inf), "difference must be finite"),
        (2, [0.0, 0.0, 0.0], "delta must be a NumPy array"),
        (2, np.array([0.0, np.nan, 0.0]), "delta must be finite"),
        (3, np.inf, "c must be finite"),
        (3, "x", "c must be a real"),
        (4, np.zeros(5), "out must have shape"),
    ],
)
def test_bad_arguments_get_one_line_errors_in_both_modes(index: int, value, message: str) -> None:
    args = list(GOOD)
    args[index] = value
    with pytest.raises((TypeError, ValueError), match=message) as raised:
        native.mvn_ratio_from_standardized(*args)
    assert "\n" not in str(raised.value)

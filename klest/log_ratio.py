"""log p(x) - log q(x) as a fast vectorised function of the draws, specialised by pair.

Gaussian pairs get the log-ratio as one polynomial in x instead of two log-densities and a
subtraction, and :func:`sample_log_ratio` draws it straight from the compiled normal sampler
(the engine's path: x is never written). Every specialisation is checked against the
generic ``p.log_prob(x) - q.log_prob(x)`` in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from klest.distributions.base import Distribution
from klest.distributions.categorical import Categorical
from klest.distributions.normal import Normal
from klest.fast_normal import quadratic_in_place, scaled_normal

__all__ = ["log_ratio_function", "sample_log_ratio"]

LogRatio = Callable[..., np.ndarray]


def _generic(q: Distribution, p: Distribution) -> LogRatio:
    def log_ratio(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            lr = np.asarray(p.log_prob(x), dtype=np.float64)
            lr = lr - q.log_prob(x)
        # a point outside both supports gives -inf - (-inf) = nan; q never draws it, but
        # make the convention explicit: no mass under q, ratio 0
        return lr

    return log_ratio


def _normal_normal_coefficients(q: Normal, p: Normal) -> tuple[float, float, float]:
    """(a, b, c) with log p(x) - log q(x) = a x^2 + b x + c."""
    a = 0.5 / q.scale**2 - 0.5 / p.scale**2
    b = p.loc / p.scale**2 - q.loc / q.scale**2
    c = 0.5 * (q.loc / q.scale) ** 2 - 0.5 * (p.loc / p.scale) ** 2 + math.log(q.scale / p.scale)
    return a, b, c


def _normal_normal(q: Normal, p: Normal) -> LogRatio:
    coefficients = _normal_normal_coefficients(q, p)

    def quadratic(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        # ((x * a) + b) * x + c, or x * b + c when a == 0 (equal scales)
        return quadratic_in_place(x if overwrite else np.array(x, dtype=np.float64), *coefficients)

    return quadratic


def sample_log_ratio(
    q: Distribution, p: Distribution, rng: np.random.Generator, size: int
) -> np.ndarray:
    """log p(x) - log q(x) for ``size`` draws x ~ q from ``rng``.

    Bit for bit ``log_ratio_function(q, p)(q.sample(rng, size))``; for a pair of Normals the
    draws and the log-ratio come out of one compiled loop, and x is never written.

    >>> q, p = Normal(loc=0.0, scale=1.0), Normal(loc=1.0, scale=2.0)
    >>> fused = sample_log_ratio(q, p, np.random.default_rng(3), 10_000)
    >>> plain = log_ratio_function(q, p)(q.sample(np.random.default_rng(3), 10_000))
    >>> bool(np.array_equal(fused, plain))
    True
    """
    if type(q) is Normal and type(p) is Normal:
        coefficients = _normal_normal_coefficients(q, p)
        return scaled_normal(rng, size, q.scale, q.loc, quadratic=coefficients)
    if _unbatched_categoricals(q, p):
        # log p[i] - log q[i], looked up by the inverse CDF's index in the same pass
        return q.inverse_cdf(rng.random(size), table=_categorical_log_ratios(q, p))
    return log_ratio_function(q, p)(q.sample(rng, size), overwrite=True)


def _unbatched_categoricals(q: Distribution, p: Distribution) -> bool:
    return (
        type(q) is Categorical
        and type(p) is Categorical
        and not q.batch_shape
        and not p.batch_shape
        and q.num_categories == p.num_categories
    )


def _categorical_log_ratios(q: Categorical, p: Categorical) -> np.ndarray:
    """log p[i] - log q[i] for every category, as p.log_prob(i) - q.log_prob(i) gives it."""
    with np.errstate(invalid="ignore"):
        return p.log_probs - q.log_probs


def log_ratio_function(q: Distribution, p: Distribution) -> LogRatio:
    """A function x -> log p(x) - log q(x) for draws x of q.

    ``f(x, overwrite=True)`` may reuse the memory of ``x`` (the engine's draws are scratch).

    >>> import numpy as np
    >>> f = log_ratio_function(Normal(loc=0.0, scale=1.0), Normal(loc=1.0, scale=1.0))
    >>> f(np.array([0.0, 0.5, 1.0]))
    array([-0.5,  0. ,  0.5])
    """
    if type(q) is Normal and type(p) is Normal:
        return _normal_normal(q, p)
    return _generic(q, p)

"""log p(x) - log q(x) as a fast vectorised function of the draws, specialised by pair.

The engine spends most of its time outside the random number generator here and in the
estimators, so Gaussian pairs get the log-ratio as one fused polynomial in x instead of two
log-densities and a subtraction. Every specialisation is checked against the generic
``p.log_prob(x) - q.log_prob(x)`` in the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from klest.distributions.base import Distribution
from klest.distributions.normal import Normal

__all__ = ["log_ratio_function"]

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


def _normal_normal(q: Normal, p: Normal) -> LogRatio:
    # log p - log q = a x^2 + b x + c
    a = 0.5 / q.scale**2 - 0.5 / p.scale**2
    b = p.loc / p.scale**2 - q.loc / q.scale**2
    c = 0.5 * (q.loc / q.scale) ** 2 - 0.5 * (p.loc / p.scale) ** 2 + math.log(q.scale / p.scale)
    if a == 0.0:

        def affine(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
            out = np.multiply(x, b, out=x if overwrite else None)
            out += c
            return out

        return affine

    def quadratic(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        out = x * a
        out += b
        out *= x
        out += c
        return out

    return quadratic


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

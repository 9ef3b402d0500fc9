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
from klest.native import quadratic_in_place, scaled_normal

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


def _standardized_coefficients(q: Normal, p: Normal) -> tuple[float, float, float]:
    """(a, b, c) with log p(x) - log q(x) = a z^2 + b z + c for x = q.loc + q.scale z.

    With d = (q.loc - p.loc)/p.scale and rho = q.scale/p.scale (from logarithms: neither
    ratio is formed where it would overflow): a = (1 - rho)(1 + rho)/2, b = -d rho and
    c = log rho - d^2/2. Terms beyond the float64 range are +-inf, their correct rounding.
    """
    log_rho = math.log(q.scale) - math.log(p.scale)
    rho = math.exp(log_rho) if log_rho < 709.0 else math.inf
    diff = q.loc - p.loc  # inf only when |q.loc - p.loc| exceeds the float64 range
    d = diff / p.scale if math.isfinite(diff) else q.loc / p.scale - p.loc / p.scale
    a = 0.5 * (1.0 - rho) * (1.0 + rho)
    b = -d * rho if d else 0.0
    return a, b, log_rho - 0.5 * d * d


#: use the x-polynomial (the compiled fused path) only while its terms exceed the
#: standardized polynomial's by less than this factor (digits lost to cancellation)
_CONDITIONING = 1e3


def _x_polynomial_is_safe(q: Normal, p: Normal) -> bool:
    """True when a x^2 + b x + c is finite and loses at most ~3 digits to cancellation.

    It is not for locations far from 0 in units of the scales (q = N(1e20, 1): c = 5e39
    cancels against b x) nor for scale ratios whose squares overflow (q.scale = 1e-160).
    Typical parameters always take the x-polynomial, so their streams are unchanged.
    """
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        try:
            a, b, c = _normal_normal_coefficients(q, p)
        except (OverflowError, ZeroDivisionError, ValueError):
            return False
        if not (math.isfinite(a) and math.isfinite(b) and math.isfinite(c)):
            return False
        za, zb, zc = _standardized_coefficients(q, p)
        x = abs(q.loc) + 10.0 * q.scale
        size = abs(a) * x * x + abs(b) * x + abs(c)
        standard = abs(za) * 100.0 + abs(zb) * 10.0 + abs(zc)
        return math.isfinite(size) and size <= _CONDITIONING * (standard + 1.0)


def _normal_normal(q: Normal, p: Normal) -> LogRatio:
    if not _x_polynomial_is_safe(q, p):
        coefficients = _standardized_coefficients(q, p)
        loc, scale = q.loc, q.scale

        def standardized(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64)
            with np.errstate(over="ignore", invalid="ignore"):
                diff = x - loc
                z = np.where(np.isfinite(diff), diff / scale, x / scale - loc / scale)
            return _quadratic_no_warnings(z, *coefficients)

        return standardized
    coefficients = _normal_normal_coefficients(q, p)

    def quadratic(x: np.ndarray, overwrite: bool = False) -> np.ndarray:
        # ((x * a) + b) * x + c, or x * b + c when a == 0 (equal scales)
        return quadratic_in_place(x if overwrite else np.array(x, dtype=np.float64), *coefficients)

    return quadratic


def _quadratic_no_warnings(z: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """quadratic_in_place where a coefficient may be +-inf (z = 0 then gives c, not NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = quadratic_in_place(np.array(z, dtype=np.float64), a, b, c)
    if not (math.isfinite(a) and math.isfinite(b)):
        out = np.where(z == 0.0, c, out)
    return out


def sample_log_ratio(
    q: Distribution, p: Distribution, rng: np.random.Generator, size: int
) -> np.ndarray:
    """log p(x) - log q(x) for ``size`` draws x ~ q from ``rng``.

    Bit for bit ``log_ratio_function(q, p)(q.sample(rng, size))``; for a pair of Normals the
    draws and the log-ratio come out of one compiled loop, and x is never written. (At
    extreme Normal parameters, where the polynomial in x would overflow or cancel, the
    log-ratio is the polynomial in the standard normal draw z, x = loc + scale z: the same
    law, computed without forming x.)

    >>> q, p = Normal(loc=0.0, scale=1.0), Normal(loc=1.0, scale=2.0)
    >>> fused = sample_log_ratio(q, p, np.random.default_rng(3), 10_000)
    >>> plain = log_ratio_function(q, p)(q.sample(np.random.default_rng(3), 10_000))
    >>> bool(np.array_equal(fused, plain))
    True
    """
    if type(q) is Normal and type(p) is Normal:
        if not _x_polynomial_is_safe(q, p):
            # extreme parameters: the log-ratio as a polynomial in the standard normal draw
            return _quadratic_no_warnings(
                scaled_normal(rng, size, 1.0, 0.0), *_standardized_coefficients(q, p)
            )
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

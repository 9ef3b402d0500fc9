"""Scalar building blocks that survive the extremes of each family's declared domain.

A parameter may be any positive float (1e-300, 1e300) or any finite real: the closed forms
are written with these helpers so that no intermediate overflows, underflows to a zero that
is then divided by, or leaves the domain of a logarithm. Python floats raise on overflow in
``math.exp`` and ``**`` and on a division by zero, and NumPy scalars warn: the helpers use
neither. A true value beyond the float64 range comes back as ``inf`` (its correct rounding).

>>> log_ratio(1e-17, 1.0) == math.log(1e-17)
True
>>> expm1_minus(800.0), times_expm1_minus(1e-300, 710.0) > 0.0
(inf, True)
>>> scaled_difference(1e300, -1e300, 1e300)
2.0
"""

from __future__ import annotations

import math

from scipy import special

__all__ = [
    "entropy_gamma_shape",
    "exp",
    "expm1_minus",
    "lgamma_bregman",
    "log_ratio",
    "scaled_difference",
    "times_expm1_minus",
]

_LOG_MAX = math.log(1.7976931348623157e308)  # exp(x) overflows float64 above this
_HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)


def exp(x: float) -> float:
    """e^x, ``inf`` instead of an OverflowError above the float64 range."""
    return math.exp(x) if x < _LOG_MAX else math.inf


def log_ratio(x: float, y: float) -> float:
    """log(x / y) for positive x, y: log1p of the exact difference when they are close.

    x / y itself may overflow or underflow (1e-300 / 1e300); log x - log y never does.
    """
    if x <= 2.0 * y and y <= 2.0 * x:
        return math.log1p((x - y) / y)  # x - y is exact here (Sterbenz)
    return math.log(x) - math.log(y)


def expm1_minus(u: float) -> float:
    """e^u - 1 - u (>= 0): its Taylor series near 0, ``inf`` where e^u overflows."""
    if abs(u) >= 0.5:
        if u >= _LOG_MAX:
            return math.inf
        return math.expm1(u) - u
    term, total = u, 0.0
    for n in range(2, 20):
        term *= u / n
        total += term
    return total


def times_expm1_minus(c: float, u: float) -> float:
    """c·(e^u - 1 - u) for c > 0, finite whenever the product is (c tiny, e^u huge)."""
    if u < 0.5 * _LOG_MAX:
        return c * expm1_minus(u)
    return exp(math.log(c) + u) - c * (1.0 + u)


def scaled_difference(x: float, y: float, s: float) -> float:
    """(x - y) / s for finite x, y and s > 0, without overflow of x - y (1e300 - -1e300)."""
    d = x - y
    if math.isfinite(d):
        return d / s
    return x / s - y / s  # |x - y| > 1.8e308: the result is at least that over s


def entropy_gamma_shape(a: float) -> float:
    """a + lnΓ(a) + (1 - a)ψ(a): the entropy of Gamma(a, 1), accurate for huge a.

    The direct sum cancels terms of size a·log a down to ½ log a; above 1e6 the asymptotic
    expansion ½ log(2πe a) - 1/(3a) - 1/(12a²) is exact to rounding.
    """
    if a > 1e6:
        return 0.5 * math.log(a) + _HALF_LOG_2PI_E - 1.0 / (3.0 * a) - 1.0 / (12.0 * a * a)
    return a + float(special.gammaln(a)) + (1.0 - a) * float(special.digamma(a))


def lgamma_bregman(a: float, b: float) -> float:
    """lnΓ(b) - lnΓ(a) - (b - a)ψ(a) (>= 0) for a, b > 0, accurate at both extremes.

    Below a = 1/2 the recurrence lnΓ(x) = lnΓ(x + 1) - log x splits off the Bregman
    divergence of -log, (b/a - 1) - log(b/a) = expm1_minus(log(b/a)), whose huge terms for
    tiny a are then summed without overflow; the rest is a Taylor series in b - a when b is
    near a, else the direct difference (whose terms do not overflow for a >= 1/2).
    """
    return _bregman(a, b - a, b)


def _bregman(a: float, delta: float, b: float) -> float:
    """lgamma_bregman(a, b) with b = a + delta; delta is kept exact through the recurrence."""
    if delta == 0.0:
        return 0.0
    if a < 0.5:
        return _bregman(a + 1.0, delta, b + 1.0) + expm1_minus(log_ratio(b, a))
    if abs(delta) > 0.1 * a:
        value = float(special.gammaln(b)) - float(special.gammaln(a))
        return max(value - delta * float(special.digamma(a)), 0.0)
    total, power = 0.0, delta
    for n in range(2, 18):  # terms shrink like (delta / a)^n / n
        power *= delta / n
        total += float(special.polygamma(n - 1, a)) * power
    return total

"""The scalar and elementwise special functions that klest writes once, each with one cut-off.

``expm1_minus`` and ``log_ratio`` take Python floats (and return one) or arrays (and return
a float64 ndarray); ``log_abs_expm1`` takes arrays, the others floats. A
parameter may be any positive float (1e-300, 1e300) or any finite real: no intermediate
overflows, underflows to a zero that is then divided by, or leaves the domain of a
logarithm, and nothing raises or warns. A true value beyond the float64 range comes back as
``inf`` (its correct rounding).
Bottom layer: imports nothing of klest. tests/test_special.py checks each against mpmath.

>>> expm1_minus(1e-8), expm1_minus(800.0), times_expm1_minus(1e-300, 710.0) > 0.0
(5.000000016666667e-17, inf, True)
>>> log_ratio(1e-17, 1.0) == math.log(1e-17)
True
>>> scaled_difference(1e300, -1e300, 1e300)
2.0
>>> as_float_or_array(np.float64(2.5)), as_float_or_array([1.0, 2.0])
(2.5, array([1., 2.]))
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special

__all__ = [
    "EXPM1_MINUS_SERIES",
    "EXPM1_MINUS_SWITCH",
    "as_float_or_array",
    "entropy_gamma_shape",
    "exp",
    "expm1_minus",
    "lgamma_bregman",
    "log_abs_expm1",
    "log_ratio",
    "scaled_difference",
    "times_expm1_minus",
]

_LOG_MAX = math.log(1.7976931348623157e308)  # exp(x) overflows float64 above this
_HALF_LOG_2PI_E = 0.5 * math.log(2.0 * math.pi * math.e)

#: e^u - 1 - u is taken as expm1(u) - u where that is >= this (|u| >~ 0.01), else from
#: EXPM1_MINUS_SERIES. The one cut-off: klest/native/csrc/kernels.c's k3 (the compiled hot
#: path of the same function) uses this constant and series; tests/test_special.py checks
#: that the two agree bit for bit.
EXPM1_MINUS_SWITCH = 5.02e-5
#: 1/n! for n = 9 down to 2, the Horner coefficients of sum_{n=2..9} u^n / n! (for |u| <~ 0.01
#: the terms past n = 9 are below 1e-22 of the sum)
EXPM1_MINUS_SERIES = tuple(1.0 / math.factorial(n) for n in range(9, 1, -1))


def _is_scalar(x: Any) -> bool:
    return not isinstance(x, np.ndarray) and np.ndim(x) == 0


def as_float_or_array(x: Any) -> float | np.ndarray:
    """``x`` as a Python float when it is 0-d (clean reprs), else as a float64 ndarray."""
    arr = np.asarray(x, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else arr


def exp(x: float) -> float:
    """e^x, ``inf`` instead of an OverflowError above the float64 range."""
    return math.exp(x) if x < _LOG_MAX else math.inf


def expm1_minus(u: Any) -> Any:
    """e^u - 1 - u (>= 0; ``inf`` where e^u overflows, NaN for NaN).

    expm1(u) - u where that is >= :data:`EXPM1_MINUS_SWITCH`, else the Taylor series
    sum_{n=2..9} u^n / n! by Horner (both computed, one selected: NaN and u = +inf, where
    expm1(u) - u is NaN, take the series). Within 2 ulp where the series is taken; above,
    expm1(u)'s own rounding error passes into the difference: up to ~130 ulp (1.5e-14
    relative) just above |u| = 0.01, a few ulp for |u| > 0.5. A float goes through NumPy's
    expm1 too (libm's ``math.expm1`` differs from it in the last bit now and then), so a
    float, an array and the compiled k3 give the same bits.
    """
    if _is_scalar(u):
        u = float(u)
        direct = math.inf if u >= _LOG_MAX else float(np.expm1(u)) - u
        if direct >= EXPM1_MINUS_SWITCH:
            return direct
        series = EXPM1_MINUS_SERIES[0]
        for c in EXPM1_MINUS_SERIES[1:]:
            series = series * u + c
        return series * u * u
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        direct = np.expm1(u) - u
        series = np.full_like(u, EXPM1_MINUS_SERIES[0])
        for c in EXPM1_MINUS_SERIES[1:]:
            series = series * u + c
        series = series * u * u
        return np.where(direct >= EXPM1_MINUS_SWITCH, direct, series)


def times_expm1_minus(c: float, u: float) -> float:
    """c·(e^u - 1 - u) for c > 0, finite whenever the product is (c tiny, e^u huge)."""
    if u < 0.5 * _LOG_MAX:
        return c * expm1_minus(u)
    return exp(math.log(c) + u) - c * (1.0 + u)


def log_abs_expm1(l: Any) -> np.ndarray:
    """log|e^l - 1| elementwise, without overflow: l + log(1 - e^{-l}) for l > 0, log(1 - e^l)
    else (``-inf`` at l = 0)."""
    l = np.asarray(l, dtype=np.float64)
    pos = l > 0
    with np.errstate(divide="ignore"):
        return np.where(
            pos,
            l + np.log(-np.expm1(-np.where(pos, l, 1.0))),
            np.log(-np.expm1(np.where(pos, -1.0, l))),
        )


def log_ratio(x: Any, y: Any) -> Any:
    """log(x / y) for positive x, y: log1p of the exact difference when they are close.

    x / y itself may overflow or underflow (1e-300 / 1e300); log x - log y never does.
    """
    if _is_scalar(x) and _is_scalar(y):
        if x <= 2.0 * y and y <= 2.0 * x:
            return math.log1p((x - y) / y)  # x - y is exact here (Sterbenz)
        return math.log(x) - math.log(y)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        close = (x <= 2.0 * y) & (y <= 2.0 * x)
        return np.where(close, np.log1p((x - y) / y), np.log(x) - np.log(y))


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

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
import struct
from typing import Any

import numpy as np
from scipy import special

__all__ = [
    "EXPM1_MINUS_SERIES",
    "EXPM1_MINUS_SWITCH",
    "as_float_or_array",
    "entropy_gamma_shape",
    "exp",
    "expm1",
    "expm1_minus",
    "lgamma_bregman",
    "log",
    "log1p",
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


# klest's expm1: fdlibm's constants (FreeBSD msun s_expm1.c), as exact hex doubles
_LN2_HI = float.fromhex("0x1.62e42feep-1")  # k * _LN2_HI is exact for |k| < 2^21
_LN2_LO = float.fromhex("0x1.a39ef35793c76p-33")
_INV_LN2 = float.fromhex("0x1.71547652b82fep+0")
_EXPM1_OVERFLOW = float.fromhex("0x1.62e42fefa39efp+9")  # 709.78...: e^x - 1 > DBL_MAX above
_EXPM1_MINUS_ONE = float.fromhex("-0x1.3687ap+5")  # -38.8 (56 ln2): e^x - 1 rounds to -1
#: 1/(m + 3)! for m = 0..11: S(r) = (expm1(r) - r - r^2/2) / r^3 (truncation < 2.3e-18
#: relative for |r| <= ln2/2)
_EXPM1_S = tuple(1.0 / math.factorial(m + 3) for m in range(12))
_SHIFT = float.fromhex("0x1.8p52")  # v + _SHIFT - _SHIFT rounds |v| < 2^51 to an integer
_SHIFT_BITS = int(np.float64(_SHIFT).view(np.int64))


def _reduced_expm1(x: Any, kd: Any) -> tuple[Any, Any]:
    """The reduced argument r = x - kd ln2 (ln2 in two constants) and fdlibm's term
    ek = r (e - c) - c - r^2/2 (e from the series S(r), c the reduction's rounding error), for
    a float and an array alike: the IEEE operations, in order, of kernels.c's expm1_value."""
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11 = _EXPM1_S
    hi = x - kd * _LN2_HI
    lo = kd * _LN2_LO
    r = hi - lo
    c = (hi - r) - lo
    r2 = r * r
    r4 = r2 * r2
    hxs = 0.5 * r2
    q0 = (c0 + c1 * r) + (c2 + c3 * r) * r2
    q1 = (c4 + c5 * r) + (c6 + c7 * r) * r2
    q2 = (c8 + c9 * r) + (c10 + c11 * r) * r2
    e = -r2 * (q0 + (q1 + q2 * r4) * r4)
    return r, (r * (e - c) - c) - hxs


def expm1(x: Any) -> np.ndarray:
    """e^x - 1 elementwise (a float64 ndarray of x's shape), klest's own: within 1 ulp over
    the whole float64 range (tests/test_kernel_math.py, against mpmath); x itself for
    |x| < 2^-54 (subnormals and -0.0 kept), ``inf`` above 709.78..., -1 at and below -38.8
    (56 ln2), NaN for NaN; no warnings.

    fdlibm's method (FreeBSD msun s_expm1.c), branch-free and without a division: see
    ``expm1_value`` in klest/native/csrc/kernels.c, whose IEEE operations this repeats in the
    same order, so that the compiled kernel (``klest.native.expm1``, at every SIMD level)
    and this function give the same bits. NumPy's own ``np.expm1`` depends on its build
    (it is vectorised only with AVX-512) and differs from both in the last bit now and then.

    >>> expm1([0.0, -0.0, 1e-300, 1.0, -800.0, 710.0]).tolist()
    [0.0, -0.0, 1e-300, 1.718281828459045, -1.0, inf]
    """
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape
    x = x.reshape(-1)
    with np.errstate(all="ignore"):  # outside [-38.8, 709.78] lanes hold inf or NaN, discarded
        shifted = x * _INV_LN2 + _SHIFT
        kd = shifted - _SHIFT
        k = shifted.view(np.int64) - _SHIFT_BITS
        r, ek = _reduced_expm1(x, kd)
        half_scale = ((k + 1022) << 52).view(np.float64)  # 2^(k - 1)
        inverse = ((1023 - k) << 52).view(np.float64)  # 2^-k
        v = np.where(kd >= 20.0, 1.0, 1.0 - inverse)
        s = np.where(kd >= 20.0, inverse, 0.0)
        s = np.where(kd > 56.0, 0.0, s)
        u_low = np.where(r < -0.25, r + 0.5, r)
        v_low = np.where(r < -0.25, 0.0, v)
        u = np.where(kd == 1.0, u_low, r)
        v = np.where(kd == 1.0, v_low, v)
        y = ((u - (ek + s)) + v) * 2.0 * half_scale
        y = np.where(np.abs(x) < 2.0**-54, x, y)
        y = np.where(x > _EXPM1_OVERFLOW, np.inf, y)
        y = np.where(x <= _EXPM1_MINUS_ONE, -1.0, y)
        y = np.where(np.isnan(x), x, y)
    return y.reshape(shape)


# klest's log and log1p: fdlibm's polynomial (FreeBSD msun e_log.c), musl's branch-free sum
_LG = tuple(
    float.fromhex(h)
    for h in (
        "0x1.5555555555593p-1", "0x1.999999997fa04p-2", "0x1.2492494229359p-2",
        "0x1.c71c51d8e78afp-3", "0x1.7466496cb03dep-3", "0x1.39a09d078c69fp-3",
        "0x1.2f112df3e5244p-3",
    )
)  # fmt: skip
_LOG_CARRY = np.uint64(0x00095F6200000000)  # (0x3ff00000 - 0x3fe6a09e) << 32
_LOG_BASE = np.uint64(0x3FE6A09E00000000)  # sqrt(2)/2's high word << 32
_LOG_MANTISSA = np.uint64(0x000FFFFFFFFFFFFF)
_LOG_TWO52 = np.uint64(0x4330000000000000)  # 2^52
_LOG_K_BIAS = float.fromhex("0x1.00000000003ffp52")  # 2^52 + 1023
_DBL_MAX = float.fromhex("0x1.fffffffffffffp1023")
_LOG1P_SMALL = (float.fromhex("-0x1.2bec5p-2"), float.fromhex("0x1.a827ap-2"))


def _log_reduce(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f, k) with x = 2^k (1 + f), 1 + f in [sqrt(2)/2, sqrt(2)), for positive normal x:
    kernels.c's log_reduce (k as a double from the exponent bits, no conversion)."""
    t = x.view(np.uint64) + _LOG_CARRY
    m = ((t & _LOG_MANTISSA) + _LOG_BASE).view(np.float64)
    e = ((t >> np.uint64(52)) | _LOG_TWO52).view(np.float64)
    return m - 1.0, e - _LOG_K_BIAS


def _log_poly(f: np.ndarray, dk: np.ndarray, c: Any) -> np.ndarray:
    """log(1 + f) + k ln2 + c: kernels.c's KLEST_LOG_POLY of s = f / (2 + f), operation for
    operation."""
    lg1, lg2, lg3, lg4, lg5, lg6, lg7 = _LG
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    r = z * (lg1 + w * (lg3 + w * (lg5 + w * lg7))) + w * (lg2 + w * (lg4 + w * lg6))
    return (((s * (hfsq + r) + (dk * _LN2_LO + c)) - hfsq) + f) + dk * _LN2_HI


def log(x: Any) -> np.ndarray:
    """The natural logarithm elementwise (a float64 ndarray of x's shape), klest's own:
    within 1 ulp over the whole float64 range, subnormals included (tests/test_kernel_log.py,
    against mpmath); -inf at +-0, NaN below 0, inf at inf, NaN for NaN; no warnings.

    fdlibm's method (e_log.c) without branches: ``log_value`` in klest/native/csrc/kernels.c,
    whose IEEE operations this repeats in the same order, so that ``klest.native.log`` (at
    every SIMD level) and this function give the same bits; NumPy's ``np.log`` depends on
    its build and differs from both in the last bit now and then.

    >>> log([1.0, 0.0, -1.0, 5e-324, np.inf]).tolist()
    [0.0, -inf, nan, -744.4400719213812, inf]
    """
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape
    x = x.reshape(-1)
    with np.errstate(all="ignore"):  # lanes outside (0, inf) hold garbage, discarded
        subnormal = x < 2.0**-1022
        f, dk = _log_reduce(np.where(subnormal, x * 2.0**54, x))
        dk = dk - np.where(subnormal, 54.0, 0.0)
        y = _log_poly(f, dk, 0.0)
        y = np.where(x > _DBL_MAX, x, y)
        y = np.where(x == 0.0, -np.inf, y)
        y = np.where(x < 0.0, np.nan, y)
        y = np.where(np.isnan(x), x, y)
    return y.reshape(shape)


def log1p(x: Any) -> np.ndarray:
    """log(1 + x) elementwise, klest's own (fdlibm's s_log1p.c without branches, the bits of
    kernels.c's ``log1p_value`` and ``klest.native.log1p``): within 1 ulp (mpmath); x itself
    for |x| < 2^-53 (subnormals and -0.0 kept), -inf at -1, NaN below, inf at inf, NaN for NaN.

    >>> log1p([0.0, -0.0, 1e-300, 1.0, -1.0, -2.0]).tolist()
    [0.0, -0.0, 1e-300, 0.6931471805599453, -inf, nan]
    """
    x = np.asarray(x, dtype=np.float64)
    shape = x.shape
    x = x.reshape(-1)
    with np.errstate(all="ignore"):
        u = 1.0 + x
        f_u, dk_u = _log_reduce(u)
        c = np.where(dk_u >= 2.0, 1.0 - (u - x), x - (u - 1.0)) / u
        c = np.where(dk_u >= 54.0, 0.0, c)
        small = (x < _LOG1P_SMALL[1]) & (x > _LOG1P_SMALL[0])  # f = x, k = 0, c = 0
        f = np.where(small, x, f_u)
        dk = np.where(small, 0.0, dk_u)
        c = np.where(small, 0.0, c)
        y = _log_poly(f, dk, c)
        y = np.where(np.abs(x) < 2.0**-53, x, y)
        y = np.where(x > _DBL_MAX, x, y)
        y = np.where(x == -1.0, -np.inf, y)
        y = np.where(x < -1.0, np.nan, y)
        y = np.where(np.isnan(x), x, y)
    return y.reshape(shape)


_PACK = struct.Struct("<d")
_UNPACK_INT = struct.Struct("<q")


def _power_of_two(exponent_bits: int) -> float:
    """The float64 whose bits are ``exponent_bits << 52`` (2^(exponent_bits - 1023))."""
    return _PACK.unpack(_UNPACK_INT.pack(exponent_bits << 52))[0]


def _expm1_float(x: float) -> float:
    """:func:`expm1` of one Python float: the same IEEE operations in the same order (Python
    floats are float64), branches where the array version selects; the same bits
    (tests/test_kernel_math.py), ~20x faster than a one-element array."""
    if x != x:
        return x
    if x > _EXPM1_OVERFLOW:
        return math.inf
    if x <= _EXPM1_MINUS_ONE:
        return -1.0
    if abs(x) < 2.0**-54:
        return x
    shifted = x * _INV_LN2 + _SHIFT
    kd = shifted - _SHIFT
    k = _UNPACK_INT.unpack(_PACK.pack(shifted))[0] - _SHIFT_BITS
    r, ek = _reduced_expm1(x, kd)
    half_scale = _power_of_two(k + 1022)  # 2^(k - 1)
    if kd > 56.0:
        v, s = 1.0, 0.0
    elif kd >= 20.0:
        v, s = 1.0, _power_of_two(1023 - k)  # 2^-k
    else:
        v, s = 1.0 - _power_of_two(1023 - k), 0.0
    u = r
    if kd == 1.0 and r < -0.25:
        u, v = r + 0.5, 0.0
    return ((u - (ek + s)) + v) * 2.0 * half_scale


def exp(x: float) -> float:
    """e^x, ``inf`` instead of an OverflowError above the float64 range."""
    return math.exp(x) if x < _LOG_MAX else math.inf


def expm1_minus(u: Any) -> Any:
    """e^u - 1 - u (>= 0; ``inf`` where e^u overflows, NaN for NaN).

    expm1(u) - u where that is >= :data:`EXPM1_MINUS_SWITCH`, else the Taylor series
    sum_{n=2..9} u^n / n! by Horner (both computed, one selected: NaN and u = +inf, where
    expm1(u) - u is NaN, take the series). Within 2 ulp where the series is taken; above,
    expm1(u)'s own rounding error (< 1 ulp of expm1(u)) passes into the difference: up to
    ~100 ulp (1e-14 relative) just above |u| = 0.01, a few ulp for |u| > 0.5. expm1 is
    klest's own :func:`expm1` (for a float too: libm's ``math.expm1`` and NumPy's differ from
    it in the last bit now and then), so a float, an array, the compiled k3 and the engine's
    k3 series give the same bits.
    """
    if _is_scalar(u):
        u = float(u)
        direct = math.inf if u >= _LOG_MAX else _expm1_float(u) - u
        if direct >= EXPM1_MINUS_SWITCH:
            return direct
        series = EXPM1_MINUS_SERIES[0]
        for c in EXPM1_MINUS_SERIES[1:]:
            series = series * u + c
        return series * u * u
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        direct = expm1(u) - u
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

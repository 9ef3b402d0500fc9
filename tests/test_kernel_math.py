"""klest's own expm1 (klest/native/csrc/kernels.c ``expm1_value``, klest._special.expm1):
within 1 ulp of mpmath (60 digits) over the whole float64 range, and the same bits compiled
(at every SIMD level) and in NumPy, so that the engine's r - 1 and k3 do not depend on the
CPU or on NumPy's build.

The error is in ulp of the exact value (2^(floor(log2 |e^x - 1|) - 52), at least 2^-1074).
The grid: every boundary of the reduction's k (x at and one ulp either side of (j + 1/2) ln2
and j ln2 / 2, from -38.9 to 709.8), uniform draws over [-38.9, 709.79], normal draws (the
engine's log-ratios), k = 52..57 (where 1 - 2^-k stops being exact), |x| < 1e-8, subnormals,
the overflow edge and -38.8 (where e^x - 1 rounds to -1). Measured on this grid with 538,000
points (seeds 11 and 12): max 0.81 ulp (x = 39.17, k = 57); 283,000 points without the
k = 52..57 band (seed 7): 0.79 ulp (x = 0.358, k = 1). A variant that formed 1 - 2^-k for
every k (1.2 ulp at x = 37.1) fails the test.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
from ulp_error import ulp_errors as ulp_errors_of

from klest import _special
from klest import native as _native

DPS = 60
DBL_MAX = 1.7976931348623157e308
OVERFLOW = float.fromhex("0x1.62e42fefa39efp+9")  # 709.78...: the largest x with a finite result


def grid(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ln2 = math.log(2.0)
    j = np.arange(-112, 2050)
    edges = np.concatenate([(j + 0.5) * ln2, j * ln2 / 2])
    edges = edges[(edges > -38.9) & (edges < 709.8)]
    signs = rng.choice([-1.0, 1.0], n)
    return np.concatenate(
        [
            edges[::5], np.nextafter(edges[::5], np.inf), np.nextafter(edges[::5], -np.inf),
            rng.uniform(-38.9, 709.79, n), rng.standard_normal(n), 5.0 * rng.standard_normal(n),
            signs * 10.0 ** rng.uniform(-20.0, -8.0, n),  # |x| < 1e-8
            signs[: n // 4] * 10.0 ** rng.uniform(-323.5, -308.0, n // 4),  # subnormals
            rng.uniform(-0.36, 0.36, n), rng.uniform(36.0, 40.0, n),  # k = 52..57: 1 - 2^-k
            rng.uniform(709.0, OVERFLOW, n // 4),
            rng.uniform(-40.0, -36.0, n // 4),
            [0.25, -0.25, 0.5 * ln2, -0.5 * ln2, 1.5 * ln2, -1.5 * ln2, OVERFLOW, 2.0**-54,
             -(2.0**-54), np.nextafter(2.0**-54, 0.0), 2.0**-1074, -(2.0**-1074), -38.8, -745.0],
        ]
    )  # fmt: skip


def ulp_errors(x: np.ndarray, got: np.ndarray) -> np.ndarray:
    return ulp_errors_of(mpmath.expm1, x, got)


def test_expm1_is_within_one_ulp_against_mpmath() -> None:
    """<= 1 ulp everywhere on the grid (about 17,000 points; 0.79 ulp measured)."""
    x = grid(1, 2500)
    x = x[(x <= OVERFLOW) & (x > -38.8)]  # beyond: exact inf and -1, tested below
    error = ulp_errors(x, _special.expm1(x))
    worst = int(np.argmax(error))
    assert error[worst] <= 1.0, (float(x[worst]), float(error[worst]))


def test_expm1_special_values() -> None:
    tiny = np.array([0.0, -0.0, 5e-324, -5e-324, 2.2e-308, -1e-300, 2.0**-55, -(2.0**-55)])
    assert _special.expm1(tiny).tobytes() == tiny.tobytes()  # x itself, -0.0 kept
    past = np.nextafter(OVERFLOW, np.inf)
    x = np.array([np.inf, -np.inf, np.nan, past, 1e300, -1e300, -745.0, -38.9, OVERFLOW])
    got = _special.expm1(x)
    assert got[:8].tolist()[3:] == [np.inf, np.inf, -1.0, -1.0, -1.0]
    assert got[0] == np.inf and got[1] == -1.0 and np.isnan(got[2])
    assert DBL_MAX * (1 - 1e-13) < got[8] <= DBL_MAX  # the last finite value
    with mpmath.workdps(DPS):  # the correctly rounded result past the edge is inf
        assert mpmath.expm1(mpmath.mpf(float(past))) > mpmath.mpf(DBL_MAX)
    with np.errstate(all="raise"):  # no warning for any input
        _special.expm1(np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, 710.0]))


def test_expm1_scalar_and_shape() -> None:
    assert _special.expm1(1.0).shape == () and float(_special.expm1(1.0)) == 1.718281828459045
    x = np.arange(6.0).reshape(2, 3)
    assert _special.expm1(x).tobytes() == _special.expm1(x.ravel()).tobytes()


def test_compiled_expm1_gives_the_same_bits_at_every_simd_level() -> None:
    """The kernel loops (main vector loop and scalar tail: odd lengths) against NumPy."""
    rng = np.random.default_rng(2)
    x = np.concatenate(
        [
            grid(3, 20_000), rng.uniform(-800.0, 800.0, 50_000),
            10.0 ** rng.uniform(-320.0, 308.0, 50_000) * rng.choice([-1.0, 1.0], 50_000),
            [np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0],
        ]
    )  # fmt: skip
    want = _special.expm1(x)
    try:
        for level in range(_native.best_simd_level() + 1):
            _native.set_simd_level(level)
            for size in (x.size, 1, 7, 13):
                got = _native.expm1(x[:size], np.empty(size))
                assert got.tobytes() == want[:size].tobytes(), (_native.SIMD_LEVELS[level], size)
            inplace = x.copy()
            assert _native.expm1(inplace, inplace) is inplace
            assert inplace.tobytes() == want.tobytes()
    finally:
        _native.set_simd_level(_native.best_simd_level())


def test_compiled_expm1_checks_its_arguments() -> None:
    x = np.zeros(4)
    with pytest.raises(ValueError, match="out must have shape"):
        _native.expm1(x, np.empty(3))
    with pytest.raises(TypeError, match="dtype float64"):
        _native.expm1(x.astype(np.float32), np.empty(4))
    with pytest.raises(ValueError, match="C-contiguous"):
        _native.expm1(np.zeros(8)[::2], np.empty(4))
    readonly = np.empty(4)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        _native.expm1(x, readonly)
    assert _native.expm1(np.zeros((2, 2)), np.empty((2, 2))).shape == (2, 2)


def test_the_float_path_gives_the_array_paths_bits() -> None:
    """_special's one-float expm1 (what the exact and closed-form code calls) and its array
    expm1 are the same function: the same bits on the grid and the special values."""
    x = np.concatenate(
        [grid(3, 20_000), [0.0, -0.0, 5e-324, -5e-324, np.nan, np.inf, -np.inf, 2.0**-54]]
    )
    x = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])
    floats = np.array([_special._expm1_float(float(v)) for v in x])
    assert floats.tobytes() == _special.expm1(x).tobytes()

"""The pure-NumPy fallback of klest's compiled kernels, and the choice between the two.

``KLEST_NATIVE=0`` selects this fallback; ``KLEST_NATIVE=1`` requires the compiled library
(``klest.native._kernels``, loaded by :mod:`klest.native.bindings`; an ImportError with a
one-line reason if it cannot be loaded); unset, the compiled library is used when it loads,
else this fallback (:mod:`klest.native` warns once, at import). :data:`BACKEND` says which
one is in use ("compiled" or "numpy"); no module outside ``klest.native`` needs to know.

This module holds what both the fallback's kernels need: the constants of the compiled
library (the same values), the argument checks (the same code as in bindings.py:
``tests/test_native_fallback.py`` checks that the copies are identical, source for source;
they live twice only because bindings.py loads the library as it is imported), klest's
expm1, k3 and the inverse CDF. The sampler is :mod:`klest.native.fallback_sampler`, the
moment accumulator :mod:`klest.native.fallback_kernels`. Every kernel here gives the bits of
the compiled one; the accumulator's statistics agree to within its stated bound. The SIMD
level functions exist so that callers need not know the backend: the fallback has one
variant, level 0 ("generic"), which gives the bits that every compiled level gives.

>>> BACKEND in ("compiled", "numpy")
True
>>> k3 = np.empty(2)
>>> k3_from_expm1(_special.expm1(np.array([1e-3, 2.0])), np.array([1e-3, 2.0]), k3)
>>> k3.tolist() == [_special.expm1_minus(1e-3), float(_special.expm1(2.0)) - 2.0]
True
"""

from __future__ import annotations

import operator
import os
from types import ModuleType

import numpy as np

from klest import _special
from klest.native.checks import (
    COMPUTED_SERIES,
    FIELDS,
    SIMD_LEVELS,
    check_inverse_cdf_args,
    require,
)

__all__ = [
    "BACKEND",
    "COMPILED",
    "COMPUTED_SERIES",
    "FIELDS",
    "SIMD_LEVELS",
    "TILE",
    "FallbackWarning",
    "best_simd_level",
    "expm1",
    "inverse_cdf",
    "k3_from_expm1",
    "log",
    "log1p",
    "set_simd_level",
]


class FallbackWarning(UserWarning):
    """klest runs on its pure-NumPy engine because the compiled kernels did not load."""


_CHOICE = os.environ.get("KLEST_NATIVE", "").strip()
if _CHOICE not in ("", "0", "1"):
    raise ImportError(
        f"KLEST_NATIVE must be 0 (the NumPy fallback), 1 (the compiled kernels) or unset, "
        f"got {_CHOICE!r}"
    )
#: the compiled bindings (:mod:`klest.native.bindings`), or None when the fallback is in use
COMPILED: ModuleType | None = None
#: why the fallback is in use ("" when it is not)
REASON = "KLEST_NATIVE=0"
if _CHOICE != "0":
    try:
        from klest.native import bindings as COMPILED
    except (ImportError, OSError) as error:  # missing, or present but not loadable
        if _CHOICE == "1":
            raise ImportError(
                f"KLEST_NATIVE=1, but klest's compiled kernels cannot be loaded: {error}"
            ) from None
        REASON = str(error).splitlines()[0] if str(error) else type(error).__name__
    else:
        REASON = ""
#: "compiled" or "numpy": which implementation of the kernels klest.native exports
BACKEND = "numpy" if COMPILED is None else "compiled"
#: the fallback was chosen without being asked for (KLEST_NATIVE unset): warn once
WARN = COMPILED is None and _CHOICE == ""

#: draws per tile of the accumulator (kernels.c's KLEST_TILE)
TILE = 1024


def best_simd_level() -> int:
    """0: the fallback's one variant (it gives the bits that every compiled level gives)."""
    return 0


def set_simd_level(level: int) -> None:
    """Accept level 0 (the fallback's one variant); any other level is a ValueError."""
    level = operator.index(level)
    if level != 0:
        raise ValueError(
            f"SIMD level {level} is not supported here (best: 0; klest runs on its NumPy fallback)"
        )


def inverse_cdf(
    cdf: np.ndarray, guide: np.ndarray, u: np.ndarray, table: np.ndarray | None = None
) -> np.ndarray:
    """bindings.inverse_cdf in NumPy: the same int64 categories (or table values), the same
    errors, for any guide valid in shape. The kernel's scan from guide[b] returns the first
    i >= guide[b] with cdf[i] > u, i.e. max(guide[b], searchsorted(cdf, u, "right")); its
    binary search (buckets of more than 16 entries) returns that clipped to guide[b + 1].

    >>> cdf, guide = np.array([0.25, 1.0]), np.array([0, 1, 1], dtype=np.int32)
    >>> inverse_cdf(cdf, guide, np.array([0.0, 0.25, 0.9])).tolist()
    [0, 1, 1]
    """
    check_inverse_cdf_args(cdf, guide, u, table)
    flat = u.reshape(-1)
    bad = ~((flat >= 0.0) & (flat < 1.0))
    if bad.any():
        first_bad = int(np.argmax(bad))
        where = np.unravel_index(first_bad, u.shape)
        shown = int(where[0]) if len(where) == 1 else tuple(int(i) for i in where)
        raise ValueError(f"u must lie in [0, 1), got {float(flat[first_bad])!r} at index {shown}")
    g = guide.size - 1
    bucket = (flat * float(g)).astype(np.int64)
    lo, hi = guide[bucket].astype(np.int64), guide[bucket + 1].astype(np.int64)
    index = np.maximum(lo, np.searchsorted(cdf, flat, side="right"))
    index = np.where(hi - lo > 16, np.minimum(index, hi), index)
    out = index if table is None else table[index]
    return out.reshape(u.shape)


_K3_SERIES = _special.EXPM1_MINUS_SERIES  # 1/9!, ..., 1/2!: kernels.c's c9 ... c2
_K3_SWITCH = _special.EXPM1_MINUS_SWITCH  # kernels.c's KLEST_K3_SWITCH


def k3_values(expm1_l: np.ndarray, l: np.ndarray) -> np.ndarray:
    """kernels.c's k3_value elementwise: expm1(l) - l where that is >= the switch, else the
    Horner series (((c9 l + c8) l + ...) l + c2) l l; the same operations, the same bits."""
    with np.errstate(all="ignore"):
        direct = expm1_l - l
        series = _K3_SERIES[0] * l + _K3_SERIES[1]
        for c in _K3_SERIES[2:]:
            series = series * l + c
        series = series * l * l
        return np.where(direct >= _K3_SWITCH, direct, series)


def k3_from_expm1(expm1_l: np.ndarray, l: np.ndarray, out: np.ndarray) -> None:
    """bindings.k3_from_expm1 in NumPy: ``out[:] = exp(l) - 1 - l`` (the same bits)."""
    require("l", l, np.float64, (None,))
    require("expm1_l", expm1_l, np.float64, l.shape)
    require("out", out, np.float64, l.shape, writable=True)
    out[:] = k3_values(expm1_l, l)


def expm1(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """bindings.expm1 in NumPy: ``out[...] = e^x - 1`` by :func:`klest._special.expm1` (the
    compiled kernel's algorithm, operation for operation: the same bits); returns ``out``.

    >>> expm1(np.array([0.0, 1.0]), np.empty(2)).tolist()
    [0.0, 1.718281828459045]
    """
    require("x", x, np.float64)
    require("out", out, np.float64, x.shape, writable=True)
    out[...] = _special.expm1(x)
    return out


def log(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """bindings.log in NumPy: ``out[...] = log(x)`` by :func:`klest._special.log` (the same
    bits); returns ``out``."""
    require("x", x, np.float64)
    require("out", out, np.float64, x.shape, writable=True)
    out[...] = _special.log(x)
    return out


def log1p(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """bindings.log1p in NumPy: ``out[...] = log(1 + x)`` by :func:`klest._special.log1p`
    (the same bits); returns ``out``."""
    require("x", x, np.float64)
    require("out", out, np.float64, x.shape, writable=True)
    out[...] = _special.log1p(x)
    return out

"""ctypes bindings of klest's compiled kernels (klest/csrc/kernels.c, built at install).

Callers pass C-contiguous float64 / uint64 / int64 arrays of the right sizes; the wrappers
in :mod:`klest.fast_normal`, :mod:`klest.moments` and :mod:`klest.estimators` guarantee it.
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Sequence

import numpy as np

__all__ = [
    "COMPUTED_SERIES",
    "FIELDS",
    "SIMD_LEVELS",
    "TILE",
    "accumulate",
    "best_simd_level",
    "fill_normal",
    "inverse_cdf",
    "k3_from_expm1",
    "merge",
    "set_simd_level",
]


def _load() -> ctypes.CDLL:
    spec = importlib.util.find_spec("klest._kernels")
    if spec is None or spec.origin is None:
        raise ImportError(
            "klest's compiled kernels (klest._kernels) are missing: reinstall klest from its "
            "source directory with `pip install -e .` (needs a C compiler)"
        )
    return ctypes.CDLL(spec.origin)


_LIB = _load()
_P, _I64, _F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double

_LIB.klest_fill_normal.argtypes = [_P, _P, _I64, _F64, _F64, _I64, _F64, _F64, _F64]
_LIB.klest_fill_normal.restype = None
_LIB.klest_k3_from_expm1.argtypes = [_P, _P, _P, _I64]
_LIB.klest_k3_from_expm1.restype = None
_LIB.klest_accumulate.argtypes = [
    _P, _P, _P, _P, _I64, _I64, _P, _P, _P, _P, _I64, _I64, _I64, _F64, _F64,
]  # fmt: skip
_LIB.klest_accumulate.restype = ctypes.c_int
_LIB.klest_merge.argtypes = [_I64, _P, _P, _P, _P, _P, _P]
_LIB.klest_merge.restype = ctypes.c_int
_LIB.klest_categorical_inverse_cdf.argtypes = [_P, _P, _I64, _P, _I64, _P, _P, _P]
_LIB.klest_categorical_inverse_cdf.restype = None
_LIB.klest_tile_size.argtypes = []
_LIB.klest_tile_size.restype = _I64
_LIB.klest_best_simd_level.argtypes = []
_LIB.klest_best_simd_level.restype = _I64
_LIB.klest_set_simd_level.argtypes = [_I64]
_LIB.klest_set_simd_level.restype = _I64

#: draws per tile of the accumulator (all series of a tile stay in the L1 cache)
TILE = int(_LIB.klest_tile_size())
#: series the accumulator computes itself, tile by tile, from the log-ratio l and expm1(l),
#: bit for bit as the NumPy expressions beside them
COMPUTED_SERIES = {"negate": 1, "half_square": 2, "k3": 3}  # -l, 0.5 * l * l, k3_given_expm1
#: the columns of the accumulator's (E, 9) ``stats`` array
FIELDS = ("count", "mean", "m2", "m3", "m4", "minimum", "maximum", "negative", "nonfinite")


#: the accumulator's SIMD variants, in the order of their level (all give the same bits)
SIMD_LEVELS = ("generic", "avx2", "avx512")


def best_simd_level() -> int:
    """The widest SIMD variant of the accumulator this CPU runs (an index of SIMD_LEVELS)."""
    return int(_LIB.klest_best_simd_level())


def set_simd_level(level: int) -> None:
    """Use another variant of the accumulator (for tests: they must agree bit for bit)."""
    if _LIB.klest_set_simd_level(level) < 0:
        raise ValueError(f"SIMD level {level} is not supported here (best: {best_simd_level()})")


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def fill_normal(
    state: np.ndarray,
    out: np.ndarray,
    scale: float,
    loc: float,
    quadratic: tuple[float, float, float] | None = None,
) -> None:
    """``out[:] = x = z * scale + loc`` for standard normals z from the PCG64 ``state``
    ([hi, lo, inc_hi, inc_lo], uint64), which is advanced in place; with ``quadratic`` =
    (a, b, c), ``out[:] = ((x * a) + b) * x + c`` instead (``x * b + c`` when a == 0)."""
    a, b, c = (0.0, 0.0, 0.0) if quadratic is None else quadratic
    transform = 0 if quadratic is None else (1 if a == 0.0 else 2)
    _LIB.klest_fill_normal(_address(state), _address(out), out.size, scale, loc, transform, a, b, c)


def merge(
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    stats_b: np.ndarray,
    joint_b: np.ndarray,
    comoment_b: np.ndarray,
) -> None:
    """Fold accumulator arrays b (draws after a's) into a's, in place."""
    status = _LIB.klest_merge(
        len(stats), _address(stats), _address(joint), _address(comoment),
        _address(stats_b), _address(joint_b), _address(comoment_b),
    )  # fmt: skip
    if status != 0:
        raise MemoryError("klest_merge could not allocate its scratch memory")


def inverse_cdf(
    cdf: np.ndarray, guide: np.ndarray, u: np.ndarray, table: np.ndarray | None = None
) -> np.ndarray:
    """``np.searchsorted(cdf, u, side="right")`` by guide table (int64), or, with ``table``,
    ``table`` at those indices (float64). ``cdf``: float64, nondecreasing, last entry 1;
    ``guide``: int32 of length g + 1, g a power of two (see ``Categorical``); 0 <= u < 1."""
    g = guide.size - 1
    if table is None:
        index = np.empty(u.size, dtype=np.int64)
        _LIB.klest_categorical_inverse_cdf(
            _address(cdf), _address(guide), g, _address(u), u.size, _address(index), None, None
        )
        return index
    values = np.empty(u.size)
    _LIB.klest_categorical_inverse_cdf(
        _address(cdf), _address(guide), g, _address(u), u.size, None, _address(table),
        _address(values),
    )  # fmt: skip
    return values


def k3_from_expm1(expm1_l: np.ndarray, l: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = exp(l) - 1 - l``, stably, from 1-D ``l`` and ``expm1(l)``."""
    _LIB.klest_k3_from_expm1(_address(expm1_l), _address(l), _address(out), l.size)


def accumulate(
    series: Sequence[np.ndarray | str],
    log_ratio: np.ndarray | None,
    expm1_log_ratio: np.ndarray | None,
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    histogram: np.ndarray,
    hist_rows: int,
    stride: int,
    low: float,
    width: float,
) -> None:
    """Fold one block into the accumulator arrays in place. Each of the E ``series`` is a
    1-D float64 array or a name of :data:`COMPUTED_SERIES` (computed from ``log_ratio`` and
    ``expm1_log_ratio``, which then must be given)."""
    size = len(series)
    kinds = np.array([COMPUTED_SERIES[s] if isinstance(s, str) else 0 for s in series])
    pointers = (ctypes.c_void_p * size)(
        *[None if isinstance(s, str) else _address(s) for s in series]
    )
    given = [s for s in series if not isinstance(s, str)]
    m = given[0].size if given else log_ratio.size  # type: ignore[union-attr]
    bins = histogram.shape[1] - 2 if histogram.shape[1] else 0
    status = _LIB.klest_accumulate(
        pointers, _address(kinds),
        None if log_ratio is None else _address(log_ratio),
        None if expm1_log_ratio is None else _address(expm1_log_ratio),
        size, m, _address(stats), _address(joint), _address(comoment), _address(histogram),
        bins, hist_rows, stride, low, width,
    )  # fmt: skip
    if status == -1:
        raise MemoryError("klest_accumulate could not allocate its scratch memory")
    if status != 0:
        raise ValueError("klest_accumulate: a computed series needs the log-ratio (and expm1)")

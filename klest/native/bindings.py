"""ctypes bindings of klest's compiled kernels (klest/native/csrc/kernels.c, built at install).

The C code indexes its arrays without bounds checks, so every wrapper here first checks
its arguments (dtype, shape, C-contiguity, alignment, writability, values that the C would
index with) and raises a one-line TypeError or ValueError naming the argument: no input
reaches the C that could make it read or write out of bounds. The wrappers convert nothing
(a silent copy in a hot loop would hide a slow caller); the public functions above them
(:mod:`klest.native.sampler`, :mod:`klest.engine.moments`, :mod:`klest.estimators`,
``Categorical.inverse_cdf``) convert what has a clear meaning, with :func:`as_real_array`.

>>> import numpy as np
>>> k3_from_expm1(np.zeros(3), np.zeros(2), np.zeros(2))
Traceback (most recent call last):
    ...
ValueError: expm1_l must have shape (2,), got (3,)
"""

from __future__ import annotations

import ctypes
import importlib.util
import operator
import os
from collections.abc import Sequence

import numpy as np

from klest.native.checks import (
    COMPUTED_SERIES,
    FAMILIES,
    FIELDS,
    SIMD_LEVELS,
    check_accumulate_args,
    check_block_stats_args,
    check_categorical_block_stats_args,
    check_inverse_cdf_args,
    check_laplace_block_stats_args,
    check_merge_args,
    family_is_compiled,
    quadratic_coefficients,
    real_scalar,
    require,
)

__all__ = [
    "COMPUTED_SERIES",
    "FIELDS",
    "SIMD_LEVELS",
    "TILE",
    "accumulate",
    "best_simd_level",
    "block_stats",
    "categorical_block_stats",
    "expm1",
    "fill_family",
    "fill_normal",
    "full_kl_rows",
    "inverse_cdf",
    "k3_from_expm1",
    "laplace_block_stats",
    "log",
    "log1p",
    "merge",
    "set_simd_level",
]


def _load() -> ctypes.CDLL:
    spec = importlib.util.find_spec("klest.native._kernels")
    if spec is None or spec.origin is None:
        raise ImportError(
            "klest's compiled kernels (klest.native._kernels) are missing: reinstall klest from "
            "its source directory with `pip install -e .` (needs a C compiler)"
        )
    return ctypes.CDLL(spec.origin)


_LIB = _load()
_P, _I64, _F64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double

_LIB.klest_fill_normal.argtypes = [_P, _P, _I64, _F64, _F64, _I64, _F64, _F64, _F64]
_LIB.klest_fill_normal.restype = None
_LIB.klest_fill_family.argtypes = [_P, _P, _I64, _I64, _F64, _F64]
_LIB.klest_fill_family.restype = ctypes.c_int
_LIB.klest_k3_from_expm1.argtypes = [_P, _P, _P, _I64]
_LIB.klest_k3_from_expm1.restype = None
_LIB.klest_accumulate.argtypes = [
    _P, _P, _P, _P, _I64, _I64, _P, _P, _P, _P, _I64, _I64, _I64, _F64, _F64,
]  # fmt: skip
_LIB.klest_accumulate.restype = ctypes.c_int
_LIB.klest_block_stats.argtypes = [
    _P, _I64, _P, _P, _I64, _P, _I64, _P, _I64, _P, _P, _P, _P, _I64, _I64, _I64, _F64, _F64,
]  # fmt: skip
_LIB.klest_block_stats.restype = ctypes.c_int
_LIB.klest_categorical_block_stats.argtypes = [
    _P, _I64, _P, _P, _P, _I64, _P, _P, _I64, _P, _P, _P, _P, _I64, _I64, _I64, _F64, _F64,
]  # fmt: skip
_LIB.klest_categorical_block_stats.restype = ctypes.c_int
_LIB.klest_laplace_block_stats.argtypes = [
    _P, _I64, _P, _P, _P, _I64, _P, _P, _P, _P, _I64, _I64, _I64, _F64, _F64,
]  # fmt: skip
_LIB.klest_laplace_block_stats.restype = ctypes.c_int
_LIB.klest_merge.argtypes = [_I64, _P, _P, _P, _P, _P, _P]
_LIB.klest_merge.restype = ctypes.c_int
_LIB.klest_categorical_inverse_cdf.argtypes = [_P, _P, _I64, _P, _I64, _P, _P, _P]
_LIB.klest_categorical_inverse_cdf.restype = _I64
_LIB.klest_expm1.argtypes = [_P, _P, _I64]
_LIB.klest_expm1.restype = None
for _name in ("klest_log", "klest_log1p"):
    getattr(_LIB, _name).argtypes = [_P, _P, _I64]
    getattr(_LIB, _name).restype = None
_LIB.klest_full_kl.argtypes = [_P, _P, _I64, _I64, _I64, _P, _I64, _P, _P, _P, _P]
_LIB.klest_full_kl.restype = _I64
_LIB.klest_tile_size.argtypes = []
_LIB.klest_tile_size.restype = _I64
_LIB.klest_best_simd_level.argtypes = []
_LIB.klest_best_simd_level.restype = _I64
_LIB.klest_set_simd_level.argtypes = [_I64]
_LIB.klest_set_simd_level.restype = _I64

#: draws per tile of the accumulator (all series of a tile stay in the L1 cache)
TILE = int(_LIB.klest_tile_size())


def _level_from_environment() -> None:
    """KLEST_SIMD_LEVEL=generic|avx2|avx512 (or 0, 1, 2) picks the variant at load (worker
    processes inherit it): benchmarks/bench_engine.py --avx2 reproduces an AVX2-only CPU."""
    name = os.environ.get("KLEST_SIMD_LEVEL", "").strip().lower()
    if not name:
        return
    if name in SIMD_LEVELS:
        set_simd_level(SIMD_LEVELS.index(name))
    elif name in ("0", "1", "2"):
        set_simd_level(int(name))
    else:
        raise ValueError(
            f"KLEST_SIMD_LEVEL must be one of {', '.join(SIMD_LEVELS)} (or 0, 1, 2), got {name!r}"
        )


def best_simd_level() -> int:
    """The widest SIMD variant of the accumulator this CPU runs (an index of SIMD_LEVELS)."""
    return int(_LIB.klest_best_simd_level())


def set_simd_level(level: int) -> None:
    """Use another variant of the accumulator (for tests: they must agree bit for bit)."""
    level = operator.index(level)
    if not 0 <= level < len(SIMD_LEVELS) or _LIB.klest_set_simd_level(level) < 0:
        raise ValueError(f"SIMD level {level} is not supported here (best: {best_simd_level()})")


_level_from_environment()


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def fill_family(state: np.ndarray, out: np.ndarray, family: str, p0: float, p1: float) -> None:
    """``out[:]`` = NumPy's ``Generator(PCG64).<family>`` draws from the PCG64 ``state``
    (advanced in place): laplace (loc p0, scale p1), gamma (shape p0, scale p1), standard_t
    (df p0), beta (a p0, b p1), at parameters where :func:`family_is_compiled` holds."""
    require("state", state, np.uint64, (4,), writable=True)
    require("out", out, np.float64, writable=True)
    p0, p1 = real_scalar("p0", p0), real_scalar("p1", p1)
    if not family_is_compiled(family, p0, p1):
        raise ValueError(f"{family} with parameters ({p0!r}, {p1!r}) is drawn by NumPy, not here")
    if _LIB.klest_fill_family(_address(state), _address(out), out.size, FAMILIES[family], p0, p1):
        raise ValueError(f"klest_fill_family: unknown family {family!r}")


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
    require("state", state, np.uint64, (4,), writable=True)
    require("out", out, np.float64, writable=True)
    scale, loc = real_scalar("scale", scale), real_scalar("loc", loc)
    a, b, c = quadratic_coefficients(quadratic)
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
    check_merge_args(stats, joint, comoment, stats_b, joint_b, comoment_b)
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
    ``table`` at those indices (float64), of u's shape. ``cdf``: float64 of length k,
    nondecreasing, last entry 1; ``guide``: int32 of length g + 1, g a power of two, entries
    in [0, k - 1] (see ``Categorical``); u: float64, every value in [0, 1) (checked by the
    kernel in its pass: a ValueError names the first other one); ``table``: float64 of
    length k. A guide that is valid in shape but wrong in value gives wrong categories, never
    an access outside the arrays."""
    check_inverse_cdf_args(cdf, guide, u, table)
    g = guide.size - 1
    out = np.empty(u.shape, dtype=np.int64 if table is None else np.float64)
    index, values = (out, None) if table is None else (None, out)
    first_bad = _LIB.klest_categorical_inverse_cdf(
        _address(cdf), _address(guide), g, _address(u), u.size,
        None if index is None else _address(index), None if table is None else _address(table),
        None if values is None else _address(values),
    )  # fmt: skip
    if first_bad >= 0:
        where = np.unravel_index(first_bad, u.shape)
        shown = int(where[0]) if len(where) == 1 else tuple(int(i) for i in where)
        raise ValueError(f"u must lie in [0, 1), got {float(u.flat[first_bad])!r} at index {shown}")
    return out


def k3_from_expm1(expm1_l: np.ndarray, l: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = exp(l) - 1 - l``, stably, from 1-D ``l`` and ``expm1(l)`` (float64, the
    same length; NaN and inf are values like any other)."""
    require("l", l, np.float64, (None,))
    require("expm1_l", expm1_l, np.float64, l.shape)
    require("out", out, np.float64, l.shape, writable=True)
    _LIB.klest_k3_from_expm1(_address(expm1_l), _address(l), _address(out), l.size)


def expm1(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = e^x - 1`` by klest's own expm1 (fdlibm's algorithm, branch-free and
    vectorised at every SIMD level; within 1 ulp; the same bits as
    :func:`klest._special.expm1`, NumPy's own ``np.expm1`` aside), and return ``out``.
    ``x``: float64, C-contiguous, any shape; ``out``: float64 of x's shape, writable (it
    may be ``x`` itself).

    >>> expm1(np.array([0.0, 1.0]), np.empty(2)).tolist()
    [0.0, 1.718281828459045]
    """
    require("x", x, np.float64)
    require("out", out, np.float64, x.shape, writable=True)
    _LIB.klest_expm1(_address(x), _address(out), x.size)
    return out


def log(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = log(x)`` by klest's own log (fdlibm's method, branch-free and vectorised
    at every SIMD level; within 1 ulp; the same bits as :func:`klest._special.log`), and
    return ``out``. Arguments as for :func:`expm1` (``out`` may be ``x``).

    >>> log(np.array([1.0, 0.0]), np.empty(2)).tolist()
    [0.0, -inf]
    """
    require("x", x, np.float64)
    require("out", out, np.float64, x.shape, writable=True)
    _LIB.klest_log(_address(x), _address(out), x.size)
    return out


def log1p(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out[...] = log(1 + x)`` by klest's own log1p (the same bits as
    :func:`klest._special.log1p`), and return ``out``. Arguments as for :func:`expm1`.

    >>> log1p(np.array([0.0, -1.0]), np.empty(2)).tolist()
    [0.0, -inf]
    """
    require("x", x, np.float64)
    require("out", out, np.float64, x.shape, writable=True)
    _LIB.klest_log1p(_address(x), _address(out), x.size)
    return out


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
    check_accumulate_args(
        series, log_ratio, expm1_log_ratio, stats, joint, comoment, histogram, hist_rows,
        stride, low, width,
    )  # fmt: skip
    size = len(series)
    kinds = np.array(
        [COMPUTED_SERIES[s] if isinstance(s, str) else 0 for s in series], dtype=np.int64
    )  # the C reads int64 (NumPy 1.x on Windows would default to int32)
    pointers = (ctypes.c_void_p * size)(
        *[None if isinstance(s, str) else _address(s) for s in series]
    )
    given = [s for s in series if not isinstance(s, str)]
    m = given[0].size if given else log_ratio.size  # type: ignore[union-attr]
    bins = _bins(histogram)
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


def block_stats(
    series: Sequence[str],
    log_ratio: np.ndarray | None,
    normal: tuple[np.ndarray, np.ndarray, float, float, tuple[float, float, float] | None] | None,
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    histogram: np.ndarray,
    hist_rows: int,
    stride: int,
    low: float,
    width: float,
) -> None:
    """:func:`accumulate` for blocks whose every series is computed (names of
    :data:`COMPUTED_SERIES`) from their log-ratio l, with expm1(l) made here, tile by tile:
    the same bits as ``expm1`` then ``accumulate``, block after block. l is ``log_ratio``
    (1-D float64, one block), or, with ``normal = (states, lengths, scale, loc, quadratic)``,
    block b is the ``lengths[b]`` values of :func:`fill_normal` of PCG64 state
    ``states[b]`` (advanced in place), drawn here tile by tile and never written out."""
    params, transform = check_block_stats_args(
        series, log_ratio, normal, stats, joint, comoment, histogram, hist_rows, stride, low,
        width,
    )  # fmt: skip
    kinds = _computed_kinds(series)
    f = np.array(params, dtype=np.float64)
    bins = _bins(histogram)
    states, lengths = (None, None) if normal is None else normal[:2]
    status = _LIB.klest_block_stats(
        None if states is None else _address(states), 0 if states is None else len(states),
        None if lengths is None else _address(lengths), _address(f), transform,
        None if log_ratio is None else _address(log_ratio),
        0 if log_ratio is None else log_ratio.size, _address(kinds), len(series),
        _address(stats), _address(joint), _address(comoment), _address(histogram), bins,
        hist_rows, stride, low, width,
    )  # fmt: skip
    _block_stats_status("klest_block_stats", status)


def categorical_block_stats(
    series: Sequence[str],
    categorical: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    histogram: np.ndarray,
    hist_rows: int,
    stride: int,
    low: float,
    width: float,
) -> None:
    """:func:`block_stats` for blocks of Categorical draws, ``categorical = (states, lengths,
    cdf, guide, pairs)``: block b is the categories c of ``lengths[b]`` uniforms of PCG64
    state ``states[b]`` (``Generator.random``'s, the state advanced in place) by
    :func:`inverse_cdf` of (cdf, guide), whose log-ratio and expm1 are ``pairs[c]``: the same
    bits as ``inverse_cdf(cdf, guide, rng.random(m), pairs[:, 0])`` then :func:`block_stats`
    of that log-ratio, with no draw written out and no expm1 taken per draw."""
    check_categorical_block_stats_args(
        series, categorical, stats, joint, comoment, histogram, hist_rows, stride, low, width
    )
    states, lengths, cdf, guide, pairs = categorical
    kinds = _computed_kinds(series)
    bins = _bins(histogram)
    status = _LIB.klest_categorical_block_stats(
        _address(states), len(states), _address(lengths), _address(cdf), _address(guide),
        guide.size - 1, _address(pairs), _address(kinds), len(series), _address(stats),
        _address(joint), _address(comoment), _address(histogram), bins, hist_rows, stride, low,
        width,
    )  # fmt: skip
    _block_stats_status("klest_categorical_block_stats", status)


def laplace_block_stats(
    series: Sequence[str],
    laplace: tuple[np.ndarray, np.ndarray, float, float, tuple[float, ...]],
    stats: np.ndarray,
    joint: np.ndarray,
    comoment: np.ndarray,
    histogram: np.ndarray,
    hist_rows: int,
    stride: int,
    low: float,
    width: float,
) -> None:
    """:func:`block_stats` for blocks of Laplace draws, ``laplace = (states, lengths, loc,
    scale, (a, b, c, d, e))``: block b is the ``lengths[b]`` draws x of NumPy's
    ``Generator.laplace(loc, scale)`` from PCG64 state ``states[b]`` (advanced in place), with
    log-ratio ``(|x - a| * b - |x - c| * d) + e``, drawn here tile by tile and never written
    out."""
    f = np.array(
        check_laplace_block_stats_args(
            series, laplace, stats, joint, comoment, histogram, hist_rows, stride, low, width
        ),
        dtype=np.float64,
    )
    states, lengths = laplace[:2]
    kinds = _computed_kinds(series)
    bins = _bins(histogram)
    status = _LIB.klest_laplace_block_stats(
        _address(states), len(states), _address(lengths), _address(f), _address(kinds),
        len(series), _address(stats), _address(joint), _address(comoment), _address(histogram),
        bins, hist_rows, stride, low, width,
    )  # fmt: skip
    _block_stats_status("klest_laplace_block_stats", status)


def _computed_kinds(series: Sequence[str]) -> np.ndarray:
    """The kernels' int64 codes of computed series (names of :data:`COMPUTED_SERIES`)."""
    return np.array([COMPUTED_SERIES[s] for s in series], dtype=np.int64)


def _bins(histogram: np.ndarray) -> int:
    """The histogram's bins between its underflow and overflow columns (0: no histogram)."""
    return histogram.shape[1] - 2 if histogram.shape[1] else 0


def _block_stats_status(kernel: str, status: int) -> None:
    if status == -1:
        raise MemoryError(f"{kernel} could not allocate its scratch memory")
    if status != 0:
        raise ValueError(f"{kernel}: unknown series kind")


#: klest_full_kl's element types: float64 and float32 arrays, bfloat16 as its uint16 bits
FULL_KL_DTYPES = {"float64": np.float64, "float32": np.float32, "bfloat16": np.uint16}
#: klest_full_kl's row status codes
ROW_STATUS = ("ok", "nonfinite", "a_empty", "b_empty", "skipped")


def full_kl_rows(
    a: np.ndarray,
    b: np.ndarray,
    dtype: str,
    keep: np.ndarray | None = None,
    row_keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """KL(softmax a_i || softmax b_i) in float64 for every row i of the (rows, V) matrices
    ``a`` and ``b`` (klest/native/csrc/full_kl.c), and each row's status (an index of
    :data:`ROW_STATUS`; the value is NaN unless "ok", 0 if "skipped"). ``dtype`` names the
    element type (a key of :data:`FULL_KL_DTYPES`; "bfloat16" rows are uint16 bit patterns).
    ``keep`` (uint8, shape (1, V) or (rows, V)): entries with 0 count as -inf in both rows;
    ``row_keep`` (uint8, shape (rows,)): rows with 0 are skipped."""
    if dtype not in FULL_KL_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(FULL_KL_DTYPES)}, got {dtype!r}")
    element = FULL_KL_DTYPES[dtype]
    require("a", a, element, (None, None))
    rows, vocab = a.shape
    require("b", b, element, (rows, vocab))
    if vocab == 0:
        raise ValueError("a and b need at least one column (vocabulary entry)")
    keep_rows = 0
    if keep is not None:
        require("keep", keep, np.uint8, (None, vocab))
        keep_rows = keep.shape[0]
        if keep_rows not in (1, rows):
            raise ValueError(f"keep must have 1 or {rows} rows, got {keep_rows}")
    if row_keep is not None:
        require("row_keep", row_keep, np.uint8, (rows,))
    out = np.empty(rows, dtype=np.float64)
    status = np.empty(rows, dtype=np.int8)
    work = np.empty(vocab, dtype=np.float64)
    flagged = _LIB.klest_full_kl(
        _address(a), _address(b), tuple(FULL_KL_DTYPES).index(dtype), rows, vocab,
        None if keep is None else _address(keep), keep_rows,
        None if row_keep is None else _address(row_keep), _address(work), _address(out),
        _address(status),
    )  # fmt: skip
    if flagged < 0:
        raise ValueError(f"klest_full_kl rejected dtype {dtype!r}")
    return out, status

"""The argument checks of klest's compiled kernels, shared by both implementations.

The C indexes its arrays without bounds checks, so every wrapper (``bindings``) checks its
arguments here first and raises a one-line TypeError or ValueError naming the argument; the
NumPy fallback (``fallback``) runs the same checks, so both modes refuse the same input with
the same words. Imports nothing of klest and loads no library.
"""

from __future__ import annotations

import math
import numbers
import operator
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "COMPUTED_SERIES",
    "FAMILIES",
    "FIELDS",
    "SIMD_LEVELS",
    "as_real_array",
    "cannot_change",
    "check_accumulate_args",
    "check_block_stats_args",
    "check_categorical_block_stats_args",
    "check_family",
    "check_inverse_cdf_args",
    "check_laplace_block_stats_args",
    "check_merge_args",
    "checked_int",
    "family_is_compiled",
    "quadratic_coefficients",
    "real_scalar",
    "require",
]

#: series the accumulator computes itself, tile by tile, from the log-ratio l and expm1(l),
#: bit for bit as the NumPy expressions beside them
#: -l, 0.5 * l * l, k3_given_expm1, expm1(l) itself (r - 1)
COMPUTED_SERIES = {"negate": 1, "half_square": 2, "k3": 3, "expm1": 4}
#: the columns of the accumulator's (E, 11) ``stats`` array: ``nonfinite`` counts every
#: non-finite value, ``posinf`` and ``neginf`` the +inf and -inf among them (NaN: the rest)
FIELDS = (
    "count", "mean", "m2", "m3", "m4", "minimum", "maximum", "negative", "nonfinite",
    "posinf", "neginf",
)  # fmt: skip
#: the families klest_fill_family draws as NumPy's Generator methods of these names do, and
#: their codes in klest/native/csrc/family_stream.h
FAMILIES = {"laplace": 0, "gamma": 1, "standard_t": 2, "beta": 3}
#: the accumulator's SIMD variants, in the order of their level (all give the same bits)
SIMD_LEVELS = ("generic", "avx2", "avx512")


def as_real_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a C-contiguous float64 array (of any real or boolean dtype, any strides);
    a TypeError naming ``name`` for complex, object, string or ragged input.

    >>> as_real_array("u", [[1, 2]]).dtype, as_real_array("u", [[1, 2]]).shape
    (dtype('float64'), (1, 2))
    >>> as_real_array("u", [0.5j])
    Traceback (most recent call last):
        ...
    TypeError: u must be real numbers, got complex128
    """
    try:
        array = np.asarray(value)
    except ValueError:  # a ragged nesting of lists
        raise TypeError(f"{name} must be an array of real numbers, got {_shown(value)}") from None
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be real numbers, got {array.dtype}")
    return np.asarray(array, dtype=np.float64, order="C")  # 0-d stays 0-d


def _shown(value: Any) -> str:
    text = " ".join(repr(value).split())  # one line, even for a 2-D array
    return text if len(text) <= 60 else text[:57] + "..."


def require(
    name: str,
    array: Any,
    dtype: type,
    shape: tuple[int | None, ...] | None = None,
    *,
    writable: bool = False,
) -> None:
    """Raise unless ``array`` is what a kernel may index blindly: a NumPy array of exactly
    ``dtype`` (native byte order), C-contiguous and aligned, of ``shape`` (None: any shape;
    a None entry: any length), and writable if the kernel writes it.

    >>> require("out", np.zeros(4)[::2], np.float64, (2,))
    Traceback (most recent call last):
        ...
    ValueError: out must be C-contiguous (got strides (16,))
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(
            f"{name} must be a NumPy array of {np.dtype(dtype)}, got {type(array).__name__}"
        )
    if array.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {array.dtype}")
    if shape is not None and (
        array.ndim != len(shape)
        or any(
            want is not None and want != got for want, got in zip(shape, array.shape, strict=True)
        )
    ):
        wanted = tuple("n" if s is None else s for s in shape)
        shown = str(wanted).replace("'", "")
        raise ValueError(f"{name} must have shape {shown}, got {array.shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (got strides {array.strides})")
    if not array.flags.aligned:
        raise ValueError(f"{name} must be aligned to its dtype ({np.dtype(dtype)})")
    if writable and not array.flags.writeable:
        raise ValueError(f"{name} must be writable (the kernel writes it in place)")


def real_scalar(name: str, value: Any) -> float:
    """A real scalar (or 0-d real array) as a Python float; NaN and inf pass (they are
    arithmetic); a TypeError naming ``name`` for anything else.

    >>> real_scalar("scale", np.float32(0.5)), real_scalar("scale", np.array(2))
    (0.5, 2.0)
    """
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {_shown(value)}")
    return float(value)


def checked_int(name: str, value: Any, low: int) -> int:
    """``value`` as an int in [low, 2**63) (the kernels' int64); a TypeError or ValueError
    naming ``name`` otherwise.

    >>> checked_int("stride", 0, 1)
    Traceback (most recent call last):
        ...
    ValueError: stride must be an integer in [1, 2**63), got 0
    """
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {_shown(value)}") from None
    if not low <= value < 2**63:
        raise ValueError(f"{name} must be an integer in [{low}, 2**63), got {value}")
    return value


def quadratic_coefficients(quadratic: Any) -> tuple[float, float, float]:
    """(a, b, c) of :func:`fill_normal`'s ``quadratic`` as floats ((0, 0, 0) for None).

    >>> quadratic_coefficients([1, 2.5, -3])
    (1.0, 2.5, -3.0)
    """
    if quadratic is None:
        return 0.0, 0.0, 0.0
    if not isinstance(quadratic, Sequence) or len(quadratic) != 3:
        raise ValueError(f"quadratic must be 3 numbers (a, b, c), got {_shown(quadratic)}")
    a, b, c = (real_scalar(f"quadratic[{i}]", v) for i, v in enumerate(quadratic))
    return a, b, c


def check_merge_args(
    stats: Any, joint: Any, comoment: Any, stats_b: Any, joint_b: Any, comoment_b: Any
) -> None:
    """Raise (TypeError / ValueError naming the argument) unless :func:`merge`'s arrays are
    float64, C-contiguous and of the layout of E series: stats (E, len(FIELDS)), joint
    (E + 1,), comoment (E, E), the first three writable, the b arrays the same shapes.

    >>> check_merge_args(np.zeros((2, len(FIELDS))), np.zeros(2), np.zeros((2, 2)),
    ...                  np.zeros((2, len(FIELDS))), np.zeros(3), np.zeros((2, 2)))
    Traceback (most recent call last):
        ...
    ValueError: joint must have shape (3,), got (2,)
    """
    require("stats", stats, np.float64, (None, len(FIELDS)), writable=True)
    e = stats.shape[0]
    require("joint", joint, np.float64, (e + 1,), writable=True)
    require("comoment", comoment, np.float64, (e, e), writable=True)
    require("stats_b", stats_b, np.float64, (e, len(FIELDS)))
    require("joint_b", joint_b, np.float64, (e + 1,))
    require("comoment_b", comoment_b, np.float64, (e, e))


def check_accumulate_args(
    series: Any,
    log_ratio: Any,
    expm1_log_ratio: Any,
    stats: Any,
    joint: Any,
    comoment: Any,
    histogram: Any,
    hist_rows: Any,
    stride: Any,
    low: Any,
    width: Any,
) -> None:
    """Raise (TypeError / ValueError naming the argument) unless :func:`accumulate`'s
    arguments are safe for the kernel: E >= 1 series, each a name of COMPUTED_SERIES or a
    float64 C-contiguous array of one common length m >= 1; ``log_ratio`` (needed by any
    computed series) and ``expm1_log_ratio`` (needed by "k3") float64 of length m when
    given; stats, joint, comoment as in :func:`check_merge_args` for E series, writable;
    histogram int64 (rows, bins + 2) writable, with 0 <= hist_rows <= min(rows, E);
    stride >= 1; and, when there are bins, ``low`` finite and ``width`` finite > 0 with a
    finite 1 / width (else a bin position is NaN, and NaN cast to an index is any index).

    >>> check_accumulate_args([np.zeros(3)], None, None, np.zeros((1, len(FIELDS))),
    ...                       np.zeros(2), np.zeros((1, 1)), np.zeros((1, 5), np.int64),
    ...                       1, 1, 0.0, 0.0)
    Traceback (most recent call last):
        ...
    ValueError: width must be finite and > 0 (with a finite 1 / width), got 0.0
    """
    if isinstance(series, str | np.ndarray) or not isinstance(series, Sequence):
        raise TypeError(f"series must be a list of arrays or names, got {_shown(series)}")
    if len(series) == 0:
        raise ValueError("series must hold at least one series")
    names = [s for s in series if isinstance(s, str)]
    for name in names:
        if name not in COMPUTED_SERIES:
            raise ValueError(
                f"unknown computed series {name!r}; valid: {', '.join(COMPUTED_SERIES)}"
            )
    given = [(i, s) for i, s in enumerate(series) if not isinstance(s, str)]
    inputs = (("log_ratio", log_ratio), ("expm1_log_ratio", expm1_log_ratio))
    first = [s for _, s in given] + [x for _, x in inputs if x is not None]
    if not first:
        raise ValueError("computed series need the log-ratio of the block")
    require("series[0]" if given else "log_ratio", first[0], np.float64, (None,))
    m = first[0].size
    if m == 0:
        raise ValueError("a block needs at least one draw")
    for i, s in given:
        require(f"series[{i}]", s, np.float64, (m,))
    for name, x in inputs:
        if x is not None:
            require(name, x, np.float64, (m,))
    if names and log_ratio is None:
        raise ValueError("computed series need the log-ratio (log_ratio)")
    for name in ("k3", "expm1"):
        if name in names and expm1_log_ratio is None:
            raise ValueError(f"the computed series {name!r} needs expm1_log_ratio")
    _check_accumulator_arrays(len(series), stats, joint, comoment, histogram, hist_rows, stride,
                              low, width)  # fmt: skip


def check_block_stats_args(
    series: Any,
    log_ratio: Any,
    normal: Any,
    stats: Any,
    joint: Any,
    comoment: Any,
    histogram: Any,
    hist_rows: Any,
    stride: Any,
    low: Any,
    width: Any,
) -> tuple[tuple[float, float, float, float, float], int]:
    """Check :func:`block_stats`'s arguments as :func:`check_accumulate_args` does (every
    series a name of COMPUTED_SERIES); exactly one of ``log_ratio`` (1-D float64, m >= 1
    values) and ``normal`` = (states, lengths, scale, loc, quadratic or None): states the
    writable (B, 4) uint64 PCG64 states of B >= 1 blocks, lengths their (B,) int64 draw
    counts, each >= 1. Returns ((scale, loc, a, b, c), transform)."""
    _check_computed_names(series)
    if (log_ratio is None) == (normal is None):
        raise ValueError("block_stats needs exactly one of log_ratio and normal")
    if normal is None:
        require("log_ratio", log_ratio, np.float64, (None,))
        if log_ratio.size == 0:
            raise ValueError("a block needs at least one draw")
        params, transform = (0.0, 0.0, 0.0, 0.0, 0.0), 0
    else:
        if not isinstance(normal, tuple) or len(normal) != 5:
            raise TypeError("normal must be (states, lengths, scale, loc, quadratic)")
        states, lengths, scale, loc, quadratic = normal
        _check_block_states(states, lengths)
        a, b, c = quadratic_coefficients(quadratic)
        transform = 0 if quadratic is None else (1 if a == 0.0 else 2)
        params = (real_scalar("scale", scale), real_scalar("loc", loc), a, b, c)
    _check_accumulator_arrays(len(series), stats, joint, comoment, histogram, hist_rows, stride,
                              low, width)  # fmt: skip
    return params, transform


def check_categorical_block_stats_args(
    series: Any,
    categorical: Any,
    stats: Any,
    joint: Any,
    comoment: Any,
    histogram: Any,
    hist_rows: Any,
    stride: Any,
    low: Any,
    width: Any,
) -> None:
    """Check :func:`categorical_block_stats`'s arguments: the series and accumulator as
    :func:`check_block_stats_args`, ``categorical`` = (states, lengths, cdf, guide, pairs):
    states and lengths as ``normal``'s there, cdf and guide as :func:`check_inverse_cdf_args`
    checks them, pairs the (k, 2) float64 log-ratio and its expm1 of each of the k
    categories."""
    _check_computed_names(series)
    if not isinstance(categorical, tuple) or len(categorical) != 5:
        raise TypeError("categorical must be (states, lengths, cdf, guide, pairs)")
    states, lengths, cdf, guide, pairs = categorical
    _check_block_states(states, lengths)
    _check_cdf_and_guide(cdf, guide)
    require("pairs", pairs, np.float64, (cdf.size, 2))
    _check_accumulator_arrays(len(series), stats, joint, comoment, histogram, hist_rows, stride,
                              low, width)  # fmt: skip


def check_laplace_block_stats_args(
    series: Any,
    laplace: Any,
    stats: Any,
    joint: Any,
    comoment: Any,
    histogram: Any,
    hist_rows: Any,
    stride: Any,
    low: Any,
    width: Any,
) -> tuple[float, ...]:
    """Check :func:`laplace_block_stats`'s arguments: the series and accumulator as
    :func:`check_block_stats_args`, ``laplace`` = (states, lengths, loc, scale, (a, b, c, d,
    e)): states and lengths as ``normal``'s there, loc and scale those of draws that the
    compiled sampler gives as NumPy's laplace does (:func:`family_is_compiled`), a..e real
    numbers. Returns (loc, scale, a, b, c, d, e)."""
    _check_computed_names(series)
    if not isinstance(laplace, tuple) or len(laplace) != 5:
        raise TypeError("laplace must be (states, lengths, loc, scale, coefficients)")
    states, lengths, loc, scale, coefficients = laplace
    _check_block_states(states, lengths)
    loc, scale = real_scalar("loc", loc), real_scalar("scale", scale)
    if not family_is_compiled("laplace", loc, scale):
        raise ValueError(f"laplace draws need a finite loc and scale > 0, got {loc}, {scale}")
    if not isinstance(coefficients, tuple) or len(coefficients) != 5:
        raise TypeError(f"coefficients must be 5 real numbers, got {_shown(coefficients)}")
    numbers = tuple(real_scalar("coefficients", c) for c in coefficients)
    _check_accumulator_arrays(len(series), stats, joint, comoment, histogram, hist_rows, stride,
                              low, width)  # fmt: skip
    return (loc, scale, *numbers)


def _check_computed_names(series: Any) -> None:
    if isinstance(series, str | np.ndarray) or not isinstance(series, Sequence) or not series:
        raise TypeError(f"series must be a non-empty list of names, got {_shown(series)}")
    for name in series:
        if not isinstance(name, str) or name not in COMPUTED_SERIES:
            valid = ", ".join(COMPUTED_SERIES)
            raise ValueError(
                f"block_stats computes every series: {_shown(name)} is not one of {valid}"
            )


def _check_block_states(states: Any, lengths: Any) -> None:
    """states: writable (B, 4) uint64 PCG64 states, B >= 1; lengths: (B,) int64, each >= 1."""
    require("states", states, np.uint64, (None, 4), writable=True)
    require("lengths", lengths, np.int64, (states.shape[0],))
    if states.shape[0] == 0:
        raise ValueError("block_stats needs at least one block")
    if lengths.min() < 1:
        raise ValueError(f"every block needs at least one draw, got lengths {lengths}")


def _check_accumulator_arrays(
    e: int,
    stats: Any,
    joint: Any,
    comoment: Any,
    histogram: Any,
    hist_rows: Any,
    stride: Any,
    low: Any,
    width: Any,
) -> None:
    require("stats", stats, np.float64, (e, len(FIELDS)), writable=True)
    require("joint", joint, np.float64, (e + 1,), writable=True)
    require("comoment", comoment, np.float64, (e, e), writable=True)
    require("histogram", histogram, np.int64, (None, None), writable=True)
    hist_rows = checked_int("hist_rows", hist_rows, 0)
    if hist_rows > min(histogram.shape[0], e):
        raise ValueError(
            f"hist_rows must be <= the histogram's rows and the series ({histogram.shape[0]}, "
            f"{e}), got {hist_rows}"
        )
    checked_int("stride", stride, 1)
    low, width = real_scalar("low", low), real_scalar("width", width)
    if histogram.shape[1] > 2:
        if not math.isfinite(low):
            raise ValueError(f"low must be finite, got {low}")
        if not (math.isfinite(width) and width > 0.0 and math.isfinite(1.0 / width)):
            raise ValueError(f"width must be finite and > 0 (with a finite 1 / width), got {width}")


def cannot_change(array: Any) -> bool:
    """True when nothing can write ``array``'s values any more: a NumPy array (no subclass),
    read-only, and a read-only view all the way down of a ``bytes`` object (immutable; NumPy
    refuses to make such an array writable again). An array that merely has
    ``writeable=False`` can be made writable again by its owner, so it does not count.

    >>> frozen = np.frombuffer(np.arange(3.0).tobytes())
    >>> cannot_change(frozen), cannot_change(frozen[1:]), cannot_change(np.arange(3.0))
    (True, True, False)
    >>> locked = np.arange(3.0)
    >>> locked.flags.writeable = False
    >>> cannot_change(locked)  # its owner may set writeable=True again
    False
    """
    while type(array) is np.ndarray:
        if array.flags.writeable:
            return False
        array = array.base
    return type(array) is bytes


#: (id(cdf), id(guide)) -> weak references to the pair: the (cdf, guide) pairs whose values
#: passed :func:`check_inverse_cdf_args` and that :func:`cannot_change` (a Categorical's
#: tables): their O(k) value checks are not repeated on every call. A weak reference that no
#: longer gives the very same object is a miss (the pair is checked again).
_CHECKED_TABLES: dict[tuple[int, int], tuple[weakref.ref, weakref.ref]] = {}


def _remember_checked(cdf: np.ndarray, guide: np.ndarray) -> None:
    key = (id(cdf), id(guide))

    def forget(_: object) -> None:
        _CHECKED_TABLES.pop(key, None)  # at worst a later pair is checked once more

    _CHECKED_TABLES[key] = (weakref.ref(cdf, forget), weakref.ref(guide, forget))


def _checked_before(cdf: np.ndarray, guide: np.ndarray) -> bool:
    known = _CHECKED_TABLES.get((id(cdf), id(guide)))
    return known is not None and known[0]() is cdf and known[1]() is guide


def check_inverse_cdf_args(cdf: Any, guide: Any, u: Any, table: Any) -> None:
    """Raise (TypeError / ValueError naming the argument) unless :func:`inverse_cdf`'s
    arguments are safe for the kernel (the values of u are checked by the search itself).

    The values of a (cdf, guide) pair that :func:`cannot_change` are checked on its first
    call only (a Categorical's tables: O(k) per call would dominate a block of draws); any
    other pair, and every dtype, shape and layout, on every call.
    """
    _check_cdf_and_guide(cdf, guide)
    require("u", u, np.float64)
    if table is not None:
        require("table", table, np.float64, (cdf.size,))


def _check_cdf_and_guide(cdf: Any, guide: Any) -> None:
    require("cdf", cdf, np.float64, (None,))
    k = cdf.size
    if _checked_before(cdf, guide):  # the same objects, on an immutable buffer: the same
        require("guide", guide, np.int32, (None,))  # values, unless re-typed in place
        return
    if k == 0 or cdf[-1] != 1.0 or not np.all(np.diff(cdf) >= 0.0):
        raise ValueError("cdf must be a non-empty nondecreasing array ending in 1.0")
    require("guide", guide, np.int32, (None,))
    g = guide.size - 1
    if g < 1 or g & (g - 1):
        raise ValueError(f"guide must have g + 1 entries with g a power of two, got {g + 1}")
    if guide.min() < 0 or guide.max() > k - 1:
        raise ValueError(f"guide entries must be categories in [0, {k - 1}]")
    if cannot_change(cdf) and cannot_change(guide):
        _remember_checked(cdf, guide)


def check_family(family: Any) -> None:
    """Raise a one-line ValueError unless ``family`` is a name of :data:`FAMILIES`.

    >>> check_family("poisson")
    Traceback (most recent call last):
        ...
    ValueError: unknown family 'poisson'; valid: laplace, gamma, standard_t, beta
    """
    if not isinstance(family, str) or family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")


def family_is_compiled(family: str, p0: float, p1: float) -> bool:
    """Whether klest_fill_family reproduces NumPy's ``family`` at these parameters: the
    branches of numpy/random/src/distributions/distributions.c it has. Laplace (loc p0,
    scale p1): finite, scale > 0; gamma (shape p0, scale p1): shape > 1 (Marsaglia and
    Tsang's branch), scale > 0, both finite; standard_t (df p0): 2 < df < inf (its gamma's
    shape df / 2 > 1); beta (a p0, b p1): both > 1 and finite (the branch of two gammas).

    >>> family_is_compiled("gamma", 2.0, 1.0), family_is_compiled("gamma", 0.5, 1.0)
    (True, False)
    """
    check_family(family)
    if not (math.isfinite(p0) and math.isfinite(p1)):
        return False
    if family == "laplace":
        return p1 > 0.0
    if family == "gamma":
        return p0 > 1.0 and p1 > 0.0
    if family == "standard_t":
        return p0 / 2 > 1.0
    return p0 > 1.0 and p1 > 1.0

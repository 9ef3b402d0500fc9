"""Standard normal draws bit-identical to ``Generator(PCG64).standard_normal``, 3-4x faster.

NumPy's generator calls PCG64 through a function pointer for every draw. Here the PCG64 step
(a 128-bit LCG with the XSL-RR output, as in NumPy's ``pcg64.h``) and NumPy's 256-layer
ziggurat are compiled into one C loop (``klest/native/csrc/kernels.c``), reading and writing back
the generator's state. The output is the same stream, value for value, and the generator is
left where ``rng.standard_normal(size)`` would have left it; the tests check both over
millions of draws, including the ziggurat's tail branch. Every block size of a PCG64
generator goes through klest's own sampler (the stream is klest's: "klest stream v1"); with
the NumPy fallback (``klest.native.BACKEND == "numpy"``) that is
:mod:`klest.native.fallback_sampler`, the same draws. Only other bit generators go through
NumPy's own ``standard_normal`` (klest's stream is defined for PCG64 alone).

>>> import numpy as np
>>> a, b = np.random.default_rng(7), np.random.default_rng(7)
>>> bool(np.array_equal(standard_normal(a, 100_000), b.standard_normal(100_000)))
True
>>> bool(a.random() == b.random())  # both generators end in the same state
True
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np

from klest.native import checks as _checks
from klest.native import fallback as _fallback
from klest.native import fallback_sampler as _fallback_sampler

# the selected backend's fill_normal (klest.native.fallback chooses, from KLEST_NATIVE)
_fill_normal = (
    _fallback_sampler.fill_normal if _fallback.COMPILED is None else _fallback.COMPILED.fill_normal
)

# the compiled family samplers (None on the NumPy fallback: NumPy's own methods draw them)
_fill_family = None if _fallback.COMPILED is None else _fallback.COMPILED.fill_family

__all__ = [
    "family_draws",
    "pcg64_state",
    "pcg64_states",
    "quadratic_in_place",
    "scaled_normal",
    "standard_normal",
]

_MASK64 = (1 << 64) - 1


def standard_normal(rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
    """``rng.standard_normal(size)``: the same values and the same final state of ``rng``."""
    return scaled_normal(rng, size, 1.0, 0.0)


def scaled_normal(
    rng: np.random.Generator,
    size: int | tuple[int, ...],
    scale: float,
    loc: float,
    quadratic: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """``x = rng.standard_normal(size); x *= scale; x += loc``, bit for bit, in one pass.

    With ``quadratic = (a, b, c)``, returns ``((x * a) + b) * x + c`` instead, computed in
    that order (``x * b + c`` when a == 0): a Gaussian log-ratio, without writing x.
    ``scale``, ``loc`` and the coefficients are real scalars (NaN and inf are arithmetic, as
    in NumPy); a bad ``rng``, ``size`` or parameter is a one-line TypeError or ValueError.

    >>> scaled_normal(np.random.default_rng(0), -1, 1.0, 0.0)
    Traceback (most recent call last):
        ...
    ValueError: size must be non-negative, got -1
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    shape = _shape(size)
    count = math.prod(shape)
    if count * 8 > np.iinfo(np.intp).max:
        raise ValueError(f"size {size} is too large: {count} float64 values cannot be allocated")
    scale, loc = _checks.real_scalar("scale", scale), _checks.real_scalar("loc", loc)
    quadratic = None if quadratic is None else _checks.quadratic_coefficients(quadratic)
    bit_generator = rng.bit_generator
    # every PCG64 draw, at every size, is klest's own (a compiled call costs ~13 us for one
    # draw, NumPy's ~1 us; at 2,047 draws 20 us against NumPy's 25); other bit generators
    # and empty requests go through NumPy
    if count == 0 or type(bit_generator) is not np.random.PCG64:
        draws = rng.standard_normal(shape)
        if scale != 1.0 or loc != 0.0:
            draws *= scale
            draws += loc
        return draws if quadratic is None else quadratic_in_place(draws, *quadratic)
    out = np.empty(shape)
    with pcg64_state(bit_generator) as state:
        _fill_normal(state, out, scale, loc, quadratic)
    return out


def family_draws(
    rng: np.random.Generator, family: str, size: Any, p0: float, p1: float = 0.0
) -> np.ndarray:
    """``rng.<family>(...)``'s draws, bit for bit, and the generator left where it leaves
    it: ``laplace(p0, p1, size)``, ``gamma(p0, p1, size)``, ``standard_t(p0, size)`` or
    ``beta(p0, p1, size)``. For a PCG64 generator at parameters where NumPy takes the
    branches ``klest/native/csrc/family_stream.h`` reproduces
    (:func:`klest.native.checks.family_is_compiled`) the compiled loop draws them (NumPy
    calls its bit generator through a pointer for every uniform and normal); otherwise, and
    on the NumPy fallback, NumPy's own method does.

    >>> a, b = np.random.default_rng(2), np.random.default_rng(2)
    >>> bool(np.array_equal(family_draws(a, "gamma", 1000, 2.0, 1.5), b.gamma(2.0, 1.5, 1000)))
    True
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    _checks.check_family(family)
    scalars = all(isinstance(p, numbers.Real) for p in (p0, p1))  # arrays: NumPy broadcasts
    if size is None or not scalars or not _checks.family_is_compiled(family, float(p0), float(p1)):
        return _numpy_family(rng, family, size, p0, p1)
    shape = _shape(size)
    bit_generator = rng.bit_generator
    if _fill_family is None or math.prod(shape) == 0 or type(bit_generator) is not np.random.PCG64:
        return _numpy_family(rng, family, shape, p0, p1)
    out = np.empty(shape)
    with pcg64_state(bit_generator) as state:
        _fill_family(state, out, family, p0, p1)
    return out


def _numpy_family(rng: np.random.Generator, family: str, size: Any, p0: float, p1: float) -> Any:
    if family == "standard_t":
        return rng.standard_t(p0, size)
    return getattr(rng, family)(p0, p1, size)


@contextmanager
def pcg64_state(bit_generator: np.random.PCG64) -> Iterator[np.ndarray]:
    """The state of a PCG64 as the kernels take it, (4,) uint64 [hi, lo, inc_hi, inc_lo],
    written back to the generator on exit (with its lock held, as NumPy's own methods do)."""
    with pcg64_states([bit_generator]) as states:
        yield states[0]


@contextmanager
def pcg64_states(bit_generators: Sequence[np.random.PCG64]) -> Iterator[np.ndarray]:
    """:func:`pcg64_state` of several PCG64s at once: a (B, 4) uint64 array, row b the state
    of generator b, written back to each on exit (all their locks held meanwhile)."""
    for bit_generator in bit_generators:
        if type(bit_generator) is not np.random.PCG64:
            raise TypeError(f"a PCG64 bit generator is needed, got {type(bit_generator).__name__}")
    if len({id(b) for b in bit_generators}) != len(bit_generators):
        # one generator twice would give its blocks the same draws, and keep one advance only
        raise ValueError("each block needs its own generator; one was given twice")
    with ExitStack() as locks:
        fulls = []
        for bit_generator in bit_generators:
            locks.enter_context(bit_generator.lock)
            fulls.append(bit_generator.state)
        states = np.array(
            [
                [s >> 64, s & _MASK64, inc >> 64, inc & _MASK64]
                for s, inc in ((f["state"]["state"], f["state"]["inc"]) for f in fulls)
            ],
            dtype=np.uint64,
        ).reshape(len(fulls), 4)
        yield states
        for bit_generator, full, row in zip(bit_generators, fulls, states, strict=True):
            full["state"]["state"] = (int(row[0]) << 64) | int(row[1])
            bit_generator.state = full


def _shape(size: Any) -> tuple[int, ...]:
    """``size`` (an int or a sequence of ints) as a shape, each entry >= 0."""
    entries = (size,) if isinstance(size, int | np.integer) else size
    if (
        isinstance(entries, str | bytes)
        or not isinstance(entries, tuple | list)
        or not all(isinstance(n, int | np.integer) and not isinstance(n, bool) for n in entries)
    ):
        raise TypeError(f"size must be an int or a tuple of ints, got {size!r}")
    shape = tuple(int(n) for n in entries)
    if any(n < 0 for n in shape):
        raise ValueError(f"size must be non-negative, got {size!r}")
    return shape


def quadratic_in_place(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """((x * a) + b) * x + c in place (x * b + c when a == 0), as the compiled loop does."""
    if a != 0.0:
        y = x * a
        y += b
        x *= y
    else:
        x *= b
    x += c
    return x

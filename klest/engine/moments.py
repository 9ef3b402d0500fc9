"""Mergeable streaming statistics of several per-sample series evaluated on the same draws.

A :class:`Moments` holds, for each of E series (estimators, plus the control variate r - 1):
the count of finite values, their mean and central power sums M2, M3, M4, min/max, the count
of negative values, of non-finite values and of the +inf and -inf among them (the rest are
NaN), and a histogram on shared bins; and, over the draws where
*every* series is finite, the joint mean vector and co-moment matrix (for covariances between
estimators). Two Moments merge exactly (Chan et al.'s pairwise update, extended to third and
fourth moments by Pébay 2008); merging in a fixed order makes results bit-reproducible.

An :class:`Accumulator` folds blocks of per-sample values into such statistics with the
compiled kernel of ``klest/native/csrc/kernels.c`` (tiles of 1,024 draws reduced in the L1 cache,
two-pass, in a fixed summation order whatever the SIMD width), and can compute k1, k2 and
k3 itself from the log-ratio so that their values never travel through memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from klest import native as _native

__all__ = ["Accumulator", "Moments", "block_moments", "merge"]

_INDEX = {field: i for i, field in enumerate(_native.FIELDS)}
_MINIMUM, _MAXIMUM = _INDEX["minimum"], _INDEX["maximum"]
#: the integer columns (counts) of the accumulator's stats array
_COUNTS = frozenset(_INDEX[f] for f in ("count", "negative", "nonfinite", "posinf", "neginf"))


@dataclass(frozen=True)
class Moments:
    """Streaming statistics of E series; every array has leading dimension E."""

    count: np.ndarray  # (E,) int64: finite values per series
    mean: np.ndarray  # (E,)
    m2: np.ndarray  # (E,) sum of squared deviations from the mean
    m3: np.ndarray  # (E,)
    m4: np.ndarray  # (E,)
    minimum: np.ndarray  # (E,)
    maximum: np.ndarray  # (E,)
    negative: np.ndarray  # (E,) int64
    nonfinite: np.ndarray  # (E,) int64: non-finite values (+inf, -inf and NaN)
    posinf: np.ndarray  # (E,) int64: +inf values
    neginf: np.ndarray  # (E,) int64: -inf values
    joint_count: int  # draws where all series are finite
    joint_mean: np.ndarray  # (E,)
    comoment: np.ndarray  # (E, E) sum of products of deviations over joint draws
    histogram: np.ndarray  # (E, bins + 2) int64: [underflow, bins..., overflow]

    @property
    def n_series(self) -> int:
        return len(self.count)

    @property
    def nan(self) -> np.ndarray:
        """(E,) int64: NaN values per series (the non-finite values that are not ±inf)."""
        return self.nonfinite - self.posinf - self.neginf

    @property
    def draws(self) -> np.ndarray:
        """(E,) int64: every value per series, finite or not."""
        return self.count + self.nonfinite


class Accumulator:
    """Running statistics of E series over blocks of draws, folded in the order given.

    >>> import numpy as np
    >>> acc = Accumulator(2, edges=np.linspace(-4.0, 4.0, 9))
    >>> acc.add([np.array([0.5, -1.0, 2.0]), np.array([1.0, 2.0, np.inf])])
    >>> stats = acc.to_moments()
    >>> stats.mean.tolist(), stats.nonfinite.tolist(), stats.posinf.tolist(), stats.joint_count
    ([0.5, 1.5], [0, 1], [0, 1], 2)
    """

    def __init__(
        self,
        n_series: int,
        edges: np.ndarray | None = None,
        hist_stride: int = 1,
        hist_rows: int | None = None,
    ) -> None:
        n_series = _native.checked_int("n_series", n_series, 1)
        hist_stride = _native.checked_int("hist_stride", hist_stride, 1)
        if edges is not None:
            edges = _native.as_real_array("edges", edges)
            if edges.ndim != 1 or len(edges) < 2:
                raise ValueError(
                    f"edges must be 1-D with at least 2 entries, got shape {edges.shape}"
                )
            if not np.isfinite(edges).all() or not (np.diff(edges) > 0).all():
                raise ValueError("edges must be finite and strictly increasing")
        if hist_rows is not None:
            hist_rows = _native.checked_int("hist_rows", hist_rows, 0)
            if hist_rows > n_series:
                raise ValueError(f"hist_rows must be in [0, {n_series}], got {hist_rows}")
        self.stats = np.zeros((n_series, len(_native.FIELDS)))
        self.stats[:, _MINIMUM], self.stats[:, _MAXIMUM] = np.inf, -np.inf
        self.joint = np.zeros(n_series + 1)  # [joint count, joint means...]
        self.comoment = np.zeros((n_series, n_series))
        bins = 0 if edges is None else len(edges) - 1
        self.histogram = np.zeros((n_series, bins + 2 if bins else 0), dtype=np.int64)
        self._low = 0.0 if edges is None else float(edges[0])
        self._width = 1.0 if edges is None else float(edges[-1] - edges[0]) / bins
        self._stride = int(hist_stride)
        self._hist_rows = n_series if hist_rows is None else int(hist_rows)

    def add(
        self,
        values: np.ndarray | Sequence[np.ndarray | str],
        log_ratio: np.ndarray | None = None,
        expm1_log_ratio: np.ndarray | None = None,
    ) -> None:
        """Fold in one block: an (E, m) array, or a list of E series of m values.

        A series may also be named by its entry in ``klest.native.COMPUTED_SERIES``
        ("negate", "half_square", "k3"): the compiled accumulator then computes its values
        itself, tile by tile, from ``log_ratio`` and ``expm1_log_ratio`` (bit for bit the
        values of k1, k2 and k3), so they never travel through memory.
        """
        series: list[np.ndarray | str] = []
        for value in values:
            if isinstance(value, str):
                if value not in _native.COMPUTED_SERIES:
                    valid = ", ".join(_native.COMPUTED_SERIES)
                    raise ValueError(f"unknown computed series {value!r}; valid: {valid}")
                series.append(value)
            else:
                series.append(_native.as_real_array("values", value))
        inputs = [
            None if x is None else _native.as_real_array(label, x)
            for label, x in (("log_ratio", log_ratio), ("expm1_log_ratio", expm1_log_ratio))
        ]
        if len(series) != len(self.stats):
            raise ValueError(f"expected {len(self.stats)} series, got {len(series)}")
        arrays = [s for s in series if not isinstance(s, str)]
        arrays += [x for x in inputs if x is not None]
        if not arrays:
            raise ValueError("computed series need the log-ratio of the block")
        if any(array.ndim != 1 for array in arrays):
            raise ValueError("every series of a block must be 1-D")
        m = len(arrays[0])
        if m == 0:
            raise ValueError("a block needs at least one draw")
        if any(array.shape != (m,) for array in arrays):
            raise ValueError("every series of a block needs the same number of 1-D values")
        names = [s for s in series if isinstance(s, str)]
        if names and (inputs[0] is None or ("k3" in names and inputs[1] is None)):
            raise ValueError("computed series need the log-ratio (and for k3, its expm1)")
        _native.accumulate(series, inputs[0], inputs[1], *self._arrays())

    def add_computed(self, names: Sequence[str], log_ratio: np.ndarray | None) -> None:
        """Fold in one block whose every series is named in ``klest.native.COMPUTED_SERIES``
        ("expm1" is r - 1 itself), computed from its log-ratio in one compiled pass with
        expm1: the same bits as :meth:`add` given those arrays and expm1(log_ratio)."""
        l = None if log_ratio is None else _native.as_real_array("log_ratio", log_ratio)
        _native.block_stats(names, l, None, *self._arrays())

    def add_normal_blocks(
        self,
        names: Sequence[str],
        generators: Sequence[np.random.Generator] | np.ndarray,
        lengths: Sequence[int],
        scale: float,
        loc: float,
        quadratic: tuple[float, float, float] | None,
    ) -> None:
        """:meth:`add_computed` for blocks of Gaussian draws, in one compiled call: block b is
        ``lengths[b]`` draws x = loc + scale z from PCG64 generator ``generators[b]``
        (advanced as ``klest.native.scaled_normal`` would advance it), whose log-ratio is
        ((x a) + b) x + c for ``quadratic`` = (a, b, c) (x itself for None); the draws are
        never written out."""
        with _block_states(generators, lengths) as (states, counts):
            normal = (states, counts, scale, loc, quadratic)
            _native.block_stats(names, None, normal, *self._arrays())

    def add_categorical_blocks(
        self,
        names: Sequence[str],
        generators: Sequence[np.random.Generator] | np.ndarray,
        lengths: Sequence[int],
        tables: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        """:meth:`add_computed` for blocks of Categorical draws, in one compiled call: block b
        is the categories of ``lengths[b]`` uniforms of PCG64 generator ``generators[b]``
        (``Generator.random``'s, the generator advanced as that would advance it) by the
        inverse CDF of ``tables`` = (cdf, guide, pairs), pairs[c] the log-ratio of category c
        and its expm1; the draws are never written out."""
        with _block_states(generators, lengths) as (states, counts):
            categorical = (states, counts, *tables)
            _native.categorical_block_stats(names, categorical, *self._arrays())

    def add_laplace_blocks(
        self,
        names: Sequence[str],
        generators: Sequence[np.random.Generator] | np.ndarray,
        lengths: Sequence[int],
        parameters: tuple[float, float, tuple[float, float, float, float, float]],
    ) -> None:
        """:meth:`add_computed` for blocks of Laplace draws, in one compiled call: block b is
        ``lengths[b]`` draws x of ``generators[b].laplace(loc, scale)`` (the generator
        advanced as that would advance it), ``parameters`` = (loc, scale, (a, b, c, d, e)),
        with log-ratio (|x - a| b - |x - c| d) + e; the draws are never written out."""
        loc, scale, coefficients = parameters
        with _block_states(generators, lengths) as (states, counts):
            laplace = (states, counts, loc, scale, coefficients)
            _native.laplace_block_stats(names, laplace, *self._arrays())

    def add_mixture_blocks(
        self,
        names: Sequence[str],
        generators: Sequence[np.random.Generator] | np.ndarray,
        lengths: Sequence[int],
        parameters: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        """:meth:`add_computed` for blocks of GaussianMixture draws, in one compiled call:
        block b is ``lengths[b]`` draws of ``GaussianMixture._sample`` from ``generators[b]``
        (advanced as that would advance it), ``parameters`` = (cuts, locs, scales, q_terms,
        p_terms) (``klest.distributions.log_ratio.fused_mixture_parameters``); the draws are
        never written out."""
        with _block_states(generators, lengths) as (states, counts):
            _native.mixture_block_stats(names, (states, counts, *parameters), *self._arrays())

    def _arrays(self) -> tuple:
        """The accumulator's arrays and histogram settings, as the kernels take them."""
        return (
            self.stats, self.joint, self.comoment, self.histogram, self._hist_rows,
            self._stride, self._low, self._width,
        )  # fmt: skip

    def to_moments(self) -> Moments:
        """The statistics so far, as an immutable (mergeable) :class:`Moments`."""
        return _from_arrays(
            self.stats.copy(), self.joint.copy(), self.comoment.copy(), self.histogram.copy()
        )


@contextmanager
def _block_states(
    generators: Sequence[np.random.Generator] | np.ndarray, lengths: Sequence[int]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (B, 4) PCG64 states of the blocks' generators (written back to them on exit) and
    the (B,) int64 draw counts of the blocks. ``generators`` may be those states themselves,
    a (B, 4) uint64 array (:func:`klest.engine.seeding.block_states`), advanced in place."""
    counts = np.array([_native.checked_int("lengths", m, 1) for m in lengths], np.int64)
    if isinstance(generators, np.ndarray):
        yield generators, counts
        return
    with _native.pcg64_states([rng.bit_generator for rng in generators]) as states:
        yield states, counts


def _as_arrays(moments: Moments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stats, joint, comoment) in the compiled accumulator's layout (fresh arrays)."""
    stats = np.column_stack([getattr(moments, field) for field in _native.FIELDS])
    joint = np.concatenate([[float(moments.joint_count)], moments.joint_mean])
    return stats.astype(np.float64), joint, np.array(moments.comoment, dtype=np.float64)


def _from_arrays(
    stats: np.ndarray, joint: np.ndarray, comoment: np.ndarray, histogram: np.ndarray
) -> Moments:
    columns = {
        field: stats[:, i].astype(np.int64) if i in _COUNTS else stats[:, i]
        for i, field in enumerate(_native.FIELDS)
    }
    return Moments(
        **columns,
        joint_count=int(joint[0]),
        joint_mean=joint[1:],
        comoment=comoment,
        histogram=histogram,
    )


def block_moments(
    values: np.ndarray | list[np.ndarray],
    edges: np.ndarray | None,
    hist_stride: int,
    hist_rows: int | None = None,
) -> Moments:
    """Statistics of one block: ``values`` is an (E, m) array or a list of E rows of m values.

    ``edges`` are the shared histogram bin edges (``None``: no histogram); the histogram uses
    every ``hist_stride``-th draw of the block, of the first ``hist_rows`` rows (all rows by
    default; the others get zero counts).
    """
    accumulator = Accumulator(len(values), edges, hist_stride, hist_rows)
    accumulator.add(values)
    return accumulator.to_moments()


def merge(a: Moments, b: Moments) -> Moments:
    """Combine the statistics of two disjoint sets of draws (a first, then b), with the
    compiled accumulator's own update (``klest_merge``)."""
    stats, joint, comoment = _as_arrays(a)
    _native.merge(stats, joint, comoment, *_as_arrays(b))
    return _from_arrays(stats, joint, comoment, a.histogram + b.histogram)

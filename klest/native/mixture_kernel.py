"""The log-ratio of two finite mixtures of 1-D normals, in NumPy: the definition that
``csrc/mixture.c`` (klest_mixture_log_ratio) follows operation for operation, and klest's
fallback for it. The seam (:mod:`klest.native`) passes the expm1 and log to use: klest's own
(compiled or :mod:`klest._special`), the same bits on every CPU and NumPy build.

A mixture reaches the kernel as its (3, K) rows of :func:`mixture_terms`.

>>> terms = mixture_terms(np.array([0.5, 0.5]), np.array([-1.0, 1.0]), np.array([1.0, 2.0]))
>>> terms.shape
(3, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from klest.native.checks import (
    _check_accumulator_arrays,
    _check_block_states,
    _check_computed_names,
    require,
)

Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]


def mixture_terms(weights: np.ndarray, locs: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The (3, K) rows a = log w - log s, m (the means) and c = sqrt(1/2) / s over the K
    components of positive weight (math.log and IEEE division: the same bits everywhere), as
    a read-only C-contiguous float64 array."""
    active = np.flatnonzero(np.asarray(weights) > 0.0)
    terms = np.empty((3, active.size))
    for column, i in enumerate(active):
        weight, loc, scale = float(weights[i]), float(locs[i]), float(scales[i])
        terms[:, column] = (math.log(weight) - math.log(scale), loc, math.sqrt(0.5) / scale)
    terms.setflags(write=False)
    return terms


#: up to this many components, a draw's component is counted by comparisons, not searched
_COMPARISON_PICK = 8


def mixture_draws(
    u: np.ndarray, z: np.ndarray, cuts: np.ndarray, locs: np.ndarray, scales: np.ndarray
) -> np.ndarray:
    """x = z * scales[i] + locs[i] in place of the standard normal draws ``z``, i the component
    of each uniform ``u``: the number of the K - 1 nondecreasing ``cuts`` that are <= u
    (``searchsorted(cuts, u, "right")``). GaussianMixture's draws, and the NumPy definition
    of the compiled mixture pass's (which counts the same way)."""
    k = cuts.size + 1
    if k == 1:
        z *= scales[0]
        z += locs[0]
        return z
    if k <= _COMPARISON_PICK:
        # small indices as uint8: take() with them is ~4x faster than np.where
        component = (u >= cuts[0]).view(np.uint8)
        if k > 2:
            component = component.copy()
            for cut in cuts[1:]:
                component += u >= cut
    else:
        component = np.searchsorted(cuts, u, side="right")
    z *= scales.take(component)
    z += locs.take(component)
    return z


def check_mixture_args(x: Any, q_terms: Any, p_terms: Any, out: Any) -> None:
    """Raise (TypeError / ValueError naming the argument) unless the arguments are what the
    kernel may index blindly and compute with: 1-D float64 ``x`` and a writable ``out`` of its
    shape; each ``*_terms`` a (3, K) float64 array, K >= 1, with finite entries and c > 0."""
    require("x", x, np.float64, (None,))
    require("out", out, np.float64, x.shape, writable=True)
    _check_terms(q_terms, p_terms)


def check_mixture_block_stats_args(
    series: Any,
    mixture: Any,
    stats: Any,
    joint: Any,
    comoment: Any,
    histogram: Any,
    hist_rows: Any,
    stride: Any,
    low: Any,
    width: Any,
) -> None:
    """Check ``mixture_block_stats``'s arguments: the series and accumulator as
    ``check_block_stats_args``, ``mixture`` = (states, lengths, cuts, locs, scales, q_terms,
    p_terms): states and lengths as there; q's K component means ``locs`` and scales
    ``scales`` (finite, 1-D float64) and its K - 1 cut points ``cuts`` (nondecreasing finite
    cumulative weights); the terms as :func:`check_mixture_args`'s."""
    _check_computed_names(series)
    if not isinstance(mixture, tuple) or len(mixture) != 7:
        raise TypeError("mixture must be (states, lengths, cuts, locs, scales, q_terms, p_terms)")
    states, lengths, cuts, locs, scales, q_terms, p_terms = mixture
    _check_block_states(states, lengths)
    require("locs", locs, np.float64, (None,))
    if locs.size == 0:
        raise ValueError("locs must have at least one component, got none")
    require("scales", scales, np.float64, locs.shape)
    require("cuts", cuts, np.float64, (locs.size - 1,))
    for name, values in (("locs", locs), ("scales", scales), ("cuts", cuts)):
        if not np.isfinite(values).all():
            raise ValueError(f"{name} must be finite, got {values!r}")
    if np.any(np.diff(cuts) < 0.0):
        raise ValueError(f"cuts must be nondecreasing, got {cuts!r}")
    _check_terms(q_terms, p_terms)
    _check_accumulator_arrays(len(series), stats, joint, comoment, histogram, hist_rows, stride,
                              low, width)  # fmt: skip


def _check_terms(q_terms: Any, p_terms: Any) -> None:
    for name, terms in (("q_terms", q_terms), ("p_terms", p_terms)):
        require(name, terms, np.float64, (3, None))
        if terms.shape[1] == 0:
            raise ValueError(f"{name} must have at least one component (column), got none")
        bad = np.argwhere(~np.isfinite(terms) | (np.arange(3) == 2)[:, None] & (terms <= 0.0))
        if bad.size:
            row, column = bad[0].tolist()
            raise ValueError(
                f"{name} must be finite with positive c (row 2), got {terms[row, column]!r} "
                f"at [{row}, {column}]"
            )


def log_sum_exp_parts(x: np.ndarray, terms: np.ndarray, expm1: Kernel) -> tuple[Any, Any]:
    """(top, total) with log sum_j w_j N(x; m_j, s_j²) = top + log(total) + log(2π)/2, for
    the 1-D draws ``x`` and the mixture's ``terms`` (one pass per component, no (n, K) array).

    t_j = a_j - ((x - m_j) c_j)², top = max_j t_j and total = sum_j exp(t_j - top), in
    [1, K]: 1 for one component, 2 + expm1(min - max) for two (one expm1, not two), and
    K + sum_j expm1(t_j - top) otherwise (each term within ~2^-52 of its exp, so total is
    within K ulp of 1). Where every t_j is -inf, top is -inf and total NaN. Call it under
    ``np.errstate(over="ignore", invalid="ignore")`` (the square may overflow: t_j = -inf).
    """
    rows = []
    for a, m, c in terms.T.tolist():
        t = x - m
        t *= c
        t *= t
        np.subtract(a, t, out=t)
        rows.append(t)
    if len(rows) == 1:
        return rows[0], np.ones_like(rows[0])
    top = np.maximum(rows[0], rows[1])
    if len(rows) == 2:
        gap = np.minimum(rows[0], rows[1], out=rows[0])
        gap -= top  # -|t_0 - t_1| (NaN where both are -inf)
        expm1(gap, gap)
        gap += 2.0  # 1 + exp(gap)
        return top, gap
    for t in rows[2:]:
        np.maximum(top, t, out=top)
    total = np.zeros_like(top)
    for t in rows:
        t -= top
        expm1(t, t)
        total += t
    total += float(len(rows))  # sum of exp(t - top) = K + sum of expm1(t - top)
    return top, total


def mixture_log_ratio(
    x: np.ndarray,
    q_terms: np.ndarray,
    p_terms: np.ndarray,
    out: np.ndarray,
    expm1: Kernel,
    log: Kernel,
) -> np.ndarray:
    """``out[:] = log p(x) - log q(x)`` = (top_p - top_q) + log(total_p / total_q) for 1-D
    ``x`` (the log(2π)/2 of both sides cancelled; NaN where both sides are -inf), and return
    ``out`` (it may be ``x``)."""
    check_mixture_args(x, q_terms, p_terms, out)
    with np.errstate(over="ignore", invalid="ignore"):
        top_p, total_p = log_sum_exp_parts(x, p_terms, expm1)
        top_q, total_q = log_sum_exp_parts(x, q_terms, expm1)
        total_p /= total_q
        log(total_p, total_p)
        np.subtract(top_p, top_q, out=out)
        out += total_p
    return out

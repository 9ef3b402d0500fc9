"""Exact E_q[g(X)] for a discrete q: enumeration of a finite support, a bounded series otherwise.

* **Finite support** (Bernoulli, Categorical — batched too — or any finite ``Support``): g is
  evaluated on every support point, in chunks so that memory stays bounded for 256k-entry
  vocabularies and large batches, and the terms q(x)·g(x) are summed. Points where q has no
  mass contribute 0 even where g is inf or NaN there. ``abs_error`` is the rounding bound
  (m + 1)·eps·sum|q(x) g(x)| for m support points.
* **Countable support** (Poisson): the terms t_k = q(k)·g(k) are summed from the low end of the
  support in blocks until a tail bound from the ratio test (once the ratios |t_{k+1}/t_k| are
  below ρ < 1 and non-increasing, the tail is at most |t_K|·ρ/(1-ρ)) is below
  ``rtol``·|sum|. ``abs_error`` is that bound plus the rounding bound. Terms that never decay
  make the result ``inf`` with ``finite=False`` and the reason, never a truncated number.

Nothing overflows: where g itself is ±inf (exp of a large log-ratio), or q(x) is subnormal,
a term is sign(g)·exp(log q(x) + log|g(x)|), with ``log_abs_g`` supplying log|g| where g
overflowed — q(x)·exp(800) is finite when q(x) is tiny.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from klest._special import as_float_or_array
from klest.distributions.base import Distribution
from klest.integrate.result import Expectation

__all__ = ["expect_discrete"]

ArrayFn = Callable[[np.ndarray], Any]

_CHUNK = 1 << 18  # (support points) x (batch entries) evaluated at once
_EPS = float(np.finfo(np.float64).eps)
_LOG_TINY = math.log(float(np.finfo(np.float64).tiny))  # below: q(x) is subnormal
_WINDOW = 16  # ratios inspected by the tail test
_MIN_BLOCK = 64  # smallest series block (> _WINDOW + 1)
_FIRST_BLOCK_SDS = 40.0  # the first series block reaches mean + 40 sd (+ _MIN_BLOCK)
_MAX_SERIES_TERMS = 1 << 22  # terms summed past the first block before declaring divergence
_ABS_FLOOR = 1e-300


def expect_discrete(
    q: Distribution,
    g: ArrayFn,
    *,
    log_abs_g: ArrayFn | None = None,
    rtol: float = 1e-13,
) -> Expectation:
    """E_q[g(X)] for a discrete q, exactly (finite support) or with a tail bound (countable).

    ``g`` is elementwise: it receives float64 support points of shape
    ``(m,) + (1,) * len(batch)`` and returns values broadcastable to ``(m, *batch)``, where
    ``batch`` is q's batch shape, widened when g broadcasts against a larger batch (as
    ``b.log_prob`` does in KL(a||b) with a batched b). ``log_abs_g`` gives log|g| where g
    overflows. ``rtol`` is the relative tail tolerance of a series. Returns an
    :class:`~klest.integrate.Expectation` with method ``"enumeration"`` or ``"series"``.

    >>> import numpy as np
    >>> from klest.distributions import Categorical, Poisson
    >>> expect_discrete(Categorical(probs=[0.25, 0.75]), lambda x: x).value
    0.75
    >>> res = expect_discrete(Poisson(rate=3.0), lambda x: x * x)  # E[X²] = λ + λ²
    >>> round(res.value, 12), res.method, res.abs_error < 1e-11
    (12.0, 'series', True)
    >>> from scipy.special import gammaln
    >>> growing = expect_discrete(
    ...     Poisson(rate=2.0), lambda x: np.exp(gammaln(x + 1)), log_abs_g=lambda x: gammaln(x + 1)
    ... )
    >>> growing.value, growing.finite
    (inf, False)
    """
    if not isinstance(q, Distribution) or not q.discrete:
        raise TypeError(f"expect_discrete needs a discrete klest distribution, got {q!r}")
    if not (isinstance(rtol, int | float) and 0.0 < rtol < 1.0):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    support = q.support
    if support.dim != 1 or q.event_shape:
        raise ValueError(f"expect_discrete needs a 1-D support, got {support.describe()}")
    if not math.isfinite(support.low):
        raise ValueError(
            f"expect_discrete sums from the low end of the support, which is unbounded "
            f"({support.describe()})"
        )
    low = int(support.low)
    batch = _batch_shape(q, g, low)
    if support.finite:
        return _enumerate(q, g, log_abs_g, low, int(support.high), batch)
    return _series(q, g, log_abs_g, low, batch, rtol)


# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------


def _call(fn: ArrayFn, x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(fn(x), dtype=np.float64)


def _batch_shape(q: Distribution, g: ArrayFn, low: int) -> tuple[int, ...]:
    """The batch shape of the result: q's, widened when g broadcasts against a larger batch.

    g is probed at one point arranged as ``(1,) * (1 + len(q.batch_shape))``. An output of
    more dimensions, or a first axis other than 1, means g carries batch dimensions of its
    own (KL(a||b) with b batched and a not); the probe is repeated with enough dimensions.
    """
    q_batch = q.batch_shape
    rank = len(q_batch)
    out = _call(g, np.full((1,) * (1 + rank), float(low))).shape
    if len(out) > 1 + rank or (len(out) == 1 + rank and out[0] != 1):
        rank = len(out)
        out = _call(g, np.full((1,) * (1 + rank), float(low))).shape
        if len(out) != 1 + rank or out[0] != 1:
            raise ValueError(f"g must be elementwise; its output shape {out} does not follow x")
    try:
        return np.broadcast_shapes(tuple(out[1:]), q_batch)
    except ValueError:
        raise ValueError(
            f"g's output shape {out} does not broadcast against q's batch shape {q_batch}"
        ) from None


def _points(start: int, stop: int, batch: tuple[int, ...]) -> np.ndarray:
    return np.arange(start, stop, dtype=np.float64).reshape((-1,) + (1,) * len(batch))


def _chunk_terms(
    q: Distribution,
    g: ArrayFn,
    log_abs_g: ArrayFn | None,
    x: np.ndarray,
    batch: tuple[int, ...],
    logs: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(terms q(x) g(x), g(x), log|term|, scale of the log inputs) on one chunk of points.

    Terms are 0 where q has no mass; sign(g)·exp(log q + log|g|) where g is non-finite or q(x)
    subnormal. The logs are only formed for the series' tail test (``logs=True``).
    """
    shape = (x.shape[0], *batch)
    logq = np.broadcast_to(_call(q.log_prob, x), shape)
    gx = np.broadcast_to(_call(g, x), shape)
    mass = logq > -np.inf
    with np.errstate(all="ignore"):
        terms = np.where(mass, np.exp(logq) * gx, 0.0)
        nonfinite_g = ~np.isfinite(gx)
        need_log = mass & (nonfinite_g | (logq < _LOG_TINY)) & (gx != 0.0)
        if not (logs or np.any(need_log)):
            return terms, gx, None, None
        log_abs = np.log(np.abs(gx))
        if log_abs_g is not None and np.any(mass & np.isinf(gx)):
            log_abs = np.where(np.isinf(gx), np.broadcast_to(_call(log_abs_g, x), shape), log_abs)
        log_terms = np.where(mass, logq + log_abs, -np.inf)
        terms = np.where(need_log, np.sign(gx) * np.exp(log_terms), terms)
        scale = np.abs(logq) + np.abs(log_abs)
    return terms, gx, log_terms, scale


class _Accumulator:
    """Running sums of the terms and of their absolute values, and the first bad point."""

    def __init__(self, batch: tuple[int, ...]) -> None:
        self.total = np.zeros(batch)
        self.abs_total = np.zeros(batch)
        self.count = 0
        self.offender = ""

    def add(self, terms: np.ndarray, gx: np.ndarray, x: np.ndarray) -> None:
        with np.errstate(all="ignore"):
            self.total = self.total + terms.sum(axis=0)
            self.abs_total = self.abs_total + np.abs(terms).sum(axis=0)
        self.count += terms.shape[0]
        if not self.offender:
            bad = ~np.isfinite(terms)
            if np.any(bad):
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                g_value = gx[where]
                at = f"x = {x.reshape(-1)[where[0]]:g}" + (
                    f" (batch index {where[1:]})" if len(where) > 1 else ""
                )
                if np.isfinite(g_value):
                    self.offender = f"q(x)·g(x) overflows float64 at {at}"
                else:
                    self.offender = f"g(x) = {g_value} at {at}, where q has mass"

    def rounding(self) -> np.ndarray:
        return (self.count + 1) * _EPS * self.abs_total


def _nonfinite_reason(total: np.ndarray, offender: str) -> str:
    bad = ~np.isfinite(total)
    count = f" (in {int(bad.sum())} of {bad.size} batch entries)" if total.ndim else ""
    if np.any(np.isnan(total)):
        what = "E_q[g] is undefined (NaN, or infinite terms of both signs)"
    else:
        what = "E_q[g] is infinite"
    return f"{what}{count}: {offender or 'the sum overflows float64'}"


# --------------------------------------------------------------------------------------
# Finite support: enumeration
# --------------------------------------------------------------------------------------


def _enumerate(
    q: Distribution,
    g: ArrayFn,
    log_abs_g: ArrayFn | None,
    low: int,
    high: int,
    batch: tuple[int, ...],
) -> Expectation:
    step = max(1, _CHUNK // max(1, math.prod(batch)))
    acc = _Accumulator(batch)
    for start in range(low, high + 1, step):
        x = _points(start, min(start + step, high + 1), batch)
        terms, gx, _, _ = _chunk_terms(q, g, log_abs_g, x, batch, logs=False)
        acc.add(terms, gx, x)
    finite = bool(np.all(np.isfinite(acc.total)))
    abs_error = np.where(np.isfinite(acc.total), acc.rounding(), np.inf)
    return Expectation(
        value=as_float_or_array(acc.total),
        abs_error=as_float_or_array(abs_error),
        method="enumeration",
        finite=finite,
        reason="" if finite else _nonfinite_reason(acc.total, acc.offender),
    )


# --------------------------------------------------------------------------------------
# Countable support: series with a ratio-test tail bound
# --------------------------------------------------------------------------------------


def _tail_bound(log_terms: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Bound on sum_{k>K} |t_k| from the last ``_WINDOW`` ratios (axis 0), per batch entry.

    Needs the ratios r_k = |t_{k+1}/t_k| to be non-increasing and below 1 (within the
    rounding of the logs, ``tol``); with ρ the largest of them the tail is at most
    |t_K|·ρ/(1-ρ) = |t_K|/expm1(-log ρ), assuming the ratios keep decreasing. A window of
    exactly-zero terms bounds the tail by 0. Otherwise the bound is ``inf`` (not yet valid).
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        tol = 32.0 * _EPS * np.maximum(np.max(scale, axis=0), 1.0)
        d = np.diff(log_terms, axis=0)
        decreasing = np.all(np.diff(d, axis=0) <= 4.0 * tol, axis=0)
        log_rho = np.max(d, axis=0) + 2.0 * tol
        valid = np.all(np.isfinite(log_terms), axis=0) & decreasing & (log_rho < 0.0)
        bound = np.exp(log_terms[-1] - np.log(np.expm1(-np.where(valid, log_rho, -1.0))))
    bound = np.where(valid, bound, np.inf)
    return np.where(np.all(log_terms == -np.inf, axis=0), 0.0, bound)


def _first_block_end(q: Distribution, low: int) -> int:
    """Mean + 40 sd (+ 64) of q: the block summed before the tail test is first applied."""
    try:
        centre = float(np.max(q.mean()))
        spread = math.sqrt(float(np.max(q.variance())))
    except (NotImplementedError, ValueError, TypeError, AttributeError):
        centre, spread = float(low), 1.0
    if not (math.isfinite(centre) and math.isfinite(spread)):
        centre, spread = float(low), 1.0
    return low + _MIN_BLOCK + math.ceil(max(centre - low, 0.0) + _FIRST_BLOCK_SDS * spread)


def _converged(bound: np.ndarray, acc: _Accumulator, rtol: float) -> np.ndarray:
    """Tail bound below rtol·|sum| plus a floor (rounding of the sum, 1e-300)."""
    with np.errstate(invalid="ignore"):
        return bound <= rtol * np.abs(acc.total) + _EPS * acc.abs_total + _ABS_FLOOR


def _series(
    q: Distribution,
    g: ArrayFn,
    log_abs_g: ArrayFn | None,
    low: int,
    batch: tuple[int, ...],
    rtol: float,
) -> Expectation:
    max_step = max(_MIN_BLOCK, _CHUNK // max(1, math.prod(batch)))
    first_end = _first_block_end(q, low)
    if first_end - low > _MAX_SERIES_TERMS:  # Poisson(rate=1e300): its bulk is 1e300 terms out
        raise ValueError(
            f"summing E_q[g(X)] over the support of {q!r} needs about {first_end - low:.3g} "
            f"terms to reach its bulk, beyond the {_MAX_SERIES_TERMS} an enumeration sums"
        )
    cap = first_end + _MAX_SERIES_TERMS
    acc = _Accumulator(batch)
    tail_logs = tail_scale = None
    bound = np.full(batch, np.inf)
    start, step = low, max(_MIN_BLOCK, (first_end - low) // 4)
    while True:
        stop = start + (min(max_step, first_end - start) if start < first_end else step)
        x = _points(start, stop, batch)
        terms, gx, log_terms, scale = _chunk_terms(q, g, log_abs_g, x, batch, logs=True)
        acc.add(terms, gx, x)
        keep = slice(-(_WINDOW + 1), None)
        if tail_logs is not None:  # keep the window across block boundaries
            log_terms = np.concatenate([tail_logs, log_terms[keep]])
            scale = np.concatenate([tail_scale, scale[keep]])
        tail_logs, tail_scale = log_terms[keep], scale[keep]
        if start >= first_end:
            step = min(2 * step, max_step)
        start = stop
        if start < first_end or tail_logs.shape[0] < _WINDOW + 1:
            continue
        settled = ~np.isfinite(acc.total)
        bound = np.where(settled, np.inf, _tail_bound(tail_logs, tail_scale))
        if np.all(settled | _converged(bound, acc, rtol)) or start >= cap:
            break

    total = acc.total
    undecided = np.isfinite(total) & ~_converged(bound, acc, rtol)
    reason = ""
    if np.any(undecided):
        total = np.where(undecided, np.copysign(np.inf, total), total)
        count = f" in {int(undecided.sum())} of {undecided.size} batch entries" if batch else ""
        reason = (
            f"the series does not converge{count}: after {acc.count} terms (up to x = "
            f"{start - 1}) the terms q(x)·g(x) still do not decay geometrically"
        )
    elif not np.all(np.isfinite(total)):
        reason = _nonfinite_reason(total, acc.offender)
    finite = bool(np.all(np.isfinite(total)))
    abs_error = np.where(np.isfinite(total), bound + acc.rounding(), np.inf)
    return Expectation(
        value=as_float_or_array(total),
        abs_error=as_float_or_array(abs_error),
        method="series",
        finite=finite,
        reason=reason,
    )

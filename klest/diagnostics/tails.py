"""Tail diagnostics: the PSIS Pareto shape k̂ (arviz-stats), effective sample sizes, verdicts.

A variable X ≥ 0 whose tail is generalised-Pareto with shape k has finite moments of order
< 1/k: the variance is finite iff k < 1/2, the mean iff k < 1. Pareto-smoothed importance
sampling (Vehtari, Simpson, Gelman, Yao, Gabry 2024) fits the shape to the largest
M = ⌊3 √n⌋ values (arviz-stats 0.8; 0.5 uses ⌈3 √n⌉, and ⌊n/5⌋ for small n) above the next
largest, the threshold. The fit is arviz-stats' own (``array_stats.psislw``); klest never
writes it by hand.

**Which tail.** An estimator's per-token value v has a finite variance iff E[v²] < ∞, which
the tail of |v| decides: k̂ is fitted to |v| for every estimator. For k1 = −l that is the
tail of |l|, for k2 = l²/2 that of l² (shape twice that of |l|), for k3 = r − 1 − log r both
tails at once: r's as r → ∞ (k3 ~ r: for q = N(0,1), p = N(0, s²), k = 1 − 1/s²) and
|log r|'s as r → 0 (k3 ~ −l: for q = StudentT(3), p = N(0, 1), r is bounded but
k3 ~ x²/2 has k = 2/3 and an infinite variance, which the tail of r alone would miss). The
tail of r = exp(l) itself (the importance ratio π_ref/π) and of the behaviour weights
ρ = π/μ are fitted too: they are what the tail plot shows.

**Bounded memory.** The fit uses only the M + 1 largest values and n. A
:class:`~klest.diagnostics.accumulate.TailBuffer` keeps the largest 65,536 (enough up to
n ≈ 4.8·10^8); when it has dropped values, arviz is given a reconstruction of n' ≪ n values,
the kept M + 1 largest and n' − M − 1 copies of the threshold, with ``r_eff = n'/N`` chosen
so that arviz's own tail-length rule gives the same M as for all n values: the same numbers
in, the same k̂ out (tests/test_diagnose_stats.py compares it with arviz on all the values).
The threshold copies only change the smoothed weights, which are not used.

>>> import numpy as np
>>> from klest.diagnostics.accumulate import TailBuffer
>>> x = np.random.default_rng(0).pareto(1 / 0.7, 20_000)  # k = 0.7
>>> buf = TailBuffer(capacity=2_000)
>>> buf.add(np.log1p(x))
>>> fit = psis_fit(buf)
>>> round(fit.khat, 1), fit.tail_length in (424, 425), buf.complete  # 425: arviz-stats 0.5
(0.7, True, False)
>>> verdict(fit.khat)
'variance likely infinite (k-hat in [0.7, 1)): do not trust the error bar'
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from arviz_stats.base import array_stats

from klest.diagnostics.accumulate import TailBuffer

__all__ = ["TailFit", "arviz_tail_length", "psis_fit", "psis_khat", "verdict"]

#: log values below max - UNDERFLOW are 0 after arviz's exp(x - max): identical to -inf
_UNDERFLOW = 800.0


@dataclass(frozen=True)
class TailFit:
    """A PSIS fit: ``khat``, the GPD scale ``sigma`` and ``threshold`` (in value units, not
    logs), ``tail_length`` M, ``n`` values in all, the tail's largest values (log units,
    ascending) and ``status``: "ok", "nonfinite", "constant", "tied", "too few" or
    "buffer too small"."""

    khat: float
    sigma: float
    threshold: float
    tail_length: int
    n: int
    log_values: np.ndarray = field(repr=False)
    status: str = "ok"

    def as_dict(self, series: str) -> dict:
        with np.errstate(over="ignore"):
            values = np.exp(self.log_values)
        return {
            "series": series,
            "values": values,
            "log_values": self.log_values,
            "khat": self.khat,
            "sigma": self.sigma,
            "threshold": self.threshold,
            "tail_length": self.tail_length,
            "n": self.n,
            "status": self.status,
        }


def arviz_tail_length(n: int, r_eff: float = 1.0) -> int:
    """M, the number of tail draws the installed arviz-stats fits for n draws."""
    rule = getattr(array_stats, "_get_ps_tails", None)
    if rule is not None:
        return int(rule(n, r_eff, tail="right"))
    return math.floor(3 * math.sqrt(n / r_eff)) if n * r_eff > 225 else n // 5


def _compact(top: np.ndarray, n: int, m: int) -> tuple[np.ndarray, float] | None:
    """(n' values, r_eff) that make arviz fit the same M + 1 largest values as for n values."""
    size = max(20 * (m + 1), 1000)
    for target in (m + 0.5, m - 0.5, float(m)):
        r_eff = size / ((target / 3.0) ** 2)
        if arviz_tail_length(size, r_eff) == m and 0.2 * size >= m:
            arr = np.full(size, top[-(m + 1)])
            arr[-(m + 1) :] = top[-(m + 1) :]
            return arr, r_eff
    return None


def _fit(arr: np.ndarray, r_eff: float) -> tuple[float, np.ndarray]:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        # arviz's psislw(ary) fits the right tail of exp(-ary): ary = -log values
        lw, khat = array_stats.psislw(-arr, r_eff)
    return float(khat), np.asarray(lw, dtype=np.float64)


def _scale(lw: np.ndarray, arr: np.ndarray, m: int, khat: float) -> float:
    """The GPD scale arviz fitted (in units of exp(log value - max)), read back from the
    smoothed tail it returns: smoothed_i = u + sigma ((1 - p_i)^(-k) - 1)/k, p_i = (i+½)/M."""
    top = float(arr.max())
    cutoff = float(np.sort(arr)[-(m + 1)])
    s = np.sort(lw)
    shift = (cutoff - top) - s[-(m + 1)]  # lw = (value - max) - logsumexp: recover it
    smoothed = np.exp(s[-m:] + shift)
    u = math.exp(cutoff - top)
    i = m // 4
    p = (i + 0.5) / m
    growth = -math.log1p(-p) if abs(khat) < 1e-12 else math.expm1(-khat * math.log1p(-p)) / khat
    sigma = (smoothed[i] - u) / growth
    return sigma if sigma > 0 and math.isfinite(sigma) else math.nan


def psis_fit(buffer: TailBuffer) -> TailFit:
    """The PSIS k̂ of exp(x) for the log values x that ``buffer`` has seen."""
    n = buffer.n
    top = buffer.largest()
    nothing = np.empty(0)
    if buffer.nan or buffer.posinf:
        return TailFit(math.nan, math.nan, math.nan, 0, n, nothing, "nonfinite")
    m = arviz_tail_length(n) if n > 0 else 0
    if m < 5:
        return TailFit(math.nan, math.nan, math.nan, m, n, nothing, "too few")
    if not buffer.complete and len(top) < m + 1:
        return TailFit(math.nan, math.nan, math.nan, m, n, nothing, "buffer too small")
    hi = float(top[-1])
    if hi == -math.inf or (buffer.complete and float(top[0]) == hi):
        return TailFit(math.nan, math.nan, math.nan, m, n, top[-m:], "constant")
    top = np.maximum(top, hi - _UNDERFLOW)
    if float(top[-m]) == float(top[-1]):
        return TailFit(math.nan, math.nan, math.nan, m, n, top[-m:], "tied")
    if buffer.complete:
        arr, r_eff = top, 1.0
    else:
        packed = _compact(top, n, m)
        if packed is None:  # an arviz whose tail rule klest cannot match: all n values
            arr, r_eff = np.full(n, top[-(m + 1)]), 1.0
            arr[-len(top) :] = top
        else:
            arr, r_eff = packed
    try:
        khat, lw = _fit(arr, r_eff)
    except ValueError:  # arviz: "All tail values are the same" and the like
        return TailFit(math.nan, math.nan, math.nan, m, n, top[-m:], "tied")
    sigma = _scale(lw, arr, m, khat) if math.isfinite(khat) else math.nan
    with np.errstate(over="ignore"):
        scale = math.exp(hi) if hi < 709.0 else math.inf
    threshold = math.exp(float(top[-(m + 1)])) if top[-(m + 1)] < 709.0 else math.inf
    return TailFit(khat, float(sigma * scale), threshold, m, n, top[-m:].copy(), "ok")


def psis_khat(log_values: np.ndarray) -> float:
    """k̂ of exp(log_values) from all the values at once (arviz-stats' PSIS fit).

    >>> import numpy as np
    >>> x = np.log1p(np.random.default_rng(1).pareto(1 / 0.3, 10_000))  # k = 0.3
    >>> round(psis_khat(x), 2)
    0.28
    """
    x = np.asarray(log_values, dtype=np.float64).reshape(-1)
    buf = TailBuffer(capacity=max(len(x), 1))
    buf.add(x)
    return psis_fit(buf).khat


def verdict(khat: float, *, nonfinite: int = 0, status: str = "ok", bound: float | None = None):
    """The plain sentence behind ``finite_variance``: what the error bar is worth."""
    if nonfinite:
        return f"{nonfinite} non-finite values (inf/NaN): the estimate is not finite; no error bar"
    if bound is not None:
        return f"bounded by the clamp (|value| <= {bound:g}): finite variance (the clamp biases)"
    if status == "constant":
        return "constant values: zero variance"
    if status == "tied":
        return "the largest values are all equal (a bounded tail): finite variance"
    if status == "too few":
        return "too few tokens for a tail fit (M < 5): the error bar is unchecked, not shown"
    if status == "buffer too small":
        return "too many tokens for the tail buffer: no tail fit, the error bar is not shown"
    if not math.isfinite(khat):
        return "no tail fit: the error bar is unchecked, not shown"
    if khat < 0.5:
        return "k-hat < 0.5: finite variance, the error bar is usable"
    if khat < 0.7:
        return "variance likely infinite (k-hat in [0.5, 0.7)): error bar unreliable"
    if khat < 1.0:
        return "variance likely infinite (k-hat in [0.7, 1)): do not trust the error bar"
    return "mean likely infinite (k-hat >= 1): do not trust the estimate or the error bar"


def finite_variance(khat: float, *, nonfinite: int = 0, status: str = "ok", bounded=False):
    """The verdict as a bool: k̂ < 0.5, a bounded (clamped, constant or tied) tail, no inf/NaN."""
    if nonfinite:
        return False
    if bounded or status in ("constant", "tied"):
        return True
    return bool(math.isfinite(khat) and khat < 0.5)

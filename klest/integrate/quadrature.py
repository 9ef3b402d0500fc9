"""E_q[g(X)] for a 1-D continuous q by vectorised adaptive Gauss–Kronrod quadrature.

Two things make this more than a call to ``scipy.integrate.quad``:

* **Divergence is detected, not truncated.** Before integrating, the log-integrand
  F(x) = log q(x) + log|g(x)| is followed geometrically into each tail (x -> ±inf, or
  towards a finite end of the support). The integral converges at +inf only if F decays
  faster than -log x, i.e. the local slope dF/dlog x is below -1 (at a finite end a, the
  slope in log(x - a) must exceed -1). A divergent moment comes back as ``inf`` with the
  measured tail exponent in ``reason``, never as the large finite number a truncated
  integral would give.
* **Nothing overflows.** The integrand is q(x)·g(x) = sign(g)·exp(log q(x) + log|g(x)|); where
  g itself overflows (exp of a large log-ratio) ``log_abs_g`` supplies log|g| directly.

The support is split at quantiles of q and at the tail-walk points, each piece is integrated
by a 21-point Gauss–Kronrod rule evaluated for all pieces at once, and the pieces with the
largest error estimates are bisected until the total error is below ``rtol`` times ∫|q g|.
The walk stops at |x| = 1e150; the remaining tail is bounded from the measured exponent and
added to the error bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from klest.distributions.base import Distribution
from klest.integrate.result import Expectation

__all__ = ["expect_continuous", "level_crossings"]

ArrayFn = Callable[[np.ndarray], np.ndarray]

# 21-point Kronrod nodes on [-1, 1] (the 10-point Gauss nodes are every other one) and weights.
_XK = np.array(
    [
        0.995657163025808080735527280689003,
        0.973906528517171720077964012084452,
        0.930157491355708226001207180059508,
        0.865063366688984510732096688423493,
        0.780817726586416897063717578345042,
        0.679409568299024406234327365114874,
        0.562757134668604683339000099272694,
        0.433395394129247190799265943165784,
        0.294392862701460198131126603103866,
        0.148874338981631210884826001129720,
        0.000000000000000000000000000000000,
    ]
)
_WK = np.array(
    [
        0.011694638867371874278064396062192,
        0.032558162307964727478818972459390,
        0.054755896574351996031381300244580,
        0.075039674810919952767043140916190,
        0.093125454583697605535065465083366,
        0.109387158802297641899210590325805,
        0.123491976262065851077926322521484,
        0.134709217311473325928054001771707,
        0.142775938577060080797094273138717,
        0.147739104901338491374841515972068,
        0.149445554002916905664936468389821,
    ]
)
_WG = np.array(
    [
        0.066671344308688137593568809893332,
        0.149451349150580593145776339657697,
        0.219086362515982043995534934228163,
        0.269266719309996355091226921569469,
        0.295524224714752870173892994651338,
    ]
)
_NODES = np.concatenate([-_XK[:-1], _XK[::-1]])  # 21 nodes, ascending
_WEIGHTS_K = np.concatenate([_WK[:-1], _WK[::-1]])
_WEIGHTS_G = np.zeros(21)
_WEIGHTS_G[1:10:2] = _WG  # Gauss nodes are _XK[1], _XK[3], ..., _XK[9] on each side
_WEIGHTS_G[11:20:2] = _WG[::-1]

_X_MAX = 1e150  # beyond this x*x overflows in many log-densities
_LOG_CANCEL = 1e6  # |log q|, |log g| above this make log q + log g inaccurate
_SLOPE_MARGIN = 1e-3  # tail exponents within this of the critical -1 are called divergent
_MAX_INTERVALS = 200_000
_MAX_ROUNDS = 60
_QUANTILE_LEVELS = (1e-12, 1e-9, 1e-6, 1e-4, 1e-2, 0.05, 0.1, 0.25, 0.5)


class _Integrand:
    """q(x)·g(x) and its logarithm, evaluated without overflow."""

    def __init__(self, q: Distribution, g: ArrayFn, log_abs_g: ArrayFn | None) -> None:
        self.q, self.g, self.log_abs_g = q, g, log_abs_g

    def _parts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(log q, sign of g, log|g|) at x."""
        with np.errstate(all="ignore"):
            log_q = np.asarray(self.q.log_prob(x), dtype=np.float64)
            value = np.asarray(self.g(x), dtype=np.float64)
            value = np.broadcast_to(value, x.shape)
            log_abs = np.log(np.abs(value))
        overflow = np.isinf(value) & np.isfinite(log_q)
        if self.log_abs_g is not None and np.any(overflow):
            log_abs = log_abs.copy()
            with np.errstate(all="ignore"):
                log_abs[overflow] = np.asarray(self.log_abs_g(x[overflow]), dtype=np.float64)
        return log_q, np.sign(value), log_abs

    def __call__(self, x: np.ndarray) -> np.ndarray:
        log_q, sign, log_abs = self._parts(x)
        with np.errstate(all="ignore"):
            out = sign * np.exp(log_q + log_abs)
        out[np.isneginf(log_q) | (sign == 0)] = 0.0  # no mass there, or g == 0: contributes 0
        return out

    def log_abs(self, x: np.ndarray) -> np.ndarray:
        log_q, sign, log_abs = self._parts(x)
        with np.errstate(all="ignore"):
            out = log_q + log_abs
        out[np.isneginf(log_q) | (sign == 0)] = -np.inf
        return out

    def sign(self, x: np.ndarray) -> np.ndarray:
        return self._parts(x)[1]


def _quantiles_hold(q: Distribution, points: tuple[float, float, float]) -> bool:
    """Whether q's CDF gives back 1/4, 1/2, 3/4 at its quartiles (scipy's inverse CDF can
    return garbage where the true quartile is beyond float64: StudentT(df=1e-5))."""
    cdf = getattr(q, "cdf", None)
    try:
        with np.errstate(all="ignore"):
            cdf = cdf or q.scipy_law().cdf
            got = np.asarray(cdf(np.array(points)), dtype=np.float64)
    except (NotImplementedError, AttributeError, ValueError):
        return True  # nothing to check against
    return bool(np.all(np.abs(got - np.array([0.25, 0.5, 0.75])) < 1e-6))


def _median_and_scale(q: Distribution) -> tuple[float, float]:
    """q's median and interquartile range; a ValueError when float64 cannot resolve them.

    Quartiles that are not finite (StudentT(df=1e-17): |x| ~ e^(1e17)), that coincide
    (Normal(loc=1e20, scale=1e-3), LogNormal(loc=-1e20, ...): x underflows to 0) or whose
    spread is a few ulp of the median leave no grid on which q's density can be integrated:
    any number would be a rounding artefact.
    """
    try:
        with np.errstate(all="ignore"):
            lo, med, hi = (float(v) for v in q.quantile(np.array([0.25, 0.5, 0.75])))
    except (NotImplementedError, ValueError):
        return 0.0, 1.0
    except (OverflowError, ZeroDivisionError):
        lo = med = hi = math.nan
    scale = hi - lo
    resolvable = math.isfinite(med) and math.isfinite(scale) and scale > 0
    resolvable = resolvable and scale >= 1e-9 * abs(med) and _quantiles_hold(q, (lo, med, hi))
    if not resolvable:
        raise ValueError(
            f"quadrature over {q!r} is not possible in float64: its quartiles "
            f"({lo:.6g}, {med:.6g}, {hi:.6g}) are not finite and distinct at this precision"
        )
    return med, scale


def _quantile_breaks(q: Distribution) -> np.ndarray:
    levels = np.array(sorted({*_QUANTILE_LEVELS, *(1.0 - u for u in _QUANTILE_LEVELS)}))
    try:
        with np.errstate(all="ignore"):
            points = np.asarray(q.quantile(levels), dtype=np.float64)
    except (NotImplementedError, ValueError):
        return np.empty(0)
    return points[np.isfinite(points)]


def _walk(start: float, end: float, step: float) -> np.ndarray:
    """Points going geometrically from ``start`` towards ``end`` (finite or ±inf)."""
    if math.isinf(end):
        direction = 1.0 if end > 0 else -1.0
        k = np.arange(0, 520)
        pts = start + direction * step * np.exp2(k)
        return pts[np.abs(pts) <= _X_MAX]
    gap = end - start  # walk towards a finite end: end - gap * 2^-k
    k = np.arange(1, 1075)
    pts = end - gap * np.exp2(-k)
    resolution = 4.0 * np.finfo(float).eps * max(abs(end), np.finfo(float).tiny)
    return pts[np.abs(pts - end) > resolution]


def _tail(f: _Integrand, points: np.ndarray, end: float) -> tuple[bool, float, int, float, str]:
    """Classify the tail at ``end`` from F = log|q g| on ``points`` (ordered towards ``end``).

    Returns (converges, sign of the tail, how many points to keep, bound on the integral
    beyond the last kept point, reason). Beyond the kept points the integrand decays like a
    power |t|^s with s < -1 (t = x at infinity, t = x - end at a finite end: s > -1), so the
    remainder is at most |t| f(t) / |s + 1|; points are dropped once that bound is below
    1e-17 of the integrand's scale.
    """
    if len(points) < 2:
        return True, 1.0, len(points), 0.0, ""
    log_f = f.log_abs(points)
    # beyond |log q| or |log g| = 1e6 their sum loses digits to cancellation (e.g. x^2/2 - x^2/2
    # at x = 1e150); the asymptotic exponent is read off before that. g == 0 (log|g| = -inf)
    # stays usable: an integrand that vanishes exactly beyond a point has no tail at all.
    log_q, _, log_g = f._parts(points)
    with np.errstate(invalid="ignore"):
        usable = (np.abs(log_q) < _LOG_CANCEL) & (
            (np.abs(log_g) <= _LOG_CANCEL) | (log_g == -np.inf)
        )
    overflowed = False
    if not usable.all():
        stop = int(np.argmin(usable))
        overflowed = bool(np.isposinf(log_g[stop]) and np.isfinite(log_q[stop]))
        overflowed &= bool(abs(log_q[stop]) < _LOG_CANCEL)
        if stop >= 2:
            points, log_f = points[:stop], log_f[:stop]
    finite = np.isfinite(log_f)
    if not np.any(finite):
        return True, 1.0, len(points), 0.0, ""
    last = int(np.flatnonzero(finite)[-1])
    if last < len(points) - 1 and np.isneginf(log_f[last + 1 :]).all():
        keep_to = last + 2  # the integrand underflows to exactly zero: faster than any power
    else:
        keep_to = len(points)
    infinite_end = math.isinf(end)
    dist = np.abs(points) if infinite_end else np.abs(points - end)
    log_dist = np.log(dist)
    with np.errstate(invalid="ignore"):
        slopes = np.diff(log_f) / np.diff(log_dist)  # local exponent between neighbours
    first = max(0, last - 1)
    exponent = (
        (log_f[last] - log_f[first]) / (log_dist[last] - log_dist[first])
        if last > first and keep_to == len(points)
        else -math.inf
    )
    sign = float(f.sign(points[last : last + 1])[0]) or 1.0
    # |t|^s integrable at infinity iff s < -1; at a finite end iff s > -1
    if infinite_end:
        converges = exponent < -1.0 - _SLOPE_MARGIN
    else:
        converges = exponent > -1.0 + _SLOPE_MARGIN or exponent == -math.inf
    if not converges:
        where = ("+inf" if end > 0 else "-inf") if infinite_end else f"{end:g}"
        power = "|x|" if infinite_end else f"|x - {end:g}|"
        if infinite_end and exponent > 50:
            shape = "grows faster than any power of |x|"
        elif infinite_end and exponent > -_SLOPE_MARGIN:
            shape = f"does not decay (behaves like {power}^{exponent:.3f})"
        else:
            shape = f"behaves like {power}^{exponent:.3f}"
        reason = f"q(x)·g(x) {shape} as x -> {where}, which is not integrable"
        return False, sign, len(points), math.inf, reason
    # remainder bound beyond point k, valid where every later local slope is integrable
    with np.errstate(all="ignore"):
        ok = slopes < -1.0 - _SLOPE_MARGIN if infinite_end else slopes > -1.0 + _SLOPE_MARGIN
        ok = ok | np.isneginf(log_f[1:])
        tail_ok = np.flip(np.logical_and.accumulate(np.flip(ok)))  # ok from here onwards
        s = np.where(np.isfinite(slopes), slopes, -1e300 if infinite_end else 1e300)
        log_remainder = log_f[1:] + log_dist[1:] - np.log(np.abs(s + 1.0))
    scale = np.nanmax(np.where(finite, log_f + log_dist, -np.inf))
    cut = np.flatnonzero(tail_ok & (log_remainder < scale + math.log(1e-17)))
    if len(cut):
        k = int(cut[0]) + 1
        return True, sign, min(k + 1, keep_to), float(np.exp(log_remainder[k - 1])), ""
    if overflowed:  # g overflowed before the integrand became negligible
        reason = (
            f"g overflows float64 beyond x = {float(points[-1]):.6g} where q still has mass; "
            "pass log_abs_g to integrate exp-type functions in log space"
        )
        return False, sign, len(points), math.inf, reason
    if keep_to < len(points) or len(slopes) < 3 or not np.isfinite(log_remainder[-1]):
        return True, sign, keep_to, 0.0, ""
    # the tail beyond the last point is still significant: extrapolate the power law and
    # charge the spread between two slope estimates to the error bound
    remainder = sign * float(np.exp(log_remainder[-1]))
    alt = float(np.exp(log_f[-1] + log_dist[-1] - np.log(np.abs(slopes[-3] + 1.0))))
    return True, sign, keep_to, complex(remainder, abs(abs(remainder) - alt)), ""


def _gauss_kronrod(f: _Integrand, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    centre, half = 0.5 * (a + b), 0.5 * (b - a)
    x = centre[:, None] + half[:, None] * _NODES[None, :]
    y = f(x)
    with np.errstate(invalid="ignore", over="ignore"):
        kronrod = half * (y @ _WEIGHTS_K)
        gauss = half * (y @ _WEIGHTS_G)
        absolute = np.abs(half) * (np.abs(y) @ _WEIGHTS_K)
    return kronrod, np.abs(kronrod - gauss), absolute


def _adaptive(f: _Integrand, breaks: np.ndarray, rtol: float) -> tuple[float, float, float]:
    a, b = breaks[:-1], breaks[1:]
    value, error, absolute = _gauss_kronrod(f, a, b)
    for _ in range(_MAX_ROUNDS):
        total_err, total_abs = float(error.sum()), float(absolute.sum())
        if not (np.isfinite(total_err) and np.isfinite(value.sum())):
            break
        if total_err <= max(rtol * total_abs, 1e-300) or len(a) > _MAX_INTERVALS:
            break
        # bisect the pieces that carry most of the error
        order = np.argsort(error)[::-1]
        cumulative = np.cumsum(error[order])
        n_split = int(np.searchsorted(cumulative, 0.5 * total_err)) + 1
        split = np.zeros(len(a), dtype=bool)
        split[order[:n_split]] = True
        mid = 0.5 * (a[split] + b[split])
        new_a = np.concatenate([a[split], mid])
        new_b = np.concatenate([mid, b[split]])
        nv, ne, na = _gauss_kronrod(f, new_a, new_b)
        keep = ~split
        a, b = np.concatenate([a[keep], new_a]), np.concatenate([b[keep], new_b])
        value = np.concatenate([value[keep], nv])
        error = np.concatenate([error[keep], ne])
        absolute = np.concatenate([absolute[keep], na])
    return float(value.sum()), float(error.sum()), float(absolute.sum())


def level_crossings(h: ArrayFn, points: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """The x where h(x) crosses one of ``levels``, bracketed by consecutive ``points``."""
    from scipy.optimize import brentq

    if not len(levels) or len(points) < 2:
        return np.empty(0)
    with np.errstate(all="ignore"):
        values = np.asarray(h(points), dtype=np.float64)
    roots = []
    for level in levels:
        diff = values - level
        ok = np.isfinite(diff[:-1]) & np.isfinite(diff[1:])
        for i in np.flatnonzero(ok & (np.sign(diff[:-1]) * np.sign(diff[1:]) < 0)):
            a, b = float(points[i]), float(points[i + 1])

            def shifted(x: float, level: float = level) -> float:
                return float(np.asarray(h(np.array([x])))[0]) - level

            # a split point needs no proof of convergence: brentq's last iterate (it may
            # stall on a crossing at an extreme scale, |x| ~ 1e-20) is as good a break
            root, _ = brentq(
                shifted, a, b, xtol=1e-300, rtol=4 * np.finfo(float).eps,
                full_output=True, disp=False,
            )  # fmt: skip
            roots.append(root)
        roots.extend(points[diff == 0.0])
    return np.asarray(roots, dtype=np.float64)


def expect_continuous(
    q: Distribution,
    g: ArrayFn,
    *,
    log_abs_g: ArrayFn | None = None,
    rtol: float = 1e-11,
    breaks: Sequence[float] = (),
    level_sets: tuple[ArrayFn, Sequence[float]] | None = None,
) -> Expectation:
    """E_q[g(X)] for a 1-D continuous distribution q, with divergence detection.

    ``g`` must be vectorised (array in, array of the same shape out); ``log_abs_g``, if given,
    returns log|g(x)| and is used where g overflows float64. The integral is split at q's
    own ``breakpoints()``, at ``breaks`` (e.g. p's kinks) and, with ``level_sets=(h, levels)``,
    where h(x) crosses a level (e.g. where the log-ratio hits an estimator's kink).

    >>> from klest.distributions import Normal
    >>> res = expect_continuous(Normal(loc=0.0, scale=1.0), lambda x: x**2)
    >>> round(res.value, 12), res.method, res.finite
    (1.0, 'quadrature', True)
    >>> heavy = expect_continuous(Normal(loc=0.0, scale=1.0), lambda x: np.exp(x**2 / 2))
    >>> heavy.value, heavy.finite
    (inf, False)
    """
    if q.discrete or q.event_shape:
        raise ValueError(f"expect_continuous needs a 1-D continuous q, got {q!r}")
    with np.errstate(all="ignore"):  # inf/NaN are handled explicitly below, never warned
        return _expect_continuous(q, g, log_abs_g, rtol, breaks, level_sets)


def _expect_continuous(
    q: Distribution,
    g: ArrayFn,
    log_abs_g: ArrayFn | None,
    rtol: float,
    breaks: Sequence[float],
    level_sets: tuple[ArrayFn, Sequence[float]] | None,
) -> Expectation:
    f = _Integrand(q, g, log_abs_g)
    lo, hi = q.support.low, q.support.high
    med, scale = _median_and_scale(q)
    med = min(max(med, lo), hi)
    down, up = _walk(med, lo, scale), _walk(med, hi, scale)
    error_bound, extrapolated, reasons, signs, kept = 0.0, 0.0, [], [], []
    for points, end in ((down, lo), (up, hi)):
        converges, sign, keep, remainder, reason = _tail(f, points, end)
        if not converges:
            reasons.append(reason)
            signs.append(sign)
        kept.append(points[: min(keep, len(points))])
        if isinstance(remainder, complex):  # (extrapolated tail, its uncertainty)
            extrapolated += remainder.real
            error_bound += remainder.imag
        else:
            error_bound += remainder
    if reasons:
        value = math.inf if all(s > 0 for s in signs) else -math.inf
        if len(set(signs)) > 1:
            value = math.nan
        return Expectation(value, math.inf, "quadrature", finite=False, reason="; ".join(reasons))

    down, up = kept
    inner_lo = down[-1] if len(down) else lo
    inner_hi = up[-1] if len(up) else hi
    grid = np.concatenate([[med], down, up, _quantile_breaks(q), q.breakpoints(), breaks])
    grid = np.unique(grid[(grid >= inner_lo) & (grid <= inner_hi)])
    if level_sets is not None:
        central = _quantile_breaks(q)
        central = central if len(central) >= 2 else grid
        dense = np.unique(np.concatenate([grid, np.linspace(central[0], central[-1], 2001)]))
        h, levels = level_sets
        grid = np.unique(np.concatenate([grid, level_crossings(h, dense, levels)]))
    breaks = grid
    # refine around the peak of the integrand, which may sit far from q's bulk
    log_f = f.log_abs(breaks)
    if np.isfinite(log_f).any():
        peak = int(np.nanargmax(np.where(np.isfinite(log_f), log_f, -np.inf)))
        left, right = breaks[max(peak - 1, 0)], breaks[min(peak + 1, len(breaks) - 1)]
        breaks = np.unique(np.concatenate([breaks, np.linspace(left, right, 65)]))
    value, err, absolute = _adaptive(f, breaks, rtol)
    value += extrapolated
    if not math.isfinite(value):
        return Expectation(
            value,
            math.inf,
            "quadrature",
            finite=False,
            reason="the integrand is not finite on the support (g overflows or is NaN; "
            "pass log_abs_g to integrate exp-type functions in log space)",
        )
    return Expectation(value, err + error_bound + 1e-15 * absolute, "quadrature")

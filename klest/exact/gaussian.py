"""Exact estimator moments for Gaussian pairs: two Normals or two MultivariateNormals.

The log-ratio l = c + sum_i (a_i w_i^2 + b_i w_i), w ~ N(0, I)
(:mod:`klest.exact.gaussian_form`), has the moment generating function
M(t) = E[e^{t l}] = exp(K(t)) with
K(t) = t c + sum_i [t^2 b_i^2 / (2 (1 - 2 t a_i)) - log(1 - 2 t a_i) / 2], finite iff
1 - 2 t a_i > 0 for every i. An estimator written as sum_k coef_k l^j_k e^{s_k l} then has
E[l^j e^{s l}] = M^(j)(s), computed by truncated power-series arithmetic around t = s.

When the estimator and the KL are small, the terms of E[g^2] - E[g]^2 cancel; the rounding
error is estimated from the magnitudes of the summed contributions and, where it would spoil
the variance, the moments are recomputed from the Taylor series of g in l (exact rational
coefficients, so the leading cancellations are exact) and the raw moments of l, or by 1-D
quadrature when l is a function of one standard normal variable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from klest.distributions.normal import Normal
from klest.errors import NoExactMethodError
from klest.estimators import Estimator
from klest.exact.gaussian_form import TINY, GaussianLogRatio, gaussian_log_ratio, one_plus_s_lambda
from klest.integrate.quadrature import expect_continuous

__all__ = ["GaussianLogRatio", "gaussian_log_ratio", "gaussian_moments"]

_EPS = float(np.finfo(float).eps)
VAR_RTOL = 1e-9  # accept a closed-form variance whose estimated rounding error is below this
MEAN_RTOL = 1e-12  # ... and a mean whose estimated rounding error is below this (relative)
_SERIES_ORDER = 60  # terms of the Taylor-series fallback
_SERIES_RADIUS = 0.5  # use the fallback only where |s| * max|2 a_i| <= this (fast convergence)

Terms = dict[tuple[int, float], float]


# --------------------------------------------------------------------------------------
# Power series of K and M = exp(K) around t = s
# --------------------------------------------------------------------------------------


def _k_series(form: GaussianLogRatio, s: float, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of K(s + h) in h up to ``order`` and the sums of their parts' magnitudes.

    Requires 1 + s lambda_i > 0 for every i (checked by the caller).
    """
    lam, b2 = form.lam, np.square(form.b)
    u0, log_u0 = one_plus_s_lambda(form, s)  # 1 - 2 s a_i
    tiny = u0 < TINY  # carried as logarithms: u0 and b_i^2 may be subnormal or 0
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        log_b2 = form.log_b2 if form.log_b2 is not None else 2.0 * np.log(np.abs(form.b))
        # 2 a_i / u0, b_i^2 / (2 u0): huge where u0 is tiny (inf beyond float64, as the
        # derivatives of K at s are); exactly 0 where b_i = 0
        rho = np.where(tiny, -lam * np.exp(-log_u0), -lam / u0)
        bb_flat = np.where(tiny | (b2 < TINY), np.exp(log_b2 - math.log(2.0) - log_u0), 0.0)
        bb_flat = np.where(
            form.b == 0.0, 0.0, np.where(tiny | (b2 < TINY), bb_flat, b2 / (2.0 * u0))
        )
        n = np.arange(order + 1)
        pw = rho[:, None] ** n[None, :]  # rho_i^n
        pw1 = np.concatenate([np.zeros((len(lam), 1)), pw[:, :-1]], axis=1)  # rho^(n-1)
        pw2 = np.concatenate([np.zeros((len(lam), 2)), pw[:, :-2]], axis=1)[:, : order + 1]
        bb = bb_flat[:, None]
        parts = [
            np.where(bb == 0.0, 0.0, part)
            for part in (bb * s * s * pw, bb * 2.0 * s * pw1, bb * pw2)
        ]
    log_part = np.zeros((len(lam), order + 1))
    log_part[:, 0] = -0.5 * log_u0
    if order >= 1:
        log_part[:, 1:] = 0.5 * pw[:, 1:] / n[None, 1:]
    parts.append(log_part)
    with np.errstate(over="ignore", invalid="ignore"):
        coef = sum(part.sum(axis=0) for part in parts)
        size = sum(np.abs(part).sum(axis=0) for part in parts)
    coef[0] += s * form.c
    size[0] += abs(s * form.c)
    if order >= 1:
        if s == 0.0:  # K'(0) = E[l] = c + sum a_i, which cancels: use the stable -KL
            coef[1], size[1] = form.neg_kl, abs(form.neg_kl)
        else:
            coef[1] += form.c
            size[1] += abs(form.c)
    return coef, size


def _exp_series(p: np.ndarray) -> np.ndarray:
    """Coefficients of exp(sum_{k>=1} p_k h^k): n e_n = sum_{k=1}^n k p_k e_{n-k}."""
    e = np.zeros(len(p))
    e[0] = 1.0
    for n in range(1, len(p)):
        k = np.arange(1, n + 1)
        e[n] = float(np.sum(k * p[k] * e[n - k])) / n
    return e


# --------------------------------------------------------------------------------------
# Term lists
# --------------------------------------------------------------------------------------


def _merge(items: list[tuple[float, int, float]]) -> Terms:
    out: Terms = {}
    for coef, power, rate in items:
        key = (int(power), float(rate))
        out[key] = out.get(key, 0.0) + float(coef)
    return {k: v for k, v in out.items() if v != 0.0}


def _square(terms: tuple[tuple[float, int, float], ...]) -> Terms:
    return _merge([(c1 * c2, j1 + j2, s1 + s2) for c1, j1, s1 in terms for c2, j2, s2 in terms])


def _diverges(form: GaussianLogRatio, s: float) -> bool:
    """E[e^{s l}] = inf iff 1 + s lambda_i <= 0 for some i (1 - 2 s a_i, up to its rounding)."""
    if 0.0 <= s <= 1.0:  # 1 + s lambda_i >= (1 - s) + s ratio_i > 0: never diverges
        return False
    u0, _ = one_plus_s_lambda(form, s)
    # rounding of u0: relative to 1 and s lambda_i near 0, to its terms 1 - s and s ratio_i
    # otherwise (u0 = ratio_i at s = 1, where a tiny ratio is no sign of divergence)
    near = np.abs(form.lam) <= 0.5
    size = np.where(near, np.maximum(1.0, np.abs(s * form.lam)), abs(1.0 - s) + abs(s) * form.ratio)
    return bool(np.any(u0 <= 8.0 * _EPS * size))


@dataclass(frozen=True)
class _Sum:
    value: float
    error: float
    divergent: list[tuple[int, float, float]]  # (power, rate, coef) of infinite terms


def _closed_sum(form: GaussianLogRatio, terms: Terms) -> _Sum:
    """sum coef * E[l^j e^{s l}] with an estimate of its rounding error."""
    by_rate: dict[float, int] = {}
    for j, s in terms:
        by_rate[s] = max(by_rate.get(s, 0), j)
    divergent = [(j, s, coef) for (j, s), coef in terms.items() if _diverges(form, s)]
    if divergent:
        return _Sum(math.nan, 0.0, divergent)
    logs, mags, errs = [], [], []
    for s, order in by_rate.items():
        p, size = _k_series(form, s, order)
        e, e_bound = (
            _exp_series(np.concatenate([[0.0], p[1:]])),
            _exp_series(np.concatenate([[0.0], size[1:]])),
        )
        for j in range(order + 1):
            coef = terms.get((j, s))
            if coef is None:
                continue
            fact = math.factorial(j)
            logs.append(p[0])
            mags.append(coef * fact * e[j])
            rel0 = 2.0 * _EPS * (size[0] + 1.0)  # error of exp(K(s)) from K(s)'s rounding
            errs.append(abs(coef) * fact * (abs(e[j]) * rel0 + 4.0 * (j + 2) * _EPS * e_bound[j]))
    top = max(logs)
    scale = [math.exp(lg - top) for lg in logs]
    value = sum(m * w for m, w in zip(mags, scale, strict=True))
    absolute = sum(abs(m) * w for m, w in zip(mags, scale, strict=True))
    error = sum(er * w for er, w in zip(errs, scale, strict=True)) + len(mags) * _EPS * absolute
    with np.errstate(over="ignore"):
        factor = float(np.exp(top))
    return _Sum(float(value * factor), float(error * factor), [])


def _series_sum(form: GaussianLogRatio, terms: list[tuple[Fraction, int, Fraction]]) -> _Sum:
    """The same sum from g's Taylor series in l: sum_n gamma_n E[l^n] (needs small |s a_i|)."""
    order = _SERIES_ORDER
    p, size = _k_series(form, 0.0, order)
    e, e_bound = _exp_series(p), _exp_series(size)  # E[l^n] = n! e_n
    vals, bounds = [], []
    for n in range(order + 1):
        gamma = Fraction(0)  # n! * (coefficient of l^n in g)
        for coef, j, s in terms:
            if n >= j:
                gamma += coef * s ** (n - j) * Fraction(math.factorial(n), math.factorial(n - j))
        vals.append(float(gamma) * e[n])
        bounds.append(abs(float(gamma)) * e_bound[n])
    value = math.fsum(vals)
    absolute = math.fsum(abs(v) for v in vals)
    rounding = 4.0 * _EPS * math.fsum(b * (n + 2) for n, b in enumerate(bounds))
    truncation = 2.0 * (abs(vals[-1]) + abs(vals[-2]))
    return _Sum(value, rounding + truncation + _EPS * absolute, [])


def _fraction_terms(terms: tuple[tuple[float, int, float], ...], square: bool) -> list:
    exact = [(Fraction(c), int(j), Fraction(s)) for c, j, s in terms]
    if not square:
        return exact
    return [(c1 * c2, j1 + j2, s1 + s2) for c1, j1, s1 in exact for c2, j2, s2 in exact]


# --------------------------------------------------------------------------------------
# Divergence messages
# --------------------------------------------------------------------------------------


def _term_label(j: int, s: float) -> str:
    rate = "r" if s == 1.0 else f"r^{s:g}"
    if j == 0:
        return rate
    log = "log r" if j == 1 else f"(log r)^{j}"
    return f"{log} * {rate}"


def _divergence_note(form: GaussianLogRatio, j: int, s: float, what: str) -> str:
    if s > 1.0:
        bound = s / (s - 1.0)
        times = "twice" if bound == 2.0 else f"{bound:.6g} times"
        why = (
            f"p's variance is at least {times} q's along some direction "
            f"(the largest ratio var_p/var_q is {form.max_var_ratio:.6g})"
        )
    else:
        bound = 1.0 + 1.0 / abs(s)
        times = "twice" if bound == 2.0 else f"{bound:.6g} times"
        why = (
            f"q's variance is at least {times} p's along some direction "
            f"(the largest ratio var_q/var_p is {1.0 / form.min_var_ratio:.6g})"
        )
    return f"E_q[{_term_label(j, s)}] diverges: {why}, so {what} is infinite"


def _divergent_mean(form: GaussianLogRatio, divergent: list, name: str) -> tuple[float, str]:
    """The sign of an infinite mean from the dominant tail term on each side of l."""
    signs, notes = [], []
    for side in (1.0, -1.0):
        on_side = [(abs(s), j, s, c) for j, s, c in divergent if s * side > 0]
        if not on_side:
            continue
        _, j, s, coef = max(on_side)
        signs.append(math.copysign(1.0, coef) * (1.0 if s > 0 else (-1.0) ** j))
        notes.append(_divergence_note(form, j, s, f"E[{name}]"))
    if len(set(signs)) > 1:
        return math.nan, "; ".join(notes) + " (with opposite signs, so the mean is undefined)"
    return signs[0] * math.inf, "; ".join(notes)


# --------------------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------------------


def _terms_moments(
    form: GaussianLogRatio, est: Estimator, need_var: bool
) -> tuple[float, float, str, float, str]:
    assert est.terms is not None
    name = est.name
    mean_terms = _merge(list(est.terms))
    first = _closed_sum(form, mean_terms) if mean_terms else _Sum(0.0, 0.0, [])
    if first.divergent:
        mean, note = _divergent_mean(form, first.divergent, name)
        return mean, math.inf, "closed_form", 0.0, note
    if not need_var:
        return first.value, math.nan, "closed_form", first.error, ""
    if all(s == 0.0 and j <= 1 for _, j, s in est.terms):  # coef * l + const (k1)
        slope = sum(coef for coef, j, _ in est.terms if j == 1)
        var_l = float(np.sum(2.0 * np.square(form.a) + np.square(form.b)))  # K''(0), exact
        return first.value, slope * slope * var_l, "closed_form", first.error, ""
    sq_terms = _square(est.terms)
    second = _closed_sum(form, sq_terms) if sq_terms else _Sum(0.0, 0.0, [])
    if second.divergent:
        _, j, s, _ = max((abs(s), j, s, c) for j, s, c in second.divergent)
        note = _divergence_note(form, j, s, f"Var[{name}]")
        return first.value, math.inf, "closed_form", first.error, note
    if not (math.isfinite(first.value) and math.isfinite(second.value)):
        note = f"E[{name}] and E[{name}^2] are finite but exceed the float64 range"
        return first.value, math.inf, "closed_form", first.error, note

    def combine(m1: _Sum, m2: _Sum) -> tuple[float, float, float, float]:
        mean = m1.value
        var = m2.value - mean * mean
        var_err = m2.error + 2.0 * abs(mean) * m1.error + 4.0 * _EPS * (abs(m2.value) + mean**2)
        return mean, max(var, 0.0), m1.error, var_err

    def good(res: tuple[float, float, float, float]) -> bool:
        mean, var, mean_err, var_err = res
        return mean_err <= MEAN_RTOL * abs(mean) and var_err <= VAR_RTOL * var

    best = combine(first, second)
    rates = [abs(s) for _, s in sq_terms]
    if not good(best) and max(rates, default=0.0) * float(np.max(np.abs(form.lam))) <= (
        _SERIES_RADIUS
    ):
        with np.errstate(over="ignore", invalid="ignore"):  # huge |E l|: inf/NaN, not taken
            alt = combine(
                _series_sum(form, _fraction_terms(est.terms, square=False)),
                _series_sum(form, _fraction_terms(est.terms, square=True)),
            )
        if alt[3] < best[3] and math.isfinite(alt[0]) and math.isfinite(alt[1]):
            best = alt
    mean, var, mean_err, var_err = best
    note = ""
    if var_err > VAR_RTOL * var:
        _check_resolution(form, est)
        line = form.one_dimensional()
        if line is not None:
            _, q_var, _, q_var_err, _ = _quadrature_moments(est, *line)
            if math.isfinite(q_var) and q_var_err < var_err:
                note = "variance by 1-D quadrature: the closed form lost digits to cancellation"
                return mean, q_var, "closed_form", mean_err, note
        note = (
            f"the variance lost digits to cancellation: estimated rounding error "
            f"{var_err:.3g} (relative {var_err / var if var else math.inf:.3g})"
        )
    return mean, var, "closed_form", mean_err, note


def _check_resolution(form: GaussianLogRatio, est: Estimator) -> None:
    """NoExactMethodError when float64 cannot resolve the log-ratio's spread at its mean.

    q = N(1e20, 1), p = N(0, 1): l = -5e39 + 1e20 w, and the ulp of 5e39 is 1e24. Neither
    E[g^2] - E[g]^2 nor a quadrature over l(w) then keeps a digit of the variance.
    """
    spread = math.sqrt(float(np.sum(2.0 * np.square(form.a) + np.square(form.b))))
    if spread < 1e-8 * abs(form.neg_kl):  # (q = p: both 0, l = 0 exactly)
        raise NoExactMethodError(
            f"Var[{est.name}] is not computable in float64 here: the log-ratio's spread "
            f"({spread:.3g}) is below the resolution of its mean ({form.neg_kl:.3g})"
        )


#: p's bulk lies at |w| ~ (var_p / var_q)^(1/2) standard deviations of q; beyond this the
#: quadrature in w (its tail walk stops at |w| = 1e150) cannot see it
_REACH = 1e100


def _check_quadrature_reach(est: Estimator, a: float) -> None:
    """NoExactMethodError when est grows like a power of r and p's bulk is out of reach.

    With l = c + a w^2 + b w and a = (1 - var_q/var_p)/2 near 1/2, r = e^l weights w like
    p does: E_q[|r - 1|] is carried by |w| ~ sqrt(var_p / var_q), 1e160 for
    q = N(0, 1e-160), p = N(0, 1), where no tail walk of q's density goes. Estimators bounded
    in l, or growing like a power of l (abs, low_var_kl), are unaffected.
    """
    if not 0.5 - a < 0.5 / (_REACH * _REACH):  # 1 - 2a = var_q / var_p along w
        return
    with np.errstate(over="ignore", invalid="ignore"):
        far = float(np.abs(est(np.array([800.0])))[0])
    if not far < 1e300:  # exponential in l: a power of r
        raise NoExactMethodError(
            f"no exact method for {est.name!r} here: var_q / var_p = {1.0 - 2.0 * a:.3g} along "
            f"the log-ratio puts p's mass beyond {_REACH:.0e} standard deviations of q, out "
            "of the quadrature's reach (klest.simulate gives Monte Carlo estimates)"
        )


def _quadrature_moments(
    est: Estimator, c: float, a: float, b: float, need_var: bool = True
) -> tuple[float, float, float, float, str]:
    """(mean, var, mean error, var error, note) of est(l), l = c + a w^2 + b w, w ~ N(0, 1)."""
    if a == 0.0 and b == 0.0:  # l is the constant c
        value = float(est(np.array([c]))[0])
        return value, 0.0, 0.0, 0.0, ""
    _check_quadrature_reach(est, a)
    std = Normal(loc=0.0, scale=1.0)

    def log_ratio(w: np.ndarray) -> np.ndarray:
        return c + (a * w + b) * w

    def g(w: np.ndarray) -> np.ndarray:
        return est(log_ratio(w))

    def log_abs_g(w: np.ndarray) -> np.ndarray:
        return est.log_abs(log_ratio(w))

    # split where l(w) crosses the estimator's kinks (|l| at 0, clamp edges)
    level_sets = (log_ratio, est.kinks) if est.kinks else None
    first = expect_continuous(std, g, log_abs_g=log_abs_g, level_sets=level_sets)
    if not first.finite:
        note = f"E[{est.name}] diverges: {first.reason}"
        return float(first.value), math.inf, float(first.abs_error), math.inf, note
    mean = float(first.value)
    if not need_var:
        return mean, math.nan, float(first.abs_error), math.nan, ""

    def centred_sq(w: np.ndarray) -> np.ndarray:
        return np.square(g(w) - mean)

    def log_abs_centred_sq(w: np.ndarray) -> np.ndarray:
        value = g(w)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = 2.0 * np.log(np.abs(value - mean))
        return np.where(np.isinf(value), 2.0 * log_abs_g(w), out)

    second = expect_continuous(std, centred_sq, log_abs_g=log_abs_centred_sq, level_sets=level_sets)
    note = "" if second.finite else f"Var[{est.name}] diverges: {second.reason}"
    return mean, float(second.value), float(first.abs_error), float(second.abs_error), note


def gaussian_moments(
    q: Any, p: Any, est: Estimator, *, need_var: bool = True
) -> tuple[float, float, str, float, str]:
    """(mean, var, method, abs_error, note) of ``est(log p(x) - log q(x))`` for x ~ q.

    q and p are both Normal or both MultivariateNormal of one dimension. Estimators written
    as sums of ``coef * l^j * exp(s l)`` (``est.terms``) get closed forms (method
    ``"closed_form"``); others get 1-D quadrature when the log-ratio depends on one standard
    normal variable (Normal pairs, or equal covariances) and :class:`NoExactMethodError`
    otherwise. Divergent moments come back as ``inf`` with ``note`` saying why.

    >>> from klest import Normal, estimators
    >>> q, p = Normal(loc=0.0, scale=1.0), Normal(loc=0.0, scale=2.0)
    >>> mean, var, method, err, note = gaussian_moments(q, p, estimators.get("k3"))
    >>> round(mean, 12), var, method
    (0.31814718056, inf, 'closed_form')
    >>> note.split(": ")[0], note.endswith("so Var[k3] is infinite")
    ('E_q[r^2] diverges', True)
    """
    form = gaussian_log_ratio(q, p)
    if est.terms is not None:
        return _terms_moments(form, est, need_var)
    line = form.one_dimensional()
    if line is None:
        raise NoExactMethodError(
            f"no exact method for {est.name!r} with MultivariateNormal q and p of unequal "
            "covariances: the log-ratio is a generalised chi-square variable, which has no "
            f"closed form for this estimator; use klest.simulate"
        )
    if need_var:
        _check_resolution(form, est)
    mean, var, err, _, note = _quadrature_moments(est, *line, need_var=need_var)
    return mean, var, "quadrature", err, note

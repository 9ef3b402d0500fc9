"""Closed-form KL divergences between the 1-D continuous families.

Same-family pairs have dedicated forms written to stay accurate when a is close to b:
Laplace, LogNormal, Exponential, Gamma, Beta, Uniform (and Exponential–Gamma either way,
an exponential being a Gamma of shape 1). StudentT–StudentT and the Gaussian-mixture pairs
have no closed form; ``kl`` integrates them numerically.

Cross-family pairs use KL(a||b) = H(a, b) - H(a): the entropy H(a) is known in closed form
for every family here, and log b(x) is linear in a few statistics of x (x, x², |x - c|,
log x, log² x, log(1 - x)) whose expectations under a are known exactly. ``kl`` returns
``inf`` before any of these run when a's support is not inside b's.

>>> from klest.distributions import Exponential, Gamma, Normal, Uniform
>>> from klest.divergence import kl
>>> round(kl(Exponential(rate=1.0), Exponential(rate=2.0)), 12)  # 1 - log 2
0.306852819440
>>> round(kl(Uniform(low=0.0, high=1.0), Normal(loc=0.0, scale=1.0)), 12)
1.085605199871
>>> kl(Uniform(low=-1.0, high=1.0), Gamma(shape=2.0, rate=1.0))
inf
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special, stats

from klest.distributions.beta import Beta
from klest.distributions.exponential import Exponential
from klest.distributions.gamma import Gamma
from klest.distributions.laplace import Laplace
from klest.distributions.lognormal import LogNormal
from klest.distributions.normal import Normal
from klest.distributions.student_t import StudentT
from klest.distributions.uniform import Uniform
from klest.divergence import register_kl

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_EULER_GAMMA = 0.5772156649015329


# --------------------------------------------------------------------------------------
# Stable building blocks
# --------------------------------------------------------------------------------------


def _expm1_minus(u: float) -> float:
    """e^u - 1 - u (>= 0), by its Taylor series where direct subtraction would cancel."""
    if abs(u) >= 0.5:
        return math.expm1(u) - u
    term, total = u, 0.0
    for n in range(2, 20):
        term *= u / n
        total += term
    return total


def _lgamma_bregman(a: float, b: float) -> float:
    """lnΓ(b) - lnΓ(a) - (b - a)ψ(a) (>= 0), by its Taylor series in b - a when b is near a."""
    delta = b - a
    if abs(delta) > 0.1 * a:
        return float(special.gammaln(b) - special.gammaln(a) - delta * special.digamma(a))
    total, power = 0.0, delta
    for n in range(2, 18):  # terms shrink like (delta / a)^n / n
        power *= delta / n
        total += float(special.polygamma(n - 1, a)) * power
    return total


def _kl_gamma(shape_a: float, rate_a: float, shape_b: float, rate_b: float) -> float:
    """KL(Gamma(αa, βa) || Gamma(αb, βb)) as αa·h(u) + (αa - αb)·u + D_lnΓ(αa, αb)."""
    u = math.log(rate_b) - math.log(rate_a)
    return shape_a * _expm1_minus(u) + (shape_a - shape_b) * u + _lgamma_bregman(shape_a, shape_b)


# --------------------------------------------------------------------------------------
# Same-family closed forms
# --------------------------------------------------------------------------------------


@register_kl(Laplace, Laplace)
def kl_laplace_laplace(a: Laplace, b: Laplace) -> float:
    """KL = log(b_s/a_s) + |Δ|/b_s + (a_s/b_s)·exp(-|Δ|/a_s) - 1, Δ = a_loc - b_loc.

    Written as h(log r) + r·h(-|Δ|/a_s) with r = a_s/b_s and h(u) = e^u - 1 - u >= 0: two
    non-negative terms, no cancellation.
    """
    r_log = math.log(a.scale) - math.log(b.scale)
    d = abs(a.loc - b.loc)
    return _expm1_minus(r_log) + math.exp(r_log) * _expm1_minus(-d / a.scale)


@register_kl(LogNormal, LogNormal)
def kl_lognormal_lognormal(a: LogNormal, b: LogNormal) -> float:
    """KL = KL(N(m_a, s_a²) || N(m_b, s_b²)) (KL is invariant under x -> log x)."""
    u = 2.0 * (math.log(a.scale) - math.log(b.scale))
    shift = (a.loc - b.loc) / b.scale
    return 0.5 * _expm1_minus(u) + 0.5 * shift * shift


@register_kl(Exponential, Exponential)
def kl_exponential_exponential(a: Exponential, b: Exponential) -> float:
    """KL = λb/λa - 1 - log(λb/λa), evaluated as expm1(u) - u with u = log(λb/λa)."""
    return _expm1_minus(math.log(b.rate) - math.log(a.rate))


@register_kl(Gamma, Gamma)
def kl_gamma_gamma(a: Gamma, b: Gamma) -> float:
    """KL = (αa-αb)ψ(αa) - lnΓ(αa) + lnΓ(αb) + αb log(βa/βb) + αa(βb-βa)/βa."""
    return _kl_gamma(a.shape, a.rate, b.shape, b.rate)


@register_kl(Exponential, Gamma)
def kl_exponential_gamma(a: Exponential, b: Gamma) -> float:
    """KL(Exp(λ) || Gamma(α, β)) = KL(Gamma(1, λ) || Gamma(α, β))."""
    return _kl_gamma(1.0, a.rate, b.shape, b.rate)


@register_kl(Gamma, Exponential)
def kl_gamma_exponential(a: Gamma, b: Exponential) -> float:
    """KL(Gamma(α, β) || Exp(λ)) = KL(Gamma(α, β) || Gamma(1, λ))."""
    return _kl_gamma(a.shape, a.rate, 1.0, b.rate)


@register_kl(Beta, Beta)
def kl_beta_beta(a: Beta, b: Beta) -> float:
    """KL = lnB(α2,β2) - lnB(α1,β1) + (α1-α2)ψ(α1) + (β1-β2)ψ(β1) + (s2-s1)ψ(s1), s = α+β.

    Evaluated as D(α1,α2) + D(β1,β2) - D(s1,s2), D(x, y) = lnΓ(y) - lnΓ(x) - (y-x)ψ(x).
    """
    s_a, s_b = a.alpha + a.beta, b.alpha + b.beta
    return (
        _lgamma_bregman(a.alpha, b.alpha)
        + _lgamma_bregman(a.beta, b.beta)
        - _lgamma_bregman(s_a, s_b)
    )


@register_kl(Uniform, Uniform)
def kl_uniform_uniform(a: Uniform, b: Uniform) -> float:
    """KL = log(width_b / width_a) if a's interval lies inside b's, else inf."""
    if a.low < b.low or a.high > b.high:
        return math.inf
    return math.log((b.high - b.low) / (a.high - a.low))


# --------------------------------------------------------------------------------------
# Entropies and expected statistics (the a side of H(a, b) - H(a))
# --------------------------------------------------------------------------------------


def _lookup(table: dict[type, Callable[..., float]], a: Any, what: str) -> Callable[..., float]:
    for cls in type(a).__mro__:
        if cls in table:
            return table[cls]
    raise NotImplementedError(f"no closed-form {what} for {type(a).__name__}")


def _entropy_student_t(a: StudentT) -> float:
    nu = a.df
    half = 0.5 * (nu + 1.0)
    return (
        half * (special.digamma(half) - special.digamma(0.5 * nu))
        + 0.5 * math.log(nu)
        + special.betaln(0.5 * nu, 0.5)
        + math.log(a.scale)
    )


def _entropy_beta(a: Beta) -> float:
    s = a.alpha + a.beta
    return (
        special.betaln(a.alpha, a.beta)
        - (a.alpha - 1.0) * special.digamma(a.alpha)
        - (a.beta - 1.0) * special.digamma(a.beta)
        + (s - 2.0) * special.digamma(s)
    )


_ENTROPY: dict[type, Callable[..., float]] = {
    Normal: lambda a: 0.5 + _HALF_LOG_2PI + math.log(a.scale),
    Laplace: lambda a: 1.0 + math.log(2.0 * a.scale),
    StudentT: _entropy_student_t,
    LogNormal: lambda a: a.loc + 0.5 + _HALF_LOG_2PI + math.log(a.scale),
    Exponential: lambda a: 1.0 - math.log(a.rate),
    Gamma: lambda a: (
        a.shape
        - math.log(a.rate)
        + special.gammaln(a.shape)
        + (1.0 - a.shape) * special.digamma(a.shape)
    ),
    Beta: _entropy_beta,
    Uniform: lambda a: math.log(a.high - a.low),
}


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)


def _uniform_log_moments(low: float, high: float) -> tuple[float, float]:
    """(E log X, Var log X) for X ~ U(low, high), 0 <= low < high.

    With r = (high - low)/high, X/high = 1 - r W, W ~ U(0, 1) and Y = log1p(-r W). For
    r <= 1/2, Y is analytic in W well beyond [0, 1] and a 24-point Gauss–Legendre rule is
    exact to rounding; it also gives the variance as a mean of squared deviations, with
    no cancellation for narrow intervals. For r > 1/2, ∫ log z dz = z log z - z and
    ∫ log²z dz = z log²z - 2 z log z + 2z over [t, 1], t = low/high, are well conditioned.
    """
    r = (high - low) / high
    if r <= 0.5:
        y = np.log1p(-r * 0.5 * (_GL_NODES + 1.0))
        mean_y = 0.5 * float(_GL_WEIGHTS @ y)
        var_y = 0.5 * float(_GL_WEIGHTS @ (y - mean_y) ** 2)
        return math.log(high) + mean_y, var_y
    t = low / high
    log_t = math.log(t) if t > 0.0 else 0.0  # t·log t and t·log²t vanish at t = 0
    mean_y = -1.0 - t * log_t / r
    second_y = (2.0 - t * log_t * log_t + 2.0 * t * log_t - 2.0 * t) / r
    return math.log(high) + mean_y, max(second_y - mean_y * mean_y, 0.0)


#: (E log X, Var log X) for families on (0, inf) or [0, 1].
_LOG_MOMENTS: dict[type, Callable[..., tuple[float, float]]] = {
    LogNormal: lambda a: (a.loc, a.scale**2),
    Exponential: lambda a: (-_EULER_GAMMA - math.log(a.rate), math.pi**2 / 6.0),
    Gamma: lambda a: (
        special.digamma(a.shape) - math.log(a.rate),
        special.polygamma(1, a.shape),
    ),
    Beta: lambda a: (
        special.digamma(a.alpha) - special.digamma(a.alpha + a.beta),
        special.polygamma(1, a.alpha) - special.polygamma(1, a.alpha + a.beta),
    ),
    Uniform: lambda a: _uniform_log_moments(a.low, a.high),
}

#: E log(1 - X) for families on [0, 1] other than Beta (Beta–Beta has its own form).
_LOG1M_MEAN: dict[type, Callable[..., float]] = {
    Uniform: lambda a: _uniform_log_moments(1.0 - a.high, 1.0 - a.low)[0],
}


def _put_student_t(a: StudentT, c: float) -> float:
    if a.df <= 1.0:
        return math.inf
    k = (c - a.loc) / a.scale
    t = stats.t(a.df)
    return a.scale * (k * t.cdf(k) + (a.df + k * k) / (a.df - 1.0) * t.pdf(k))


def _put_uniform(a: Uniform, c: float) -> float:
    if c <= a.low:
        return 0.0
    if c >= a.high:
        return c - a.mean()
    return (c - a.low) ** 2 / (2.0 * (a.high - a.low))


def _put_lognormal(a: LogNormal, c: float) -> float:
    if c <= 0.0:
        return 0.0
    d = (math.log(c) - a.loc) / a.scale
    return c * special.ndtr(d) - a.mean() * special.ndtr(d - a.scale)


def _put_beta(a: Beta, c: float) -> float:
    if c <= 0.0:
        return 0.0
    if c >= 1.0:
        return c - a.mean()
    return c * special.betainc(a.alpha, a.beta, c) - a.mean() * special.betainc(
        a.alpha + 1.0, a.beta, c
    )


def _put_gamma(a: Gamma, c: float) -> float:
    if c <= 0.0:
        return 0.0
    x = a.rate * c
    return c * special.gammainc(a.shape, x) - a.mean() * special.gammainc(a.shape + 1.0, x)


#: E[(c - X)+], the lower partial expectation, for E|X - c| = E X - c + 2 E[(c - X)+].
_PUT: dict[type, Callable[..., float]] = {
    Normal: lambda a, c: (
        a.scale
        * (
            (c - a.loc) / a.scale * special.ndtr((c - a.loc) / a.scale)
            + math.exp(-0.5 * ((c - a.loc) / a.scale) ** 2 - _HALF_LOG_2PI)
        )
    ),
    StudentT: _put_student_t,
    Uniform: _put_uniform,
    LogNormal: _put_lognormal,
    Exponential: lambda a, c: (a.rate * c + math.expm1(-a.rate * c)) / a.rate if c > 0 else 0.0,
    Gamma: _put_gamma,
    Beta: _put_beta,
}


# --------------------------------------------------------------------------------------
# Cross-entropies H(a, b) = -E_a[log b(X)] (the b side)
# --------------------------------------------------------------------------------------


def _ce_normal(a: Any, b: Normal) -> float:
    mean, var = a.mean(), a.variance()
    if not (math.isfinite(mean) and math.isfinite(var)):
        return math.inf
    z = (mean - b.loc) / b.scale
    return math.log(b.scale) + _HALF_LOG_2PI + 0.5 * (var / b.scale**2 + z * z)


def _ce_laplace(a: Any, b: Laplace) -> float:
    mean = a.mean()
    if not math.isfinite(mean):
        return math.inf
    mean_abs = (mean - b.loc) + 2.0 * _lookup(_PUT, a, "partial expectation")(a, b.loc)
    return math.log(2.0 * b.scale) + mean_abs / b.scale


def _ce_exponential(a: Any, b: Exponential) -> float:
    return -math.log(b.rate) + b.rate * a.mean()


def _ce_gamma(a: Any, b: Gamma) -> float:
    mean_log, _ = _lookup(_LOG_MOMENTS, a, "log-moments")(a)
    return (
        -b.shape * math.log(b.rate)
        + special.gammaln(b.shape)
        - (b.shape - 1.0) * mean_log
        + b.rate * a.mean()
    )


def _ce_lognormal(a: Any, b: LogNormal) -> float:
    mean_log, var_log = _lookup(_LOG_MOMENTS, a, "log-moments")(a)
    z = (mean_log - b.loc) / b.scale
    return math.log(b.scale) + _HALF_LOG_2PI + mean_log + 0.5 * (var_log / b.scale**2 + z * z)


def _ce_beta(a: Any, b: Beta) -> float:
    mean_log, _ = _lookup(_LOG_MOMENTS, a, "log-moments")(a)
    mean_log1m = _lookup(_LOG1M_MEAN, a, "E log(1 - X)")(a)
    return (
        special.betaln(b.alpha, b.beta) - (b.alpha - 1.0) * mean_log - (b.beta - 1.0) * mean_log1m
    )


_CROSS_ENTROPY: dict[type, Callable[..., float]] = {
    Normal: _ce_normal,
    Laplace: _ce_laplace,
    Exponential: _ce_exponential,
    Gamma: _ce_gamma,
    LogNormal: _ce_lognormal,
    Beta: _ce_beta,
    Uniform: lambda a, b: math.log(b.high - b.low),
}


def kl_cross_entropy(a: Any, b: Any) -> float:
    """KL(a||b) = H(a, b) - H(a), both in closed form; inf when a's support is not in b's."""
    if not b.support.contains(a.support):
        return math.inf
    cross = _lookup(_CROSS_ENTROPY, b, "cross-entropy")(a, b)
    if math.isinf(cross):
        return cross
    return float(cross - _lookup(_ENTROPY, a, "entropy")(a))


#: (a family, b family) pairs computed by ``kl_cross_entropy``.
CROSS_ENTROPY_PAIRS: tuple[tuple[type, type], ...] = (
    *((a, Normal) for a in (Laplace, StudentT, LogNormal, Exponential, Gamma, Beta, Uniform)),
    *((a, Laplace) for a in (Normal, StudentT, LogNormal, Exponential, Gamma, Beta, Uniform)),
    *((a, Exponential) for a in (LogNormal, Beta, Uniform)),
    *((a, Gamma) for a in (LogNormal, Beta, Uniform)),
    *((a, LogNormal) for a in (Exponential, Gamma, Beta, Uniform)),
    (Uniform, Beta),
    (Beta, Uniform),
)

for _a, _b in CROSS_ENTROPY_PAIRS:
    register_kl(_a, _b)(kl_cross_entropy)

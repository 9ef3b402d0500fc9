"""Cross-family closed-form KL divergences between the 1-D continuous families:
KL(a||b) = H(a, b) - H(a).

The entropy H(a) is known in closed form for every family here, and log b(x) is linear in a
few statistics of x (x, x², |x - c|, log x, log² x, log(1 - x)) whose expectations under a
are known exactly. ``kl`` returns ``inf`` before any of these run when a's support is not
inside b's. Registered for :data:`CROSS_ENTROPY_PAIRS` on import.

>>> from klest.distributions import Gamma, Normal, Uniform
>>> from klest.divergence.registry import kl
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
from scipy import special

from klest._special import (
    entropy_gamma_shape,
    exp,
    scaled_difference,
)
from klest.distributions.beta import Beta
from klest.distributions.exponential import Exponential
from klest.distributions.gamma import Gamma
from klest.distributions.laplace import Laplace
from klest.distributions.lognormal import LogNormal
from klest.distributions.normal import Normal
from klest.distributions.student_t import StudentT
from klest.distributions.uniform import Uniform
from klest.divergence.registry import register_kl

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_EULER_GAMMA = 0.5772156649015329
_LOG_2 = math.log(2.0)


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
    if nu > 1e4:
        # Huge df: the direct terms are near log df and cancel. With x = df/2, the
        # asymptotic series give ψ(x + ½) - ψ(x) and ½ log df + lnB(x, ½) =
        # ½ log 2π + 1/(4 df) - 1/(24 df³), exact to rounding here.
        x = 0.5 * nu
        gap = (
            math.log1p(0.5 / x)
            + 0.5 / x
            - 0.5 / half
            + 1.0 / (12.0 * x * x)
            - 1.0 / (12.0 * half * half)
        )
        log_norm = _HALF_LOG_2PI + 0.25 / nu - 1.0 / (24.0 * nu * nu * nu)
    else:
        gap = float(special.digamma(half)) - float(special.digamma(0.5 * nu))
        log_norm = 0.5 * math.log(nu) + float(special.betaln(0.5 * nu, 0.5))
    return half * gap + log_norm + math.log(a.scale)


def entropy_beta(a: Beta) -> float:
    # lnB(α, β) - (α-1)ψ(α) - (β-1)ψ(β) + (s-2)ψ(s) = E(α) + E(β) - E(s) - ψ(s), with
    # E(x) = x + lnΓ(x) + (1-x)ψ(x) stable for huge shapes
    s = a.alpha + a.beta
    return (
        entropy_gamma_shape(a.alpha)
        + entropy_gamma_shape(a.beta)
        - entropy_gamma_shape(s)
        - float(special.digamma(s))
    )


_ENTROPY: dict[type, Callable[..., float]] = {
    Normal: lambda a: 0.5 + _HALF_LOG_2PI + math.log(a.scale),
    Laplace: lambda a: 1.0 + _LOG_2 + math.log(a.scale),
    StudentT: _entropy_student_t,
    LogNormal: lambda a: a.loc + 0.5 + _HALF_LOG_2PI + math.log(a.scale),
    Exponential: lambda a: 1.0 - math.log(a.rate),
    Gamma: lambda a: entropy_gamma_shape(a.shape) - math.log(a.rate),
    Beta: entropy_beta,
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


def _uniform_log_sd(low: float, high: float) -> tuple[float, float]:
    mean, var = _uniform_log_moments(low, high)
    return mean, math.sqrt(var)


def _sd_beside_pole(x: float, rest: float) -> float:
    """sqrt(1/x² + rest) (> 0) without forming 1/x², which overflows for tiny x.

    For x >= 1 (no pole to fear) the sum is formed directly and clamped at 0: 1/x² + rest
    may cancel to a rounding error of either sign (Beta(2, 1e-17): ψ'(2) - ψ'(2 + 1e-17)).
    """
    if x >= 1.0:
        return math.sqrt(max(1.0 / (x * x) + rest, 0.0))
    return math.sqrt(max(1.0 + rest * x * x, 0.0)) / x


#: (E log X, SD log X) for families on (0, inf) or [0, 1]; ψ'(x) = ψ'(x + 1) + 1/x².
_LOG_MOMENTS: dict[type, Callable[..., tuple[float, float]]] = {
    LogNormal: lambda a: (a.loc, a.scale),
    Exponential: lambda a: (-_EULER_GAMMA - math.log(a.rate), math.pi / math.sqrt(6.0)),
    Gamma: lambda a: (
        float(special.digamma(a.shape)) - math.log(a.rate),
        _sd_beside_pole(a.shape, float(special.polygamma(1, a.shape + 1.0))),
    ),
    Beta: lambda a: (
        float(special.digamma(a.alpha)) - float(special.digamma(a.alpha + a.beta)),
        _sd_beside_pole(
            a.alpha,
            float(special.polygamma(1, a.alpha + 1.0))
            - float(special.polygamma(1, a.alpha + a.beta)),
        ),
    ),
    Uniform: lambda a: _uniform_log_sd(a.low, a.high),
}

#: E log(1 - X) for families on [0, 1] other than Beta (Beta–Beta has its own form).
_LOG1M_MEAN: dict[type, Callable[..., float]] = {
    Uniform: lambda a: _uniform_log_moments(1.0 - a.high, 1.0 - a.low)[0],
}


def _log_std_student_t(a: StudentT) -> float:
    if a.df <= 2.0:
        return math.inf
    return math.log(a.scale) + 0.5 * (math.log(a.df) - math.log(a.df - 2.0))


def _log_std_lognormal(a: LogNormal) -> float:
    s2 = a.scale * a.scale
    # Var = expm1(s²) e^{2 loc + s²}: half its log, with log(expm1(s²)) ≈ s² for large s²
    if s2 < 1e-5:  # s² may underflow to 0: log(expm1(s²)) = 2 log s + log(1 + s²/2 + ...)
        log_expm1 = 2.0 * math.log(a.scale) + math.log1p(s2 * (0.5 + s2 / 6.0))
    elif s2 < 700.0:
        log_expm1 = math.log(math.expm1(s2))
    else:
        log_expm1 = s2 + math.log1p(-exp(-s2))
    return a.loc + 0.5 * s2 + 0.5 * log_expm1


def _log_std_beta(a: Beta) -> float:
    log_s = math.log(a.alpha) + math.log1p(a.beta / a.alpha)
    log_s1 = log_s + math.log1p(exp(-log_s))  # log(s + 1)
    return 0.5 * (math.log(a.alpha) + math.log(a.beta) - 2.0 * log_s - log_s1)


#: log of the standard deviation (inf where the variance is), never through the variance.
_LOG_STD: dict[type, Callable[..., float]] = {
    Normal: lambda a: math.log(a.scale),
    Laplace: lambda a: 0.5 * _LOG_2 + math.log(a.scale),
    StudentT: _log_std_student_t,
    LogNormal: _log_std_lognormal,
    Exponential: lambda a: -math.log(a.rate),
    Gamma: lambda a: 0.5 * math.log(a.shape) - math.log(a.rate),
    Beta: _log_std_beta,
    Uniform: lambda a: math.log(a.high - a.low) - 0.5 * math.log(12.0),
}


def _log_mean_positive(a: Any) -> float:
    """log E X for the families on [0, inf)."""
    if isinstance(a, LogNormal):
        return a.loc + 0.5 * a.scale * a.scale
    if isinstance(a, Exponential):
        return -math.log(a.rate)
    if isinstance(a, Gamma):
        return math.log(a.shape) - math.log(a.rate)
    if isinstance(a, Beta):
        return -math.log1p(a.beta / a.alpha)
    if isinstance(a, Uniform):
        return math.log(0.5 * a.low + 0.5 * a.high)
    raise NotImplementedError(f"no closed-form log-mean for {type(a).__name__}")


def _mean(a: Any) -> float:
    """E X: NaN where it does not exist (StudentT, df <= 1), inf beyond the float64 range."""
    if isinstance(a, LogNormal | Exponential | Gamma | Beta):
        return exp(_log_mean_positive(a))
    if isinstance(a, Uniform):
        return 0.5 * a.low + 0.5 * a.high
    return float(a.mean())


def _put_student_t(a: StudentT, c: float) -> float:
    if a.df <= 1.0:
        return math.inf
    k = scaled_difference(c, a.loc, a.scale)
    # deferred: scipy.stats is most of a cold `import klest`
    from scipy import stats

    t = stats.t(a.df)
    # (df + k²) t.pdf(k) in log space: k² overflows long before the product does
    ak = abs(k)
    log_df_k2 = (
        math.log(a.df + k * k) if ak < 1e150 else 2.0 * math.log(ak) + math.log1p(a.df / ak / ak)
    )
    tail = exp(log_df_k2 + float(t.logpdf(k))) / (a.df - 1.0)
    return a.scale * (k * float(t.cdf(k)) + tail)


def _put_uniform(a: Uniform, c: float) -> float:
    if c <= a.low:
        return 0.0
    if c >= a.high:
        return c - _mean(a)
    return (c - a.low) * ((c - a.low) / (2.0 * (a.high - a.low)))


def _put_lognormal(a: LogNormal, c: float) -> float:
    if c <= 0.0:
        return 0.0
    d = (math.log(c) - a.loc) / a.scale
    head = c * float(special.ndtr(d))
    # E[X; X <= c] = e^{loc + s²/2} Φ(d - s), formed in log space (it is at most c)
    log_phi = float(special.log_ndtr(d - a.scale))
    return head - exp(_log_mean_positive(a) + log_phi)


def _put_beta(a: Beta, c: float) -> float:
    if c <= 0.0:
        return 0.0
    if c >= 1.0:
        return c - _mean(a)
    return c * float(special.betainc(a.alpha, a.beta, c)) - _mean(a) * float(
        special.betainc(a.alpha + 1.0, a.beta, c)
    )


def _put_gamma(a: Gamma, c: float) -> float:
    if c <= 0.0:
        return 0.0
    x = a.rate * c
    return c * float(special.gammainc(a.shape, x)) - _mean(a) * float(
        special.gammainc(a.shape + 1.0, x)
    )


def _put_normal(a: Normal, c: float) -> float:
    k = scaled_difference(c, a.loc, a.scale)
    return a.scale * (k * float(special.ndtr(k)) + math.exp(-0.5 * k * k - _HALF_LOG_2PI))


def _put_exponential(a: Exponential, c: float) -> float:
    if c <= 0.0:
        return 0.0
    x = a.rate * c
    return c + math.expm1(-x) / a.rate


#: E[(c - X)+], the lower partial expectation, for E|X - c| = E X - c + 2 E[(c - X)+].
_PUT: dict[type, Callable[..., float]] = {
    Normal: _put_normal,
    StudentT: _put_student_t,
    Uniform: _put_uniform,
    LogNormal: _put_lognormal,
    Exponential: _put_exponential,
    Gamma: _put_gamma,
    Beta: _put_beta,
}


# --------------------------------------------------------------------------------------
# Cross-entropies H(a, b) = -E_a[log b(X)] (the b side)
# --------------------------------------------------------------------------------------


def _ce_normal(a: Any, b: Normal) -> float:
    mean, log_std = _mean(a), _lookup(_LOG_STD, a, "log-std")(a)
    if not (math.isfinite(mean) and math.isfinite(log_std)):
        return math.inf
    ratio = exp(log_std - math.log(b.scale))  # sd_a / s_b, never sd_a² / s_b²
    z = scaled_difference(mean, b.loc, b.scale)
    return math.log(b.scale) + _HALF_LOG_2PI + 0.5 * (ratio * ratio + z * z)


def _ce_laplace(a: Any, b: Laplace) -> float:
    mean = _mean(a)
    if not math.isfinite(mean):
        return math.inf
    put = _lookup(_PUT, a, "partial expectation")(a, b.loc)
    mean_abs = scaled_difference(mean, b.loc, b.scale) + 2.0 * (put / b.scale)
    return _LOG_2 + math.log(b.scale) + mean_abs


def _ce_exponential(a: Any, b: Exponential) -> float:
    return -math.log(b.rate) + exp(math.log(b.rate) + _log_mean_positive(a))


def _ce_gamma(a: Any, b: Gamma) -> float:
    mean_log, _ = _lookup(_LOG_MOMENTS, a, "log-moments")(a)
    log_rate = math.log(b.rate)
    return (
        -b.shape * log_rate
        + float(special.gammaln(b.shape))
        - (b.shape - 1.0) * mean_log
        + exp(log_rate + _log_mean_positive(a))
    )


def _ce_lognormal(a: Any, b: LogNormal) -> float:
    mean_log, sd_log = _lookup(_LOG_MOMENTS, a, "log-moments")(a)
    ratio = sd_log / b.scale
    z = scaled_difference(mean_log, b.loc, b.scale)
    return math.log(b.scale) + _HALF_LOG_2PI + mean_log + 0.5 * (ratio * ratio + z * z)


def _ce_beta(a: Any, b: Beta) -> float:
    mean_log, _ = _lookup(_LOG_MOMENTS, a, "log-moments")(a)
    mean_log1m = _lookup(_LOG1M_MEAN, a, "E log(1 - X)")(a)
    return (
        float(special.betaln(b.alpha, b.beta))
        - (b.alpha - 1.0) * mean_log
        - (b.beta - 1.0) * mean_log1m
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
    with np.errstate(all="ignore"):  # scipy scalars at extreme arguments
        cross = _lookup(_CROSS_ENTROPY, b, "cross-entropy")(a, b)
        if math.isinf(cross):
            return cross
        value = float(cross - _lookup(_ENTROPY, a, "entropy")(a))
    if math.isnan(value):
        raise ValueError(
            f"KL({type(a).__name__}||{type(b).__name__}) is not computable in float64 for "
            f"{a!r} and {b!r}: the closed form's terms overflow"
        )
    return max(value, 0.0)


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

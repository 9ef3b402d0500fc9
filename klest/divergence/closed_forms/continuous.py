"""Closed-form KL divergences between the 1-D continuous families.

Same-family pairs have dedicated forms written to stay accurate when a is close to b:
Laplace, LogNormal, Exponential, Gamma, Beta, Uniform (and Exponential–Gamma either way,
an exponential being a Gamma of shape 1). StudentT–StudentT and the Gaussian-mixture pairs
have no closed form; ``kl`` integrates them numerically.

Cross-family pairs are in :mod:`klest.divergence.closed_forms.cross_entropy`.

>>> from klest.distributions import Exponential, Gamma, Normal, Uniform
>>> from klest.divergence.registry import kl
>>> round(kl(Exponential(rate=1.0), Exponential(rate=2.0)), 12)  # 1 - log 2
0.306852819440
>>> round(kl(Uniform(low=0.0, high=1.0), Normal(loc=0.0, scale=1.0)), 12)
1.085605199871
>>> kl(Uniform(low=-1.0, high=1.0), Gamma(shape=2.0, rate=1.0))
inf
"""

from __future__ import annotations

import math

from scipy import special

from klest._special import (
    entropy_gamma_shape,
    exp,
    expm1_minus,
    lgamma_bregman,
    log_ratio,
    scaled_difference,
    times_expm1_minus,
)
from klest.distributions.beta import Beta
from klest.distributions.exponential import Exponential
from klest.distributions.gamma import Gamma
from klest.distributions.laplace import Laplace
from klest.distributions.lognormal import LogNormal
from klest.distributions.uniform import Uniform
from klest.divergence.closed_forms.cross_entropy import entropy_beta
from klest.divergence.registry import register_kl

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_EULER_GAMMA = 0.5772156649015329
_LOG_2 = math.log(2.0)


def _kl_gamma(shape_a: float, rate_a: float, shape_b: float, rate_b: float) -> float:
    """KL(Gamma(αa, βa) || Gamma(αb, βb)), from whichever of two forms rounds less.

    The Bregman form αa·h(u) + (αa - αb)·u + D_lnΓ(αa, αb), u = log(βb/βa), is accurate when
    a is near b. Far apart with a huge shape its terms are huge and cancel (αa = 1e20,
    u = -690: 7e22 - 7e22); the cross-entropy form H(a, b) - H(a), with the entropy from
    :func:`entropy_gamma_shape`, then has terms of moderate size.
    """
    u = log_ratio(rate_b, rate_a)
    parts = (
        times_expm1_minus(shape_a, u),
        (shape_a - shape_b) * u,
        lgamma_bregman(shape_a, shape_b),
    )
    bregman = math.fsum(parts) if all(map(math.isfinite, parts)) else sum(parts)
    if not math.isfinite(bregman):
        return bregman
    log_rate_a, log_rate_b = math.log(rate_a), math.log(rate_b)
    mean_log = float(special.digamma(shape_a)) - log_rate_a
    terms = (
        -shape_b * log_rate_b,
        float(special.gammaln(shape_b)),
        -(shape_b - 1.0) * mean_log,
        exp(log_rate_b - log_rate_a + math.log(shape_a)),  # βb E_a[X]
        -(entropy_gamma_shape(shape_a) - log_rate_a),
    )
    if not all(map(math.isfinite, terms)):
        return bregman
    if math.fsum(map(abs, terms)) < math.fsum(map(abs, parts)):
        return max(math.fsum(terms), 0.0)
    return bregman


# --------------------------------------------------------------------------------------
# Same-family closed forms
# --------------------------------------------------------------------------------------


@register_kl(Laplace, Laplace)
def kl_laplace_laplace(a: Laplace, b: Laplace) -> float:
    """KL = log(b_s/a_s) + |Δ|/b_s + (a_s/b_s)·exp(-|Δ|/a_s) - 1, Δ = a_loc - b_loc.

    Written as h(log r) + r·h(-|Δ|/a_s) with r = a_s/b_s and h(u) = e^u - 1 - u >= 0: two
    non-negative terms, no cancellation.
    """
    r_log = log_ratio(a.scale, b.scale)
    t = abs(scaled_difference(a.loc, b.loc, a.scale))  # |Δ| / a_s
    if math.isinf(expm1_minus(r_log)):  # both terms are >= 0
        return math.inf
    if t < 0.5:
        return expm1_minus(r_log) + exp(r_log) * expm1_minus(-t)
    # r·h(-t) = r·expm1(-t) + |Δ|/b_s: no exp(r_log) overflow, no 0·inf
    return (
        expm1_minus(r_log)
        + exp(r_log) * math.expm1(-t)
        + abs(scaled_difference(a.loc, b.loc, b.scale))
    )


@register_kl(LogNormal, LogNormal)
def kl_lognormal_lognormal(a: LogNormal, b: LogNormal) -> float:
    """KL = KL(N(m_a, s_a²) || N(m_b, s_b²)) (KL is invariant under x -> log x)."""
    u = 2.0 * log_ratio(a.scale, b.scale)
    shift = scaled_difference(a.loc, b.loc, b.scale)
    return 0.5 * expm1_minus(u) + 0.5 * shift * shift


@register_kl(Exponential, Exponential)
def kl_exponential_exponential(a: Exponential, b: Exponential) -> float:
    """KL = λb/λa - 1 - log(λb/λa), evaluated as expm1(u) - u with u = log(λb/λa)."""
    return expm1_minus(log_ratio(b.rate, a.rate))


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

    Evaluated as D(α1,α2) + D(β1,β2) - D(s1,s2), D(x, y) = lnΓ(y) - lnΓ(x) - (y-x)ψ(x),
    accurate when a is near b. With huge shapes far from b's those terms are huge and
    cancel (Beta(1e300, 1e300)); then the cross-entropy minus the stable entropy, whose
    terms are of moderate size, is used instead.
    """
    s_a, s_b = a.alpha + a.beta, b.alpha + b.beta
    parts = (
        lgamma_bregman(a.alpha, b.alpha),
        lgamma_bregman(a.beta, b.beta),
        -lgamma_bregman(s_a, s_b),
    )
    bregman = sum(parts)
    if not all(map(math.isfinite, parts)):
        return bregman if not math.isnan(bregman) else math.inf
    digamma_s = float(special.digamma(s_a))
    terms = (
        float(special.betaln(b.alpha, b.beta)),
        -(b.alpha - 1.0) * (float(special.digamma(a.alpha)) - digamma_s),  # E log X
        -(b.beta - 1.0) * (float(special.digamma(a.beta)) - digamma_s),  # E log(1 - X)
        -entropy_beta(a),
    )
    if all(map(math.isfinite, terms)) and math.fsum(map(abs, terms)) < math.fsum(map(abs, parts)):
        return max(math.fsum(terms), 0.0)
    return max(math.fsum(parts), 0.0)


@register_kl(Uniform, Uniform)
def kl_uniform_uniform(a: Uniform, b: Uniform) -> float:
    """KL = log(width_b / width_a) if a's interval lies inside b's, else inf."""
    if a.low < b.low or a.high > b.high:
        return math.inf
    return math.log((b.high - b.low) / (a.high - a.low))

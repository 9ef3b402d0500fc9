"""KL(Normal || Normal) in closed form."""

from __future__ import annotations

from klest._special import expm1_minus, log_ratio, scaled_difference
from klest.distributions.normal import Normal
from klest.divergence.registry import register_kl


@register_kl(Normal, Normal)
def kl_normal_normal(a: Normal, b: Normal) -> float:
    """KL(N(m_a, s_a²) || N(m_b, s_b²)) = log(s_b/s_a) + (s_a² + (m_a-m_b)²)/(2 s_b²) - 1/2.

    Written with the variance ratio v = (s_a/s_b)² as (v - 1 - log v)/2 + Δ²/(2 s_b²), and
    v - 1 - log v evaluated as expm1(u) - u with u = log v, stable when the scales are close.
    u = 2 (log s_a - log s_b) never forms s_a/s_b, so scales such as 1e-17 or 1e300 work;
    a value beyond the float64 range is ``inf``.

    >>> round(kl_normal_normal(Normal(loc=0.0, scale=1e-17), Normal(loc=0.0, scale=1.0)), 10)
    38.6439465809
    """
    u = 2.0 * log_ratio(a.scale, b.scale)  # log1p near equal scales: exact one ulp apart
    shift = scaled_difference(a.loc, b.loc, b.scale)
    return 0.5 * expm1_minus(u) + 0.5 * shift * shift

"""KL(Normal || Normal) in closed form."""

from __future__ import annotations

import math

from klest.distributions.normal import Normal
from klest.divergence import register_kl


@register_kl(Normal, Normal)
def kl_normal_normal(a: Normal, b: Normal) -> float:
    """KL(N(m_a, s_a²) || N(m_b, s_b²)) = log(s_b/s_a) + (s_a² + (m_a-m_b)²)/(2 s_b²) - 1/2.

    Written with the variance ratio v = (s_a/s_b)² as (v - 1 - log v)/2 + Δ²/(2 s_b²), and
    v - 1 - log v evaluated as expm1(u) - u with u = log v, stable when the scales are close.
    """
    u = 2.0 * (math.log(a.scale) - math.log(b.scale))
    ratio_term = math.expm1(u) - u if abs(u) > 1e-4 else u * u / 2.0 + u**3 / 6.0 + u**4 / 24.0
    shift = (a.loc - b.loc) / b.scale
    return 0.5 * ratio_term + 0.5 * shift * shift

"""KL(Normal || Normal) in closed form."""

from __future__ import annotations

import math

import numpy as np

from klest.distributions.normal import Normal
from klest.divergence import register_kl
from klest.estimators import expm1_minus_x


@register_kl(Normal, Normal)
def kl_normal_normal(a: Normal, b: Normal) -> float:
    """KL(N(m_a, s_a²) || N(m_b, s_b²)) = log(s_b/s_a) + (s_a² + (m_a-m_b)²)/(2 s_b²) - 1/2.

    Written with the variance ratio v = (s_a/s_b)² as (v - 1 - log v)/2 + Δ²/(2 s_b²), and
    v - 1 - log v evaluated as expm1(u) - u with u = log v, stable when the scales are close.
    """
    u = 2.0 * math.log1p((a.scale - b.scale) / b.scale)  # exact for scales one ulp apart
    ratio_term = float(expm1_minus_x(np.array([u]))[0])
    shift = (a.loc - b.loc) / b.scale
    return 0.5 * ratio_term + 0.5 * shift * shift

"""Move a pair of 1-D distributions to q's own units: x -> (x - shift) / scale for both.

KL(q||p) and the law of the log-ratio log p(X) - log q(X), X ~ q, do not change when one
increasing affine map is applied to both distributions. Quadrature works best where q's
bulk sits near 0 at unit scale; at extreme parameters (q = Normal(loc=1e20, scale=1), whose
bulk float64 cannot resolve in x, or StudentT(scale=1e300), whose tails leave the float64
range) it only works there. The map is taken from q (its location and scale, or its scale
alone for families on [0, inf)) and applied to p when p's family is closed under it.

>>> from klest.distributions import Normal, StudentT
>>> standardized(Normal(loc=1e20, scale=2.0), StudentT(df=3.0, loc=0.0, scale=1.0))
(Normal(loc=0.0, scale=1.0), StudentT(df=3.0, loc=-5e+19, scale=0.5))
"""

from __future__ import annotations

import math

from klest.distributions.base import Distribution
from klest.distributions.exponential import Exponential
from klest.distributions.gamma import Gamma
from klest.distributions.laplace import Laplace
from klest.distributions.lognormal import LogNormal
from klest.distributions.normal import Normal
from klest.distributions.student_t import StudentT
from klest.distributions.uniform import Uniform

__all__ = ["standardized"]

_LOCATION_SCALE = (Normal, Laplace, StudentT)
_LOG_MAX = math.log(1.7976931348623157e308)


def _scaled_difference(x: float, y: float, s: float) -> float:
    d = x - y
    return d / s if math.isfinite(d) else x / s - y / s


def _exp(u: float) -> float:
    return math.exp(u) if u < _LOG_MAX else math.inf


def _unit_map(q: Distribution) -> tuple[float, float] | None:
    """(shift, log scale) of the map that puts q at 0 with unit scale, or None."""
    if type(q) in _LOCATION_SCALE:
        return q.loc, math.log(q.scale)
    if type(q) is Uniform:
        width = q.high - q.low
        return (q.low, math.log(width)) if math.isfinite(width) else None
    if type(q) in (Exponential, Gamma):
        return 0.0, -math.log(q.rate)
    if type(q) is LogNormal:
        return 0.0, q.loc
    return None


def _mapped(d: Distribution, shift: float, log_scale: float) -> Distribution | None:
    """The law of (X - shift) / e^log_scale for X ~ d, or None (not closed, out of range)."""
    scale = _exp(log_scale)
    if not 0.0 < scale < math.inf:
        return None
    if type(d) in _LOCATION_SCALE:
        kw = {"df": d.df} if type(d) is StudentT else {}
        new_scale = _exp(math.log(d.scale) - log_scale)
        kw.update(loc=_scaled_difference(d.loc, shift, scale), scale=new_scale)
    elif type(d) is Uniform:
        kw = {"low": _scaled_difference(d.low, shift, scale)}
        kw["high"] = _scaled_difference(d.high, shift, scale)
    elif shift != 0.0:
        return None
    elif type(d) in (Exponential, Gamma):
        kw = {"shape": d.shape} if type(d) is Gamma else {}
        kw["rate"] = _exp(math.log(d.rate) + log_scale)
    elif type(d) is LogNormal:
        kw = {"loc": d.loc - log_scale, "scale": d.scale}
    else:
        return None
    values = list(kw.values())
    if not all(math.isfinite(v) for v in values) or kw.get("scale", 1.0) <= 0.0:
        return None
    if kw.get("rate", 1.0) <= 0.0 or ("low" in kw and not kw["low"] < kw["high"]):
        return None
    try:
        return type(d)(**kw)
    except ValueError:
        return None


def standardized(q: Distribution, p: Distribution) -> tuple[Distribution, Distribution]:
    """(q', p'): both mapped by x -> (x - shift)/scale with q' at 0 and unit scale.

    The pair comes back unchanged when the map is the identity, when a family is not closed
    under it (Beta, mixtures, discrete families), or when a mapped parameter would leave the
    float64 range (the pair is then as computable as before, no less).
    """
    unit = _unit_map(q)
    if unit is None or unit == (0.0, 0.0):
        return q, p
    shift, log_scale = unit
    q2, p2 = _mapped(q, shift, log_scale), _mapped(p, shift, log_scale)
    if q2 is None or p2 is None:
        return q, p
    return q2, p2

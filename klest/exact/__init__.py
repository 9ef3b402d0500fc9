"""Exact moments of every estimator under x ~ q, no sampling: Gaussian closed forms and
series (``gaussian``), enumeration and quadrature otherwise (``moments``).

Imports ``klest.divergence``, ``klest.estimators``, ``klest.integrate``,
``klest.distributions`` and the helpers.
"""

from klest.errors import NoExactMethodError
from klest.exact.moments import ExactMoments, exact_frame, exact_moments

__all__ = ["ExactMoments", "NoExactMethodError", "exact_frame", "exact_moments"]

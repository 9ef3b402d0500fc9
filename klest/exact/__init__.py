"""Exact estimator moments under x ~ q, no sampling: Gaussian forms, enumeration, quadrature.
May import klest.divergence, estimators, integrate, distributions, errors and _special only.
"""

from klest.errors import NoExactMethodError
from klest.exact.moments import ExactMoments, exact_frame, exact_moments

__all__ = ["ExactMoments", "NoExactMethodError", "exact_frame", "exact_moments"]

"""What each KL estimator's gradient really optimises (softmax and Gaussian policies)."""

from klest.gradients.coefficients import PLACEMENTS, gradient_coefficient, placement_info
from klest.gradients.fixed_point import FixedPoint, fixed_point
from klest.gradients.softmax import (
    expected_gradient,
    gradient_covariance_trace,
    kl_pair,
    per_sample_gradients,
    true_gradient,
)

__all__ = [
    "PLACEMENTS",
    "FixedPoint",
    "expected_gradient",
    "fixed_point",
    "gradient_coefficient",
    "gradient_covariance_trace",
    "kl_pair",
    "per_sample_gradients",
    "placement_info",
    "true_gradient",
]

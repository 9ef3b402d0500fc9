"""What each KL estimator's gradient really optimises (softmax and Gaussian policies).

Imports ``klest.rl`` and the layers below it; never ``klest.sequence`` (its sibling) or above.
"""

from klest.gradients.coefficients import PLACEMENTS, gradient_coefficient, placement_info
from klest.gradients.fixed_point import FixedPoint, fixed_point
from klest.gradients.gaussian import (
    gaussian_expected_gradient,
    gaussian_gradient_covariance_trace,
    gaussian_true_gradient,
)
from klest.gradients.monte_carlo import (
    ROUTES,
    MonteCarloGradient,
    gaussian_monte_carlo_gradient,
    monte_carlo_gradient,
)
from klest.gradients.offpolicy import WEIGHTINGS, PenaltyGradient, penalty_gradient
from klest.gradients.offpolicy_gaussian import gaussian_penalty_gradient
from klest.gradients.offpolicy_mc import offpolicy_monte_carlo_gradient
from klest.gradients.softmax import (
    expected_gradient,
    gradient_covariance_trace,
    kl_pair,
    per_sample_gradients,
    true_gradient,
)
from klest.gradients.tables import (
    coefficient_table,
    fixed_point_table,
    gaussian_gradient_table,
    gradient_table,
)

__all__ = [
    "PLACEMENTS",
    "ROUTES",
    "WEIGHTINGS",
    "FixedPoint",
    "MonteCarloGradient",
    "PenaltyGradient",
    "coefficient_table",
    "expected_gradient",
    "fixed_point",
    "fixed_point_table",
    "gaussian_expected_gradient",
    "gaussian_gradient_covariance_trace",
    "gaussian_gradient_table",
    "gaussian_monte_carlo_gradient",
    "gaussian_penalty_gradient",
    "gaussian_true_gradient",
    "gradient_coefficient",
    "gradient_covariance_trace",
    "gradient_table",
    "kl_pair",
    "monte_carlo_gradient",
    "offpolicy_monte_carlo_gradient",
    "penalty_gradient",
    "per_sample_gradients",
    "placement_info",
    "true_gradient",
]

"""KL(MultivariateNormal || MultivariateNormal) in closed form, through Cholesky factors."""

from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular

from klest._special import expm1_minus
from klest.distributions.multivariate_normal import (
    MultivariateNormal,
    cholesky_difference,
    same_covariance,
)
from klest.divergence.registry import register_kl


@register_kl(MultivariateNormal, MultivariateNormal)
def kl_mvn_mvn(a: MultivariateNormal, b: MultivariateNormal) -> float:
    """KL(N(m_a, S_a) || N(m_b, S_b)) with S_a = L_a L_a', S_b = L_b L_b' and M = L_b^{-1} L_a:

    0.5 * (||M||_F^2 + ||L_b^{-1}(m_b - m_a)||^2 - d + 2 sum log diag L_b - 2 sum log diag L_a).

    The trace and log-determinant parts are combined per diagonal entry as
    M_ii^2 - 1 - log M_ii^2 = expm1(u_i) - u_i with u_i = 2 (log L_a,ii - log L_b,ii), plus the
    squared strictly-lower entries of M, so nothing cancels when a is close to b and the
    result is exactly 0 for identical arguments.

    >>> a = MultivariateNormal(mean=[0.0, 0.0], cov=[[1.0, 0.3], [0.3, 2.0]])
    >>> kl_mvn_mvn(a, a)
    0.0
    >>> b = MultivariateNormal(mean=[0.1, 0.0], cov=[[1.0, 0.0], [0.0, 1.0]])
    >>> round(kl_mvn_mvn(b, MultivariateNormal(mean=[0.0, 0.0], cov=np.eye(2))), 12)
    0.005
    """
    if a.dim != b.dim:
        raise ValueError(
            f"KL(MultivariateNormal || MultivariateNormal) needs equal dimensions, "
            f"got {a.dim} and {b.dim}"
        )
    la = a.scale_tril
    lb = la if same_covariance(a, b) else b.scale_tril  # (one factor: exactly 0 for equal)
    # strictly-lower part of M = Lb^{-1} La equals that of Lb^{-1} (La - Lb) = M - I: exactly
    # zero when La == Lb, and free of cancellation when they are close.
    m = cholesky_difference(a, b)
    u = 2.0 * (np.log(np.diag(la)) - np.log(np.diag(lb)))
    diag_part = float(np.sum(expm1_minus(u)))
    off_diag = float(np.sum(np.square(np.tril(m, -1))))
    shift = solve_triangular(lb, b.mean() - a.mean(), lower=True)
    return 0.5 * (diag_part + off_diag + float(shift @ shift))

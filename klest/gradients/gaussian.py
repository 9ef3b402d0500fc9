"""Expected KL-penalty gradients for a 1-D Gaussian policy, exact by adaptive quadrature.

The policy is π = N(μ, σ²) with parameters θ = (μ, log σ), the reference π_ref = N(μ_r, σ_r²).
For x ~ π (not reparametrised: the sample is not differentiated, as in policy-gradient RL) the
score is s(x) = ∇_θ log π(x) = ((x − μ)/σ², ((x − μ)/σ)² − 1), the log-ratio
l(x) = log π_ref(x) − log π(x), and each placement gives the per-sample gradient
G(x) = c(l(x)) s(x) exactly as for softmax policies (:mod:`klest.gradients.coefficients`).
Hence

    E[G] = ∫ π(x) c(l(x)) s(x) dx,   tr Cov[G] = ∫ π(x) c(l(x))² ‖s(x)‖² dx − ‖E[G]‖²,

integrated by :func:`klest.integrate.quadrature.expect_continuous` (adaptive Gauss–Kronrod, relative
tolerance 1e-11 of ∫|π g|, split where l crosses the estimator's kinks; an integral that
diverges, such as the variance of k3's gradient when σ_r² ≥ 2σ², comes back as inf).

The true gradients are closed forms of the Gaussian KL (d = μ − μ_r):

    ∇ KL(π‖π_ref) = (d/σ_r², σ²/σ_r² − 1),   ∇ KL(π_ref‖π) = (d/σ², 1 − (σ_r² + d²)/σ²).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from klest.distributions import Normal
from klest.estimators import Estimator
from klest.gradients.coefficients import (
    _resolve,
    gradient_coefficient,
    log_abs_gradient_coefficient,
)
from klest.gradients.softmax import _direction
from klest.integrate import Expectation
from klest.integrate.quadrature import expect_continuous

__all__ = [
    "gaussian_expected_gradient",
    "gaussian_gradient_covariance_trace",
    "gaussian_true_gradient",
]

ArrayFn = Callable[[np.ndarray], np.ndarray]


def _check(policy: Normal, ref: Normal) -> None:
    for name, dist in (("policy", policy), ("ref", ref)):
        if not isinstance(dist, Normal):
            raise ValueError(f"{name} must be a klest.Normal; got {dist!r}")


def _scores(x: np.ndarray, policy: Normal) -> tuple[np.ndarray, np.ndarray]:
    z = (x - policy.loc) / policy.scale
    return z / policy.scale, z * z - 1.0


def _integrate(
    policy: Normal,
    ref: Normal,
    estimator: str | Estimator,
    placement: str,
    power: int,
    weight: Callable[[np.ndarray], np.ndarray],
) -> Expectation:
    """∫ π(x) c(l(x))^power weight(x) dx, in log space where c overflows."""
    est, _ = _resolve(estimator, placement)

    def log_ratio(x: np.ndarray) -> np.ndarray:
        return ref.log_prob(x) - policy.log_prob(x)

    def g(x: np.ndarray) -> np.ndarray:
        c = gradient_coefficient(log_ratio(x), estimator=est, placement=placement)
        with np.errstate(invalid="ignore", over="ignore"):
            return np.where(c == 0.0, 0.0, c**power * weight(x))  # 0 even where s(x) = inf

    def log_abs_g(x: np.ndarray) -> np.ndarray:
        sign, log_c = log_abs_gradient_coefficient(log_ratio(x), estimator=est, placement=placement)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.where(sign == 0, -np.inf, power * log_c + np.log(np.abs(weight(x))))

    kinks = () if placement == "straight_through" else est.kinks
    level_sets = (log_ratio, kinks) if kinks else None
    return expect_continuous(policy, g, log_abs_g=log_abs_g, level_sets=level_sets)


def gaussian_expected_gradient(
    policy: Normal, ref: Normal, *, estimator: str | Estimator, placement: str
) -> np.ndarray:
    """E_{x~π}[∇_(μ, log σ) penalty(x)], shape (2,), by quadrature (see the module notes).

    >>> from klest import Normal
    >>> pi, ref = Normal(loc=0.3, scale=1.2), Normal(loc=0.0, scale=1.0)
    >>> g = gaussian_expected_gradient(pi, ref, estimator="k2", placement="loss")
    >>> bool(np.allclose(g, gaussian_true_gradient(pi, ref, direction="KL(pi||ref)")))
    True
    """
    _check(policy, ref)
    out = np.empty(2)
    for i in range(2):

        def weight(x: np.ndarray, i: int = i) -> np.ndarray:
            return _scores(x, policy)[i]

        out[i] = _integrate(policy, ref, estimator, placement, 1, weight).value
    return out


def gaussian_gradient_covariance_trace(
    policy: Normal, ref: Normal, *, estimator: str | Estimator, placement: str
) -> float:
    """tr Cov_{x~π}[G(x)] by quadrature; inf when the second moment diverges.

    >>> from klest import Normal
    >>> pi, ref = Normal(loc=0.0, scale=1.0), Normal(loc=0.0, scale=1.0)
    >>> # k1 in the loss: G = s(x), whose covariance is the Fisher information diag(1, 2)
    >>> round(gaussian_gradient_covariance_trace(pi, ref, estimator="k1", placement="loss"), 9)
    3.0
    """
    _check(policy, ref)

    def norm2(x: np.ndarray) -> np.ndarray:
        s1, s2 = _scores(x, policy)
        return s1 * s1 + s2 * s2

    second = _integrate(policy, ref, estimator, placement, 2, norm2)
    if not second.finite:
        return float("inf")
    mean = gaussian_expected_gradient(policy, ref, estimator=estimator, placement=placement)
    return max(float(second.value) - float(mean @ mean), 0.0)


def gaussian_true_gradient(
    policy: Normal, ref: Normal, *, direction: str = "KL(pi||ref)"
) -> np.ndarray:
    """∇_(μ, log σ) of KL(π‖π_ref) or KL(π_ref‖π), closed form, shape (2,).

    >>> from klest import Normal
    >>> gaussian_true_gradient(Normal(loc=1.0, scale=1.0), Normal(loc=0.0, scale=2.0))
    array([ 0.25, -0.75])
    """
    _check(policy, ref)
    d = policy.loc - ref.loc
    var, ref_var = policy.scale**2, ref.scale**2
    if _direction(direction) == "KL(pi||ref)":
        return np.array([d / ref_var, var / ref_var - 1.0])
    return np.array([d / var, 1.0 - (ref_var + d * d) / var])

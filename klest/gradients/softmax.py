"""Exact expected gradients of KL penalties for a softmax policy, by enumeration.

The policy is π = softmax(z) over V actions, the reference π_ref = softmax(z_ref); gradients
are taken with respect to the policy's logits z. For a sampled action a the score is
∇_z log π(a) = e_a − π, and every placement of an estimator gives the per-sample gradient
G(a) = c(l_a) (e_a − π) with l_a = log π_ref(a) − log π(a) and c the placement's coefficient
(:mod:`klest.gradients.coefficients`). Enumerating a:

    E_{a~π}[G(a)] = Σ_a π_a c_a (e_a − π)  =  π ⊙ (c − E_π[c]),

    tr Cov[G] = Σ_a π_a c_a² ‖e_a − π‖² − ‖E[G]‖²,   ‖e_a − π‖² = 1 − 2π_a + ‖π‖².

The true gradients, for comparison:

    ∇_z KL(π‖π_ref) = π ⊙ (c − E_π[c]) with c = log π − log π_ref = −l,
    ∇_z KL(π_ref‖π) = −Σ_a π_ref,a (e_a − π) = π − π_ref.

Consequences (each checked in the tests): k1 in the loss has zero expected gradient (c = 1 is
constant); k2 in the loss and every straight-through variant give ∇KL(π‖π_ref) (c = −l);
k3 in the loss gives ∇KL(π_ref‖π) (c = 1 − r, and π ⊙ r = π_ref); k1 as a reward and k3 with
the importance ratio ("loss_is", c = −l) give ∇KL(π‖π_ref); k3 as a reward gives
∇KL(π‖π_ref) − ∇KL(π_ref‖π); k2 as a reward is the gradient of neither.

Products π_a c_a are formed in log space so the cancellation π · (π_ref/π) survives any gap
between the logits. Sign convention: gradients of the penalty, i.e. of the quantity minimised.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import log_softmax

from klest.estimators import Estimator
from klest.gradients.coefficients import gradient_coefficient, log_abs_gradient_coefficient

__all__ = [
    "DIRECTIONS",
    "expected_gradient",
    "gradient_covariance_trace",
    "kl_pair",
    "per_sample_gradients",
    "true_gradient",
]

#: accepted spellings of the two KL directions; the policy is q and the reference p
DIRECTIONS = {
    "KL(pi||ref)": "KL(pi||ref)",
    "KL(q||p)": "KL(pi||ref)",
    "KL(ref||pi)": "KL(ref||pi)",
    "KL(p||q)": "KL(ref||pi)",
}


def _check_logits(name: str, value: Any) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (..., V) with V >= 2; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return arr


def _log_probs(logits: Any, ref_logits: Any) -> tuple[np.ndarray, np.ndarray]:
    z = _check_logits("logits", logits)
    z_ref = _check_logits("ref_logits", ref_logits)
    if z.shape[-1] != z_ref.shape[-1]:
        raise ValueError(
            f"logits and ref_logits must share the last axis V; got {z.shape} and {z_ref.shape}"
        )
    try:
        shape = np.broadcast_shapes(z.shape, z_ref.shape)
    except ValueError:
        raise ValueError(
            f"ref_logits of shape {z_ref.shape} does not broadcast with logits {z.shape}"
        ) from None
    log_pi = np.broadcast_to(log_softmax(z, axis=-1), shape)
    log_ref = np.broadcast_to(log_softmax(z_ref, axis=-1), shape)
    return log_pi, log_ref


def _weighted_coefficient(
    log_pi: np.ndarray, log_ref: np.ndarray, estimator: str | Estimator, placement: str
) -> tuple[np.ndarray, np.ndarray]:
    """(π ⊙ c, π ⊙ c²), each formed in log space."""
    sign, log_abs = log_abs_gradient_coefficient(
        log_ref - log_pi, estimator=estimator, placement=placement
    )
    with np.errstate(over="ignore", invalid="ignore"):
        pc = np.where(sign == 0, 0.0, sign * np.exp(log_pi + log_abs))
        pc2 = np.where(sign == 0, 0.0, np.exp(log_pi + 2.0 * log_abs))
    return pc, pc2


def expected_gradient(
    logits: Any, ref_logits: Any, *, estimator: str | Estimator, placement: str
) -> np.ndarray:
    """E_{a~π}[∇_z penalty(a)] exactly, shape (..., V): π ⊙ (c − E_π[c]).

    >>> import numpy as np
    >>> z, z_ref = np.array([0.5, 0.0, -1.0]), np.array([0.0, 0.3, 0.1])
    >>> np.allclose(expected_gradient(z, z_ref, estimator="k1", placement="loss"), 0.0)
    True
    >>> np.allclose(expected_gradient(z, z_ref, estimator="k3", placement="loss"),
    ...             true_gradient(z, z_ref, direction="KL(ref||pi)"))
    True
    """
    log_pi, log_ref = _log_probs(logits, ref_logits)
    pc, _ = _weighted_coefficient(log_pi, log_ref, estimator, placement)
    return pc - np.exp(log_pi) * pc.sum(axis=-1, keepdims=True)


def per_sample_gradients(
    logits: Any, ref_logits: Any, *, estimator: str | Estimator, placement: str
) -> np.ndarray:
    """G(a) for every action a, shape (..., V_action, V_logit), with row a = c(l_a)(e_a − π).

    >>> import numpy as np
    >>> G = per_sample_gradients(np.zeros(3), np.array([0.0, 1.0, 2.0]), estimator="k2",
    ...                          placement="loss")
    >>> G.shape, bool(np.allclose(G.sum(axis=-1), 0.0))
    ((3, 3), True)
    """
    log_pi, log_ref = _log_probs(logits, ref_logits)
    c = gradient_coefficient(log_ref - log_pi, estimator=estimator, placement=placement)
    pi = np.exp(log_pi)
    eye = np.eye(pi.shape[-1])
    return c[..., :, None] * (eye - pi[..., None, :])


def gradient_covariance_trace(
    logits: Any, ref_logits: Any, *, estimator: str | Estimator, placement: str
) -> np.ndarray:
    """tr Cov_{a~π}[G(a)] exactly, shape (...): the per-sample gradient noise (no baseline).

    >>> import numpy as np
    >>> pi = np.array([0.2, 0.3, 0.5])
    >>> # k1 in the loss: G(a) = e_a - pi, total variance 1 - ||pi||^2
    >>> trace = gradient_covariance_trace(np.log(pi), np.zeros(3), estimator="k1",
    ...                                   placement="loss")
    >>> round(float(trace), 12)
    0.62
    """
    log_pi, log_ref = _log_probs(logits, ref_logits)
    pc, pc2 = _weighted_coefficient(log_pi, log_ref, estimator, placement)
    pi = np.exp(log_pi)
    norm2 = np.sum(pi * pi, axis=-1, keepdims=True)
    second = np.sum(pc2 * (1.0 - 2.0 * pi + norm2), axis=-1)
    mean = pc - pi * pc.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore"):
        return np.maximum(second - np.sum(mean * mean, axis=-1), 0.0)


def _direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
    return DIRECTIONS[direction]


def true_gradient(logits: Any, ref_logits: Any, *, direction: str = "KL(pi||ref)") -> np.ndarray:
    """∇_z of KL(π‖π_ref) or KL(π_ref‖π), shape (..., V).

    >>> import numpy as np
    >>> true_gradient(np.zeros(2), np.log([0.25, 0.75]), direction="KL(ref||pi)")
    array([ 0.25, -0.25])
    """
    log_pi, log_ref = _log_probs(logits, ref_logits)
    pi = np.exp(log_pi)
    if _direction(direction) == "KL(ref||pi)":
        return pi - np.exp(log_ref)
    c = log_pi - log_ref
    pc = pi * c
    return pc - pi * pc.sum(axis=-1, keepdims=True)


def kl_pair(logits: Any, ref_logits: Any) -> dict[str, np.ndarray]:
    """Both KLs between the softmax policies: {"KL(pi||ref)": ..., "KL(ref||pi)": ...}.

    >>> import numpy as np
    >>> {k: round(float(v), 6) for k, v in kl_pair(np.zeros(2), np.log([0.25, 0.75])).items()}
    {'KL(pi||ref)': 0.143841, 'KL(ref||pi)': 0.130812}
    """
    log_pi, log_ref = _log_probs(logits, ref_logits)
    pi, ref = np.exp(log_pi), np.exp(log_ref)
    return {
        "KL(pi||ref)": np.sum(pi * (log_pi - log_ref), axis=-1),
        "KL(ref||pi)": np.sum(ref * (log_ref - log_pi), axis=-1),
    }

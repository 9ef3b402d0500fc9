"""The gradient coefficient c(l): what multiplies the score ∇ log π(a) in each placement.

Write the log-ratio of a sampled action as l = log π_ref(a) − log π(a) (klest's convention:
the reference plays p, the policy plays q) and the score as s(a) = ∇_θ log π_θ(a). Since
∇_θ l = −s(a), every way of putting a per-sample estimator k(l) into a training objective gives
a per-sample gradient of the *penalty* (the quantity minimised) of the form

    G(a) = c(l(a)) · s(a),

with a scalar coefficient c depending on the placement:

``"loss"``
    k(l) is a loss term differentiated through log π (the sample a itself is not), as in GRPO:
    G = k'(l) ∇l = −k'(l) s, so c = −k'(l).
``"reward"``
    the detached value k(l) is a negative reward optimised with the score function (PPO-style
    KL-in-reward, REINFORCE without baseline): G = k(l) s, so c = k(l).
``"loss_is"``
    the loss k(l) multiplied by the differentiable importance ratio ρ = π(a)/sg(π(a)) (value 1),
    as in DeepSeek-V3.2 and TRL's bias correction: G = ∇[ρ k] = k s − k'(l) s, so
    c = k(l) − k'(l).
``"straight_through"``
    verl's ``+`` suffix: the forward value is k(l) but the backward pass is that of
    k2 = l²/2, so c = −l for every estimator.

Derivatives k'(l) are tabulated for k1, k2, k3, abs, low_var_kl and rev_kl; the placements that
only use the value (``reward``, ``straight_through``) accept every registered estimator.

>>> import numpy as np
>>> gradient_coefficient(np.array([-1.0, 0.0, 1.0]), estimator="k3", placement="loss").round(4)
array([ 0.6321, -0.    , -1.7183])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from klest import estimators as _estimators
from klest._special import log_abs_expm1
from klest.estimators import Estimator

__all__ = [
    "DIFFERENTIABLE",
    "PLACEMENTS",
    "coefficient_function",
    "gradient_coefficient",
    "log_abs_coefficient_function",
    "log_abs_gradient_coefficient",
    "placement_info",
]

ArrayFn = Callable[[np.ndarray], np.ndarray]

PLACEMENTS: tuple[str, ...] = ("loss", "reward", "loss_is", "straight_through")

_PLACEMENT_INFO = {
    "loss": "k(l) in the loss, differentiated through log pi (GRPO): c = -k'(l)",
    "reward": "detached k(l) as a negative reward, score function (PPO): c = k(l)",
    "loss_is": "k(l) * pi/sg(pi) in the loss (DeepSeek-V3.2, TRL): c = k(l) - k'(l)",
    "straight_through": "value k(l), gradient of k2 = l^2/2 (verl '+'): c = -l",
}


def _log_abs(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(np.abs(x))


@dataclass(frozen=True)
class _Derivative:
    """k'(l) and k(l) − k'(l) in cancellation-free forms, with their log-magnitudes."""

    dk: ArrayFn
    k_minus_dk: ArrayFn
    log_abs_dk: ArrayFn
    log_abs_k_minus_dk: ArrayFn


def _low_var_kl_active(l: np.ndarray) -> np.ndarray:
    # k3 is neither input- nor output-clamped strictly between the two inner kinks
    _, lo, hi, _ = _estimators.get("low_var_kl").kinks
    return (l > lo) & (l < hi)


def _lvk_dk(l: np.ndarray) -> np.ndarray:
    return np.where(_low_var_kl_active(l), np.expm1(np.minimum(l, 20.0)), 0.0)


def _lvk_k_minus_dk(l: np.ndarray) -> np.ndarray:
    # inside: k3 − k3' = −l exactly; outside: the clamped value (10) and a zero derivative
    return np.where(_low_var_kl_active(l), -l, _estimators.get("low_var_kl")(l))


def _rev_dk(l: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(l == 0.0, 0.0, l * np.exp(l))


_DERIVATIVES: dict[str, _Derivative] = {
    # k1 = −l: k' = −1, k − k' = 1 − l
    "k1": _Derivative(
        lambda l: np.full_like(l, -1.0),
        lambda l: 1.0 - l,
        lambda l: np.zeros_like(l),
        lambda l: _log_abs(1.0 - l),
    ),
    # k2 = l²/2: k' = l, k − k' = l(l − 2)/2
    "k2": _Derivative(
        lambda l: l.copy(),
        lambda l: 0.5 * l * (l - 2.0),
        _log_abs,
        lambda l: _log_abs(0.5 * l * (l - 2.0)),
    ),
    # k3 = e^l − 1 − l: k' = e^l − 1, k − k' = −l
    "k3": _Derivative(np.expm1, lambda l: -l, log_abs_expm1, lambda l: _log_abs(-l)),
    # |l|: k' = sign(l) (0 at l = 0, as torch.abs), k − k' = |l| − sign(l)
    "abs": _Derivative(
        np.sign,
        lambda l: np.abs(l) - np.sign(l),
        lambda l: _log_abs(np.sign(l)),
        lambda l: _log_abs(np.abs(l) - np.sign(l)),
    ),
    "low_var_kl": _Derivative(
        _lvk_dk,
        _lvk_k_minus_dk,
        lambda l: _log_abs(_lvk_dk(l)),
        lambda l: _log_abs(_lvk_k_minus_dk(l)),
    ),
    # r log r − (r − 1) = l e^l − e^l + 1: k' = l e^l, k − k' = 1 − e^l
    "rev_kl": _Derivative(
        _rev_dk,
        lambda l: -np.expm1(l),
        lambda l: _log_abs(l) + l,
        log_abs_expm1,
    ),
}

#: estimators whose derivative is tabulated (needed by ``loss`` and ``loss_is``)
DIFFERENTIABLE: tuple[str, ...] = tuple(_DERIVATIVES)


def placement_info(placement: str) -> str:
    """A one-line description of a placement and its coefficient.

    >>> placement_info("loss_is")
    "k(l) * pi/sg(pi) in the loss (DeepSeek-V3.2, TRL): c = k(l) - k'(l)"
    """
    return _PLACEMENT_INFO[_check_placement(placement)]


def _check_placement(placement: str) -> str:
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}; got {placement!r}")
    return placement


def _resolve(estimator: str | Estimator, placement: str) -> tuple[Estimator, _Derivative | None]:
    _check_placement(placement)
    try:
        est = _estimators.get(estimator)
    except KeyError as err:
        raise ValueError(f"estimator: {err.args[0]}") from None
    deriv = _DERIVATIVES.get(est.name)
    if placement in ("loss", "loss_is") and deriv is None:
        raise ValueError(
            f"estimator {est.name!r} has no tabulated derivative, so placement {placement!r} "
            f"is not supported; differentiable estimators: {', '.join(DIFFERENTIABLE)} "
            "(placements 'reward' and 'straight_through' accept every registered estimator)"
        )
    return est, deriv


def gradient_coefficient(
    log_ratio: Any, *, estimator: str | Estimator, placement: str
) -> np.ndarray:
    """c(l): the per-sample gradient of the penalty is c(l(a)) · ∇ log π(a).

    ``log_ratio`` is l = log π_ref(a) − log π(a) (any shape, float64).

    >>> import numpy as np
    >>> l = np.array([-0.5, 0.5])
    >>> gradient_coefficient(l, estimator="k1", placement="loss")   # k1 in the loss: constant
    array([1., 1.])
    >>> gradient_coefficient(l, estimator="k3", placement="loss_is")  # = -l: KL(pi||ref)
    array([ 0.5, -0.5])
    """
    coefficient = coefficient_function(estimator, placement)
    with np.errstate(over="ignore", invalid="ignore"):
        return coefficient(np.asarray(log_ratio, dtype=np.float64))


def coefficient_function(estimator: str | Estimator, placement: str) -> ArrayFn:
    """``l -> gradient_coefficient(l, ...)`` with the estimator and placement resolved once,
    for a float64 array l; the caller sets NumPy's error state (inf and NaN are values here:
    ``np.errstate(over="ignore", invalid="ignore")``).

    >>> import numpy as np
    >>> coefficient_function("k3", "loss_is")(np.array([-0.5, 0.5]))
    array([ 0.5, -0.5])
    """
    est, deriv = _resolve(estimator, placement)
    if placement == "loss":
        return lambda l: -deriv.dk(l)
    if placement == "reward":
        return est
    if placement == "loss_is":
        return deriv.k_minus_dk
    return lambda l: -l


def log_abs_gradient_coefficient(
    log_ratio: Any, *, estimator: str | Estimator, placement: str
) -> tuple[np.ndarray, np.ndarray]:
    """(sign c(l), log|c(l)|), finite where c itself overflows (e.g. k3' = e^l − 1).

    Products π(a) · c(l(a)) are formed as sign · exp(log π + log|c|), so that the exact
    cancellation π · ref/π = ref survives any log-ratio.

    >>> import numpy as np
    >>> sign, log_abs = log_abs_gradient_coefficient(np.array([800.0]), estimator="k3",
    ...                                              placement="loss")
    >>> float(sign[0]), float(log_abs[0])
    (-1.0, 800.0)
    """
    parts = log_abs_coefficient_function(estimator, placement)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return parts(np.asarray(log_ratio, dtype=np.float64))


def log_abs_coefficient_function(
    estimator: str | Estimator, placement: str
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``l -> log_abs_gradient_coefficient(l, ...)`` with the estimator and placement resolved
    once, for a float64 array l; the caller sets NumPy's error state (inf and NaN are values
    here: ``np.errstate(over="ignore", invalid="ignore", divide="ignore")``). For loops that
    call it on a few actions many times (the bandit flow of :mod:`klest.gradients.fixed_point`).

    >>> import numpy as np
    >>> parts = log_abs_coefficient_function("k3", "loss")
    >>> with np.errstate(over="ignore"):
    ...     sign, log_abs = parts(np.array([800.0]))
    >>> float(sign[0]), float(log_abs[0])
    (-1.0, 800.0)
    """
    est, deriv = _resolve(estimator, placement)
    if placement == "loss":
        return lambda l: (-np.sign(deriv.dk(l)), deriv.log_abs_dk(l))
    if placement == "reward":
        return lambda l: (np.sign(est(l)), est.log_abs(l))
    if placement == "loss_is":
        return lambda l: (np.sign(deriv.k_minus_dk(l)), deriv.log_abs_k_minus_dk(l))
    return lambda l: (-np.sign(l), _log_abs(l))

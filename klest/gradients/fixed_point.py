"""Where gradient ascent on E[R] − β·(regulariser) actually goes, for a softmax bandit.

With rewards R (one per action) and a KL penalty placed as in :mod:`klest.gradients.softmax`,
the expected ascent direction in the logits is

    F(z) = π ⊙ (R − E_π R) − β π ⊙ (c − E_π c) = π ⊙ (u − E_π u),   u = R − β c(l),

with l = log π_ref − log π and c the placement's gradient coefficient. Since every π_a > 0, an
interior fixed point is exactly a policy where u is constant over actions. For c = −l this is
π ∝ π_ref exp(R/β) (the KL(π‖π_ref)-regularised optimum); for c = 1 − π_ref/π (k3 in the loss)
it is π_a = β π_ref,a / (λ − R_a) (the KL(π_ref‖π)-regularised optimum); for a constant c (k1 in
the loss) there is none and the policy drifts to the greedy one.

:func:`fixed_point` follows the gradient flow dz/dt = F(z) from z = z_ref (the limit of damped
gradient ascent with small steps) with a stiff ODE integrator, stops when max_a |u_a − E_π u|
is below ``tol``, polishes the fixed point by solving u_a = u_V with a root finder, and reports
its distance (total variation) to the candidate optima.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import softmax

from klest.estimators import Estimator
from klest.gradients.coefficients import (
    _resolve,
    coefficient_function,
    log_abs_coefficient_function,
)

__all__ = [
    "OBJECTIVES",
    "FixedPoint",
    "fixed_point",
    "forward_kl_optimum",
    "greedy_policy",
    "reverse_kl_optimum",
]


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """scipy.special.log_softmax of a logit vector, by the same operations (the same bits)
    without its array-API dispatch: the flow calls it ~10^5 times per table on V ~ 4."""
    top = float(z.max())
    if not math.isfinite(top):  # no shift (z - 0.0 is z, bit for bit); the sum may be 0
        with np.errstate(divide="ignore"):
            return z - np.log(np.exp(z).sum())
    tmp = z - top  # then the sum is >= exp(0) = 1
    return tmp - np.log(np.exp(tmp).sum())


#: the candidate optima a fixed point is compared with
OBJECTIVES = {
    "KL(pi||ref)": "max E[R] - beta*KL(pi||ref): pi ∝ pi_ref exp(R/beta)",
    "KL(ref||pi)": "max E[R] - beta*KL(ref||pi): pi_a = beta pi_ref,a / (lambda - R_a)",
    "unregularised": "max E[R]: the greedy policy (uniform over the best actions)",
}


def reverse_kl_optimum(reward: Any, ref_logits: Any, beta: float) -> np.ndarray:
    """argmax_π E_π[R] − β KL(π‖π_ref) = softmax(log π_ref + R/β).

    >>> import numpy as np
    >>> reverse_kl_optimum(np.array([0.0, 1.0]), np.zeros(2), 1.0).round(4)
    array([0.2689, 0.7311])
    """
    r, z_ref, b = _check(reward, ref_logits, beta)
    return softmax(_log_softmax(z_ref) + r / b)


def forward_kl_optimum(reward: Any, ref_logits: Any, beta: float) -> np.ndarray:
    """argmax_π E_π[R] − β KL(π_ref‖π): π_a = β π_ref,a / (λ − R_a), Σ π = 1, λ > max R.

    The normaliser λ lies in [R* + β π_ref,* / 2, R* + β] (* = a best action): there the sum
    goes from ≥ 2 to ≤ 1; it is found by bisection on the log of the sum.

    >>> import numpy as np
    >>> pi = forward_kl_optimum(np.array([0.0, 1.0]), np.zeros(2), 1.0)
    >>> bool(np.isclose(pi.sum(), 1.0)), bool(pi[1] > 0.5)
    (True, True)
    """
    # deferred: so that `import klest.gradients` stays light
    from scipy.optimize import brentq

    r, z_ref, b = _check(reward, ref_logits, beta)
    log_ref = _log_softmax(z_ref)
    best = int(np.argmax(r))
    r_best = float(r[best])

    def excess(lam: float) -> float:
        return float(np.logaddexp.reduce(math.log(b) + log_ref - np.log(lam - r)))

    lo = r_best + 0.5 * b * math.exp(float(log_ref[best]))
    lam = brentq(excess, lo, r_best + b, xtol=1e-300, rtol=4 * np.finfo(float).eps)
    out = b * np.exp(log_ref) / (lam - r)
    return out / out.sum()


def greedy_policy(reward: Any) -> np.ndarray:
    """The unregularised optimum: uniform over the actions with the largest reward.

    >>> greedy_policy([1.0, 3.0, 3.0])
    array([0. , 0.5, 0.5])
    """
    r = np.asarray(reward, dtype=np.float64)
    best = r == r.max()
    return best / best.sum()


def _check(reward: Any, ref_logits: Any, beta: float) -> tuple[np.ndarray, np.ndarray, float]:
    r = np.asarray(reward, dtype=np.float64)
    z_ref = np.asarray(ref_logits, dtype=np.float64)
    if r.ndim != 1 or r.size < 2 or not np.all(np.isfinite(r)):
        raise ValueError(f"reward must be a finite 1-D array of length >= 2; got {reward!r}")
    if z_ref.shape != r.shape or not np.all(np.isfinite(z_ref)):
        raise ValueError(f"ref_logits must be finite with the reward's shape {r.shape}")
    if not (isinstance(beta, int | float) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a positive finite number; got {beta!r}")
    return r, z_ref, float(beta)


@dataclass(frozen=True)
class FixedPoint:
    """The limit of gradient ascent for one (estimator, placement, β) on a bandit.

    ``converged`` is True when an interior fixed point was reached (u constant to ``residual``);
    otherwise ``probs`` is the policy at the end of the flow (time ``time``). ``status`` is
    ``"interior"`` (a fixed point with every π_a > 0), ``"boundary"`` (some π_a fell below
    1e-6: the flow leaves the simplex's interior, e.g. to the greedy policy) or
    ``"not_converged"``. ``distances`` holds the total-variation distance to each candidate in
    :data:`OBJECTIVES`; ``matches`` the candidates within ``match_tol``.
    """

    probs: np.ndarray
    logits: np.ndarray
    converged: bool
    residual: float
    time: float
    status: str
    estimator: str
    placement: str
    beta: float
    distances: dict[str, float]
    matches: tuple[str, ...]
    candidates: dict[str, np.ndarray] = field(repr=False)

    @property
    def objective(self) -> str:
        """The objective whose optimum the fixed point matches ("none" if no candidate does).

        >>> import numpy as np
        >>> fixed_point([1.0, 0.0], np.zeros(2), 1.0, estimator="k1", placement="reward").objective
        'KL(pi||ref)'
        """
        return self.matches[0] if self.matches else "none"

    def to_dict(self) -> dict[str, Any]:
        """A flat row for a DataFrame (probs as a tuple).

        >>> import numpy as np
        >>> fp = fixed_point([1.0, 0.0], np.zeros(2), 1.0, estimator="k3", placement="loss")
        >>> row = fp.to_dict()
        >>> row["objective"], row["status"]
        ('KL(ref||pi)', 'interior')
        """
        row: dict[str, Any] = {
            "estimator": self.estimator,
            "placement": self.placement,
            "beta": self.beta,
            "objective": self.objective,
            "converged": self.converged,
            "status": self.status,
            "residual": self.residual,
            "time": self.time,
            "probs": tuple(float(v) for v in self.probs),
        }
        row.update({f"tv_{name}": d for name, d in self.distances.items()})
        return row


def fixed_point(
    reward: Any,
    ref_logits: Any,
    beta: float,
    *,
    estimator: str | Estimator,
    placement: str,
    tol: float = 1e-7,
    t_max: float = 1e9,
    max_steps: int = 5_000,
    match_tol: float = 1e-6,
) -> FixedPoint:
    """Follow exact expected-gradient ascent on E[R] − β·penalty from π = π_ref to its limit.

    >>> import numpy as np
    >>> R, z_ref = np.array([1.0, 0.0, -0.5]), np.zeros(3)
    >>> fixed_point(R, z_ref, 0.5, estimator="k2", placement="loss").objective
    'KL(pi||ref)'
    >>> fixed_point(R, z_ref, 0.5, estimator="k3", placement="loss").objective
    'KL(ref||pi)'
    >>> fixed_point(R, z_ref, 0.5, estimator="k1", placement="loss").objective
    'unregularised'
    """
    r, z_ref, b = _check(reward, ref_logits, beta)
    est, _ = _resolve(estimator, placement)
    if est.name == "abs" and placement in ("loss", "loss_is"):
        raise ValueError(
            f"fixed_point does not support estimator 'abs' with placement {placement!r}: its "
            "coefficient -sign(l) jumps at l = 0, where the flow starts (pi = pi_ref), so the "
            "dynamics slide along pi_a = pi_ref,a and have no smooth limit to follow"
        )
    log_ref = _log_softmax(z_ref)
    scale = float(np.max(np.abs(r - r.mean()))) + b

    coefficient = coefficient_function(est, placement)
    sign_and_log_abs = log_abs_coefficient_function(est, placement)

    def u_of(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        log_pi = _log_softmax(z)
        with np.errstate(over="ignore", invalid="ignore"):  # k3 as a reward: c ~ exp(l)
            return r - b * coefficient(log_ref - log_pi), log_pi

    def residual(z: np.ndarray) -> float:
        u, log_pi = u_of(z)
        with np.errstate(invalid="ignore", over="ignore"):
            value = float(np.max(np.abs(u - np.exp(log_pi) @ u)))
        return value if math.isfinite(value) else math.inf

    def flow(_t: float, z: np.ndarray) -> np.ndarray:
        # called ~10^3 times per fixed point on a few actions: one error-state context, the
        # coefficient resolved once (the values are those of log_abs_gradient_coefficient)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            log_pi = _log_softmax(z)
            sign, log_abs = sign_and_log_abs(log_ref - log_pi)
            pi = np.exp(log_pi)
            pc = np.where(sign == 0, 0.0, sign * np.exp(log_pi + log_abs))  # π ⊙ c, log space
            pu = pi * r - b * pc
            return pu - pi * pu.sum()

    def _stable(z: np.ndarray) -> bool:
        log_pi = _log_softmax(z)
        return _linearly_stable(coefficient, log_ref - log_pi, log_pi)

    z, t_end = z_ref - z_ref.mean(), 0.0
    threshold = tol * scale
    if residual(z) > threshold:
        z, t_end = _integrate(flow, residual, z, 0.5 * threshold, t_max, max_steps)
    # Slow modes (rate ~ β π_a for rare actions) may leave the flow short of the fixed point
    # it approaches: finish with a root finder, keeping the root only if it is close to the
    # flow's end and linearly stable (so that the flow would indeed converge to it).
    if np.min(z - z.max()) > _BOUNDARY:
        polished = _polish(u_of, z, scale)
        near = 0.5 * float(np.abs(softmax(polished) - softmax(z)).sum()) < 1e-3
        if residual(polished) <= threshold and near and _stable(polished):
            z = polished
    converged = residual(z) <= threshold and _stable(z)
    res = residual(z)
    probs = softmax(z)
    candidates = {
        "KL(pi||ref)": reverse_kl_optimum(r, z_ref, b),
        "KL(ref||pi)": forward_kl_optimum(r, z_ref, b),
        "unregularised": greedy_policy(r),
    }
    distances = {k: 0.5 * float(np.abs(probs - v).sum()) for k, v in candidates.items()}
    matches = tuple(sorted((k for k in distances if distances[k] <= match_tol), key=distances.get))
    status = "interior" if converged else "boundary" if probs.min() < 1e-9 else "not_converged"
    return FixedPoint(
        probs=probs,
        logits=z - z.mean(),
        converged=converged,
        residual=res,
        time=t_end,
        status=status,
        estimator=est.name,
        placement=placement,
        beta=b,
        distances=distances,
        matches=matches,
        candidates=candidates,
    )


_BOUNDARY = -700.0  # an action with log π below this (relative to the best) has left the simplex


def _integrate(
    flow: Any, residual: Any, z: np.ndarray, threshold: float, t_max: float, max_steps: int
) -> tuple[np.ndarray, float]:
    """LSODA steps along dz/dt = flow(z) until residual(z) <= threshold, t_max or max_steps."""
    # deferred: so that `import klest.gradients` stays light
    from scipy.integrate import LSODA

    solver = LSODA(flow, 0.0, z, t_max, rtol=1e-8, atol=1e-10)
    for _ in range(max_steps):
        if solver.status != "running":
            break
        message = solver.step()
        if message is not None and solver.status == "failed":
            break
        if not np.all(np.isfinite(solver.y)):
            break
        z = solver.y.copy()
        if residual(z) <= threshold or np.min(z - z.max()) < _BOUNDARY:
            break
    return z, float(solver.t)


def _linearly_stable(coefficient: Any, l: np.ndarray, log_pi: np.ndarray) -> bool:
    """Whether a fixed point of dz/dt = π ⊙ (u − E_π u), u = R − β c(l), attracts the flow.

    At a fixed point the Jacobian is J = β S diag(c'(l)/π) S with S = diag(π) − ππ^T (the
    Fisher matrix, kernel span(1)): symmetric, so the point is stable iff D = diag(c'/π) is
    negative definite on the sum-zero vectors. With no positive entry it is; with two or more
    it is not; with exactly one, iff Σ_a 1/D_a > 0 (Haynsworth inertia of the bordered
    matrix). A zero entry (a clamped coefficient) is a neutral direction: not stable.
    """
    h = 1e-6 * np.maximum(1.0, np.abs(l))
    with np.errstate(over="ignore", invalid="ignore"):
        slope = (coefficient(l + h) - coefficient(l - h)) / (2.0 * h)
    if not np.all(np.isfinite(slope)) or np.any(slope == 0.0):
        return False
    positive = int(np.sum(slope > 0))
    if positive == 0:
        return True
    if positive > 1:
        return False
    return float(np.sum(np.exp(log_pi) / slope)) > 0.0


def _polish(u_of: Any, z: np.ndarray, scale: float) -> np.ndarray:
    """Solve u_a(z) = u_V(z), a < V, with z_V held fixed, starting from the flow's end."""
    # deferred: so that `import klest.gradients` stays light
    from scipy.optimize import root

    def equations(free: np.ndarray) -> np.ndarray:
        full = np.append(free, z[-1])
        u, _ = u_of(full)
        return (u[:-1] - u[-1]) / scale

    sol = root(equations, z[:-1], method="hybr", options={"xtol": 1e-15})
    polished = np.append(sol.x, z[-1])
    # accept only if it is the fixed point the flow was approaching and it is better
    before = np.max(np.abs(equations(z[:-1])))
    after = np.max(np.abs(sol.fun))
    close = 0.5 * np.abs(softmax(polished) - softmax(z)).sum() < 1e-3
    return polished if close and after <= before else z

"""Figure-ready DataFrames: expected vs true gradients, coefficients, bandit fixed points.

Each builder takes plain parameters (logits, rewards, Normal policies) and returns a tidy
DataFrame, one row per (estimator, placement[, x]); :mod:`klest.report.plots_rl` draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from klest import estimators as _estimators
from klest.distributions import Normal
from klest.gradients.coefficients import DIFFERENTIABLE, PLACEMENTS, gradient_coefficient
from klest.gradients.fixed_point import fixed_point
from klest.gradients.gaussian import (
    gaussian_expected_gradient,
    gaussian_gradient_covariance_trace,
    gaussian_true_gradient,
)
from klest.gradients.softmax import (
    expected_gradient,
    gradient_covariance_trace,
    true_gradient,
)

__all__ = [
    "coefficient_table",
    "fixed_point_table",
    "gaussian_gradient_table",
    "gradient_table",
]

_KLS = ("KL(pi||ref)", "KL(ref||pi)")


def _pairs(estimators: Sequence[str], placements: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for placement in placements:
        for name in estimators:
            est = _estimators.get(name).name
            if placement in ("loss", "loss_is") and est not in DIFFERENTIABLE:
                continue
            out.append((est, placement))
    return out


def _compare(g: np.ndarray, truths: dict[str, np.ndarray], rtol: float) -> dict[str, Any]:
    """Relative errors and cosines against each true gradient, a verdict and a decomposition."""
    row: dict[str, Any] = {"grad_norm": float(np.linalg.norm(g))}
    verdict = "neither"
    for name, t in truths.items():
        tn = float(np.linalg.norm(t))
        err = float(np.linalg.norm(g - t)) / tn if tn > 0 else float("nan")
        cos = float(np.vdot(g, t)) / (tn * row["grad_norm"]) if tn * row["grad_norm"] else np.nan
        row[f"rel_err_{name}"] = err
        row[f"cos_{name}"] = cos
        if err <= rtol and verdict == "neither":
            verdict = name
    if verdict == "neither" and row["grad_norm"] <= rtol * max(
        float(np.linalg.norm(t)) for t in truths.values()
    ):
        verdict = "zero"
    row["gradient_of"] = verdict
    # least-squares g ≈ a ∇KL(pi||ref) + b ∇KL(ref||pi), meaningful only with more equations
    # than the 2 unknowns plus the dimensions the gradients cannot span
    basis = np.stack([truths[k].ravel() for k in _KLS], axis=1)
    dof = g.size - (g.size // g.shape[-1] if g.ndim else 1)  # gradients sum to 0 per row
    if dof > 2 and np.linalg.matrix_rank(basis) == 2:
        coef, *_ = np.linalg.lstsq(basis, g.ravel(), rcond=None)
        resid = np.linalg.norm(basis @ coef - g.ravel()) / max(row["grad_norm"], 1e-300)
        row.update({f"coef_{k}": float(c) for k, c in zip(_KLS, coef, strict=True)})
        row["decomposition_residual"] = float(resid)
    else:
        row.update({f"coef_{k}": np.nan for k in _KLS})
        row["decomposition_residual"] = np.nan
    return row


def gradient_table(
    logits: Any,
    ref_logits: Any,
    *,
    estimators: Sequence[str] = DIFFERENTIABLE,
    placements: Sequence[str] = PLACEMENTS,
    rtol: float = 1e-9,
) -> pd.DataFrame:
    """Expected vs true gradients for every estimator × placement (softmax policy).

    ``logits``/``ref_logits`` may carry batch axes (..., V): norms are then over all entries,
    and ``coef_*`` fit g ≈ a ∇KL(pi||ref) + b ∇KL(ref||pi) jointly over the batch
    (``decomposition_residual`` ≈ 0 means g is exactly such a combination). ``gradient_of``
    names the KL whose gradient g equals (relative error ≤ ``rtol``), "zero" or "neither".

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, z_ref = rng.normal(size=(8, 5)), rng.normal(size=(8, 5))
    >>> df = gradient_table(z, z_ref, estimators=["k1", "k3"], placements=["loss", "reward"])
    >>> print(df[["estimator", "placement", "gradient_of"]].to_string(index=False))
    estimator placement gradient_of
           k1      loss        zero
           k3      loss KL(ref||pi)
           k1    reward KL(pi||ref)
           k3    reward     neither
    >>> df.loc[3, ["coef_KL(pi||ref)", "coef_KL(ref||pi)"]].astype(float).round(9).tolist()
    [1.0, -1.0]
    """
    truths = {d: true_gradient(logits, ref_logits, direction=d) for d in _KLS}
    rows = []
    for est, placement in _pairs(estimators, placements):
        g = expected_gradient(logits, ref_logits, estimator=est, placement=placement)
        cov = gradient_covariance_trace(logits, ref_logits, estimator=est, placement=placement)
        row = {"estimator": est, "placement": placement}
        row.update(_compare(g, truths, rtol))
        row["cov_trace"] = float(np.mean(cov))
        row["value_target"] = _estimators.get(est).target.label
        row["value_unbiased"] = _estimators.get(est).unbiased
        rows.append(row)
    return pd.DataFrame(rows)


def gaussian_gradient_table(
    policy: Normal,
    ref: Normal,
    *,
    estimators: Sequence[str] = DIFFERENTIABLE,
    placements: Sequence[str] = PLACEMENTS,
    rtol: float = 1e-9,
) -> pd.DataFrame:
    """The same comparison for a Gaussian policy (gradient w.r.t. loc and log scale).

    ``rtol`` is looser than for softmax: the expected gradients come from quadrature (relative
    accuracy about 1e-11); low_var_kl's clamps change the gradient by ~1e-8 relative at
    moderate parameters, which this ``rtol`` still resolves.

    >>> from klest import Normal
    >>> df = gaussian_gradient_table(Normal(loc=0.3, scale=1.2), Normal(loc=0.0, scale=1.0),
    ...                              estimators=["k2", "k3"], placements=["loss"])
    >>> df["gradient_of"].tolist()
    ['KL(pi||ref)', 'KL(ref||pi)']
    """
    truths = {d: gaussian_true_gradient(policy, ref, direction=d) for d in _KLS}
    rows = []
    for est, placement in _pairs(estimators, placements):
        g = gaussian_expected_gradient(policy, ref, estimator=est, placement=placement)
        row: dict[str, Any] = {"estimator": est, "placement": placement}
        row.update(_compare(g, truths, rtol))
        row["grad_loc"], row["grad_log_scale"] = float(g[0]), float(g[1])
        row["cov_trace"] = gaussian_gradient_covariance_trace(
            policy, ref, estimator=est, placement=placement
        )
        rows.append(row)
    return pd.DataFrame(rows)


def coefficient_table(
    log_ratio: Any,
    *,
    estimators: Sequence[str] = DIFFERENTIABLE,
    placements: Sequence[str] = PLACEMENTS,
) -> pd.DataFrame:
    """c(l) on a grid of log-ratios, long format, with the true-gradient references.

    Only c(l) − c(0) matters for the expected gradient (E_π[∇log π] = 0), so the column
    ``centered`` is also given. Reference rows (placement "true"): c = −l for KL(pi||ref) and
    c = 1 − e^l for KL(ref||pi).

    >>> import numpy as np
    >>> df = coefficient_table(np.linspace(-2, 2, 5), estimators=["k3"], placements=["loss"])
    >>> sorted(df["estimator"].unique())
    ['KL(pi||ref)', 'KL(ref||pi)', 'k3']
    """
    l = np.asarray(log_ratio, dtype=np.float64).ravel()
    frames = []
    for est, placement in _pairs(estimators, placements):
        c = gradient_coefficient(l, estimator=est, placement=placement)
        c0 = float(gradient_coefficient(np.zeros(1), estimator=est, placement=placement)[0])
        frames.append(
            pd.DataFrame(
                {
                    "estimator": est,
                    "placement": placement,
                    "log_ratio": l,
                    "coefficient": c,
                    "centered": c - c0,
                }
            )
        )
    for name, c in (("KL(pi||ref)", -l), ("KL(ref||pi)", -np.expm1(l))):
        frames.append(
            pd.DataFrame(
                {
                    "estimator": name,
                    "placement": "true",
                    "log_ratio": l,
                    "coefficient": c,
                    "centered": c,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def fixed_point_table(
    reward: Any,
    ref_logits: Any,
    betas: Sequence[float],
    *,
    estimators: Sequence[str] = DIFFERENTIABLE,
    placements: Sequence[str] = PLACEMENTS,
    **options: Any,
) -> pd.DataFrame:
    """:func:`~klest.gradients.fixed_point` for every β × estimator × placement.

    Unsupported pairs (``abs`` in the loss: a sliding mode) get ``status = "unsupported"``
    and the reason in ``note``. ``options`` go to ``fixed_point`` (tol, t_max, ...).

    >>> import numpy as np
    >>> df = fixed_point_table(np.array([1.0, 0.0, -0.5]), np.zeros(3), [0.5],
    ...                        estimators=["k2", "k3"], placements=["loss"])
    >>> df[["estimator", "objective", "status"]].values.tolist()
    [['k2', 'KL(pi||ref)', 'interior'], ['k3', 'KL(ref||pi)', 'interior']]
    """
    rows = []
    for beta in betas:
        for est, placement in _pairs(estimators, placements):
            try:
                fp = fixed_point(
                    reward, ref_logits, float(beta), estimator=est, placement=placement, **options
                )
            except ValueError as err:
                if "does not support" not in str(err):
                    raise
                rows.append(
                    {
                        "estimator": est,
                        "placement": placement,
                        "beta": float(beta),
                        "objective": "none",
                        "status": "unsupported",
                        "note": str(err),
                    }
                )
                continue
            row = fp.to_dict()
            row["note"] = ""
            rows.append(row)
    return pd.DataFrame(rows)

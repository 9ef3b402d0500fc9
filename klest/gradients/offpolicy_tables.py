"""Figure-ready DataFrames for the off-policy analysis of every framework's default KL term.

The behaviour policy is moved away from the policy along a fixed direction of the logits,
μ_t = softmax(z + t·d), with t chosen so that KL(μ‖π) (the mean over positions) hits each
target; for every mirrored framework release, its default kind (``rl.release(fw)
.default_kind``, with the framework's default options: importance weights off where they
need a flag) goes through :func:`~klest.gradients.penalty_gradient`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import log_softmax

from klest.gradients.offpolicy import penalty_gradient
from klest.rl.penalty import frameworks, release, versions
from klest.rl.penalty import spec as lookup_spec

__all__ = [
    "behaviour_at_kl",
    "default_releases",
    "gspo_broadcast_table",
    "offpolicy_bias_table",
    "offpolicy_summary",
]


def _mean_kl_mu_pi(z: np.ndarray, z_mu: np.ndarray) -> float:
    log_pi, log_mu = log_softmax(z, axis=-1), log_softmax(z_mu, axis=-1)
    return float(np.mean(np.sum(np.exp(log_mu) * (log_mu - log_pi), axis=-1)))


def behaviour_at_kl(logits: Any, direction: Any, target: float) -> np.ndarray:
    """Logits z + t·d of a behaviour policy μ with mean KL(μ‖π) = ``target`` (t >= 0).

    >>> import numpy as np
    >>> z, d = np.array([[0.0, 1.0, -1.0]]), np.array([[1.0, -1.0, 0.0]])
    >>> z_mu = behaviour_at_kl(z, d, 0.05)
    >>> round(_mean_kl_mu_pi(z, z_mu), 12)
    0.05
    """
    z = np.asarray(logits, dtype=np.float64)
    d = np.broadcast_to(np.asarray(direction, dtype=np.float64), z.shape)
    if not (np.isfinite(target) and target >= 0):
        raise ValueError(f"target KL(mu||pi) must be a finite number >= 0, got {target!r}")
    if target == 0:
        return z.copy()
    hi = 1.0
    while _mean_kl_mu_pi(z, z + hi * d) < target:
        hi *= 2.0
        if hi > 1e6:
            raise ValueError(f"KL(mu||pi) = {target} is not reached along this direction")
    # deferred: so that `import klest.gradients` stays light
    from scipy.optimize import brentq

    t = brentq(lambda s: _mean_kl_mu_pi(z, z + s * d) - target, 0.0, hi, xtol=1e-14, rtol=1e-14)
    return z + t * d


def default_releases() -> list[str]:
    """Every mirrored "framework@version" whose default kind is a per-token penalty."""
    out = []
    for fw in frameworks():
        for v in versions(fw):
            name = f"{fw}@{v}"
            s = lookup_spec(name, release(name).default_kind)
            if not (s.raw or s.unsupported or s.estimator == "pi_k1_sum"):
                out.append(name)
    return out


def offpolicy_bias_table(
    logits: Any,
    ref_logits: Any,
    direction: Any,
    *,
    kl_targets: Sequence[float],
    releases: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per (release, target KL(μ‖π)): the default KL term's gradient verdict and its
    relative bias ‖E[∇] − ∇KL(π‖ref)‖ / ‖∇KL(π‖ref)‖ (norms over all positions).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, z_ref, d = rng.normal(size=(3, 4, 5))
    >>> df = offpolicy_bias_table(z, z_ref, d, kl_targets=[0.0, 0.1],
    ...                           releases=["trl@1.9.0", "nemo_rl@0.7.0"])
    >>> for row in df[["release", "kl_mu_pi", "verdict"]].itertuples(index=False):
    ...     print(row.release, round(row.kl_mu_pi, 9), row.verdict)
    trl@1.9.0 0.0 KL(ref||pi)
    trl@1.9.0 0.1 neither
    nemo_rl@0.7.0 0.0 KL(pi||ref)
    nemo_rl@0.7.0 0.1 neither
    """
    names = default_releases() if releases is None else list(releases)
    behaviours = [behaviour_at_kl(logits, direction, float(t)) for t in kl_targets]
    rows = []
    for name in names:
        rel = release(name)
        kind = rel.default_kind
        for target, z_mu in zip(kl_targets, behaviours, strict=True):
            g = penalty_gradient(logits, ref_logits, framework=name, kind=kind,
                                 behaviour_logits=None if target == 0 else z_mu)  # fmt: skip
            rows.append(
                {
                    "release": name,
                    "framework": rel.framework,
                    "version": rel.version,
                    "commit": rel.commit,
                    "kind": kind,
                    "placement": g.placement,
                    "kl_mu_pi": float(np.mean(g.kl["KL(mu||pi)"])),
                    "relative_bias": g.relative_bias,
                    "verdict": g.verdict,
                }
            )
    return pd.DataFrame(rows)


def offpolicy_summary(table: pd.DataFrame, kl_target: float) -> pd.DataFrame:
    """Per release: the verdict on-policy (KL(μ‖π) = 0) and at ``kl_target``, with the
    relative bias there (``kl_target`` must be one of the table's targets)."""
    known = np.unique(table["kl_mu_pi"].to_numpy())
    at = known[np.argmin(np.abs(known - kl_target))]
    if not np.isclose(at, kl_target, rtol=1e-9, atol=1e-12):
        raise ValueError(f"kl_target {kl_target} is not among the table's KL(mu||pi) values")
    rows = []
    for name, group in table.groupby("release", sort=False):
        on = group[group["kl_mu_pi"] == 0.0]
        off = group[group["kl_mu_pi"] == at]
        if on.empty or off.empty:
            raise ValueError(f"{name}: the table needs rows at KL(mu||pi) = 0 and {kl_target}")
        rows.append(
            {
                "release": name,
                "commit": off["commit"].iloc[0][:12],
                "kind": off["kind"].iloc[0],
                "placement": off["placement"].iloc[0],
                "on_policy": on["verdict"].iloc[0],
                "off_policy": off["verdict"].iloc[0],
                "kl_mu_pi": float(at),
                "relative_bias": float(off["relative_bias"].iloc[0]),
            }
        )
    return pd.DataFrame(rows)


def gspo_broadcast_table(
    logits: Any, ref_logits: Any, direction: Any, *, kl_targets: Sequence[float]
) -> pd.DataFrame:
    """TRL issue #6586: GRPO's KL with ``use_bias_correction_kl`` and
    ``importance_sampling_level="sequence"`` multiplies every token's k3 by the sequence's
    ratio exp(mean_t(lp_t - old_t)), so the gradient's Σ_t k3_t ∇log π_t becomes
    (Σ_t k3_t) ∇ mean_t log π_t. Per target KL(μ‖π), for one sequence (T, V) of independent
    positions: the relative bias of the token-level and the sequence-level terms (against
    ∇KL(π‖ref)) and the size of their difference, ‖E_seq − E_token‖ / ‖∇KL(π‖ref)‖.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z, z_ref, d = rng.normal(size=(3, 3, 4))
    >>> df = gspo_broadcast_table(z, z_ref, d, kl_targets=[0.0, 0.05])
    >>> df["token_bias"].round(12).tolist(), bool((df["difference"] > 0.1).all())
    ([0.0, 0.0], True)
    """
    rows = []
    for target in kl_targets:
        z_mu = behaviour_at_kl(logits, direction, float(target))
        common = {"framework": "trl@1.9.0", "kind": "grpo", "use_bias_correction_kl": True}
        mu = None if target == 0 else z_mu
        token = penalty_gradient(logits, ref_logits, behaviour_logits=mu, **common)
        seq = penalty_gradient(logits, ref_logits, behaviour_logits=mu,
                               importance_sampling_level="sequence", **common)  # fmt: skip
        scale = float(np.linalg.norm(token.true["KL(pi||ref)"]))
        rows.append(
            {
                "kl_mu_pi": float(np.mean(token.kl["KL(mu||pi)"])),
                "token_bias": token.relative_bias,
                "sequence_bias": seq.relative_bias,
                "difference": float(np.linalg.norm(seq.expected - token.expected)) / scale,
                "sequence_verdict": seq.verdict,
            }
        )
    return pd.DataFrame(rows)

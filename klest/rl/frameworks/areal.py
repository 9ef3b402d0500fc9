"""AReaL (inclusionAI): ``KLEstimator._compute_approx_kl``, a per-token reward.

``log_ratio = log_probs.float() - log_probs_base.float()`` (float32); ``k1``: it; ``k2``:
its square / 2; ``k3``: ``exp(-log_ratio) - 1 + log_ratio``; then **every** kind, k1
included, is clamped to [-10, 10] (``apply_clamp=True``); no input clamp, no weight.
``PPOActor._compute_advantages`` sets ``rewards = -kl_ctl * kl_estimator(old_logp, ref_logp)``
before GAE, where ``old_logp`` is by default the **inference engine's** log-probabilities
(pass them as ``logprob``): the penalty is a function of the behaviour policy, without
gradient. If no reference model is configured AReaL uses ``ref_logp = 0``.
Defaults: ``kl_ctl`` 0.1, ``kl_estimator`` "k1".
"""

from __future__ import annotations

from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site

FRAMEWORK = "areal"
SITE = Site(
    "areal/utils/data.py",
    "KLEstimator._compute_approx_kl",
    "1620-1656",
    "areal/trainer/ppo/actor.py::PPOActor._compute_advantages (145-249)",
)
register(
    Release(
        FRAMEWORK, "1.0.4", "inclusionAI/AReaL", "37d6c6400e99a05fa3409d6a067762a44df40d3b",
        "2026-05-07", "k1", "defaults: kl_ctl 0.1, kl_estimator k1 (a reference model needed)",
    ),
    [
        PenaltySpec(
            FRAMEWORK, "", kind, kind, SITE,
            "reward (per token -kl_ctl * kl, then GAE; logprob = the inference log-probs)",
            output_clamp=10.0, detached=True, dtype="float32",
        )
        for kind in ("k1", "k2", "k3")
    ],
)  # fmt: skip

"""SkyRL (NovaSky-AI): ``compute_approx_kl`` in the KL loss (default) or the reward.

- ``k1``: ``log_probs - log_probs_base``; ``abs``: its absolute value; ``k2``: half its square;
- ``k3``: ``kl = clamp(log_probs_base - log_probs, -20, 20)``, then
  ``clamp(exp(kl) - kl - 1, -10, 10)`` (verl's ``low_var_kl``). Only k3 is clamped.

No importance weight (the rollout log-probs enter only metrics). The loss is
``kl_loss_coef * masked_mean(kl, loss_mask, dim=-1).mean()``: always the per-sequence mean,
then the batch mean, whatever the policy loss's reduction. With ``use_kl_in_reward`` the same
function of the trainer's recomputed log-probs is subtracted from the per-token rewards
without gradient. Defaults: ``use_kl_loss=True``, ``kl_estimator_type="k3"``,
``kl_loss_coef=0.001``. The package moved from ``skyrl_train`` (tags ``skyrl_train-v*``) to
``skyrl`` (tags ``skyrl-v*``); the function is the same in both (skyrl-v0.3.0 only changed
the masking to ``torch.where``, so masked NaNs no longer leak).
"""

from __future__ import annotations

from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site

FRAMEWORK = "skyrl"
REPOSITORY = "NovaSky-AI/SkyRL"
PLACEMENT = "loss (use_kl_loss, default) or reward (use_kl_in_reward, without gradient)"
REDUCTION = "sequence mean (masked mean per sequence), then batch mean"
DEFAULTS = "defaults: use_kl_loss True, kl_estimator_type k3, kl_loss_coef 0.001"

RELEASES = {
    "skyrl_train-0.4.0": ("332c7cbcc4f4fad20ca71d94c5bb33d84035da09", "2026-02-13",
                          "skyrl-train/skyrl_train/utils/ppo_utils.py", "89-124"),
    "0.3.0": ("f5bc3b78dfddfb352870d5d7430cd226e5785838", "2026-07-16",
              "skyrl/backends/skyrl_train/utils/ppo_utils.py", "88-125"),
}  # fmt: skip

for version, (commit, date, path, lines) in RELEASES.items():
    site = Site(path, "compute_approx_kl", lines)
    register(
        Release(FRAMEWORK, version, REPOSITORY, commit, date, "k3", DEFAULTS),
        [
            PenaltySpec(
                FRAMEWORK, "", kind, kind, site, PLACEMENT, reduction=REDUCTION,
                input_clamp=20.0 if kind == "k3" else None,
                output_clamp=10.0 if kind == "k3" else None,
            )
            for kind in ("k1", "abs", "k2", "k3")
        ],
    )  # fmt: skip

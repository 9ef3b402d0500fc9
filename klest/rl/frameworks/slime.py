"""slime: ``slime.utils.ppo_utils.compute_approx_kl(log_probs, log_probs_base, kl_loss_type,
importance_ratio=None)``, in the KL loss (``use_kl_loss``) and in the advantages.

``log_ratio = log_probs.float() - log_probs_base.float()`` (= -l, float32), then

- ``k1``: ``log_ratio``; ``k2``: ``log_ratio**2 / 2``;
- ``k3`` and ``low_var_kl``: ``exp(-log_ratio) - 1 + log_ratio`` (= k3(l), no input clamp);
- from v0.2.1, if ``importance_ratio`` is given (``--use-unbiased-kl``, DeepSeek-V3.2's
  unbiased KL), the value is multiplied by it; slime's loss passes
  ``exp(log_probs - old_log_probs)``, differentiable through ``log_probs``, for every kind
  (PR #1039, restricting it to k3, was closed unmerged);
- ``low_var_kl`` only: the (weighted) value is then clamped to [-10, 10].

Options: ``use_unbiased_kl=True`` (slime's flag, default False) with ``old_logprob=`` (klest
builds ``importance_ratio = exp(logprob - old_logprob)`` as slime's loss does) or
``importance_ratio=`` (used as given); not both. Without either, slime's loss uses
``old_log_probs = log_probs.detach()``: the ratio is 1 in value with d/d logprob = 1.
Where k3 overflows (l > 709) the unclamped kinds are +inf, as in slime, and with an
importance ratio their gradient is nan there (inf - inf in the product rule), also as in
slime.

``reward_<kind>`` (v0.3.1, ``compute_advantages_and_returns``): the same function of the
rollout log-probs, without weight or gradient, with the loss's ``--kl-loss-type``: a
per-token reward ``-kl_coef * kl`` before GAE (``ppo``), before the discounted reward-to-go
(``reinforce_plus_plus``) or subtracted per token without it
(``reinforce_plus_plus_baseline``); ``grpo``/``gspo``/``cispo`` ignore it. ``opd``
(v0.3.1, ``--use-opd``): ``opd_kl_coef * (student - teacher)``, k1 against the teacher
(pass it as ``ref_logprob``), subtracted from every token's advantage.
"""

from __future__ import annotations

from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site, Weight

FRAMEWORK = "slime"
REPOSITORY = "THUDM/slime"
PPO_UTILS = "slime/utils/ppo_utils.py"
LOSS = "slime/backends/megatron_utils/loss.py"
PLACEMENT = "loss (use_kl_loss: kl_loss_coef * sum_of_sample_mean(kl))"
REDUCTION = "sum_of_sample_mean (per-sample token mean, summed)"
REWARD = (
    "reward (ppo: per-token reward then GAE; reinforce_plus_plus: reward-to-go; "
    "reinforce_plus_plus_baseline: per token; grpo/gspo/cispo: ignored)"
)
UNBIASED = Weight(
    "old_logprob",
    missing="self",
    ratio_option="importance_ratio",
    order="before_clamp",
    switch="use_unbiased_kl",
)
KINDS = (("k1", "k1"), ("k2", "k2"), ("k3", "k3"), ("low_var_kl", "k3"))
DEFAULTS = "defaults: use_kl_loss false, kl_loss_type k1, kl_loss_coef 0.0, kl_coef 0.0"


def _loss(site: Site, weight: Weight | None) -> list[PenaltySpec]:
    return [
        PenaltySpec(
            FRAMEWORK, "", kind, est, site, PLACEMENT, reduction=REDUCTION,
            output_clamp=10.0 if kind == "low_var_kl" else None, weight=weight, dtype="float32",
        )
        for kind, est in KINDS
    ]  # fmt: skip


register(
    Release(
        FRAMEWORK, "0.2.0", REPOSITORY, "91acef0f8b47816c984be30f99ee48bb4e48d167",
        "2025-11-28", "k1", DEFAULTS + "; no importance ratio yet",
    ),
    _loss(Site(PPO_UTILS, "compute_approx_kl", "10-47"), None),
)  # fmt: skip
register(
    Release(
        FRAMEWORK, "0.3.1", REPOSITORY, "a6272da0d4f3d0a08520c99a2f3b4f6c887960dc",
        "2026-08-06", "k1", DEFAULTS + "; use_unbiased_kl false",
    ),
    [
        *_loss(
            Site(PPO_UTILS, "compute_approx_kl", "12-51",
                 f"{LOSS}::policy_loss_function (1053-1066)"),
            UNBIASED,
        ),
        *(
            PenaltySpec(
                FRAMEWORK, "", f"reward_{kind}", est,
                Site(LOSS, "compute_advantages_and_returns", "661-830"), REWARD,
                output_clamp=10.0 if kind == "low_var_kl" else None, detached=True,
                dtype="float32", note="logprob is the rollout's log_probs (or rollout_log_probs)",
            )
            for kind, est in KINDS
        ),
        PenaltySpec(
            FRAMEWORK, "", "opd", "k1", Site(LOSS, "apply_opd_kl_to_advantages", "620-658"),
            "advantages (minus opd_kl_coef * kl per token, default coefficient 1.0)",
            detached=True, note="ref_logprob is the teacher's log-probabilities",
        ),
    ],
)  # fmt: skip

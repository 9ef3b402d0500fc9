"""NeMo-RL: ``nemo_rl.algorithms.utils.calculate_kl`` and where ``ClippedPGLossFn`` and the
advantage estimators apply it.

``calculate_kl(logprobs, logprobs_reference, kl_type, input_clamp_value=20.0,
output_clamp_value=10.0)``: ``logr = logprobs_reference - logprobs`` (= l), clamped to
±``input_clamp_value``; ``k1``: ``-logr``; ``k2``: ``logr**2 / 2``; ``k3``:
``exp(logr) - 1 - logr``; the result clamped to ±``output_clamp_value`` (``None`` disables
either clamp). ``ClippedPGLossFn`` adds ``reference_policy_kl_penalty * kl`` to the loss.

- **v0.6.0**: the loss multiplies the clamped KL by ``kl_importance_weights``: with
  ``use_on_policy_kl_approximation``, ``exp(curr_logprobs - generation_logprobs).detach()``
  with nan/±inf replaced by 0 (klest: options ``use_on_policy_kl_approximation=True`` and
  ``generation_logprob=``), otherwise ones.
  With ``use_kl_in_reward`` v0.6.0 still adds the loss KL (nothing zeroes it).
- **v0.7.0** (PRs #2506 and #2958): the weights are differentiable,
  ``exp(curr_logprobs - generation_logprobs)`` or, without generation log-probs,
  ``exp(curr_logprobs - curr_logprobs.detach())`` (1 in value, gradient 1), nan/±inf -> 0,
  detached where the input clamp is active, and applied *before* the output clamp:
  ``clamp(w * k, ±10)``. Where no clamp is active d/d logprob = w (k + k') (#2506's
  β·w·(k + k′)); for k3 that is w (logprob - ref_logprob). Where ``exp`` overflows NeMo-RL's
  ``nan_to_num`` passes ``0 * inf = nan`` back; klest returns 0, the derivative of the 0 the
  weight was replaced by.
- ``reward_k*``: REINFORCE++ (``ReinforcePlusPlusAdvantageEstimator``) subtracts
  ``kl_coef * calculate_kl(prev_logprobs, reference)`` (the default clamps 20/10, not the
  configured ones) from every token's advantage, without a reward-to-go sum; v0.7.0's PPO
  (``GeneralizedAdvantageEstimator``) makes the same per-token KL a token-level reward before
  GAE. Computed without gradient: klest returns it detached.
- ``opd`` (v0.7.0): on-policy distillation replaces the advantages by
  ``(teacher_logprobs - prev_logprobs).detach()``: −k1 against the teacher (pass the
  teacher's log-probabilities as ``ref_logprob``).
"""

from __future__ import annotations

from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site, Weight

FRAMEWORK = "nemo_rl"
REPOSITORY = "NVIDIA-NeMo/RL"
UTILS = "nemo_rl/algorithms/utils.py"
LOSS = "nemo_rl/algorithms/loss/loss_functions.py"
ADVANTAGES = "nemo_rl/algorithms/advantage_estimator.py"
CLAMPS = ("input_clamp_value", "output_clamp_value")
GENERATION = "generation_logprob"
SWITCH = "use_on_policy_kl_approximation"
LOSS_PLACEMENT = "loss (reference_policy_kl_penalty * kl, masked token mean)"


def _loss_kinds(site: Site, weight: Weight) -> list[PenaltySpec]:
    return [
        PenaltySpec(
            FRAMEWORK,
            "",
            kind,
            kind,
            site,
            LOSS_PLACEMENT,
            reduction="token mean (token_level_loss), else sequence mean",
            input_clamp=20.0,
            output_clamp=10.0,
            weight=weight,
            clamp_options=CLAMPS,
        )
        for kind in ("k1", "k2", "k3")
    ]


def _reward_kinds(site: Site, placement: str) -> list[PenaltySpec]:
    return [
        PenaltySpec(
            FRAMEWORK,
            "",
            f"reward_{kind}",
            kind,
            site,
            placement,
            input_clamp=20.0,
            output_clamp=10.0,
            detached=True,
            note="logprob is prev_logprobs (the policy at rollout, no gradient)",
        )
        for kind in ("k1", "k2", "k3")
    ]


V060 = Release(
    FRAMEWORK,
    "0.6.0",
    REPOSITORY,
    "5fb588932bf835506a8a5bac01de4f8c7ab0a065",
    "2026-04-29",
    default_kind="k3",
    note="defaults (examples/configs/grpo_math_1B.yaml): beta 0.01, k3, clamps 20 / 10",
)
register(
    V060,
    [
        *_loss_kinds(
            Site(UTILS, "calculate_kl", "41-83", f"{LOSS}::ClippedPGLossFn.__call__ (333-379)"),
            Weight(
                GENERATION,
                gradient="detached",
                order="after_clamp",
                nonfinite_to_zero=True,
                option_switch=SWITCH,
            ),
        ),
        *_reward_kinds(
            Site(
                ADVANTAGES,
                "ReinforcePlusPlusAdvantageEstimator.compute_advantage",
                "203-212",
            ),
            "advantages (REINFORCE++: advantage - kl_coef * kl per token, no reward-to-go); "
            "v0.6.0 keeps the loss KL as well",
        ),
    ],
)

V070 = Release(
    FRAMEWORK,
    "0.7.0",
    REPOSITORY,
    "81aa43dda4765b0429cf31dab44441e4e4383911",
    "2026-07-29",
    default_kind="k3",
    note="defaults (ClippedPGLossConfig): beta 0.01, k3, clamps 20 / 10; PRs #2506, #2958",
)
register(
    V070,
    [
        *_loss_kinds(
            Site(UTILS, "calculate_kl", "41-100", f"{LOSS}::ClippedPGLossFn.__call__ (404-453)"),
            Weight(
                GENERATION,
                missing="self",
                order="before_clamp",
                nonfinite_to_zero=True,
                detach_where_clamped=True,
                option_switch=SWITCH,
            ),
        ),
        *_reward_kinds(
            Site(
                ADVANTAGES,
                "ReinforcePlusPlusAdvantageEstimator.compute_advantage",
                "211-222",
                f"{ADVANTAGES}::GeneralizedAdvantageEstimator._build_token_level_rewards (323-373)",
            ),
            "advantages (REINFORCE++: advantage - kl_coef * kl per token) or reward (PPO: "
            "token-level reward -kl_coef * kl, then GAE); the loss KL is then 0",
        ),
        PenaltySpec(
            FRAMEWORK,
            "",
            "opd",
            "k1",
            Site(ADVANTAGES, "OPDAdvantageEstimator.compute_advantage", "539-575"),
            "advantages (replaced by -k1 = teacher - prev_logprobs, detached)",
            detached=True,
            note="ref_logprob is the teacher's log-probabilities",
        ),
    ],
)

"""TRL: the PPO trainer's KL in the reward, RLOO's KL in the reward, GRPO's KL in the loss.

- **PPO** (option ``kl_estimator``, v0.17.0 on; ``trl/trainer/ppo_trainer.py`` up to v0.25,
  ``trl/experimental/ppo/ppo_trainer.py`` from v0.26.0, the old path removed in v0.29.0):
  inside ``torch.no_grad()``, ``logr = ref_logprobs - logprobs`` (= l) and ``kl = -logr``
  (``k1``, the default) or ``(logr.exp() - 1) - logr`` (``k3``); the reward gets
  ``-kl_coef * kl`` per token, then GAE.
- **Legacy PPO** (v0.11.4, ``PPOTrainer._kl_penalty``, option ``kl_penalty``): ``kl``
  (logprob - ref_logprob), ``abs``, ``mse`` (half squared difference) and ``full``
  (``F.kl_div(ref_logprob, logprob, log_target=True).sum(-1)`` on the whole vocabulary's
  log-probabilities, i.e. KL(π_θ‖π_ref)).
- **RLOO** (``rloo``, v0.22.0 on): ``per_token_kl = old_per_token_logps - ref_per_token_logps``
  (k1 on the rollout log-probs, no gradient), summed over the completion and subtracted
  (times ``beta``, default 0.05) from the scalar reward before the leave-one-out baseline.
- **GRPO** (``grpo``): ``per_token_kl = exp(ref - logp) - (ref - logp) - 1`` (k3 of l, no
  clamp), differentiable, added to the loss as ``beta * per_token_kl`` (``beta`` default 0.0
  since v0.19.0). From v0.26.0, ``use_bias_correction_kl=True`` (PR #4638; default False
  through v1.9.0) multiplies it by ``coef_1 = exp(log_importance_weights)``, the
  differentiable ratio π_θ/π_old: ``logp - old_logp`` per token
  (``importance_sampling_level="token"``) or its ``mask``-weighted mean over the last axis
  (``"sequence"``, GSPO: the (B, 1) ratio broadcast onto every token, issue #6586). Without
  ``old_logprob`` (one optimisation step per batch) TRL sets ``old_logp = logp.detach()``:
  the ratio is 1 in value and carries d/d logp = 1.

Every reward kind is computed without gradients: klest returns it detached.
"""

from __future__ import annotations

from typing import Any

from klest.rl.full import penalty_full
from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site, Weight

FRAMEWORK = "trl"
REPOSITORY = "huggingface/trl"
REWARD = "reward (per token, -kl_coef * kl, then GAE; computed under torch.no_grad)"
RLOO_PLACEMENT = "reward (beta * sum_t kl subtracted from the scalar reward; no gradient)"
GRPO_PLACEMENT = "loss (beta * per_token_kl)"
GRPO_REDUCTION = "by loss_type (default 'dapo': masked sum / global token count)"
FULL_OPTIONS = {"logits": None, "ref_logits": None, "chunk_size": None, "nonfinite": "propagate"}
BIAS_CORRECTION = Weight(
    "old_logprob",
    missing="self",
    switch="use_bias_correction_kl",
    level_option="importance_sampling_level",
)


def _full(logprob: Any, ref_logprob: Any, **options: Any) -> Any:
    out = penalty_full(logprob, ref_logprob, **options)
    return out.detach() if hasattr(out, "detach") else out


def _ppo(site: Site) -> list[PenaltySpec]:
    return [
        PenaltySpec(FRAMEWORK, "", kind, kind, site, REWARD, detached=True) for kind in ("k1", "k3")
    ]


def _rloo(site: Site) -> PenaltySpec:
    return PenaltySpec(
        FRAMEWORK, "", "rloo", "k1", site, RLOO_PLACEMENT, reduction="sequence sum",
        detached=True, note="logprob is old_per_token_logps (the policy at rollout)",
    )  # fmt: skip


def _grpo(site: Site, weighted: bool) -> PenaltySpec:
    return PenaltySpec(
        FRAMEWORK, "", "grpo", "k3", site, GRPO_PLACEMENT, reduction=GRPO_REDUCTION,
        weight=BIAS_CORRECTION if weighted else None,
    )  # fmt: skip


LEGACY_SITE = Site(
    "trl/trainer/ppo_trainer.py",
    "PPOTrainer._kl_penalty",
    "1150-1164",
    "trl/trainer/ppo_trainer.py::PPOTrainer.compute_rewards (1112-1148)",
)
register(
    Release(
        FRAMEWORK, "0.11.4", REPOSITORY, "1f8ba929fbb6962249386f7dce20155da8a26cda",
        "2024-10-15", "kl", note="legacy PPOTrainer: kl_penalty 'kl', init_kl_coef 0.2",
    ),
    [
        *(
            PenaltySpec(FRAMEWORK, "", kind, est, LEGACY_SITE, REWARD, detached=True)
            for kind, est in (("kl", "k1"), ("abs", "abs"), ("mse", "k2"))
        ),
        PenaltySpec(
            FRAMEWORK, "", "full", "full", LEGACY_SITE, REWARD, detached=True, fn=_full,
            extra_options=FULL_OPTIONS,
        ),
    ],
)  # fmt: skip

GRPO = "trl/trainer/grpo_trainer.py"
RLOO = "trl/trainer/rloo_trainer.py"
EXPERIMENTAL_PPO = "trl/experimental/ppo/ppo_trainer.py"
register(
    Release(
        FRAMEWORK, "0.25.1", REPOSITORY, "1cf8d56c06ce095aeaa92d0853fca68e5834a928",
        "2025-11-12", "grpo", note="GRPO beta 0.0 (no KL unless set); PPO kl_estimator k1",
    ),
    [
        *_ppo(Site("trl/trainer/ppo_trainer.py", "PPOTrainer.train", "596-598")),
        _rloo(Site(RLOO, "RLOOTrainer._generate_and_score_completions", "1363-1367")),
        _grpo(Site(GRPO, "GRPOTrainer._compute_loss", "1792-1796"), weighted=False),
    ],
)  # fmt: skip
register(
    Release(
        FRAMEWORK, "0.26.0", REPOSITORY, "84794a7d03c748f3e1518cd3efc9a944b8cdd2bd",
        "2025-12-09", "grpo",
        note="GRPO beta 0.0, use_bias_correction_kl False (new, PR #4638); PPO moved to "
        "trl/experimental/ppo",
    ),
    [
        *_ppo(Site(EXPERIMENTAL_PPO, "PPOTrainer.train", "588-591")),
        _rloo(Site(RLOO, "RLOOTrainer._generate_and_score_completions", "1403-1407")),
        _grpo(Site(GRPO, "GRPOTrainer._compute_loss", "2115-2278"), weighted=True),
    ],
)  # fmt: skip
register(
    Release(
        FRAMEWORK, "1.9.0", REPOSITORY, "35def3ee000a87f6839e66f4b7749b06274ed1b3",
        "2026-07-21", "grpo",
        note="GRPO beta 0.0, use_bias_correction_kl False; PPO kl_coef 0.05, kl_estimator k1; "
        "RLOO beta 0.05. PR #6503 (default True) is in no release klest could read",
    ),
    [
        *_ppo(Site(EXPERIMENTAL_PPO, "PPOTrainer.train", "773-779")),
        _rloo(Site(RLOO, "RLOOTrainer._generate_and_score_completions", "1531-1535")),
        _grpo(Site(GRPO, "GRPOTrainer._compute_loss", "2991-3260"), weighted=True),
    ],
)  # fmt: skip

"""TRL: the PPO trainer's KL in the reward and the GRPO trainer's KL in the loss.

PPO (``trl.trainer.ppo_trainer.PPOTrainer.train``, option ``kl_estimator``): inside
``torch.no_grad()``, ``logr = ref_logprobs - logprobs`` (= l) and
``kl = -logr`` (``k1``) or ``(logr.exp() - 1) - logr`` (``k3``); the reward gets
``-kl_coef * kl``. Legacy PPO (TRL <= 0.11, ``PPOTrainer._kl_penalty``, option
``kl_penalty``): ``kl`` (logprob - ref_logprob), ``abs``, ``mse`` (half squared difference)
and ``full`` (``F.kl_div(ref_logprob, logprob, log_target=True).sum(-1)`` on the whole
vocabulary's log-probabilities, i.e. KL(π_θ‖π_ref)). All of these live in the reward and are
computed without gradients: klest returns them detached.

GRPO (``trl.trainer.grpo_trainer.GRPOTrainer._compute_loss``), kind ``grpo``:
``per_token_kl = exp(ref - logp) - (ref - logp) - 1`` (k3 of l, no clamp), differentiable,
added to the loss as ``beta * per_token_kl``. With ``use_bias_correction_kl=True`` it is
multiplied by ``coef_1 = exp(log_importance_weights)``, the differentiable ratio
π_θ/π_old: ``log_importance_weights = logp - old_logp`` per token
(``importance_sampling_level="token"``) or its ``mask``-weighted mean over the last axis
(``"sequence"``, GSPO). Without ``old_logprob`` (one optimisation step per batch) TRL sets
``old_logp = logp.detach()``: the ratio is 1 in value and carries d/d logp = 1.
"""

from __future__ import annotations

from typing import Any

from klest.rl.full import penalty_full
from klest.rl.penalty import PenaltySpec, register

FRAMEWORK = "trl"
PPO = "trl.trainer.ppo_trainer.PPOTrainer.train (kl_estimator)"
LEGACY = "trl.trainer.ppo_trainer.PPOTrainer._kl_penalty (TRL <= 0.11, kl_penalty)"
GRPO = "trl.trainer.grpo_trainer.GRPOTrainer._compute_loss"
REWARD = "reward (computed under torch.no_grad: detached)"
NO_GRADIENT = "none (detached)"
_LEVELS = ("token", "sequence")


def _k1(ops: Any, lp: Any, ref: Any) -> Any:
    return lp - ref


def _k3(ops: Any, lp: Any, ref: Any) -> Any:
    return ops.k3(ref - lp)


def _abs(ops: Any, lp: Any, ref: Any) -> Any:
    return ops.abs(lp - ref)


def _mse(ops: Any, lp: Any, ref: Any) -> Any:
    d = lp - ref
    return 0.5 * (d * d)


def _full(logprob: Any, ref_logprob: Any, **options: Any) -> Any:
    out = penalty_full(logprob, ref_logprob, **options)
    return out.detach() if hasattr(out, "detach") else out


def _grpo(
    ops: Any,
    lp: Any,
    ref: Any,
    *,
    old_logprob: Any,
    use_bias_correction_kl: bool,
    importance_sampling_level: str,
    mask: Any,
) -> Any:
    if not isinstance(use_bias_correction_kl, bool):
        raise ValueError(f"use_bias_correction_kl must be a bool, got {use_bias_correction_kl!r}")
    if importance_sampling_level not in _LEVELS:
        raise ValueError(
            f"importance_sampling_level must be one of {_LEVELS}, got {importance_sampling_level!r}"
        )
    per_token_kl = ops.k3(ref - lp)
    if not use_bias_correction_kl:
        return per_token_kl
    old = ops.stop_gradient(lp) if old_logprob is None else old_logprob
    log_ratio = lp - old
    if importance_sampling_level == "sequence":
        m = ops.ones_like(log_ratio) if mask is None else ops.ones_like(log_ratio) * mask
        log_ratio = ops.sum_last(log_ratio * m) / ops.clip(ops.sum_last(m), 1.0, None)
    return per_token_kl * ops.exp(log_ratio)


_REWARD_KINDS = (
    ("k1", _k1, PPO, "logprob - ref_logprob"),
    ("k3", _k3, PPO, "exp(l) - 1 - l, l = ref_logprob - logprob"),
    ("kl", _k1, LEGACY, "logprob - ref_logprob"),
    ("abs", _abs, LEGACY, "|logprob - ref_logprob|"),
    ("mse", _mse, LEGACY, "0.5 * (logprob - ref_logprob)**2"),
)
for kind, fn, source, formula in _REWARD_KINDS:
    register(PenaltySpec(FRAMEWORK, kind, fn, source, formula, NO_GRADIENT, REWARD, detached=True))
register(
    PenaltySpec(
        FRAMEWORK,
        "full",
        _full,
        LEGACY,
        "sum_v exp(logprob_v) (logprob_v - ref_logprob_v) over the vocabulary axis",
        NO_GRADIENT,
        REWARD,
        options={"logits": None, "ref_logits": None, "chunk_size": None, "nonfinite": "propagate"},
        raw=True,
    )
)
register(
    PenaltySpec(
        FRAMEWORK,
        "grpo",
        _grpo,
        GRPO,
        "exp(l) - 1 - l (times exp(logprob - old_logprob) if use_bias_correction_kl)",
        "d/d logprob = 1 - exp(l); with use_bias_correction_kl (token level): "
        "w (k3 + 1 - exp(l)) = (logprob - ref_logprob) w, w = exp(logprob - old_logprob)",
        "loss (beta * per_token_kl)",
        options={
            "old_logprob": None,
            "use_bias_correction_kl": False,
            "importance_sampling_level": "token",
            "mask": None,
        },
        array_options=frozenset({"old_logprob", "mask"}),
    )
)

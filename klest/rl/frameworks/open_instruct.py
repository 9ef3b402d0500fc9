"""open-instruct (AI2): ``open_instruct.model_utils.estimate_kl`` in the GRPO loss.

``ref_logprobs_diff = (new_logprobs - ref_logprobs).clamp(-40.0, 40.0)`` (= -clamp(l, ±40)),
then the estimator chosen by index (``kl_estimator``, default 2):

- ``0`` (``k1``): the clamped difference;
- ``1`` (``k2``): its square / 2;
- ``2`` (``k3``): ``expm1(-d) + d`` = e^c - 1 - c with c = clamp(l, ±40);
- ``3`` (``ratio_k1``): ``ratio * d``, ``ratio = exp(new_logprobs - old_logprobs)``
  differentiable and unclamped. With one mini-batch (the default) TRL-style
  ``old = new_logprobs.detach()`` (value 1, gradient 1); ``old_logprob=`` gives the
  trainer's (more mini-batches) or vLLM's (``use_vllm_logprobs``) log-probabilities.

``per_token_loss = pg_loss + beta * kl`` (``beta`` 0.05), masked mean over the tokens. The
off-policy corrections (TIS, ``rho_weights``) multiply the policy-gradient term only, never
the KL. No upcast: the model's dtype.
"""

from __future__ import annotations

from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site, Weight

FRAMEWORK = "open_instruct"
REPOSITORY = "allenai/open-instruct"
PLACEMENT = "loss (pg_loss + beta * kl per token)"
REDUCTION = "masked mean over the tokens (loss_denominator 'token')"
KINDS = (("k1", "k1", "0"), ("k2", "k2", "1"), ("k3", "k3", "2"), ("ratio_k1", "k1", "3"))
RATIO = Weight("old_logprob", missing="self")
DEFAULTS = "defaults: beta 0.05, kl_estimator 2 (k3), load_ref_policy True"

#: version -> (commit, date, estimate_kl lines, where the loss applies it)
RELEASES = {
    "0.1.0": ("8befd55e21d045805d9abcc33120456aeb1e4546", "2026-01-26", "743-768",
              "open_instruct/grpo_fast.py::PolicyTrainerRayProcess.step (785-792)"),
    "0.2.0": ("aa29e218ea5468c8396fb77bc5a0ba07a90c0eb0", "2026-03-01", "743-768",
              "open_instruct/grpo_utils.py::compute_grpo_loss (240-275)"),
    "0.3.0": ("26de99604002d6a7b25a2c5f2ee880e388a21dca", "2026-06-10", "793-818",
              "open_instruct/grpo_utils.py::compute_grpo_loss (504-538)"),
}  # fmt: skip

for version, (commit, date, lines, call) in RELEASES.items():
    site = Site("open_instruct/model_utils.py", "estimate_kl", lines, call)
    register(
        Release(FRAMEWORK, version, REPOSITORY, commit, date, "k3", DEFAULTS),
        [
            PenaltySpec(
                FRAMEWORK, "", kind, est, site, PLACEMENT, reduction=REDUCTION,
                input_clamp=40.0, weight=RATIO if kind == "ratio_k1" else None,
                aliases=(index,),
            )
            for kind, est, index in KINDS
        ],
    )  # fmt: skip

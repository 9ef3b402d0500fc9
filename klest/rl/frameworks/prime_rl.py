"""prime-rl (PrimeIntellect): a penalty toward the **inference policy**, not a reference model.

- ``kl_tau`` (``default_loss_fn``, v0.5.0 on): ``log_importance_ratio = trainer_logprobs -
  inference_logprobs``; ``per_token_loss = -pg_loss + kl_tau * log_importance_ratio**2``
  (``kl_tau`` 1e-3): (logprob - μ)², twice k2 and without the ½, anchored at the behaviour
  policy μ. Pass the inference log-probabilities as ``ref_logprob``. No clamp, no weight;
  the sum over the loss tokens divided by their number.
- ``mismatch_kl`` (a logged metric, never in the loss): ``ρ - log ρ - 1`` with
  ρ = exp(logprob - μ): k3 with the roles swapped, whose mean over tokens a ~ μ is KL(μ‖π).

Up to v0.4.0 the KL (default off) sat inside a REINFORCE coefficient,
``-(ρ (A - kl_tau (logprob - μ))).detach() * logprob``; klest does not mirror that form.
"""

from __future__ import annotations

from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site

FRAMEWORK = "prime_rl"
LOSS = "src/prime_rl/trainer/rl/loss.py"
ANCHOR = "generation_logprob (passed as ref_logprob)"
register(
    Release(
        FRAMEWORK, "0.8.0", "PrimeIntellect-ai/prime-rl",
        "60bc29547a8824ad1de7b9af8d265e2b27b2a72d", "2026-08-06", "kl_tau",
        "defaults: kl_tau 1e-3 (DefaultLossConfig); no reference model in the default loss",
    ),
    [
        PenaltySpec(
            FRAMEWORK, "", "kl_tau", "sq", Site(LOSS, "default_loss_fn", "109-161"),
            "loss (kl_tau * (logprob - inference_logprob)**2)",
            reduction="sum over loss tokens / their number", anchor=ANCHOR,
        ),
        PenaltySpec(
            FRAMEWORK, "", "mismatch_kl", "k3_swapped",
            Site(LOSS, "compute_importance_ratio_and_mismatch_kl", "100-106"),
            "metric (logged: rho - log rho - 1, rho = exp(logprob - inference_logprob))",
            detached=True, anchor=ANCHOR,
        ),
    ],
)  # fmt: skip

"""oat (sail-sg): the KL terms of ``oat.algorithms.ppo.PPOLearner.learning_step``.

- ``k3`` (the loss, ``beta`` 0.1 by default): ``log_ratio = (ref - new_logps).clamp(-40, 40)``,
  ``expm1(log_ratio) - log_ratio``, no output clamp, no weight (TIS multiplies the policy
  term only); aggregated per sequence by ``masked_aggregator`` (default ``critic_type``
  "drgrpo": the masked sum divided by ``generate_max_length``), then the batch mean.
- ``k1`` (the reward, ``kl_penalty_coef`` 0 by default): ``-kl_penalty_coef * (logps -
  ref_logps)`` per token, unclamped, on the learner's own log-probabilities before the update
  (no gradient).

Log-probabilities in float32 (the logits are upcast).
"""

from __future__ import annotations

from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site

FRAMEWORK = "oat"
SITE = Site("oat/algorithms/ppo.py", "PPOLearner.learning_step", "360-674")
register(
    Release(
        FRAMEWORK, "0.2.3", "sail-sg/oat", "c1a074c320ff5ca9fe9a4f669bf05208e2f310be",
        "2025-10-31", "k3", "defaults: beta 0.1 (loss k3), kl_penalty_coef 0 (reward k1)",
    ),
    [
        PenaltySpec(
            FRAMEWORK, "", "k3", "k3", SITE, "loss (beta * aggregated k3)",
            reduction="masked sum / generate_max_length per sequence (drgrpo), batch mean",
            input_clamp=40.0, dtype="float32",
        ),
        PenaltySpec(
            FRAMEWORK, "", "k1", "k1", SITE, "reward (-kl_penalty_coef * k1 per token)",
            detached=True, dtype="float32",
        ),
    ],
)  # fmt: skip

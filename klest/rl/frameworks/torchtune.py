"""torchtune (PyTorch): k1 in the PPO reward (releases); k3 in the GRPO loss (main only).

- ``k1`` (``torchtune.rlhf.rewards.get_rewards_ppo``, v0.4.0-v0.6.1 and main):
  ``kl = logprobs - ref_logprobs`` on the log-probabilities at generation, ``kl_reward =
  -kl_coeff * kl`` per token, the score added at the last valid position; no clamp.
- ``k3`` (``torchtune.dev.grpo.loss.GRPOSimpleLoss``, on main only: the GRPO losses were
  added after the v0.6 branch, and torchtune has since wound down):
  ``exp(ref - pi) - (ref - pi) - 1``, **unclamped**, no weight, ``loss = -(policy - kl_coeff
  * kl)``, the masked mean per sequence then the batch mean (``kl_coeff`` 0.01 in the shipped
  configs, 0.1 in the class).
"""

from __future__ import annotations

from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site

FRAMEWORK = "torchtune"
REPOSITORY = "pytorch/torchtune"
REWARD = "reward (-kl_coeff * k1 per token; no gradient)"


def _ppo(lines: str) -> PenaltySpec:
    return PenaltySpec(
        FRAMEWORK, "", "k1", "k1", Site("torchtune/rlhf/rewards.py", "get_rewards_ppo", lines),
        REWARD, detached=True,
    )  # fmt: skip


register(
    Release(
        FRAMEWORK, "0.6.1", REPOSITORY, "a6290a5b40758f13bca61c386bc8756a49ef417e",
        "2025-04-07", "k1", "PPO recipes: kl_coeff 0.01; no GRPO loss in any release",
    ),
    [_ppo("49-94")],
)  # fmt: skip
register(
    Release(
        FRAMEWORK, "main", REPOSITORY, "bd2a0fc7c31430972728494fa01aaeeb0ebf1ba1",
        "2026-04-23", "k3", "main at its last commit (no release): GRPO configs kl_coeff 0.01",
    ),
    [
        _ppo("49-94"),
        PenaltySpec(
            FRAMEWORK, "", "k3", "k3",
            Site("torchtune/dev/grpo/loss.py", "GRPOSimpleLoss.forward", "210-272"),
            "loss (kl_coeff * k3)", reduction="masked mean per sequence, then batch mean",
        ),
    ],
)  # fmt: skip

"""OpenRLHF: ``openrlhf.models.utils.compute_approx_kl(log_probs, log_probs_base, kl_estimator)``.

``log_ratio = log_probs.float() - log_probs_base.float()`` (= -l), then

- ``k1``: ``log_ratio``;
- ``k2``: ``log_ratio**2 / 2``;
- ``k3``: ``exp(-log_ratio) - 1 + log_ratio`` (= k3(l)),

and every output is clamped to [-10, 10] (no clamp on the log-ratio itself, so k3 at a
log-ratio above ~88 in float32 overflows before the clamp and OpenRLHF's own backward gives
``0 * inf = nan`` there; klest returns 10 with gradient 0, the function's true derivative).
OpenRLHF uses it for the KL in the reward (experience maker, no gradient, per-token reward
``-kl_coef * kl`` then GAE or cumulative returns, so each token carries the KL of all later
tokens) and for the KL loss (``use_loss``); klest keeps it differentiable. OpenRLHF returns
float32 whatever the input dtype; klest returns the input dtype.
"""

from __future__ import annotations

from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site

FRAMEWORK = "openrlhf"
PLACEMENT = "reward (experience maker, no gradient; then returns) or loss (algo.kl.use_loss)"

register(
    Release(
        FRAMEWORK, "0.11.0", "OpenRLHF/OpenRLHF", "3c3be6234e0cb353e76bb8019947db9dfe99fca7",
        "2026-08-13", "k1", "defaults: algo.kl.estimator k1, init_coef 0.01, use_loss false",
    ),
    [
        PenaltySpec(
            FRAMEWORK, "", kind, kind, Site("openrlhf/models/utils.py", "compute_approx_kl",
                                            "64-95"),
            PLACEMENT, output_clamp=10.0, dtype="float32",
        )
        for kind in ("k1", "k2", "k3")
    ],
)  # fmt: skip

"""OpenRLHF: ``openrlhf.models.utils.compute_approx_kl(log_probs, log_probs_base, kl_estimator)``.

``log_ratio = log_probs.float() - log_probs_base.float()`` (= -l), then

- ``k1``: ``log_ratio``;
- ``k2``: ``log_ratio**2 / 2``;
- ``k3``: ``exp(-log_ratio) - 1 + log_ratio`` (= k3(l)),

and every output is clamped to [-10, 10] (no clamp on the log-ratio itself, so k3 at a
log-ratio above ~88 in float32 overflows before the clamp and OpenRLHF's own backward gives
``0 * inf = nan`` there; klest returns 10 with gradient 0, the function's true derivative).
OpenRLHF uses it for the KL in the reward (experience maker, no gradient) and for the KL
loss (``use_kl_loss``); klest keeps it differentiable. OpenRLHF returns float32 whatever the
input dtype; klest returns the input dtype.
"""

from __future__ import annotations

from typing import Any

from klest.rl._backend import log_ratio_estimator
from klest.rl.penalty import PenaltySpec, register

FRAMEWORK = "openrlhf"
SOURCE = "openrlhf.models.utils.compute_approx_kl"
OUTPUT_CLAMP = 10.0
PLACEMENT = "reward (experience maker, no gradient) or loss (use_kl_loss)"


def _make(kind: str) -> Any:
    def fn(ops: Any, lp: Any, ref: Any) -> Any:
        estimator = log_ratio_estimator(ops, kind)
        return ops.clamp_output(estimator, (ref - lp,), -OUTPUT_CLAMP, OUTPUT_CLAMP)

    return fn


for kind, formula, grad in (
    (
        "k1",
        "clamp(logprob - ref_logprob, -10, 10)",
        "d/d logprob = 1 where |logprob - ref_logprob| <= 10, else 0",
    ),
    (
        "k2",
        "clamp((logprob - ref_logprob)**2 / 2, -10, 10)",
        "d/d logprob = logprob - ref_logprob where the value is below 10, else 0",
    ),
    (
        "k3",
        "clamp(exp(l) - 1 - l, -10, 10), l = ref_logprob - logprob",
        "d/d logprob = 1 - exp(l) where the value is below 10, else 0",
    ),
):
    register(PenaltySpec(FRAMEWORK, kind, _make(kind), SOURCE, formula, grad, PLACEMENT))

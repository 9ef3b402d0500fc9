"""EasyR1 (hiyouga): ``verl.trainer.core_algos.compute_kl`` (EasyR1's fork of verl).

``log_probs, ref_log_probs = log_probs.float(), ref_log_probs.float()`` (float32), then

- ``kl``: ``log_probs - ref_log_probs``; ``abs``: its absolute value; ``mse``: half its square;
- ``low_var_kl``: ``exp(l) - l - 1`` clamped to [-10, 10]; from v0.3.1 the log-ratio is first
  clamped to [-20, 20] (v0.3.0 has no input clamp);
- ``full``: ``F.kl_div(ref_log_probs, log_probs, log_target=True).sum(-1)``. Its inputs are
  the *sampled tokens'* log-probabilities, shape (batch, length), so this is
  Σ_t π(a_t)(log π(a_t) - log π_ref(a_t)) over the positions, not a full-vocabulary KL; klest
  keeps the summed axis (shape (..., 1)). EasyR1's own next step broadcasts its (batch,)
  result against (batch, length), which only works for batch 1 or batch = length.

No importance weight. The reward path (``apply_kl_penalty``, the default:
``kl_penalty="kl"``, ``kl_coef=1e-3``) uses the rollout's ``old_log_probs`` without
gradient; the loss path (``use_kl_loss``; the shipped ``examples/config.yaml`` sets it with
``low_var_kl`` and ``kl_coef=1e-2``) averages by ``loss_avg_mode`` (token mean by default).
"""

from __future__ import annotations

from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site

FRAMEWORK = "easyr1"
REPOSITORY = "hiyouga/EasyR1"
PLACEMENT = "reward (apply_kl_penalty, old_log_probs; default) or loss (use_kl_loss)"
REDUCTION = "per token in the reward; token mean (loss_avg_mode 'token') in the loss"
DEFAULTS = (
    "defaults (AlgorithmConfig): use_kl_loss False, kl_penalty kl, kl_coef 1e-3; "
    "examples/config.yaml: use_kl_loss true, low_var_kl, kl_coef 1e-2"
)

RELEASES = {
    "0.3.0": ("7435d3c718fcdef84d41f0fdbaba9515001b268e", "2025-04-15", "394-428", None),
    "0.3.2": ("a23fb5b06be61d0eaa5819430533bf11136609cf", "2025-09-18", "480-519", 20.0),
}

for version, (commit, date, lines, input_clamp) in RELEASES.items():
    site = Site("verl/trainer/core_algos.py", "compute_kl", lines)
    specs = [
        PenaltySpec(FRAMEWORK, "", kind, est, site, PLACEMENT, reduction=REDUCTION,
                    dtype="float32")
        for kind, est in (("kl", "k1"), ("abs", "abs"), ("mse", "k2"))
    ]  # fmt: skip
    specs.append(
        PenaltySpec(
            FRAMEWORK, "", "low_var_kl", "k3", site, PLACEMENT, reduction=REDUCTION,
            input_clamp=input_clamp, output_clamp=10.0, dtype="float32",
        )
    )  # fmt: skip
    specs.append(
        PenaltySpec(
            FRAMEWORK, "", "full", "pi_k1_sum", site, PLACEMENT,
            reduction="sum over the sequence positions (padding included)", dtype="float32",
            note="not a full-vocabulary KL: F.kl_div of the sampled tokens' log-probabilities",
        )
    )  # fmt: skip
    register(Release(FRAMEWORK, version, REPOSITORY, commit, date, "kl", DEFAULTS), specs)

"""slime: ``slime.utils.ppo_utils.compute_approx_kl(log_probs, log_probs_base, kl_loss_type,
importance_ratio=None)``, used for the KL loss (``use_kl_loss``).

``log_ratio = log_probs.float() - log_probs_base.float()`` (= -l), then

- ``k1``: ``log_ratio``; ``k2``: ``log_ratio**2 / 2``;
- ``k3`` and ``low_var_kl``: ``exp(-log_ratio) - 1 + log_ratio`` (= k3(l), no input clamp);
- if ``importance_ratio`` is given (slime's ``use_unbiased_kl``, DeepSeek-V3.2), the value
  is multiplied by it; slime's loss passes ``exp(log_probs - old_log_probs)``, differentiable
  through ``log_probs``;
- ``low_var_kl`` only: the (weighted) value is then clamped to [-10, 10].

Options: ``old_logprob=`` (klest builds ``importance_ratio = exp(logprob - old_logprob)`` as
slime's loss does) or ``importance_ratio=`` (used as given); not both. Where k3 overflows
(l > 709) the unclamped kinds are +inf, as in slime, and with an importance ratio their
gradient is nan there (inf - inf in the product rule), also as in slime.
"""

from __future__ import annotations

from typing import Any

from klest.rl._backend import log_ratio_estimator
from klest.rl.penalty import PenaltySpec, register

FRAMEWORK = "slime"
SOURCE = "slime.utils.ppo_utils.compute_approx_kl"
OUTPUT_CLAMP = 10.0
PLACEMENT = "loss (use_kl_loss; use_unbiased_kl multiplies by the importance ratio)"
OPTIONS = {"old_logprob": None, "importance_ratio": None}


def _weighted(base: Any) -> Any:
    def fn(l: Any, w: Any) -> Any:
        return w * base(l)

    return fn


def _make(kind: str) -> Any:
    def fn(ops: Any, lp: Any, ref: Any, *, old_logprob: Any, importance_ratio: Any) -> Any:
        if old_logprob is not None and importance_ratio is not None:
            raise ValueError("slime: give old_logprob= or importance_ratio=, not both")
        if old_logprob is not None:
            importance_ratio = ops.exp(lp - old_logprob)
        base = log_ratio_estimator(ops, kind)
        l, w = ref - lp, importance_ratio
        value, args = (base, (l,)) if w is None else (_weighted(base), (l, w))
        if kind == "low_var_kl":
            return ops.clamp_output(value, args, -OUTPUT_CLAMP, OUTPUT_CLAMP)
        return value(*args)

    return fn


for kind, formula, grad in (
    ("k1", "logprob - ref_logprob", "d/d logprob = 1"),
    ("k2", "(logprob - ref_logprob)**2 / 2", "d/d logprob = logprob - ref_logprob"),
    ("k3", "exp(l) - 1 - l, l = ref_logprob - logprob", "d/d logprob = 1 - exp(l)"),
    (
        "low_var_kl",
        "clamp(w * (exp(l) - 1 - l), -10, 10), w = importance ratio or 1",
        "d/d logprob = w (1 - exp(l)) + (d w/d logprob) k3 where |value| <= 10, else 0",
    ),
):
    register(
        PenaltySpec(
            FRAMEWORK,
            kind,
            _make(kind),
            SOURCE,
            formula if kind == "low_var_kl" else f"{formula} (times importance_ratio if given)",
            grad,
            PLACEMENT,
            options=OPTIONS,
            array_options=frozenset(OPTIONS),
        )
    )

"""verl: ``verl.trainer.ppo.core_algos.kl_penalty`` and ``kl_penalty_forward``.

verl uses the same function for the KL-in-reward path (``apply_kl_penalty``, inputs computed
without gradients) and the KL-in-loss path (``use_kl_loss``, differentiable), so klest keeps
its output differentiable; detach it yourself for the reward placement.

- ``kl``/``k1``: ``logprob - ref_logprob`` (= -l).
- ``abs``: ``|logprob - ref_logprob|``.
- ``mse``/``k2``: ``0.5 * (logprob - ref_logprob)**2``.
- ``low_var_kl``/``k3``: ``kl = clamp(ref_logprob - logprob, -20, 20)``, then
  ``clamp(exp(kl) - kl - 1, -10, 10)``.
- ``<kind>+`` (``kl_penalty``): the forward value of ``<kind>``, the gradient of k2, via
  ``k2 - k2.detach() + base.detach()`` (straight-through).
- ``full``: verl raises NotImplementedError (it would need the logits of every vocabulary
  entry); klest returns the exact per-position KL(π_θ‖π_ref) from full logits with
  :func:`klest.rl.full_kl`.
"""

from __future__ import annotations

from typing import Any

from klest.rl.full import penalty_full
from klest.rl.penalty import PenaltySpec, register

FRAMEWORK = "verl"
SOURCE = "verl.trainer.ppo.core_algos.kl_penalty_forward"
INPUT_CLAMP = 20.0
OUTPUT_CLAMP = 10.0
PLACEMENT = "loss (use_kl_loss) or reward (apply_kl_penalty, inputs without gradient)"


def _k1(ops: Any, lp: Any, ref: Any) -> Any:
    return lp - ref


def _abs(ops: Any, lp: Any, ref: Any) -> Any:
    return ops.abs(lp - ref)


def _k2(ops: Any, lp: Any, ref: Any) -> Any:
    d = lp - ref
    return 0.5 * (d * d)


def _low_var_kl(ops: Any, lp: Any, ref: Any) -> Any:
    l = ops.clip(ref - lp, -INPUT_CLAMP, INPUT_CLAMP)
    return ops.clamp_output(ops.k3, (l,), -OUTPUT_CLAMP, OUTPUT_CLAMP)


def _straight_through(base: Any) -> Any:
    def fn(ops: Any, lp: Any, ref: Any) -> Any:
        forward = base(ops, lp, ref)
        backward = _k2(ops, lp, ref)
        # verl's order: (k2 - k2.detach()) is exactly 0, so the value is base's, bit for bit
        return backward - ops.stop_gradient(backward) + ops.stop_gradient(forward)

    return fn


_BASE = (
    (("kl", "k1"), _k1, "logprob - ref_logprob", "d/d logprob = 1"),
    (
        ("abs",),
        _abs,
        "|logprob - ref_logprob|",
        "d/d logprob = sign(logprob - ref_logprob)",
    ),
    (
        ("mse", "k2"),
        _k2,
        "0.5 * (logprob - ref_logprob)**2",
        "d/d logprob = logprob - ref_logprob",
    ),
    (
        ("low_var_kl", "k3"),
        _low_var_kl,
        "clamp(exp(c) - c - 1, -10, 10), c = clamp(ref_logprob - logprob, -20, 20)",
        "d/d logprob = 1 - exp(ref_logprob - logprob) where no clamp is active, else 0",
    ),
)

for names, fn, formula, grad in _BASE:
    register(
        PenaltySpec(FRAMEWORK, names[0], fn, SOURCE, formula, grad, PLACEMENT),
        *names[1:],
    )
for names, fn, formula, _ in _BASE:
    register(
        PenaltySpec(
            FRAMEWORK,
            names[0] + "+",
            _straight_through(fn),
            "verl.trainer.ppo.core_algos.kl_penalty",
            f"value: {formula}",
            "d/d logprob = logprob - ref_logprob (k2 gradient, straight-through)",
            PLACEMENT,
        ),
        *(n + "+" for n in names[1:]),
    )
register(
    PenaltySpec(
        FRAMEWORK,
        "full",
        penalty_full,
        "verl.trainer.ppo.core_algos.kl_penalty_forward (NotImplementedError in verl)",
        "sum_v pi(v) (log pi(v) - log pi_ref(v)) per position, from full-vocabulary logits",
        "exact gradient of KL(pi||pi_ref) with respect to both logits",
        PLACEMENT,
        options={"logits": None, "ref_logits": None, "chunk_size": None, "nonfinite": "propagate"},
        raw=True,
    )
)

"""NeMo-RL: ``nemo_rl.algorithms.utils.calculate_kl`` as ``ClippedPGLossFn`` applies it.

``calculate_kl(logprobs, logprobs_reference, kl_type, input_clamp_value=20.0,
output_clamp_value=10.0)``: ``logr = logprobs_reference - logprobs`` (= l), clamped to
±``input_clamp_value``; ``k1``: ``-logr``; ``k2``: ``logr**2 / 2``; ``k3``:
``exp(logr) - 1 - logr``; the result clamped to ±``output_clamp_value`` (``None`` disables
either clamp). ``nemo_rl.algorithms.loss_functions.ClippedPGLossFn`` multiplies it by
``kl_importance_weights``: with ``use_on_policy_kl_approximation``,
``exp(curr_logprobs - generation_logprobs).detach()`` with nan/±inf replaced by 0 (klest:
option ``generation_logprob=``), otherwise ones. (Later NeMo-RL revisions make these weights
differentiable; this reproduces the released form, where they are detached.)
"""

from __future__ import annotations

import math
from typing import Any

from klest.rl._backend import log_ratio_estimator
from klest.rl.penalty import PenaltySpec, register

FRAMEWORK = "nemo_rl"
SOURCE = "nemo_rl.algorithms.utils.calculate_kl (with ClippedPGLossFn's kl_importance_weights)"
PLACEMENT = "loss (reference_policy_kl_penalty * kl)"
OPTIONS = {"input_clamp_value": 20.0, "output_clamp_value": 10.0, "generation_logprob": None}


def _clamp_value(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a positive number or None, got {value!r}")
    return float(value)


def _make(kind: str) -> Any:
    def fn(
        ops: Any,
        lp: Any,
        ref: Any,
        *,
        input_clamp_value: Any,
        output_clamp_value: Any,
        generation_logprob: Any,
    ) -> Any:
        ic = _clamp_value("input_clamp_value", input_clamp_value)
        oc = _clamp_value("output_clamp_value", output_clamp_value)
        base = log_ratio_estimator(ops, kind)
        l = ref - lp
        if ic is not None:
            l = ops.clip(l, -ic, ic)
        kl = base(l) if oc is None else ops.clamp_output(base, (l,), -oc, oc)
        if generation_logprob is None:
            return kl
        weights = ops.nan_to_zero(ops.stop_gradient(ops.exp(lp - generation_logprob)))
        return weights * kl

    return fn


for kind, formula, grad in (
    ("k1", "-l", "d/d logprob = w"),
    ("k2", "l**2 / 2", "d/d logprob = -l w"),
    ("k3", "exp(l) - 1 - l", "d/d logprob = (1 - exp(l)) w"),
):
    register(
        PenaltySpec(
            FRAMEWORK,
            kind,
            _make(kind),
            SOURCE,
            f"w * clamp({formula}, -oc, oc), l = clamp(ref_logprob - logprob, -ic, ic), "
            "w = stop_gradient(exp(logprob - generation_logprob)) or 1",
            f"{grad} where no clamp is active, else 0",
            PLACEMENT,
            options=OPTIONS,
            array_options=frozenset({"generation_logprob"}),
        )
    )

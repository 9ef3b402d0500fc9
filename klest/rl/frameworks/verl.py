"""verl: ``verl.trainer.ppo.core_algos.kl_penalty`` and ``kl_penalty_forward``.

verl uses the same function for the KL-in-reward path (``apply_kl_penalty``: token-level
rewards minus ``beta * kld`` on the rollout log-probs, without gradients) and the KL-in-loss
path (``use_kl_loss``: ``kl_loss_coef * agg_loss(kld)``, differentiable), so klest keeps its
output differentiable; detach it yourself for the reward placement. No importance weight in
any version. The base kinds are the same from v0.5.0 to v0.9.0:

- ``kl``/``k1``: ``logprob - ref_logprob`` (= -l).
- ``abs``: ``|logprob - ref_logprob|``.
- ``mse``/``k2``: ``0.5 * (logprob - ref_logprob)**2``.
- ``low_var_kl``/``k3``: ``kl = clamp(ref_logprob - logprob, -20, 20)``, then
  ``clamp(exp(kl) - kl - 1, -10, 10)``.
- ``<kind>+`` (``kl_penalty``): the forward value of ``<kind>``, the gradient of k2, via
  ``k2 - k2.detach() + base.detach()`` (straight-through), from **v0.8.0** (PR #6058). In
  v0.6.0-v0.7.1 the code was there but passed the name with its ``+`` to
  ``kl_penalty_forward``, which raised ``NotImplementedError``; v0.5.0 had no ``+`` handling
  and raised the same for the unknown name. The pinned older versions raise it too.
- ``full``: verl raises NotImplementedError (it would need the logits of every vocabulary
  entry); klest returns the exact per-position KL(π_θ‖π_ref) from full logits with
  :func:`klest.rl.full_kl` (a klest extension, in every version).
"""

from __future__ import annotations

from klest.rl.full import penalty_full
from klest.rl.penalty import Release, register
from klest.rl.primitives import PenaltySpec, Site

FRAMEWORK = "verl"
REPOSITORY = "verl-project/verl"
CORE = "verl/trainer/ppo/core_algos.py"
PLACEMENT = "loss (use_kl_loss) or reward (apply_kl_penalty, inputs without gradient)"
REDUCTION = "agg_loss(loss_agg_mode; default token-mean) in the loss; per token in the reward"
DEFAULTS = (
    "defaults: use_kl_loss false, kl_loss_type low_var_kl, kl_loss_coef 0.001; "
    "use_kl_in_reward false, kl_penalty kl, kl_coef 0.001"
)
BASE = (("kl", "k1"), ("abs",), ("mse", "k2"), ("low_var_kl", "k3"))
ESTIMATOR = {"kl": "k1", "abs": "abs", "mse": "k2", "low_var_kl": "k3"}

#: version -> (commit, date, kl_penalty lines, kl_penalty_forward lines or None, "+" works)
RELEASES = {
    "0.5.0": ("8fdc4d3f202f41461f4de9f42a637228e342668b", "2025-07-23", "1034-1069", None, False),
    "0.6.0": ("ddd86f527a4af75095e4677b02b5aa272913a088", "2025-10-15", "1391-1414", "1417-1452",
              False),
    "0.7.1": ("bec9ef74768dd201881cd4e54cd0385e87caae27", "2026-03-16", "2124-2147", "2150-2185",
              False),
    "0.8.0": ("7aed6b230776f963fa09509c10d9c3a767d1102c", "2026-06-01", "2126-2151", "2154-2189",
              True),
    "0.9.0": ("483b8a009ba3a97563edee3a19887e4862b8094a", "2026-08-14", "2187-2212", "2215-2250",
              True),
}  # fmt: skip


def _specs(outer: Site, inner: Site, plus_works: bool) -> list[PenaltySpec]:
    specs, plus = [], []
    for names in BASE:
        est = ESTIMATOR[names[0]]
        clamped = est == "k3"
        specs.append(
            PenaltySpec(
                FRAMEWORK,
                "",
                names[0],
                est,
                inner,
                PLACEMENT,
                reduction=REDUCTION,
                input_clamp=20.0 if clamped else None,
                output_clamp=10.0 if clamped else None,
                aliases=names[1:],
            )
        )
        plus.append(
            PenaltySpec(
                FRAMEWORK,
                "",
                names[0] + "+",
                est,
                outer,
                PLACEMENT,
                reduction=REDUCTION,
                input_clamp=20.0 if clamped else None,
                output_clamp=10.0 if clamped else None,
                gradient_of="k2",
                unsupported=None
                if plus_works
                else "verl raises NotImplementedError for '+' kinds before v0.8.0",
                aliases=tuple(n + "+" for n in names[1:]),
            )
        )
    specs += plus
    specs.append(
        PenaltySpec(
            FRAMEWORK,
            "",
            "full",
            "full",
            inner,
            PLACEMENT,
            fn=penalty_full,
            extra_options={"logits": None, "ref_logits": None, "chunk_size": None,
                           "nonfinite": "propagate"},
            note="verl raises NotImplementedError; klest computes the exact full-vocabulary KL",
        )
    )  # fmt: skip
    return specs


for version, (commit, date, outer_lines, inner_lines, plus_works) in RELEASES.items():
    outer = Site(CORE, "kl_penalty", outer_lines)
    inner = outer if inner_lines is None else Site(CORE, "kl_penalty_forward", inner_lines)
    register(
        Release(FRAMEWORK, version, REPOSITORY, commit, date, "low_var_kl", DEFAULTS),
        _specs(outer, inner, plus_works),
    )

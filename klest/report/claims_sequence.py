"""klest's verdicts on claims about KL gradients over whole responses (sequence level).

The panel is the study ``experiments/rl_sequence_gradients.toml``: a random TabularAR policy
with an eos and its reference at each maximum length T, and a tabular sequential bandit.
:func:`sequence_facts` is the study's frame (:func:`klest.studies.rl_studies.run_study`, one
``table`` column: "gradient" rows of :func:`klest.sequence.tables.sequence_gradient_table`,
"aggregation" rows of ``aggregation_table``, "fixed_point" rows of ``fixed_point_table``).
Each claim's ``test`` maps that frame to its units ``(where, holds, deciding number, shown)``;
:func:`klest.report.claims.evaluate_sequence_claims` makes the verdicts. Thresholds:
"unbiased" / "equal" is a relative error <= :data:`EXACT` (the exact DP's verdict
tolerance), a fixed point "is" π* when KL(π_fixed‖π*) <= :data:`EXACT`.

>>> frame = sequence_facts()
>>> SEQUENCE_CLAIMS[0].test(frame)[0][:2]
('T = 2', True)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from klest.report.tables import frame_markdown
from klest.sequence.gradient import VERDICT_RTOL
from klest.sequence.tables import partial_vs_full_table
from klest.studies.experiment import default_experiments_dir
from klest.studies.rl_studies import load_study, run_study

__all__ = [
    "SEQUENCE_CLAIMS",
    "SEQUENCE_TITLE",
    "SequenceClaim",
    "sequence_facts",
    "sequence_preamble",
]

SEQUENCE_TITLE = "Sequence-level KL gradients"
CONFIG = "rl_sequence_gradients"
EXACT = VERDICT_RTOL
TANG = 'Tang & Munos (2025), "On a few pitfalls in KL divergence gradient estimation for RL"'
SHAH = 'Shah et al. (2025), "A Comedy of Estimators: On KL Regularization in RL Training of LLMs"'
DRGRPO = (
    'Liu et al. (2025), "Understanding R1-Zero-Like Training: A Critical Perspective" (Dr. GRPO)'
)

Unit = tuple[str, bool, float, str]


@dataclass(frozen=True)
class SequenceClaim:
    """A claim about sequence-level KL gradients: ``test(frame)`` lists its units (where,
    holds, the deciding number, how to show it) on a frame of :func:`sequence_facts`."""

    key: str
    source: str
    text: str
    why: str
    test: Callable[[pd.DataFrame], list[Unit]]


@functools.lru_cache(maxsize=4)
def _facts(path: str, text: str) -> pd.DataFrame:  # the text keys the cache: an edit reruns
    return run_study(load_study(path))


def sequence_facts(experiments_dir: str | Path | None = None) -> pd.DataFrame:
    """The study's frame (exact; computed once per config text, a copy each call)."""
    directory = Path(experiments_dir) if experiments_dir else default_experiments_dir()
    path = directory / f"{CONFIG}.toml"
    frame = _facts(str(path), path.read_text(encoding="utf-8"))
    out = frame.copy()
    out.attrs = dict(frame.attrs)
    return out


def _table(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return frame[frame["table"] == name] if "table" in frame else frame.iloc[:0]


def sequence_preamble(frame: pd.DataFrame) -> str:
    """How the sequence-level verdicts are reached, the partial-vs-full table and the fixed
    points."""
    grad, fp = _table(frame, "gradient"), _table(frame, "fixed_point")
    lengths = ", ".join(str(int(t)) for t in sorted(set(grad["length"])))
    partial = partial_vs_full_table(grad)
    shown = fp.copy()
    for column in ("kl_to_optimum", "tv_to_optimum", "kl_to_forward"):  # only where it ended
        shown[column] = shown[column].where(shown["status"] == "converged", np.nan)
        shown[column] = shown[column].mask(shown[column].abs() <= 1e-15, 0.0)  # rounding: 0
    return (
        f"Each claim is tested on the models of `experiments/{CONFIG}.toml`: the policy "
        f"{frame.attrs.get('pi', 'TabularAR')} and its reference, generating at most T = "
        f"{lengths} tokens. Every expectation is exact (`klest.sequence.sequence_gradient`: "
        "dynamic programming over contexts; the covariance trace by enumeration; nothing "
        f"sampled); a verdict is the KL whose sequence-level gradient E[G] equals to {EXACT:g} "
        'relative, "zero", "partial" (the token-level part of ∇KL(π‖π_ref): '
        "Σ_t Σ_c d_t(c) ∇KL(π(·|c)‖π_ref(·|c)), the later contexts held fixed) or "
        '"neither". The figure is `fig13_sequence_gradients`, whose CSV holds every number '
        "below (column `table`).\n\n"
        "**Partial vs full.** What the token-level loss (k2 in the loss, summed over tokens) "
        "misses of ∇KL(π‖π_ref): the score-function term through the later contexts, "
        "E[Σ_t (Σ_{s>t} KL(π‖π_ref)(c_s)) ∇log π(x_t|c_t)] = ∇KL − E[G]:\n\n"
        + frame_markdown(
            partial,
            {
                "length": "T",
                "mean_length": "E[T_x]",
                "verdict": "verdict",
                "one_minus_cos": "1 − cos",
                "relative_error": "‖∇KL − E[G]‖ / ‖∇KL‖",
                "missing_norm": "‖missing‖",
                "true_norm": "‖∇KL(π‖π_ref)‖",
            },
        )
        + "\n\n**Fixed points** on the tabular sequential bandit "
        f"({frame.attrs.get('bandit', 'TabularAR')}, every prefix its own context, a reward "
        "R(x) per response): π trained from π_ref by exact expected-gradient descent on "
        "−E_π[R] + β·(KL term), then the root of that field (`klest.sequence.tables."
        "fixed_point`), against π* ∝ π_ref·exp(R/β) (by the soft Bellman recursion) and the "
        "forward-KL optimum π ∝ β π_ref/(λ − R). KL and TV are between response "
        'distributions, shown only where the run converged (0: below 1e-15). "boundary": a '
        "probability fell below 1e-8 (the policy heads for a deterministic one); the "
        "runs that did not converge end where their budget does.\n\n"
        + frame_markdown(
            shown,
            {
                "beta": "β",
                "placement": "placement",
                "aggregation": "aggregation",
                "estimator": "estimator",
                "status": "status",
                "verdict": "verdict at the point",
                "kl_to_optimum": "KL(π‖π*)",
                "tv_to_optimum": "TV(π, π*)",
                "kl_to_forward": "KL(π‖π_fwd)",
            },
        )
    )


def _config(frame: pd.DataFrame, placement: str, estimator: str,
            aggregation: str = "seq_mean_token_sum") -> pd.DataFrame:  # fmt: skip
    grad = _table(frame, "gradient")
    pick = (grad["placement"] == placement) & (grad["estimator"] == estimator)
    return grad[pick & (grad["aggregation"] == aggregation)].sort_values("length")


def _per_length(placement: str, estimator: str, ok: Callable[[pd.Series], bool],
                minimum: int = 1) -> Callable[[pd.DataFrame], list[Unit]]:  # fmt: skip
    def test(frame: pd.DataFrame) -> list[Unit]:
        units = []
        for _, row in _config(frame, placement, estimator).iterrows():
            if row["length"] < minimum:
                continue
            err = float(row["relative_error"])
            shown = (f"{row['verdict']}, ‖E[G] − ∇KL‖/‖∇KL‖ = {err:.3g}, cos = "
                     f"{row['cosine']:.6g}")  # fmt: skip
            units.append((f"T = {int(row['length'])}", bool(ok(row)), err, shown))
        return units

    return test


def _fixed(placement: str, estimator: str, at_optimum: bool) -> Callable[[pd.DataFrame], list]:
    def test(frame: pd.DataFrame) -> list[Unit]:
        fp = _table(frame, "fixed_point")
        rows = fp[(fp["placement"] == placement) & (fp["estimator"] == estimator)
                  & (fp["aggregation"] == "seq_mean_token_sum")]  # fmt: skip
        units = []
        for _, row in rows.sort_values("beta").iterrows():
            kl = float(row["kl_to_optimum"])
            there = row["status"] == "converged" and abs(kl) <= EXACT
            ok = row["status"] == "converged" and (there if at_optimum else not there)
            shown = f"{row['status']}, KL(π‖π*) = {max(kl, 0.0):.3g}"
            units.append((f"β = {row['beta']:g}", bool(ok), kl, shown))
        return units

    return test


def _to_go_variance(frame: pd.DataFrame) -> list[Unit]:
    units = []
    for est in ("k1", "k2", "k3"):
        to_go, full = _config(frame, "reward_to_go", est), _config(frame, "reward_sum", est)
        for (_, a), (_, b) in zip(to_go.iterrows(), full.iterrows(), strict=True):
            if a["length"] < 2:
                continue
            same = abs(a["norm"] - b["norm"]) <= EXACT * max(b["norm"], 1e-300)
            same &= abs(a["cosine"] - b["cosine"]) <= EXACT
            ratio = float(a["cov_trace"] / b["cov_trace"])
            shown = f"tr Cov(to-go)/tr Cov(sum) = {ratio:.3g}, same mean: {bool(same)}"
            units.append((f"{est}, T = {int(a['length'])}", bool(same and ratio < 1.0), ratio,
                          shown))  # fmt: skip
    return units


def _drgrpo(frame: pd.DataFrame) -> list[Unit]:
    units = []
    for _, row in _table(frame, "aggregation").sort_values(["model", "length"]).iterrows():
        diff, varies = float(row["relative_difference"]), bool(row["length_var"] > 1e-12)
        shown = (f"Var[T_x] = {row['length_var']:.3g}, ‖g_smtm − g_Dr‖/‖g_smtm‖ = "
                 f"{diff:.3g}")  # fmt: skip
        where = f"{row['model']}, T = {int(row['length'])}, {row['estimator']} {row['placement']}"
        units.append((where, (diff > EXACT) == varies, diff, shown))
    return units


SEQUENCE_CLAIMS: tuple[SequenceClaim, ...] = (
    SequenceClaim(
        "seq_token_loss_partial",
        TANG,
        "the token-level KL loss (k2 in the loss, summed over tokens) gives only a partial "
        "gradient of the sequence KL(π‖π_ref) (pitfall 2)",
        "∇k2 at token t is the gradient of KL(π(·|c_t)‖π_ref(·|c_t)) with the context held "
        "fixed; the sequence KL also depends on θ through the distribution of the later "
        "contexts. Tested per T >= 2 (at T = 1 there are no later contexts): verdict "
        f"partial, relative error > {EXACT:g}.",
        _per_length(
            "loss",
            "k2",
            lambda r: r["verdict"] == "partial" and r["relative_error"] > EXACT,
            minimum=2,
        ),
    ),
    SequenceClaim(
        "seq_token_loss_fixed_point",
        TANG,
        "training with the token-level KL loss does not reach the KL-regularised optimum "
        "π* ∝ π_ref·exp(R/β)",
        "Its fixed point maximises, context by context, E[Q] − β KL with the unregularised "
        f"future value Q. Tested per β: a converged fixed point with KL(π‖π*) > {EXACT:g}.",
        _fixed("loss", "k2", at_optimum=False),
    ),
    SequenceClaim(
        "seq_k1_reward_unbiased",
        SHAH,
        "k1 in the reward with the reward-to-go (REINFORCE) gives an unbiased gradient of "
        "KL(π‖π_ref)",
        "E[Σ_t (Σ_{s>=t} k1_s) ∇log π_t] = ∇KL(π‖π_ref) (the score function; the terms "
        f"s < t have mean 0). Tested per T, a(T) = 1: verdict KL(pi||ref) ({EXACT:g} relative).",
        _per_length("reward_to_go", "k1", lambda r: r["verdict"] == "KL(pi||ref)"),
    ),
    SequenceClaim(
        "seq_k1_reward_fixed_point",
        SHAH,
        "with k1 in the reward (reward-to-go), training reaches the KL-regularised optimum π*",
        f"An unbiased gradient of −E[R] + β KL(π‖π_ref). Tested per β: KL(π‖π*) <= {EXACT:g} "
        "at a converged fixed point.",
        _fixed("reward_to_go", "k1", at_optimum=True),
    ),
    SequenceClaim(
        "seq_k1_loss_biased",
        SHAH,
        "k1 in the loss gives a biased gradient of KL(π‖π_ref): zero in expectation",
        "E_π[∇log π] = 0 at every token. Tested per T, a(T) = 1: verdict zero.",
        _per_length("loss", "k1", lambda r: r["verdict"] == "zero"),
    ),
    SequenceClaim(
        "seq_k3_loss_biased",
        SHAH,
        "k3 in the loss gives a biased gradient of KL(π‖π_ref)",
        "∇k3 = (1 − r)∇log π: per token the gradient of KL(π_ref(·|c)‖π(·|c)), weighted by "
        f"π's context visits. Tested per T, a(T) = 1: relative error > {EXACT:g}.",
        _per_length("loss", "k3", lambda r: r["relative_error"] > EXACT),
    ),
    SequenceClaim(
        "seq_k3_reward_biased",
        SHAH,
        "k3 in the reward (reward-to-go) gives a biased gradient of KL(π‖π_ref)",
        "E[k3] = KL per token, but the score-function gradient of E[k3] is not that of "
        "E[k1]: E_π[k3 ∇log π] misses E_π[∇k3]. Tested per T, a(T) = 1: relative error > "
        f"{EXACT:g}.",
        _per_length("reward_to_go", "k3", lambda r: r["relative_error"] > EXACT),
    ),
    SequenceClaim(
        "seq_to_go_lower_variance",
        SHAH,
        "the reward-to-go has the same expected gradient as the whole-sequence sum broadcast to "
        "every token, with lower variance",
        "The prefix Σ_{s<t} k_s is fixed given the prefix, so it adds a zero-mean term to each "
        "token's score: the same mean; whether it raises tr Cov depends on its covariance with "
        "the rest. Tested per estimator and T >= 2, a(T) = 1: equal means and tr Cov(to-go) < "
        "tr Cov(sum).",
        _to_go_variance,
    ),
    SequenceClaim(
        "seq_drgrpo_length_bias",
        DRGRPO,
        "seq_mean_token_mean (1/T_x) and Dr. GRPO's seq_mean_token_sum_norm (1/T, the maximum "
        "length) give different gradients only when the response lengths vary",
        "With every T_x = T the two weights coincide; with an eos the 1/T_x weight favours "
        "short responses. Tested on the eos model and the same tables without an eos, per T "
        f"and configuration: relative difference > {EXACT:g} exactly where Var[T_x] > 0.",
        _drgrpo,
    ),
)

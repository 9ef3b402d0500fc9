"""klest's verdicts on claims about framework KL terms when tokens come from a behaviour policy μ.

The panel is the off-policy study ``experiments/rl_offpolicy.toml``: softmax policy logits, a
reference, and behaviour policies μ at each target KL(μ‖π) (0: on-policy).
:func:`offpolicy_facts` gives one row per (KL term, KL(μ‖π)): every mirrored framework@version
default (``variant`` "default", the figure's frame) and the option / weighting
:data:`VARIANTS` the claims need, each with the verdict of
:func:`klest.gradients.penalty_gradient` (which KL its exact expected gradient equals, to
1e-9 relative, or "zero" / "neither") and its relative bias ‖E[∇] − ∇KL(π‖π_ref)‖ /
‖∇KL(π‖π_ref)‖. Each claim's ``test`` maps that frame to its units ``(where, holds, deciding
number, shown)``; :func:`klest.report.claims.evaluate_offpolicy_claims` makes the verdicts.

>>> frame = offpolicy_facts()
>>> OFFPOLICY_CLAIMS[2].test(frame)[0][:2]
('trl@0.26.0 grpo', True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from klest.gradients.offpolicy import VERDICT_RTOL
from klest.gradients.offpolicy_tables import offpolicy_summary
from klest.report.tables import offpolicy_table_markdown
from klest.rl.penalty import spec as rl_spec
from klest.studies.experiment import default_experiments_dir
from klest.studies.rl_studies import load_study, offpolicy_variant_table, run_study

__all__ = [
    "OFFPOLICY_CLAIMS",
    "OFFPOLICY_TITLE",
    "VARIANTS",
    "OffPolicyClaim",
    "offpolicy_facts",
    "offpolicy_preamble",
]

OFFPOLICY_TITLE = "Off-policy KL terms: klest's verdicts"
CONFIG = "rl_offpolicy"
RPG = (
    'Zhang et al. (2025), "On the Design of KL-Regularized Policy Gradient Algorithms for LLM '
    'Reasoning" (RPG)'
)
#: the frameworks whose default KL term is k3 in the loss, without an importance weight
K3_LOSS = ("verl", "trl", "skyrl", "oat", "open_instruct", "torchtune")
#: (release, kind, arguments of penalty_gradient) computed beside the defaults
VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("trl@0.26.0", "grpo", {"use_bias_correction_kl": True}),
    ("trl@1.9.0", "grpo", {"use_bias_correction_kl": True}),
    ("slime@0.3.1", "k1", {"use_unbiased_kl": True}),
    ("slime@0.3.1", "k3", {"weighting": "detached"}),  # the RPG table: slime's unclamped k1, k3
    ("slime@0.3.1", "k3", {"weighting": "differentiable"}),
    ("slime@0.3.1", "k1", {"weighting": "differentiable"}),
)

Unit = tuple[str, bool, float, str]


@dataclass(frozen=True)
class OffPolicyClaim:
    """A claim about off-policy KL terms: ``test(frame)`` lists its units (where, holds, the
    deciding number, how to show it) on a frame of :func:`offpolicy_facts`."""

    key: str
    source: str
    text: str
    why: str
    test: Callable[[pd.DataFrame], list[Unit]]


def offpolicy_facts(experiments_dir: str | Path | None = None) -> pd.DataFrame:
    """The defaults' rows (the study's frame, ``variant`` "default") and the :data:`VARIANTS`'
    rows, exact; ``attrs["summary_kl"]`` is the study's ``summary_kl``."""
    directory = Path(experiments_dir) if experiments_dir else default_experiments_dir()
    study = load_study(directory / f"{CONFIG}.toml")
    frame = pd.concat(
        [run_study(study).assign(variant="default"), offpolicy_variant_table(study, VARIANTS)],
        ignore_index=True,
    )
    frame.attrs["summary_kl"] = study.settings["summary_kl"]
    return frame


def offpolicy_preamble(frame: pd.DataFrame) -> str:
    """How the off-policy verdicts are reached, and the table of every default."""
    defaults = frame[frame["variant"] == "default"]
    kl = float(frame.attrs["summary_kl"])
    targets = ", ".join(f"{t:g}" for t in sorted(set(frame["kl_mu_pi"].round(12))))
    return (
        f"Each claim is tested on the policies of `experiments/{CONFIG}.toml`: tokens a ~ μ, "
        f"μ = softmax(z + t·d) with t set so that the mean KL(μ‖π) over the positions is each "
        f"of {targets} (0: on-policy, μ = π). The expected gradient of each KL term is exact "
        "(`klest.gradients.penalty_gradient`, enumeration of the vocabulary; nothing sampled); "
        f"its verdict is the KL whose gradient it equals to {VERDICT_RTOL:g} relative, "
        '"zero", or "neither"; the bias is ‖E[∇] − ∇KL(π‖π_ref)‖ / ‖∇KL(π‖π_ref)‖ over all '
        "positions. Each framework@version's default kind with its default options (an "
        "importance weight off where it needs a flag); the figure is "
        "`fig12_offpolicy_bias`, whose CSV holds every number below.\n\n"
        f"Every mirrored default, on-policy and at KL(μ‖π) = {kl:g}:\n\n"
        + offpolicy_table_markdown(offpolicy_summary(defaults, kl), anchors=_anchors(defaults))
    )


def _anchors(frame: pd.DataFrame) -> dict[str, str]:
    """Releases whose default term pulls toward another distribution than π_ref (prime-rl)."""
    out = {}
    for row in frame.drop_duplicates("release").itertuples():
        anchor = rl_spec(row.release, row.kind).anchor
        if not anchor.startswith("ref_logprob"):
            out[row.release] = (
                f"its penalty pulls toward μ (anchor: {anchor}), so its verdict and bias are "
                "against KL(π‖μ), whose gradient is 0 on-policy"
            )
    return out


def _rows(
    frame: pd.DataFrame, release: str, kind: str | None = None, variant: str = "default"
) -> pd.DataFrame:
    pick = (frame["release"] == release) & (frame["variant"] == variant)
    if kind is not None:
        pick &= frame["kind"] == kind
    return frame[pick].sort_values("kl_mu_pi")


def _split(rows: pd.DataFrame) -> tuple[str, float, pd.DataFrame]:
    """(on-policy verdict, on-policy bias, the off-policy rows); "missing" if absent."""
    on = rows[rows["kl_mu_pi"] == 0.0]
    if on.empty:
        return "missing", float("nan"), rows[rows["kl_mu_pi"] > 0]
    return (
        str(on["verdict"].iloc[0]),
        float(on["relative_bias"].iloc[0]),
        rows[rows["kl_mu_pi"] > 0],
    )


def _at(rows: pd.DataFrame, kl: float) -> str:
    near = rows[np.isclose(rows["kl_mu_pi"], kl, rtol=1e-9, atol=0.0)]
    if near.empty:
        return f"no row at KL(μ‖π) = {kl:g}"
    bias = float(near["relative_bias"].iloc[0])
    return f"{near['verdict'].iloc[0]}, bias {bias:.3g} at KL(μ‖π) = {kl:g}"


def _everywhere(rows: pd.DataFrame, verdict: str) -> tuple[bool, float, str]:
    """Whether ``rows`` (on- and off-policy) all have ``verdict``; the largest bias."""
    got = sorted(set(rows["verdict"]))
    worst = float(rows["relative_bias"].max()) if len(rows) else float("nan")
    ok = len(rows) > 0 and (rows["kl_mu_pi"] == 0.0).any() and got == [verdict]
    shown = f"{' / '.join(got) or 'no rows'} at all {len(rows)} KL(μ‖π), largest bias {worst:.2g}"
    return bool(ok), worst, shown


def _k3_uncorrected(frame: pd.DataFrame) -> list[Unit]:
    units = []
    defaults = frame[(frame["variant"] == "default") & frame["framework"].isin(K3_LOSS)]
    for row in defaults.drop_duplicates("release").itertuples():
        if row.placement != "loss" or rl_spec(row.release, row.kind).estimator != "k3":
            continue
        on, b0, off = _split(_rows(frame, row.release))
        kinds = sorted(set(off["verdict"]))
        x, b = off["kl_mu_pi"].to_numpy(), off["relative_bias"].to_numpy()
        grows = len(b) > 1 and bool(b[-1] > max(b0, b[0]))
        ok = on == "KL(ref||pi)" and kinds == ["neither"] and grows
        shown = f"on-policy {on} (bias {b0:.4g}); off-policy {' / '.join(kinds) or 'no rows'}"
        if len(b):
            shown += f", bias {b[0]:.4g} at KL(μ‖π) = {x[0]:g} and {b[-1]:.4g} at {x[-1]:g}"
            path = np.concatenate([[b0], b])
            if not np.all(np.diff(path) >= 0):  # the off-policy term can first cancel a little
                lowest = int(np.argmin(path))
                shown += f" (not monotone: lowest {path[lowest]:.4g} at {([0.0, *x])[lowest]:g})"
        units.append((f"{row.release} {row.kind}", ok, float(b[-1]) if len(b) else np.nan, shown))
    return units


def _nemo_rl(frame: pd.DataFrame) -> list[Unit]:
    kl = float(frame.attrs.get("summary_kl", frame["kl_mu_pi"].max()))
    units = []
    for release, expect in (("nemo_rl@0.7.0", "KL(pi||ref)"), ("nemo_rl@0.6.0", "KL(ref||pi)")):
        rows = _rows(frame, release)
        on, b0, off = _split(rows)
        shown = f"on-policy {on} (bias {b0:.3g}); off-policy {_at(off, kl)}"
        units.append((f"{release} k3", on == expect, b0, shown))
    return units


def _trl_bias_correction(frame: pd.DataFrame) -> list[Unit]:
    kl = float(frame.attrs.get("summary_kl", frame["kl_mu_pi"].max()))
    units = []
    for release in ("trl@0.26.0", "trl@1.9.0"):
        ok, worst, shown = _everywhere(
            _rows(frame, release, "grpo", "use_bias_correction_kl=True"), "KL(pi||ref)"
        )
        _, _, off = _split(_rows(frame, release, "grpo"))
        default_wrong = len(off) > 0 and "KL(pi||ref)" not in set(off["verdict"])
        shown = f"with the flag: {shown}; default (False): {_at(off, kl)}"
        units.append((f"{release} grpo", ok and default_wrong, worst, shown))
    return units


def _slime(frame: pd.DataFrame) -> list[Unit]:
    units = []
    defaults = frame[(frame["variant"] == "default") & (frame["framework"] == "slime")]
    for release in dict.fromkeys(defaults["release"]):
        on, b0, _ = _split(_rows(frame, release))
        units.append((f"{release} k1 (default)", on == "zero", b0,
                      f"on-policy {on} (bias {b0:.3g})"))  # fmt: skip
    ok, worst, shown = _everywhere(
        _rows(frame, "slime@0.3.1", "k1", "use_unbiased_kl=True"), "KL(pi||ref)"
    )
    units.append(("slime@0.3.1 k1, use_unbiased_kl=True", ok, worst, shown))
    return units


def _rpg(frame: pd.DataFrame) -> list[Unit]:
    units = []
    for kind, weighting, verdict in (
        ("k3", "detached", "KL(ref||pi)"),
        ("k3", "differentiable", "KL(pi||ref)"),
        ("k1", "differentiable", "KL(pi||ref)"),
    ):
        rows = _rows(frame, "slime@0.3.1", kind, f"weighting={weighting}")
        ok, worst, shown = _everywhere(rows, verdict)
        units.append((f"{weighting} ρ·{kind}", ok, worst, shown))
    return units


OFFPOLICY_CLAIMS: tuple[OffPolicyClaim, ...] = (
    OffPolicyClaim(
        "offpolicy_k3_loss",
        "TRL issue #3025 (GRPO's KL on tokens from π_old)",
        "without a correction, every default k3-in-the-loss term (verl low_var_kl, TRL grpo, "
        "SkyRL, oat, open-instruct, torchtune) follows ∇KL(ref‖π) on-policy and no KL "
        "off-policy, its bias at the largest KL(μ‖π) tested above both the on-policy bias "
        "and the bias at the smallest KL(μ‖π) > 0",
        "E_π[∇k3] = ∇KL(π_ref‖π); with a ~ μ ≠ π and no weight the expectation is E_μ[∇k3], the "
        "gradient of neither KL. Tested per release: KL(ref||pi) on-policy, neither at every "
        "KL(μ‖π) > 0, and a larger bias at the largest KL(μ‖π) than on-policy and at the "
        "smallest KL(μ‖π) > 0 (a path that first dips is marked not monotone).",
        _k3_uncorrected,
    ),
    OffPolicyClaim(
        "offpolicy_nemo_rl_weight",
        "NeMo-RL PR #2506 (v0.7.0 release notes)",
        "NeMo-RL 0.7.0's differentiable weight makes its default k3 follow ∇KL(π‖ref) "
        "on-policy, where 0.6.0 followed ∇KL(ref‖π)",
        "v0.7.0 multiplies k3 by w = exp(lp − sg(lp)) (1 in value) when no generation "
        "log-probabilities are used: ∇(w·k3) = (k3 + k3′)∇lp = k1·∇lp, the score-function "
        "form of ∇KL(π‖ref); v0.6.0's weight is detached and off by default. Off-policy "
        "neither corrects for μ ≠ π without use_on_policy_kl_approximation.",
        _nemo_rl,
    ),
    OffPolicyClaim(
        "offpolicy_trl_bias_correction",
        "TRL PR #4638 (use_bias_correction_kl, from v0.26.0)",
        "TRL grpo with use_bias_correction_kl=True follows ∇KL(π‖ref) exactly at every "
        "KL(μ‖π), while the default (False) does not",
        "The flag multiplies k3 by the differentiable ratio ρ = π/π_old: E_μ[∇(ρ·k3)] = "
        "E_π[(k3 + k3′)∇log π] = ∇KL(π‖ref). Tested per release: the flag's verdict "
        "KL(pi||ref) at every KL(μ‖π) (0 included), the default's never.",
        _trl_bias_correction,
    ),
    OffPolicyClaim(
        "offpolicy_slime_k1",
        'slime commit cfad76e4, "Add unbiased KL estimation from DeepSeek-V3.2" (v0.2.1)',
        "slime's default k1 in the loss has zero expected gradient on-policy, and "
        "use_unbiased_kl=True restores ∇KL(π‖ref)",
        "E_π[∇k1] = E_π[∇log π] = 0. The flag multiplies k1 by exp(lp − old_lp), "
        "differentiable: E_μ[∇(ρ·k1)] = E_π[(1 + k1)∇log π] = ∇KL(π‖ref), at every KL(μ‖π).",
        _slime,
    ),
    OffPolicyClaim(
        "offpolicy_rpg_table",
        RPG,
        "detached ρ·k3 follows ∇KL(ref‖π); differentiable ρ·k3 and ρ·k1 follow ∇KL(π‖ref), "
        "whatever the behaviour policy",
        "A detached ρ turns E_μ into E_π: E_π[∇k3] = ∇KL(π_ref‖π). A differentiable ρ adds the "
        "score term: E_π[(k + k′)∇log π] = ∇E_π[k] = ∇KL(π‖ref) for k1 and k3 (the "
        "unnormalised KLs equal the KLs for normalised softmax policies). klest: the "
        "weighting= variants of slime@0.3.1's unclamped k1 and k3 in the loss.",
        _rpg,
    ),
)

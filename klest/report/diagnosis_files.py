"""``klest diagnose LOGS --out DIR``: a :class:`klest.diagnostics.Diagnosis` written out as
``report.md`` (the summary table, verdicts, mismatch, recommendation), ``summary.json``
(:meth:`Diagnosis.to_json`) and figures (``histograms.png``/``.pdf``: l and each
estimator's per-token values; ``tail.png``/``.pdf``: the largest ratios r with the fitted
Pareto tail; ``tail_rho_rollout`` / ``tail_rho_old``: the same for the importance weights
ρ = π/μ when the logs have ``rollout_logprob`` / ``old_logprob``). Every file is written
atomically (a temporary file, then a rename).

>>> import tempfile
>>> import numpy as np, pandas as pd
>>> from klest.diagnostics import diagnose
>>> rng = np.random.default_rng(0)
>>> lp = -1.0 - rng.random(2000)
>>> logs = pd.DataFrame({"sequence": np.repeat(np.arange(100), 20), "logprob": lp,
...                      "ref_logprob": lp + 0.1 * rng.standard_normal(2000)})
>>> with tempfile.TemporaryDirectory() as out:
...     sorted(p.name for p in write_diagnosis(diagnose(logs), out))
['histograms.pdf', 'histograms.png', 'report.md', 'summary.json', 'tail.pdf', 'tail.png']
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from klest.report.figure_files import PNG_DPI, _atomic
from klest.report.plots_diagnosis import plot_histograms, plot_tail
from klest.report.style import paper_style

__all__ = ["diagnosis_markdown", "write_diagnosis"]

#: the summary columns report.md shows, in this order (others stay in summary.json)
REPORT_COLUMNS = (
    "estimator", "level", "estimate", "se", "khat", "finite_variance", "negative_fraction",
    "nonfinite", "clamp_fraction", "verdict",
)  # fmt: skip


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    return str(value)


def _table(frame: pd.DataFrame) -> list[str]:
    columns = [c for c in REPORT_COLUMNS if c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    return lines


def diagnosis_markdown(diagnosis: Any, *, source: str = "") -> str:
    """The text of report.md."""
    meta = dict(diagnosis.meta)
    lines = ["# klest diagnose", ""]
    if source:
        lines += [f"Logs: `{source}`", ""]
    facts = ", ".join(f"{k} {v}" for k, v in meta.items() if isinstance(v, int | float | str))
    if facts:
        lines += [f"Read: {facts}.", ""]
    lines += [
        "KL(π‖π_ref) by every estimator, token level (mean over tokens) and sequence level "
        "(mean over sequences of the per-sequence sum), with standard errors clustered by "
        "sequence. k̂ is the PSIS Pareto shape of the estimator's tail: below 0.5 the "
        "variance is finite and the error bar means what it says; at or above 0.5 it does "
        "not (the se is then not shown).",
        "",
        *_table(diagnosis.summary),
        "",
    ]
    if diagnosis.mismatch:
        lines += ["## Behaviour / trainer mismatch", ""]
        lines += [f"- {k}: {_cell(v)}" for k, v in diagnosis.mismatch.items()]
        lines.append("")
    lines += ["## Recommendation", "", diagnosis.recommendation, ""]
    lines += ["## Figures", "", "![histograms](histograms.png)", "", "![tail](tail.png)", ""]
    for weight in ("rollout", "old"):
        if diagnosis.tail.get(f"rho_{weight}"):
            lines += [f"![rho tail](tail_rho_{weight}.png)", ""]
    return "\n".join(lines)


def _figure(fig: Any, directory: Path, name: str) -> list[Path]:
    png, pdf = directory / f"{name}.png", directory / f"{name}.pdf"
    with paper_style():
        _atomic(png, lambda tmp: fig.savefig(tmp, format="png", dpi=PNG_DPI))
        _atomic(pdf, lambda tmp: fig.savefig(tmp, format="pdf"))
    return [png, pdf]


def write_diagnosis(diagnosis: Any, out: str | Path, *, source: str = "") -> list[Path]:
    """Write report.md, summary.json and the figures into ``out`` (created); the paths."""
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(diagnosis.to_json(), indent=2, allow_nan=False) + "\n"
    paths = [_atomic(directory / "summary.json", lambda tmp: tmp.write_text(text, "utf-8"))]
    md = diagnosis_markdown(diagnosis, source=source)
    paths.append(_atomic(directory / "report.md", lambda tmp: tmp.write_text(md, "utf-8")))
    paths += _figure(plot_histograms(diagnosis.samples), directory, "histograms")
    paths += _figure(plot_tail(diagnosis.tail), directory, "tail")
    for weight in ("rollout", "old"):  # the importance weights' tails, when logged
        tail = diagnosis.tail.get(f"rho_{weight}")
        if tail is not None and len(tail.get("values", ())):
            title = f"tail of rho = pi / mu ({weight} log-probs): k̂ < 0.5, finite variance"
            paths += _figure(plot_tail(tail, title=title), directory, f"tail_rho_{weight}")
    return paths

"""Tidy DataFrame in, table text out (no computation, no files).

Where a row's ``error_bar`` (``error_bar_std``) column says the standard error of the mean
(of the std) is withheld, the cell shows the estimate marked ``(no ±)`` and the row's note
says why; where draws were non-finite, the case table gets a ``non-finite`` column.
:func:`experiment_table` (``table.md``, written by the results store) and its cell formats
live in :mod:`klest.studies.table_text` and are re-exported here.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from klest.studies.config import LAYOUTS, QUANTITIES
from klest.studies.table_text import (
    ERROR_BAR_COLUMNS,
    NO_ERROR_BAR,
    _cell,
    _has_nonfinite,
    _nonfinite_cell,
    _withheld,
    estimate_cell,
    experiment_table,
)

__all__ = [
    "ERROR_BAR_COLUMNS",
    "LAYOUTS",
    "NO_ERROR_BAR",
    "QUANTITIES",
    "claims_markdown",
    "estimate_cell",
    "experiment_table",
    "frame_markdown",
    "monte_carlo_table",
    "offpolicy_table_markdown",
    "schulman_table",
]


def schulman_table(
    frame: pd.DataFrame,
    *,
    case: str = "case",
    bias: str = "exact_rel_bias",
    std: str = "exact_rel_std",
) -> str:
    """Schulman's layout as Markdown: one row per estimator, bias/true and stdev/true per case.

    >>> df = pd.DataFrame({"case": ["A", "A"], "estimator": ["k1", "k3"],
    ...                    "exact_rel_bias": [0.0, 0.0], "exact_rel_std": [20.0, 1.417]})
    >>> print(schulman_table(df))
    | estimator | A: bias/true | A: stdev/true |
    |---|---|---|
    | k1 | 0 | 20 |
    | k3 | 0 | 1.417 |
    """
    cases = list(dict.fromkeys(frame[case]))
    header = ["estimator"]
    for label in cases:
        header += [f"{label}: bias/true", f"{label}: stdev/true"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in dict.fromkeys(frame["estimator"]):
        row = [str(name)]
        for label in cases:
            sel = frame[(frame[case] == label) & (frame["estimator"] == name)]
            if sel.empty:
                row += ["", ""]
            else:
                row += [_cell(float(sel[bias].iloc[0])), _cell(float(sel[std].iloc[0]))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _pm(value: float, error: float, withheld: bool = False) -> str:
    if withheld:
        return f"{_cell(value)} {NO_ERROR_BAR}"
    if not (math.isfinite(value) and math.isfinite(error)):
        return _cell(value)
    return f"{_cell(value)} ± {error:.2g}"


def monte_carlo_table(frame: pd.DataFrame, *, case: str = "case") -> str:
    """Monte Carlo bias/true and stdev/true (± one standard error) beside the exact values.

    ``frame`` is ``SimulationResult.to_frame()`` output (several cases stacked, with a
    ``case`` column).

    >>> df = pd.DataFrame({"case": ["A"], "estimator": ["k3"], "truth": [0.5],
    ...     "rel_bias": [0.001], "se_mean": [0.0005], "rel_std": [1.69], "se_std": [0.001],
    ...     "exact_rel_bias": [0.0], "exact_rel_std": [1.695]})
    >>> print(monte_carlo_table(df))
    | case | estimator | bias/true (MC) | bias/true (exact) | stdev/true (MC) | stdev/true (exact) |
    |---|---|---|---|---|---|
    | A | k3 | 0.001 ± 0.001 | 0 | 1.69 ± 0.002 | 1.695 |

    A withheld error bar (``error_bar`` / ``error_bar_std`` not "ok") is marked (and a
    ``non-finite`` column appears when some draws were non-finite):

    >>> df["error_bar"], df["error_bar_std"] = ["infinite variance"], ["infinite variance"]
    >>> print(monte_carlo_table(df).splitlines()[-1])
    | A | k3 | 0.001 (no ±) | 0 | 1.69 (no ±) | 1.695 |
    """
    header = [
        "case", "estimator", "bias/true (MC)", "bias/true (exact)",
        "stdev/true (MC)", "stdev/true (exact)",
    ]  # fmt: skip
    nonfinite = _has_nonfinite(frame)
    if nonfinite:
        header.append("non-finite")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        truth = abs(float(row["truth"]))
        with np.errstate(divide="ignore", invalid="ignore"):
            errors = [np.divide(float(row[c]), truth) for c in ("se_mean", "se_std")]
        cells = [
            str(row[case]),
            str(row["estimator"]),
            _pm(float(row["rel_bias"]), float(errors[0]), _withheld(row, "se_mean")),
            _cell(float(row["exact_rel_bias"])),
            _pm(float(row["rel_std"]), float(errors[1]), _withheld(row, "se_std")),
            _cell(float(row["exact_rel_std"])),
        ]
        if nonfinite:
            cells.append(_nonfinite_cell(row))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def claims_markdown(frame: pd.DataFrame, *, title: str = "Claims", preamble: str = "") -> str:
    """Verdicts on claims as Markdown: a summary table, then one section per claim.

    ``frame`` has columns ``claim source verdict evidence holds_for fails_for`` (the last two
    lists of strings), as :func:`klest.report.claims.evaluate_claims` returns.

    >>> df = pd.DataFrame({"claim": ["k3 is unbiased"], "source": ["A (2025)"],
    ...     "verdict": ["true"], "evidence": ["E_q[r] = 1."], "holds_for": [["N: bias 0"]],
    ...     "fails_for": [[]]})
    >>> print(claims_markdown(df, title="T"))
    # T
    <BLANKLINE>
    Sources: [A] A (2025)
    <BLANKLINE>
    | # | claim | source | verdict | holds for |
    |---|---|---|---|---|
    | 1 | k3 is unbiased | [A] | **true** | 1 of 1 |
    <BLANKLINE>
    ## 1. k3 is unbiased: true
    <BLANKLINE>
    Source: [A] A (2025)
    <BLANKLINE>
    E_q[r] = 1.
    <BLANKLINE>
    Holds for (1):
    - N: bias 0
    <BLANKLINE>
    Fails for: none

    A frame may carry ``attrs["sections"]`` = {row index: (heading, text)}: from that row on the
    claims form a new part, under ``# heading`` and its text, with its own sources line and
    summary table (claim numbers and source letters continue).
    """
    sources = {src: chr(ord("A") + i) for i, src in enumerate(dict.fromkeys(frame["source"]))}
    starts = {0: (title, preamble), **dict(frame.attrs.get("sections", {}))}
    bounds = [*sorted(starts), len(frame)]
    parts = []
    for begin, end in itertools.pairwise(bounds):
        heading, text = starts[begin]
        parts += _claims_part(frame.iloc[begin:end], begin, heading, text, sources)
    return "\n\n".join(parts) + "\n"


def _claims_part(
    frame: pd.DataFrame, offset: int, title: str, preamble: str, sources: dict[str, str]
) -> list[str]:
    parts = [f"# {title}"]
    if preamble:
        parts.append(preamble)
    here = dict.fromkeys(frame["source"])
    parts.append("Sources: " + "; ".join(f"[{sources[src]}] {src}" for src in here))
    lines = ["| # | claim | source | verdict | holds for |", "|---|---|---|---|---|"]
    for i, row in enumerate(frame.itertuples(index=False), start=offset + 1):
        total = len(row.holds_for) + len(row.fails_for)
        claim = str(row.claim).replace("|", "\\|")  # a literal | would split the cell
        lines.append(f"| {i} | {claim} | [{sources[row.source]}] | **{row.verdict}** | "
                     f"{len(row.holds_for)} of {total} |")  # fmt: skip
    parts.append("\n".join(lines))
    for i, row in enumerate(frame.itertuples(index=False), start=offset + 1):
        section = [f"## {i}. {row.claim}: {row.verdict}",
                   f"Source: [{sources[row.source]}] {row.source}", str(row.evidence)]  # fmt: skip
        for heading, items in (("Holds for", row.holds_for), ("Fails for", row.fails_for)):
            if items:
                section.append(f"{heading} ({len(items)}):\n" + "\n".join(f"- {t}" for t in items))
            else:
                section.append(f"{heading}: none")
        parts.append("\n\n".join(section))
    return parts


def offpolicy_table_markdown(summary: pd.DataFrame, anchors: dict[str, str] | None = None) -> str:
    """The off-policy table as Markdown: per framework@version default, its kind, placement,
    source commit, the KL its gradient follows on- and off-policy, and the relative bias at
    the stated KL(μ‖π) (``summary`` from
    :func:`klest.gradients.offpolicy_tables.offpolicy_summary`); ``anchors`` adds a note per
    release (e.g. a penalty whose reference is not π_ref).

    >>> df = pd.DataFrame({"release": ["trl@1.9.0"], "commit": ["35def3ee000a"],
    ...     "kind": ["grpo"], "placement": ["loss"], "on_policy": ["KL(ref||pi)"],
    ...     "off_policy": ["neither"], "kl_mu_pi": [0.1], "relative_bias": [0.463]})
    >>> print(offpolicy_table_markdown(df))
    | framework@version | kind | placement | commit | on-policy | KL(μ‖π) = 0.1 | bias at 0.1 |
    |---|---|---|---|---|---|---|
    | trl@1.9.0 | grpo | loss | 35def3ee000a | KL(ref\\|\\|pi) | neither | 0.463 |
    """
    kl = float(summary["kl_mu_pi"].iloc[0]) if len(summary) else float("nan")
    header = ["framework@version", "kind", "placement", "commit", "on-policy",
              f"KL(μ‖π) = {kl:g}", f"bias at {kl:g}"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for row in summary.itertuples(index=False):
        name = str(row.release)
        if anchors and name in anchors:
            notes.append(f"{len(notes) + 1}. {name}: {anchors[name]}.")
            name += f" ({len(notes)})"
        cells = [name, str(row.kind), str(row.placement), str(row.commit), str(row.on_policy),
                 str(row.off_policy), f"{float(row.relative_bias):.3g}"]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines + (["", *notes] if notes else []))


def frame_markdown(frame: pd.DataFrame, headers: dict[str, str], digits: int = 3) -> str:
    """``frame``'s columns ``headers`` (column -> header) as a Markdown table: numbers to
    ``digits`` significant digits (NaN as "—"), text with ``|`` escaped.

    >>> df = pd.DataFrame({"T": [2], "verdict": ["KL(pi||ref)"], "err": [0.123456]})
    >>> print(frame_markdown(df, {"T": "length", "verdict": "verdict", "err": "error"}))
    | length | verdict | error |
    |---|---|---|
    | 2 | KL(pi\\|\\|ref) | 0.123 |
    """

    def cell(value: object) -> str:
        if isinstance(value, float | np.floating):
            return "—" if math.isnan(value) else f"{value:.{digits}g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers.values()) + " |", "|" + "---|" * len(headers)]
    for row in frame[list(headers)].itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)

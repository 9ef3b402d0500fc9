"""Tidy DataFrame in, table text out (no computation, no files).

Where a row's ``error_bar`` (``error_bar_std``) column says the standard error of the mean
(of the std) is withheld, the cell shows the estimate marked ``(no ±)`` and the row's note
says why; where draws were non-finite, the case table gets a ``non-finite`` column.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "QUANTITIES",
    "claims_markdown",
    "estimate_cell",
    "experiment_table",
    "monte_carlo_table",
    "schulman_table",
]


def _cell(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.{digits}g}"
    return "0" if text in ("-0", "0") or abs(value) < 1e-12 else text


def _number(value: float, digits: int) -> str:
    """``value`` to ``digits`` significant digits, never rounded to 0 (a parameter or a true
    value of 1e-160 is not 0; only an estimate's rounding noise is shown as 0, by _cell).

    >>> _number(1e-160, 6), _number(-0.0, 6), _number(0.125, 2)
    ('1e-160', '0', '0.12')
    """
    if math.isnan(value) or math.isinf(value):
        return _cell(value)
    return "0" if value == 0 else f"{value:.{digits}g}"


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


#: marks an estimate whose error bar is withheld (the row's note says why)
NO_ERROR_BAR = "(no ±)"
#: the column saying whether an error-bar column is valid ("ok") or why it is withheld
ERROR_BAR_COLUMNS = {"se_mean": "error_bar", "se_std": "error_bar_std"}


def _withheld(row: pd.Series, se_column: str) -> bool:
    """Whether ``row`` says the error bar in ``se_column`` does not exist (or is unreliable)."""
    status = row.get(ERROR_BAR_COLUMNS.get(se_column, ""), None)
    return isinstance(status, str) and status not in ("", "ok", "nan")


def _pm(value: float, error: float, withheld: bool = False) -> str:
    if withheld:
        return f"{_cell(value)} {NO_ERROR_BAR}"
    if not (math.isfinite(value) and math.isfinite(error)):
        return _cell(value)
    return f"{_cell(value)} ± {error:.2g}"


def _nonfinite_cell(row: pd.Series) -> str:
    """The share of non-finite draws of a row, with their kinds: "49.9% (+inf)"."""
    share = float(row.get("frac_nonfinite", 0.0) or 0.0)
    if not share > 0:
        return "0"
    kinds = [sign for sign, column in (("+inf", "n_posinf"), ("-inf", "n_neginf"),
             ("NaN", "n_nan")) if float(row.get(column, 0) or 0) > 0]  # fmt: skip
    return f"{share:.3g}" if not kinds else f"{100 * share:.3g}% ({', '.join(kinds)})"


def _has_nonfinite(frame: pd.DataFrame) -> bool:
    if "frac_nonfinite" not in frame.columns:
        return False
    return bool((pd.to_numeric(frame["frac_nonfinite"], errors="coerce").fillna(0) > 0).any())


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


#: table quantity -> (Monte Carlo column, standard-error column, exact column, relative):
#: a relative quantity's standard error is divided by |true value|
QUANTITIES: dict[str, tuple[str, str, str, bool]] = {
    "mean": ("mean", "se_mean", "exact_mean", False),
    "bias": ("bias", "se_mean", "exact_bias", False),
    "stdev": ("std", "se_std", "exact_std", False),
    "bias/true": ("rel_bias", "se_mean", "exact_rel_bias", True),
    "stdev/true": ("rel_std", "se_std", "exact_rel_std", True),
}
LAYOUTS = ("cases", "long")


def estimate_cell(value: float, error: float, digits: int = 4) -> str:
    """``value ± error``, the value rounded where the error's second significant digit sits.

    >>> estimate_cell(0.0023881, 0.00045)
    '0.00239 ± 0.00045'
    >>> estimate_cell(19.99871, 0.0045)
    '19.9987 ± 0.0045'
    >>> estimate_cell(1.5, float("nan"))
    '1.5'
    """
    if not (math.isfinite(value) and math.isfinite(error)) or error < 0:
        return _cell(value, digits)
    if error == 0:
        return f"{_cell(value, digits)} ± 0"
    decimals = 1 - math.floor(math.log10(error))
    if decimals > 12 or max(abs(value), error) >= 1e6:
        return f"{_cell(value, digits)} ± {error:.2g}"
    places = max(decimals, 0)
    shown = round(value, decimals)
    text = f"{shown:.{places}f}"
    if text.lstrip("-").strip("0.") == "":  # rounds to zero: no "-0.000"
        text = text.lstrip("-")
    return f"{text} ± {round(error, decimals):.{places}f}"


#: array parameters longer than this are summarised in case headers
ARRAY_SHOWN = 8


def _parameter(value: object) -> str:
    """A parameter for a case header; a long array (JSON text in the tidy frame) as its
    length, first values, range and a short hash instead of every entry.

    >>> _parameter("[0.5, 0.25, 0.25]")
    '[0.5, 0.25, 0.25]'
    >>> _parameter(json.dumps(list(range(2000))))
    '[2,000 values: 0, 1, 2, ...; min 0, max 1999; sha256 2eaa447f]'
    """
    if isinstance(value, float):
        return _number(value, 6)
    text = str(value)
    if not text.startswith("["):
        return text
    try:
        flat = np.asarray(json.loads(text), dtype=np.float64).ravel()
    except (ValueError, TypeError):
        return text
    if flat.size <= ARRAY_SHOWN:
        return text
    digest = hashlib.sha256(flat.tobytes()).hexdigest()[:8]  # of the float64 values
    head = ", ".join(_number(float(v), 4) for v in flat[:3])
    with np.errstate(invalid="ignore"):
        low, high = _number(float(np.min(flat)), 4), _number(float(np.max(flat)), 4)
    return f"[{flat.size:,} values: {head}, ...; min {low}, max {high}; sha256 {digest}]"


def _describe(row: pd.Series, which: str) -> str:
    prefix = f"{which}."
    family = row.get(f"{which}.family", "")
    params = []
    for column, value in row.items():
        name = str(column)
        if not name.startswith(prefix) or name == f"{which}.family":
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        params.append(f"{name[len(prefix) :]}={_parameter(value)}")
    return f"{family}({', '.join(params)})"


def _truths(rows: pd.DataFrame, digits: int) -> str:
    groups: dict[tuple[str, str], list[str]] = {}
    for _, row in rows.iterrows():
        key = (str(row["target"]), _number(float(row["truth"]), digits))
        groups.setdefault(key, []).append(str(row["estimator"]))
    if len(groups) == 1:
        (target, truth), _ = next(iter(groups.items()))
        return f"true {target} = {truth}"
    return "true values: " + "; ".join(
        f"{target} = {truth} ({', '.join(names)})" for (target, truth), names in groups.items()
    )


def _quantity_cells(row: pd.Series, quantity: str, digits: int) -> list[str]:
    column, se_column, exact_column, relative = QUANTITIES[quantity]
    error = float(row[se_column])
    if relative:
        truth = abs(float(row["truth"]))
        error = error / truth if 0 < truth < math.inf else math.nan
    exact = float(row[exact_column]) if exact_column in row.index else math.nan
    if _withheld(row, se_column):
        estimate = f"{_cell(float(row[column]), digits)} {NO_ERROR_BAR}"
    else:
        estimate = estimate_cell(float(row[column]), error, digits)
    return [estimate, _cell(exact, digits)]


def _noted(row: pd.Series, notes: list[str], label: str) -> str:
    """The estimator's name, with a reference "[k]" to its note appended to ``notes``."""
    name = str(row["estimator"])
    note = str(row.get("note", "") or "")
    if note and note != "nan":
        notes.append(f"[{len(notes) + 1}] {label}: {note}")
        name = f"{name} [{len(notes)}]"
    return name


def experiment_table(
    frame: pd.DataFrame,
    *,
    title: str | None = None,
    columns: Sequence[str] = ("bias/true", "stdev/true"),
    digits: int = 4,
    layout: str = "cases",
) -> str:
    """An experiment's tidy results as Markdown, in Schulman's format with errors and exact values.

    ``layout="cases"``: one small table per case (estimators as rows), headed by the case
    label, q, p, the true value(s) and the number of draws, with notes on unreliable numbers
    below it; ``layout="long"``: one table with a row per case and estimator. Each quantity of
    ``columns`` (keys of :data:`QUANTITIES`) shows the Monte Carlo estimate ± one standard error
    and, beside it, the exact value ("nan" where klest has none).

    >>> df = pd.DataFrame({"case": ["A"], "estimator": ["k3"], "target": ["KL(q||p)"],
    ...     "truth": [0.5], "rel_bias": [0.001], "se_mean": [0.0005], "rel_std": [1.69],
    ...     "se_std": [0.001], "exact_rel_bias": [0.0], "exact_rel_std": [1.695], "note": [""],
    ...     "n_draws": [10**6], "q.family": ["normal"], "q.loc": [0.0], "q.scale": [1.0],
    ...     "p.family": ["normal"], "p.loc": [1.0], "p.scale": [1.0]})
    >>> print(experiment_table(df))
    ### A
    <BLANKLINE>
    q = normal(loc=0, scale=1), p = normal(loc=1, scale=1); true KL(q||p) = 0.5; n = 1,000,000
    <BLANKLINE>
    | estimator | bias/true | exact | stdev/true | exact |
    |---|---|---|---|---|
    | k3 | 0.0010 ± 0.0010 | 0 | 1.6900 ± 0.0020 | 1.695 |
    """
    unknown = [c for c in columns if c not in QUANTITIES]
    if unknown or layout not in LAYOUTS:
        bad = f"columns {unknown}" if unknown else f"layout {layout!r}"
        raise ValueError(f"unknown table {bad}; known: {list(QUANTITIES)}, layouts {LAYOUTS}")
    header = ["estimator"]
    for quantity in columns:
        header += [quantity, "exact"]
    parts = [f"# {title}"] if title else []
    if layout == "long":
        nonfinite = _has_nonfinite(frame)
        wide = header + (["non-finite"] if nonfinite else [])
        lines = ["| case " + "| " + " | ".join(wide) + " |", "|" + "---|" * (len(wide) + 1)]
        notes: list[str] = []
        for _, row in frame.iterrows():
            name = _noted(row, notes, f"{row['case']}, {row['estimator']}")
            cells = [str(row["case"]), name]
            for quantity in columns:
                cells += _quantity_cells(row, quantity, digits)
            if nonfinite:
                cells.append(_nonfinite_cell(row))
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
        if notes:
            parts.append("\n".join(notes))
        return "\n\n".join(parts)
    for label in dict.fromkeys(frame["case"]):
        rows = frame[frame["case"] == label]
        first = rows.iloc[0]
        context = [
            f"q = {_describe(first, 'q')}, p = {_describe(first, 'p')}",
            _truths(rows, digits),
        ]
        if "n_draws" in rows.columns:
            context.append(f"n = {int(first['n_draws']):,}")
        nonfinite = _has_nonfinite(rows)
        wide = header + (["non-finite"] if nonfinite else [])
        lines = ["| " + " | ".join(wide) + " |", "|" + "---|" * len(wide)]
        notes = []
        for _, row in rows.iterrows():
            cells = [_noted(row, notes, str(row["estimator"]))]
            for quantity in columns:
                cells += _quantity_cells(row, quantity, digits)
            if nonfinite:
                cells.append(_nonfinite_cell(row))
            lines.append("| " + " | ".join(cells) + " |")
        section = [f"### {label}", "; ".join(context), "\n".join(lines)]
        if notes:
            section.append("\n".join(notes))
        parts.append("\n\n".join(section))
    return "\n\n".join(parts)


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
    """
    sources = {src: chr(ord("A") + i) for i, src in enumerate(dict.fromkeys(frame["source"]))}
    parts = [f"# {title}"]
    if preamble:
        parts.append(preamble)
    parts.append("Sources: " + "; ".join(f"[{key}] {src}" for src, key in sources.items()))
    lines = ["| # | claim | source | verdict | holds for |", "|---|---|---|---|---|"]
    for i, row in enumerate(frame.itertuples(index=False), start=1):
        total = len(row.holds_for) + len(row.fails_for)
        claim = str(row.claim).replace("|", "\\|")  # a literal | would split the cell
        lines.append(f"| {i} | {claim} | [{sources[row.source]}] | **{row.verdict}** | "
                     f"{len(row.holds_for)} of {total} |")  # fmt: skip
    parts.append("\n".join(lines))
    for i, row in enumerate(frame.itertuples(index=False), start=1):
        section = [f"## {i}. {row.claim}: {row.verdict}",
                   f"Source: [{sources[row.source]}] {row.source}", str(row.evidence)]  # fmt: skip
        for heading, items in (("Holds for", row.holds_for), ("Fails for", row.fails_for)):
            if items:
                section.append(f"{heading} ({len(items)}):\n" + "\n".join(f"- {t}" for t in items))
            else:
                section.append(f"{heading}: none")
        parts.append("\n\n".join(section))
    return "\n\n".join(parts) + "\n"

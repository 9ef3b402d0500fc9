"""The Markdown table of an experiment's tidy frame (``table.md``, as ``klest run`` prints it).

Rendering only (no computation, no files): :func:`experiment_table` and the cell formats it
shares with :mod:`klest.report.tables`, which re-exports them. It lives in ``studies`` because
the results store writes ``table.md``; the table's vocabulary (``QUANTITIES``, ``LAYOUTS``) is
the config's (:mod:`klest.studies.config`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from klest.studies.config import LAYOUTS, QUANTITIES

__all__ = ["ERROR_BAR_COLUMNS", "NO_ERROR_BAR", "estimate_cell", "experiment_table"]


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


#: marks an estimate whose error bar is withheld (the row's note says why)
NO_ERROR_BAR = "(no ±)"
#: the column saying whether an error-bar column is valid ("ok") or why it is withheld
ERROR_BAR_COLUMNS = {"se_mean": "error_bar", "se_std": "error_bar_std"}


def _withheld(row: pd.Series, se_column: str) -> bool:
    """Whether ``row`` says the error bar in ``se_column`` does not exist (or is unreliable)."""
    status = row.get(ERROR_BAR_COLUMNS.get(se_column, ""), None)
    return isinstance(status, str) and status not in ("", "ok", "nan")


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

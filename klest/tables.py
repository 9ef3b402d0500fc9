"""Tidy DataFrame in, table text out (no computation, no files)."""

from __future__ import annotations

import math

import pandas as pd

__all__ = ["monte_carlo_table", "schulman_table"]


def _cell(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = f"{value:.{digits}g}"
    return "0" if text in ("-0", "0") or abs(value) < 1e-12 else text


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


def _pm(value: float, error: float) -> str:
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
    """
    header = [
        "case", "estimator", "bias/true (MC)", "bias/true (exact)",
        "stdev/true (MC)", "stdev/true (exact)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in frame.iterrows():
        truth = abs(float(row["truth"]))
        lines.append(
            "| "
            + " | ".join(
                [
                    str(row[case]),
                    str(row["estimator"]),
                    _pm(float(row["rel_bias"]), float(row["se_mean"]) / truth),
                    _cell(float(row["exact_rel_bias"])),
                    _pm(float(row["rel_std"]), float(row["se_std"]) / truth),
                    _cell(float(row["exact_rel_std"])),
                ]
            )
            + " |"
        )
    return "\n".join(lines)

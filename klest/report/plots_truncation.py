"""The truncated-sampling figure: tidy DataFrame in, matplotlib Figure out (never saved).

:func:`plot_truncation_bias` draws the frame of the ``truncation_bias`` study
(:func:`klest.studies.truncation_study.truncation_frame`): for each policy pair (a row of
panels) the exact bias against KL(π‖π_ref) of each estimator's mean under truncated
sampling, against top_p (left) and top_k (right), one line style per log-prob mode, with log S
(the bias of the importance log-ratio from renormalised log-probs) in grey.

>>> from klest.studies.checks import _Checker
>>> from klest.studies.truncation_study import parse_truncation, truncation_frame
>>> raw = {"study": "truncation_bias", "vocab": 50, "top_p": [0.5, 1.0], "top_k": [1, 50],
...        "pairs": [{"name": "z", "policy": {"zipf": 1.2}, "reference": {}}]}
>>> fig = plot_truncation_bias(truncation_frame(parse_truncation(_Checker("<c>", raw))))
>>> [ax.get_xscale() for ax in fig.axes]
['linear', 'log']
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from klest.report.style import estimator_style, paper_style

__all__ = ["MODE_LABELS", "plot_truncation_bias"]

#: how each log-prob mode is named in the legend, and its line style
MODE_LABELS = {
    "raw": ("trainer's log-probs (logged KL, KL penalty)", "-"),
    "renormalised": ("engine's renormalised log-prob for π", ":"),
    "kept_mask": ("both replayed on the kept set (keep sampling mask)", "--"),
}
_RULES = {"top_p": "top_p", "top_k": "top_k (log axis)"}
_LINTHRESH = 1e-2  # nats: the symlog axis is linear within ±0.01


def plot_truncation_bias(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Bias E_μ[k] − KL(π‖π_ref) (nats, symlog axis) of each estimator x log-prob mode against
    the truncation setting, one row per pair, and log S (grey). Reads ``pair rule value mode
    estimator bias_vs_kl_pi_ref log_surviving_mass kl_pi_ref``."""
    pairs = list(dict.fromkeys(frame["pair"]))
    rules = [r for r in _RULES if (frame["rule"] == r).any()]
    with paper_style():
        fig = Figure(figsize=(7.0, 1.2 + 2.3 * len(pairs)), layout="constrained")
        axes = fig.subplots(len(pairs), len(rules), squeeze=False, sharey="row")
        for i, pair in enumerate(pairs):
            of_pair = frame[frame["pair"] == pair]
            for j, rule in enumerate(rules):
                ax = axes[i, j]
                rows = of_pair[of_pair["rule"] == rule]
                first = rows.drop_duplicates("value").sort_values("value")
                ax.plot(first["value"], first["log_surviving_mass"], color="0.55", lw=1.0,
                        ls="-.")  # fmt: skip
                for (mode, name), line in rows.groupby(["mode", "estimator"], sort=False):
                    line = line.sort_values("value")
                    style = estimator_style(name)
                    ax.plot(line["value"], line["bias_vs_kl_pi_ref"], color=style["color"],
                            ls=MODE_LABELS[mode][1], lw=1.3, marker=style["marker"],
                            ms=2.5)  # fmt: skip
                ax.axhline(0.0, color="0.2", lw=0.6)
                ax.set_yscale("symlog", linthresh=_LINTHRESH)
                if rule == "top_k":
                    ax.set_xscale("log")
                kl = float(of_pair["kl_pi_ref"].iloc[0])
                ax.set_title(f"{pair}: KL(π‖π_ref) = {kl:.4g}", fontsize=8)
                if i == len(pairs) - 1:
                    ax.set_xlabel(_RULES[rule])
                if j == 0:
                    ax.set_ylabel("E_μ[k] − KL(π‖π_ref)  (nats)")
        estimators = list(dict.fromkeys(frame["estimator"]))
        modes = list(dict.fromkeys(frame["mode"]))
        handles = [
            Line2D(
                [],
                [],
                color=estimator_style(e)["color"],
                marker=estimator_style(e)["marker"],
                label=e,
            )
            for e in estimators
        ]
        handles += [
            Line2D([], [], color="0.3", ls=MODE_LABELS[m][1], label=MODE_LABELS[m][0])
            for m in modes
        ]
        handles.append(
            Line2D(
                [],
                [],
                color="0.55",
                ls="-.",
                label="log S (importance log-ratio bias, renormalised log-probs)",
            )
        )
        fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=7)  # fmt: skip
        if title:
            fig.suptitle(title)
    return fig

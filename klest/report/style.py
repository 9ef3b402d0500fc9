"""klest's paper style: the rcParams, estimator colours and shared drawing helpers.

Used by :mod:`klest.report.plots` (and by the CLI while saving): the style is applied as a context,
never globally; figures are built as :class:`matplotlib.figure.Figure` objects directly.

>>> estimator_style("low_var_kl")["ls"]
'--'
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "KL_QP_LABEL",
    "PAPER_RC",
    "estimator_style",
    "mc_points",
    "new_figure",
    "ordered",
    "paper_style",
    "series_style",
    "shade_runs",
    "source_handles",
    "split_sources",
]

#: the paper style: applied inside each function (and by the CLI while saving), never globally
PAPER_RC: dict[str, object] = {
    "font.family": "DejaVu Sans",
    "mathtext.fontset": "dejavusans",
    "font.size": 8.5,
    "axes.titlesize": 9.0,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "0.88",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.4,
    "lines.markersize": 4.5,
    "errorbar.capsize": 2.0,
    "legend.frameon": False,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,
    "svg.hashsalt": "klest",
}

# Okabe-Ito colours (colour-blind safe); every figure draws an estimator the same way
_ESTIMATOR_STYLES = {
    "k1": ("#0072B2", "o"),
    "k2": ("#E69F00", "s"),
    "k3": ("#009E73", "^"),
    "abs": ("#CC79A7", "D"),
    "low_var_kl": ("#D55E00", "v"),
    "rev_kl": ("#56B4E9", "P"),
}
_SPARE = ("#000000", "#999999", "#F0E442", "#8C564B", "#7F7F7F")
_SPARE_MARKERS = ("X", "h", "<", ">", "*")
_SERIES_COLOURS = ("#0072B2", "#56B4E9", "#E69F00", "#D55E00", "#009E73", "#CC79A7", "#000000")
_SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_WIDE, _ROW = 7.0, 3.0  # inches: a two-column paper figure, one row of panels
KL_QP_LABEL = "true KL(q||p)"


@contextmanager
def paper_style() -> Iterator[None]:
    """The paper style as a context (``matplotlib.rc_context(PAPER_RC)``).

    >>> import matplotlib
    >>> with paper_style():
    ...     matplotlib.rcParams["axes.spines.top"]
    False
    """
    with rc_context(PAPER_RC):
        yield


def estimator_style(name: str, order: int = 0) -> dict[str, str]:
    """Colour, marker, line style and label of an estimator (fixed for the known ones;
    ``low_var_kl`` is dashed, so that k3 stays visible where the clamp changes nothing).

    >>> estimator_style("k3")["color"]
    '#009E73'
    """
    colour, marker = _ESTIMATOR_STYLES.get(
        name, (_SPARE[order % len(_SPARE)], _SPARE_MARKERS[order % len(_SPARE_MARKERS)])
    )
    return {
        "color": colour,
        "marker": marker,
        "ls": "--" if name == "low_var_kl" else "-",
        "label": name,
    }


def series_style(order: int) -> dict[str, str]:
    """Colour and marker of the ``order``-th series (families of pairs in figure 6).

    >>> series_style(0)
    {'color': '#0072B2', 'marker': 'o'}
    """
    return {
        "color": _SERIES_COLOURS[order % len(_SERIES_COLOURS)],
        "marker": _SERIES_MARKERS[order % len(_SERIES_MARKERS)],
    }


def new_figure(ncols: int, height: float = _ROW, width: float = _WIDE) -> tuple[Figure, list[Axes]]:
    """A constrained-layout Figure (no pyplot) with one row of ``ncols`` axes, size in inches.

    >>> fig, axes = new_figure(2)
    >>> len(axes), fig.get_size_inches().tolist()
    (2, [7.0, 3.0])
    """
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def split_sources(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(exact rows, Monte Carlo rows) of a frame with a ``source`` column.

    >>> exact, mc = split_sources(pd.DataFrame({"source": ["exact", "monte_carlo"]}))
    >>> len(exact), len(mc)
    (1, 1)
    """
    return frame[frame["source"] == "exact"], frame[frame["source"] == "monte_carlo"]


def ordered(values: pd.Series) -> list:
    """Distinct values in order of first appearance.

    >>> ordered(pd.Series(["k3", "k1", "k3"]))
    ['k3', 'k1']
    """
    return list(dict.fromkeys(values))


def mc_points(ax: Axes, x, y, err, style: dict[str, str], converged=None) -> None:
    """Monte Carlo markers with ± one standard error; hollow where ``converged`` is False,
    hollow and without an error bar where ``err`` is NaN (the standard error is withheld:
    an infinite variance, non-converging draws); points with a non-finite y are not drawn.

    >>> fig, (ax,) = new_figure(1)
    >>> mc_points(ax, [1.0, 2.0], [1.0, 2.0], [0.1, 0.1], estimator_style("k1"), [True, False])
    >>> sorted(line.get_markerfacecolor() for line in ax.get_lines() if line.get_marker() == "o")
    ['#0072B2', 'white']
    >>> fig, (ax,) = new_figure(1)
    >>> mc_points(ax, [1.0, 2.0], [1.0, 2.0], [0.1, float("nan")], estimator_style("k1"))
    >>> len(ax.containers), [line.get_markerfacecolor() for line in ax.get_lines()][-1]
    (1, 'white')
    """
    x, y, err = (np.asarray(v, dtype=np.float64) for v in (x, y, err))
    ok = np.ones(len(x), bool) if converged is None else np.asarray(converged, bool)
    shown, bar = np.isfinite(x) & np.isfinite(y), np.isfinite(err)
    for mask, face in ((ok & bar, style["color"]), (~ok & bar, "white")):
        if (mask & shown).any():
            ax.errorbar(
                x[mask & shown],
                y[mask & shown],
                yerr=err[mask & shown],
                fmt=style["marker"],
                color=style["color"],
                mfc=face,
                ms=4.5,
                lw=0.0,
                elinewidth=1.0,
                zorder=3,
            )
    if (~bar & shown).any():  # no error bar exists: a hollow marker alone
        ax.plot(
            x[~bar & shown],
            y[~bar & shown],
            ls="",
            marker=style["marker"],
            color=style["color"],
            mfc="white",
            ms=4.5,
            zorder=3,
        )


def source_handles(
    frame: pd.DataFrame, hollow: bool = False, error_column: str | None = None
) -> list[Line2D]:
    """Legend entries for "exact" lines and "Monte Carlo" markers (with n, and the hollow
    marker when ``hollow`` and some row is not ``converged``, or when some Monte Carlo row
    has no standard error in ``error_column``).

    >>> df = pd.DataFrame({"source": ["exact", "monte_carlo"], "n_draws": [None, 1000]})
    >>> [h.get_label() for h in source_handles(df)]
    ['exact', 'Monte Carlo ± 1 s.e. (n = 1,000)']
    """
    handles = [Line2D([], [], color="0.3", label="exact")]
    mc = frame[frame["source"] == "monte_carlo"]
    if not mc.empty:
        n = mc["n_draws"].max() if "n_draws" in mc else math.nan
        label = "Monte Carlo ± 1 s.e." + (f" (n = {int(n):,})" if n == n else "")
        handles.append(Line2D([], [], color="0.3", marker="o", lw=0, label=label))
        unconverged = hollow and "converged" in mc and not mc["converged"].astype(bool).all()
        missing = error_column is not None and error_column in mc
        missing = missing and not np.isfinite(mc[error_column].to_numpy(np.float64)).all()
        if unconverged or missing:
            handles.append(
                Line2D(
                    [],
                    [],
                    color="0.3",
                    marker="o",
                    mfc="white",
                    lw=0,
                    label="hollow: no error bar (or an unreliable one)",
                )
            )
    return handles


def shade_runs(ax: Axes, x: np.ndarray, mask: np.ndarray, **kwargs) -> bool:
    """Shade each run of consecutive True in ``mask`` (x sorted); True when any was shaded.

    >>> fig, (ax,) = new_figure(1)
    >>> shade_runs(ax, np.arange(5.0), np.array([1, 1, 0, 1, 0], bool)), len(ax.patches)
    (True, 2)
    """
    if not mask.any():
        return False
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        ax.axvspan(x[start], x[stop - 1], **kwargs)
    return True

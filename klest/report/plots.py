"""Tidy DataFrame in, matplotlib Figure out: klest's paper-style figures (they never save).

Every function draws inside :func:`paper_style` (a small ``rc_context``, never a global
change), builds a :class:`matplotlib.figure.Figure` directly (no pyplot state, safe under any
backend) with fixed sizes, and returns it. Saving is the CLI's job
(:mod:`klest.report.figure_files`). The frames come from :mod:`klest.report.figure_data`; each
function names the columns it reads. ``source`` is ``"exact"`` (lines: exact moments, no
sampling) or
``"monte_carlo"`` (markers with ± one standard error).

>>> import pandas as pd
>>> frame = pd.DataFrame({"estimator": ["k1", "k3"] * 2, "log_ratio": [-1.0, -1.0, 1.0, 1.0],
...                       "value": [1.0, 0.37, -1.0, 0.72], "clamp": ["", "", "", ""]})
>>> fig = plot_estimator_curves(frame)
>>> len(fig.axes)
2
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from klest.report.style import (
    KL_QP_LABEL,
    PAPER_RC,
    estimator_style,
    mc_points,
    new_figure,
    ordered,
    paper_style,
    series_style,
    shade_runs,
    source_handles,
    split_sources,
)

__all__ = [
    "PAPER_RC",
    "estimator_style",
    "paper_style",
    "plot_batch_mse",
    "plot_estimator_curves",
    "plot_histograms",
    "plot_rel_bias",
    "plot_rel_std",
    "plot_variance_ratio",
]


def _corner_note(ax: Axes, text: str) -> None:
    """A small grey note in the top-left corner of ``ax``."""
    ax.text(0.03, 0.97, text, va="top", transform=ax.transAxes, fontsize=7, color="0.3")


def _kl_sweep(frame: pd.DataFrame, column: str, ax: Axes) -> list[Line2D]:
    exact, mc = split_sources(frame)
    handles = []
    for i, name in enumerate(ordered(frame["estimator"])):
        style = estimator_style(name, i)
        ex = exact[exact["estimator"] == name].sort_values("kl_qp")
        ax.plot(ex["kl_qp"], ex[column], color=style["color"], ls=style["ls"])
        pts = mc[mc["estimator"] == name]
        if not pts.empty:
            conv = pts["converged"] if "converged" in pts else None
            mc_points(ax, pts["kl_qp"], pts[column], pts[f"{column}_se"], style, conv)
        target = str(frame.loc[frame["estimator"] == name, "target"].iloc[0])
        label = name if target == "KL(q||p)" else f"{name} (targets {target})"
        handles.append(
            Line2D(
                [], [], color=style["color"], marker=style["marker"], ls=style["ls"], label=label
            )
        )
    return handles


def plot_rel_std(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Figure 1: stdev/true against the true KL(q||p), log-log, per estimator.

    Columns: ``source estimator target kl_qp rel_std rel_std_se`` (+ ``n_draws``,
    ``converged`` on Monte Carlo rows). Lines are exact, markers Monte Carlo ± one standard
    error (hollow where the sample std does not converge).

    >>> from klest.studies.experiment import parse_config
    >>> from klest.report import figure_data
    >>> cfg = parse_config({"name": "d", "estimators": ["k1", "k2", "k3"], "n": 1, "cases": [
    ...     {"q": {"family": "normal"}, "p": {"family": "normal"},
    ...      "sweep": {"param": "p.loc", "values": [0.1, 1.0]}}]})
    >>> fig = plot_rel_std(figure_data.kl_sweep_frame(cfg.cases, None, cfg.estimators))
    >>> fig.axes[0].get_xscale(), fig.axes[0].get_yscale()
    ('log', 'log')
    """
    with paper_style():
        fig, (ax,) = new_figure(1, height=3.4, width=6.8)
        handles = _kl_sweep(frame, "rel_std", ax)
        ax.set(xscale="log", yscale="log", xlabel=KL_QP_LABEL, ylabel="stdev / true  (one sample)")
        fig.legend(
            handles=[*handles, *source_handles(frame, hollow=True, error_column="rel_std_se")],
            loc="outside right upper",
            title="estimator",
        )
        if title:
            ax.set_title(title)
    return fig


def plot_rel_bias(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Figure 2: bias/true against the true KL(q||p), with the Monte Carlo check beside it.

    Columns: ``source estimator target kl_qp rel_bias rel_bias_se`` (+ ``n_draws``).
    Left: |bias|/true, log-log, exact lines (solid: bias > 0, dashed: bias < 0) for the
    biased estimators, their Monte Carlo points where the sample bias exceeds 2 standard
    errors; the exactly unbiased ones are listed. Right: the Monte Carlo bias in standard
    errors, (mean - true)/s.e., for every estimator: unbiased ones stay inside the ±2 band
    unless their std does not converge (hollow: heavy tails make the s.e. too small). A point
    without a standard error (``rel_bias_se`` NaN: the run withheld it) has no z-score: it
    is left out of the right panel, which lists such estimators.

    >>> from klest.studies.experiment import parse_config
    >>> from klest.report import figure_data
    >>> cfg = parse_config({"name": "d", "estimators": ["k1", "k2", "k3"], "n": 1, "cases": [
    ...     {"q": {"family": "normal"}, "p": {"family": "normal"},
    ...      "sweep": {"param": "p.loc", "values": [0.1, 1.0]}}]})
    >>> fig = plot_rel_bias(figure_data.kl_sweep_frame(cfg.cases, None, cfg.estimators))
    >>> fig.axes[0].texts[0].get_text()
    'bias exactly 0: k1, k3'
    """
    with paper_style():
        fig, (left, right) = new_figure(2, height=3.3)
        exact, mc = split_sources(frame)
        handles, unbiased, smallest, no_se = [], [], math.inf, []
        for i, name in enumerate(ordered(frame["estimator"])):
            style = estimator_style(name, i)
            ex = exact[exact["estimator"] == name].sort_values("kl_qp")
            rel = ex["rel_bias"].to_numpy(dtype=np.float64)
            shown = np.abs(rel) > 1e-9
            if not shown.any():
                unbiased.append(name)
            for sign, ls in ((1.0, "-"), (-1.0, "--")):
                part = shown & (sign * rel > 0)
                if part.any():
                    left.plot(ex["kl_qp"].where(part), np.abs(rel), color=style["color"], ls=ls)
                    smallest = min(smallest, float(np.abs(rel[part]).min()))
            pts = mc[mc["estimator"] == name]
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (pts["rel_bias"] / pts["rel_bias_se"]).to_numpy(dtype=np.float64)
            conv = pts["converged"].to_numpy(bool) if "converged" in pts else np.ones(len(z), bool)
            if (~np.isfinite(z)).any():
                no_se.append(name)
            conv = conv & np.isfinite(z)
            resolved = (np.abs(z) > 2.0) & (name not in unbiased)
            if resolved.any():
                sel = pts[resolved]
                mc_points(
                    left,
                    sel["kl_qp"],
                    sel["rel_bias"].abs(),
                    sel["rel_bias_se"],
                    style,
                    conv[resolved],
                )
            for mask, face in ((conv, style["color"]), (~conv & np.isfinite(z), "white")):
                if mask.any():
                    right.plot(
                        pts["kl_qp"].to_numpy()[mask],
                        z[mask],
                        ls="",
                        mfc=face,
                        marker=style["marker"],
                        color=style["color"],
                    )
            handles.append(Line2D([], [], color=style["color"], marker=style["marker"], label=name))
        left.set(
            xscale="log",
            yscale="log",
            xlabel=KL_QP_LABEL,
            ylabel="|bias| / true",
            title="exact (solid: bias > 0, dashed: bias < 0)",
        )
        if math.isfinite(smallest):
            left.set_ylim(bottom=max(smallest, 1e-5) / 2.0)
        if unbiased:
            _corner_note(left, "bias exactly 0: " + ", ".join(unbiased))
        if no_se:
            _corner_note(right, "no s.e. (not drawn) at some points: " + ", ".join(no_se))
        right.axhspan(-2.0, 2.0, color="0.85", lw=0, zorder=0)
        right.set_xscale("log")
        right.set_yscale("symlog", linthresh=2.0, linscale=1.0)
        right.set(
            xlabel=KL_QP_LABEL,
            ylabel="(MC mean − true) / s.e.",
            title="Monte Carlo bias in standard errors (band: ±2)",
        )
        sources = source_handles(frame, hollow=True, error_column="rel_bias_se")
        fig.legend(
            handles=[*handles, *sources],
            loc="outside lower center",
            ncols=math.ceil((len(handles) + len(sources)) / 2),
        )
        if title:
            fig.suptitle(title)
    return fig


def plot_estimator_curves(
    frame: pd.DataFrame, *, zoom: tuple[float, float] = (-2.5, 2.5), title: str | None = None
) -> Figure:
    """Figure 3: each estimator as a function of the log-ratio l = log p(x) - log q(x).

    Columns: ``estimator log_ratio value clamp`` (``clamp``: where ``low_var_kl`` is clamped,
    e.g. ``"output clamped to 10"``, else empty). Left: near l = 0; right: the full range,
    with the clamp regions of ``low_var_kl`` shaded.

    >>> from klest.report.figure_data import estimator_curves_frame
    >>> fig = plot_estimator_curves(estimator_curves_frame(["k3", "low_var_kl"]))
    >>> [t.get_text() for t in fig.axes[1].get_legend().get_texts()][1]
    'output clamped to 10'
    """
    with paper_style():
        fig, axes = new_figure(2, height=3.2)
        handles = []
        for i, name in enumerate(ordered(frame["estimator"])):
            style = estimator_style(name, i)
            rows = frame[frame["estimator"] == name].sort_values("log_ratio")
            dashed = style["ls"] == "--"
            for ax in axes:
                ax.plot(
                    rows["log_ratio"],
                    rows["value"],
                    color=style["color"],
                    ls=style["ls"],
                    lw=1.8 if dashed else 1.3,
                )
            handles.append(Line2D([], [], color=style["color"], ls=style["ls"], label=name))
        left, right = axes
        z = frame[(frame["log_ratio"] >= zoom[0]) & (frame["log_ratio"] <= zoom[1])]
        top = float(np.nanmax(np.abs(z.loc[z["estimator"].isin(["k1", "k2", "k3"]), "value"])))
        left.set(
            xlim=zoom,
            ylim=(-zoom[1] * 0.6, max(top, 1.0) * 1.1),
            title="near l = 0: k2 and k3 agree to second order",
        )
        grid = np.sort(frame["log_ratio"].unique())
        clamp = frame.drop_duplicates("log_ratio").set_index("log_ratio")["clamp"]
        clamp = clamp.reindex(grid).fillna("").astype(str)
        regions = []
        for j, kind in enumerate(ordered(clamp[clamp != ""])):
            colour = estimator_style("low_var_kl")["color"]
            hatch = "////" if "input" in kind else None
            shade_runs(
                right,
                grid,
                (clamp == kind).to_numpy(),
                color=colour,
                alpha=0.08 + 0.06 * j,
                hatch=hatch,
                lw=0,
            )
            regions.append(Patch(color=colour, alpha=0.08 + 0.06 * j, hatch=hatch, label=kind))
        lvk = frame[frame["estimator"] == "low_var_kl"]
        ceiling = float(lvk["value"].max()) if not lvk.empty else 10.0
        right.set(
            xlim=(grid[0], grid[-1]),
            ylim=(-0.5 * ceiling, 2.5 * ceiling),
            title="full range: clamp regions of low_var_kl",
        )
        for ax in axes:
            ax.axhline(0.0, color="0.5", lw=0.6, zorder=1)
            ax.set_xlabel("log-ratio  l = log p(x) − log q(x)")
        left.set_ylabel("per-sample estimate")
        left.legend(handles=handles, loc="upper center", ncols=2)
        if regions:
            right.legend(handles=regions, loc="upper center")
        if title:
            fig.suptitle(title)
    return fig


def plot_histograms(
    frame: pd.DataFrame, *, log_density: bool = True, title: str | None = None
) -> Figure:
    """Figure 4: per-sample distributions of estimators, one panel per case.

    Columns: ``case kl_qp estimator bin_left bin_right density`` (+ ``n_drawn``): the tidy
    histogram frame of :func:`klest.report.figures.histogram_frame`. A vertical line marks the true
    KL(q||p) in each panel.

    >>> import klest
    >>> from klest.report.figure_data import histogram_frame
    >>> q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=1.0, scale=1.0)
    >>> res = klest.simulate(q, p, ["k1", "k3"], n=20_000, seed=0)
    >>> fig = plot_histograms(histogram_frame("mu = 1", 0.5, res, ["k1", "k3"]))
    >>> fig.axes[0].get_title()
    'mu = 1: KL(q||p) = 0.5'
    """
    cases = ordered(frame["case"])
    with paper_style():
        fig, axes = new_figure(len(cases), height=3.1)
        for ax, case in zip(axes, cases, strict=True):
            rows = frame[frame["case"] == case]
            for i, name in enumerate(ordered(rows["estimator"])):
                style = estimator_style(name, i)
                h = rows[rows["estimator"] == name].sort_values("bin_left")
                edges = np.append(h["bin_left"].to_numpy(), h["bin_right"].to_numpy()[-1])
                dens = h["density"].to_numpy(dtype=np.float64)
                ax.stairs(
                    np.where(dens > 0, dens, np.nan),
                    edges,
                    color=style["color"],
                    lw=1.3,
                    label=name,
                )
            truth = float(rows["kl_qp"].iloc[0])
            ax.axvline(truth, color="0.2", ls=":", lw=1.0, label="true KL(q||p)")
            if log_density:
                ax.set_yscale("log")
            ax.set(
                title=f"{case}: KL(q||p) = {truth:.4g}",
                xlabel="per-sample estimate",
                ylabel="density",
            )
            ax.legend(loc="upper right")
        heading = [title] if title else []
        if "n_drawn" in frame:
            heading.append(f"histograms of {int(frame['n_drawn'].max()):,} draws per case")
        if heading:
            fig.suptitle(" — ".join(heading))
    return fig


def plot_batch_mse(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Figure 5: root-MSE/true of the mean of B samples against B, one panel per case.

    MSE(B) = bias² + Var/B. Columns: ``source case estimator batch_size rel_rmse``
    (+ ``rel_rmse_se`` for Monte Carlo rows). An estimator whose exact variance is infinite
    has no exact line; it is listed in the panel.

    >>> from klest.studies.experiment import parse_config
    >>> from klest.report import figure_data
    >>> cfg = parse_config({"name": "d", "estimators": ["k1", "k2", "k3"], "n": 1, "cases": [
    ...     {"q": {"family": "normal"}, "p": {"family": "normal"},
    ...      "sweep": {"param": "p.loc", "values": [0.1, 1.0]}}]})
    >>> fig = plot_batch_mse(figure_data.batch_mse_frame(cfg.cases, None, ["k1", "k3"]))
    >>> len(fig.axes), fig.axes[0].get_xlabel()
    (2, 'batch size B')
    """
    cases = ordered(frame["case"])
    with paper_style():
        fig, axes = new_figure(len(cases), height=3.2)
        handles: dict[str, Line2D] = {}
        for ax, case in zip(axes, cases, strict=True):
            rows = frame[frame["case"] == case]
            exact, mc = split_sources(rows)
            infinite = []
            for i, name in enumerate(ordered(frame["estimator"])):
                style = estimator_style(name, i)
                ex = exact[exact["estimator"] == name].sort_values("batch_size")
                if ex.empty:
                    continue
                if not np.isfinite(ex["rel_rmse"]).any():
                    infinite.append(name)
                    continue
                ax.plot(ex["batch_size"], ex["rel_rmse"], color=style["color"], ls=style["ls"])
                pts = mc[mc["estimator"] == name]
                if not pts.empty:
                    mc_points(ax, pts["batch_size"], pts["rel_rmse"], pts["rel_rmse_se"], style)
                handles[name] = Line2D(
                    [], [], color=style["color"], marker=style["marker"], ls=style["ls"], label=name
                )
            if infinite:
                ax.text(
                    0.03,
                    0.03,
                    "MSE = ∞ (Var = ∞): " + ", ".join(infinite),
                    transform=ax.transAxes,
                    fontsize=7,
                    color="0.3",
                )
            heading = f"{case}\nKL(q||p) = {float(rows['kl_qp'].iloc[0]):.4g}"
            ax.set(xscale="log", yscale="log", title=heading, xlabel="batch size B")
        axes[0].set_ylabel("√MSE / true  of the mean of B samples")
        fig.legend(
            handles=[*handles.values(), *source_handles(frame, error_column="rel_rmse_se")],
            loc="outside lower center",
            ncols=len(handles) + 2,
        )
        if title:
            fig.suptitle(title)
    return fig


def plot_variance_ratio(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Figure 6: Var[k3] / Var[k1] against the true KL(q||p), one curve per family of pairs.

    Columns: ``source series kl_qp var_ratio`` (+ ``var_ratio_se`` for Monte Carlo rows).
    Below 1, k3 beats k1. An infinite exact ratio (Var[k3] = inf) is not drawn: an arrow
    marks the KL(q||p) from which the series' k3 variance is infinite.

    >>> from klest.studies.experiment import parse_config
    >>> from klest.report import figure_data
    >>> cfg = parse_config({"name": "d", "estimators": ["k1", "k2", "k3"], "n": 1, "cases": [
    ...     {"q": {"family": "normal"}, "p": {"family": "normal"},
    ...      "sweep": {"param": "p.loc", "values": [0.1, 1.0]}}]})
    >>> fig = plot_variance_ratio(figure_data.variance_ratio_frame(cfg.cases, None))
    >>> fig.axes[0].get_ylabel()
    'Var[k3] / Var[k1]  under x ~ q'
    """
    with paper_style():
        fig, (ax,) = new_figure(1, height=3.4, width=7.0)
        exact, mc = split_sources(frame)
        handles = []
        for i, series in enumerate(ordered(frame["series"])):
            style = series_style(i)
            ex = exact[exact["series"] == series].sort_values("kl_qp")
            ratio = ex["var_ratio"].to_numpy(dtype=np.float64)
            finite = np.isfinite(ratio)
            ax.plot(ex["kl_qp"][finite], ratio[finite], color=style["color"])
            label = str(series)
            if (~finite).any():
                x_inf = float(ex["kl_qp"][~finite].min())
                ax.axvline(x_inf, color=style["color"], ls=":", lw=1.0)
                ax.annotate(
                    "",
                    xy=(x_inf * 1.6, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(x_inf, 1.0),
                    textcoords=("data", "axes fraction"),
                    arrowprops={"arrowstyle": "->", "color": style["color"]},
                )
                label += f"\n  Var[k3] = ∞ for KL(q||p) ≥ {x_inf:.3g} (dotted)"
            pts = mc[mc["series"] == series]
            if not pts.empty:
                conv = pts["converged"] if "converged" in pts else None
                mc_points(ax, pts["kl_qp"], pts["var_ratio"], pts["var_ratio_se"], style, conv)
            handles.append(
                Line2D([], [], color=style["color"], marker=style["marker"], label=label)
            )
        ax.axhline(1.0, color="0.3", lw=0.8, ls="--")
        ax.text(
            0.99,
            0.02,
            "below the dashed line k3 beats k1",
            transform=ax.transAxes,
            ha="right",
            fontsize=7,
            color="0.3",
        )
        ax.set(
            xscale="log", yscale="log", xlabel=KL_QP_LABEL, ylabel="Var[k3] / Var[k1]  under x ~ q"
        )
        fig.legend(
            handles=[*handles, *source_handles(frame, hollow=True, error_column="var_ratio_se")],
            loc="outside right upper",
        )
        if title:
            ax.set_title(title)
    return fig

"""Figures for the RL analyses: tidy DataFrame in, matplotlib Figure out (never saved).

* :func:`plot_gradient_table` — which KL each estimator × placement is the gradient of
  (frames of :func:`klest.gradients.tables.gradient_table` or ``gaussian_gradient_table``).
* :func:`plot_gradient_coefficients` — the coefficient c(l) multiplying ∇log π against the
  log-ratio (``coefficient_table``).
* :func:`plot_fixed_points` — distance of the bandit fixed point to each candidate optimum
  against β (``fixed_point_table``).
* :func:`plot_sequence_variance` — exact variance of sequence-level estimators against the
  length (:func:`klest.sequence.variance_vs_length`).
* :func:`plot_offpolicy_bias` — relative gradient bias of each framework's default KL term
  against KL(μ‖π), identical curves drawn once (:func:`offpolicy_curves`;
  :func:`klest.gradients.offpolicy_tables.offpolicy_bias_table`).
* :func:`plot_sequence_gradients` — sequence-level KL configurations: cos and relative error to
  ∇KL(π‖π_ref), tr Cov, against the length (:func:`sequence_curves`: equal curves drawn once).
* :func:`plot_study` / :func:`plot_for` — the figure of an RL study
  (:mod:`klest.studies.rl_studies`), by :data:`STUDY_PLOTS`.

Styles (colours, markers, the paper rc) are those of :mod:`klest.report.plots`.

>>> import numpy as np
>>> from klest.gradients.tables import coefficient_table
>>> fig = plot_gradient_coefficients(coefficient_table(np.linspace(-2, 2, 41)))
>>> len(fig.axes)
4
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from klest.report.plots import estimator_style, paper_style
from klest.report.style import series_style
from klest.rl.penalty import spec as rl_spec
from klest.rl.penalty import versions as rl_versions
from klest.sequence.tables import ESTIMATORS
from klest.studies.rl_studies import Study

__all__ = [
    "STUDY_PLOTS",
    "offpolicy_curves",
    "plot_fixed_points",
    "plot_for",
    "plot_gradient_coefficients",
    "plot_gradient_table",
    "plot_offpolicy_bias",
    "plot_sequence_gradients",
    "plot_sequence_variance",
    "plot_study",
    "sequence_curves",
]

_WIDE, _ROW = 7.0, 2.6
_VERDICT_COLOURS = {"KL(pi||ref)": "#0072B2", "KL(ref||pi)": "#E69F00", "zero": "#999999",
                    "neither": "#D55E00"}  # fmt: skip
_VERDICT_LABELS = {"KL(pi||ref)": "∇ KL(π‖π_ref)", "KL(ref||pi)": "∇ KL(π_ref‖π)",
                   "zero": "zero (no regularisation)", "neither": "neither KL"}  # fmt: skip
_REFERENCE_STYLES = {"KL(pi||ref)": {"color": "0.15", "ls": "--"},
                     "KL(ref||pi)": {"color": "0.15", "ls": ":"}}  # fmt: skip


def _ordered(values: pd.Series) -> list:
    return list(dict.fromkeys(values))


def _figure(nrows: int, ncols: int, height: float) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(_WIDE, height), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def plot_gradient_table(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """A grid estimator × placement coloured by ``gradient_of``, annotated with the cosine
    between the expected gradient and ∇KL(π‖π_ref). Reads ``estimator``, ``placement``,
    ``gradient_of`` and ``cos_KL(pi||ref)``.

    >>> import numpy as np
    >>> from klest.gradients.tables import gradient_table
    >>> fig = plot_gradient_table(gradient_table(np.array([0.5, 0.0, -1.0]), np.zeros(3)))
    >>> fig.axes[0].get_xlabel()
    'placement'
    """
    estimators = _ordered(frame["estimator"])
    placements = _ordered(frame["placement"])
    with paper_style():
        fig, axes = _figure(1, 1, 0.45 * len(estimators) + 1.4)
        ax: Axes = axes[0, 0]
        for _, row in frame.iterrows():
            i, j = estimators.index(row["estimator"]), placements.index(row["placement"])
            colour = _VERDICT_COLOURS.get(row["gradient_of"], "#FFFFFF")
            ax.add_patch(_cell(j, i, colour))
            cos = row.get("cos_KL(pi||ref)", np.nan)
            text = "0" if row["gradient_of"] == "zero" else f"cos {cos:.2f}"
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=7, color="white")
        ax.set_xlim(0, len(placements))
        ax.set_ylim(len(estimators), 0)
        ax.set_xticks(np.arange(len(placements)) + 0.5, placements)
        ax.set_yticks(np.arange(len(estimators)) + 0.5, estimators)
        ax.set_xlabel("placement")
        ax.set_ylabel("estimator")
        ax.grid(False)
        present = [v for v in _VERDICT_COLOURS if v in set(frame["gradient_of"])]
        handles = [Patch(color=_VERDICT_COLOURS[v], label=_VERDICT_LABELS[v]) for v in present]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title(title or "Expected gradient of each estimator × placement")
    return fig


def _cell(x: float, y: float, colour: str) -> Rectangle:
    return Rectangle((x, y), 1, 1, facecolor=colour, edgecolor="white", lw=1.5)


def plot_gradient_coefficients(
    frame: pd.DataFrame, *, centered: bool = True, title: str | None = None
) -> Figure:
    """c(l) against the log-ratio l, one panel per placement, with the true-gradient
    coefficients (−l for KL(π‖π_ref), 1 − e^l for KL(π_ref‖π)) dashed. Reads ``estimator``,
    ``placement``, ``log_ratio`` and ``centered`` (c(l) − c(0)) or ``coefficient``.
    """
    column = "centered" if centered else "coefficient"
    placements = [p for p in _ordered(frame["placement"]) if p != "true"]
    refs = frame[frame["placement"] == "true"]
    with paper_style():
        fig, axes = _figure(1, len(placements), _ROW)
        handles: dict[str, Line2D] = {}
        for ax, placement in zip(axes[0], placements, strict=True):
            sub = frame[frame["placement"] == placement]
            for i, name in enumerate(_ordered(sub["estimator"])):
                style = estimator_style(name, i)
                part = sub[sub["estimator"] == name].sort_values("log_ratio")
                ax.plot(part["log_ratio"], part[column], color=style["color"], lw=1.3)
                handles.setdefault(name, Line2D([], [], color=style["color"], label=name))
            for name, style in _REFERENCE_STYLES.items():
                part = refs[refs["estimator"] == name].sort_values("log_ratio")
                if not part.empty:
                    ax.plot(part["log_ratio"], part[column], lw=1.0, **style)
                    label = f"true {_VERDICT_LABELS[name]}"
                    handles.setdefault(label, Line2D([], [], lw=1.0, label=label, **style))
            lo, hi = np.nanpercentile(sub[column], [2, 98]) if len(sub) else (-1, 1)
            pad = 0.1 * (hi - lo + 1e-12)
            ax.set_ylim(lo - pad, hi + pad)
            ax.set_title(placement)
            ax.set_xlabel("l = log π_ref − log π")
        axes[0, 0].set_ylabel("c(l) − c(0)" if centered else "c(l)")
        fig.legend(handles=list(handles.values()), loc="outside lower center", ncols=4)
        if title:
            fig.suptitle(title)
    return fig


def plot_fixed_points(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Total-variation distance of each fixed point to the KL(π‖π_ref)- and KL(π_ref‖π)-
    regularised optima against β (log-log), one column per placement; hollow markers where
    the flow ended on the boundary (an action's probability went to 0). Reads ``estimator``,
    ``placement``, ``beta``, ``status``, ``tv_KL(pi||ref)``, ``tv_KL(ref||pi)``.

    >>> import numpy as np
    >>> from klest.gradients.tables import fixed_point_table
    >>> df = fixed_point_table(np.array([1.0, 0.0, -0.5]), np.zeros(3), [0.5, 1.0],
    ...                        estimators=["k2", "k3"], placements=["loss"])
    >>> len(plot_fixed_points(df).axes)
    2
    """
    data = frame[frame["status"] != "unsupported"]
    placements = _ordered(data["placement"])
    rows = (
        ("tv_KL(pi||ref)", "TV to KL(π‖π_ref) optimum"),
        ("tv_KL(ref||pi)", "TV to KL(π_ref‖π) optimum"),
    )
    floor = 1e-16
    with paper_style():
        fig, axes = _figure(2, len(placements), 2 * _ROW)
        handles: dict[str, Line2D] = {}
        for j, placement in enumerate(placements):
            sub = data[data["placement"] == placement]
            for r, (column, label) in enumerate(rows):
                ax = axes[r, j]
                for i, name in enumerate(_ordered(sub["estimator"])):
                    style = estimator_style(name, i)
                    part = sub[sub["estimator"] == name].sort_values("beta")
                    y = np.maximum(part[column].to_numpy(dtype=float), floor)
                    x = part["beta"].to_numpy(dtype=float)
                    ax.plot(x, y, color=style["color"], lw=1.0)
                    inside = (part["status"] == "interior").to_numpy()
                    ax.plot(x[inside], y[inside], style["marker"], color=style["color"], ms=3.5)
                    ax.plot(x[~inside], y[~inside], style["marker"], color=style["color"],
                            mfc="white", ms=3.5)  # fmt: skip
                    marker = Line2D([], [], color=style["color"], marker=style["marker"])
                    marker.set_label(name)
                    handles.setdefault(name, marker)
                ax.set_xscale("log")
                ax.set_yscale("log")
                if r == 0:
                    ax.set_title(placement)
                else:
                    ax.set_xlabel("β")
                if j == 0:
                    ax.set_ylabel(label)
        handles["boundary"] = Line2D(
            [], [], color="0.3", marker="o", mfc="white", lw=0, label="boundary (π_a → 0)"
        )
        fig.legend(handles=list(handles.values()), loc="outside lower center", ncols=7)
        if title:
            fig.suptitle(title)
    return fig


def plot_sequence_variance(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Exact variance against the sequence length T (log-log), one panel for on-policy
    estimators and one for importance-weighted ones (x ~ old policy); dashed lines are biased
    estimators, circles k(L) of the whole sequence, stars Rao–Blackwellised sums; off-policy
    colours mark the weighting. Reads ``length``, ``estimator``, ``kind``, ``base``,
    ``weighting``, ``exact_var``, ``unbiased`` and ``sampler``.

    >>> import numpy as np
    >>> from klest.sequence import random_models, variance_vs_length
    >>> pi, ref, old = random_models(vocab=3, order=1, length=1, rng=np.random.default_rng(0))
    >>> fig = plot_sequence_variance(variance_vs_length(pi, ref, old, lengths=[1, 2, 4]))
    >>> len(fig.axes)
    2
    """
    groups = [("policy", "x ~ π (on-policy)"), ("old", "x ~ old policy")]
    groups = [(g, t) for g, t in groups if (frame["sampler"] == g).any()]
    with paper_style():
        fig, axes = _figure(1, len(groups), 1.3 * _ROW)
        for ax, (sampler, panel_title) in zip(axes[0], groups, strict=True):
            sub = frame[frame["sampler"] == sampler]
            for name in _ordered(sub["estimator"]):
                part = sub[sub["estimator"] == name].sort_values("length")
                first = part.iloc[0]
                colour = _WEIGHTING_COLOURS[str(first["weighting"])]
                if sampler == "policy":  # on-policy: colour by the per-token estimator
                    colour = estimator_style(str(first["base"]))["color"]
                    if first["kind"] == "rao_blackwell":
                        colour = "0.2"
                marker = _KIND_MARKERS.get(str(first["base"]), "s")
                if first["kind"] == "rao_blackwell":
                    marker = "*"
                elif first["kind"] == "sequence":
                    marker = "o"
                ls = "-" if bool(first["unbiased"]) else "--"
                ax.plot(part["length"], part["exact_var"], ls=ls, marker=marker, ms=3.5,
                        color=colour, label=name)  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length T")
            ax.set_title(panel_title)
            ax.legend(fontsize=6, ncols=2)
        axes[0, 0].set_ylabel("exact variance")
        if title:
            fig.suptitle(title)
    return fig


_WEIGHTING_COLOURS = {"none": "#999999", "sequence": "#D55E00", "prefix": "#009E73",
                      "token": "#0072B2", "token_truncated": "#CC79A7"}  # fmt: skip
_KIND_MARKERS = {"k1": "v", "k2": "s", "k3": "^"}


#: curves of the off-policy figure closer than this everywhere are drawn as one line
CURVE_ATOL = 1e-12


def _version_runs(framework: str, present: list[str]) -> str:
    """The versions of one framework, in mirrored order; 3+ consecutive ones as "a–b"."""
    order = list(rl_versions(framework))
    idx = sorted(order.index(v) for v in present)
    runs: list[list[int]] = []
    for i in idx:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    parts = [f"{order[r[0]]}–{order[r[-1]]}" if len(r) >= 3 else ", ".join(order[i] for i in r)
             for r in runs]  # fmt: skip
    return ", ".join(parts)


def _curve_label(rows: pd.DataFrame) -> str:
    """ "k3 in the loss: verl 0.5.0–0.9.0, trl 0.25.1–1.9.0" for one group's first rows."""
    terms, anchored, frameworks = [], False, {}
    for row in rows.itertuples():
        spec = rl_spec(row.release, row.kind)
        terms.append(f"{spec.estimator} in the {row.placement}")
        anchored |= not spec.anchor.startswith("ref_logprob")
        frameworks.setdefault(row.framework, []).append(row.version)
    text = " / ".join(dict.fromkeys(terms)) + ": "
    text += ", ".join(f"{fw} {_version_runs(fw, vs)}" for fw, vs in frameworks.items())
    if anchored:  # prime-rl's penalty pulls toward the behaviour policy
        text += " (pulls toward μ: bias against ∇KL(π‖μ), which is 0 on-policy: ∞)"
    return text


def offpolicy_curves(frame: pd.DataFrame, atol: float = CURVE_ATOL) -> list[tuple[str, list[str]]]:
    """Releases whose relative-bias curves agree to ``atol`` at every KL(μ‖π) (±inf equal),
    grouped in order of first appearance: (legend label, releases) per line.

    >>> from klest.gradients.offpolicy_tables import offpolicy_bias_table
    >>> rng = np.random.default_rng(0)
    >>> z, z_ref, d = rng.normal(size=(3, 4, 5))
    >>> df = offpolicy_bias_table(z, z_ref, d, kl_targets=[0.0, 0.1],
    ...                           releases=["trl@1.9.0", "nemo_rl@0.7.0", "verl@0.9.0"])
    >>> [members for _, members in offpolicy_curves(df)]
    [['trl@1.9.0', 'verl@0.9.0'], ['nemo_rl@0.7.0']]
    """
    curves = {name: rows.sort_values("kl_mu_pi")
              for name, rows in frame.groupby("release", sort=False)}  # fmt: skip
    groups: list[list[str]] = []
    for name, rows in curves.items():
        for members in groups:
            first = curves[members[0]]
            same_x = np.array_equal(first["kl_mu_pi"].to_numpy(), rows["kl_mu_pi"].to_numpy())
            if same_x and np.allclose(first["relative_bias"], rows["relative_bias"], rtol=0.0,
                                      atol=atol, equal_nan=True):  # fmt: skip
                members.append(name)
                break
        else:
            groups.append([name])
    return [(_curve_label(frame.drop_duplicates("release").set_index("release").loc[m]
                          .reset_index()), m) for m in groups]  # fmt: skip


def plot_offpolicy_bias(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Relative bias ‖E[∇] − ∇KL(π‖π_ref)‖ / ‖∇KL(π‖π_ref)‖ of each framework's default KL term
    against KL(μ‖π) (log axis, right), the on-policy value μ = π in its own panel (left), one
    line per group of identical curves (:func:`offpolicy_curves`; on-policy markers side by
    side); an infinite bias is an arrow at the top. Reads ``release framework version kind
    placement kl_mu_pi relative_bias`` (``attrs["summary_kl"]``, if set, is marked).

    >>> from klest.gradients.offpolicy_tables import offpolicy_bias_table
    >>> rng = np.random.default_rng(0)
    >>> z, z_ref, d = rng.normal(size=(3, 4, 5))
    >>> df = offpolicy_bias_table(z, z_ref, d, kl_targets=[0.0, 0.01, 0.1],
    ...                           releases=["trl@1.9.0", "nemo_rl@0.7.0"])
    >>> fig = plot_offpolicy_bias(df)
    >>> [ax.get_xscale() for ax in fig.axes]
    ['linear', 'log']
    """
    groups = offpolicy_curves(frame)
    finite = frame["relative_bias"].to_numpy(dtype=float)
    top = 1.12 * float(np.max(finite[np.isfinite(finite)], initial=1.0))
    with paper_style():
        fig = Figure(figsize=(_WIDE, 2.9 + 0.32 * len(groups)), layout="constrained")
        on, off = fig.subplots(1, 2, sharey=True, width_ratios=[1, 7])
        handles = []
        for i, (label, members) in enumerate(groups):
            style = series_style(i)
            rows = frame[frame["release"] == members[0]].sort_values("kl_mu_pi")
            x, y = rows["kl_mu_pi"].to_numpy(dtype=float), rows["relative_bias"].to_numpy(float)
            off.plot(x[x > 0], y[x > 0], color=style["color"], marker=style["marker"], ms=3.5,
                     lw=1.2)  # fmt: skip
            at = 0.6 * (i - (len(groups) - 1) / 2) / max(len(groups) - 1, 1)  # side by side
            for value in y[x == 0]:
                shown = value if np.isfinite(value) else top
                marker = style["marker"] if np.isfinite(value) else "^"
                on.plot([at], [shown], marker, color=style["color"], ms=5)
                if not np.isfinite(value):
                    on.annotate("∞", (at, shown), xytext=(4, -3), textcoords="offset points",
                                color=style["color"], fontsize=8)  # fmt: skip
            wrapped = "\n".join(textwrap.wrap(label, 110))
            handles.append(Line2D([], [], color=style["color"], marker=style["marker"],
                                  label=wrapped))  # fmt: skip
        summary = frame.attrs.get("summary_kl")
        if summary:
            off.axvline(summary, color="0.4", ls=":", lw=1.0)
            off.annotate(f"table: KL(μ‖π) = {summary:g}", (summary, 0.02), xytext=(3, 0),
                         textcoords="offset points", xycoords=("data", "axes fraction"),
                         fontsize=7, color="0.3")  # fmt: skip
        on.set_xlim(-1.0, 1.0)
        on.set_xticks([0.0], ["μ = π"])
        on.set_ylim(-0.03 * top, top * 1.06)  # a zero bias stays visible above the axis
        on.set_ylabel("‖E[∇] − ∇KL(π‖π_ref)‖ / ‖∇KL(π‖π_ref)‖")
        on.set_title("on-policy")
        off.set_xscale("log")
        off.set_xlabel("KL(μ‖π), tokens a ~ μ (mean over positions)")
        off.set_title("off-policy, no correction unless the framework's default applies one")
        fig.legend(handles=handles, loc="outside lower center", ncols=1, fontsize=7)
        if title:
            fig.suptitle(title)
    return fig


#: short names of the loss aggregations (fig13's labels) and their line styles
AGGREGATION_NAMES = {"token_mean": "tm", "seq_mean_token_mean": "smtm",
                     "seq_mean_token_sum": "smts", "seq_mean_token_sum_norm": "Dr"}  # fmt: skip
_AGGREGATION_LS = dict(zip(AGGREGATION_NAMES, (":", "--", "-", "-."), strict=True))
_METRICS = (("cosine", "cos to ∇KL(π‖π_ref)", (-1.1, 1.1)),
            ("relative_error", "‖E[G] − ∇KL‖ / ‖∇KL‖", (-0.05, None)),
            ("cov_trace", "tr Cov[G] (one response)", None))  # fmt: skip


def sequence_curves(rows: pd.DataFrame, metric: str, rtol: float = 1e-9) -> list[list[tuple]]:
    """(estimator, aggregation) pairs of one placement whose ``metric`` curves against
    ``length`` agree to ``rtol`` (relative to the larger; NaN equal), in order of appearance.

    >>> df = pd.DataFrame({"length": [1, 1, 1], "estimator": ["k1", "k1", "k2"],
    ...     "aggregation": ["tm", "smts", "tm"], "cosine": [1.0, 1.0, 0.5]})
    >>> sequence_curves(df, "cosine")
    [[('k1', 'tm'), ('k1', 'smts')], [('k2', 'tm')]]
    """
    curves = {key: part.sort_values("length")[metric].to_numpy(dtype=float)
              for key, part in rows.groupby(["estimator", "aggregation"], sort=False)}  # fmt: skip
    groups: list[list[tuple]] = []
    for key, y in curves.items():
        for members in groups:
            other = curves[members[0]]
            with np.errstate(invalid="ignore"):
                close = np.abs(y - other) <= rtol * np.maximum(np.abs(y), np.abs(other))
            if other.shape == y.shape and bool(np.all(close | (np.isnan(y) & np.isnan(other)))):
                members.append(key)
                break
        else:
            groups.append([key])
    return groups


def _members(group: list[tuple]) -> str:
    """ "k1, k2 · tm, smts" for a group of (estimator, aggregation) pairs."""
    ests = list(dict.fromkeys(e for e, _ in group))
    aggs = list(dict.fromkeys(AGGREGATION_NAMES.get(a, a) for _, a in group))
    if len(group) == len(ests) * len(aggs):  # a product: say it once
        return f"{', '.join(ests)} · {', '.join(aggs)}"
    return "; ".join(f"{e} {AGGREGATION_NAMES.get(a, a)}" for e, a in group)


def plot_sequence_gradients(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Cosine and relative norm error of each configuration's exact expected gradient to the
    sequence-level ∇KL(π‖π_ref), and tr Cov[G], against the maximum response length T: one
    row per placement, colour = per-token estimator, line style = aggregation; curves equal
    within a panel (:func:`sequence_curves`) are drawn once and labelled with their members at
    the right end; errors <= 1e-9 are drawn at 0, a zero variance is left off the log axis.
    Reads the ``table == "gradient"`` rows (all rows if there is no ``table``).

    >>> from klest.sequence import TabularAR
    >>> from klest.sequence.tables import sequence_gradient_table
    >>> pi = TabularAR.random(vocab=3, order=1, length=1, rng=np.random.default_rng(0), eos=2)
    >>> df = sequence_gradient_table(pi, pi.perturbed(np.random.default_rng(1), 0.5), [1, 2, 3],
    ...                              placements=["loss", "reward_to_go"])
    >>> len(plot_sequence_gradients(df).axes)
    6
    """
    data = frame[frame["table"] == "gradient"] if "table" in frame else frame
    placements, lengths = _ordered(data["placement"]), sorted(set(data["length"].astype(int)))
    with paper_style():
        fig, axes = _figure(len(placements), len(_METRICS), 1.45 * len(placements) + 1.2)
        for i, placement in enumerate(placements):
            rows = data[data["placement"] == placement]
            for ax, (metric, label, limits) in zip(axes[i], _METRICS, strict=True):
                for group in sequence_curves(rows, metric):
                    est, agg = group[0]
                    part = rows[(rows["estimator"] == est) & (rows["aggregation"] == agg)
                                ].sort_values("length")  # fmt: skip
                    colour = "0.2" if est == "rb" else estimator_style(est)["color"]
                    x, y = part["length"].to_numpy(float), part[metric].to_numpy(float)
                    if metric == "relative_error":
                        y = np.where(y <= 1e-9, 0.0, y)
                    elif metric == "cov_trace":
                        y = np.where(y > 1e-12 * np.nanmax(rows[metric]), y, np.nan)
                    ax.plot(x, y, color=colour, ls=_AGGREGATION_LS.get(agg, "-"), lw=1.1)
                    if len(group) > 1 and np.isfinite(y[-1]):
                        ax.annotate(_members(group), (x[-1], y[-1]), xytext=(2, 0),
                                    textcoords="offset points", va="center", fontsize=4.5,
                                    color=colour)  # fmt: skip
                ax.set(yscale="log" if metric == "cov_trace" else "linear", xticks=lengths,
                       xlim=(lengths[0] - 0.3, 1.25 * lengths[-1] + 0.05), ylim=limits,
                       xlabel="maximum length T" if i == len(placements) - 1 else "")  # fmt: skip
                ax.set_title(label if i == 0 else "", fontsize=8)
            axes[i, 0].set_ylabel(placement, fontsize=8)
        present = set(data["estimator"]), set(data["aggregation"])
        handles = [Line2D([], [], color=estimator_style(e)["color"], label=e) for e in ESTIMATORS
                   if e in present[0]]  # fmt: skip
        handles += [Line2D([], [], color="0.2", label="rb (Rao–Blackwell)")] * ("rb" in present[0])
        handles += [Line2D([], [], color="0.4", ls=_AGGREGATION_LS[a], label=f"{n} = {a}")
                    for a, n in AGGREGATION_NAMES.items() if a in present[1]]  # fmt: skip
        fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=7)
        fig.suptitle(title or "")
    return fig


# ---- the RL studies' figures (klest.studies.rl_studies computes their frames) ------------

#: study kind -> the function drawing its frame (the other studies are tables)
STUDY_PLOTS: dict[str, Callable[..., Figure]] = {
    "gradient_table": plot_gradient_table,
    "gaussian_gradient_table": plot_gradient_table,
    "gradient_coefficients": plot_gradient_coefficients,
    "bandit_fixed_points": plot_fixed_points,
    "sequence_variance": plot_sequence_variance,
    "offpolicy_bias": plot_offpolicy_bias,
    "sequence_gradients": plot_sequence_gradients,
}


def plot_for(frame: pd.DataFrame, *, title: str | None = None) -> Figure:
    """The study figure for a frame made by :func:`klest.studies.rl_studies.run_study` (its
    ``attrs["study"]`` says which)."""
    kind = str(frame.attrs.get("study", ""))
    if kind not in STUDY_PLOTS:
        raise ValueError(f"frame has no plottable study kind (attrs['study'] = {kind!r})")
    return STUDY_PLOTS[kind](frame, title=title)


def plot_study(study: Study, frame: pd.DataFrame) -> Figure:
    """The study's figure from its frame (ValueError for table-only studies).

    >>> from klest.studies.rl_studies import parse_study, run_study
    >>> study = parse_study({"study": "gradient_coefficients", "placements": ["loss"]})
    >>> len(plot_study(study, run_study(study)).axes)
    1
    """
    if study.study not in STUDY_PLOTS:
        raise ValueError(f"study {study.study!r} has no figure (it is a table)")
    return STUDY_PLOTS[study.study](frame, title=study.title)

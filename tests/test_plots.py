"""klest.report.plots: each function draws a Figure from a small tidy frame, never saves or shows,
and leaves matplotlib's global state alone."""

from __future__ import annotations

import math
import os
import sys
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import klest
from klest.report import figure_data, plots
from klest.studies.experiment import parse_config

N = 20_000


def _config(cases: list[dict], estimators: list[str]):
    return parse_config({"name": "t", "estimators": estimators, "n": N, "seed": 7, "cases": cases})


def _run_frame(config) -> pd.DataFrame:
    """What run_experiment returns, built from klest.simulate directly."""
    frames = []
    for case in config.cases:
        with warnings.catch_warnings():  # heavy-tailed cases warn; the plots mark them hollow
            warnings.simplefilter("ignore", klest.ConvergenceWarning)
            res = klest.simulate(
                case.q, case.p, list(case.estimators), n=case.n, seed=config.seed, case=case.index
            )
        frame = res.to_frame().reset_index(drop=True)
        frame.insert(0, "case_index", case.index)
        frame.insert(1, "case", case.label)
        frame["n_draws"] = res.n
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


SHIFT = {
    "label": "mu = {value:g}",
    "group": "shift",
    "q": {"family": "normal"},
    "p": {"family": "normal"},
    "sweep": {"param": "p.loc", "values": [0.1, 0.5, 1.0]},
}


@pytest.fixture(scope="module")
def sweep() -> pd.DataFrame:
    config = _config([SHIFT], ["k1", "k2", "k3", "rev_kl"])
    return figure_data.kl_sweep_frame(config.cases, _run_frame(config), config.estimators)


@pytest.fixture(autouse=True)
def _no_files_no_global_state(tmp_path, monkeypatch):
    """Every test runs in an empty directory that must stay empty; rcParams and pyplot's
    figure list must be unchanged."""
    monkeypatch.chdir(tmp_path)
    before = dict(matplotlib.rcParams)
    yield
    assert os.listdir(tmp_path) == []
    assert dict(matplotlib.rcParams) == before
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def _lines_with_colour(ax, colour: str) -> list:
    return [line for line in ax.get_lines() if line.get_color() == colour]


def test_rel_std_draws_one_exact_curve_and_mc_points_per_estimator(sweep) -> None:
    fig = plots.plot_rel_std(sweep, title="shift")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert "KL(q||p)" in ax.get_xlabel()
    assert ax.get_title() == "shift"
    for name in ("k1", "k2", "k3", "rev_kl"):
        colour = plots.estimator_style(name)["color"]
        curves = [ln for ln in _lines_with_colour(ax, colour) if ln.get_linestyle() != "None"]
        exact = sweep[(sweep["source"] == "exact") & (sweep["estimator"] == name)]
        assert any(len(ln.get_xdata()) == len(exact) for ln in curves)
        # the exact curve passes through the exact values
        curve = max(curves, key=lambda ln: len(ln.get_xdata()))
        assert np.allclose(curve.get_ydata(), exact.sort_values("kl_qp")["rel_std"])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "rev_kl (targets KL(p||q))" in labels
    assert any(t.startswith("Monte Carlo ± 1 s.e. (n = 20,000)") for t in labels)


def test_rel_std_marks_unconverged_points_hollow(sweep) -> None:
    frame = sweep.copy()
    mc = frame["source"] == "monte_carlo"
    frame.loc[mc & (frame["estimator"] == "k3"), "converged"] = False
    fig = plots.plot_rel_std(frame)
    faces = [ln.get_markerfacecolor() for ln in fig.axes[0].get_lines()]
    assert "white" in faces
    assert any("hollow" in t.get_text() for t in fig.legends[0].get_texts())


def test_withheld_error_bars_are_hollow_markers_without_a_bar(sweep) -> None:
    frame = sweep.copy()
    k3 = (frame["source"] == "monte_carlo") & (frame["estimator"] == "k3")
    frame.loc[k3, ["rel_std_se", "rel_bias_se"]] = math.nan  # as a run that withheld them
    frame.loc[k3, "converged"] = True
    colour = plots.estimator_style("k3")["color"]
    for fig in (plots.plot_rel_std(frame), plots.plot_rel_bias(frame)):
        ax = fig.axes[0]
        bars = [c for c in ax.containers if c.lines[0].get_color() == colour]
        drawn = sum(len(c.lines[0].get_xdata()) for c in bars)
        markers = [ln for ln in _lines_with_colour(ax, colour) if ln.get_linestyle() == "None"]
        hollow = [ln for ln in markers if ln.get_markerfacecolor() == "white"]
        if fig.axes[0].get_ylabel().startswith("stdev"):
            assert drawn == 0 and sum(len(ln.get_xdata()) for ln in hollow) == k3.sum()
        assert any("hollow: no error bar" in t.get_text() for t in fig.legends[0].get_texts())
    right = fig.axes[1]  # rel_bias: no z-score without a standard error, and it says so
    assert not _lines_with_colour(right, colour)
    assert any("k3" in t.get_text() and "no s.e." in t.get_text() for t in right.texts)


def test_rel_bias_shows_exact_bias_and_mc_z_scores(sweep) -> None:
    fig = plots.plot_rel_bias(sweep, title="shift")
    left, right = fig.axes
    assert left.get_yscale() == "log" and right.get_yscale() == "symlog"
    texts = [t.get_text() for t in left.texts]
    assert texts == ["bias exactly 0: k1, k3, rev_kl"]  # only k2 is biased here
    k2 = sweep[(sweep["source"] == "exact") & (sweep["estimator"] == "k2")]
    curve = next(
        ln
        for ln in _lines_with_colour(left, plots.estimator_style("k2")["color"])
        if len(ln.get_xdata()) == len(k2)
    )
    assert np.allclose(curve.get_ydata(), k2.sort_values("kl_qp")["rel_bias"].abs())
    # one z-score marker per Monte Carlo row, at (mean - true) / se
    mc = sweep[sweep["source"] == "monte_carlo"]
    z = np.concatenate([ln.get_ydata() for ln in right.get_lines() if ln.get_linestyle() == "None"])
    assert np.allclose(np.sort(z), np.sort(mc["rel_bias"] / mc["rel_bias_se"]))


def test_estimator_curves_shade_the_clamp_regions() -> None:
    frame = figure_data.estimator_curves_frame(["k1", "k3", "low_var_kl"], -25, 25, 201)
    fig = plots.plot_estimator_curves(frame, title="t")
    left, right = fig.axes
    assert len(left.get_lines()) == 3 + 1  # three estimators and the zero line
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels == ["input clamped to ±20 (output stays 10)", "output clamped to 10"]
    lvk = [ln for ln in right.get_lines() if ln.get_linestyle() == "--"]
    assert len(lvk) == 1 and np.max(lvk[0].get_ydata()) == 10.0


def test_histograms_one_panel_per_case_with_the_truth_marked() -> None:
    frames = []
    for mu in (0.1, 1.0):
        q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=mu, scale=1.0)
        res = klest.simulate(q, p, ["k1", "k2", "k3"], n=N, seed=1)
        frames.append(
            figure_data.histogram_frame(f"mu = {mu}", klest.kl(q, p), res, ["k1", "k2", "k3"])
        )
    fig = plots.plot_histograms(pd.concat(frames, ignore_index=True), title="h")
    assert len(fig.axes) == 2
    for ax, mu in zip(fig.axes, (0.1, 1.0), strict=True):
        assert ax.get_yscale() == "log"
        assert ax.get_title() == f"mu = {mu}: KL(q||p) = {mu**2 / 2:.4g}"
        assert len(ax.patches) == 3  # one step histogram per estimator
        truth = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
        assert truth[0].get_xdata()[0] == pytest.approx(mu**2 / 2)
    assert "histograms of" in fig.get_suptitle()


def test_batch_mse_lists_infinite_variance_estimators() -> None:
    config = _config(
        [
            {"label": "shift", "q": {"family": "normal"}, "p": {"family": "normal", "loc": 1.0}},
            {"label": "wide", "q": {"family": "normal"}, "p": {"family": "normal", "scale": 1.5}},
        ],
        ["k1", "k2", "k3"],
    )
    frame = figure_data.batch_mse_frame(config.cases, _run_frame(config), config.estimators)
    fig = plots.plot_batch_mse(frame, title="m")
    shift, wide = fig.axes
    assert shift.get_xscale() == shift.get_yscale() == "log"
    assert [t.get_text() for t in wide.texts] == ["MSE = ∞ (Var = ∞): k3"]
    assert len(shift.texts) == 0
    # k2's exact curve levels off at its bias/true (0.25 for mu = 1)
    k2 = next(
        ln
        for ln in _lines_with_colour(shift, plots.estimator_style("k2")["color"])
        if ln.get_linestyle() == "-"
    )
    assert k2.get_ydata()[-1] == pytest.approx(0.25, rel=1e-3)


def test_variance_ratio_marks_where_var_k3_becomes_infinite() -> None:
    config = _config(
        [
            {
                "label": "s = {value:g}",
                "group": "scale",
                "q": {"family": "normal"},
                "p": {"family": "normal"},
                "sweep": {"param": "p.scale", "values": [1.2, 1.5]},
            }
        ],
        ["k1", "k3"],
    )
    frame = figure_data.variance_ratio_frame(config.cases, _run_frame(config))
    exact = frame[frame["source"] == "exact"]
    first_inf = exact.loc[~np.isfinite(exact["var_ratio"]), "kl_qp"].min()
    # Var[k3] = inf from sigma^2 = 2 on; the dense path reaches it between 1.2 and 1.5
    boundary = math.log(math.sqrt(2)) + 0.25 - 0.5
    assert boundary <= first_inf < klest.kl(config.cases[1].q, config.cases[1].p)
    assert len(frame[frame["source"] == "monte_carlo"]) == 1  # no MC row where Var = inf
    fig = plots.plot_variance_ratio(frame, title="r")
    (ax,) = fig.axes
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert dotted[0].get_xdata()[0] == pytest.approx(first_inf)
    assert any("Var[k3] = ∞" in t.get_text() for t in fig.legends[0].get_texts())


def test_paper_style_is_scoped() -> None:
    before = matplotlib.rcParams["font.size"]
    with plots.paper_style():
        assert matplotlib.rcParams["font.size"] == plots.PAPER_RC["font.size"]
        assert matplotlib.rcParams["axes.spines.top"] is False
    assert matplotlib.rcParams["font.size"] == before

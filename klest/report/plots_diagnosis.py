"""The figures of ``klest diagnose``: a Diagnosis's samples and tail in, matplotlib Figures out.

:func:`plot_histograms` draws the per-token log-ratio l = ref_logprob − logprob and each
estimator's per-token values (from the diagnosis's reservoir samples, a fixed-seed uniform
subsample of the tokens); :func:`plot_tail` the largest ratios on a log-log survival plot
with the generalised Pareto tail that PSIS fitted to them. Neither saves: the caller does.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> l = rng.standard_normal(1000)
>>> fig = plot_histograms({"l": l, "k1": -l})
>>> len(fig.axes)
2
>>> r = np.sort(np.exp(rng.standard_normal(50) + 2.0))
>>> tail = {"values": r, "khat": 0.3, "sigma": 2.0, "threshold": r[0], "n": 1000}
>>> plot_tail(tail).axes[0].get_xscale()
'log'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from klest.report.style import estimator_style, paper_style

__all__ = ["plot_histograms", "plot_tail"]

_BINS = 80


def plot_histograms(samples: Mapping[str, np.ndarray], *, title: str | None = None) -> Figure:
    """One panel per series of ``samples`` (name -> per-token values): a histogram with a
    log count axis; non-finite values are left out of the bars and counted in the panel's
    title (they are never silently dropped from the diagnosis itself)."""
    names = list(samples)
    with paper_style():
        cols = min(3, max(1, len(names)))
        rows = math.ceil(len(names) / cols)
        fig = Figure(figsize=(3.6 * cols, 2.6 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, name in zip(axes, names, strict=False):
            values = np.asarray(samples[name], dtype=np.float64)
            finite = values[np.isfinite(values)]
            bad = values.size - finite.size
            color = "0.35" if name == "l" else estimator_style(name)["color"]
            if finite.size:
                ax.hist(finite, bins=_BINS, color=color, alpha=0.85)
            ax.set_yscale("log")
            label = "l = log π_ref − log π" if name == "l" else name
            ax.set_title(f"{label}" + (f"  ({bad} non-finite)" if bad else ""), fontsize=9)
            ax.set_xlabel("per-token value")
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        axes[0].set_ylabel("tokens (sample)")
        if title:
            fig.suptitle(title)
    return fig


def plot_tail(tail: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """The empirical survival P(X > x) of the largest values ``tail["values"]`` (of
    ``tail["n"]`` in all) on log-log axes, and the generalised Pareto tail fitted by PSIS:
    P(X > x) = (m / n) (1 + k (x − u) / sigma)^(−1/k) above the threshold u."""
    values = np.sort(np.asarray(tail["values"], dtype=np.float64))
    n = int(tail.get("n", values.size))
    k, sigma, u = (float(tail.get(key, math.nan)) for key in ("khat", "sigma", "threshold"))
    series = tail.get("series", "r")
    with paper_style():
        fig = Figure(figsize=(5.0, 3.6), layout="constrained")
        ax = fig.subplots()
        m = values.size
        if m:
            survival = (m - np.arange(m)) / n
            ax.plot(values, survival, ".", ms=3, color="0.3", label=f"largest {m} of {n:,}")
        if m and np.isfinite(k) and np.isfinite(sigma) and np.isfinite(u) and sigma > 0:
            x = np.geomspace(max(values[0], 1e-300), values[-1], 200)
            x = x[x >= u]
            if abs(k) < 1e-12:  # the exponential tail
                fit = (m / n) * np.exp(-(x - u) / sigma)
            else:
                z = 1.0 + k * (x - u) / sigma
                fit = (m / n) * np.where(z > 0, z, np.nan) ** (-1.0 / k)
            ax.plot(x, fit, "-", color="#D55E00", label=f"Pareto fit, k̂ = {k:.2f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{series}")
        ax.set_ylabel(f"P({series} > x)")
        ax.legend(fontsize=8)
        ax.set_title(title or f"tail of {series}: k̂ < 0.5 means a finite variance", fontsize=9)
    return fig

"""The figure registry: which configs each figure regenerates from, its data, its plot.

Each :class:`FigureSpec` in :data:`FIGURES` (in paper order) names the experiment config(s)
in ``experiments/`` it is built from, the function turning their runs into the figure's
tidy DataFrame (:mod:`klest.report.figure_data`: exact curves from :func:`klest.exact_moments` on a
dense path through the config's cases, Monte Carlo points from
:func:`klest.studies.experiment.run_experiment`) and the :mod:`klest.report.plots` function
that draws it.
:func:`build_figure` returns ``(Figure, DataFrame)`` and writes nothing; ``klest figures``
saves them (:mod:`klest.report.figure_files`).

>>> list(FIGURES)[:3]
['fig1_rel_std', 'fig2_rel_bias', 'fig3_estimator_curves']
>>> FIGURES["fig1_rel_std"].configs
('gaussian_mean_shift',)
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from klest.divergence.registry import kl
from klest.engine.runner import simulate
from klest.report import figure_data, plots
from klest.report.claims_sequence import sequence_facts
from klest.report.plots_rl import plot_for
from klest.report.plots_truncation import plot_truncation_bias
from klest.studies.experiment import default_experiments_dir, load_config, run_experiment
from klest.studies.rl_studies import load_study, run_study

__all__ = ["FIGURES", "FigureSpec", "Runs", "build_figure"]

#: the estimators of figure 3 (every registered KL estimator of the log-ratio)
CURVE_ESTIMATORS = ("k1", "k2", "k3", "abs", "low_var_kl", "rev_kl")


class Runs:
    """Loads configs and runs each one at most once (figures 1 and 2 share a config).

    ``n`` overrides every case's number of draws (``None``: the config's); ``workers``,
    ``executor`` and ``progress`` are passed to :func:`run_experiment`. Nothing is written.

    >>> runs = Runs(n=1000)
    >>> runs.config("gaussian_mean_shift").n
    1000
    """

    def __init__(
        self,
        experiments_dir: str | Path | None = None,
        *,
        n: int | None = None,
        workers: int = 1,
        executor: Executor | None = None,
        progress: Any = None,
    ) -> None:
        self.directory = Path(experiments_dir) if experiments_dir else default_experiments_dir()
        self.n, self.workers, self.executor, self.progress = n, workers, executor, progress
        self._configs: dict[str, Any] = {}
        self._frames: dict[str, pd.DataFrame] = {}
        self._results: dict[str, list[tuple[Any, Any]]] = {}
        self._data: dict[Callable[[Runs], pd.DataFrame], pd.DataFrame] = {}

    def data(self, build: Callable[[Runs], pd.DataFrame]) -> pd.DataFrame:
        """``build(self)``, computed once (figures 1 and 2 draw the same frame)."""
        if build not in self._data:
            self._data[build] = build(self)
        return self._data[build]

    def config(self, name: str) -> Any:
        """The validated config ``experiments/<name>.toml`` (with ``n`` applied)."""
        if name not in self._configs:
            config = load_config(self.directory / f"{name}.toml")
            self._configs[name] = config.with_overrides(n=self.n)
        return self._configs[name]

    def frame(self, name: str) -> pd.DataFrame:
        """The tidy run frame of a config (:func:`run_experiment`, no output directory)."""
        if name not in self._frames:
            self._frames[name] = run_experiment(
                self.config(name),
                workers=self.workers,
                executor=self.executor,
                progress=self.progress,
            )
        return self._frames[name]

    def results(self, name: str) -> list[tuple[Any, Any]]:
        """``(case, SimulationResult)`` per case, seeded exactly as :func:`run_experiment`
        seeds it (for what the tidy frame does not hold: the streaming histograms)."""
        if name not in self._results:
            config = self.config(name)
            self._results[name] = [
                (
                    case,
                    simulate(
                        case.q,
                        case.p,
                        case.estimators,
                        case.n,
                        seed=config.seed,
                        block_size=config.block_size,
                        workers=self.workers,
                        executor=self.executor,
                        progress=None if callable(self.progress) else self.progress,
                        case=case.index,
                    ),
                )
                for case in config.cases
            ]
        return self._results[name]


@dataclass(frozen=True)
class FigureSpec:
    """One figure: its file stem ``name``, a caption, the configs it regenerates from, how
    their runs become its DataFrame (``data(runs)``) and the plot function that draws it
    (``plot(frame, title=...)``; the title is the first config's, else ``title``)."""

    name: str
    caption: str
    configs: tuple[str, ...]
    data: Callable[[Runs], pd.DataFrame]
    plot: Callable[..., Figure]
    title: str = ""


def _kl_sweep(runs: Runs) -> pd.DataFrame:
    config = runs.config("gaussian_mean_shift")
    return figure_data.kl_sweep_frame(
        config.cases, runs.frame("gaussian_mean_shift"), config.estimators
    )


def _curves(_: Runs) -> pd.DataFrame:
    return figure_data.estimator_curves_frame(CURVE_ESTIMATORS)


def _histograms(runs: Runs) -> pd.DataFrame:
    return pd.concat(
        [
            figure_data.histogram_frame(case.label, kl(case.q, case.p), result, case.estimators)
            for case, result in runs.results("estimator_histograms")
        ],
        ignore_index=True,
    )


def _batch_mse(runs: Runs) -> pd.DataFrame:
    config = runs.config("batch_mse")
    return figure_data.batch_mse_frame(config.cases, runs.frame("batch_mse"), config.estimators)


def _variance_ratio(runs: Runs) -> pd.DataFrame:
    config = runs.config("k3_vs_k1_families")
    return figure_data.variance_ratio_frame(config.cases, runs.frame("k3_vs_k1_families"))


def _study_spec(name: str, caption: str, config: str, title: str) -> FigureSpec:
    """A figure drawn from an RL study config (klest.studies.rl_studies: exact computations, no
    sampling except where the study says so)."""

    def data(runs: Runs) -> pd.DataFrame:
        return run_study(load_study(runs.directory / f"{config}.toml"))

    return FigureSpec(name, caption, (), data, plot_for, title=title)


def _truncation(runs: Runs) -> pd.DataFrame:
    """The truncation_bias study's frame (exact, about 0.6 s)."""
    return run_study(load_study(runs.directory / "rl_truncation.toml"))


def _sequence_gradients(runs: Runs) -> pd.DataFrame:
    """The sequence_gradients study's frame, shared with the claims (computed once)."""
    return sequence_facts(runs.directory)


FIGURES: dict[str, FigureSpec] = {
    spec.name: spec
    for spec in (
        FigureSpec(
            "fig1_rel_std",
            "stdev/true of one sample against the true KL(q||p) along the Gaussian mean "
            "shift: exact curves, Monte Carlo points ± 1 s.e.",
            ("gaussian_mean_shift",),
            _kl_sweep,
            plots.plot_rel_std,
        ),
        FigureSpec(
            "fig2_rel_bias",
            "bias/true against the true KL(q||p), same family: k2's bias/true grows as "
            "mu^2/4, low_var_kl's clamp bias appears at larger KL; right: the Monte "
            "Carlo bias in standard errors",
            ("gaussian_mean_shift",),
            _kl_sweep,
            plots.plot_rel_bias,
        ),
        FigureSpec(
            "fig3_estimator_curves",
            "each estimator as a function of the log-ratio; the clamp regions of low_var_kl shaded",
            (),
            _curves,
            plots.plot_estimator_curves,
            title="Per-sample estimators of KL(q||p) as functions of l = log p(x) - log q(x)",
        ),
        FigureSpec(
            "fig4_histograms",
            "per-sample distributions of k1, k2, k3 at KL(q||p) = 0.005 and 0.5 (the "
            "engine's streaming histograms)",
            ("estimator_histograms",),
            _histograms,
            plots.plot_histograms,
        ),
        FigureSpec(
            "fig5_batch_mse",
            "root-MSE/true of the mean of B samples against B: bias^2 + Var/B, exact lines "
            "and Monte Carlo points",
            ("batch_mse",),
            _batch_mse,
            plots.plot_batch_mse,
        ),
        FigureSpec(
            "fig6_k3_vs_k1",
            "Var[k3]/Var[k1] against the true KL(q||p) for several families; dotted: "
            "where Var[k3] becomes infinite",
            ("k3_vs_k1_families",),
            _variance_ratio,
            plots.plot_variance_ratio,
        ),
        _study_spec(
            "fig7_gradient_table",
            "which KL each estimator x placement really differentiates (softmax policy, exact "
            "expected gradients against the true gradients of KL(pi||ref) and KL(ref||pi))",
            "rl_gradient_table",
            "Expected gradient of each estimator x placement (softmax, exact)",
        ),
        _study_spec(
            "fig8_gradient_coefficients",
            "the coefficient multiplying grad log pi in each estimator's per-sample gradient, "
            "as a function of the log-ratio",
            "rl_gradient_coefficients",
            "Per-sample gradient coefficient against the log-ratio",
        ),
        _study_spec(
            "fig9_bandit_fixed_points",
            "the policy that gradient ascent on E[R] - beta * penalty converges to, per "
            "estimator x placement, against the reverse-KL and forward-KL optima",
            "rl_bandit_fixed_points",
            "Bandit fixed points",
        ),
        _study_spec(
            "fig10_sequence_variance",
            "sequence-level KL(pi||ref): variance of per-token sums, the whole-sequence k3 and "
            "the Rao-Blackwellised estimator against the sequence length (exact, by DP)",
            "rl_sequence_variance",
            "Sequence-level estimators: variance against length",
        ),
        _study_spec(
            "fig11_gaussian_gradient_table",
            "the same gradient analysis for a 1-D Gaussian policy (mean and log-std), exact "
            "by quadrature",
            "rl_gaussian_gradient_table",
            "Expected gradient of each estimator x placement (Gaussian policy, exact)",
        ),
        _study_spec(
            "fig12_offpolicy_bias",
            "relative bias of each framework@version's default KL-term gradient against "
            "grad KL(pi||ref) when tokens come from a behaviour policy mu, against KL(mu||pi) "
            "(exact expectations, softmax policy); releases with identical curves share a "
            "line (a range lists the mirrored releases between its ends); the table and the "
            "verdicts are in claims.md, section Off-policy KL terms",
            "rl_offpolicy",
            "Gradient bias of each framework's default KL term against KL(mu||pi)",
        ),
        FigureSpec(
            "fig13_sequence_gradients",
            "sequence-level KL gradients on a TabularAR pair with an eos: cosine and relative "
            "norm error of each configuration's exact expected gradient (placement x "
            "aggregation x per-token estimator) to grad KL(pi||ref) of the whole response, and "
            "its tr Cov for one response, against the maximum length T; curves equal within a "
            "panel share a line, labelled with their members; the CSV (column table) also "
            "holds the aggregation comparison and the sequential-bandit fixed points; the "
            "partial-vs-full table, the fixed points and the verdicts are in claims.md, section "
            "Sequence-level KL gradients",
            (),
            _sequence_gradients,
            plot_for,
            title="Sequence-level KL gradients: bias and variance of each configuration "
            "against length",
        ),
        FigureSpec(
            "fig14_truncation_bias",
            "exact bias E_mu[k] - KL(pi||ref) of the logged KL (k1) and of the k3 penalty when "
            "the tokens come from vLLM's truncated distribution mu (top_p left, top_k right, "
            "each alone, T = 1), with the trainer's full-vocabulary log-probs (solid) and "
            "replayed on the kept set (dashed; both then unbiased for KL(pi_K||ref_K), so k1 "
            "and k3 coincide), and log S, the bias of the importance log-ratio from the "
            "engine's renormalised log-probs (grey); one position, V = 32,000, logits "
            "-s log i (+ h on token 1): 'zipf: pi sharper' pi s = 1.1, ref s = 1.0; 'zipf: pi "
            "flatter' the reverse; 'peaked' pi s = 1.1, h = 3 (pi(1) = 0.77), ref s = 1.0, "
            "h = 2.5 (ref(1) = 0.55); symlog axis, linear within +-0.01; config "
            "experiments/rl_truncation.toml",
            (),
            _truncation,
            plot_truncation_bias,
            title="Bias of the logged KL (k1) and of the k3 penalty under truncated sampling",
        ),
    )
}


def build_figure(
    name: str,
    *,
    n: int | None = None,
    workers: int = 1,
    executor: Executor | None = None,
    progress: Any = None,
    experiments_dir: str | Path | None = None,
    runs: Runs | None = None,
) -> tuple[Figure, pd.DataFrame]:
    """Regenerate one registered figure: run its config(s) (``n`` draws per case, default
    the config's), build its DataFrame, draw it. Writes nothing. Pass one :class:`Runs` to
    several calls to run shared configs once (it then overrides ``n``, ``workers``, ...).

    >>> fig, frame = build_figure("fig3_estimator_curves")
    >>> len(fig.axes), sorted(frame["estimator"].unique())[:3]
    (2, ['abs', 'k1', 'k2'])
    """
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; registered: {', '.join(FIGURES)}")
    spec = FIGURES[name]
    if runs is None:
        runs = Runs(experiments_dir, n=n, workers=workers, executor=executor, progress=progress)
    frame = runs.data(spec.data)
    title = runs.config(spec.configs[0]).title if spec.configs else spec.title
    return spec.plot(frame, title=title), frame

"""SimulationResult: the statistics of one run, with standard errors and the exact values.

Built by :func:`klest.simulate` from plain data: the merged streaming statistics and the
truths the run computed (:func:`klest.engine.truths.truths`). It computes no exact moment and
no KL; it holds those numbers and derives from them the error bars, a tidy DataFrame,
covariances between estimators, standard errors of differences, the optimal control variate,
histograms and quantiles.

Honest numbers: the headline statistics cover every draw, so a +inf draw makes the mean
+inf (a NaN, or both signs, make it NaN); the finite subset's statistics exist only as
``finite_*`` columns. A standard error is given only where it exists and the draws can
estimate it: not when the exact mean or variance is infinite (nor se_std with an infinite
fourth moment), not when single draws dominate the sample moments, and not when the sample
std is far below a known exact std (the draws missed the mass that carries the variance).
Each such case is flagged (``error_bar`` / ``error_bar_std``), explained in ``note`` and, for
the mean's error bar, listed in ``alarms``: :func:`klest.simulate` warns about those
(:class:`ConvergenceWarning`).
"""

from __future__ import annotations

import functools
import math
import platform
from dataclasses import dataclass, field
from importlib.metadata import version as _installed_version
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy

from klest import estimators as _estimators
from klest._version import __version__
from klest.engine.error_bars import OK, diagnose
from klest.engine.moments import Moments
from klest.engine.plan import RunPlan, stream_versions

if TYPE_CHECKING:  # pandas is imported where a frame is made: `import klest` never loads it
    import pandas as pd

__all__ = ["ConvergenceWarning", "SimulationResult", "software_versions"]

CONTROL_VARIATE = "r-1"


class ConvergenceWarning(UserWarning):
    """A Monte Carlo standard deviation or its error bar does not converge."""


def software_versions() -> dict[str, str]:
    """The versions recorded with every result: klest, its random stream ("klest stream v1",
    :mod:`klest.engine.plan`), NumPy (some families draw through its ``Generator`` methods),
    SciPy, pandas and Python.

    >>> list(software_versions())
    ['klest', 'stream', 'numpy', 'scipy', 'pandas', 'python']
    """
    return {
        "klest": __version__,
        **stream_versions(),
        "scipy": scipy.__version__,
        "pandas": _pandas_version(),
        "python": platform.python_version(),
    }


@functools.cache
def _pandas_version() -> str:
    # read once per process (~2 ms a lookup, in every simulate call): the installed release,
    # without importing pandas (klest's engine processes never load it)
    return _installed_version("pandas")


@dataclass(frozen=True)
class SimulationResult:
    """Monte Carlo statistics of several estimators evaluated on the same draws."""

    estimators: tuple[str, ...]
    n: int
    seed: int
    case: int
    block_size: int
    q: Any
    p: Any
    stats: Moments = field(repr=False)
    edges: np.ndarray | None = field(repr=False)
    #: estimator -> its klest.exact.ExactMoments (None: not asked for, or no exact method)
    exact: dict[str, Any] = field(repr=False)
    exact_notes: dict[str, str] = field(repr=False)
    truth: dict[str, float] = field(repr=False)
    elapsed: float = field(repr=False, compare=False)
    versions: dict[str, str] = field(repr=False, compare=False)
    notes: dict[str, str] = field(repr=False)
    #: estimator -> whether its exact fourth moment E_q[k^4] is finite (absent: unknown)
    fourth_moment_finite: dict[str, bool] = field(repr=False, default_factory=dict)
    #: estimator -> (error_bar, error_bar_std): "ok" or why se_mean / se_std are withheld
    error_bars: dict[str, tuple[str, str]] = field(repr=False, default_factory=dict)
    #: estimators whose note deserves a ConvergenceWarning (a wrong mean or a wrong error bar
    #: of the mean); :func:`klest.simulate` raises it
    alarms: tuple[str, ...] = field(repr=False, default=())

    # ---- construction -------------------------------------------------------------

    @classmethod
    def build(
        cls,
        plan: RunPlan,
        stats: Moments,
        *,
        exact: dict[str, Any],
        exact_notes: dict[str, str],
        truth: dict[str, float],
        fourth_moment_finite: dict[str, bool],
        elapsed: float,
    ) -> SimulationResult:
        """The result of ``plan``'s run from its merged ``stats`` and its truths, given as plain
        data per estimator (:class:`klest.engine.truths.Truths`' fields): the exact moments or
        None, the note on missing truths, the true value and whether E_q[k^4] is finite
        (absent: unknown). Derives the error bars and their notes; warns about nothing."""
        error_bars: dict[str, tuple[str, str]] = {}
        notes: dict[str, str] = {}
        alarms: list[str] = []
        for i, name in enumerate(plan.estimators):
            mom = _series_moments(stats, i)
            found = diagnose(stats, i, mom, exact[name], fourth_moment_finite.get(name))
            error_bars[name] = (found.bar, found.bar_std)
            if found.notes:
                notes[name] = "; ".join(found.notes)
            if found.alarming:
                alarms.append(name)
        return cls(
            estimators=plan.estimators,
            n=plan.n,
            seed=plan.seed,
            case=plan.case,
            block_size=plan.block_size,
            q=plan.q,
            p=plan.p,
            stats=stats,
            edges=plan.edges,
            exact=dict(exact),
            exact_notes=dict(exact_notes),
            truth=dict(truth),
            elapsed=elapsed,
            versions=software_versions(),
            notes=notes,
            fourth_moment_finite=dict(fourth_moment_finite),
            error_bars=error_bars,
            alarms=tuple(alarms),
        )

    # ---- per-estimator numbers ----------------------------------------------------

    def _index(self, name: str) -> int:
        canonical = _estimators.get(name).name if name != CONTROL_VARIATE else name
        if canonical == CONTROL_VARIATE:
            return len(self.estimators)
        if canonical not in self.estimators:
            raise KeyError(f"{name!r} was not simulated; simulated: {', '.join(self.estimators)}")
        return self.estimators.index(canonical)

    def _moments(self, i: int) -> dict[str, float]:
        """Statistics of series i (:func:`_series_moments`)."""
        return _series_moments(self.stats, i)

    def to_frame(self) -> pd.DataFrame:
        """One row per estimator (index: name): Monte Carlo and exact numbers side by side.

        Columns: ``mean var std truth bias rel_bias rel_std se_mean se_std n`` over all
        ``n`` draws (a +inf draw makes ``mean`` +inf, a -inf draw -inf, both or a NaN make it
        NaN), ``error_bar`` / ``error_bar_std`` ("ok", or why ``se_mean`` / ``se_std`` are
        NaN: "non-finite draws", "infinite mean", "infinite variance", "infinite 4th moment",
        "tail-dominated", "variance not converged", "too few draws"), then ``nonfinite
        frac_nonfinite n_posinf n_neginf n_nan``, the finite subset ``finite_n finite_mean
        finite_std`` (never the headline), ``frac_negative min max`` and, where exact moments
        are available, ``exact_mean exact_std exact_bias exact_rel_bias exact_rel_std
        exact_method``, plus ``z_mean`` = (mean - exact_mean)/se_mean (NaN without a valid
        error bar), ``target`` and ``note``.

        >>> import warnings, klest
        >>> q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.0, scale=10.0)
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", ConvergenceWarning)
        ...     row = klest.simulate(q, p, ["k3"], n=10_000, seed=0).to_frame().loc["k3"]
        >>> row["error_bar"], math.isnan(row["se_mean"]), math.isnan(row["z_mean"])
        ('infinite variance', True, True)
        """
        rows = []
        s = self.stats
        for i, name in enumerate(self.estimators):
            mom = self._moments(i)
            bar, bar_std = self.error_bars.get(name, (OK, OK))
            se_mean = mom["se_mean"] if bar == OK else math.nan
            se_std = mom["se_std"] if bar_std == OK else math.nan
            truth = self.truth[name]
            ex = self.exact[name]
            n = mom["n"]
            with np.errstate(all="ignore"):
                bias = mom["mean"] - truth
                row = {
                    "estimator": name,
                    "target": _estimators.get(name).target.label,
                    "mean": mom["mean"],
                    "var": mom["var"],
                    "std": mom["std"],
                    "truth": truth,
                    "bias": bias,
                    "rel_bias": _ratio(bias, truth),
                    "rel_std": _ratio(mom["std"], truth),
                    "se_mean": se_mean,
                    "se_std": se_std,
                    "n": n,
                    "error_bar": bar,
                    "error_bar_std": bar_std,
                    "nonfinite": int(s.nonfinite[i]),
                    "frac_nonfinite": float(s.nonfinite[i]) / max(n, 1),
                    "n_posinf": int(s.posinf[i]),
                    "n_neginf": int(s.neginf[i]),
                    "n_nan": int(s.nan[i]),
                    "finite_n": mom["finite_n"],
                    "finite_mean": mom["finite_mean"],
                    "finite_std": mom["finite_std"],
                    "frac_negative": float(s.negative[i] + s.neginf[i]) / max(n, 1),
                    "min": mom["min"],
                    "max": mom["max"],
                    "exact_mean": float(ex.mean) if ex else math.nan,
                    "exact_std": float(ex.std) if ex else math.nan,
                    "exact_bias": float(ex.bias) if ex else math.nan,
                    "exact_rel_bias": float(ex.rel_bias) if ex else math.nan,
                    "exact_rel_std": float(ex.rel_std) if ex else math.nan,
                    "exact_method": ex.method if ex else "",
                    # NaN, not ±inf, when the estimator is constant (se_mean = 0)
                    "z_mean": _ratio(mom["mean"] - float(ex.mean), se_mean)
                    if ex and se_mean > 0
                    else math.nan,
                    "note": "; ".join(
                        t for t in (self.notes.get(name, ""), self.exact_notes[name]) if t
                    ),
                }
            rows.append(row)
        # deferred: pandas (and the pyarrow it loads) only where a frame is made
        import pandas as pd

        return pd.DataFrame(rows).set_index("estimator", drop=False)

    # ---- paired comparisons -----------------------------------------------------------

    def _all_joint(self) -> bool:
        """Whether the co-moments cover every draw (no series had a non-finite value)."""
        return self.stats.joint_count == self.n

    def covariance(self, *, finite_only: bool = False) -> pd.DataFrame:
        """Sample covariance between estimators (and r - 1) over all n draws.

        Where some series has non-finite draws the co-moments exist only over the draws on
        which every series is finite: the covariances are then NaN (the diagonal keeps each
        series' own variance over all draws: inf with a ±inf draw). ``finite_only=True``
        returns the covariance over those jointly finite draws instead (a subset).
        """
        s = self.stats
        labels = [*self.estimators, CONTROL_VARIATE]
        nj = s.joint_count
        with np.errstate(all="ignore"):
            cov = s.comoment / (nj - 1) if nj > 1 else s.comoment * math.nan
        if not (finite_only or self._all_joint()):
            diagonal = [self._moments(k)["var"] for k in range(len(labels))]
            cov = np.full_like(cov, math.nan)
            np.fill_diagonal(cov, diagonal)
        # deferred: pandas (and the pyarrow it loads) only where a frame is made
        import pandas as pd

        return pd.DataFrame(cov, index=labels, columns=labels)

    def difference(self, a: str, b: str) -> tuple[float, float]:
        """(mean of a - b, its standard error) from the paired draws.

        With non-finite draws of a or b the mean of a - b is ±inf (NaN where the signs can
        cancel or a draw is NaN) and there is no standard error; it is also NaN when either
        estimator's own error bar is withheld (``error_bar`` not "ok") or when other series'
        non-finite draws leave co-moments over a subset only (then the mean is still exact).
        """
        i, j = self._index(a), self._index(b)
        s = self.stats
        if s.nonfinite[i] or s.nonfinite[j]:
            plus = s.posinf[i] > 0 or s.neginf[j] > 0
            minus = s.neginf[i] > 0 or s.posinf[j] > 0
            if s.nan[i] or s.nan[j] or (plus and minus):
                return math.nan, math.nan
            return (math.inf if plus else -math.inf), math.nan
        diff = float(s.mean[i] - s.mean[j])  # both finite on every draw: exact over all
        if not self._all_joint() or not all(
            self.error_bars.get(self._name(k), (OK, OK))[0] == OK for k in (i, j)
        ):
            return diff, math.nan
        nj = s.joint_count
        cov = s.comoment / (nj - 1)
        var = float(cov[i, i] + cov[j, j] - 2.0 * cov[i, j])
        return diff, math.sqrt(max(var, 0.0) / nj)

    def control_variate(self, base: str = "k1") -> dict[str, float]:
        """The optimal control-variate estimator base + λ*(r - 1) (E_q[r - 1] = 0 when p << q).

        λ* = -Cov(base, r - 1) / Var(r - 1) from the sample covariance; returns λ*, the
        mean, variance and std of the combined estimator and the standard error of its mean.
        Non-finite draws of base make the mean ±inf or NaN (λ*, the variance and error bar
        NaN); non-finite r - 1 makes everything NaN. Co-moments over a subset only (other
        series had non-finite draws) leave λ* and the mean, not the variance; the error
        bar is also NaN when base's own error bar is withheld.
        """
        i, c = self._index(base), len(self.estimators)
        s = self.stats
        nan = dict.fromkeys(("lambda", "mean", "var", "std", "se_mean", "var_reduction"), math.nan)
        if s.nonfinite[c]:
            return nan
        if s.nonfinite[i]:
            return {**nan, "mean": self._moments(i)["mean"], "var": self._moments(i)["var"],
                    "std": self._moments(i)["std"]}  # fmt: skip
        nj = s.joint_count
        with np.errstate(all="ignore"):
            cov = s.comoment / (nj - 1)
        if cov[c, c] <= 0 or not np.isfinite(cov[c, c]):
            lam = math.nan
        else:
            lam = float(-cov[i, c] / cov[c, c])
        mean = float(s.mean[i] + lam * s.mean[c])  # marginal means: over every draw
        if not self._all_joint():
            return {**nan, "lambda": lam, "mean": mean}
        var = float(cov[i, i] - cov[i, c] ** 2 / cov[c, c]) if cov[c, c] > 0 else math.nan
        valid = self.error_bars.get(self.estimators[i], (OK, OK))[0] == OK
        return {
            "lambda": lam,
            "mean": mean,
            "var": var,
            "std": math.sqrt(max(var, 0.0)),
            "se_mean": math.sqrt(max(var, 0.0) / nj) if valid else math.nan,
            "var_reduction": float(var / cov[i, i]) if cov[i, i] > 0 else math.nan,
        }

    def _name(self, i: int) -> str:
        return self.estimators[i] if i < len(self.estimators) else CONTROL_VARIATE

    # ---- distributions of per-sample values ------------------------------------------

    def histogram(self, name: str) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(edges, counts, below, above) of ``name``'s finite per-sample values (every 16th
        draw): ``below`` / ``above`` count the finite values outside the bins; non-finite
        values are not binned (``to_frame()`` counts them)."""
        if self.edges is None:
            raise ValueError("no histogram: no finite value was drawn in the first block")
        counts = self.stats.histogram[self._index(name)]
        return self.edges, counts[1:-1], int(counts[0]), int(counts[-1])

    def quantiles(self, name: str, levels: Any = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)):
        """Quantiles interpolated from the histogram (resolution: one bin width) over every
        draw: -inf for a level within the share of -inf draws, +inf within the share of
        +inf draws (those shares are counted over all draws), NaN for a level that falls
        outside the binned range, and NaN everywhere if a draw is NaN.

        >>> import klest
        >>> res = klest.simulate(klest.Normal(loc=0.0, scale=1.0),
        ...                      klest.Normal(loc=0.0, scale=1.0), ["k1"], n=1_000, seed=0)
        >>> res.quantiles("k1", [0.5]).tolist()  # q = p: every draw of k1 is 0
        [0.0]
        """
        edges, counts, below, above = self.histogram(name)
        i = self._index(name)
        s = self.stats
        levels = np.atleast_1d(np.asarray(levels, dtype=np.float64))
        out = np.full(levels.shape, math.nan)
        draws, binned = float(s.count[i] + s.nonfinite[i]), float(counts.sum() + below + above)
        if s.nan[i] or draws == 0:
            return out
        low_share, high_share = s.neginf[i] / draws, s.posinf[i] / draws
        if binned > 0:
            finite_share = s.count[i] / draws
            cum = below + np.concatenate([[0], np.cumsum(counts)])
            cdf = low_share + finite_share * cum / binned
            inside = (levels >= cdf[0]) & (levels <= cdf[-1])
            out[inside] = np.interp(levels[inside], cdf, edges)
        out[(levels <= low_share) & (low_share > 0)] = -math.inf
        out[(levels > 1.0 - high_share) & (high_share > 0)] = math.inf
        return out

    def metadata(self) -> dict[str, Any]:
        """What determines the numbers (seed, n, block size, case, distributions) + versions
        (:func:`software_versions`: klest, the random stream, NumPy, ...)."""
        return {
            "seed": self.seed,
            "n": self.n,
            "block_size": self.block_size,
            "case": self.case,
            "q": self.q.to_dict(),
            "p": self.p.to_dict(),
            "estimators": list(self.estimators),
            "versions": self.versions,
        }


def _ratio(a: float, b: float) -> float:
    with np.errstate(all="ignore"):
        return float(np.divide(a, b))


def _series_moments(s: Moments, i: int) -> dict[str, float]:
    """Headline statistics of series i over all its draws, and those of its finite
    subset (``finite_*``). A +inf draw makes the mean +inf, a -inf draw -inf, both signs
    or a NaN make it NaN; the variance is then infinite (NaN with a NaN draw)."""
    count = int(s.count[i])
    posinf, neginf, nan = int(s.posinf[i]), int(s.neginf[i]), int(s.nan[i])
    mean = float(s.mean[i]) if count else math.nan
    var = float(s.m2[i]) / (count - 1) if count > 1 else math.nan
    var = max(var, 0.0) if not math.isnan(var) else var
    std = math.sqrt(var) if not math.isnan(var) else math.nan
    se_mean = math.sqrt(var / count) if count > 1 else math.nan
    if count > 3 and var > 0:
        mu4 = float(s.m4[i]) / count
        var_of_var = max(mu4 - var * var * (count - 3) / (count - 1), 0.0) / count
        se_std = math.sqrt(var_of_var) / (2.0 * std)
    else:
        se_std = math.nan
    finite = {"finite_n": count, "finite_mean": mean, "finite_std": std}
    n = count + int(s.nonfinite[i])
    if nan or (posinf and neginf):
        mean = var = std = math.nan
    elif posinf or neginf:
        mean, var, std = (math.inf if posinf else -math.inf), math.inf, math.inf
    if nan or posinf or neginf:
        se_mean = se_std = math.nan
    lowest = -math.inf if neginf else (float(s.minimum[i]) if count else math.inf)
    highest = math.inf if posinf else (float(s.maximum[i]) if count else -math.inf)
    if not (count or posinf or neginf):
        lowest = highest = math.nan
    return {
        "n": n, "mean": mean, "var": var, "std": std, "se_mean": se_mean,
        "se_std": se_std, "min": lowest, "max": highest, **finite,
    }  # fmt: skip

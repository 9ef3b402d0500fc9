"""SimulationResult: the statistics of one run, with standard errors and the exact values.

Built by :func:`klest.simulate`; holds the merged streaming statistics and turns them into a
tidy DataFrame, covariances between estimators, standard errors of differences, the optimal
control variate, histograms and quantiles. Non-finite per-sample values are counted and
excluded; a variance that does not converge (infinite exactly, or dominated by single draws)
is flagged and warned about instead of printed as a confident number.
"""

from __future__ import annotations

import math
import platform
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from klest import estimators as _estimators
from klest.moments import Moments

if TYPE_CHECKING:
    from klest.engine import RunPlan
    from klest.exact import ExactMoments

__all__ = ["ConvergenceWarning", "SimulationResult"]

CONTROL_VARIATE = "r-1"
#: a single draw carrying more than this share of the sum of squared (fourth-power)
#: deviations means the variance (its standard error) is not converging
TAIL_DOMINANCE_M2 = 0.1
TAIL_DOMINANCE_M4 = 0.25


class ConvergenceWarning(UserWarning):
    """A Monte Carlo standard deviation or its error bar does not converge."""


def _versions() -> dict[str, str]:
    import scipy

    from klest import __version__

    return {
        "klest": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
    }


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
    exact: dict[str, ExactMoments | None] = field(repr=False)
    exact_notes: dict[str, str] = field(repr=False)
    truth: dict[str, float] = field(repr=False)
    elapsed: float = field(repr=False, compare=False)
    versions: dict[str, str] = field(repr=False, compare=False)
    notes: dict[str, str] = field(repr=False)

    # ---- construction -------------------------------------------------------------

    @classmethod
    def build(
        cls, plan: RunPlan, stats: Moments, *, elapsed: float, with_exact: bool
    ) -> SimulationResult:
        exact: dict[str, Any] = {}
        exact_notes: dict[str, str] = {}
        truth: dict[str, float] = {}
        for name in plan.estimators:
            exact[name], exact_notes[name], truth[name] = _exact_for(plan, name, with_exact)
        result = cls(
            estimators=plan.estimators,
            n=plan.n,
            seed=plan.seed,
            case=plan.case,
            block_size=plan.block_size,
            q=plan.q,
            p=plan.p,
            stats=stats,
            edges=plan.edges,
            exact=exact,
            exact_notes=exact_notes,
            truth=truth,
            elapsed=elapsed,
            versions=_versions(),
            notes={},
        )
        notes, alarming = result._convergence_notes()
        result.notes.update(notes)
        for name in alarming:
            warnings.warn(f"{name}: {notes[name]}", ConvergenceWarning, stacklevel=3)
        return result

    # ---- per-estimator numbers ----------------------------------------------------

    def _index(self, name: str) -> int:
        canonical = _estimators.get(name).name if name != CONTROL_VARIATE else name
        if canonical == CONTROL_VARIATE:
            return len(self.estimators)
        if canonical not in self.estimators:
            raise KeyError(f"{name!r} was not simulated; simulated: {', '.join(self.estimators)}")
        return self.estimators.index(canonical)

    def _moments(self, i: int) -> dict[str, float]:
        s = self.stats
        n = int(s.count[i])
        mean = float(s.mean[i]) if n else math.nan
        var = float(s.m2[i]) / (n - 1) if n > 1 else math.nan
        var = max(var, 0.0) if not math.isnan(var) else var
        std = math.sqrt(var) if not math.isnan(var) else math.nan
        se_mean = math.sqrt(var / n) if n > 1 else math.nan
        if n > 3 and var > 0:
            mu4 = float(s.m4[i]) / n
            var_of_var = max(mu4 - var * var * (n - 3) / (n - 1), 0.0) / n
            se_std = math.sqrt(var_of_var) / (2.0 * std)
        else:
            se_std = math.nan
        return {"n": n, "mean": mean, "var": var, "std": std, "se_mean": se_mean, "se_std": se_std}

    def _convergence_notes(self) -> tuple[dict[str, str], list[str]]:
        """Notes on estimators whose spread does not converge, and which deserve a warning
        (infinite exact variance, or a variance dominated by single draws); an unreliable
        error bar of the std only gets a note."""
        notes: dict[str, str] = {}
        alarming: list[str] = []
        s = self.stats
        for i, name in enumerate(self.estimators):
            ex = self.exact.get(name)
            if ex is not None and not np.isfinite(ex.mean).all():
                notes[name] = (
                    "the exact mean is infinite, so the sample mean, std and their error bars "
                    f"do not converge ({ex.note or 'E = inf'})"
                )
                alarming.append(name)
                continue
            if ex is not None and math.isinf(float(np.max(ex.var))):
                notes[name] = (
                    "the exact variance is infinite, so the sample std and its error bar do "
                    f"not converge ({ex.note or 'Var = inf'})"
                )
                alarming.append(name)
                continue
            if s.count[i] < 2 or s.m2[i] <= 0:
                continue
            worst = max(abs(s.maximum[i] - s.mean[i]), abs(s.mean[i] - s.minimum[i]))
            share2 = worst**2 / s.m2[i]
            share4 = worst**4 / s.m4[i] if s.m4[i] > 0 else 0.0
            n = float(s.count[i])
            # with few draws one of them naturally carries a large share: scale the bar
            if share2 > max(TAIL_DOMINANCE_M2, 20.0 / n):
                notes[name] = (
                    f"one draw carries {share2:.0%} of the sum of squared deviations: the "
                    "variance is dominated by rare extreme values and the std is not reliable"
                )
                alarming.append(name)
            elif share4 > max(TAIL_DOMINANCE_M4, 50.0 / n):
                notes[name] = (
                    f"one draw carries {share4:.0%} of the fourth central moment: the error bar "
                    "of the std (se_std) is not reliable; the variance may be infinite"
                )
        return notes, alarming

    def to_frame(self) -> pd.DataFrame:
        """One row per estimator (index: name): Monte Carlo and exact numbers side by side.

        Columns: ``mean var std truth bias rel_bias rel_std se_mean se_std n`` then
        ``nonfinite frac_negative min max`` and, where exact moments are available,
        ``exact_mean exact_std exact_bias exact_rel_bias exact_rel_std exact_method``, plus
        ``z_mean`` = (mean - exact_mean)/se_mean, ``target`` and ``note``.
        """
        rows = []
        s = self.stats
        for i, name in enumerate(self.estimators):
            mom = self._moments(i)
            truth = self.truth[name]
            ex = self.exact[name]
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
                    "se_mean": mom["se_mean"],
                    "se_std": mom["se_std"],
                    "n": mom["n"],
                    "nonfinite": int(s.nonfinite[i]),
                    "frac_negative": float(s.negative[i]) / max(mom["n"], 1),
                    "min": float(s.minimum[i]),
                    "max": float(s.maximum[i]),
                    "exact_mean": float(ex.mean) if ex else math.nan,
                    "exact_std": float(ex.std) if ex else math.nan,
                    "exact_bias": float(ex.bias) if ex else math.nan,
                    "exact_rel_bias": float(ex.rel_bias) if ex else math.nan,
                    "exact_rel_std": float(ex.rel_std) if ex else math.nan,
                    "exact_method": ex.method if ex else "",
                    # NaN, not ±inf, when the estimator is constant (se_mean = 0)
                    "z_mean": _ratio(mom["mean"] - float(ex.mean), mom["se_mean"])
                    if ex and mom["se_mean"] > 0
                    else math.nan,
                    "note": "; ".join(
                        t for t in (self.notes.get(name, ""), self.exact_notes[name]) if t
                    ),
                }
            rows.append(row)
        return pd.DataFrame(rows).set_index("estimator", drop=False)

    # ---- paired comparisons -----------------------------------------------------------

    def covariance(self) -> pd.DataFrame:
        """Sample covariance between estimators (and r - 1), over draws where all are finite."""
        s = self.stats
        labels = [*self.estimators, CONTROL_VARIATE]
        cov = s.comoment / (s.joint_count - 1) if s.joint_count > 1 else s.comoment * math.nan
        return pd.DataFrame(cov, index=labels, columns=labels)

    def difference(self, a: str, b: str) -> tuple[float, float]:
        """(mean of a - b, its standard error) from the paired draws."""
        i, j = self._index(a), self._index(b)
        s = self.stats
        nj = s.joint_count
        cov = s.comoment / (nj - 1)
        diff = float(s.joint_mean[i] - s.joint_mean[j])
        var = float(cov[i, i] + cov[j, j] - 2.0 * cov[i, j])
        return diff, math.sqrt(max(var, 0.0) / nj)

    def control_variate(self, base: str = "k1") -> dict[str, float]:
        """The optimal control-variate estimator base + λ*(r - 1) (E_q[r - 1] = 0 when p << q).

        λ* = -Cov(base, r - 1) / Var(r - 1) from the sample covariance; returns λ*, the
        mean, variance and std of the combined estimator and the standard error of its mean.
        """
        i, c = self._index(base), len(self.estimators)
        s = self.stats
        nj = s.joint_count
        cov = s.comoment / (nj - 1)
        if cov[c, c] <= 0 or not np.isfinite(cov[c, c]):
            lam = math.nan
        else:
            lam = float(-cov[i, c] / cov[c, c])
        var = float(cov[i, i] - cov[i, c] ** 2 / cov[c, c]) if cov[c, c] > 0 else math.nan
        mean = float(s.joint_mean[i] + lam * s.joint_mean[c])
        return {
            "lambda": lam,
            "mean": mean,
            "var": var,
            "std": math.sqrt(max(var, 0.0)),
            "se_mean": math.sqrt(max(var, 0.0) / nj),
            "var_reduction": float(var / cov[i, i]) if cov[i, i] > 0 else math.nan,
        }

    # ---- distributions of per-sample values ------------------------------------------

    def histogram(self, name: str) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(edges, counts, below, above) of ``name``'s per-sample values (every 16th draw)."""
        if self.edges is None:
            raise ValueError("no histogram: no finite value was drawn in the first block")
        counts = self.stats.histogram[self._index(name)]
        return self.edges, counts[1:-1], int(counts[0]), int(counts[-1])

    def quantiles(self, name: str, levels: Any = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)):
        """Quantiles interpolated from the histogram (resolution: one bin width); NaN for a
        level that falls outside the binned range."""
        edges, counts, below, above = self.histogram(name)
        total = counts.sum() + below + above
        cdf = (below + np.concatenate([[0], np.cumsum(counts)])) / total
        levels = np.atleast_1d(np.asarray(levels, dtype=np.float64))
        out = np.interp(levels, cdf, edges)
        out[(levels < cdf[0]) | (levels > cdf[-1])] = np.nan
        return out

    def metadata(self) -> dict[str, Any]:
        """What determines the numbers (seed, n, block size, case, distributions) + versions."""
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


def _exact_for(plan: RunPlan, name: str, with_exact: bool) -> tuple[Any, str, float]:
    """(ExactMoments or None, note, truth) for one estimator."""
    from klest.divergence import kl
    from klest.exact import exact_moments

    est = _estimators.get(name)
    if with_exact:
        try:
            ex = exact_moments(plan.q, plan.p, name)
            return ex, "", float(ex.truth)
        except NotImplementedError as err:
            note = f"no exact moments: {err}"
    else:
        note = ""
    try:
        if est.target.kind == "kl_qp":
            return None, note, float(kl(plan.q, plan.p))
        if est.target.kind == "kl_pq":
            return None, note, float(kl(plan.p, plan.q))
    except NotImplementedError as err:
        note = "; ".join(t for t in (note, f"no true value: {err}") if t)
    return None, note, math.nan

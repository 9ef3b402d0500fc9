"""When a Monte Carlo error bar exists: the rules behind ``error_bar`` / ``error_bar_std``.

:class:`klest.engine.results.SimulationResult` gives the standard error of the mean (se_mean) and
of the std (se_std) only where it exists and the draws can estimate it. Each rule below
withholds one or both and says why (:func:`diagnose`):

- non-finite draws: the mean is ±inf or NaN, so neither error bar exists;
- an infinite exact mean or variance: the sample mean has no standard error (and the
  sample std does not converge); an infinite exact fourth moment E_q[k^4]: se_std does
  not exist (checked as the exact variance of k^2 by
  :func:`klest.engine.truths.fourth_moment_finite`);
- a known finite exact variance that the sample std falls far below
  (:func:`missed_mass_floor`): the draws missed the rare values that carry the variance,
  so any error bar from them is far too small;
- exact moments unknown: single draws dominating the sample moments (tail dominance) show
  that the variance (the fourth moment) is not converging.

>>> missed_mass_floor(10_000)
0.25
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "INFINITE_FOURTH",
    "INFINITE_MEAN",
    "INFINITE_VARIANCE",
    "NONFINITE",
    "NOT_CONVERGED",
    "OK",
    "TAIL_DOMINATED",
    "TOO_FEW",
    "Diagnosis",
    "diagnose",
    "missed_mass_floor",
]

#: a single draw carrying more than this share of the sum of squared (fourth-power)
#: deviations means the variance (its standard error) is not converging
TAIL_DOMINANCE_M2 = 0.1
TAIL_DOMINANCE_M4 = 0.25
#: a sample std below this share of a known finite exact std: the draws missed the rare values
#: that carry the variance (every error bar would be less than half the true standard error)
MISSED_MASS_STD_SHARE = 0.5
#: ... and below what a Gaussian sample of that size shows with this probability (few draws)
MISSED_MASS_GAUSSIAN_LEVEL = 1e-6

#: values of the ``error_bar`` / ``error_bar_std`` columns: "ok" or why there is no error bar
OK = "ok"
NONFINITE = "non-finite draws"
INFINITE_MEAN = "infinite mean"
INFINITE_VARIANCE = "infinite variance"
INFINITE_FOURTH = "infinite 4th moment"
TAIL_DOMINATED = "tail-dominated"
NOT_CONVERGED = "variance not converged"
TOO_FEW = "too few draws"


@dataclass
class Diagnosis:
    """Whether se_mean (``bar``) and se_std (``bar_std``) are valid ("ok") or why not, the
    notes that say why, and whether that deserves a warning (``alarming``: a wrong mean or a
    wrong error bar of the mean)."""

    bar: str = OK
    bar_std: str = OK
    notes: list[str] | None = None
    alarming: bool = False

    def flag(self, mean_reason: str | None, std_reason: str | None) -> None:
        """Withhold the error bars for these reasons (the first reason found is kept)."""
        if mean_reason and self.bar == OK:
            self.bar = mean_reason
        if std_reason and self.bar_std == OK:
            self.bar_std = std_reason

    def note(self, text: str, alarming: bool = False) -> None:
        self.notes = [*(self.notes or []), text]
        self.alarming = self.alarming or alarming


def missed_mass_floor(count: int) -> float:
    """The share of a known exact variance below which a sample variance of ``count`` draws
    means the draws missed the mass that carries the variance.

    The sample std is then below half the exact std (every error bar would understate the
    true standard error by more than a factor 2), and below what a Gaussian sample of that
    size shows with probability 1e-6 (the chi-square quantile: this guard only matters for
    fewer than ~50 draws). For a healthy estimator with kurtosis k, Maurer's lower-tail
    bound for the mean of the non-negative squared deviations gives
    P(s^2 < var / 4) <= exp(-0.28 count / k): the rule fires only when ``count`` is not
    large against the kurtosis, i.e. when the variance has not converged.

    >>> round(missed_mass_floor(10), 4), missed_mass_floor(10_000)
    (0.0254, 0.25)
    """
    # deferred: scipy.stats is most of a cold `import klest` (of every worker process)
    from scipy.stats import chi2

    gaussian = float(chi2.ppf(MISSED_MASS_GAUSSIAN_LEVEL, count - 1)) / (count - 1)
    return min(MISSED_MASS_STD_SHARE**2, gaussian)


def _text(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:g}"


def diagnose(
    stats: Any, i: int, mom: dict[str, float], exact: Any, fourth_finite: bool | None
) -> Diagnosis:
    """The error-bar diagnosis of series ``i`` of the streaming ``stats``
    (:class:`klest.engine.moments.Moments`), from its statistics ``mom``
    (``SimulationResult._moments``), its exact moments ``exact`` (None: unknown) and
    ``fourth_finite`` (:func:`klest.engine.truths.fourth_moment_finite`).

    Pure: it reads the numbers it is given and computes no exact moment."""
    s, d = stats, Diagnosis()
    if s.nonfinite[i]:
        n, bad = mom["n"], int(s.nonfinite[i])
        kinds = [f"{k:,} {label}" for k, label in (
            (int(s.posinf[i]), "+inf"), (int(s.neginf[i]), "-inf"), (int(s.nan[i]), "NaN")
        ) if k]  # fmt: skip
        d.note(
            f"{bad:,} of {n:,} draws ({100 * bad / n:.3g}%) are non-finite "
            f"({', '.join(kinds)}): the mean is {_text(mom['mean'])} and there is no "
            f"error bar; the finite_* columns describe the {mom['finite_n']:,} finite "
            "draws only",
            alarming=True,
        )
        d.flag(NONFINITE, NONFINITE)
    if exact is not None and not np.isfinite(exact.mean).all():
        d.note(
            "the exact mean is infinite, so the sample mean, std and their error bars "
            f"do not converge: no error bars ({exact.note or 'E = inf'})",
            alarming=True,
        )
        d.flag(INFINITE_MEAN, INFINITE_MEAN)
    elif exact is not None and math.isinf(float(np.max(exact.var))):
        beyond = "float64" in exact.note  # finite, but too large for a double
        d.note(
            f"the exact variance is {'beyond the float64 range' if beyond else 'infinite'}"
            ", so the sample std does not converge and the mean has no standard error: no "
            f"error bars ({exact.note or 'Var = inf'})",
            alarming=True,
        )
        d.flag(INFINITE_VARIANCE, INFINITE_VARIANCE)
    elif exact is not None and math.isfinite(float(exact.var)) and d.bar == OK:
        exact_var, count = float(exact.var), mom["finite_n"]
        if count > 1 and exact_var > 0 and mom["var"] < missed_mass_floor(count) * exact_var:
            d.note(
                f"the sample std ({mom['std']:.3g}) is far below the exact std "
                f"({math.sqrt(exact_var):.3g}): the draws miss the rare values that carry "
                "the variance, so an error bar from them would be far too small: no "
                "error bars",
                alarming=True,
            )
            d.flag(NOT_CONVERGED, NOT_CONVERGED)
        elif fourth_finite is False:
            d.note(
                "the exact fourth moment is infinite, so the std has no standard error "
                "(no error bar on the std)"
            )
            d.flag(None, INFINITE_FOURTH)
    _tail_dominance(d, s, i, exact, fourth_finite)
    if d.bar == OK and mom["finite_n"] < 2:
        d.flag(TOO_FEW, TOO_FEW)
    if d.bar_std == OK and mom["finite_n"] < 4:
        d.flag(None, TOO_FEW)
    return d


def _tail_dominance(d: Diagnosis, s: Any, i: int, exact: Any, fourth_finite: bool | None) -> None:
    """The draws' tail heuristics, standing in for exact moments that are not known: a known
    finite exact variance (fourth moment) leaves the error bar of the mean (std) to the
    missed-mass check."""
    known_var = exact is not None and math.isfinite(float(np.max(exact.var)))
    known_fourth = known_var and fourth_finite is True
    if not ((d.bar == OK or d.bar_std == OK) and s.count[i] > 1 and s.m2[i] > 0):
        return
    worst = max(abs(s.maximum[i] - s.mean[i]), abs(s.mean[i] - s.minimum[i]))
    share2 = worst**2 / s.m2[i]
    share4 = worst**4 / s.m4[i] if s.m4[i] > 0 else 0.0
    count = float(s.count[i])
    # with few draws one of them naturally carries a large share: scale the bar
    if share2 > max(TAIL_DOMINANCE_M2, 20.0 / count) and known_var:
        d.note(
            f"one draw carries {share2:.0%} of the sum of squared deviations: the "
            "sample variance converges slowly (the exact variance is finite"
            + (")" if known_fourth else "; no error bar on the std)")
        )
        d.flag(None, None if known_fourth else TAIL_DOMINATED)
    elif share2 > max(TAIL_DOMINANCE_M2, 20.0 / count):
        d.note(
            f"one draw carries {share2:.0%} of the sum of squared deviations: the "
            "variance is dominated by rare extreme values, the std and the error bars "
            "are not reliable: no error bars",
            alarming=True,
        )
        d.flag(TAIL_DOMINATED, TAIL_DOMINATED)
    elif d.bar_std == OK and not known_fourth and share4 > max(TAIL_DOMINANCE_M4, 50.0 / count):
        d.note(
            f"one draw carries {share4:.0%} of the fourth central moment: the error "
            "bar of the std (se_std) is not reliable, the variance may be infinite "
            "(no error bar on the std)"
        )
        d.flag(None, TAIL_DOMINATED)

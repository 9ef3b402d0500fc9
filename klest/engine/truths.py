"""The true values a run is compared with: exact moments, the KL each estimator targets, and
whether its fourth moment is finite -- computed once per run by :func:`klest.simulate`.

:func:`truths` is the only place where the engine calls :mod:`klest.exact` and
:mod:`klest.divergence`; :class:`klest.engine.results.SimulationResult` receives its output as
plain data (:class:`Truths`) and only holds and derives.

>>> import klest
>>> t = truths(klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=1.0, scale=1.0), ("k1",))
>>> t.value, t.exact["k1"].method, t.fourth_moment_finite
({'k1': 0.5}, 'closed_form', {'k1': True})
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from klest import estimators as _estimators
from klest.distributions.base import Distribution
from klest.divergence.registry import kl
from klest.exact.moments import ExactMoments, exact_moments

__all__ = ["Truths", "fourth_moment_finite", "truths"]


@dataclass(frozen=True)
class Truths:
    """Per estimator: its exact moments (None: not asked for, or no exact method), the note
    that says why they are missing (or why there is no true value), its true value (NaN:
    unknown) and, where known, whether its exact fourth moment E_q[k^4] is finite."""

    exact: dict[str, ExactMoments | None]
    notes: dict[str, str]
    value: dict[str, float]
    fourth_moment_finite: dict[str, bool]


def truths(q: Distribution, p: Distribution, names: Sequence[str], *, exact: bool = True) -> Truths:
    """The truths of estimators ``names`` (canonical names) for draws x ~ q of the pair (q, p);
    ``exact=False`` skips the exact moments (the true value is still the KL)."""
    moments: dict[str, ExactMoments | None] = {}
    notes: dict[str, str] = {}
    value: dict[str, float] = {}
    fourth: dict[str, bool] = {}
    divergences: dict[str, float] = {}  # KL(q||p), KL(p||q): each computed once per run
    for name in names:
        moments[name], notes[name], value[name] = _truth_of(q, p, name, exact, divergences)
        finite = fourth_moment_finite(q, p, name, moments[name])
        if finite is not None:
            fourth[name] = finite
    return Truths(exact=moments, notes=notes, value=value, fourth_moment_finite=fourth)


def _truth_of(
    q: Distribution, p: Distribution, name: str, with_exact: bool, divergences: dict[str, float]
) -> tuple[ExactMoments | None, str, float]:
    """(ExactMoments or None, note, truth) for one estimator; ``divergences`` keeps the KLs
    already computed in this run, by target kind."""
    est = _estimators.get(name)
    if with_exact:
        try:
            ex = exact_moments(q, p, name)
            return ex, "", float(ex.truth)
        except NotImplementedError as err:  # NoExactMethodError, or a family without a form
            note = f"no exact moments: {err}"
    else:
        note = ""
    kind = est.target.kind
    try:
        if kind in ("kl_qp", "kl_pq"):
            if kind not in divergences:
                divergences[kind] = float(kl(q, p) if kind == "kl_qp" else kl(p, q))
            return None, note, divergences[kind]
    except NotImplementedError as err:  # NoKLMethodError
        note = "; ".join(t for t in (note, f"no true value: {err}") if t)
    return None, note, math.nan


def _squared(est: _estimators.Estimator) -> _estimators.Estimator:
    """The estimator k(l)^2 (its exact variance is finite iff E_q[k^4] is)."""
    terms = None
    if est.terms is not None:
        terms = tuple((a * b, j + k, r + t) for a, j, r in est.terms for b, k, t in est.terms)
    return _estimators.Estimator(
        name=f"({est.name})^2", fn=lambda x: np.square(est.fn(x)), target=est.target,
        unbiased=False, nonnegative=True, source=f"square of {est.name}",
        formula=f"({est.formula})^2", terms=terms,
        log_abs_fn=lambda x: 2.0 * est.log_abs(x), kinks=est.kinks,
    )  # fmt: skip


def fourth_moment_finite(q: Any, p: Any, name: str, exact: Any) -> bool | None:
    """Whether E_q[k^4] of estimator ``name`` is finite, from the exact variance of k^2
    (None: not known, or not needed because ``exact``'s variance is infinite or unknown).

    >>> import klest
    >>> q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.5, scale=1.3)
    >>> fourth_moment_finite(q, p, "k3", klest.exact_moments(q, p, "k3"))  # E_q[r^4] = inf
    False
    """
    if exact is None or not math.isfinite(float(np.max(exact.var))):
        return None
    try:  # floating-point warnings of this auxiliary integral would only confuse
        with np.errstate(all="ignore"):
            var = float(exact_moments(q, p, _squared(_estimators.get(name))).var)
    except (NotImplementedError, ArithmeticError, ValueError):
        return None  # an auxiliary check: without it the draws' tail heuristics still apply
    return None if math.isnan(var) else math.isfinite(var)

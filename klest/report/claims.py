"""klest's verdicts on published claims about the k1/k2/k3 estimators, from exact moments.

Each :class:`Claim` is tested on every case (or every family, for claims about trends) of a
panel of (q, p) pairs, by default the cases of ``experiments/claims.toml``. A test returns
whether the claim holds there and the number that decides it, computed by
:func:`klest.exact_moments` (closed form, quadrature or enumeration: no sampling). The
verdict is "true" when the claim holds on every case, "false" when on none, "partly true"
otherwise; ``holds_for`` and ``fails_for`` list the cases with their numbers.

Vague words get a stated threshold: "much lower" / "≪" is a ratio <= 0.1, "strongly
biased" is |bias/true| >= 0.5, "(exactly) unbiased" is |bias/true| <= 1e-9 (the exact
methods' accuracy), "biased" is |bias/true| > 1e-9.

The claims about framework KL terms off-policy (:mod:`klest.report.claims_offpolicy`, on the
policies of ``experiments/rl_offpolicy.toml``) follow in :func:`claims_frame`, as a section of
their own (:func:`evaluate_offpolicy_claims`).

>>> from klest.studies.experiment import parse_config
>>> config = parse_config({"name": "x", "estimators": ["k1"], "n": 1, "cases": [{"label": "A",
...     "q": {"family": "normal", "loc": 0.0, "scale": 1.0},
...     "p": {"family": "normal", "loc": 1.0, "scale": 1.0}}]})
>>> frame = evaluate_claims(config.cases)
>>> frame.set_index("key").loc["k3_unbiased", "verdict"]
'true'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from klest.divergence.registry import kl
from klest.estimators import KL_QP, Estimator
from klest.estimators import get as get_estimator
from klest.exact.moments import ExactMoments, exact_moments
from klest.report.claims_offpolicy import (
    OFFPOLICY_CLAIMS,
    OFFPOLICY_TITLE,
    OffPolicyClaim,
    offpolicy_facts,
    offpolicy_preamble,
)
from klest.report.claims_sequence import (
    SEQUENCE_CLAIMS,
    SEQUENCE_TITLE,
    SequenceClaim,
    sequence_facts,
    sequence_preamble,
)
from klest.report.figure_data import dense_path
from klest.studies.experiment import default_experiments_dir, load_config

__all__ = [
    "CLAIMS",
    "PREAMBLE",
    "Claim",
    "Facts",
    "claims_frame",
    "evaluate_claims",
    "evaluate_offpolicy_claims",
    "evaluate_sequence_claims",
    "facts",
]

LI = 'Shilong Li, "KL Divergence的三种估计方法" (2025)'
UNUSUAL = '"An unusual look of the KL-Divergence Term in Deep Seek R1 Training Objective" (2025)'
ESTIMATORS = ("k1", "k2", "k3", "abs", "low_var_kl")
EXACT = 1e-9  # |bias/true| at or below this: exactly unbiased (the exact methods' accuracy)
MUCH = 0.1  # "much lower", "≪": a ratio at or below this
STRONG = 0.5  # "strongly biased": |bias/true| at or above this
BATCHES = (1, 1000)  # batch sizes at which "most effective" compares the MSE of the mean
RIVALS = ("k1", "k2", "k3")  # the estimators the "most effective" claim compares
FAR = np.geomspace(1e2, 1e8, 13)  # where the log-ratio's growth is probed (continuous q)

#: the log-ratios where k3 reaches low_var_kl's output clamp (its inner kinks)
_CLAMP = get_estimator("low_var_kl").kinks[1:3]
#: how the verdicts are reached (for claims.md)
PREAMBLE = (
    "Each claim is tested on every (q, p) pair of `experiments/claims.toml` (x ~ q, reference "
    "p; claims about trends on each family of pairs) with exact moments from "
    "`klest.exact_moments` (closed form, quadrature or enumeration; nothing sampled). Verdict: "
    "**true** if the claim holds on every pair, **false** if on none, **partly true** "
    "otherwise; the pairs where it holds and fails are listed with the deciding numbers. "
    f'Thresholds: "exactly unbiased" is |bias/true| <= {EXACT:g}, "biased" above it; '
    f'"much lower" and "≪" are a ratio <= {MUCH:g}; "strongly biased" is '
    f"|bias/true| >= {STRONG:g}. Regenerate with `klest figures --only claims`."
)
_K1_NEGATIVE = Estimator(
    "1[k1 < 0]",
    lambda l: (l > 1e-12).astype(np.float64),
    KL_QP,
    unbiased=False,
    nonnegative=True,
    source="klest.report.claims",
    formula="1[log r > 0]",
    kinks=(0.0,),
)


@dataclass(frozen=True)
class Facts:
    """Exact facts of one case: the moments of each estimator and the log-ratio's range.

    ``p_k1_negative`` is P_q(k1 < 0) = P_q(r > 1); ``lr_low``/``lr_high`` bound the
    log-ratio on q's support (±inf where it grows without bound); ``mean_r`` is E_q[r]
    (1 exactly when p << q).
    """

    label: str
    group: str
    kl_qp: float
    moments: dict[str, ExactMoments]
    p_k1_negative: float
    lr_low: float
    lr_high: float
    mean_r: float

    def var(self, name: str) -> float:
        return float(self.moments[name].var)

    def rel_bias(self, name: str) -> float:
        return float(self.moments[name].rel_bias)

    def mse(self, name: str, batch: int) -> float:
        m = self.moments[name]
        return float(m.bias) ** 2 + float(m.var) / batch

    def where(self) -> str:
        return f"{self.label} (KL(q||p) = {self.kl_qp:.3g})"


def _log_ratio_range(q: Any, p: Any) -> tuple[float, float]:
    """(inf, sup) of log p(x) - log q(x) over q's support: exact for finite discrete q; for
    1-D continuous q the quantiles plus far points out to |x| = 1e8, a side counted as
    unbounded (±inf) when the log-ratio there still grows (10x from |x| = 1e4 to 1e8)."""
    support = q.support
    if support.finite:
        x = np.arange(support.low, support.high + 1)
        x = x[np.isfinite(q.log_prob(x))]
        lr = p.log_prob(x) - q.log_prob(x)
        lr[np.abs(lr) < 1e-12] = 0.0  # rounding of renormalised probabilities
        return float(lr.min()), float(lr.max())
    inner = q.quantile(np.linspace(1e-9, 1 - 1e-9, 2001))
    low, high = math.inf, -math.inf
    for side in (-1.0, 1.0):
        x = side * FAR
        x = x[(x > support.low) & (x < support.high)]
        pts = np.concatenate([inner, x])
        with np.errstate(invalid="ignore", over="ignore"):
            lr = p.log_prob(pts) - q.log_prob(pts)
        lr = lr[~np.isnan(lr)]
        low, high = min(low, float(lr.min())), max(high, float(lr.max()))
        if x.size:
            far = p.log_prob(x[[0, -1]]) - q.log_prob(x[[0, -1]])  # |x| = 1e2 ... 1e8
            grows = abs(far[-1]) > 10 * abs(p.log_prob(side * 1e4) - q.log_prob(side * 1e4))
            if grows and abs(far[-1]) > 1e3:
                low, high = (-math.inf, high) if far[-1] < 0 else (low, math.inf)
    return low, high


def facts(case: Any) -> Facts:
    """The exact facts of one case (``label group q p``, e.g. a config's ``CaseConfig``)."""
    moments = {name: exact_moments(case.q, case.p, name) for name in ESTIMATORS}
    low, high = _log_ratio_range(case.q, case.p)
    mean_r = 1.0 + float(moments["k3"].mean) - float(moments["k1"].mean)
    return Facts(
        case.label,
        case.group or case.label,
        kl(case.q, case.p),
        moments,
        float(exact_moments(case.q, case.p, _K1_NEGATIVE).mean),
        low,
        high,
        mean_r,
    )


# --------------------------------------------------------------------------------------
# The claims
# --------------------------------------------------------------------------------------

#: a test: the case's facts -> (holds, the deciding number, how to show it)
Test = Callable[[Facts], tuple[bool, float, str]]


@dataclass(frozen=True)
class Claim:
    """One published claim: its ``key``, ``source``, wording, the reason behind the test
    (``why``) and the ``test`` run on each case (or, with ``per_group``, on each family's
    list of cases, along the dense path through them)."""

    key: str
    source: str
    text: str
    why: str
    test: Callable[[Any], tuple[bool, float, str]]
    per_group: bool = False


def _g(x: float) -> str:
    return f"{x:.3g}"


def _rb(x: float) -> str:
    """bias/true; below the exact methods' accuracy it is shown as 0 (rounding noise)."""
    return f"0 (|·| <= {EXACT:g})" if abs(x) <= EXACT else _g(x)


def _unbiased(name: str) -> Test:
    def test(f: Facts) -> tuple[bool, float, str]:
        rb = f.rel_bias(name)
        return abs(rb) <= EXACT, rb, f"bias/true = {_rb(rb)}"

    return test


def _biased(name: str) -> Test:
    def test(f: Facts) -> tuple[bool, float, str]:
        rb = f.rel_bias(name)
        return abs(rb) > EXACT, rb, f"bias/true = {_rb(rb)}"

    return test


def _var_ratio(a: str, b: str, bound: float) -> Test:
    def test(f: Facts) -> tuple[bool, float, str]:
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = float(np.divide(f.var(a), f.var(b)))
        return bool(ratio <= bound), ratio, f"Var[{a}]/Var[{b}] = {_g(ratio)}"

    return test


def _k1_tails(f: Facts) -> tuple[bool, float, str]:
    lo, hi = -f.lr_high, -f.lr_low  # k1 = -log r
    shown = f"k1 in [{_g(lo)}, {_g(hi)}], P(k1 < 0) = {_g(f.p_k1_negative)}"
    return bool(math.isinf(lo) and math.isinf(hi)), f.p_k1_negative, shown


def _abs_strong(f: Facts) -> tuple[bool, float, str]:
    rb = f.rel_bias("abs")
    return rb >= STRONG, rb, f"bias/true = {_g(rb)}"


def _clamp_lowers(f: Facts) -> tuple[bool, float, str]:
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = float(np.divide(f.var("low_var_kl"), f.var("k3")))
    cost = f"at bias/true {_rb(f.rel_bias('low_var_kl'))}"
    if math.isinf(f.var("k3")):
        shown = f"Var[k3] = inf, Var[low_var_kl] = {_g(f.var('low_var_kl'))} {cost}"
    else:
        shown = f"Var[low_var_kl]/Var[k3] = {ratio:.6g} {cost}"
    return bool(ratio < 1.0 - 1e-9), ratio, shown


def _k3_positive(f: Facts) -> tuple[bool, float, str]:
    ends = get_estimator("k3")(np.array([f.lr_low, f.lr_high]))
    low = 0.0 if f.lr_low <= 0.0 <= f.lr_high else float(np.min(ends))
    return low >= 0.0, low, f"min k3 = {_g(low)}, P(k1 < 0) = {_g(f.p_k1_negative)}"


def _k3_best_of_both(f: Facts) -> tuple[bool, float, str]:
    ratio = f.var("k3") / f.var("k2")
    unbiased = abs(f.rel_bias("k3")) <= EXACT
    ok = unbiased and ratio <= 1.0 + 1e-9
    return ok, ratio, f"bias/true(k3) = {_rb(f.rel_bias('k3'))}, Var[k3]/Var[k2] = {_g(ratio)}"


def _k3_most_effective(f: Facts) -> tuple[bool, float, str]:
    parts, worst = [], 0.0
    for batch in BATCHES:
        mse = {name: f.mse(name, batch) for name in RIVALS}
        best = min(mse, key=lambda name: mse[name])
        ratio = mse["k3"] / mse[best]
        worst = max(worst, ratio)
        parts.append(f"B = {batch}: lowest MSE {best}, MSE(k3)/lowest = {ratio:.3g}")
    return worst <= 1.0 + 1e-9, worst, "; ".join(parts)


def _k2_bias_grows(cases: Sequence[Any]) -> tuple[bool, float, str]:
    path = dense_path([(c.q, c.p) for c in cases])
    kls = np.array([kl(q, p) for q, p in path])
    bias = np.array([abs(float(exact_moments(q, p, "k2").bias)) for q, p in path])
    order = np.argsort(kls)
    grows = bool(np.all(np.diff(bias[order]) >= -1e-12 * bias[order][1:]))
    rel = bias[order] / kls[order]
    shown = (
        f"|bias| of k2 {_g(bias[order][0])} -> {_g(bias[order][-1])} as KL(q||p) "
        f"{_g(kls[order][0])} -> {_g(kls[order][-1])} (|bias|/true {_g(rel[0])} -> "
        f"{_g(rel[-1])})"
    )
    return grows, float(rel[-1]), shown


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "k1_unbiased",
        LI,
        "k1 is unbiased",
        "E_q[-log r] = KL(q||p) by definition.",
        _unbiased("k1"),
    ),
    Claim(
        "k1_tails",
        LI,
        "k1's per-sample values reach ±∞ (heavy two-sided tails)",
        "k1 = -log r takes both signs whenever p != q and p << q (then E_q[r] = 1 forces "
        "r > 1 somewhere), but is unbounded on both sides only where the log-ratio is.",
        _k1_tails,
    ),
    Claim(
        "abs_strongly_biased",
        LI,
        "abs = |log r| is strongly biased",
        f"Strongly: |bias/true| >= {STRONG}.",
        _abs_strong,
    ),
    Claim(
        "k2_biased_li",
        LI,
        "k2 is biased (a second-order approximation)",
        "E_q[(log r)^2]/2 matches KL(q||p) only to second order in log r.",
        _biased("k2"),
    ),
    Claim(
        "k2_medium_low_variance",
        LI,
        "k2 has medium-low variance (below k1's)",
        "Tested as Var[k2] <= Var[k1].",
        _var_ratio("k2", "k1", 1.0),
    ),
    Claim(
        "k3_biased",
        LI,
        "k3 is biased (a second-order approximation)",
        "E_q[k3] = KL(q||p) + E_q[r] - 1, and E_q[r] = 1 whenever p << q: k3 is biased "
        "only where p puts mass outside q's support.",
        _biased("k3"),
    ),
    Claim(
        "low_var_kl_biased",
        LI,
        "low_var_kl (k3 clamped to [-10, 10]) is biased",
        f"The clamp changes k3 only where k3 > 10 (log r > {_CLAMP[1]:.3g} or < "
        f"{_CLAMP[0]:.3g}): no bias where the log-ratio stays inside.",
        _biased("low_var_kl"),
    ),
    Claim(
        "k3_var_much_lower",
        LI,
        "empirically Var[k3] ≪ Var[k1]",
        f"≪: ratio <= {MUCH}.",
        _var_ratio("k3", "k1", MUCH),
    ),
    Claim(
        "clamp_lowers_variance",
        LI,
        "clamping k3 to [-10, 10] further lowers its variance",
        "Clipping is 1-Lipschitz, so Var[low_var_kl] <= Var[k3] always; it is strictly "
        "lower only where the clamp is active, and there it costs bias.",
        _clamp_lowers,
    ),
    Claim("k2_biased_unusual", UNUSUAL, "k2 is biased", "As above.", _biased("k2")),
    Claim(
        "k2_var_much_lower",
        UNUSUAL,
        "k2 has much lower variance than k1",
        f"Much lower: ratio <= {MUCH}.",
        _var_ratio("k2", "k1", MUCH),
    ),
    Claim(
        "k2_bias_grows",
        UNUSUAL,
        "k2's bias grows for larger divergences",
        "|bias| of k2 along a dense path through each family's cases, ordered by "
        "KL(q||p): holds if it never decreases.",
        _k2_bias_grows,
        per_group=True,
    ),
    Claim(
        "k3_unbiased",
        UNUSUAL,
        "k3 is unbiased",
        "E_q[k3] = KL(q||p) + E_q[r] - 1 = KL(q||p) when p << q.",
        _unbiased("k3"),
    ),
    Claim(
        "k3_positive",
        UNUSUAL,
        "k3 is always positive",
        "r - 1 - log r >= 0 by convexity (equality at r = 1 only), unlike k1.",
        _k3_positive,
    ),
    Claim(
        "k3_low_variance",
        UNUSUAL,
        "k3 has low variance (below k1's)",
        "Tested as Var[k3] <= Var[k1]; Var[k3] = inf when E_q[r^2] diverges.",
        _var_ratio("k3", "k1", 1.0),
    ),
    Claim(
        "k3_best_of_both",
        UNUSUAL,
        "k3 is the best of both worlds: unbiased like k1, variance as low as k2's",
        "Tested as bias 0 and Var[k3] <= Var[k2].",
        _k3_best_of_both,
    ),
    Claim(
        "k3_most_effective",
        UNUSUAL,
        "k3 is the most effective estimator",
        f"Tested as: k3's batch mean has the lowest MSE = bias^2 + Var/B among the write-up's "
        f"{', '.join(RIVALS)} at B = {' and '.join(map(str, BATCHES))} (as an estimate of "
        "the KL value; gradients are not assessed).",
        _k3_most_effective,
    ),
)


def _extremes(results: list[tuple[str, bool, float, str]]) -> str:
    """The units with the lowest and highest deciding number (NaN last)."""
    ranked = sorted(results, key=lambda r: (math.isnan(r[2]), r[2]))
    if not ranked:
        return ""
    low, high = ranked[0], max(results, key=lambda r: -math.inf if math.isnan(r[2]) else r[2])
    if low is high:
        return f"{low[0]}: {low[3]}."
    return f"Lowest: {low[0]}: {low[3]}. Highest: {high[0]}: {high[3]}."


def _verdict(held: int, total: int) -> str:
    if total == 0:
        return "not tested"
    return "true" if held == total else "false" if held == 0 else "partly true"


def evaluate_claims(cases: Sequence[Any], claims: Sequence[Claim] = CLAIMS) -> pd.DataFrame:
    """Test each claim on each case (or family) of ``cases``: one row per claim with
    ``key claim source verdict evidence holds_for fails_for n_holds n_tested``."""
    all_facts = [facts(case) for case in cases]
    groups: dict[str, list[Any]] = {}
    for case in cases:
        groups.setdefault(case.group or case.label, []).append(case)
    rows = []
    for claim in claims:
        units: list[tuple[str, Any]]
        if claim.per_group:
            units = [(name, members) for name, members in groups.items() if len(members) > 1]
        else:
            units = [(f.where(), f) for f in all_facts]
        rows.append(_claim_row(claim, [(where, *claim.test(unit)) for where, unit in units]))
    return pd.DataFrame(rows)


def evaluate_offpolicy_claims(
    frame: pd.DataFrame, claims: Sequence[OffPolicyClaim] = OFFPOLICY_CLAIMS
) -> pd.DataFrame:
    """Each off-policy claim on a frame of :func:`~klest.report.claims_offpolicy.offpolicy_facts`
    (its units: releases or KL terms), with the columns of :func:`evaluate_claims`."""
    return pd.DataFrame([_claim_row(claim, claim.test(frame)) for claim in claims])


def evaluate_sequence_claims(
    frame: pd.DataFrame, claims: Sequence[SequenceClaim] = SEQUENCE_CLAIMS
) -> pd.DataFrame:
    """Each sequence-level claim on a frame of :func:`~klest.report.claims_sequence.
    sequence_facts`, with the columns of :func:`evaluate_claims`."""
    return pd.DataFrame([_claim_row(claim, claim.test(frame)) for claim in claims])


def _claim_row(
    claim: Claim | OffPolicyClaim | SequenceClaim, results: list[tuple[str, bool, float, str]]
) -> dict[str, Any]:
    holds = [f"{where}: {shown}" for where, ok, _, shown in results if ok]
    fails = [f"{where}: {shown}" for where, ok, _, shown in results if not ok]
    return {
        "key": claim.key,
        "claim": claim.text,
        "source": claim.source,
        "verdict": _verdict(len(holds), len(results)),
        "evidence": f"{claim.why} {_extremes(results)}".strip(),
        "holds_for": holds,
        "fails_for": fails,
        "n_holds": len(holds),
        "n_tested": len(results),
    }


def claims_frame(experiments_dir: str | Path | None = None) -> pd.DataFrame:
    """The verdicts on the cases of ``experiments/claims.toml`` (exact; nothing sampled), then
    those of :data:`klest.report.claims_offpolicy.OFFPOLICY_CLAIMS` on the policies of
    ``experiments/rl_offpolicy.toml``, then those of :mod:`klest.report.claims_sequence` on
    ``experiments/rl_sequence_gradients.toml`` (``attrs["sections"]``: where each starts)."""
    directory = Path(experiments_dir) if experiments_dir else default_experiments_dir()
    first = evaluate_claims(load_config(directory / "claims.toml").cases)
    facts_frame = offpolicy_facts(directory)
    second = evaluate_offpolicy_claims(facts_frame)
    seq = sequence_facts(directory)
    third = evaluate_sequence_claims(seq)
    frame = pd.concat([first, second, third], ignore_index=True)
    frame.attrs["sections"] = {
        len(first): (OFFPOLICY_TITLE, offpolicy_preamble(facts_frame)),
        len(first) + len(second): (SEQUENCE_TITLE, sequence_preamble(seq)),
    }
    return frame

"""``diagnose`` where the truth is known: the agreement table.

Each case is a synthetic log (:mod:`klest.diagnostics.synthetic`) with its exact answer:
Gaussian scale pairs q = N(0,1), p = N(0, s²) (r's tail shape k = 1 − 1/s² for s² > 1;
Var[k3] = ∞ iff s² ≥ 2), shift pairs (log-normal r: every moment finite), StudentT pairs
(q = t(ν_q), p = t(ν_p): r ~ |x|^(ν_q − ν_p), k = 1 − ν_p/ν_q), Normal/StudentT pairs
(q = N(0,1), p = t(ν): k = 1; q = t(ν), p = N(0,1): k3 ~ x²/2, k = 2/ν), Zipf
categoricals over 1,000 entries (bounded: finite variance) and TabularAR sequences (exact
sequence KL by the DP; RB from the logits). The exact finite variance of k3 comes from
``klest.exact_moments`` (closed form, quadrature or enumeration), not from the shapes.

:func:`validation_cases` runs every case; :func:`validation_table` gives one row per case:
case, n tokens, exact KL (token level), the k3 estimate ± SE, within 5 SE, exact finite
variance, k̂ (diagnose's verdict k̂ of k3: the heavier of r's and |l|'s tails), the k̂ of
r alone, the exact shape k (of k3's heaviest tail, where known) and agree (the k̂ verdict
equals the exact one).

>>> table = validation_table(cases=CASES[:2], scale=0.2)
>>> list(table.columns)[:4]
['case', 'tokens', 'exact_kl', 'estimate']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from klest.diagnostics.diagnosis import Diagnosis, diagnose
from klest.diagnostics.synthetic import pair_exact, pair_log, tabular_exact, tabular_log
from klest.distributions import Categorical, Normal, StudentT
from klest.sequence import TabularAR

__all__ = ["CASES", "Case", "agreement", "run_case", "validation_table"]

NAMES = ("k1", "k2", "k3")


@dataclass(frozen=True)
class Case:
    """One synthetic log: ``kind`` "pair" (q, p) or "tabular"; ``sequences`` of ~20 tokens
    (at scale 1); ``shape``: the exact tail shape of k3's heaviest tail (NaN: unknown or a
    bounded tail); ``check_khat``: k̂ of r must be within 0.1 of ``shape``."""

    name: str
    kind: str
    make: Any
    sequences: int = 1_000
    shape: float = math.nan
    check_khat: bool = False


def _zipf(a: float, v: int = 1_000) -> Categorical:
    w = np.arange(1, v + 1, dtype=np.float64) ** -a
    return Categorical(probs=w / w.sum())


def _gauss(s2: float) -> tuple[Normal, Normal]:
    return Normal(loc=0.0, scale=1.0), Normal(loc=0.0, scale=math.sqrt(s2))


def _tabular(seed: int, eos: int | None, scale: float):
    def make() -> tuple[TabularAR, TabularAR]:
        rng = np.random.default_rng(seed)
        pi = TabularAR.random(vocab=4, order=2, length=12, rng=rng, eos=eos)
        return pi, pi.perturbed(rng, scale)

    return make


def _cases() -> list[Case]:
    out = []
    for s2 in (0.3, 0.5, 0.7, 0.85, 1.1, 1.2, 1.3, 1.4, 1.5, 1.7, 2.4, 2.6, 3.0, 3.5, 4.0, 5.0,
               6.0, 8.0):  # fmt: skip
        big = 1.2 <= s2 <= 4.0 and s2 in (1.2, 1.5, 2.4, 3.0, 4.0)
        out.append(Case(f"N(0,1) vs N(0,{s2:g})", "pair", lambda s2=s2: _gauss(s2),
                        10_000 if big else 1_000, max(0.0, 1 - 1 / s2), big))  # fmt: skip
    for mu in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
        pair = (Normal(loc=0.0, scale=1.0), Normal(loc=mu, scale=1.0))
        out.append(Case(f"N(0,1) vs N({mu:g},1)", "pair", lambda pair=pair: pair, shape=0.0))
    for nq, np_ in ((10, 8), (10, 7), (8, 6), (10, 3), (6, 2), (8, 2), (4, 1), (3, 6), (4, 10)):
        pair = (StudentT(df=float(nq), loc=0.0, scale=1.0), StudentT(df=float(np_), loc=0.0,
                                                                    scale=1.0))  # fmt: skip
        out.append(Case(f"t({nq}) vs t({np_})", "pair", lambda pair=pair: pair,
                        shape=max(0.0, 1 - np_ / nq)))  # fmt: skip
    for nu in (3, 10):
        pair = (Normal(loc=0.0, scale=1.0), StudentT(df=float(nu), loc=0.0, scale=1.0))
        out.append(Case(f"N(0,1) vs t({nu})", "pair", lambda pair=pair: pair, shape=1.0))
    for nu in (3, 6, 10):
        pair = (StudentT(df=float(nu), loc=0.0, scale=1.0), Normal(loc=0.0, scale=1.0))
        out.append(Case(f"t({nu}) vs N(0,1)", "pair", lambda pair=pair: pair, shape=2 / nu))
    for a, b in ((1.1, 1.3), (1.5, 1.0), (2.0, 1.5), (0.8, 1.2), (1.0, 2.0)):
        pair = (_zipf(a), _zipf(b))
        out.append(Case(f"Zipf({a:g}) vs Zipf({b:g})", "pair", lambda pair=pair: pair))
    for seed, eos, scale in ((0, None, 0.3), (1, 3, 0.5), (2, 0, 1.0)):
        out.append(Case(f"TabularAR(V=4, order 2, T=12, eos={eos}, perturbation {scale:g})",
                        "tabular", _tabular(seed, eos, scale), 4_000))  # fmt: skip
    return out


CASES: list[Case] = _cases()


def run_case(case: Case, *, seed: int = 0, scale: float = 1.0) -> tuple[Diagnosis, Any, bool]:
    """(diagnosis, exact targets, exact finite variance of k3) for one case."""
    key = CASES.index(case) if case in CASES else 0
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(key,)))
    n_seq = max(int(case.sequences * scale), 20)
    a, b = case.make()
    if case.kind == "tabular":
        log = tabular_log(a, b, n_sequences=n_seq, rng=rng)
        return diagnose(log, reservoir=0), tabular_exact(a, b), True
    log = pair_log(a, b, n_sequences=n_seq, rng=rng)
    exact = pair_exact(a, b, NAMES)
    return diagnose(log, reservoir=0), exact, math.isfinite(exact.token_var["k3"])


def _row(frame: pd.DataFrame, name: str, level: str) -> pd.Series:
    return frame[(frame.estimator == name) & (frame.level == level)].iloc[0]


def agreement(case: Case, d: Diagnosis, exact: Any, finite: bool) -> dict[str, Any]:
    """The table row of one case, and every within-5-SE check where the SE is given."""
    k3 = _row(d.summary, "k3", "token")
    checks, worst = 0, 0.0
    for name in (*NAMES, "rb"):
        if name not in set(d.summary.estimator):
            continue
        var = exact.token_var.get(name, 0.0)
        if not math.isfinite(var):
            continue
        for level, target in (("token", exact.token_mean), ("sequence", exact.sequence_mean)):
            row = _row(d.summary, name, level)
            if name in target and math.isfinite(row.se) and row.se > 0:
                checks += 1
                worst = max(worst, abs(row.estimate - target[name]) / row.se)
    return {
        "case": case.name,
        "tokens": int(d.meta["tokens"]),
        "exact_kl": exact.kl_token,
        "estimate": float(k3.estimate),
        "se": float(k3.se),
        "within_5se_checks": checks,
        "worst_z": worst,
        "exact_finite_variance": bool(finite),
        "finite_variance": bool(k3.finite_variance),
        "khat": float(k3.khat),
        "khat_r": float(d.tail["khat"]),
        "exact_k": case.shape,
        "khat_checked": case.check_khat,
        "agree": bool(k3.finite_variance) == bool(finite),
    }


def validation_table(*, cases: list[Case] | None = None, seed: int = 0, scale: float = 1.0):
    """The agreement table (one row per case; see the module docstring)."""
    rows = []
    for case in CASES if cases is None else cases:
        d, exact, finite = run_case(case, seed=seed, scale=scale)
        rows.append(agreement(case, d, exact, finite))
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """The table as Markdown (for the note and the docs)."""
    head = (
        "| case | tokens | exact KL | k3 estimate ± SE | exact finite var | k̂ (k3) | k̂ (r) "
        "| exact k | agree |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        se = "SE withheld" if math.isnan(r.se) else f"{r.se:.2g}"
        k = "—" if math.isnan(r.exact_k) else f"{r.exact_k:.3f}"
        lines.append(
            f"| {r.case} | {r.tokens:,} | {r.exact_kl:.5g} | {r.estimate:.5g} ± {se} | "
            f"{'yes' if r.exact_finite_variance else 'no'} | {r.khat:.3f} | {r.khat_r:.3f} | "
            f"{k} | {'yes' if r.agree else '**no**'} |"
        )
    return "\n".join(lines)

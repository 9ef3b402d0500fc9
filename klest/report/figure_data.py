"""The tidy DataFrames behind klest's figures: exact curves and Monte Carlo points.

Pure functions: experiment cases (:class:`klest.studies.experiment.CaseConfig`: ``index label q p
group``) and run frames (:func:`klest.studies.experiment.run_experiment`) in, one tidy frame out,
with a ``source`` column, ``"exact"`` (from :func:`klest.exact_moments`, no sampling) or
``"monte_carlo"``. Exact curves follow a *dense path* through the cases of one ``group``
(a sweep's cases share a group): consecutive cases are joined in parameter space,
geometrically for positive scalars and linearly otherwise (a linear path between logit
vectors z/T1 and z/T2 stays on the temperature family z/T).

>>> from klest import Normal
>>> path = dense_path([(Normal(loc=0.0, scale=1.0), Normal(loc=0.1, scale=1.0)),
...                    (Normal(loc=0.0, scale=1.0), Normal(loc=0.4, scale=1.0))], 2)
>>> [round(p.loc, 3) for _, p in path]
[0.1, 0.2, 0.4]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from klest import estimators as _estimators
from klest.distributions.base import Distribution, from_dict
from klest.divergence.registry import kl
from klest.exact.moments import exact_moments

__all__ = [
    "BATCH_SIZES",
    "batch_mse_frame",
    "dense_path",
    "estimator_curves_frame",
    "histogram_frame",
    "kl_sweep_frame",
    "variance_ratio_frame",
]

Pair = tuple[Distribution, Distribution]
POINTS_PER_SEGMENT = 16
Z_CONSISTENT = 5.0  # a sample std this many s.e. from the exact std: its error bar is wrong
BATCH_SIZES = np.geomspace(1.0, 1e6, 61)


def _interpolate(a: Any, b: Any, t: float) -> Any:
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim == 0 and x > 0 and y > 0:
        return float(x * (y / x) ** t)
    out = (1.0 - t) * x + t * y
    return float(out) if out.ndim == 0 else out.tolist()


def _between(a: Distribution, b: Distribution, t: float) -> Distribution:
    da, db = a.to_dict(), b.to_dict()
    if da.keys() != db.keys() or da["family"] != db["family"]:
        raise ValueError(f"cannot join {a!r} and {b!r} by a path: different parameters")
    return from_dict({k: v if k == "family" else _interpolate(v, db[k], t) for k, v in da.items()})


def dense_path(pairs: Sequence[Pair], per_segment: int = POINTS_PER_SEGMENT) -> list[Pair]:
    """The (q, p) pairs joined by ``per_segment`` steps per segment (ends included)."""
    out: list[Pair] = []
    for (q0, p0), (q1, p1) in itertools.pairwise(pairs):
        for t in np.linspace(0.0, 1.0, per_segment, endpoint=False):
            out.append((_between(q0, q1, float(t)), _between(p0, p1, float(t))))
    out.extend(pairs[-1:])
    return out


def _grouped(cases: Sequence[Any]) -> dict[str, list[Any]]:
    """Cases by ``group`` (a sweep's cases share one), in config order."""
    groups: dict[str, list[Any]] = {}
    for case in cases:
        groups.setdefault(case.group or case.label, []).append(case)
    return groups


def _kl_of_cases(cases: Sequence[Any], index: Any) -> list[float]:
    by_index = {int(case.index): case for case in cases}
    return [kl(by_index[int(i)].q, by_index[int(i)].p) for i in index]


def _exact_row(q: Distribution, p: Distribution, name: str) -> dict[str, Any]:
    m = exact_moments(q, p, name)
    return {
        "estimator": m.estimator,
        "target": m.target,
        "truth": float(m.truth),
        "mean": float(m.mean),
        "var": float(m.var),
        "rel_bias": float(m.rel_bias),
        "rel_std": float(m.rel_std),
        "note": m.note,
    }


def _infinite_exact(runs: pd.DataFrame) -> np.ndarray:
    """Rows whose exact variance is known to be infinite."""
    known = runs["exact_method"].fillna("").astype(str).to_numpy() != ""
    return known & ~np.isfinite(runs["exact_std"].to_numpy(dtype=np.float64))


def _converged(runs: pd.DataFrame) -> np.ndarray:
    """False where the sample std or its error bar cannot be trusted: the engine withheld
    the std's error bar (``error_bar_std`` not "ok": non-finite draws, an infinite exact
    variance or fourth moment, single draws dominating the moments, a sample std far below
    the exact one), or the sample std lies more than 5 of its standard errors from the
    exact std — with a heavy tail the error bar itself is far too small."""
    if "error_bar_std" in runs:
        flagged = runs["error_bar_std"].fillna("ok").astype(str).to_numpy() != "ok"
    else:  # frames from before the error_bar columns: the engine's notes
        note = runs["note"].fillna("").astype(str)
        flagged = note.str.contains("do not converge|not reliable", regex=True).to_numpy()
    std, exact, se = (runs[c].to_numpy(dtype=np.float64) for c in ("std", "exact_std", "se_std"))
    with np.errstate(invalid="ignore"):
        off = np.isfinite(exact) & ~(np.abs(std - exact) <= Z_CONSISTENT * se)
    return ~(flagged | off | _infinite_exact(runs))


def kl_sweep_frame(
    cases: Sequence[Any], runs: pd.DataFrame | None, estimators: Sequence[str]
) -> pd.DataFrame:
    """Figures 1-2: exact bias/true and stdev/true along the dense path through each group
    of ``cases``, then the Monte Carlo rows of ``runs`` (one per case and estimator).

    Columns: ``source group case estimator target kl_qp truth mean var rel_bias rel_bias_se
    rel_std rel_std_se converged error_bar error_bar_std n_draws note`` (standard errors and
    ``n_draws`` are NaN on exact rows, and on Monte Carlo rows whose error bar is withheld,
    ``error_bar``/``error_bar_std`` saying why; ``converged`` is False where the sample std
    cannot be trusted).
    """
    rows = []
    for group, members in _grouped(cases).items():
        for q, p in dense_path([(case.q, case.p) for case in members]):
            kl_qp = kl(q, p)
            for name in estimators:
                rows.append(
                    {
                        "source": "exact",
                        "group": group,
                        "case": "",
                        "kl_qp": kl_qp,
                        **_exact_row(q, p, name),
                    }
                )
    exact = pd.DataFrame(rows)
    exact["rel_std_se"] = exact["rel_bias_se"] = exact["n_draws"] = math.nan
    exact["converged"] = True
    exact["error_bar"] = exact["error_bar_std"] = "exact"
    frames = [exact]
    if runs is not None:
        mc = runs[runs["estimator"].isin([_estimators.get(e).name for e in estimators])].copy()
        truth = mc["truth"].abs()
        mc["kl_qp"] = _kl_of_cases(cases, mc["case_index"])
        mc["rel_std_se"] = mc["se_std"] / truth
        mc["rel_bias_se"] = mc["se_mean"] / truth
        mc["converged"] = _converged(mc)
        for column, se in (("error_bar", "se_mean"), ("error_bar_std", "se_std")):
            if column not in mc:  # frames from before the error_bar columns
                finite = np.isfinite(mc[se].to_numpy(dtype=np.float64))
                mc[column] = np.where(finite, "ok", "no error bar")
        mc["source"] = "monte_carlo"
        frames.append(mc)
    columns = [
        "source",
        "group",
        "case",
        "estimator",
        "target",
        "kl_qp",
        "truth",
        "mean",
        "var",
        "rel_bias",
        "rel_bias_se",
        "rel_std",
        "rel_std_se",
        "converged",
        "error_bar",
        "error_bar_std",
        "n_draws",
        "note",
    ]
    return pd.concat(frames, ignore_index=True)[columns]


def estimator_curves_frame(
    estimators: Sequence[str], lo: float = -25.0, hi: float = 25.0, num: int = 1001
) -> pd.DataFrame:
    """Figure 3: each estimator on a grid of log-ratios (kinks included), with ``clamp``
    naming where ``low_var_kl`` is clamped (output at 10; input at ±20), else empty.

    >>> df = estimator_curves_frame(["low_var_kl"], -22.0, 22.0, 5)
    >>> df[["log_ratio", "value", "clamp"]].iloc[[0]].to_numpy().tolist()[0]
    [-22.0, 10.0, 'input clamped to ±20 (output stays 10)']
    >>> df.loc[df["log_ratio"].between(0.0, 1.0), "clamp"].tolist()
    ['']
    """
    lvk = _estimators.get("low_var_kl")
    kinks = [k for k in lvk.kinks if lo <= k <= hi]
    grid = np.unique(np.concatenate([np.linspace(lo, hi, num), kinks, [0.0]]))
    k3 = _estimators.get("k3")(grid)
    inner = _estimators.LOW_VAR_KL_INPUT_CLAMP
    outer = _estimators.LOW_VAR_KL_OUTPUT_CLAMP
    clamp = np.where(
        np.abs(grid) > inner,
        f"input clamped to ±{inner:g} (output stays {outer:g})",
        np.where(k3 > outer, f"output clamped to {outer:g}", ""),
    )
    frames = [
        pd.DataFrame(
            {
                "estimator": _estimators.get(name).name,
                "log_ratio": grid,
                "value": _estimators.get(name)(grid),
                "clamp": clamp,
            }
        )
        for name in estimators
    ]
    return pd.concat(frames, ignore_index=True)


def histogram_frame(label: str, kl_qp: float, result: Any, estimators: Sequence[str]):
    """Figure 4: the engine's streaming histogram of each estimator, one row per bin.

    Columns: ``case kl_qp estimator bin_left bin_right count density below above n_drawn``;
    ``density`` = count / (n_drawn * width), so the bins integrate to the share of the
    histogrammed draws inside the binned range (``below``/``above`` count those outside).

    >>> import klest
    >>> res = klest.simulate(klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=1.0,
    ...     scale=1.0), ["k3"], n=20_000, seed=0)
    >>> df = histogram_frame("KL = 0.5", 0.5, res, ["k3"])
    >>> bool(abs((df["density"] * (df["bin_right"] - df["bin_left"])).sum() - 1) < 0.01)
    True
    """
    frames = []
    for name in estimators:
        edges, counts, below, above = result.histogram(name)
        total = int(counts.sum()) + below + above
        frames.append(
            pd.DataFrame(
                {
                    "case": label,
                    "kl_qp": kl_qp,
                    "estimator": _estimators.get(name).name,
                    "bin_left": edges[:-1],
                    "bin_right": edges[1:],
                    "count": counts,
                    "density": counts / (total * np.diff(edges)),
                    "below": below,
                    "above": above,
                    "n_drawn": total,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def batch_mse_frame(
    cases: Sequence[Any],
    runs: pd.DataFrame | None,
    estimators: Sequence[str],
    batch_sizes: np.ndarray = BATCH_SIZES,
) -> pd.DataFrame:
    """Figure 5: root-MSE/true of the mean of B samples, MSE(B) = bias² + Var/B.

    Exact rows at every B of ``batch_sizes`` (``inf`` where Var is infinite); Monte Carlo
    rows from each run's mean and variance (delta-method standard error) at powers of ten
    up to n/100, where the noise of the sample bias is below 1% of Var/B. Rows whose exact
    variance is infinite get no Monte Carlo points (their sample MSE means nothing), nor do
    rows with non-finite draws; ``rel_rmse_se`` is NaN where the run withheld se_mean or
    se_std (the plot draws those points hollow, without an error bar).
    Columns: ``source case kl_qp estimator batch_size rel_rmse rel_rmse_se n_draws``.
    """
    rows = []
    for case in cases:
        for name in estimators:
            r = _exact_row(case.q, case.p, name)
            bias = r["mean"] - r["truth"]
            with np.errstate(invalid="ignore"):
                rmse = np.sqrt(bias**2 + r["var"] / batch_sizes) / abs(r["truth"])
            rows.append(
                pd.DataFrame(
                    {
                        "source": "exact",
                        "case": case.label,
                        "kl_qp": kl(case.q, case.p),
                        "estimator": r["estimator"],
                        "batch_size": batch_sizes,
                        "rel_rmse": rmse,
                    }
                )
            )
    if runs is not None:
        mc = runs[runs["estimator"].isin([_estimators.get(e).name for e in estimators])]
        mc = mc[~_infinite_exact(mc)]
        # a mean or variance that is not finite (non-finite draws) has no MSE to draw
        mc = mc[np.isfinite(mc[["mean", "var"]].to_numpy(dtype=np.float64)).all(axis=1)]
        for _, row in mc.iterrows():
            sizes = 10.0 ** np.arange(0, max(int(math.log10(row["n"] / 100)), 0) + 1)
            bias, se, truth = row["mean"] - row["truth"], row["se_mean"], abs(row["truth"])
            mse = bias**2 + row["var"] / sizes
            se_mse = np.sqrt(
                4 * bias**2 * se**2 + 2 * se**4 + (2 * row["std"] * row["se_std"] / sizes) ** 2
            )
            rows.append(
                pd.DataFrame(
                    {
                        "source": "monte_carlo",
                        "case": row["case"],
                        "kl_qp": _kl_of_cases(cases, [row["case_index"]])[0],
                        "estimator": row["estimator"],
                        "batch_size": sizes,
                        "rel_rmse": np.sqrt(mse) / truth,
                        "rel_rmse_se": se_mse / (2 * np.sqrt(mse) * truth),
                        "n_draws": row["n_draws"],
                    }
                )
            )
    out = pd.concat(rows, ignore_index=True)
    for column in ("rel_rmse_se", "n_draws"):
        if column not in out:
            out[column] = math.nan
    return out


def variance_ratio_frame(cases: Sequence[Any], runs: pd.DataFrame | None) -> pd.DataFrame:
    """Figure 6: Var[k3]/Var[k1] along the dense path through each group of ``cases``.

    Exact rows (``inf`` where Var[k3] is infinite, the reason in ``note``) and Monte Carlo
    rows (standard error by the delta method from the two standard errors of the std,
    neglecting their correlation, NaN where either is withheld; ``converged`` False where the
    engine flagged either std as unreliable); cases with an infinite exact Var[k3], or
    non-finite draws of k1 or k3, get no Monte Carlo row. Columns:
    ``source series case kl_qp var_ratio var_ratio_se converged n_draws note``.
    """
    rows = []
    for series, members in _grouped(cases).items():
        for q, p in dense_path([(case.q, case.p) for case in members]):
            one, three = _exact_row(q, p, "k1"), _exact_row(q, p, "k3")
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = float(np.divide(three["var"], one["var"]))
            rows.append(
                {
                    "source": "exact",
                    "series": series,
                    "case": "",
                    "kl_qp": kl(q, p),
                    "var_ratio": ratio,
                    "var_ratio_se": math.nan,
                    "converged": True,
                    "n_draws": math.nan,
                    "note": three["note"],
                }
            )
    if runs is not None:
        by_index = {int(case.index): case for case in cases}
        for index, rows_of_case in runs.groupby("case_index", sort=True):
            one, three = (
                rows_of_case[rows_of_case["estimator"] == k].iloc[0] for k in ("k1", "k3")
            )
            if _infinite_exact(rows_of_case[rows_of_case["estimator"] == "k3"]).any():
                continue
            if not np.isfinite([one["var"], three["var"]]).all():  # non-finite draws
                continue
            case = by_index[int(index)]
            ratio = three["var"] / one["var"]
            rel = np.hypot(three["se_std"] / three["std"], one["se_std"] / one["std"])
            both = rows_of_case[rows_of_case["estimator"].isin(["k1", "k3"])]
            rows.append(
                {
                    "source": "monte_carlo",
                    "series": case.group or case.label,
                    "case": case.label,
                    "kl_qp": kl(case.q, case.p),
                    "var_ratio": ratio,
                    "var_ratio_se": 2.0 * ratio * rel,
                    "converged": _converged(both).all(),
                    "n_draws": three["n_draws"],
                    "note": three["note"],
                }
            )
    return pd.DataFrame(rows)

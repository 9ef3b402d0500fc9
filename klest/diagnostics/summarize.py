"""From the accumulated state to a Diagnosis: the summary table, mismatch, recommendation.

**Recommendation.** Among the rows that target KL(π‖π_ref) with a finite estimate and a
verified finite variance, the smallest estimated mean squared error: SE² for the unbiased
estimators (k1, k3, RB, unclamped framework k1/k3), SE² + max(0, d² − SE_d²) for the biased
ones, where d is the difference from the reference estimator (RB where logits are present,
else k1) with its clustered SE_d (d² − SE_d² is unbiased for the squared bias). A clamped
framework kind's cost is the mean of (clamped − unclamped) with its clustered SE.
"""

from __future__ import annotations

import math
from importlib import metadata
from typing import Any

import numpy as np
import pandas as pd

from klest._version import __version__
from klest.diagnostics.accumulate import LogSumExp, TailBuffer
from klest.diagnostics.clustered import sequence_mean, token_mean
from klest.diagnostics.tails import TailFit, finite_variance, psis_fit, verdict

__all__ = ["finish"]

LEVELS = ("token", "sequence")


def _mean(level: str, y: np.ndarray, n: np.ndarray) -> tuple[float, float]:
    return token_mean(y, n) if level == "token" else sequence_mean(y)


def _fit_ok(fit: TailFit, nonfinite: int, bounded: bool = False) -> bool:
    return finite_variance(fit.khat, nonfinite=nonfinite, status=fit.status, bounded=bounded)


def _judge(fits: list[TailFit], nonfinite: int, bound: float | None) -> tuple[float, bool, str]:
    """(k̂, finite_variance, verdict) from the fits of every tail that decides the variance:
    the heaviest one (largest k̂; a failed fit over a good one) speaks."""

    def heaviness(fit: TailFit) -> tuple[bool, float]:
        return (not _fit_ok(fit, 0), fit.khat if math.isfinite(fit.khat) else -math.inf)

    worst = max(fits, key=heaviness)
    ok = _fit_ok(worst, nonfinite, bound is not None)
    text = verdict(worst.khat, nonfinite=nonfinite, status=worst.status, bound=bound)
    return worst.khat, ok, text


def _fits(state: Any, rule: str, name: str) -> list[TailFit]:
    cache = state.fits
    keys = {"k3": ["r", "abs_l"], "r": ["r"], "value": [name]}[rule]
    for key in keys:
        if key not in cache:
            cache[key] = psis_fit(state.tails[key])
    return [cache[key] for key in keys]


def _ess(log_w: np.ndarray) -> float:
    acc = LogSumExp()
    acc.add(log_w)
    return acc.ess()


def _rows(state: Any, n: np.ndarray, y: np.ndarray) -> tuple[list[dict], str]:
    col = {name: j for j, name in enumerate(state.columns)}
    names = [s.name for s in state.series]
    ref_name = "rb" if "rb" in names else "k1"
    if ref_name == "rb":
        ref_y = y[:, col["rb"]]
        ref_ok = _judge(_fits(state, "value", "rb"), state.nonfinite["rb"], None)[1]
    else:
        ref_y = -y[:, col["l"]]
        ref_ok = _judge(_fits(state, "value", "abs_l"), state.nonfinite["l"], None)[1]
    tokens = max(state.tokens, 1)
    rows = []
    for s in state.series:
        bad = state.nonfinite[s.name]
        khat, ok, text = _judge(_fits(state, s.tail, s.name), bad, s.bound)
        ys = y[:, col[s.name]]
        if s.clamped:
            rule = "k3" if s.base == "k3" else "value"
            u_ok = _judge(_fits(state, rule, f"{s.name}|unclamped"), 0, None)[1] and ok
            cost_y = ys - y[:, col[f"{s.name}|unclamped"]]
        for level in LEVELS:
            est, se = _mean(level, ys, n)
            row = {
                "estimator": s.name,
                "level": level,
                "estimate": est,
                "se": se if ok and math.isfinite(est) else math.nan,
                "se_unchecked": se,
                "khat": khat,
                "finite_variance": ok,
                "verdict": text,
                "negative_fraction": (
                    state.negative[s.name] / tokens if level == "token" else float(np.mean(ys < 0))
                ),
                "nonfinite": bad if level == "token" else int((~np.isfinite(ys)).sum()),
                "clamp_fraction": state.hits[s.name] / tokens if s.clamped else math.nan,
                "clamp_cost": math.nan,
                "clamp_cost_se": math.nan,
                "target": s.target,
                "unbiased": s.unbiased,
                "n": state.tokens if level == "token" else len(ys),
                "diff_vs_reference": math.nan,
                "diff_vs_reference_se": math.nan,
                "mse": math.nan,
            }
            if s.clamped:
                cost, cost_se = _mean(level, cost_y, n)
                row["clamp_cost"] = cost
                row["clamp_cost_se"] = cost_se if u_ok else math.nan
            if s.target == "KL(pi||ref)" and math.isfinite(est) and ok:
                d, d_se = _mean(level, ys - ref_y, n)
                if ref_ok and math.isfinite(d_se):
                    row["diff_vs_reference"], row["diff_vs_reference_se"] = d, d_se
                if s.unbiased:
                    row["mse"] = se * se
                elif math.isfinite(row["diff_vs_reference_se"]):
                    row["mse"] = se * se + max(0.0, d * d - d_se * d_se)
            rows.append(row)
    return rows, ref_name if ref_ok else f"{ref_name} (variance not verified: no bias check)"


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _recommend(summary: pd.DataFrame, reference: str) -> str:
    parts = []
    for level in LEVELS:
        rows = summary[(summary.level == level) & summary.mse.notna()]
        if rows.empty:
            parts.append(
                f"{level} level: no estimator of KL(pi||ref) has a verified finite variance "
                "here; do not trust any error bar"
            )
            continue
        best = rows.loc[rows.mse.idxmin()]
        bias = "unbiased" if best.unbiased else f"bias evidence {_fmt(best.diff_vs_reference)}"
        parts.append(
            f"{level} level: {best.estimator} has the smallest estimated error "
            f"(SE {_fmt(best.se)}, {bias}; RMSE {_fmt(math.sqrt(best.mse))})"
        )
    for _, row in summary[(summary.level == "token") & summary.clamp_fraction.notna()].iterrows():
        se = "" if math.isnan(row.clamp_cost_se) else f" ± {_fmt(row.clamp_cost_se)}"
        parts.append(
            f"{row.estimator}: the clamp is active on {row.clamp_fraction:.3%} of tokens and "
            f"moves the token-level estimate by {_fmt(row.clamp_cost)}{se} (clamped − unclamped)"
        )
    return "; ".join(parts) + f". Bias is measured against {reference}."


def _weights(state: Any) -> dict[str, Any]:
    out = {}
    for _, name in state.weights:
        fit = psis_fit(state.tails[f"rho_{name}"])
        acc = state.ess[f"rho_{name}"]
        ess = acc.ess()
        out[name] = {
            "khat": fit.khat,
            "sigma": fit.sigma,
            "threshold": fit.threshold,
            "finite_variance": _fit_ok(fit, acc.nonfinite),
            "verdict": verdict(fit.khat, nonfinite=acc.nonfinite, status=fit.status),
            "ess": ess,
            "ess_fraction": ess / acc.n if acc.n else math.nan,
            "n": acc.n,
            "nonfinite": acc.nonfinite,
        }
    return out


def _mismatch(state: Any, n: np.ndarray, y: np.ndarray) -> dict[str, Any] | None:
    if not state.rollout:
        return None
    col = {name: j for j, name in enumerate(state.columns)}
    yk = y[:, col["mismatch_k3"]]
    fits = [psis_fit(state.tails["rho_rollout"]), psis_fit(state.tails["abs_log_rho_rollout"])]
    khat, ok, _ = _judge(fits, int((~np.isfinite(yk)).sum()), None)
    tok, tok_se = token_mean(yk, n)
    seq, seq_se = sequence_mean(yk)
    log_sum = y[:, col["log_rho_rollout"]]
    with np.errstate(all="ignore"):
        log_mean = log_sum / n
        outside = {
            key: float(np.mean((np.abs(v) > math.log(2.0)) | np.isnan(v)))
            for key, v in (("sum", log_sum), ("mean", log_mean))
        }
    s = max(len(n), 1)
    seq_fit = psis_fit(_buffer(log_sum))
    return {
        "direction": "KL(rollout||pi): tokens sampled by the engine mu, k3 of log(pi/mu)",
        "kl_k3_token": tok,
        "kl_k3_token_se": tok_se if ok else math.nan,
        "kl_k3_sequence": seq,
        "kl_k3_sequence_se": seq_se if ok else math.nan,
        "kl_k3_khat": khat,
        "rho_outside_0.9_1.1": state.rho_outside / max(state.tokens, 1),
        "khat_rho": psis_fit(state.tails["rho_rollout"]).khat,
        "ess_rho_fraction": state.ess["rho_rollout"].ess() / max(state.tokens, 1),
        "sequence_weight_sum_outside_0.5_2": outside["sum"],
        "sequence_weight_mean_outside_0.5_2": outside["mean"],
        "ess_sequence_weight_sum_fraction": _ess(log_sum) / s,
        "ess_sequence_weight_mean_fraction": _ess(log_mean) / s,
        "khat_sequence_weight_sum": seq_fit.khat,
    }


def _buffer(x: np.ndarray) -> TailBuffer:
    buf = TailBuffer(capacity=max(len(x), 1))
    buf.add(x)
    return buf


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def finish(state: Any) -> dict[str, Any]:
    """The fields of a :class:`~klest.diagnostics.diagnosis.Diagnosis`."""
    ids, n, y = state.sums.result()
    all_ids = state.rows_per_sequence.result()[0]
    rows, reference = _rows(state, n, y)
    summary = pd.DataFrame(rows)
    r_fit = _fits(state, "r", "r")[0]
    tail = r_fit.as_dict("r")
    ess = state.ess["r"].ess()
    tail.update(ess=ess, ess_fraction=ess / state.tokens if state.tokens else math.nan)
    for _, name in state.weights:
        tail[f"rho_{name}"] = psis_fit(state.tails[f"rho_{name}"]).as_dict(f"rho_{name}")
    meta = {
        "rows": state.rows,
        "tokens": state.tokens,
        "masked": state.rows - state.tokens,
        "sequences": len(ids),
        "empty_sequences": len(all_ids) - len(ids),
        "chunks": state.chunks,
        "columns": ", ".join(state.present) or "required only",
        "logits": state.logits,
        "reference": reference,
        "se": "clustered by sequence (CR1 sandwich; sequence level: sd/sqrt(S))",
        "khat": "PSIS (arviz-stats psislw) of |value|; r = exp(l); rho = exp(logprob - mu)",
        "reservoir": state.reservoir.size,
        "seed": state.seed,
        "tail_capacity": next(iter(state.tails.values())).capacity,
        "klest": __version__,
        "arviz_stats": _version("arviz-stats"),
        "numpy": np.__version__,
    }
    return {
        "summary": summary,
        "mismatch": _mismatch(state, n, y),
        "recommendation": _recommend(summary, reference),
        "meta": meta,
        "samples": state.reservoir.samples(),
        "tail": tail,
        "weights": _weights(state),
    }

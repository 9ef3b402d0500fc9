"""The sequence-level KL of two real models by every estimator, beside the tabular theory.

For responses x = (x_1, ..., x_T) of the policy π, with l_t = ref_logprob - logprob (DESIGN.md:
log p - log q, r = π_ref/π), the sequence-level target is KL(π‖π_ref) between the response
distributions, and :mod:`klest.sequence` proves for tabular autoregressive models (with an exact
DP beside every Monte Carlo number) what holds for any autoregressive model, these real ones
included, because it uses only the chain rule of KL:

- ``sum k1`` = Σ_t -l_t and ``sum k3`` = Σ_t k3(l_t) are unbiased: E[k(l_t) | c_t] is the
  conditional KL(π(·|c_t)‖π_ref(·|c_t)) for k1 and k3, and the conditional KLs sum to the
  sequence KL (chain rule). ``k3(L)`` = k3(Σ_t l_t) is unbiased too (E_π[e^L] = 1).
- ``sum k2`` = Σ_t ½ l_t² is biased (E[k2] is the KL only to second order in the log-ratio).
- ``RB`` = Σ_t KL(π(·|c_t)‖π_ref(·|c_t)), the exact per-position KL from the full logits
  (:func:`klest.rl.full_kl`), summed over the response: the Rao-Blackwellised estimator, same
  mean, no per-token sampling noise; in klest's tabular comparisons (and here) the smallest
  variance, though at the sequence level that is typical, not a theorem (the later contexts
  still vary with the earlier tokens).
- All of this needs x ~ π. Responses from another sampler μ (an inference engine with a
  temperature, top-k / top-p, another precision: ``rollout_logprob`` present) make every
  unweighted sum biased (tokens mean over μ's prefixes, not π's), the RB sum included; the
  sequence-level weight W = Π_t π(x_t|c_t)/μ(x_t|c_t) restores it (``sum k1, W``, ``RB, W``:
  E_μ[W g] = E_π[g]) only where μ > 0 wherever π > 0, which truncation (top-k, top-p, min-p)
  breaks: the weighted sum then misses π's mass outside μ's support. Per-token weights ρ_t
  are not enough (``klest.sequence``: "sum / token ... no").
- Token-level means (KL per token, ``seq_mean_token_mean``) estimate another quantity than the
  sequence KL when lengths vary; this table is per sequence.

:func:`sequence_values` computes one value per sequence and estimator from any log that
:func:`klest.diagnostics.iter_chunks` reads (a file, a DataFrame, a dict,
:meth:`klest.lm.LMLogs.as_dict`); :func:`sequence_estimates` their mean and standard error over
sequences (the sequences are independent; their tokens are not), the standard deviation, the
theory's verdict (``unbiased``) and the paired difference from RB.

>>> import numpy as np
>>> log = {"sequence": [0, 0, 1], "logprob": np.log([0.5, 0.5, 0.25]),
...        "ref_logprob": np.log([0.25, 0.5, 0.5])}
>>> sequence_estimates(log)[["estimator", "estimate", "unbiased"]].round(4)
  estimator  estimate  unbiased
0    sum k1    0.0000      True
1    sum k2    0.2402     False
2    sum k3    0.2500      True
3     k3(L)    0.2500      True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from klest import estimators
from klest.diagnostics import iter_chunks
from klest.rl import full_kl
from klest.sequence import SequenceEstimator

__all__ = ["sequence_estimates", "sequence_values"]

_TERMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    name: estimators.get(name) for name in ("k1", "k2", "k3")
}


class _Sums:
    """Per-sequence sums of several per-token terms, accumulated chunk by chunk."""

    def __init__(self) -> None:
        self.ids = np.empty(0, dtype=np.int64)
        self.sums: dict[str, np.ndarray] = {}

    def add(self, sequence: np.ndarray, terms: dict[str, np.ndarray]) -> None:
        ids = np.union1d(self.ids, sequence)
        if len(ids) != len(self.ids):
            where = np.searchsorted(ids, self.ids)
            for name, old in self.sums.items():
                grown = np.zeros(len(ids))
                grown[where] = old
                self.sums[name] = grown
            self.ids = ids
        index = np.searchsorted(self.ids, sequence)
        for name, values in terms.items():
            total = self.sums.setdefault(name, np.zeros(len(self.ids)))
            np.add.at(total, index, values)


def sequence_values(
    source: Any, *, sampler: str | None = None, chunk_rows: int = 1_000_000
) -> pd.DataFrame:
    """One value per sequence (rows, indexed by the sequence id) and estimator (columns named
    as :class:`klest.sequence.SequenceEstimator` names them): ``sum k1``, ``sum k2``, ``sum
    k3``, ``k3(L)``, ``RB`` (where the log has both logits side arrays) and, for responses from
    a behaviour μ, ``sum k1, W``, ``sum k3, W``, ``RB, W`` weighted by W = exp Σ_t (logprob -
    rollout_logprob), and the weight ``W`` itself. ``attrs["unbiased"]``: the theory's verdict
    per estimator column (see the module notes).

    ``sampler``: "policy" (the responses are π's samples: the rollout column, if any, is not
    used), "behaviour" (they are μ's: needs ``rollout_logprob``), or None: "behaviour" when
    the log has ``rollout_logprob``, else "policy". Masked rows are left out; a sequence with
    no counted row is not a sequence.

    >>> log = {"sequence": [4, 4, 9], "logprob": [-0.5, -1.0, -0.25],
    ...        "ref_logprob": [-1.5, -1.0, -0.25]}
    >>> sequence_values(log)["sum k1"].to_dict()
    {4: 1.0, 9: 0.0}
    """
    if sampler not in (None, "policy", "behaviour"):
        raise ValueError(f"sampler must be 'policy', 'behaviour' or None, got {sampler!r}")
    sums = _Sums()
    has_rb = has_rollout = None
    for chunk in iter_chunks(source, chunk_rows=chunk_rows):
        keep = chunk.counted
        rb_here = chunk.logits is not None and chunk.ref_logits is not None
        off_here = chunk.rollout_logprob is not None and sampler != "policy"
        has_rb = rb_here if has_rb is None else has_rb and rb_here
        has_rollout = off_here if has_rollout is None else has_rollout and off_here
        l = chunk.log_ratio[keep]
        with np.errstate(over="ignore"):  # k3 of a huge log-ratio is +inf: kept, and shown
            terms = {name: np.asarray(term(l), dtype=np.float64) for name, term in _TERMS.items()}
        terms["L"] = l
        if rb_here:
            terms["RB"] = np.asarray(full_kl(chunk.logits[keep], chunk.ref_logits[keep]))
        if off_here:
            terms["log_w"] = chunk.logprob[keep] - chunk.rollout_logprob[keep]
        sums.add(chunk.sequence[keep], terms)
    s = sums.sums
    if not len(sums.ids):
        raise ValueError("source: no counted row (every row is masked out)")
    if sampler == "behaviour" and not has_rollout:
        raise ValueError("sampler='behaviour' needs the column 'rollout_logprob'")
    drawn = {"sampler": "old"} if has_rollout else {}
    columns: dict[SequenceEstimator, np.ndarray] = {
        SequenceEstimator("sum", base, **drawn): s[base] for base in ("k1", "k2", "k3")
    }
    with np.errstate(over="ignore"):
        columns[SequenceEstimator("sequence", "k3", **drawn)] = _TERMS["k3"](s["L"])
    if has_rb:
        columns[SequenceEstimator("rao_blackwell", **drawn)] = s["RB"]
    extra = {}
    if has_rollout:
        with np.errstate(over="ignore"):
            w = np.exp(s["log_w"])
        weighted = [("sum", "k1"), ("sum", "k3")] + ([("rao_blackwell", None)] if has_rb else [])
        for kind, base in weighted:
            est = SequenceEstimator(kind, base, sampler="old", weighting="sequence")
            columns[est] = w * s["RB" if base is None else base]
        extra["W"] = w
    out = pd.DataFrame(
        {est.name: v for est, v in columns.items()} | extra,
        index=pd.Index(sums.ids, name="sequence"),
    )
    out.attrs["unbiased"] = {est.name: est.unbiased for est in columns}
    return out


def sequence_estimates(
    source: Any, *, sampler: str | None = None, chunk_rows: int = 1_000_000
) -> pd.DataFrame:
    """Sequence-level KL(π‖π_ref) by each estimator of :func:`sequence_values`: its mean over
    the sequences (``estimate``), standard error (``se``, sequences independent), standard
    deviation, ``n``, the theory's verdict (``unbiased``), and where the log has logits the
    paired difference from the RB estimate of the same responses with its standard error
    (``diff_vs_rb``, ``diff_vs_rb_se``: the test of "same mean"). ``attrs``: the number of
    sequences and, for a behaviour, the weights' mean (π's mass on μ's support: 1 without
    truncation), effective sample size and the largest weight's share.
    """
    values = sequence_values(source, sampler=sampler, chunk_rows=chunk_rows)
    unbiased = values.attrs["unbiased"]
    n = len(values)
    rb = next((name for name in unbiased if name.startswith("RB")), None)
    rows = []
    for name in unbiased:
        v = values[name].to_numpy()
        std = float(np.std(v, ddof=1)) if n > 1 else float("nan")
        row = {"estimator": name, "estimate": float(np.mean(v)), "se": std / np.sqrt(n),
               "std": std, "n": n, "unbiased": unbiased[name]}  # fmt: skip
        if rb is not None:
            with np.errstate(invalid="ignore"):
                d = v - values[rb].to_numpy()
            row["diff_vs_rb"] = float(np.mean(d))
            row["diff_vs_rb_se"] = float(np.std(d, ddof=1) / np.sqrt(n)) if n > 1 else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["sequences"] = n
    if "W" in values:
        w = values["W"].to_numpy()
        out.attrs["weight_mean"] = float(w.mean())
        out.attrs["weight_ess"] = float(w.sum() ** 2 / np.sum(w * w))
        out.attrs["weight_max_share"] = float(w.max() / w.sum())
    return out

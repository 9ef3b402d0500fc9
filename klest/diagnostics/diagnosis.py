"""``diagnose``: what an RL run's logged log-probabilities say about its KL estimates.

One streaming pass over the log's chunks (:func:`klest.diagnostics.iter_chunks`) with
constant memory in the number of tokens (the per-sequence sums aside: one small row per
sequence; tails, reservoir samples and weight sums are bounded, see
:mod:`klest.diagnostics.accumulate`). For KL(π‖π_ref), π the policy (``logprob``) and π_ref
the reference (``ref_logprob``), l = ref_logprob − logprob, masked tokens left out:

- every estimator (k1, k2, k3, the framework kinds requested, RB from the logits when the
  log has them) at the token level (the mean over tokens) and the sequence level (the mean
  over sequences of the per-sequence sum: the sequence KL), with standard errors clustered by
  sequence (:mod:`klest.diagnostics.clustered`);
- the fraction of negative values, the non-finite count (an inf/NaN makes the estimate
  inf/NaN), framework clamp-hit fractions and what the clamp costs;
- PSIS k̂ of each estimator's tail, of r = π_ref/π and of the importance weights ρ = π/μ
  (``old_logprob``, ``rollout_logprob``) with their effective sample sizes, and a verdict:
  ``finite_variance`` (k̂ < ½) — where it is False the ``se`` is NaN (the formula's value is
  kept as ``se_unchecked``, never as the error bar) (:mod:`klest.diagnostics.tails`);
- the behaviour/trainer mismatch when ``rollout_logprob`` is present, and a recommendation
  (:mod:`klest.diagnostics.summarize`).

The tokens are taken as samples from π (on policy): with a behaviour policy μ ≠ π the
plain means estimate E_μ[k], and the mismatch block says how far μ is from π.

>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> lp = np.log(rng.uniform(0.2, 1.0, 4000))
>>> frame = pd.DataFrame({"sequence": np.repeat(np.arange(200), 20), "logprob": lp,
...                       "ref_logprob": np.minimum(lp + 0.1 * rng.standard_normal(4000), 0)})
>>> d = diagnose(frame)
>>> d.summary[["estimator", "level"]].head(3).values.tolist()
[['k1', 'token'], ['k1', 'sequence'], ['k2', 'token']]
>>> bool(d.summary.finite_variance.all())
True
>>> sorted(d.samples), d.mismatch is None
(['k1', 'k2', 'k3', 'l'], True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from klest.diagnostics.accumulate import LogSumExp, Reservoir, SequenceSums, TailBuffer
from klest.diagnostics.readers import iter_chunks
from klest.diagnostics.schema import TokenChunk
from klest.diagnostics.series import Series, evaluate, parse, rb_series
from klest.diagnostics.summarize import finish
from klest.errors import check_integer
from klest.estimators import get as _get_estimator

__all__ = ["Diagnosis", "diagnose"]

_K3 = _get_estimator("k3")

#: tokens in the reservoir sample (for histograms)
RESERVOIR = 200_000
#: largest values kept per tail (enough for a PSIS fit up to ~4.8e8 tokens)
TAIL_CAPACITY = 1 << 16
#: counted tokens evaluated at once (bounds the per-token temporaries: ~40 arrays of 2 MB)
BLOCK = 1 << 18
#: behaviour-weight columns and their names in the output
WEIGHTS = (("rollout_logprob", "rollout"), ("old_logprob", "old"))


def _jsonable(x: Any) -> Any:
    if isinstance(x, pd.DataFrame):
        return [_jsonable(r) for r in x.to_dict(orient="records")]
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
    return x


@dataclass(frozen=True)
class Diagnosis:
    """The result of :func:`diagnose` (see the module docstring).

    ``summary``: one row per estimator or framework kind and level (columns estimator, level,
    estimate, se, se_unchecked, khat, finite_variance, verdict, negative_fraction, nonfinite,
    clamp_fraction, clamp_cost, clamp_cost_se, target, unbiased, n, diff_vs_reference,
    diff_vs_reference_se, mse); ``mismatch``: the behaviour/trainer block (None without
    ``rollout_logprob``); ``weights``: k̂ and ESS of each behaviour weight ρ present;
    ``samples``: reservoir samples (name -> values: "l" and each estimator); ``tail``: the
    largest r with the fitted Pareto k, sigma and threshold (and "rho_rollout" /
    "rho_old" likewise); ``meta``: counts, settings, versions.
    """

    summary: pd.DataFrame
    mismatch: dict[str, Any] | None
    recommendation: str
    meta: dict[str, Any]
    samples: dict[str, np.ndarray] = field(repr=False)
    tail: dict[str, Any] = field(repr=False)
    weights: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Everything as JSON-safe values (NaN and inf as the strings "nan", "inf", "-inf")."""
        return _jsonable(
            {
                "summary": self.summary,
                "mismatch": self.mismatch,
                "recommendation": self.recommendation,
                "meta": self.meta,
                "weights": self.weights,
                "tail": self.tail,
                "samples": self.samples,
            }
        )


class _State:
    """Everything accumulated over the chunks."""

    def __init__(self, series: list[Series], first: TokenChunk, seed: int, reservoir: int):
        self.logits = first.logits is not None and first.ref_logits is not None
        for s in series:
            if s.needs_logits and not self.logits:
                raise ValueError(f"framework kind {s.name!r} needs the logits (logits and "
                                 "ref_logits side arrays); the log has none")  # fmt: skip
        self.series = series + ([rb_series()] if self.logits else [])
        self.weights = [(col, name) for col, name in WEIGHTS if getattr(first, col) is not None]
        self.rollout = first.rollout_logprob is not None
        self.clamped = [s.name for s in self.series if s.clamped]
        names = [s.name for s in self.series]
        # per-sequence sum columns: l, each series, each unclamped series, then mismatch k3
        # and the log of each behaviour weight
        self.columns = ["l", *names, *(f"{n}|unclamped" for n in self.clamped)]
        self.columns += ["mismatch_k3"] if self.rollout else []
        self.columns += [f"log_rho_{name}" for _, name in self.weights]
        self.sums = SequenceSums(len(self.columns))
        self.rows_per_sequence = SequenceSums(1)
        tails = ["r", "abs_l", *(s.name for s in self.series if s.tail == "value")]
        tails += [f"{s.name}|unclamped" for s in self.series if s.clamped and s.base != "k3"]
        tails += [f"rho_{n}" for _, n in self.weights]
        tails += ["abs_log_rho_rollout"] if self.rollout else []
        self.tails = {name: TailBuffer(TAIL_CAPACITY) for name in tails}
        self.ess = {"r": LogSumExp(), **{f"rho_{n}": LogSumExp() for _, n in self.weights}}
        self.negative = dict.fromkeys(names, 0)
        self.nonfinite = dict.fromkeys(["l", *names], 0)
        self.hits = dict.fromkeys(self.clamped, 0)
        self.rho_outside = 0
        self.reservoir = Reservoir(reservoir, ("l", *names), seed)
        self.rows = self.tokens = self.chunks = 0
        self.seed = seed
        self.fits: dict = {}
        self.present = [c for c in ("old_logprob", "rollout_logprob", "mask", "position")
                        if getattr(first, c) is not None]  # fmt: skip

    def add(self, chunk: TokenChunk) -> None:
        """Add one chunk, BLOCK counted tokens at a time (bounded temporaries)."""
        self.chunks += 1
        self.rows += len(chunk)
        self.rows_per_sequence.add(chunk.sequence, np.zeros((len(chunk), 1)))
        keep = chunk.counted
        every = bool(keep.all())
        names = ("logprob", "ref_logprob", "sequence", "logits", "ref_logits",
                 "rollout_logprob", "old_logprob")  # fmt: skip
        arrays = {}
        for name in names:
            x = getattr(chunk, name)
            arrays[name] = x if x is None or every else x[keep]
        n = len(arrays["logprob"])
        self.tokens += n
        for start in range(0, n, BLOCK):
            part = {k: None if x is None else x[start : start + BLOCK] for k, x in arrays.items()}
            self._block(part)

    def _block(self, part: dict[str, np.ndarray | None]) -> None:
        lp, ref, ids = part["logprob"], part["ref_logprob"], part["sequence"]
        n = len(lp)
        with np.errstate(all="ignore"):
            l = ref - lp
            got = evaluate(self.series, lp, ref, part["logits"], part["ref_logits"])
            columns = [l, *got.values.values(), *(got.unclamped[c] for c in self.clamped)]
            self.nonfinite["l"] += int(n - np.isfinite(l).sum())
            self.tails["r"].add(l)
            self.tails["abs_l"].add(np.log(np.abs(l)))
            self.ess["r"].add(l)
            for name, v in got.values.items():
                self.negative[name] += int((v < 0).sum())
                self.nonfinite[name] += int(n - np.isfinite(v).sum())
                if name in self.tails:
                    self.tails[name].add(np.log(np.abs(v)))
            for name, hit in got.clamp_hits.items():
                self.hits[name] += int(hit.sum())
                if f"{name}|unclamped" in self.tails:
                    self.tails[f"{name}|unclamped"].add(np.log(np.abs(got.unclamped[name])))
            if self.rollout:
                log_rho = lp - part["rollout_logprob"]
                rho = np.exp(log_rho)
                self.rho_outside += int(((rho < 0.9) | (rho > 1.1) | np.isnan(rho)).sum())
                k3 = _K3(log_rho)  # k3 of log(pi/mu) for x ~ mu: KL(mu||pi)
                self.tails["abs_log_rho_rollout"].add(np.log(np.abs(log_rho)))
                columns.append(k3)
            for col, name in self.weights:
                log_rho = lp - part[col]
                self.tails[f"rho_{name}"].add(log_rho)
                self.ess[f"rho_{name}"].add(log_rho)
                columns.append(log_rho)
            self.sums.add(ids, np.column_stack(columns))
            self.reservoir.add(np.column_stack([l, *got.values.values()]))


def _chunks(source: Any, chunk_rows: int, logits: Any) -> Iterable[TokenChunk]:
    if isinstance(source, TokenChunk):
        return [source]
    if isinstance(source, list | tuple) and source and isinstance(source[0], TokenChunk):
        return source
    return iter_chunks(source, chunk_rows=chunk_rows, logits=logits)


def diagnose(
    path_or_frame: Any,
    *,
    estimators: tuple[str, ...] = ("k1", "k2", "k3"),
    frameworks: tuple[str, ...] = (),
    chunk_rows: int = 1_000_000,
    seed: int = 0,
    logits: Any = None,
    reservoir: int = RESERVOIR,
) -> Diagnosis:
    """Diagnose the KL estimates of a token log (a path, DataFrame, dict of arrays, or
    TokenChunks): see the module docstring.

    ``estimators``: names in ``klest.estimators.names()``; ``frameworks``:
    "framework[@version]:kind" strings (``klest.rl.kinds``); ``seed``: the reservoir
    sample's; ``logits``: as :func:`~klest.diagnostics.iter_chunks` takes it;
    ``reservoir``: the sample size for histograms.

    >>> import numpy as np
    >>> log = {"sequence": [0, 0, 1], "logprob": [-0.1, -2.0, -0.5],
    ...        "ref_logprob": [-0.2, -1.5, -0.5]}
    >>> diagnose(log, frameworks=("verl:lowvar",))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: frameworks[0]: unknown kind 'lowvar' for framework verl@0.9.0; valid: kl, k1, ...
    """
    series = parse(estimators, frameworks)
    chunk_rows = check_integer("chunk_rows", chunk_rows, minimum=1)
    seed = check_integer("seed", seed, minimum=0)
    reservoir = check_integer("reservoir", reservoir, minimum=0)
    state: _State | None = None
    for chunk in _chunks(path_or_frame, chunk_rows, logits):
        if state is None:
            state = _State(series, chunk, seed, reservoir)
        state.add(chunk)
    if state is None:
        raise ValueError("path_or_frame: no tokens (an empty log)")
    parts = finish(state)
    return Diagnosis(**parts)

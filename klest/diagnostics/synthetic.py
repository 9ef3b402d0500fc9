"""Synthetic token logs with the exact answer beside them, for validating ``diagnose``.

- :func:`pair_log`: tokens x ~ q drawn i.i.d. from a pair of klest distributions (q the
  policy, p the reference), grouped into sequences of uniform random lengths in
  [min_length, max_length]. ``logprob`` = log q(x) − c and ``ref_logprob`` = log p(x) − c,
  one constant c for the whole log so that every value is ≤ 0 as the schema requires
  (densities can exceed 1); l = log p − log q is unchanged. :func:`pair_exact` gives each
  estimator's exact token-level mean and variance (``klest.exact_moments``) and the
  sequence-level mean E[N]·E[k].
- :func:`tabular_log`: responses of a ``klest.sequence.TabularAR`` policy (dependent tokens,
  an optional eos: random lengths, padding rows masked out), the reference's log-probs and
  both full logits (for RB) at each position; optionally sampled from a rollout model μ
  with ``rollout_logprob``. :func:`tabular_exact`: the sequence KL by the DP, E[T], and the
  token-level targets E[Σ_t k_t]/E[T].

>>> import numpy as np, klest
>>> log = pair_log(klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.0, scale=1.2),
...                n_sequences=10, rng=np.random.default_rng(0))
>>> sorted(log), bool((log["logprob"] <= 0).all())
(['logprob', 'ref_logprob', 'sequence'], True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from klest.exact import exact_moments
from klest.sequence import SequenceEstimator, TabularAR, exact_estimator_moments, sequence_kl

__all__ = ["Exact", "pair_exact", "pair_log", "tabular_exact", "tabular_log"]


@dataclass(frozen=True)
class Exact:
    """Exact targets: estimator -> mean (token and sequence level) and token variance."""

    kl_token: float
    kl_sequence: float
    token_mean: dict[str, float]
    sequence_mean: dict[str, float]
    token_var: dict[str, float]


def _lengths(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    return rng.integers(lo, hi + 1, size=n)


def pair_log(
    q: Any,
    p: Any,
    *,
    n_sequences: int,
    rng: np.random.Generator,
    min_length: int = 5,
    max_length: int = 35,
) -> dict[str, np.ndarray]:
    """A token log of i.i.d. x ~ q, scored by q (``logprob``) and p (``ref_logprob``)."""
    lengths = _lengths(rng, n_sequences, min_length, max_length)
    x = q.sample(rng, int(lengths.sum()))
    lq, lp = np.asarray(q.log_prob(x), np.float64), np.asarray(p.log_prob(x), np.float64)
    c = max(float(np.max(lq)), float(np.max(lp[np.isfinite(lp)], initial=0.0)), 0.0)
    return {
        "sequence": np.repeat(np.arange(n_sequences), lengths),
        "logprob": lq - c,
        "ref_logprob": lp - c,
    }


def pair_exact(
    q: Any, p: Any, names: tuple[str, ...], *, min_length: int = 5, max_length: int = 35
) -> Exact:
    """Exact means and variances of ``names`` for :func:`pair_log` with these lengths."""
    mean_length = (min_length + max_length) / 2
    moments = {name: exact_moments(q, p, name) for name in names}
    truth = float(next(iter(moments.values())).truth)
    return Exact(
        kl_token=truth,
        kl_sequence=mean_length * truth,
        token_mean={k: float(m.mean) for k, m in moments.items()},
        sequence_mean={k: mean_length * float(m.mean) for k, m in moments.items()},
        token_var={k: float(m.var) for k, m in moments.items()},
    )


def tabular_log(
    pi: TabularAR,
    ref: TabularAR,
    *,
    n_sequences: int,
    rng: np.random.Generator,
    rollout: TabularAR | None = None,
) -> dict[str, np.ndarray]:
    """Responses sampled from ``rollout`` (default: ``pi``) with every schema column:
    logprob (π), ref_logprob, rollout_logprob (when ``rollout`` is given), mask (False on
    the padding after an eos), position, and the logits of π and π_ref at each position."""
    sampler = pi if rollout is None else rollout
    tokens = sampler.sample(rng, n_sequences)
    contexts = pi.contexts(tokens)
    valid = tokens >= 0
    tok = np.maximum(tokens, 0)
    n, t = tokens.shape
    out = {
        "sequence": np.repeat(np.arange(n), t),
        "logprob": np.where(valid, pi.log_probs[contexts, tok], 0.0).ravel(),
        "ref_logprob": np.where(valid, ref.log_probs[contexts, tok], 0.0).ravel(),
        "mask": valid.ravel(),
        "position": np.tile(np.arange(t), n),
        "logits": pi.log_probs[contexts].reshape(n * t, -1),
        "ref_logits": ref.log_probs[contexts].reshape(n * t, -1),
    }
    if rollout is not None:
        lr = np.where(valid, rollout.log_probs[contexts, tok], 0.0)
        out["rollout_logprob"] = lr.ravel()
    return out


def expected_length(model: TabularAR) -> float:
    """E[T]: Σ_t P(the response has not ended before t)."""
    return float(model.state_distributions().sum())


def tabular_exact(pi: TabularAR, ref: TabularAR, names: tuple[str, ...] = ("k1", "k2", "k3")):
    """Exact targets for :func:`tabular_log` (tokens from π): the sequence-level mean of
    Σ_t k_t by the DP and the token-level ratio E[Σ_t k_t] / E[T]; "rb" is the KL itself."""
    kl = sequence_kl(pi, ref)
    length = expected_length(pi)
    seq = {name: float(exact_estimator_moments(SequenceEstimator("sum", name), pi, ref)[0])
           for name in names}  # fmt: skip
    seq["rb"] = kl
    return Exact(
        kl_token=kl / length,
        kl_sequence=kl,
        token_mean={k: v / length for k, v in seq.items()},
        sequence_mean=seq,
        token_var={},
    )

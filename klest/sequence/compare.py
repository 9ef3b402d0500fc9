"""Sequence-level KL estimators: sums of per-token k's, Rao–Blackwellised, off-policy.

The target is KL(π‖π_ref) between sequence distributions. With l_t = log π_ref(x_t|c_t) −
log π(x_t|c_t), L = Σ_t l_t, ρ_t = π(x_t|c_t)/μ(x_t|c_t) for an older policy μ and
W_{≤t} = Π_{s≤t} ρ_s (W = W_{≤T}), the estimators (``SequenceEstimator``) are:

=================  ==========================  ===============================================
kind / weighting   value                       unbiased for KL(π‖π_ref)?
=================  ==========================  ===============================================
sum / none (π)     Σ_t k(l_t)                  iff E[k(l_t)|c_t] is the conditional KL
                                               (k1, k3): then by the chain rule of KL
sequence / none    k(L)                        k1, k3 (E_π[e^L] = 1)
rao_blackwell      Σ_t KL(π(·|c_t)‖π_ref(·|c_t))  yes, lower variance than Σ k1 / Σ k3
sum / sequence     W · Σ_t k(l_t),  x ~ μ      yes (k1, k3): E_μ[W g] = E_π[g]
sum / prefix       Σ_t W_{≤t} k(l_t)           yes (k1, k3): per-decision weights
sum / token        Σ_t ρ_t k(l_t)              no: ignores the prefix shift μ -> π
sum / token_trunc  Σ_t min(ρ_t, C) k(l_t)      no (also truncation bias)
rao_blackwell/…    prefix Σ W_{<t} KL(c_t),    prefix, sequence: yes;
                   sequence W Σ KL(c_t),       none (x ~ μ, unweighted): no
                   none Σ KL(c_t)
=================  ==========================  ===============================================

Exact means and variances come from the forward DP of :mod:`klest.sequence.dp` (for k(L)
from the moments E[L^j e^{sL}] of the estimator's term form); Monte Carlo values are
computed directly from sampled tokens, independently of the DP.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from klest import estimators as _estimators
from klest.sequence.dp import linear_moments
from klest.sequence.model import TabularAR, check_pair, conditional_kl, sequence_kl

__all__ = [
    "WEIGHTINGS",
    "SequenceEstimator",
    "compare_sequence_estimators",
    "default_estimators",
    "estimator_values",
    "exact_estimator_moments",
    "random_models",
    "variance_vs_length",
]

WEIGHTINGS = ("none", "sequence", "prefix", "token", "token_truncated")
_ALLOWED = {
    "sum": WEIGHTINGS,
    "sequence": ("none", "sequence"),
    "rao_blackwell": ("none", "sequence", "prefix"),
}


@dataclass(frozen=True)
class SequenceEstimator:
    """One sequence-level estimator: ``kind`` in sum / sequence / rao_blackwell, the per-token
    estimator ``base`` (registry name; unused by rao_blackwell), the sampler ("policy" or "old")
    and, for old-policy samples, the importance ``weighting`` (truncated at ``truncation``).

    >>> SequenceEstimator("sum", "k3", sampler="old", weighting="prefix").name
    'sum k3, W_<=t'
    >>> SequenceEstimator("sum", "k3", sampler="old", weighting="token").unbiased
    False
    """

    kind: str
    base: str | None = None
    sampler: str = "policy"
    weighting: str = "none"
    truncation: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in _ALLOWED:
            raise ValueError(f"kind must be one of {', '.join(_ALLOWED)}; got {self.kind!r}")
        if self.sampler not in ("policy", "old"):
            raise ValueError(f"sampler must be 'policy' or 'old'; got {self.sampler!r}")
        if self.weighting not in _ALLOWED[self.kind]:
            raise ValueError(
                f"weighting {self.weighting!r} is not available for kind {self.kind!r}; "
                f"valid: {', '.join(_ALLOWED[self.kind])}"
            )
        if self.sampler == "policy" and self.weighting != "none":
            raise ValueError("importance weighting needs sampler='old'")
        if self.kind != "rao_blackwell":
            if self.base is None:
                raise ValueError(f"kind {self.kind!r} needs a per-token estimator base")
            try:
                object.__setattr__(self, "base", _estimators.get(self.base).name)
            except KeyError as err:
                raise ValueError(f"base: {err.args[0]}") from None
        if not (self.truncation > 0 and math.isfinite(self.truncation)):
            raise ValueError(f"truncation must be positive and finite; got {self.truncation!r}")

    @property
    def name(self) -> str:
        core = {"sum": f"sum {self.base}", "sequence": f"{self.base}(L)", "rao_blackwell": "RB"}
        label = core[self.kind]
        if self.sampler == "old":
            label += {
                "none": ", x~old unweighted",
                "sequence": ", W",
                "prefix": ", W_<=t" if self.kind == "sum" else ", W_<t",
                "token": ", rho_t",
                "token_truncated": f", min(rho_t, {self.truncation:g})",
            }[self.weighting]
        return label

    @property
    def unbiased(self) -> bool:
        """Unbiased for the sequence KL(π‖π_ref) for every model triple (see the module table)."""
        if self.kind == "rao_blackwell":
            base_ok = True
        else:
            est = _estimators.get(self.base)
            base_ok = est.target.kind == "kl_qp" and est.unbiased
        if self.sampler == "policy":
            return base_ok
        return base_ok and self.weighting in ("sequence", "prefix")


def default_estimators(
    bases: Sequence[str] = ("k1", "k2", "k3"), *, off_policy: bool = False, truncation: float = 1.0
) -> list[SequenceEstimator]:
    """The standard set: Σ k and k(L) per base, RB; with ``off_policy`` every weighting.

    >>> [e.name for e in default_estimators(["k3"])]
    ['sum k3', 'k3(L)', 'RB']
    """
    out = []
    for base in bases:
        out += [SequenceEstimator("sum", base), SequenceEstimator("sequence", base)]
    out.append(SequenceEstimator("rao_blackwell"))
    if off_policy:
        for base in bases:
            for weighting in WEIGHTINGS:
                out.append(SequenceEstimator("sum", base, "old", weighting, truncation))
        for weighting in ("none", "prefix", "sequence"):
            out.append(SequenceEstimator("rao_blackwell", None, "old", weighting))
    return out


def _models(
    spec: SequenceEstimator, policy: TabularAR, ref: TabularAR, old: TabularAR | None
) -> TabularAR:
    check_pair(policy, ref, "ref")
    if spec.sampler == "old":
        if old is None:
            raise ValueError(f"estimator {spec.name!r} samples from the old policy: pass old=")
        check_pair(policy, old, "old")
        return old
    return policy


def estimator_values(
    spec: SequenceEstimator,
    policy: TabularAR,
    ref: TabularAR,
    old: TabularAR | None,
    tokens: Any,
) -> np.ndarray:
    """The estimator on each sequence of ``tokens`` (drawn from the spec's sampler), shape (n,).

    >>> import numpy as np
    >>> pi, ref, _ = random_models(vocab=3, order=1, length=4, rng=np.random.default_rng(0))
    >>> x = pi.sample(np.random.default_rng(1), 5)
    >>> estimator_values(SequenceEstimator("sum", "k1"), pi, ref, None, x).shape
    (5,)
    """
    _models(spec, policy, ref, old)
    tok = np.asarray(tokens)
    lp = policy.token_log_probs(tok)
    l = ref.token_log_probs(tok) - lp
    log_rho = lp - old.token_log_probs(tok) if spec.sampler == "old" else np.zeros_like(lp)
    cum = np.cumsum(log_rho, axis=1)
    if spec.kind == "sequence":
        value = _estimators.get(spec.base)(l.sum(axis=1))
        return value * np.exp(cum[:, -1]) if spec.weighting == "sequence" else value
    if spec.kind == "rao_blackwell":
        terms = conditional_kl(policy, ref)[policy.contexts(tok)]
        if spec.weighting == "prefix":
            return np.sum(np.exp(cum - log_rho) * terms, axis=1)
    else:
        terms = _estimators.get(spec.base)(l)
        if spec.weighting == "prefix":
            return np.sum(np.exp(cum) * terms, axis=1)
        if spec.weighting == "token":
            return np.sum(np.exp(log_rho) * terms, axis=1)
        if spec.weighting == "token_truncated":
            return np.sum(np.minimum(np.exp(log_rho), spec.truncation) * terms, axis=1)
    total = terms.sum(axis=1)
    return total * np.exp(cum[:, -1]) if spec.weighting == "sequence" else total


def _additive_matrices(f: np.ndarray, rho: np.ndarray, weighting: str) -> np.ndarray:
    """2x2 update matrices for y = (weight, weighted running sum) with per-token increment f."""
    M = np.zeros((*f.shape, 2, 2))
    one = np.ones_like(f)
    if weighting == "none":
        M[..., 0, 0], M[..., 1, 0], M[..., 1, 1] = one, f, one
    elif weighting == "sequence":  # (W, W S): W' = rho W, (W S)' = rho (W S) + rho f W
        M[..., 0, 0], M[..., 1, 0], M[..., 1, 1] = rho, rho * f, rho
    elif weighting == "prefix":  # (W, X): X' = X + rho f W for sums (f already carries rho
        M[..., 0, 0], M[..., 1, 0], M[..., 1, 1] = rho, f, one  # for RB: W_{<t} KL(c_t))
    else:  # token weights are folded into f by the caller
        M[..., 0, 0], M[..., 1, 0], M[..., 1, 1] = one, f, one
    return M


def _term_moments(
    model: TabularAR, kernel: np.ndarray, l_tab: np.ndarray, wanted: set[tuple[int, float]]
) -> dict[tuple[int, float], float]:
    """E_K[L^j e^{sL}] for each (j, s) in ``wanted`` (a first-moment DP on a closed basis)."""
    basis = sorted({(i, s) for j, s in wanted for i in range(j + 1)})
    index = {b: k for k, b in enumerate(basis)}
    M = np.zeros((*l_tab.shape, len(basis), len(basis)))
    with np.errstate(over="ignore", invalid="ignore"):
        for (j, s), row in index.items():
            for i in range(j + 1):
                M[..., row, index[(i, s)]] = np.exp(s * l_tab) * math.comb(j, i) * l_tab ** (j - i)
    y0 = np.array([1.0 if j == 0 else 0.0 for j, _ in basis])
    mean, _ = linear_moments(model, kernel, M, y0, second=False)
    return {b: float(mean[index[b]]) for b in wanted}


def exact_estimator_moments(
    spec: SequenceEstimator, policy: TabularAR, ref: TabularAR, old: TabularAR | None = None
) -> tuple[float, float]:
    """(mean, variance) of the estimator exactly, by the forward DP (no enumeration).

    k(L) needs the base estimator's term form (k1, k2, k3, rev_kl, ...): otherwise NaN.

    >>> import numpy as np
    >>> pi, ref, _ = random_models(vocab=3, order=2, length=5, rng=np.random.default_rng(0))
    >>> mean, var = exact_estimator_moments(SequenceEstimator("rao_blackwell"), pi, ref)
    >>> bool(np.isclose(mean, sequence_kl(pi, ref)))
    True
    """
    sampler = _models(spec, policy, ref, old)
    kernel = np.exp(sampler.log_probs)
    l_tab = ref.log_probs - policy.log_probs
    rho = np.exp(policy.log_probs - sampler.log_probs)
    if spec.kind == "sequence":
        terms = _estimators.get(spec.base).terms
        if terms is None:
            return math.nan, math.nan
        # E_mu[W g] = E_pi[g], E_mu[W^2 g^2] = E_pi[W g^2]: fold the weight into the kernel
        k1 = kernel * rho if spec.weighting == "sequence" else kernel
        k2 = kernel * rho * rho if spec.weighting == "sequence" else kernel
        pairs = [(a * b, ja + jb, sa + sb) for a, ja, sa in terms for b, jb, sb in terms]
        first = _term_moments(sampler, k1, l_tab, {(j, s) for _, j, s in terms})
        sq = _term_moments(sampler, k2, l_tab, {(j, s) for _, j, s in pairs})
        mean = sum(c * first[(j, s)] for c, j, s in terms)
        second = sum(c * sq[(j, s)] for c, j, s in pairs)
        return float(mean), float(second - mean * mean)
    if spec.kind == "rao_blackwell":
        f = np.broadcast_to(conditional_kl(policy, ref)[:, None], l_tab.shape)
        M = _additive_matrices(f, rho, spec.weighting)
    else:
        f = _estimators.get(spec.base)(l_tab)
        if spec.weighting in ("prefix", "token"):
            f = rho * f
        elif spec.weighting == "token_truncated":
            f = np.minimum(rho, spec.truncation) * f
        M = _additive_matrices(f, rho, spec.weighting)
    mean, Y = linear_moments(sampler, kernel, M, np.array([1.0, 0.0]))
    return float(mean[1]), float(Y[1, 1] - mean[1] ** 2)


def random_models(
    *,
    vocab: int,
    order: int,
    length: int,
    rng: np.random.Generator,
    scale: float = 1.0,
    ref_scale: float = 0.5,
    old_scale: float = 0.3,
) -> tuple[TabularAR, TabularAR, TabularAR]:
    """(policy, ref, old): a random policy and two perturbations of its logits.

    >>> import numpy as np
    >>> pi, ref, old = random_models(vocab=3, order=1, length=4, rng=np.random.default_rng(0))
    >>> pi.logits.shape == ref.logits.shape == old.logits.shape
    True
    """
    policy = TabularAR.random(vocab=vocab, order=order, length=length, rng=rng, scale=scale)
    return policy, policy.perturbed(rng, ref_scale), policy.perturbed(rng, old_scale)


def compare_sequence_estimators(
    policy: TabularAR,
    ref: TabularAR,
    old: TabularAR | None = None,
    *,
    estimators: Sequence[SequenceEstimator] | None = None,
    n: int = 100_000,
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Exact and Monte Carlo bias/variance of each estimator, one row per estimator.

    Columns: estimator kind base sampler weighting unbiased truth exact_mean exact_var
    exact_bias mc_mean mc_var se_mean z_mean n. Samples from π and from ``old`` are drawn once
    and shared by the estimators that use them.

    >>> import numpy as np
    >>> pi, ref, old = random_models(vocab=3, order=1, length=5, rng=np.random.default_rng(0))
    >>> df = compare_sequence_estimators(pi, ref, old, n=2000, rng=np.random.default_rng(1))
    >>> bool((df.loc[df.unbiased, "exact_bias"].abs() < 1e-12).all())
    True
    """
    if estimators is None:
        estimators = default_estimators(off_policy=old is not None)
    truth = sequence_kl(policy, ref)
    samples: dict[str, np.ndarray] = {}
    rows = []
    for spec in estimators:
        sampler = _models(spec, policy, ref, old)
        if spec.sampler not in samples:
            samples[spec.sampler] = sampler.sample(rng, n)
        values = estimator_values(spec, policy, ref, old, samples[spec.sampler])
        mean, var = exact_estimator_moments(spec, policy, ref, old)
        mc_mean, mc_var = float(values.mean()), float(values.var(ddof=1))
        se = math.sqrt(mc_var / n)
        rows.append(
            {
                **_exact_columns(spec, truth, mean, var),
                "mc_mean": mc_mean,
                "mc_var": mc_var,
                "se_mean": se,
                "z_mean": (mc_mean - mean) / se if se > 0 else math.nan,
                "n": n,
            }
        )
    return pd.DataFrame(rows)


def _exact_columns(
    spec: SequenceEstimator, truth: float, mean: float, var: float
) -> dict[str, object]:
    """The columns shared by both comparison tables: the estimator and its exact moments."""
    return {
        "estimator": spec.name,
        "kind": spec.kind,
        "base": spec.base,
        "sampler": spec.sampler,
        "weighting": spec.weighting,
        "unbiased": spec.unbiased,
        "truth": truth,
        "exact_mean": mean,
        "exact_var": var,
        "exact_bias": mean - truth,
    }


def variance_vs_length(
    policy: TabularAR,
    ref: TabularAR,
    old: TabularAR | None = None,
    *,
    lengths: Sequence[int],
    estimators: Sequence[SequenceEstimator] | None = None,
) -> pd.DataFrame:
    """Exact mean, variance and bias of each estimator for sequences of each length (DP only).

    The conditional tables are kept; only T changes (``TabularAR.with_length``).

    >>> import numpy as np
    >>> pi, ref, _ = random_models(vocab=3, order=1, length=1, rng=np.random.default_rng(0))
    >>> df = variance_vs_length(pi, ref, lengths=[1, 4], estimators=default_estimators(["k1"]))
    >>> bool(df.groupby("estimator")["exact_var"].apply(lambda v: v.is_monotonic_increasing).all())
    True
    """
    if estimators is None:
        estimators = default_estimators(off_policy=old is not None)
    rows = []
    for length in lengths:
        pi_t, ref_t = policy.with_length(length), ref.with_length(length)
        old_t = old.with_length(length) if old is not None else None
        truth = sequence_kl(pi_t, ref_t)
        for spec in estimators:
            mean, var = exact_estimator_moments(spec, pi_t, ref_t, old_t)
            rows.append(
                {
                    "length": int(length),
                    **_exact_columns(spec, truth, mean, var),
                    "rel_std": math.sqrt(max(var, 0.0)) / truth if truth > 0 else math.nan,
                }
            )
    return pd.DataFrame(rows)

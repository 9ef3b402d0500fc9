"""Exact KL quantities for a policy pair when the tokens come from truncated sampling.

The trainer's policy π = softmax(z / T') and reference π_ref = softmax(z_ref / T') (the
trainer's temperature T' is the engine's T unless ``trainer_temperature`` says otherwise, as
verl, TRL and OpenRLHF divide both by the rollout temperature); the engine samples from
μ = π_T · 1_K / S, π_T = softmax(z / T) truncated to its kept set K
(:func:`klest.distributions.truncation.truncate`: top-k / top-p / min-p, vLLM's or Hugging
Face's rules), S = π_T(K) the surviving mass. Everything below is per position and exact
(sums over the vocabulary, no sampling). With T' = T (so π_T = π and μ = π_K, the policy
renormalised on K) and R = π_ref(K):

* KL(μ‖π) = -log S (μ is π conditioned on K).
* The importance log-ratio log π(x) - log μ(x) = log S for every sampled x: an engine
  returning its renormalised ("processed") log-probs makes ρ = π/μ = S < 1 at identical
  weights (TRL #6789), a bias of log S in the logged log-ratio (in general, with T' ≠ T, its
  mean is E_μ[log π - log μ] = -KL(μ‖π)). An engine returning raw log-probs (vLLM's default
  ``logprobs_mode="raw_logprobs"``: the log-softmax of the logits before temperature and
  truncation) gives ρ = 1 although the tokens come from μ. vLLM's other modes
  (``vllm/v1/sample/sampler.py``, ``Sampler.forward``): ``processed_logprobs`` = log μ (what
  TRL's GRPO requests), ``processed_logits`` and ``raw_logits`` the logits; Hugging Face's
  ``output_scores`` are the processed logits (tempered, -inf outside K, not normalised),
  ``output_logits`` the raw ones.

Each estimator k(l) of klest (l = log p - log q, here p = π_ref's side, q = π's side) is
averaged exactly over x ~ μ, with the per-token log-probs taken three ways (``mode``):

``"raw"``: the trainer's full-vocabulary log-probs, l = log π_ref(x) - log π(x) (what a KL
penalty or a logged KL computes from a truncated rollout). It is meant as KL(π‖π_ref) but
    E[k1] = Σ_K μ log(π/π_ref) = KL(μ‖π_ref) + log S,
    E[k3] = E[k1] + R/S - 1,   E[k2] = ½ Σ_K μ (log π_ref/π)²;
target KL(π‖π_ref), bias E[k] - KL(π‖π_ref), of either sign (k1 is negative when π_ref
puts more mass than π on the head that survives; k3 >= 0 always).

``"renormalised"``: the policy log-prob is the engine's renormalised one, log μ(x) (logged
rollout log-probs used as the policy's), the reference's full: l = log π_ref(x) - log μ(x) =
raw l + log S. Then
    E[k1] = KL(μ‖π_ref) exactly,   E[k3] = KL(μ‖π_ref) - (1 - R),
target KL(μ‖π_ref): k1 is unbiased for it, k3 low by the reference mass outside K (its
control variate r - 1 has mean R - 1, not 0, because μ has no mass outside K).

``"kept_mask"``: both replayed with the kept set (DeepSeek-V3.2's "keep sampling mask"):
π_K = π·1_K/π(K) and π_ref,K = π_ref·1_K/R, l = log π_ref,K(x) - log π_K(x) = raw l +
log S - log R. The samples are on-policy for this pair (μ = π_K), so
    E[k1] = E[k3] = KL(π_K‖π_ref,K) = KL(μ‖π_ref) + log R,
target KL(π_K‖π_ref,K), unbiased for k1 and k3 (k2 keeps its usual bias); it is the KL of
the policies restricted to what was sampled, not KL(π‖π_ref).

Every table states ``target`` (the KL the mode's estimator is consistent for), ``bias`` =
mean - that KL, and ``bias_vs_kl_pi_ref`` = mean - KL(π‖π_ref) (against what the trainer
means to penalise). With T' ≠ T the same sums are evaluated with μ ≠ π_K (the closed forms
above then do not hold; the tables stay exact).

>>> import numpy as np
>>> z, z_ref = np.log([0.5, 0.3, 0.2]), np.log([0.4, 0.4, 0.2])
>>> pair = truncated_pair(z, z_ref, top_k=2)
>>> float(pair.surviving_mass), round(float(pair.kl("KL(mu||pi)")), 6)  # -log 0.8
(0.8, 0.223144)
>>> round(float(pair.moments("k1", "renormalised")[0] - pair.kl("KL(mu||ref)")), 12)
0.0
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from klest import estimators as _estimators
from klest.distributions.truncation import DEFAULT_CONVENTION, GREEDY_TEMPERATURE, truncate

__all__ = [
    "KLS",
    "MODES",
    "TARGETS",
    "TruncatedPair",
    "truncated_pair",
    "truncation_sweep",
]

#: how the per-token log-probs are taken (module docstring)
MODES = ("raw", "renormalised", "kept_mask")
#: the KL each mode's estimators are consistent for
TARGETS = {"raw": "KL(pi||ref)", "renormalised": "KL(mu||ref)", "kept_mask": "KL(pi_K||ref_K)"}
#: the KLs :meth:`TruncatedPair.kl` computes
KLS = ("KL(pi||ref)", "KL(mu||ref)", "KL(mu||pi)", "KL(pi_K||ref_K)")


def _log_softmax(z: np.ndarray, t: float) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return special.log_softmax((z - z.max(axis=-1, keepdims=True)) / t, axis=-1)


def _kl(log_a: np.ndarray, log_b: np.ndarray) -> np.ndarray:
    """Σ a (log a - log b) over a > 0 (inf where b = 0 < a)."""
    a = np.exp(log_a)
    with np.errstate(invalid="ignore"):
        terms = np.where(a > 0, a * (log_a - log_b), 0.0)
    return terms.sum(axis=-1)


def _log_mass(log_p: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """log p(K), accurate when p(K) is near 1 (log1p of the removed mass) and when small."""
    removed = np.sum(np.where(kept, 0.0, np.exp(log_p)), axis=-1)
    with np.errstate(divide="ignore"):
        near_one = np.log1p(-np.minimum(removed, 0.5))
        head = special.logsumexp(np.where(kept, log_p, -np.inf), axis=-1)
    return np.where(removed <= 0.5, near_one, head)


@dataclass(frozen=True, eq=False)
class TruncatedPair:
    """A policy pair under truncated sampling (built by :func:`truncated_pair`), per position.

    ``log_mu`` (the engine's sampling distribution), ``log_pi`` and ``log_ref`` (the
    trainer's), shape ``(..., V)``; ``kept`` the kept set K; ``log_mass`` = log S, S the
    engine's surviving mass; ``settings`` the sampling settings.
    """

    log_mu: np.ndarray
    log_pi: np.ndarray
    log_ref: np.ndarray
    kept: np.ndarray
    log_mass: np.ndarray
    settings: Mapping[str, Any]

    @property
    def surviving_mass(self) -> np.ndarray:
        """S = π_T(K), the engine's tempered mass that survives truncation."""
        return np.exp(self.log_mass)

    @property
    def log_ratio_bias(self) -> np.ndarray:
        """E_μ[log π - log μ] = -KL(μ‖π): the mean bias of the importance log-ratio computed
        from the engine's renormalised log-probs; = log S when T' = T (then for every token)."""
        return -self.kl("KL(mu||pi)")

    @cached_property
    def _log_pi_kept(self) -> tuple[np.ndarray, np.ndarray]:
        return _log_mass(self.log_pi, self.kept), _log_mass(self.log_ref, self.kept)

    @property
    def policy_kept_mass(self) -> np.ndarray:
        """π(K) (= S when T' = T)."""
        return np.exp(self._log_pi_kept[0])

    @property
    def ref_kept_mass(self) -> np.ndarray:
        """R = π_ref(K)."""
        return np.exp(self._log_pi_kept[1])

    @cached_property
    def _on_kept(self) -> tuple[np.ndarray, np.ndarray]:
        """log π_K and log π_ref,K (renormalised on K, -inf outside)."""
        a, b = self._log_pi_kept
        return (np.where(self.kept, self.log_pi - a[..., None], -np.inf),
                np.where(self.kept, self.log_ref - b[..., None], -np.inf))  # fmt: skip

    @cached_property
    def _kls(self) -> dict[str, np.ndarray]:
        return {
            "KL(pi||ref)": _kl(self.log_pi, self.log_ref),
            "KL(mu||ref)": _kl(self.log_mu, self.log_ref),
            "KL(mu||pi)": _kl(self.log_mu, self.log_pi),
            "KL(pi_K||ref_K)": _kl(*self._on_kept),
        }

    def kl(self, which: str) -> np.ndarray:
        """One of :data:`KLS`, exactly, per position; KL(μ‖π) with T' = T is -log S."""
        if which not in KLS:
            raise ValueError(f"which must be one of {KLS}, got {which!r}")
        return self._kls[which]

    def log_ratio(self, mode: str) -> np.ndarray:
        """The per-token log-ratio l = log p - log q of ``mode`` on the kept set (NaN
        outside it, where μ has no mass), shape ``(..., V)``."""
        if mode == "raw":
            lp, lq = self.log_ref, self.log_pi
        elif mode == "renormalised":
            lp, lq = self.log_ref, self.log_mu
        elif mode == "kept_mask":
            lq, lp = self._on_kept
        else:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        with np.errstate(invalid="ignore"):
            return np.where(self.kept, lp - lq, np.nan)

    def moments(self, estimator: str, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """(E_μ[k(l)], Var_μ[k(l)]) per position, exactly, for one registered estimator and a
        log-prob ``mode``; the mean is +inf (and the variance too) where k is infinite on K."""
        est = _estimators.get(estimator)
        l = self.log_ratio(mode)
        mu = np.exp(self.log_mu)
        with np.errstate(over="ignore", invalid="ignore"):
            values = np.where(self.kept, est(np.where(self.kept, l, 0.0)), 0.0)
            mean = np.sum(mu * values, axis=-1)
            dev = np.where(self.kept, values - mean[..., None], 0.0)
            var = np.sum(mu * dev * dev, axis=-1)
        var = np.where(np.isinf(mean), np.inf, var)
        return mean, var

    def target(self, mode: str) -> np.ndarray:
        """The value of ``TARGETS[mode]``, per position."""
        if mode not in TARGETS:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return self.kl(TARGETS[mode])

    def _columns(self, estimators: Sequence[str], modes: Sequence[str]) -> list[dict[str, Any]]:
        """One dict per mode x estimator of per-position arrays (flattened batch)."""
        common = {
            "surviving_mass": self.surviving_mass.ravel(),
            "log_surviving_mass": self.log_mass.ravel(),
            "kl_mu_pi": self.kl("KL(mu||pi)").ravel(),
            "ref_kept_mass": self.ref_kept_mass.ravel(),
            "kept": self.kept.sum(axis=-1).ravel().astype(np.float64),
        }
        kl_pi_ref = self.kl("KL(pi||ref)").ravel()
        out = []
        for mode in modes:
            target = self.target(mode).ravel()
            for name in estimators:
                mean, var = (m.ravel() for m in self.moments(name, mode))
                out.append({
                    "mode": mode, "estimator": _estimators.get(name).name,
                    "target": TARGETS[mode], "mean": mean, "var": var,
                    "target_value": target, "bias": mean - target, "kl_pi_ref": kl_pi_ref,
                    "bias_vs_kl_pi_ref": mean - kl_pi_ref, **common,
                })  # fmt: skip
        return out

    def table(
        self, estimators: Sequence[str] = ("k1", "k2", "k3"), modes: Sequence[str] = MODES
    ) -> pd.DataFrame:
        """One row per position x mode x estimator: ``mean``, ``var``, ``target`` (its KL's
        name), ``target_value``, ``bias``, ``kl_pi_ref``, ``bias_vs_kl_pi_ref``, and the
        position's ``surviving_mass``, ``log_surviving_mass``, ``kl_mu_pi``, ``ref_kept_mass``
        and ``kept`` (the size of K). ``position`` is the flat index into the batch shape.

        >>> pair = truncated_pair(np.log([0.5, 0.3, 0.2]), np.log([0.4, 0.4, 0.2]), top_p=0.6)
        >>> df = pair.table(["k1"], ["renormalised"])
        >>> df[["target", "bias", "kept"]].round(12).values.tolist()
        [['KL(mu||ref)', 0.0, 2.0]]
        """
        positions = np.arange(self.log_mass.size)
        parts = [pd.DataFrame({"position": positions, **columns})
                 for columns in self._columns(estimators, modes)]  # fmt: skip
        return pd.concat(parts, ignore_index=True)


def truncated_pair(
    logits: Any,
    ref_logits: Any,
    *,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    temperature: float = 1.0,
    convention: str = DEFAULT_CONVENTION,
    ties: str = "keep",
    min_tokens_to_keep: int = 1,
    trainer_temperature: float | None = None,
) -> TruncatedPair:
    """The pair (π = softmax(logits / T'), π_ref = softmax(ref_logits / T')) with tokens from
    the engine's μ (``logits`` tempered by ``temperature`` and truncated, the sampling
    arguments as in :func:`klest.distributions.truncation.truncate`); T' =
    ``trainer_temperature``, by default ``temperature`` (vLLM's greedy sampling, T < 1e-5,
    needs it given). Shapes ``(..., V)``, equal.

    >>> pair = truncated_pair(np.log([0.5, 0.3, 0.2]), np.log([0.4, 0.4, 0.2]), top_k=2)
    >>> float(pair.ref_kept_mass), pair.kept.tolist()
    (0.8, [True, True, False])
    """
    out = truncate(
        logits, top_k=top_k, top_p=top_p, min_p=min_p, temperature=temperature,
        convention=convention, ties=ties, min_tokens_to_keep=min_tokens_to_keep,
    )  # fmt: skip
    greedy = convention == "vllm" and temperature < GREEDY_TEMPERATURE
    if trainer_temperature is None:
        if greedy:
            raise ValueError(
                f"trainer_temperature must be given with greedy sampling (temperature "
                f"{temperature!r} < {GREEDY_TEMPERATURE:g})"
            )
        trainer_temperature = temperature
    if isinstance(trainer_temperature, bool) or not isinstance(trainer_temperature, int | float):
        raise TypeError(f"trainer_temperature must be a number, got {trainer_temperature!r}")
    if not (np.isfinite(trainer_temperature) and trainer_temperature > 0):
        raise ValueError(f"trainer_temperature must be finite and > 0, got {trainer_temperature!r}")
    z = np.asarray(logits, dtype=np.float64)
    try:
        z_ref = np.asarray(ref_logits, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"ref_logits must be an array of real numbers, got {ref_logits!r}"
        ) from None
    if z_ref.shape != z.shape:
        raise ValueError(f"ref_logits must have the shape of logits {z.shape}, got {z_ref.shape}")
    if np.isnan(z_ref).any() or (z_ref == np.inf).any():
        raise ValueError("ref_logits must be finite or -inf (no NaN, no +inf)")
    if (z_ref == -np.inf).all(axis=-1).any():
        raise ValueError("ref_logits must have a finite entry in every row")
    settings = {"top_k": top_k, "top_p": top_p, "min_p": min_p, "temperature": temperature,
                "convention": convention, "ties": ties, "min_tokens_to_keep": min_tokens_to_keep,
                "trainer_temperature": float(trainer_temperature)}  # fmt: skip
    t_tr = float(trainer_temperature)
    log_pi = out.tempered if t_tr == temperature and not greedy else _log_softmax(z, t_tr)
    return TruncatedPair(out.log_probs, log_pi, _log_softmax(z_ref, t_tr), out.kept,
                         out.log_mass, settings)  # fmt: skip


def truncation_sweep(
    logits: Any,
    ref_logits: Any,
    settings: Iterable[Mapping[str, Any]],
    *,
    estimators: Sequence[str] = ("k1", "k2", "k3"),
    modes: Sequence[str] = MODES,
    **common: Any,
) -> pd.DataFrame:
    """The tidy frame of a sweep (the truncation figure's): for each mapping of ``settings``
    (arguments of :func:`truncated_pair`, e.g. ``{"top_p": 0.9}``, over ``common``), one row
    per mode x estimator, the columns of :meth:`TruncatedPair.table` averaged over the
    positions (each position weighted equally; ``kept`` is then the mean size of K) and the
    settings ``top_k`` ``top_p`` ``min_p`` ``temperature`` ``convention``: ``top_k``,
    ``top_p`` and ``min_p`` as floats, NaN where the rule is off (so that frames of
    different sweeps concatenate as numbers).

    >>> df = truncation_sweep(np.log([0.5, 0.3, 0.2]), np.log([0.4, 0.4, 0.2]),
    ...                       [{"top_k": 1}, {"top_k": 2}], estimators=["k1"], modes=["raw"])
    >>> df[["top_k", "surviving_mass"]].values.tolist()
    [[1.0, 0.5], [2.0, 0.8]]
    """
    keys = ("top_k", "top_p", "min_p", "temperature", "convention")
    rules = ("top_k", "top_p", "min_p")
    rows = []
    for setting in settings:
        pair = truncated_pair(logits, ref_logits, **{**common, **setting})
        named = {key: pair.settings[key] for key in keys}
        named.update({key: math.nan if named[key] is None else float(named[key]) for key in rules})
        for columns in pair._columns(estimators, modes):
            rows.append(
                {
                    **named,
                    **{
                        key: value if isinstance(value, str) else float(np.mean(value))
                        for key, value in columns.items()
                    },
                }
            )
    return pd.DataFrame(rows)

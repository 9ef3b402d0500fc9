"""The per-token series that :func:`~klest.diagnostics.diagnose` accumulates, chunk by chunk.

A :class:`Series` is one row family of the summary: a klest estimator (``klest.estimators``,
of l = ref_logprob − logprob), a framework kind ("verl:low_var_kl", "openrlhf@0.11.0:k3":
``klest.rl.kl_penalty`` on numpy, with the release's default options: no behaviour-policy
option is passed, so importance weights are 1 and the value is the on-policy one) or the
Rao-Blackwellised "rb" (``klest.rl.full_kl`` of the logits at each position).

**Clamp hits.** A framework spec (:mod:`klest.rl.primitives`) clamps the log-ratio to
±input_clamp before its estimator and the value to ±output_clamp after it. The input clamp is
active where |l| > input_clamp, the output clamp where the value computed without it exceeds
output_clamp in absolute value; ``clamp_fraction`` is the fraction of tokens where either is.
The same spec without both clamps (``dataclasses.replace``, evaluated by
``klest.rl.apply_spec``) is the unclamped value: the clamp's cost is the mean difference.

>>> import numpy as np
>>> [s.name for s in parse(("k1", "k3"), ("verl:low_var_kl",))]
['k1', 'k3', 'verl:low_var_kl']
>>> parse(("k4",), ())  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: estimators[0]: unknown estimator 'k4'; valid: k1, k2, k3, abs, low_var_kl, ...
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_softmax

from klest import estimators as _estimators
from klest import rl
from klest.rl.primitives import PenaltySpec

__all__ = ["Series", "evaluate", "parse"]

_TARGETS = {"kl_qp": "KL(pi||ref)", "kl_pq": "KL(ref||pi)"}


@dataclass(frozen=True)
class Series:
    """One estimator's per-token values: ``source`` "estimator", "framework" or "rb"."""

    name: str
    source: str
    target: str
    unbiased: bool
    spec: PenaltySpec | None = None
    needs_logits: bool = False

    @property
    def bound(self) -> float | None:
        """|value| <= bound for every token (an output clamp), else None."""
        if self.source == "estimator":
            return 10.0 if self.name == "low_var_kl" else None
        return None if self.spec is None else self.spec.output_clamp

    @property
    def base(self) -> str:
        """The estimator the value is computed by (a framework spec's, or the name)."""
        return self.spec.estimator if self.spec is not None else self.name

    @property
    def tail(self) -> str:
        """Which tail decides the variance (:mod:`klest.diagnostics.tails`): "k3" (those of
        r and of |l|), "r" (rev_kl: r log r) or "value" (|value| itself)."""
        if self.bound is None and self.base == "k3":
            return "k3"
        return "r" if self.base == "rev_kl" else "value"

    @property
    def clamped(self) -> bool:
        s = self.spec
        return s is not None and (s.input_clamp is not None or s.output_clamp is not None)


def _estimator(i: int, name: Any) -> Series:
    if not isinstance(name, str):
        raise TypeError(f"estimators[{i}] must be a string, got {name!r}")
    valid = _estimators.names()
    if name not in _estimators.names(include_aliases=True):
        raise ValueError(f"estimators[{i}]: unknown estimator {name!r}; valid: {', '.join(valid)}")
    est = _estimators.get(name)
    target = _TARGETS.get(
        est.target.kind, est.target.label.replace("q", "pi").replace("p,", "ref,")
    )
    return Series(est.name, "estimator", target, bool(est.unbiased))


def _framework(i: int, text: Any) -> Series:
    if not isinstance(text, str):
        raise TypeError(
            f"frameworks[{i}] must be a string 'framework[@version]:kind', got {text!r}"
        )
    fw, sep, kind = text.partition(":")
    if not sep or not fw.strip() or not kind.strip():
        raise ValueError(
            f"frameworks[{i}]: {text!r} is not 'framework[@version]:kind' "
            "(e.g. 'verl:low_var_kl', 'openrlhf@0.11.0:k3')"
        )
    try:
        spec = rl.spec(fw.strip(), kind.strip())
    except ValueError as err:
        raise ValueError(f"frameworks[{i}]: {err}") from None
    if spec.unsupported is not None:
        raise ValueError(f"frameworks[{i}]: {spec.framework}@{spec.version} kind {kind!r}: "
                         f"{spec.unsupported.splitlines()[0]}")  # fmt: skip
    if spec.anchor != "ref_logprob":
        raise ValueError(
            f"frameworks[{i}]: {spec.framework} kind {kind!r} compares logprob with "
            f"{spec.anchor.split()[0]}, not ref_logprob: not a KL(pi||ref) penalty"
        )
    needs_logits = spec.estimator in ("full", "pi_k1_sum")
    plain = spec.input_clamp is None and spec.output_clamp is None
    unbiased = needs_logits or (plain and spec.estimator in ("k1", "k3"))
    return Series(text, "framework", "KL(pi||ref)", unbiased, spec, needs_logits)


def parse(estimators: Any, frameworks: Any) -> list[Series]:
    """The requested series, validated (one-line ValueError/TypeError naming the entry)."""
    for arg, value in (("estimators", estimators), ("frameworks", frameworks)):
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise TypeError(f"{arg} must be a tuple of strings, got {value!r}")
    out = [_estimator(i, n) for i, n in enumerate(estimators)]
    out += [_framework(i, t) for i, t in enumerate(frameworks)]
    names = [s.name for s in out]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"{name!r} is requested twice")
    return out


def rb_series() -> Series:
    return Series("rb", "rb", "KL(pi||ref)", True, needs_logits=True)


def _unclamped(spec: PenaltySpec) -> PenaltySpec:
    return dataclasses.replace(spec, input_clamp=None, output_clamp=None)


@dataclass
class ChunkValues:
    """One chunk's per-token values of every series (counted tokens only)."""

    values: dict[str, np.ndarray]
    unclamped: dict[str, np.ndarray]
    clamp_hits: dict[str, np.ndarray]


def _framework_values(s: Series, lp: np.ndarray, ref: np.ndarray, logits: Any, ref_logits: Any):
    spec = s.spec
    assert spec is not None
    if spec.estimator == "full":
        return rl.apply_spec(spec, None, None, logits=logits, ref_logits=ref_logits), None, None
    if spec.estimator == "pi_k1_sum":
        a, b = (
            log_softmax(np.asarray(logits, np.float64), -1),
            log_softmax(np.asarray(ref_logits, np.float64), -1),
        )
        return rl.apply_spec(spec, a, b), None, None
    value = rl.apply_spec(spec, lp, ref)
    if not s.clamped:
        return value, None, None
    unclamped = rl.apply_spec(_unclamped(spec), lp, ref)
    hit = np.zeros(len(lp), dtype=bool)
    if spec.input_clamp is not None:
        hit |= np.abs(ref - lp) > spec.input_clamp
    if spec.output_clamp is not None:
        before = rl.apply_spec(dataclasses.replace(spec, output_clamp=None), lp, ref)
        hit |= np.abs(before) > spec.output_clamp
    return value, unclamped, hit


def evaluate(series: list[Series], lp: np.ndarray, ref: np.ndarray, logits: Any, ref_logits: Any):
    """Every series' per-token values on the counted tokens of one chunk."""
    l = ref - lp
    out = ChunkValues({}, {}, {})
    with np.errstate(all="ignore"):
        for s in series:
            if s.source == "estimator":
                out.values[s.name] = _estimators.get(s.name)(l)
            elif s.source == "rb":
                out.values[s.name] = np.asarray(rl.full_kl(logits, ref_logits), np.float64)
            else:
                value, unclamped, hit = _framework_values(s, lp, ref, logits, ref_logits)
                out.values[s.name] = np.asarray(value, np.float64).reshape(len(lp))
                if unclamped is not None:
                    out.unclamped[s.name] = np.asarray(unclamped, np.float64).reshape(len(lp))
                    out.clamp_hits[s.name] = hit
    return out

"""``kl_penalty``: the per-token KL penalty exactly as each RL framework computes it.

Frameworks take ``logprob`` (log π_θ of the sampled tokens, the policy: log q in klest's
convention) and ``ref_logprob`` (log π_ref: log p). klest's log-ratio is
``l = ref_logprob - logprob = log p - log q`` and r = exp(l) = π_ref/π_θ.

Every (framework, kind) is a registered :class:`PenaltySpec` whose function is written once
against the backend operations of :mod:`klest.rl._backend`, so numpy arrays and torch tensors
go through the same formula. The value and the gradient are those of the framework's
function, evaluated exactly: in float64 with stable forms (``expm1``, a series for k3 near
0), rounded once to the output dtype. The frameworks evaluate the same functions in the
input dtype (OpenRLHF and slime in float32 via ``.float()``) with ``exp(l) - 1 - l``, so their
low-order digits differ, and for |l| < ~1e-4 in float32 their k3 has no correct digit.

dtype policy: numpy (and array-like) inputs give a float64 ``ndarray``; torch inputs give a
tensor of the promoted floating dtype of ``logprob`` and ``ref_logprob`` (float32 in, float32
out; bfloat16 in, bfloat16 out), computed internally in float64 with autograd intact.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from klest.rl._backend import get_ops, is_tensor

__all__ = ["PenaltySpec", "describe", "frameworks", "kinds", "kl_penalty", "register"]

_REGISTRY: dict[str, dict[str, PenaltySpec]] = {}


@dataclass(frozen=True)
class PenaltySpec:
    """One framework's estimator: how it is computed and where the framework uses it.

    ``fn(ops, logprob, ref_logprob, **options)`` receives float64 backend arrays (for
    ``raw=True`` the inputs untouched: the ``full`` kinds chunk very large logits themselves).
    ``options`` maps each accepted keyword option to its default; ``array_options`` are the
    options converted to float64 backend arrays. ``detached`` kinds return no gradient (the
    framework computes them under ``torch.no_grad()``).
    """

    framework: str
    kind: str
    fn: Callable[..., Any] = field(repr=False)
    source: str
    formula: str
    gradient: str
    placement: str
    options: Mapping[str, Any] = field(default_factory=dict)
    array_options: frozenset[str] = frozenset()
    detached: bool = False
    raw: bool = False

    def info(self) -> dict[str, Any]:
        """Metadata as a flat dict (for tables and listings)."""
        return {
            "framework": self.framework,
            "kind": self.kind,
            "source": self.source,
            "formula": self.formula,
            "gradient": self.gradient,
            "placement": self.placement,
            "options": dict(self.options),
            "detached": self.detached,
        }


def register(spec: PenaltySpec, *aliases: str) -> PenaltySpec:
    """Add a spec under its kind (and aliases) for its framework; names must be new."""
    table = _REGISTRY.setdefault(spec.framework, {})
    object.__setattr__(spec, "options", MappingProxyType(dict(spec.options)))
    for name in (spec.kind, *aliases):
        if name in table:
            raise ValueError(f"kind {name!r} is already registered for {spec.framework!r}")
        table[name] = spec
    return spec


def _framework_key(framework: str) -> str:
    if not isinstance(framework, str):
        raise ValueError(f"framework must be a string, got {framework!r}")
    key = framework.strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ValueError(f"unknown framework {framework!r}; valid: {', '.join(frameworks())}")
    return key


def frameworks() -> tuple[str, ...]:
    """Names of the supported frameworks (case and '-'/'_' are ignored when looking up).

    >>> from klest import rl
    >>> rl.frameworks()
    ('nemo_rl', 'openrlhf', 'slime', 'trl', 'verl')
    """
    return tuple(sorted(_REGISTRY))


def kinds(framework: str) -> tuple[str, ...]:
    """Every kind string a framework accepts (aliases included), in registration order.

    >>> from klest import rl
    >>> rl.kinds("openrlhf")
    ('k1', 'k2', 'k3')
    """
    return tuple(_REGISTRY[_framework_key(framework)])


def _spec(framework: str, kind: str) -> PenaltySpec:
    table = _REGISTRY[_framework_key(framework)]
    if kind not in table:
        raise ValueError(
            f"unknown kind {kind!r} for framework {framework!r}; valid: {', '.join(table)}"
        )
    return table[kind]


def describe(framework: str, kind: str) -> dict[str, Any]:
    """What ``kl_penalty(..., kind, framework=framework)`` computes, and from which function.

    >>> from klest import rl
    >>> rl.describe("verl", "k3+")["gradient"]
    'd/d logprob = logprob - ref_logprob (k2 gradient, straight-through)'
    """
    return _spec(framework, kind).info()


def _result_dtype(logprob: Any, ref_logprob: Any) -> Any:
    import torch

    dtypes = [x.dtype for x in (logprob, ref_logprob) if is_tensor(x) and x.is_floating_point()]
    if not dtypes:
        return torch.get_default_dtype()
    out = dtypes[0]
    for d in dtypes[1:]:
        out = torch.promote_types(out, d)
    return out


def kl_penalty(
    logprob: Any, ref_logprob: Any, kind: str, *, framework: str = "verl", **options: Any
) -> Any:
    """Per-token KL penalty of ``framework``'s estimator ``kind``: value and gradient.

    ``logprob`` is log π_θ (the policy) and ``ref_logprob`` log π_ref at the sampled tokens
    (broadcastable shapes). Numpy input gives a float64 ndarray; torch input gives a tensor
    of the inputs' floating dtype, differentiable unless the framework detaches the value
    (TRL's PPO reward kinds). Framework-specific ``options`` are listed by
    ``describe(framework, kind)["options"]``; ``kinds(framework)`` lists the kinds.

    >>> import numpy as np
    >>> from klest import rl
    >>> lp, ref = np.log([0.5, 0.2]), np.log([0.25, 0.4])
    >>> rl.kl_penalty(lp, ref, "k3", framework="verl").round(6)
    array([0.193147, 0.306853])
    >>> rl.kl_penalty(lp, ref, "k3", framework="openrlhf").round(6)
    array([0.193147, 0.306853])
    """
    spec = _spec(framework, kind)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(spec.options) or "none"
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for kind {kind!r} of "
            f"framework {spec.framework!r}; accepted options: {allowed}"
        )
    opts = {**spec.options, **options}
    if spec.raw:
        return spec.fn(logprob, ref_logprob, **opts)
    arrays = [logprob, ref_logprob, *(opts[k] for k in spec.array_options)]
    ops = get_ops(*arrays)
    try:
        np.broadcast_shapes(np.shape(logprob), np.shape(ref_logprob))
    except ValueError:
        raise ValueError(
            f"logprob and ref_logprob do not broadcast: shapes {np.shape(logprob)} and "
            f"{np.shape(ref_logprob)}"
        ) from None
    for k in spec.array_options:
        if opts[k] is not None:
            opts[k] = ops.asarray(opts[k])
    lp, ref = ops.asarray(logprob), ops.asarray(ref_logprob)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        out = spec.fn(ops, lp, ref, **opts)
    if spec.detached:
        out = ops.stop_gradient(out)
    if ops.name == "numpy":
        return np.asarray(out, dtype=np.float64)
    return out.to(_result_dtype(logprob, ref_logprob))

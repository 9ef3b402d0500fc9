"""``kl_penalty``: the per-token KL penalty exactly as each RL framework release computes it.

Frameworks take ``logprob`` (log π_θ of the sampled tokens, the policy: log q in klest's
convention) and ``ref_logprob`` (log π_ref: log p). klest's log-ratio is
``l = ref_logprob - logprob = log p - log q`` and r = exp(l) = π_ref/π_θ.

Each framework release is a :class:`Release` (repository, version, commit, date) with its
kinds, each a declarative :class:`~klest.rl.primitives.PenaltySpec`. ``framework="nemo_rl"`` means
the newest release klest mirrors, ``framework="nemo_rl@0.6.0"`` (or ``@v0.6.0``) pins an
older one; :func:`versions` lists them. The value and the gradient are those of the
framework's function, evaluated exactly: in float64 with stable forms (``expm1``, a series
for k3 near 0), rounded once to the output dtype. The frameworks evaluate the same functions
in the input dtype (OpenRLHF, slime, AReaL, EasyR1 in float32 via ``.float()``), so their
low-order digits differ, and for |l| < ~1e-4 in float32 their ``exp(l) - 1 - l`` has no
correct digit.

dtype policy: numpy (and array-like) inputs give a float64 ``ndarray``; torch inputs give a
tensor of the promoted floating dtype of ``logprob`` and ``ref_logprob`` (float32 in, float32
out; bfloat16 in, bfloat16 out), computed internally in float64 with autograd intact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from klest.rl._backend import get_ops, is_tensor
from klest.rl.emulate import emulated_penalty
from klest.rl.primitives import PenaltySpec, evaluate

__all__ = [
    "PenaltySpec",
    "Release",
    "apply_spec",
    "describe",
    "frameworks",
    "kinds",
    "kl_penalty",
    "register",
    "release",
    "versions",
]


@dataclass(frozen=True)
class Release:
    """A framework version klest mirrors: where its code is and which kind is its default."""

    framework: str
    version: str
    repository: str
    commit: str
    date: str
    default_kind: str
    note: str = ""


_RELEASES: dict[str, dict[str, tuple[Release, dict[str, PenaltySpec]]]] = {}


def register(rel: Release, specs: Iterable[PenaltySpec]) -> Release:
    """Register a release and its kinds (each under its name and aliases; names must be new)."""
    if len(rel.commit) != 40 or any(ch not in "0123456789abcdef" for ch in rel.commit):
        raise ValueError(f"{rel.framework}@{rel.version}: commit must be 40 hex digits")
    table: dict[str, PenaltySpec] = {}
    for spec in specs:
        spec = replace(spec, framework=rel.framework, version=rel.version)
        for name in (spec.kind, *spec.aliases):
            if name in table:
                raise ValueError(f"kind {name!r} is registered twice for {rel.framework}")
            table[name] = spec
    if rel.default_kind not in table:
        raise ValueError(f"{rel.framework}@{rel.version}: default kind {rel.default_kind!r}?")
    releases = _RELEASES.setdefault(rel.framework, {})
    if rel.version in releases:
        raise ValueError(f"{rel.framework}@{rel.version} is already registered")
    releases[rel.version] = (rel, table)
    return rel


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _ordered(key: str) -> tuple[str, ...]:
    releases = _RELEASES[key]
    return tuple(sorted(releases, key=lambda v: (releases[v][0].date, v)))


def _resolve(framework: str) -> tuple[Release, dict[str, PenaltySpec]]:
    if not isinstance(framework, str):
        raise ValueError(f"framework must be a string, got {framework!r}")
    name, _, version = framework.partition("@")
    key = _normalise(name)
    if key not in _RELEASES:
        raise ValueError(f"unknown framework {name!r}; valid: {', '.join(frameworks())}")
    releases = _RELEASES[key]
    if not version:
        return releases[_ordered(key)[-1]]
    v = version.strip().lower()
    v = v[1:] if v.startswith("v") and v[1:2].isdigit() else v
    if v not in releases:
        raise ValueError(
            f"unknown version {version!r} of {key!r}; mirrored: {', '.join(_ordered(key))}"
        )
    return releases[v]


def frameworks() -> tuple[str, ...]:
    """Names of the supported frameworks (case and '-'/'_' are ignored when looking up).

    >>> from klest import rl
    >>> "nemo_rl" in rl.frameworks() and "open_instruct" in rl.frameworks()
    True
    """
    return tuple(sorted(_RELEASES))


def versions(framework: str) -> tuple[str, ...]:
    """The mirrored versions of a framework, oldest first; the last is what the bare name means.

    >>> from klest import rl
    >>> rl.versions("nemo_rl")
    ('0.6.0', '0.7.0')
    """
    return _ordered(_resolve(framework.partition("@")[0])[0].framework)


def release(framework: str) -> Release:
    """The :class:`Release` that ``framework`` ("name" or "name@version") resolves to.

    >>> from klest import rl
    >>> rl.release("verl").version, rl.release("verl@0.7.1").default_kind
    ('0.9.0', 'low_var_kl')
    """
    return _resolve(framework)[0]


def kinds(framework: str) -> tuple[str, ...]:
    """Every kind string a framework release accepts (aliases included), in registration order.

    >>> from klest import rl
    >>> rl.kinds("openrlhf")
    ('k1', 'k2', 'k3')
    """
    return tuple(_resolve(framework)[1])


def spec(framework: str, kind: str) -> PenaltySpec:
    """The :class:`~klest.rl.primitives.PenaltySpec` of ``kind`` in ``framework``."""
    rel, table = _resolve(framework)
    if kind not in table:
        raise ValueError(
            f"unknown kind {kind!r} for framework {rel.framework}@{rel.version}; "
            f"valid: {', '.join(table)}"
        )
    return table[kind]


def describe(framework: str, kind: str) -> dict[str, Any]:
    """What ``kl_penalty(..., kind, framework=framework)`` computes, and from which source.

    >>> from klest import rl
    >>> info = rl.describe("nemo_rl@0.6.0", "k3")
    >>> info["repository"], info["version"], info["commit"][:8]
    ('NVIDIA-NeMo/RL', '0.6.0', '5fb58893')
    >>> rl.describe("verl", "k3+")["gradient"]
    "d/d logprob = -l (k2's gradient, straight-through: unclamped l, whatever the value's clamps)"
    >>> rl.kl_penalty(0.0, 1.0, "k3+", framework="verl@0.7.1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    NotImplementedError: verl@0.7.1 kind 'k3+': verl raises NotImplementedError for '+' kinds...
    """
    rel, _ = _resolve(framework)
    s = spec(framework, kind)
    return {
        **s.info(),
        "repository": rel.repository,
        "commit": rel.commit,
        "date": rel.date,
        "default": s.kind == rel.default_kind,
    }


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
    logprob: Any,
    ref_logprob: Any,
    kind: str,
    *,
    framework: str = "verl",
    emulate: bool = False,
    **options: Any,
) -> Any:
    """Per-token KL penalty of ``framework``'s estimator ``kind``: value and gradient.

    ``logprob`` is log π_θ (the policy) and ``ref_logprob`` log π_ref at the sampled tokens
    (broadcastable shapes; for a spec whose anchor is the behaviour policy, prime-rl's,
    its log-probabilities). ``framework`` is "name" (the newest mirrored release) or
    "name@version". Numpy input gives a float64 ndarray; torch input gives a tensor of the
    inputs' floating dtype, differentiable unless the framework detaches the value (KL in
    the reward). Options (the behaviour policy's log-probabilities among them) are listed by
    ``describe(framework, kind)["options"]``; ``kinds(framework)`` lists the kinds.

    ``emulate=True`` (needs torch) evaluates what the framework's code computes instead: its
    formula as written (e.g. ``exp(l) - 1 - l``, not klest's stable k3), in its dtype and
    order of operations, with its casts (OpenRLHF's and slime's ``.float()``); the result
    is a torch tensor in the framework's dtype (see :mod:`klest.rl.emulate`).

    >>> import numpy as np
    >>> from klest import rl
    >>> lp, ref = np.log([0.5, 0.2]), np.log([0.25, 0.4])
    >>> rl.kl_penalty(lp, ref, "k3", framework="verl").round(6)
    array([0.193147, 0.306853])
    >>> rl.kl_penalty(lp, ref, "k3", framework="openrlhf@0.11.0").round(6)
    array([0.193147, 0.306853])
    >>> import torch
    >>> l = torch.tensor([2.0**-8], dtype=torch.bfloat16)  # bf16: (exp(l) - l) - 1 is exactly 0
    >>> rl.kl_penalty(torch.zeros_like(l), l, "k3", framework="verl", emulate=True)
    tensor([0.], dtype=torch.bfloat16)
    """
    s = spec(framework, kind)
    if s.unsupported is not None:
        raise NotImplementedError(f"{s.framework}@{s.version} kind {kind!r}: {s.unsupported}")
    return apply_spec(s, logprob, ref_logprob, emulate=emulate, **options)


def apply_spec(
    s: PenaltySpec, logprob: Any, ref_logprob: Any, *, emulate: bool = False, **options: Any
) -> Any:
    """:func:`kl_penalty` for a given :class:`~klest.rl.primitives.PenaltySpec` (a registered
    one, or a variant made with ``dataclasses.replace``, e.g. another importance weight).

    >>> import dataclasses, numpy as np
    >>> from klest import rl
    >>> unweighted = dataclasses.replace(rl.spec("nemo_rl", "k3"), weight=None)
    >>> apply_spec(unweighted, np.log([0.5]), np.log([0.25])).round(6)
    array([0.193147])
    """
    kind = s.kind
    if s.unsupported is not None:
        raise NotImplementedError(f"{s.framework}@{s.version} kind {kind!r}: {s.unsupported}")
    accepted = s.options
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) or "none"
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for kind {kind!r} of "
            f"framework {s.framework}@{s.version}; accepted options: {allowed}"
        )
    opts = {**accepted, **options}
    if not isinstance(emulate, bool):
        raise TypeError(f"emulate must be True or False, got {emulate!r}")
    if s.raw:
        if emulate:
            return emulated_penalty(s, logprob, ref_logprob, opts)
        assert s.fn is not None
        return s.fn(logprob, ref_logprob, **opts)
    try:
        np.broadcast_shapes(np.shape(logprob), np.shape(ref_logprob))
    except ValueError:
        raise ValueError(
            f"logprob and ref_logprob do not broadcast: shapes {np.shape(logprob)} and "
            f"{np.shape(ref_logprob)}"
        ) from None
    if emulate:
        return emulated_penalty(s, logprob, ref_logprob, opts)
    arrays = [logprob, ref_logprob, *(opts[k] for k in s.array_options)]
    ops = get_ops(*arrays)
    for k in s.array_options:
        if opts[k] is not None:
            opts[k] = ops.asarray(opts[k])
    lp, ref = ops.asarray(logprob), ops.asarray(ref_logprob)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        out = evaluate(s, ops, lp, ref, opts)
    if ops.name == "numpy":
        return np.asarray(out, dtype=np.float64)
    return out.to(_result_dtype(logprob, ref_logprob))

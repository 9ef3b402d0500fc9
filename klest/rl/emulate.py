"""The frameworks' own arithmetic: their formulas, evaluated in their dtype and order.

klest evaluates every penalty exactly (float64, stable forms, one rounding to the output
dtype). This module evaluates what a framework's code computes instead, so that the two can
be put side by side (``kl_penalty(..., emulate=True)`` and :func:`emulated_full_kl`):

- **dtype and cast points.** The inputs stay in the caller's dtype, except where the
  framework casts: a spec whose ``dtype`` is ``"float32"`` casts ``logprob`` and
  ``ref_logprob`` with ``.float()`` first (OpenRLHF, slime, AReaL and EasyR1 write
  ``log_probs.float()``; oat's log-probabilities are float32 because it upcasts the logits).
  Every later operation runs in torch's promoted dtype, as in the framework: bf16 in, bf16
  out; a bf16 importance weight times a float32 estimate is float32 (slime).
- **the formula as written.** Each primitive is the framework's own expression, not klest's
  stable one. For k3 the frameworks write three different things (:data:`K3_FORMS`):
  ``(exp(l) - l) - 1`` (verl, SkyRL, EasyR1, TRL GRPO, torchtune: ``ratio - kl - 1``),
  ``(exp(l) - 1) - l`` (NeMo-RL, TRL PPO, OpenRLHF, slime, AReaL) and ``expm1(l) - l``
  (oat, open-instruct). ``a - b`` and ``-(b - a)`` round identically, so frameworks that
  write ``log_probs - ref`` and negate are the same bits as ``ref - log_probs``; likewise
  ``0.5 * d.square()``, ``d**2 / 2`` and ``torch.square(l) / 2``.
- **clamps** are ``torch.clamp`` of the value (gradients as torch gives them: ``0 * inf =
  nan`` where an unclamped ``exp`` overflows, as in the framework).

Known differences from the frameworks (values are theirs bit for bit; these are gradients
or execution modes): NeMo-RL's ``nan_to_num`` weight is evaluated as ``where(bad, 0, exp)``
(same values; gradient 0 instead of NaN where ``exp`` overflows); slime wraps its function in
``torch.compile``, which may fuse float32 operations (emulated: eager). Reductions over
tokens (means, sums into the loss) are not part of a per-token penalty and are not emulated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from klest.rl._backend import TorchOps, is_tensor
from klest.rl.full_rows import DIRECTIONS
from klest.rl.primitives import PenaltySpec, _clamp_value, _weight_and_log

__all__ = [
    "FULL_FORMULAS",
    "K3_FORMS",
    "EmulatedOps",
    "emulated_full_kl",
    "emulated_penalty",
    "k3_form",
]

#: the k3 expressions the frameworks write, as functions of l = ref_logprob - logprob
K3_FORMS: Mapping[str, Callable[[Any], Any]] = {
    "(exp(l) - l) - 1": lambda l: (l.exp() - l) - 1,
    "(exp(l) - 1) - l": lambda l: (l.exp() - 1) - l,
    "expm1(l) - l": lambda l: l.expm1() - l,
}
# (framework, kind or "*") -> k3 form; read at the pinned commits (see each frameworks module)
_K3_OF = {
    ("verl", "*"): "(exp(l) - l) - 1",  # ratio = torch.exp(kl); kld = ratio - kl - 1
    ("skyrl", "*"): "(exp(l) - l) - 1",  # same lines as verl
    ("easyr1", "*"): "(exp(l) - l) - 1",  # kl.exp() - kl - 1 (after .float())
    ("torchtune", "*"): "(exp(l) - l) - 1",  # torch.exp(ref - pi) - (ref - pi) - 1
    ("trl", "grpo"): "(exp(l) - l) - 1",  # torch.exp(ref - logp) - (ref - logp) - 1
    ("trl", "k3"): "(exp(l) - 1) - l",  # PPO: (logr.exp() - 1) - logr
    ("nemo_rl", "*"): "(exp(l) - 1) - l",  # torch.exp(logr) - 1 - logr
    ("openrlhf", "*"): "(exp(l) - 1) - l",  # (-log_ratio).exp() - 1 + log_ratio
    ("slime", "*"): "(exp(l) - 1) - l",  # log_ratio = -log_ratio; log_ratio.exp() - 1 - log_ratio
    ("areal", "*"): "(exp(l) - 1) - l",  # as slime
    ("oat", "*"): "expm1(l) - l",  # torch.expm1(log_ratio) - log_ratio
    ("open_instruct", "*"): "expm1(l) - l",  # torch.expm1(-d) + d, d = -l
}

#: full-vocabulary formulas of :func:`emulated_full_kl` -> the framework code each mirrors
FULL_FORMULAS: Mapping[str, str] = {
    "plain": "log_softmax in dtype; p = exp(logp); sum_v p * (logp - ref_logp) in dtype",
    "kl_div": "TRL v0.11 PPOTrainer._kl_penalty (kl_penalty='full') and EasyR1 'full': "
    "F.kl_div(ref_logp, logp, log_target=True, reduction='none').sum(-1)",
    "xent_minus_entropy": "EasyDeL distillation_trainer/_fn.py before PR #267: in float32, "
    "xent = logsumexp(s) - sum_v p_t s and entropy = -sum_v p_t log p_t, each cast to dtype "
    "per position; kl = xent - entropy in dtype",
}


def _torch() -> Any:
    try:
        import torch  # deferred: torch is optional; emulation needs it
    except ImportError:
        raise ImportError("emulate=True needs torch (pip install torch)") from None
    return torch


def k3_form(s: PenaltySpec) -> str:
    """The k3 expression ``s``'s framework writes (a key of :data:`K3_FORMS`).

    >>> from klest import rl
    >>> k3_form(rl.spec("verl", "k3")), k3_form(rl.spec("trl", "k3"))
    ('(exp(l) - l) - 1', '(exp(l) - 1) - l')
    """
    for key in ((s.framework, s.kind), (s.framework, "*")):
        if key in _K3_OF:
            return _K3_OF[key]
    raise NotImplementedError(f"{s.framework}: no k3 expression recorded for emulation")


class EmulatedOps(TorchOps):
    """torch operations in the operands' own dtype (no upcast), with a framework's k3."""

    name = "emulate"

    def __init__(self, device: Any = None, k3: str = "(exp(l) - 1) - l") -> None:
        super().__init__(device)
        self._k3 = K3_FORMS[k3]

    def asarray(self, x: Any) -> Any:
        t = self.torch
        if isinstance(x, t.Tensor):
            return x
        a = np.asarray(x)
        if a.dtype.kind not in "fcb":
            a = a.astype(np.float64)
        return t.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        t = self.torch
        like = a if isinstance(a, t.Tensor) else b
        if not isinstance(a, t.Tensor):
            a = t.as_tensor(a, dtype=like.dtype, device=cond.device)
        if not isinstance(b, t.Tensor):
            b = t.as_tensor(b, dtype=like.dtype, device=cond.device)
        return t.where(cond, a, b)

    def k3(self, l: Any) -> Any:
        return self._k3(l)

    def clamp_output(self, fn: Callable[..., Any], args: Any, lo: float, hi: float) -> Any:
        return self.torch.clamp(fn(*args), lo, hi)


def _estimator(s: PenaltySpec, ops: EmulatedOps) -> Callable[[Any], Any]:
    name = s.estimator
    if name == "k1":
        return lambda l: -l
    if name == "k2":
        return lambda l: (l * l) / 2
    if name == "abs":
        return lambda l: l.abs()
    if name == "sq":
        return lambda l: l * l
    if name == "k3":
        return ops.k3
    if name == "k3_swapped":  # prime-rl: ratio = exp(d); ratio - d - 1, d = logprob - mu
        return lambda l: ((-l).exp() - (-l)) - 1
    raise NotImplementedError(f"{s.framework} kind {s.kind!r}: estimator {name!r} not emulated")


def _framework_tensor(x: Any, device: Any) -> Any:
    _torch()
    if is_tensor(x):
        return x
    return EmulatedOps(device).asarray(x) if x is not None else None


def emulated_penalty(s: PenaltySpec, logprob: Any, ref_logprob: Any, opts: dict[str, Any]) -> Any:
    """``s``'s per-token value as the framework computes it (``kl_penalty(..., emulate=True)``).

    ``opts`` are the spec's options, completed with their defaults. Returns a torch tensor in
    the framework's dtype, differentiable where the framework's value is.

    >>> import torch
    >>> from klest import rl
    >>> l = torch.tensor([2.0**-8], dtype=torch.bfloat16)
    >>> rl.kl_penalty(torch.zeros_like(l), l, "k3", framework="verl", emulate=True)
    tensor([0.], dtype=torch.bfloat16)
    """
    torch = _torch()
    device = next((x.device for x in (logprob, ref_logprob) if is_tensor(x)), None)
    if s.raw:
        return _raw(s, logprob, ref_logprob, opts, device)
    ops = EmulatedOps(device, k3_form(s) if s.estimator == "k3" else "(exp(l) - 1) - l")
    for k in s.array_options:
        if opts[k] is not None:
            opts[k] = ops.asarray(opts[k])
    lp_in, ref_in = ops.asarray(logprob), ops.asarray(ref_logprob)
    cast = s.dtype == "float32"  # the framework's .float() on both inputs
    lp, ref = (lp_in.float(), ref_in.float()) if cast else (lp_in, ref_in)
    ic, oc = s.input_clamp, s.output_clamp
    if s.clamp_options:
        ic = _clamp_value(s.clamp_options[0], opts[s.clamp_options[0]])
        oc = _clamp_value(s.clamp_options[1], opts[s.clamp_options[1]])
    if s.estimator == "pi_k1_sum":  # EasyR1 'full': F.kl_div on the sampled tokens
        f = torch.nn.functional
        value = f.kl_div(ref, lp, log_target=True, reduction="none").sum(-1, keepdim=True)
        return value.detach() if s.detached else value
    l = ref - lp
    c = l if ic is None else torch.clamp(l, -ic, ic)
    value = _estimator(s, ops)(c)
    # the weight from the caller's-dtype log-probabilities (slime builds it outside the .float())
    w, _ = _weight_and_log(s, ops, lp_in, l, c, opts)
    if w is not None and s.weight is not None and s.weight.order == "before_clamp":
        value = w * value
    if oc is not None:
        value = torch.clamp(value, -oc, oc)
    if w is not None and s.weight is not None and s.weight.order == "after_clamp":
        value = w * value
    if s.gradient_of is not None:  # verl '+': 0.5 * (logprob - ref_logprob).square()
        backward = 0.5 * (lp - ref).square()
        value = backward - backward.detach() + value.detach()
    return value.detach() if s.detached else value


def _raw(s: PenaltySpec, logprob: Any, ref_logprob: Any, opts: dict[str, Any], device: Any) -> Any:
    """The ``full`` kinds: TRL's legacy F.kl_div over the vocabulary; verl has none."""
    if s.framework != "trl":
        raise NotImplementedError(
            f"{s.framework}@{s.version} kind {s.kind!r}: the framework has no full-vocabulary "
            "arithmetic to emulate (klest's exact full_kl is an extension); see emulated_full_kl"
        )
    logits, ref_logits = opts.get("logits"), opts.get("ref_logits")
    if (logits is None) != (ref_logits is None):
        raise ValueError("kind 'full': give both logits= and ref_logits=, or neither")
    if logits is None:  # the whole vocabulary's log-probabilities, used as given
        a, b = _framework_tensor(logprob, device), _framework_tensor(ref_logprob, device)
        dtype = _torch().promote_types(a.dtype, b.dtype)
        out = _reduce(_terms("kl_div", a.to(dtype), b.to(dtype), True), None, dtype)
    else:
        a, b = _framework_tensor(logits, device), _framework_tensor(ref_logits, device)
        dtype = _torch().promote_types(a.dtype, b.dtype)
        out = _full(a, b, dtype, None, "kl_div", None)
    return out.detach()


def _terms(formula: str, a: Any, b: Any, given_logp: bool = False) -> Any:
    """Per-entry terms of the formula whose vocabulary sum is the KL (log-softmax in dtype)."""
    torch = _torch()
    f = torch.nn.functional
    la = a if given_logp else f.log_softmax(a, dim=-1)
    lb = b if given_logp else f.log_softmax(b, dim=-1)
    if formula == "kl_div":
        return f.kl_div(lb, la, log_target=True, reduction="none")
    return la.exp() * (la - lb)


def _reduce(terms: Any, chunk: int | None, dtype: Any) -> Any:
    """sum over the last axis in ``dtype``: torch's own sum, or partial sums over chunks of
    ``chunk`` entries (each rounded to ``dtype``) accumulated one after the other in ``dtype``
    (``total = total + part``, as a loop over vocabulary shards does)."""
    if chunk is None:
        return terms.sum(-1)
    total = None
    for start in range(0, terms.shape[-1], chunk):
        part = terms[..., start : start + chunk].sum(-1)
        total = part if total is None else (total + part).to(dtype)
    return total


def _full(a: Any, b: Any, dtype: Any, chunk: int | None, formula: str, entries: Any) -> Any:
    torch = _torch()
    if formula == "xent_minus_entropy":  # float32 inside, per-position casts to dtype
        t, s = a.float(), b.float()
        if entries is not None:
            t, s = t.masked_fill(~entries, -torch.inf), s.masked_fill(~entries, -torch.inf)
        lt = t - torch.logsumexp(t, dim=-1, keepdim=True)
        pt = lt.exp()
        ent_terms, cross = pt * lt, pt * s
        if entries is not None:
            ent_terms = torch.where(entries, ent_terms, 0.0)
            cross = torch.where(entries, cross, 0.0)
        entropy = (-_reduce(ent_terms, chunk, torch.float32)).to(dtype)
        xent = (torch.logsumexp(s, dim=-1) - _reduce(cross, chunk, torch.float32)).to(dtype)
        return xent - entropy
    a, b = a.to(dtype), b.to(dtype)
    if entries is not None:  # masked entries: -inf logits, their terms left out of the sum
        a, b = a.masked_fill(~entries, -torch.inf), b.masked_fill(~entries, -torch.inf)
    terms = _terms(formula, a, b)
    if entries is not None:
        terms = torch.where(entries, terms, torch.zeros((), dtype=terms.dtype))
    return _reduce(terms, chunk, dtype)


_DTYPES = ("bfloat16", "float16", "float32", "float64")


def _dtype(dtype: Any) -> Any:
    torch = _torch()
    if isinstance(dtype, str) and dtype in _DTYPES:
        return getattr(torch, dtype)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ValueError(f"dtype must be a torch floating dtype or one of {_DTYPES}, got {dtype!r}")


def emulated_full_kl(
    logits: Any,
    ref_logits: Any,
    *,
    dtype: Any,
    chunk: int | None = None,
    direction: str = "KL(pi||ref)",
    mask: Any = None,
    formula: str = "plain",
) -> Any:
    """The full-vocabulary KL at every position as a plain framework formula computes it in
    ``dtype``: shape (...) from logits (..., V), returned as a float64 tensor (exactly the
    ``dtype`` result, converted).

    ``formula`` (:data:`FULL_FORMULAS`): ``"plain"`` is torch ``log_softmax`` in ``dtype``,
    ``p = exp(logp)``, ``sum_v p * (logp - ref_logp)`` in ``dtype``; ``"kl_div"`` is TRL's
    legacy ``kl_penalty="full"`` (``F.kl_div(ref_logp, logp, log_target=True,
    reduction="none").sum(-1)``, the same value); ``"xent_minus_entropy"`` is EasyDeL's
    distillation KL before PR #267 (float32 inside, cross-entropy and entropy each rounded to
    ``dtype`` per position, subtracted in ``dtype``). ``chunk``: the vocabulary sums are
    partial sums over chunks of ``chunk`` entries, accumulated one by one (in ``dtype``; in
    float32 for ``"xent_minus_entropy"``). ``direction="KL(ref||pi)"`` swaps the arguments.
    ``mask`` (boolean, True: kept; ``full_kl``'s convention): broadcasting to the positions
    (...), masked positions give 0; with the logits' number of dimensions it masks entries
    (-inf logits, their terms left out of the sum), and a position without a kept entry is
    a masked position.

    >>> import torch
    >>> a = torch.zeros(1, 4)
    >>> emulated_full_kl(a, a, dtype=torch.bfloat16).tolist()
    [0.0]
    >>> b = torch.tensor([[0.0, 0.0, 0.0, 2.0]])
    >>> round(emulated_full_kl(a, b, dtype="float32").item(), 4)
    0.4545
    """
    torch = _torch()
    dt = _dtype(dtype)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}; got {direction!r}")
    if formula not in FULL_FORMULAS:
        raise ValueError(f"formula must be one of {', '.join(FULL_FORMULAS)}; got {formula!r}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer or None, got {chunk!r}")
    device = next((x.device for x in (logits, ref_logits) if is_tensor(x)), None)
    a, b = _framework_tensor(logits, device), _framework_tensor(ref_logits, device)
    if tuple(a.shape) != tuple(b.shape) or a.ndim == 0 or a.shape[-1] == 0:
        raise ValueError(
            "logits and ref_logits must have the same non-empty shape (..., V), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if DIRECTIONS[direction]:
        a, b = b, a
    positions = entries = None
    if mask is not None:  # full_kl's convention: boolean; logits' ndim masks entries
        m = _framework_tensor(mask, device)
        if m.dtype != torch.bool:
            raise TypeError(f"mask must be boolean (True: kept), got dtype {m.dtype}")
        m = m.to(a.device)
        try:
            if m.ndim == a.ndim:
                entries = m.expand(a.shape)
                positions = entries.any(-1)
            else:
                positions = m.expand(a.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"mask of shape {tuple(m.shape)} broadcasts neither to the positions "
                f"{tuple(a.shape[:-1])} nor to the logits {tuple(a.shape)}"
            ) from None
    out = _full(a, b, dt, chunk, formula, entries).to(torch.float64)
    return out if positions is None else torch.where(positions, out, 0.0)

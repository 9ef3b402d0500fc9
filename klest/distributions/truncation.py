"""Truncated and tempered sampling, exactly: the distribution an inference engine samples from.

:func:`truncate` takes logits (or log-probabilities) of shape ``(..., V)`` and the sampling
settings ``temperature``, ``top_k``, ``top_p``, ``min_p``, and returns the kept set K of every
row, the tempered distribution π_T = softmax(z / T) before truncation, the log of the
surviving mass S = π_T(K) and the engine's sampling distribution μ = π_T · 1_K / S (zeros
outside K). ``Categorical.truncated`` is the same on a :class:`klest.Categorical`. All of it
is float64 and exact up to rounding; the engines evaluate the same rules in float32, so at a
boundary closer than float32 rounding (a cumulative mass within ~1e-7 of ``top_p``) an engine
can decide otherwise.

Conventions (read at vLLM ``main`` after v0.11, commits named per file, and Hugging Face
transformers v4.57.1); ``convention="vllm"`` (the default) or ``"hf"``:

*Order of operations.* vLLM v1 (``vllm/v1/sample/sampler.py``, ``Sampler.forward`` and
``Sampler.sample``, commit 3e342658): logits to float32, penalties, then temperature
(``apply_temperature``: ``logits / T``), then the argmax-invariant logits processors, i.e.
min-p (``vllm/v1/sample/logits_processor/builtin.py``, ``MinPLogitsProcessor.apply``, commit
bf17660a), then top-k and top-p together (``vllm/v1/sample/ops/topk_topp_sampler.py``,
``apply_top_k_top_p``, commit 3babc05a): temperature -> min_p -> top_k -> top_p. Hugging Face
``generate`` (``generation/utils.py``, ``GenerationMixin._get_logits_processor``) appends the
warpers in the order TemperatureLogitsWarper -> TopKLogitsWarper -> TopPLogitsWarper ->
MinPLogitsWarper: temperature -> top_k -> top_p -> min_p. Each rule sees the distribution the
previous ones left (renormalised over the kept set). The two orders give different kept sets
when min_p and top_p are combined (vLLM's top-p then runs on a distribution from which min-p
already removed the tail); top-k commutes with min-p.

*Temperature.* Both divide the logits by T. vLLM treats T < 1e-5 (``_SAMPLING_EPS``) as greedy
sampling: the token is ``argmax`` of the logits before temperature (the first maximal index,
as ``torch.argmax`` documents), whatever top_k / top_p / min_p say; here that is a point mass
at the first maximum. Hugging Face rejects T <= 0 (``TemperatureLogitsWarper.__init__``) and
samples softmax(z / T) for any T > 0; as T -> 0 that tends to the uniform distribution on the
maximal entries, which a tiny T gives here (z / T is formed as (z - max z) / T, so it never
overflows).

*top-k.* Both keep every entry whose logit is >= the k-th largest (vLLM: ``logits_sort <
top_k_mask`` in ``apply_top_k_top_p`` and ``apply_top_k_only``; HF: ``scores <
torch.topk(scores, top_k)[0][..., -1, None]`` in ``TopKLogitsWarper.__call__``), so ties at
the k-th value are all kept and more than k entries can survive. vLLM treats top_k >= V (and
0 or -1) as no top-k (``gpu_input_batch.py``: ``if 0 < top_k < self.vocab_size``); HF uses
``min(top_k, V)`` and ``max(top_k, min_tokens_to_keep)``, and ``GenerationConfig`` defaults to
top_k = 50 (``configuration_utils.py``), so ``generate(do_sample=True)`` truncates unless told
``top_k=0``. Here ``top_k=None`` is no top-k, and 0 or a negative top_k is a ValueError (say
None instead of the engines' 0 / -1).

*top-p.* Both sort the probabilities ascending and remove an entry when the cumulative sum up
to and including it is ``<= 1 - top_p`` (vLLM ``apply_top_k_top_p``: ``probs_sum <= 1 -
p``; HF ``TopPLogitsWarper.__call__``: ``cumulative_probs <= (1 - self.top_p)``), then keep
the largest entry (vLLM: ``top_p_mask[:, -1] = False``) or the ``min_tokens_to_keep`` largest
(HF). Equivalently: an entry survives iff the mass ranked strictly above it is < top_p, so
the kept set is the shortest head whose mass reaches top_p, and when a cumulative mass equals
top_p exactly the next entry is removed (kept mass = top_p). top_p = 1 is no top-p in both
(vLLM only applies it for top_p < 1, HF only appends the warper then). vLLM requires top_p in
(0, 1]; HF accepts 0, which keeps only the forced entries; here top_p must be in (0, 1].
The rule is evaluated here as the engines do, on the ascending cumulative sum of the
renormalised probabilities, compared with 1 - top_p.

*min-p.* Both keep the entries with probability >= min_p times the largest probability of
the distribution the rule sees (vLLM: ``probability_values < adjusted_min_p`` removed; HF
``MinPLogitsWarper.__call__``: ``probs < scaled_min_p`` removed), equality kept. vLLM sees
the tempered distribution, HF the one left by top-k and top-p, but the ratio p_i / p_max does
not change under renormalisation, so only the order relative to top-p matters. min_p = 0 is
no min-p; min_p = 1 keeps the entries equal to the maximum. HF then keeps the
``min_tokens_to_keep`` largest regardless.

*min_tokens_to_keep* (HF only; 1 for sampling, ``len(eos) + 1`` in beam sampling) floors
top-k, and forces the that-many largest entries through top-p and min-p. vLLM has no such
option: it must be 1 with ``convention="vllm"``.

*Ties.* top-k and min-p compare values, so they are tie-free. top-p (and the forced entries)
are defined by a sort order, and both engines use ``torch.sort`` / ``torch.argsort`` without
``stable=True``: which of several entries tied at the boundary is removed is unspecified (on
CUDA it depends on the kernel). ``ties="keep"`` (the default) keeps every entry tied with a
kept one: a tied block survives top-p iff the mass ranked strictly above it is < top_p. It is
deterministic and does not depend on the order of the vocabulary; where a tie straddles the
boundary it keeps the whole block where an engine keeps part of it (S larger by at most
(block size - 1) x the tied probability). ``ties="index"`` breaks ties by index, the lower
index ranking higher (a stable descending sort): the kept set then has the size and the mass
of an engine's, though not necessarily the same tied entries. The surviving mass S is the
same under every tie order; quantities involving a second distribution (π_ref) are not.

Zero-probability entries (a -inf logit, or an underflow at a tiny temperature) are never in
the kept set.

>>> import numpy as np
>>> out = truncate(np.log([[0.5, 0.3, 0.2], [0.4, 0.3, 0.3]]), top_p=0.7)
>>> out.kept.tolist()
[[True, True, False], [True, True, True]]
>>> np.exp(out.log_mass).round(6).tolist()
[0.8, 1.0]
>>> truncate(np.log([[0.4, 0.3, 0.3]]), top_p=0.7, ties="index").kept.tolist()
[[True, True, False]]
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np
from scipy import special

from klest.errors import check_integer

__all__ = [
    "CONVENTIONS",
    "DEFAULT_CONVENTION",
    "GREEDY_TEMPERATURE",
    "TIES",
    "Truncation",
    "check_settings",
    "truncate",
]

#: the engines whose rules :func:`truncate` follows
CONVENTIONS = ("vllm", "hf")
#: vLLM is the rollout engine of the RL frameworks klest models (verl, TRL, OpenRLHF, slime,
#: NeMo-RL, prime-rl): their behaviour policy is vLLM's
DEFAULT_CONVENTION = "vllm"
#: the tie rules for the sort-defined steps (top-p, forced entries)
TIES = ("keep", "index")
#: vLLM's ``_SAMPLING_EPS``: a temperature below it is greedy sampling
GREEDY_TEMPERATURE = 1e-5


class Truncation(NamedTuple):
    """What :func:`truncate` returns, each of shape ``(..., V)`` or the batch shape ``(...)``.

    ``log_probs``: log μ, the engine's sampling distribution (-inf outside the kept set);
    ``kept``: the kept set K (bool); ``tempered``: log π_T = log softmax(z / T), the
    distribution before truncation (a point mass for vLLM's greedy sampling);
    ``log_mass``: log S = log π_T(K), so that KL(μ‖π_T) = -log S.
    """

    log_probs: np.ndarray
    kept: np.ndarray
    tempered: np.ndarray
    log_mass: np.ndarray


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number or None, got {value!r}")
    return float(value)


def check_settings(
    top_k: Any = None,
    top_p: Any = None,
    min_p: Any = None,
    temperature: Any = 1.0,
    convention: Any = DEFAULT_CONVENTION,
    ties: Any = "keep",
    min_tokens_to_keep: Any = 1,
) -> dict[str, Any]:
    """Validated sampling settings (a one-line ValueError / TypeError naming the argument).

    >>> check_settings(top_k=20, top_p=0.9)["top_k"]
    20
    >>> check_settings(top_k=0)
    Traceback (most recent call last):
        ...
    ValueError: top_k must be a positive integer or None (no top-k; the engines' 0 / -1), got 0
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
            raise TypeError(f"top_k must be a positive integer or None, got {top_k!r}")
        if top_k < 1:
            raise ValueError(
                f"top_k must be a positive integer or None (no top-k; the engines' 0 / -1), "
                f"got {top_k!r}"
            )
        top_k = int(top_k)
    if top_p is not None:
        top_p = _real("top_p", top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    if min_p is not None:
        min_p = _real("min_p", min_p)
        if not 0.0 <= min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1] or None, got {min_p!r}")
    temperature = _real("temperature", temperature)
    low = 0.0 if convention == "vllm" else math.nextafter(0.0, 1.0)
    if not (math.isfinite(temperature) and temperature >= low):
        need = ">= 0 (below 1e-5: greedy)" if convention == "vllm" else "> 0 (Hugging Face)"
        raise ValueError(f"temperature must be finite and {need}, got {temperature!r}")
    min_tokens_to_keep = check_integer("min_tokens_to_keep", min_tokens_to_keep, 1)
    if convention == "vllm" and min_tokens_to_keep != 1:
        raise ValueError(
            f"min_tokens_to_keep must be 1 with convention='vllm' (a Hugging Face option), "
            f"got {min_tokens_to_keep}"
        )
    return {"top_k": top_k, "top_p": top_p, "min_p": min_p, "temperature": temperature,
            "convention": convention, "ties": ties,
            "min_tokens_to_keep": min_tokens_to_keep}  # fmt: skip


def _as_logits(logits: Any) -> np.ndarray:
    try:
        z = np.asarray(logits, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"logits must be an array of real numbers, got {logits!r}") from None
    if z.ndim == 0 or z.shape[-1] == 0:
        raise ValueError(f"logits must have shape (..., V) with V >= 1, got shape {z.shape}")
    if np.isnan(z).any() or (z == np.inf).any():
        where = tuple(int(i) for i in np.argwhere(np.isnan(z) | (z == np.inf))[0])
        raise ValueError(f"logits must be finite or -inf, got {float(z[where])} at index {where}")
    if (z == -np.inf).all(axis=-1).any():
        raise ValueError("logits must have a finite entry in every row")
    return z


def _ranked(key: np.ndarray, ascending: bool) -> np.ndarray:
    """Indices sorting ``key`` along the last axis with ties by index (the lower index ranks
    higher: last in ascending order, first in descending order)."""
    v = key.shape[-1]
    if ascending:
        return v - 1 - np.argsort(key[..., ::-1], axis=-1, kind="stable")
    return np.argsort(-key, axis=-1, kind="stable")


def _top_forced(key: np.ndarray, kept: np.ndarray, m: int, ties: str) -> np.ndarray:
    """The m highest kept entries by ``key`` (with their ties when ties == "keep")."""
    masked = np.where(kept, key, -np.inf)
    order = _ranked(masked, ascending=False)
    m = min(m, key.shape[-1])
    if ties == "keep":
        mth = np.take_along_axis(masked, order[..., m - 1 : m], axis=-1)
        return kept & (masked >= mth)
    forced = np.zeros_like(kept)
    np.put_along_axis(forced, order[..., :m], True, axis=-1)
    return forced & kept


def _min_p(w, key, kept, min_p, s):
    if min_p is None or min_p == 0.0:
        return kept
    w_max = np.max(np.where(kept, w, 0.0), axis=-1, keepdims=True)
    out = kept & (w >= min_p * w_max)
    if s["convention"] == "hf":
        out |= _top_forced(key, kept, s["min_tokens_to_keep"], s["ties"])
    return out


def _top_k(key, kept, top_k, s):
    if top_k is None:
        return kept
    k = max(top_k, s["min_tokens_to_keep"])
    if k >= key.shape[-1]:
        return kept
    masked = np.where(kept, key, -np.inf)
    kth = -np.partition(-masked, k - 1, axis=-1)[..., k - 1 : k]
    return kept & (masked >= kth)  # a -inf k-th value (fewer than k kept) removes nothing


def _top_p(w, key, kept, top_p, s):
    if top_p is None or top_p == 1.0:
        return kept
    q = np.where(kept, w, 0.0)
    q = q / q.sum(axis=-1, keepdims=True)
    masked = np.where(kept, key, -np.inf)
    order = _ranked(masked, ascending=True)
    cum = np.cumsum(np.take_along_axis(q, order, axis=-1), axis=-1)
    if s["ties"] == "keep":  # a block is judged by the cumulative mass at its last entry
        ks = np.take_along_axis(masked, order, axis=-1)
        v = ks.shape[-1]
        last = np.ones(ks.shape, dtype=bool)
        last[..., :-1] = ks[..., 1:] != ks[..., :-1]
        ends = np.where(last, np.arange(v), v - 1)
        ends = np.minimum.accumulate(ends[..., ::-1], axis=-1)[..., ::-1]
        cum = np.take_along_axis(cum, ends, axis=-1)
    remove_sorted = cum <= 1.0 - top_p
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    forced = _top_forced(key, kept, s["min_tokens_to_keep"], s["ties"])
    return kept & (~remove | forced)


def truncate(
    logits: Any,
    *,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    temperature: float = 1.0,
    convention: str = DEFAULT_CONVENTION,
    ties: str = "keep",
    min_tokens_to_keep: int = 1,
    probs: Any = None,
) -> Truncation:
    """The engine's sampling distribution from ``logits`` (..., V): see the module docstring
    for the rules. ``probs`` (optional, the same shape, rows summing to 1) are the
    probabilities of ``logits`` when known exactly; at temperature 1 the mass comparisons
    (top-p, min-p) use them, so that a boundary such as ``top_p = 0.75`` on probabilities
    (0.5, 0.25, 0.25) is decided on the given numbers and not on exp(log(p)).

    >>> out = truncate([[2.0, 1.0, 1.0, -1.0]], top_k=2)
    >>> out.kept.tolist()  # the tie at the 2nd value is kept
    [[True, True, True, False]]
    >>> truncate([[1.0, 3.0, 3.0]], temperature=0.0).kept.tolist()  # vLLM greedy: first max
    [[False, True, False]]
    """
    s = check_settings(top_k, top_p, min_p, temperature, convention, ties, min_tokens_to_keep)
    z = _as_logits(logits)
    t = s["temperature"]
    if s["convention"] == "vllm" and t < GREEDY_TEMPERATURE:
        first = np.argmax(z, axis=-1)[..., None]
        kept = np.zeros(z.shape, dtype=bool)
        np.put_along_axis(kept, first, True, axis=-1)
        point = np.where(kept, 0.0, -np.inf)
        return Truncation(point, kept, point, np.zeros(z.shape[:-1]))
    with np.errstate(over="ignore", invalid="ignore"):  # -inf - max = -inf; a tiny T: -inf
        x = (z - z.max(axis=-1, keepdims=True)) / t
    tempered = special.log_softmax(x, axis=-1)
    if probs is not None and t == 1.0:
        w = np.asarray(probs, dtype=np.float64)
        if w.shape != z.shape:
            raise ValueError(f"probs must have the shape of logits {z.shape}, got {w.shape}")
    else:
        w = np.exp(x)
    kept = w > 0.0
    steps = {"min_p": lambda k: _min_p(w, z, k, s["min_p"], s),
             "top_k": lambda k: _top_k(z, k, s["top_k"], s),
             "top_p": lambda k: _top_p(w, z, k, s["top_p"], s)}  # fmt: skip
    order = (
        ("min_p", "top_k", "top_p") if s["convention"] == "vllm" else ("top_k", "top_p", "min_p")
    )
    for name in order:
        kept = steps[name](kept)
    removed = np.sum(np.where(kept, 0.0, np.exp(tempered)), axis=-1)
    with np.errstate(divide="ignore"):
        near_one = np.log1p(-np.minimum(removed, 0.5))  # accurate when little is removed
        head = special.logsumexp(np.where(kept, tempered, -np.inf), axis=-1)
    log_mass = np.where(removed <= 0.5, near_one, head)
    log_probs = np.where(kept, tempered - log_mass[..., None], -np.inf)
    return Truncation(log_probs, kept, tempered, log_mass)

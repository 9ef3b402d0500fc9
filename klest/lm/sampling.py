"""Rollouts like an inference engine: temperature, min-p, top-k, top-p, and processed log-probs.

:func:`processed_logprobs` turns next-token logits into the log-probabilities of the
distribution an engine samples from, in vLLM v1's order and float32 arithmetic (see
:mod:`klest.distributions.truncation` for each rule, its boundary and the sources): logits to
float32, divided by the temperature, min-p, then top-k and top-p together (sort ascending,
remove an entry when the cumulative probability up to and including it is <= 1 - top_p, keep
the largest), removed entries set to -inf, then ``log_softmax``. A temperature below 1e-5 is
greedy (vLLM's ``_SAMPLING_EPS``): log-probability 0 at the first argmax, -inf elsewhere.

:func:`generate` samples responses token by token with a KV cache from those processed
distributions and records the log-probability of each sampled token under the distribution it
was sampled from: vLLM's ``logprobs_mode="processed_logprobs"`` (the default ``raw_logprobs``
would be the tempered-free, untruncated log-softmax of the model's logits). The draws are
inverse-CDF sampling in float64 with ``numpy.random.Generator(PCG64(SeedSequence(seed)))``, one
uniform per sequence and step, so the responses depend on the seed alone, not on torch's
global generator. Prompts are left-padded, responses right-padded; a response ends with the
end-of-text token (kept, masked in) or at ``max_new_tokens``.

>>> import torch
>>> z = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
>>> processed_logprobs(z, top_k=2).exp().round(decimals=4)
tensor([[0.7311, 0.2689, 0.0000, 0.0000]])
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from klest.errors import check_integer
from klest.lm._deps import require, resolve_dtype

__all__ = ["GREEDY_EPS", "Rollout", "check_sampling", "generate", "processed_logprobs"]

#: vLLM's _SAMPLING_EPS: a temperature below it is greedy decoding
GREEDY_EPS = 1e-5


def check_sampling(
    temperature: float, top_k: int | None, top_p: float | None, min_p: float | None
) -> dict:
    """The sampling settings, validated (one-line ValueError naming the argument)."""
    if not (isinstance(temperature, int | float) and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if top_k is not None:
        top_k = check_integer("top_k", top_k, minimum=1)
    if top_p is not None and not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (None: no top-p), got {top_p!r}")
    if min_p is not None and not (isinstance(min_p, int | float) and 0 <= min_p <= 1):
        raise ValueError(f"min_p must be in [0, 1] (None: no min-p), got {min_p!r}")
    return {"temperature": float(temperature), "top_k": top_k, "top_p": top_p, "min_p": min_p}


def processed_logprobs(
    logits: Any,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
) -> Any:
    """Log-probabilities (float32 tensor, same shape) of the distribution an engine samples
    from with these settings, from logits of shape (..., V) (see the module notes).

    >>> import torch
    >>> z = torch.log(torch.tensor([0.5, 0.25, 0.125, 0.125]))
    >>> processed_logprobs(z, top_p=0.75).exp().round(decimals=4)
    tensor([0.6667, 0.3333, 0.0000, 0.0000])
    """
    torch, _, _ = require()
    s = check_sampling(temperature, top_k, top_p, min_p)
    z = torch.as_tensor(logits).float()
    vocab = z.shape[-1]
    if s["temperature"] < GREEDY_EPS:
        out = torch.full_like(z, -math.inf)
        return out.scatter(-1, z.argmax(dim=-1, keepdim=True), 0.0)
    z = z / s["temperature"]
    neg_inf = torch.tensor(-math.inf, dtype=z.dtype)
    if s["min_p"]:
        probs = torch.softmax(z, dim=-1)
        floor = s["min_p"] * probs.amax(dim=-1, keepdim=True)
        z = torch.where(probs < floor, neg_inf, z)
    k, p = s["top_k"], s["top_p"]
    if (k is not None and k < vocab) or (p is not None and p < 1):
        z_sort, order = z.sort(dim=-1, descending=False)
        if k is not None and k < vocab:
            kth = z_sort.narrow(-1, vocab - k, 1)
            z_sort = torch.where(z_sort < kth, neg_inf, z_sort)
        if p is not None and p < 1:
            cum = torch.softmax(z_sort, dim=-1).cumsum(dim=-1)
            drop = cum <= 1 - p
            drop[..., -1] = False
            z_sort = torch.where(drop, neg_inf, z_sort)
        z = torch.empty_like(z_sort).scatter(-1, order, z_sort)
    return torch.log_softmax(z, dim=-1)


@dataclass(frozen=True)
class Rollout:
    """Sampled responses. ``input_ids`` / ``attention_mask`` (B, P + R): prompts left-padded to
    P tokens, responses right-padded to R; ``response_mask`` (B, R) bool (the end-of-text token
    is in); ``rollout_logprob`` (B, R) float32, the processed log-probabilities of the sampled
    tokens (0 where masked out); ``prompt_index`` (B,) which prompt each row answers;
    ``logits`` (B, R, V) float32, the rollout model's raw logits, if kept; ``settings``."""

    input_ids: Any
    attention_mask: Any
    response_mask: Any
    rollout_logprob: Any
    prompt_index: np.ndarray
    prompt_length: int
    logits: Any
    settings: dict


def _encode(tokenizer: Any, prompts: Any) -> list[list[int]]:
    if isinstance(prompts, str) or not len(prompts):
        raise ValueError("prompts must be a non-empty sequence of strings or token-id lists")
    out = []
    for i, prompt in enumerate(prompts):
        ids = (
            tokenizer(prompt, add_special_tokens=False)["input_ids"]
            if isinstance(prompt, str)
            else [int(t) for t in prompt]
        )
        if not ids:
            raise ValueError(f"prompts[{i}] is empty (no token)")
        out.append(ids)
    return out


def positions_of(attention_mask: Any) -> Any:
    """Position ids for a left-padded batch: 0 at each row's first real token (0 on padding)."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def cache_argument(model: Any) -> str:
    """The name of the KV-cache argument (and output field) of ``model.forward``: ``cache``
    (transformers >= 5.x, which deprecates the old name) or ``past_key_values`` (4.x)."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def as_dtype(model: Any, dtype: Any) -> Any:
    """``model`` itself when its parameters already have ``dtype``, else an eval-mode copy."""
    if next(model.parameters()).dtype == dtype:
        return model
    return copy.deepcopy(model).to(dtype).eval()


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Any,
    *,
    samples_per_prompt: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    seed: int = 0,
    dtype: Any = "float32",
    keep_logits: bool = False,
) -> Rollout:
    """Sample ``samples_per_prompt`` responses to each prompt (strings or token-id lists) from
    ``model`` (any Hugging Face causal LM; run in ``dtype``, a copy if needed) with the engine's
    processing (see the module notes); the sampled tokens' processed log-probabilities.

    >>> from klest.lm import tiny
    >>> tok = tiny.train_tokenizer(vocab_size=280)
    >>> model = tiny.tiny_model(tok, n_layer=1, n_embd=16)
    >>> out = generate(model, tok, ["The river"], samples_per_prompt=3, max_new_tokens=5)
    >>> tuple(out.response_mask.shape), out.prompt_length == len(tok("The river").input_ids)
    ((3, 5), True)
    """
    torch, _, _ = require()
    settings = check_sampling(temperature, top_k, top_p, min_p)
    samples_per_prompt = check_integer("samples_per_prompt", samples_per_prompt, minimum=1)
    max_new_tokens = check_integer("max_new_tokens", max_new_tokens, minimum=1)
    seed = check_integer("seed", seed)
    dtype = resolve_dtype("dtype", dtype)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id (needed to end a response)")
    encoded = _encode(tokenizer, prompts)
    prompt_index = np.repeat(np.arange(len(encoded)), samples_per_prompt)
    width = max(len(ids) for ids in encoded)
    batch = len(prompt_index)
    ids = torch.full((batch, width), pad, dtype=torch.long)
    attn = torch.zeros((batch, width), dtype=torch.long)
    for row, j in enumerate(prompt_index):
        ids[row, width - len(encoded[j]) :] = torch.tensor(encoded[j])
        attn[row, width - len(encoded[j]) :] = 1
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
    runner = as_dtype(model, dtype)
    cache_key = cache_argument(runner)
    tokens = torch.full((batch, max_new_tokens), pad, dtype=torch.long)
    alive = torch.ones((batch, max_new_tokens), dtype=torch.bool)
    logps = torch.zeros((batch, max_new_tokens), dtype=torch.float32)
    kept = [] if keep_logits else None
    running = torch.ones(batch, dtype=torch.bool)
    step_ids, mask, past = ids, attn, None
    position = positions_of(attn)
    with torch.inference_mode():
        for t in range(max_new_tokens):
            out = runner(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=position,
                use_cache=True,
                **{cache_key: past},
            )
            past = getattr(out, cache_key)
            raw = out.logits[:, -1, :].float()
            logp = processed_logprobs(raw, **settings)
            cdf = np.cumsum(np.exp(logp.double().numpy()), axis=-1)
            target = rng.random(batch) * cdf[:, -1]
            choice = np.minimum((cdf <= target[:, None]).sum(axis=-1), cdf.shape[-1] - 1)
            token = torch.as_tensor(choice, dtype=torch.long)
            token = torch.where(running, token, torch.tensor(pad))
            tokens[:, t] = token
            alive[:, t] = running
            logps[:, t] = torch.where(running, logp.gather(-1, token[:, None])[:, 0], 0.0)
            if kept is not None:
                kept.append(raw)
            running = running & (token != eos)
            step_ids = token[:, None]
            mask = torch.cat([mask, alive[:, t : t + 1].long()], dim=1)
            position = position[:, -1:] + 1
            if not running.any():
                tokens, alive, logps = tokens[:, : t + 1], alive[:, : t + 1], logps[:, : t + 1]
                break
    length = tokens.shape[1]
    return Rollout(
        input_ids=torch.cat([ids, tokens], dim=1),
        attention_mask=torch.cat([attn, alive.long()], dim=1),
        response_mask=alive,
        rollout_logprob=logps,
        prompt_index=prompt_index,
        prompt_length=width,
        logits=torch.stack(kept, dim=1)[:, :length] if kept is not None else None,
        settings={**settings, "seed": seed, "dtype": str(dtype).removeprefix("torch."),
                  "samples_per_prompt": samples_per_prompt, "max_new_tokens": max_new_tokens},
    )  # fmt: skip

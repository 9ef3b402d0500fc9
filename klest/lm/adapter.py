"""Hugging Face causal LMs -> token logs: roll out like an engine, score like a trainer.

:func:`rollout_logs` takes a policy, a reference and optionally a separate rollout model (any
``transformers`` causal LM, e.g. ``PreTrainedModel`` objects, and their tokenizer), and:

1. samples responses with the rollout model (default: the policy) as an inference engine does
   (:func:`klest.lm.sampling.generate`: temperature / min-p / top-k / top-p in vLLM's order,
   float32 logits, run in ``rollout_dtype``); ``rollout_logprob`` is the log-probability of each
   sampled token under the *processed* distribution it was drawn from (vLLM's
   ``processed_logprobs``), so the ratio ρ = exp(logprob - rollout_logprob) also carries the
   temperature and the truncation, not only the numerical mismatch;
2. scores prompt + response with the policy and with the reference as a trainer does
   (:func:`score`): the model run in ``score_dtype`` (bfloat16 by default, a copy if needed),
   ``log_softmax`` of the bf16 logits in bf16 (TRL's ``selective_log_softmax`` and verl's
   ``logprobs_from_logits`` without flash-attn do this for bf16 logits; ``upcast=True`` takes
   the float32 log-softmax of the bf16 logits instead), the taken tokens' log-probabilities
   converted to float32;
3. writes one row per response token in klest's log schema (:mod:`klest.diagnostics.schema`):
   ``sequence``, ``position`` (index in the response), ``logprob``, ``ref_logprob``,
   ``rollout_logprob``, ``mask`` (float64 / int64 / bool), with the policy's and the
   reference's full logits (float32, from the bf16 forward pass) as side arrays when
   ``logits=True``: what the Rao-Blackwellised estimator (:func:`klest.rl.full_kl`) needs.

Padding rows (after a response's end-of-text token) are left out unless ``padding=True``; then
they are there with ``mask=False`` and finite values, as a framework's padded batch has them.

>>> from klest.lm import tiny
>>> pair = tiny.tiny_pair(vocab_size=280, reference_steps=2, policy_steps=1, n_layer=1, n_embd=16)
>>> logs = rollout_logs(pair.policy, pair.reference, pair.tokenizer, ["The river"],
...                     samples_per_prompt=2, max_new_tokens=4, seed=0)
>>> list(logs.frame.columns)
['sequence', 'position', 'logprob', 'ref_logprob', 'rollout_logprob', 'mask']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from klest.diagnostics import write_logs
from klest.lm._deps import require, resolve_dtype
from klest.lm.sampling import Rollout, as_dtype, generate, positions_of

__all__ = ["LMLogs", "logs_from_rollout", "rollout_logs", "score"]


@dataclass(frozen=True)
class LMLogs:
    """Token logs of sampled responses: ``frame`` (the schema's columns, one row per token),
    ``logits`` / ``ref_logits`` ((n_rows, V) float32 side arrays, or None), ``tokens`` (the
    token id of each row), ``rollout`` (the :class:`~klest.lm.sampling.Rollout`) and
    ``settings`` (sampling and scoring settings, versions)."""

    frame: pd.DataFrame
    logits: np.ndarray | None
    ref_logits: np.ndarray | None
    tokens: np.ndarray
    rollout: Rollout
    settings: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, np.ndarray]:
        """The columns and the side arrays (when present) as a dict of arrays: a source for
        :func:`klest.diagnostics.readers.iter_chunks` and ``klest.diagnose``."""
        out = {name: self.frame[name].to_numpy() for name in self.frame.columns}
        if self.logits is not None:
            out["logits"], out["ref_logits"] = self.logits, self.ref_logits
        return out

    def write(self, path: str | Path, **options: Any) -> Path:
        """Write the log (and the side arrays) with
        :func:`klest.diagnostics.readers.write_logs` (by the file's suffix); returns the path."""
        write_logs(path, self.as_dict(), **options)
        return Path(path)

    def texts(self, tokenizer: Any) -> list[str]:
        """The decoded responses (without padding), one per sequence."""
        ids = self.rollout.input_ids[:, self.rollout.prompt_length :]
        mask = self.rollout.response_mask
        return [tokenizer.decode(row[m].tolist()) for row, m in zip(ids, mask, strict=True)]


def score(
    model: Any,
    rollout: Rollout,
    *,
    dtype: Any = "bfloat16",
    upcast: bool = False,
    keep_logits: bool = False,
) -> tuple[Any, Any]:
    """The trainer's log-probabilities (B, R) float32 of the rollout's response tokens under
    ``model`` run in ``dtype`` (see the module notes), and its (B, R, V) logits converted to
    float32 if ``keep_logits`` (else None).

    >>> from klest.lm import tiny, sampling
    >>> tok = tiny.train_tokenizer(vocab_size=280)
    >>> m = tiny.tiny_model(tok, n_layer=1, n_embd=16)
    >>> out = sampling.generate(m, tok, ["The"], samples_per_prompt=2, max_new_tokens=3)
    >>> lp, _ = score(m, out, dtype="float32")
    >>> bool((lp - out.rollout_logprob).abs().max() < 1e-5)  # T = 1: the same distribution
    True
    """
    torch, _, _ = require()
    dtype = resolve_dtype("dtype", dtype)
    runner = as_dtype(model, dtype)
    start = rollout.prompt_length
    with torch.inference_mode():
        logits = runner(
            input_ids=rollout.input_ids,
            attention_mask=rollout.attention_mask,
            position_ids=positions_of(rollout.attention_mask),
            use_cache=False,
        ).logits
        response = logits[:, start - 1 : -1, :]  # the logits that predict the response tokens
        taken = rollout.input_ids[:, start:, None]
        lp = torch.log_softmax(response.float() if upcast else response, dim=-1)
        lp = lp.gather(-1, taken)[..., 0].float()
        kept = response.float() if keep_logits else None
    return lp, kept


def logs_from_rollout(
    rollout: Rollout,
    logprob: Any,
    ref_logprob: Any,
    *,
    logits: Any = None,
    ref_logits: Any = None,
    padding: bool = False,
    settings: dict | None = None,
) -> LMLogs:
    """The schema rows (an :class:`LMLogs`) of a rollout scored by a policy (``logprob``, (B, R))
    and a reference (``ref_logprob``), with their (B, R, V) logits as side arrays if given;
    padding rows (``mask=False``) only with ``padding=True``.

    >>> from klest.lm import tiny, sampling
    >>> tok = tiny.train_tokenizer(vocab_size=280)
    >>> m = tiny.tiny_model(tok, n_layer=1, n_embd=16)
    >>> out = sampling.generate(m, tok, ["The", "Day one."], max_new_tokens=3)
    >>> lp, _ = score(m, out)
    >>> logs = logs_from_rollout(out, lp, lp, padding=True)
    >>> len(logs.frame) == out.response_mask.numel(), int(logs.frame["mask"].sum()) == int(
    ...     out.response_mask.sum())
    (True, True)
    """
    mask = rollout.response_mask.numpy()
    keep = np.ones_like(mask) if padding else mask
    seq, pos = np.nonzero(keep)  # sequence-major, positions ascending
    tokens = rollout.input_ids[:, rollout.prompt_length :].numpy()
    frame = pd.DataFrame(
        {
            "sequence": seq.astype(np.int64),
            "position": pos.astype(np.int64),
            "logprob": logprob.numpy().astype(np.float64)[seq, pos],
            "ref_logprob": ref_logprob.numpy().astype(np.float64)[seq, pos],
            "rollout_logprob": rollout.rollout_logprob.numpy().astype(np.float64)[seq, pos],
            "mask": mask[seq, pos],
        }
    )
    side = [None if a is None else a.numpy()[seq, pos] for a in (logits, ref_logits)]
    return LMLogs(frame, side[0], side[1], tokens[seq, pos], rollout, dict(settings or {}))


def rollout_logs(
    policy: Any,
    reference: Any,
    tokenizer: Any,
    prompts: Any,
    *,
    rollout_model: Any = None,
    samples_per_prompt: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    seed: int = 0,
    rollout_dtype: Any = "float32",
    score_dtype: Any = "bfloat16",
    upcast: bool = False,
    logits: bool = False,
    padding: bool = False,
) -> LMLogs:
    """Sample responses to ``prompts`` (``samples_per_prompt`` each) with ``rollout_model``
    (default: the policy), score them with ``policy`` and ``reference``, and return the token
    logs (see the module notes for each step and each argument).

    >>> from klest.lm import tiny
    >>> pair = tiny.tiny_pair(vocab_size=280, reference_steps=2, policy_steps=1, n_layer=1,
    ...                       n_embd=16)
    >>> logs = rollout_logs(pair.policy, pair.reference, pair.tokenizer, ["Day one."],
    ...                     samples_per_prompt=2, max_new_tokens=3, top_p=0.9, logits=True)
    >>> logs.logits.shape[1], logs.settings["top_p"]
    (280, 0.9)
    """
    torch, transformers, tokenizers = require()
    if not isinstance(logits, bool) or not isinstance(padding, bool):
        raise TypeError("logits and padding must be booleans")
    score_dtype = resolve_dtype("score_dtype", score_dtype)
    sampler = policy if rollout_model is None else rollout_model
    rollout = generate(
        sampler,
        tokenizer,
        prompts,
        samples_per_prompt=samples_per_prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        seed=seed,
        dtype=rollout_dtype,
    )
    lp, side = score(policy, rollout, dtype=score_dtype, upcast=upcast, keep_logits=logits)
    ref_lp, ref_side = score(
        reference, rollout, dtype=score_dtype, upcast=upcast, keep_logits=logits
    )
    settings = {k: v for k, v in rollout.settings.items() if k != "dtype"}
    settings |= {
        "rollout_model": "policy" if rollout_model is None else "separate",
        "rollout_dtype": rollout.settings["dtype"],
        "score_dtype": str(score_dtype).removeprefix("torch."),
        "upcast": upcast,
        "rollout_logprob": "processed (temperature, min-p, top-k, top-p applied; vLLM order)",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
    }
    return logs_from_rollout(
        rollout, lp, ref_lp, logits=side, ref_logits=ref_side, padding=padding, settings=settings
    )

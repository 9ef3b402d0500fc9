"""A tiny GPT-2-style language model pair, built locally: no download, deterministic.

- :func:`train_tokenizer`: a byte-level BPE tokenizer (Hugging Face ``tokenizers``) trained on a
  text (by default :data:`klest.lm.corpus.REFERENCE_TEXT`, which ships with klest), wrapped as a
  ``transformers`` fast tokenizer with ``<|endoftext|>`` as end-of-text and padding token.
- :func:`tiny_model`: a ``GPT2LMHeadModel`` from a ``GPT2Config`` with a few layers and heads,
  initialised at random from a fixed seed (torch's global generator is forked, not touched).
- :func:`fine_tune`: a copy of a model after a few Adam steps of next-token cross-entropy on a
  text (random windows of the token stream drawn from ``numpy`` with a fixed seed; no dropout).
- :func:`tiny_pair`: tokenizer, a reference (the random model after a few steps on the
  reference text) and a policy (the reference after a few more steps on
  :data:`klest.lm.corpus.POLICY_TEXT`): two real models a few optimisation steps apart.

Everything is a function of the arguments: the same seed gives the same tokenizer and the same
weights, bit for bit, in one environment (a torch build and its thread count; other builds may
round matrix products differently). Only standard ``transformers`` API that exists in 4.x and
5.x is used (``GPT2Config``, ``GPT2LMHeadModel``, ``PreTrainedTokenizerFast``).

>>> from klest.lm import tiny
>>> tok = tiny.train_tokenizer(vocab_size=300)
>>> len(tok), tok.eos_token
(300, '<|endoftext|>')
>>> model = tiny.tiny_model(tok, seed=0, n_layer=1, n_embd=16)
>>> model.config.n_layer, model.config.vocab_size
(1, 300)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from klest.errors import check_integer
from klest.lm._deps import require
from klest.lm.corpus import POLICY_TEXT, REFERENCE_TEXT

__all__ = [
    "EOS",
    "TinyPair",
    "fine_tune",
    "tiny_model",
    "tiny_pair",
    "token_stream",
    "train_tokenizer",
]

#: the end-of-text (and padding) token of the tiny tokenizer
EOS = "<|endoftext|>"


def _documents(text: str) -> list[str]:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    docs = [line.strip() for line in text.splitlines() if line.strip()]
    if not docs:
        raise ValueError("text has no non-empty line to train on")
    return docs


def train_tokenizer(text: str = REFERENCE_TEXT, *, vocab_size: int = 384) -> Any:
    """A byte-level BPE tokenizer of ``vocab_size`` entries (256 bytes, ``<|endoftext|>`` and
    merges) trained on the lines of ``text``; a ``transformers.PreTrainedTokenizerFast``.

    >>> tok = train_tokenizer(vocab_size=280)
    >>> tok.decode(tok("The harbour town")["input_ids"])
    'The harbour town'
    """
    _, transformers, tokenizers = require()
    vocab_size = check_integer("vocab_size", vocab_size, minimum=258)
    docs = _documents(text)
    byte_level = tokenizers.pre_tokenizers.ByteLevel
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = byte_level(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=byte_level.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer)
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(
            f"vocab_size={vocab_size}: the text only supports {tok.get_vocab_size()} entries "
            "(fewer merges); pass a smaller vocab_size or a longer text"
        )
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


def tiny_model(
    tokenizer: Any,
    *,
    seed: int = 0,
    n_layer: int = 2,
    n_head: int = 2,
    n_embd: int = 64,
    n_positions: int = 128,
) -> Any:
    """A randomly initialised ``GPT2LMHeadModel`` (float32, eval mode, no dropout) for
    ``tokenizer``'s vocabulary; the initialisation draws from torch's generator seeded with
    ``seed`` inside ``torch.random.fork_rng`` (the caller's global state is left as it was).

    >>> tok = train_tokenizer(vocab_size=280)
    >>> a = tiny_model(tok, seed=3, n_layer=1, n_embd=16)
    >>> b = tiny_model(tok, seed=3, n_layer=1, n_embd=16)
    >>> all(bool((x == y).all()) for x, y in zip(a.parameters(), b.parameters()))
    True
    """
    torch, transformers, _ = require()
    seed = check_integer("seed", seed)
    sizes = {
        "n_layer": n_layer,
        "n_head": n_head,
        "n_embd": n_embd,
        "n_positions": n_positions,
    }
    for name, value in sizes.items():
        check_integer(name, value, minimum=1)
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **sizes,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config)
    return model.float().eval()


def token_stream(tokenizer: Any, text: str) -> np.ndarray:
    """The lines of ``text`` tokenized, each followed by the end-of-text token, concatenated."""
    ids: list[int] = []
    for doc in _documents(text):
        ids += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return np.asarray(ids, dtype=np.int64)


def fine_tune(
    model: Any,
    tokenizer: Any,
    text: str,
    *,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 16,
    context: int = 48,
    seed: int | np.random.SeedSequence = 0,
) -> Any:
    """A copy of ``model`` after ``steps`` Adam steps (learning rate ``lr``) of next-token
    cross-entropy on windows of ``context + 1`` tokens of ``text``'s token stream, ``batch_size``
    windows per step, their starts drawn by ``numpy.random.default_rng(seed)`` (an int or a
    ``SeedSequence``); eval mode, parameters frozen.

    >>> tok = train_tokenizer(vocab_size=280)
    >>> m0 = tiny_model(tok, n_layer=1, n_embd=16)
    >>> m1 = fine_tune(m0, tok, "the cat sat on the mat", steps=2, context=4)
    >>> any(bool((a != b).any()) for a, b in zip(m0.parameters(), m1.parameters()))
    True
    """
    torch, _, _ = require()
    steps = check_integer("steps", steps)
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    context = check_integer("context", context, minimum=1)
    if not (isinstance(lr, int | float) and np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    stream = token_stream(tokenizer, text)
    if len(stream) < context + 1:
        raise ValueError(
            f"context={context}: the text has only {len(stream)} tokens (needs context + 1)"
        )
    if context > model.config.n_positions:
        raise ValueError(f"context={context} exceeds the model's n_positions")
    rng = np.random.default_rng(seed)
    out = copy.deepcopy(model).float().train()
    for param in out.parameters():
        param.requires_grad_(True)
    optimiser = torch.optim.Adam(out.parameters(), lr=lr)
    offsets = np.arange(context + 1)
    for _ in range(steps):
        starts = rng.integers(0, len(stream) - context, size=batch_size)
        batch = torch.as_tensor(stream[starts[:, None] + offsets])
        inputs = batch[:, :-1]
        logits = out(
            input_ids=inputs, attention_mask=torch.ones_like(inputs), use_cache=False
        ).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    out.eval()
    for param in out.parameters():
        param.requires_grad_(False)
    return out


@dataclass(frozen=True)
class TinyPair:
    """The tokenizer, the reference model, the policy, and how they were made (``settings``)."""

    tokenizer: Any
    reference: Any
    policy: Any
    settings: dict


def tiny_pair(
    *,
    seed: int = 0,
    vocab_size: int = 384,
    reference_steps: int = 150,
    policy_steps: int = 2,
    lr: float = 3e-3,
    policy_lr: float = 1e-3,
    n_layer: int = 2,
    n_head: int = 2,
    n_embd: int = 64,
) -> TinyPair:
    """Tokenizer, reference and policy: a tokenizer trained on ``REFERENCE_TEXT``; a random
    model (``seed``) trained ``reference_steps`` Adam steps on it (the reference); the reference
    trained ``policy_steps`` more steps on ``POLICY_TEXT`` (the policy: a real model a few
    optimisation steps away from the reference). A few seconds on one CPU core.

    >>> pair = tiny_pair(vocab_size=280, reference_steps=2, policy_steps=1, n_layer=1, n_embd=16)
    >>> pair.policy.config.vocab_size == len(pair.tokenizer) == 280
    True
    """
    tokenizer = train_tokenizer(REFERENCE_TEXT, vocab_size=vocab_size)
    init = tiny_model(tokenizer, seed=seed, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    stages = [np.random.SeedSequence(seed, spawn_key=(stage,)) for stage in (0, 1)]
    reference = fine_tune(
        init, tokenizer, REFERENCE_TEXT, steps=reference_steps, lr=lr, seed=stages[0]
    )
    policy = fine_tune(
        reference, tokenizer, POLICY_TEXT, steps=policy_steps, lr=policy_lr, seed=stages[1]
    )
    settings = {
        "seed": seed,
        "vocab_size": vocab_size,
        "reference_steps": reference_steps,
        "policy_steps": policy_steps,
        "lr": lr,
        "policy_lr": policy_lr,
        "n_layer": n_layer,
        "n_head": n_head,
        "n_embd": n_embd,
    }
    return TinyPair(tokenizer, reference, policy, settings)

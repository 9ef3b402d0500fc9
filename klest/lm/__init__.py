"""klest.lm: token logs from real language models, and a tiny GPT-2 pair built offline.

Imports ``klest.diagnostics`` and the layers below it; never ``klest.studies``,
``klest.report`` or ``klest.cli``. Needs the optional extra ``pip install klest[lm]`` (torch,
transformers, tokenizers): they are imported when a function needs them (``import klest`` and
``import klest.lm`` never import them), and a missing one is a one-line ImportError naming the
extra.

- :func:`rollout_logs` (:mod:`klest.lm.adapter`): any Hugging Face causal LM as policy,
  reference and (optionally) a separate rollout model -> the log rows of
  :mod:`klest.diagnostics.schema`: responses sampled like an inference engine (temperature,
  min-p, top-k, top-p; ``rollout_logprob`` from the processed distribution, as vLLM's
  ``processed_logprobs``), scored like a trainer (bf16 forward, log-softmax, float32
  log-probabilities), with the full logits as side arrays for the Rao-Blackwellised estimator.
- :func:`tiny_pair` (:mod:`klest.lm.tiny`): a byte-level BPE tokenizer trained on a text that
  ships with klest, a random GPT-2-style reference trained a few Adam steps on it, and a
  policy a few steps further on another text; deterministic, a few seconds on a CPU.
- :func:`sequence_estimates` (:mod:`klest.lm.compare`): the sequence-level KL by Σ k1, Σ k2,
  Σ k3, k3(L) and RB, with the tabular theory's verdict on each.

>>> import klest.lm
>>> pair = klest.lm.tiny_pair(vocab_size=280, reference_steps=2, policy_steps=1, n_layer=1,
...                           n_embd=16)
>>> logs = klest.lm.rollout_logs(pair.policy, pair.reference, pair.tokenizer, ["The"],
...                              samples_per_prompt=4, max_new_tokens=3, logits=True)
>>> table = klest.lm.sequence_estimates(logs.as_dict())
>>> table.estimator.tolist()[-4:]  # x ~ the engine: unweighted rows, then W-weighted ones
['RB, x~old unweighted', 'sum k1, W', 'sum k3, W', 'RB, W']
"""

from klest.lm._deps import require
from klest.lm.adapter import LMLogs, logs_from_rollout, rollout_logs, score
from klest.lm.compare import sequence_estimates, sequence_values
from klest.lm.corpus import POLICY_TEXT, PROMPTS, REFERENCE_TEXT
from klest.lm.sampling import Rollout, generate, processed_logprobs
from klest.lm.tiny import TinyPair, fine_tune, tiny_model, tiny_pair, train_tokenizer

__all__ = [
    "POLICY_TEXT",
    "PROMPTS",
    "REFERENCE_TEXT",
    "LMLogs",
    "Rollout",
    "TinyPair",
    "fine_tune",
    "generate",
    "logs_from_rollout",
    "processed_logprobs",
    "require",
    "rollout_logs",
    "score",
    "sequence_estimates",
    "sequence_values",
    "tiny_model",
    "tiny_pair",
    "train_tokenizer",
]

"""klest.rl: the KL penalties of RL frameworks, value and gradient; exact full-vocabulary KL.

Imports ``klest.engine`` and the layers below it (today only ``klest.estimators``); never torch.

``kl_penalty(logprob, ref_logprob, kind, framework=...)`` reproduces what verl, OpenRLHF,
TRL, slime and NeMo-RL compute per token (clamps, straight-through gradients, importance
ratios, detached rewards), on numpy arrays or torch tensors with autograd intact.
``full_kl(logits, ref_logits)`` is the exact per-position KL(π‖π_ref) from full logits,
chunked so that a 152k vocabulary over thousands of positions fits in bounded memory
(``mask=`` for padding and masked entries; ``emulate=`` for a framework's own rounding).
``truncated_pair(logits, ref_logits, top_k=..., top_p=...)`` gives what an inference
engine's truncated sampling does to the logged KL and to each estimator, exactly.
``topk_kl(logits, ref_logits, k, form=..., direction=...)``: verl's and NeMo-RL's top-k
distillation KLs and a top-k-plus-tail-bucket form; ``topk_kl_bias``: their exact bias
against ``full_kl`` with proven bounds.
torch is optional and never imported by klest: tensors are handled when you pass them.

Conventions: ``logprob`` = log π_θ (the policy, klest's q), ``ref_logprob`` = log π_ref
(klest's p); the log-ratio ``l = ref_logprob - logprob`` = log p - log q, r = π_ref/π_θ.

>>> import numpy as np
>>> from klest import rl
>>> lp, ref = np.log([0.5, 0.01]), np.log([0.25, 0.5])
>>> rl.kl_penalty(lp, ref, "low_var_kl", framework="verl").round(4)
array([ 0.1931, 10.    ])
>>> rl.kinds("trl")
('k1', 'k3', 'rloo', 'grpo')
>>> rl.kinds("trl@0.11.4")
('kl', 'abs', 'mse', 'full')
"""

import klest.rl.frameworks  # noqa: F401  (registers every release)
from klest.rl.full import full_kl
from klest.rl.penalty import (
    PenaltySpec,
    Release,
    apply_spec,
    describe,
    frameworks,
    kinds,
    kl_penalty,
    release,
    spec,
    versions,
)
from klest.rl.topk import TopKBias, topk_kl, topk_kl_bias
from klest.rl.truncation import TruncatedPair, truncated_pair, truncation_sweep

__all__ = [
    "PenaltySpec",
    "Release",
    "TopKBias",
    "TruncatedPair",
    "apply_spec",
    "describe",
    "frameworks",
    "full_kl",
    "kinds",
    "kl_penalty",
    "release",
    "spec",
    "topk_kl",
    "topk_kl_bias",
    "truncated_pair",
    "truncation_sweep",
    "versions",
]

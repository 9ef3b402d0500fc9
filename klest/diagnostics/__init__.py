"""klest.diagnostics: diagnose a real run from its logged per-token log-probabilities.

Imports ``klest.sequence``, ``klest.rl``, ``klest.estimators`` and the layers below them; never
``klest.studies``, ``klest.report`` or ``klest.cli``. pyarrow (Parquet) and torch (``.pt``) are
optional and imported only when a file of that kind is read or written.

The input (:mod:`klest.diagnostics.schema`): one row per token with ``sequence``, ``logprob``,
``ref_logprob`` and optionally ``old_logprob``, ``rollout_logprob``, ``mask``, ``position``, and
``logits`` / ``ref_logits`` side arrays. :func:`iter_chunks` reads Parquet, ``.npz``, ``.pt``,
JSONL, a DataFrame or a dict of arrays in validated chunks (constant memory);
:func:`write_logs` writes any of the four formats.

>>> from klest.diagnostics import iter_chunks
>>> log = {"sequence": [0, 0, 1], "logprob": [-0.1, -2.0, -0.5], "ref_logprob": [-0.2, -1.5, -0.5]}
>>> chunk = next(iter_chunks(log))
>>> chunk.sequence, chunk.mask is None
(array([0, 0, 1]), True)
"""

from klest.diagnostics.diagnosis import Diagnosis, diagnose
from klest.diagnostics.readers import FORMATS, format_of, iter_chunks, open_source
from klest.diagnostics.schema import (
    LOGPROB_COLUMNS,
    OPTIONAL,
    REQUIRED,
    SIDE,
    LogError,
    TokenChunk,
    validate_block,
)
from klest.diagnostics.writers import write_logs

__all__ = [
    "FORMATS",
    "LOGPROB_COLUMNS",
    "OPTIONAL",
    "REQUIRED",
    "SIDE",
    "Diagnosis",
    "LogError",
    "TokenChunk",
    "diagnose",
    "format_of",
    "iter_chunks",
    "open_source",
    "validate_block",
    "write_logs",
]

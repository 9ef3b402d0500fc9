"""The token-log schema that ``klest diagnose`` reads: one row per token.

A log is a table with one row per generated (response) token:

=================== ========= ===================================================================
column              required  meaning
=================== ========= ===================================================================
``sequence``        yes       the id of the response the token belongs to (any integer; the
                              tokens of one sequence need not be contiguous, but usually are)
``logprob``         yes       log π_θ(token): the policy being trained (klest's q); a sampled
                              token has positive probability, so never -inf
``ref_logprob``     yes       log π_ref(token): the reference (klest's p); -inf is legal (the
                              reference gives the token no mass: a support mismatch, counted
                              downstream)
``old_logprob``     no        log π_old(token), the policy that scored the batch before the
                              update (PPO's behaviour policy); -inf legal
``rollout_logprob`` no        the inference engine's log-probability of the token (vLLM, SGLang:
                              the policy that really sampled it); -inf legal
``mask``            no        True = the token is counted (False: padding, prompt, tool output);
                              booleans or 0/1; absent: every row counted
``position``        no        the token's index in its response (integer >= 0)
=================== ========= ===================================================================

All log-probability columns are natural logs, numbers (any float or integer dtype; read as
float64), never NaN or +inf, and at most 0 (up to 1e-6 of rounding). Masked rows are validated
too: write a finite value (e.g. 0.0) in padding. Conventions (DESIGN.md): the log-ratio is
``l = ref_logprob - logprob`` = log p - log q and r = exp(l) = π_ref/π_θ; the importance ratio of
the behaviour policy is ρ = exp(logprob - rollout_logprob) (or ``old_logprob``).

**Logits (optional side arrays).** ``logits`` (the policy's) and ``ref_logits`` (the
reference's), each of shape (n_tokens, V): row i belongs to token row i. V is the full
vocabulary, or a top-k subset: then both arrays hold the same k token ids, in the same order, and
whatever uses them (the Rao-Blackwellised estimator) works on that renormalised subset. Float
dtypes (float16 / float32 / float64, kept as they are; torch bfloat16 is read as float32);
-inf is a legal logit (a token excluded by the engine), NaN and +inf are errors. Where they live:

- ``.npz`` / ``.pt``: keys ``"logits"`` and ``"ref_logits"``, arrays of shape (n_tokens, V);
- Parquet: columns ``logits`` / ``ref_logits`` of type ``fixed_size_list<float>[V]`` (what
  :func:`~klest.diagnostics.readers.write_logs` writes; a variable ``list<float>`` column with
  V entries on every row is read too), so that they stream with the row groups;
- JSONL: a list of V numbers under ``"logits"`` / ``"ref_logits"`` on every line;
- a pandas DataFrame or a dict of arrays: a 2-D array under those keys (a DataFrame column of
  1-D arrays, as ``pandas.read_parquet`` gives, is stacked);
- or a sibling file / mapping passed as ``iter_chunks(..., logits=...)``.

**Names are not guessed.** Unknown columns are ignored. A missing required column is an error
that names any near-miss present (``ref_logprobs``, ``log_prob``, TRL's ``per_token_logps``,
...: "did you mean"); a near-miss of an optional column (``response_mask``,
``rollout_log_probs``) is ignored with a warning, because ignoring it changes what is counted.

**Errors** are :class:`LogError` (a ValueError) with a one-line message naming the file, the
column and the absolute row (0-based, as ``TokenChunk.start``: the position in the file or
frame, not a DataFrame's index label; JSONL also gives the 1-based
line: ``column 'logprob', row 3 (line 4)``).

>>> import numpy as np
>>> from klest.diagnostics import schema
>>> cols = schema.validate_block({"sequence": np.array([0, 0]), "logprob": np.array([-0.5, 0.1]),
...                               "ref_logprob": np.array([-1.0, -np.inf])}, start=10,
...                              where="run.parquet")
Traceback (most recent call last):
    ...
klest.diagnostics.schema.LogError: run.parquet: column 'logprob', row 11: log-probability 0.1 ...
"""

from __future__ import annotations

import difflib
import numbers
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LOGPROB_COLUMNS",
    "OPTIONAL",
    "POSITIVE_TOLERANCE",
    "REQUIRED",
    "SIDE",
    "LogError",
    "TokenChunk",
    "check_names",
    "validate_block",
]

REQUIRED = ("sequence", "logprob", "ref_logprob")
OPTIONAL = ("old_logprob", "rollout_logprob", "mask", "position")
SIDE = ("logits", "ref_logits")
LOGPROB_COLUMNS = ("logprob", "ref_logprob", "old_logprob", "rollout_logprob")
COLUMNS = REQUIRED + OPTIONAL
# a log-probability above this is an error; in (0, 1e-6] it is rounding and kept as it is
POSITIVE_TOLERANCE = 1e-6

# spellings that frameworks use for the schema's names (suggested, never used silently)
ALIASES = {
    "sequence": ("seq", "seq_id", "seq_idx", "sequence_id", "sequence_idx", "sample_id",
                 "sample_idx", "response_id", "uid", "sequences"),
    "logprob": ("logprobs", "log_prob", "log_probs", "logp", "logps", "per_token_logps",
                "policy_logprob", "policy_logprobs", "new_logprob", "new_log_probs",
                "actor_log_prob", "action_log_probs"),
    "ref_logprob": ("ref_logprobs", "ref_log_prob", "ref_log_probs", "ref_logp", "ref_logps",
                    "ref_per_token_logps", "reference_logprob", "reference_logprobs",
                    "base_action_log_probs"),
    "old_logprob": ("old_logprobs", "old_log_prob", "old_log_probs", "old_per_token_logps",
                    "old_action_log_probs", "prev_logprob"),
    "rollout_logprob": ("rollout_logprobs", "rollout_log_prob", "rollout_log_probs",
                        "generation_logprob", "generation_logprobs", "sampling_logprob",
                        "inference_logprob", "vllm_logprob", "behavior_logprob",
                        "behaviour_logprob"),
    "mask": ("masks", "response_mask", "loss_mask", "action_mask", "completion_mask",
             "attention_mask", "token_mask"),
    "position": ("pos", "positions", "token_position", "position_id", "position_ids"),
    "logits": ("logit", "policy_logits"),
    "ref_logits": ("ref_logit", "reference_logits"),
}  # fmt: skip


class LogError(ValueError):
    """A token log that cannot be read as the schema says: one line naming file, column, row."""


@dataclass(frozen=True, eq=False)  # (fields are arrays: identity, not elementwise, equality)
class TokenChunk:
    """Consecutive rows ``start, start + 1, ...`` of a token log, validated.

    ``sequence`` (int64), ``logprob`` and ``ref_logprob`` (float64) are always there;
    ``old_logprob``, ``rollout_logprob`` (float64), ``mask`` (bool), ``position`` (int64) and
    the side arrays ``logits`` / ``ref_logits`` ((n, V) floats) are None when the log has no
    such column (no ``mask``: every row is counted, see :attr:`counted`). Arrays may be
    read-only views of the file's buffers: copy before writing into them.

    >>> chunk = TokenChunk(np.array([0, 0]), np.array([-1.0, -0.5]), np.array([-2.0, -0.5]))
    >>> len(chunk), chunk.log_ratio, chunk.counted
    (2, array([-1.,  0.]), array([ True,  True]))
    """

    sequence: np.ndarray
    logprob: np.ndarray
    ref_logprob: np.ndarray
    old_logprob: np.ndarray | None = None
    rollout_logprob: np.ndarray | None = None
    mask: np.ndarray | None = None
    position: np.ndarray | None = None
    logits: np.ndarray | None = None
    ref_logits: np.ndarray | None = None
    start: int = 0

    def __len__(self) -> int:
        return len(self.logprob)

    @property
    def counted(self) -> np.ndarray:
        """The mask as a bool array (all True when the log has no ``mask`` column)."""
        return np.ones(len(self), dtype=bool) if self.mask is None else self.mask

    @property
    def log_ratio(self) -> np.ndarray:
        """l = ref_logprob - logprob (log p - log q, DESIGN.md), float64."""
        return self.ref_logprob - self.logprob


# ---- names ---------------------------------------------------------------------------------


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()).removesuffix("s")


def _near_misses(wanted: str, present: Iterable[str]) -> list[str]:
    present = [p for p in present if p != wanted]
    hits = [p for p in present if p in ALIASES.get(wanted, ()) or _squash(p) == _squash(wanted)]
    hits += difflib.get_close_matches(wanted, present, n=3, cutoff=0.8)
    return list(dict.fromkeys(hits))


def check_names(present: Iterable[str], where: str, *, warn: bool = True) -> tuple[str, ...]:
    """The schema columns (and side arrays) among ``present``, in schema order.

    A missing required column raises LogError naming any near-miss present; a near-miss of an
    absent optional column or side array warns (it is ignored, not renamed).

    >>> check_names(["ref_logprob", "logprob", "sequence", "reward", "mask"], "run.npz")
    ('sequence', 'logprob', 'ref_logprob', 'mask')
    >>> check_names(["sequence", "logprobs", "ref_logprobs"], "run.npz")
    Traceback (most recent call last):
        ...
    klest.diagnostics.schema.LogError: run.npz: missing required column 'logprob' (did you mean ...
    """
    present = [str(p) for p in present]
    names = set(present)
    for column in REQUIRED:
        if column not in names:
            hint = _near_misses(column, present)
            shown = present[:12] + (["..."] if len(present) > 12 else [])
            did = f" (did you mean {', '.join(map(repr, hint))}?)" if hint else ""
            raise LogError(
                f"{where}: missing required column {column!r}{did}; columns present: "
                f"{', '.join(shown) if shown else 'none'}"
            )
    unknown = [p for p in present if p not in COLUMNS + SIDE]
    for column in OPTIONAL + SIDE:
        if warn and column not in names and (hint := _near_misses(column, unknown)):
            warnings.warn(
                f"{where}: column {hint[0]!r} is ignored: not a schema name (did you mean "
                f"{column!r}? rename it to use it)",
                UserWarning,
                stacklevel=3,
            )
    return tuple(c for c in COLUMNS + SIDE if c in names)


# ---- values --------------------------------------------------------------------------------


class _Context:
    def __init__(self, where: str, start: int, lines: np.ndarray | None, mask: Any) -> None:
        self.where, self.start, self.lines, self.mask = where, start, lines, mask

    def fail(self, column: str, index: int, problem: str) -> LogError:
        row = self.start + int(index)
        place = f"column {column!r}, row {row}"
        if self.lines is not None:
            place += f" (line {int(self.lines[index])})"
        masked = self.mask is not None and not bool(self.mask[index])
        note = " [a masked row: write a finite value in padding]" if masked else ""
        return LogError(f"{self.where}: {place}: {problem}{note}")

    def whole(self, column: str, problem: str) -> LogError:
        return LogError(f"{self.where}: column {column!r}: {problem}")


def _first(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0])


def _numbers(ctx: _Context, column: str, x: Any, expected: str) -> np.ndarray:
    """``x`` as a numeric ndarray (integers or floats), or the LogError naming what is not."""
    x = np.asarray(x)
    if x.dtype.kind == "O":  # Python objects (JSON values, pandas NA, mixed columns)
        values = x.tolist()
        for i, value in enumerate(values):
            if isinstance(value, bool | str | bytes) or not isinstance(value, numbers.Real):
                raise ctx.fail(column, i, f"{value!r} is not a number; expected {expected}")
        x = np.asarray(values)
    if x.dtype.kind not in "iuf":
        kind = {"b": "booleans", "U": "strings", "S": "bytes", "c": "complex"}.get(x.dtype.kind)
        shown = f", e.g. {x.flat[0].item()!r}" if x.size else ""
        raise ctx.whole(column, f"dtype {x.dtype} ({kind or 'not numbers'}{shown}); "
                        f"expected {expected}")  # fmt: skip
    return x


def _logprob(ctx: _Context, column: str, x: Any) -> np.ndarray:
    v = _numbers(ctx, column, x, "log-probabilities (floats)").astype(np.float64, copy=False)
    bad = ~(v <= POSITIVE_TOLERANCE)  # NaN, +inf, > 0
    if column == "logprob":
        bad |= v == -np.inf
    if bad.any():
        i = _first(bad)
        value = float(v[i])
        if np.isnan(value):
            problem = "NaN (log-probabilities must be numbers)"
        elif value == np.inf:
            problem = "+inf (a log-probability is at most 0)"
        elif value == -np.inf:
            problem = "-inf: the sampled token has probability 0 under the policy (impossible)"
        else:
            problem = f"log-probability {value!r} > 0 (a log-probability is at most 0)"
        raise ctx.fail(column, i, problem)
    return v


def _integers(ctx: _Context, column: str, x: Any, minimum: int | None) -> np.ndarray:
    what = "integer ids" if column == "sequence" else "integers"
    v = _numbers(ctx, column, x, what)
    if v.dtype.kind == "f":
        bad = ~np.isfinite(v) | (v != np.floor(v)) | (np.abs(v) >= 2.0**63)
        if bad.any():
            i = _first(bad)
            raise ctx.fail(column, i, f"{v[i].item()!r} is not an integer ({what} expected; "
                           "map other ids to integers, e.g. with pandas.factorize)")  # fmt: skip
    elif v.dtype.kind == "u" and v.dtype.itemsize == 8 and (v > np.iinfo(np.int64).max).any():
        i = _first(v > np.iinfo(np.int64).max)
        raise ctx.fail(column, i, f"{v[i].item()} does not fit in int64")
    v = v.astype(np.int64, copy=False)
    if minimum is not None and (v < minimum).any():
        i = _first(v < minimum)
        raise ctx.fail(column, i, f"{v[i].item()} < {minimum} (a position counts from 0)")
    return v


def _mask(ctx: _Context, x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind == "O":  # Python bools / ints (JSON), None or NA: an error below
        x = np.asarray(x.tolist())
    if x.dtype.kind == "b":
        return x
    v = _numbers(ctx, "mask", x, "booleans or 0/1")
    bad = (v != 0) & (v != 1)
    if bad.any():
        i = _first(bad)
        raise ctx.fail("mask", i, f"{v[i].item()!r} is not a boolean or 0/1")
    return v != 0


def _logits(ctx: _Context, column: str, x: Any, n: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ctx.whole(column, f"shape {x.shape}; expected (n_tokens, V), a 2-D array")
    if len(x) != n:
        raise ctx.whole(column, f"{len(x)} rows, the token columns have {n} (length mismatch)")
    if x.dtype.kind != "f":
        raise ctx.whole(column, f"dtype {x.dtype}; expected floating-point logits")
    bad = np.isnan(x) | (x == np.inf)
    if bad.any():
        i = _first(bad)
        j = int(np.flatnonzero(bad[i])[0])
        raise ctx.fail(
            column, i, f"entry {j} is {float(x[i, j])!r} (logits must be finite or -inf)"
        )
    return x


def validate_block(
    columns: Mapping[str, Any],
    *,
    start: int = 0,
    where: str = "<logs>",
    lines: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Check and convert the schema columns of rows ``start, ...`` (a mapping name -> array).

    Returns the arrays as TokenChunk holds them (unknown names are dropped). ``lines``: the
    1-based line of each row (JSONL), for the messages. Raises LogError on the first problem.

    >>> out = validate_block({"sequence": [1.0, 2.0], "logprob": np.float32([-1, -2]),
    ...                       "ref_logprob": [-1, -np.inf], "mask": [1, 0], "reward": [0, 1]})
    >>> {name: values.dtype.name for name, values in out.items()}
    {'mask': 'bool', 'sequence': 'int64', 'logprob': 'float64', 'ref_logprob': 'float64'}
    """
    names = check_names(columns, where, warn=False)
    ctx = _Context(where, start, lines, None)
    lengths = {}
    for name in names:
        shape = np.shape(columns[name])
        if name not in SIDE and len(shape) != 1:
            raise ctx.whole(name, f"shape {shape}; expected one row per token (a 1-D array: "
                            "flatten (batch, time) arrays and give sequence ids)")  # fmt: skip
        lengths[name] = shape[0] if shape else 0
    n = lengths["logprob"]
    for name in names:
        if name not in SIDE and lengths[name] != n:
            raise ctx.whole(name, f"{lengths[name]} rows, column 'logprob' has {n} "
                            "(length mismatch)")  # fmt: skip
    out: dict[str, np.ndarray] = {}
    if "mask" in names:
        out["mask"] = ctx.mask = _mask(ctx, columns["mask"])
    for name in names:
        if name in LOGPROB_COLUMNS:
            out[name] = _logprob(ctx, name, columns[name])
        elif name in ("sequence", "position"):
            out[name] = _integers(ctx, name, columns[name], 0 if name == "position" else None)
        elif name in SIDE:
            out[name] = _logits(ctx, name, columns[name], n)
    return out

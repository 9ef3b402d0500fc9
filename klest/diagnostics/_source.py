"""The shape every log source has for ``iter_chunks``: names, a row count, blocks of rows.

A :class:`Source` knows where it is (the file name for messages), the schema columns it holds
(``names``), its row count (None until read for JSONL) and yields ``(start, columns, lines)``
blocks of exactly ``chunk_rows`` rows (the last: the rest), ``columns`` raw arrays that
:func:`klest.diagnostics.schema.validate_block` checks. :class:`Columnar` serves any source
whose columns are arrays with known lengths (dict, DataFrame, ``.npz``, ``.pt``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from klest.diagnostics.schema import SIDE, LogError

__all__ = ["ArrayRows", "Columnar", "Source", "one_line", "series_values", "to_numpy"]


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message as one short line (for a file that cannot be read)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def to_numpy(x: Any) -> np.ndarray:
    """An array, a list or a torch tensor (never importing torch) as a numpy array.

    bfloat16 tensors (no numpy dtype) become float32, exactly.
    """
    if hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor
        x = x.detach()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def series_values(series: Any, where: str, name: str) -> np.ndarray:
    """A pandas Series as a numpy array; extension dtypes (Int64, boolean, Float64) as their
    numpy dtype, and a missing value (NA) among them is a LogError naming the row."""
    if isinstance(series.dtype, np.dtype):
        return series.to_numpy()
    missing = np.asarray(series.isna())
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise LogError(f"{where}: column {name!r}, row {row}: missing value (NA)")
    numpy_dtype = getattr(series.dtype, "numpy_dtype", None)
    return series.to_numpy(dtype=numpy_dtype) if numpy_dtype else series.to_numpy()


class ArrayRows:
    """Rows of an in-memory (or memory-mapped) array, list or tensor, sliced on demand."""

    def __init__(self, values: Any, *, stack: bool = False) -> None:
        if isinstance(values, list | tuple):
            try:
                values = np.asarray(values)
            except ValueError:  # ragged
                values = np.asarray(values, dtype=object)
        self.values, self.stack = values, stack
        self.shape = tuple(int(s) for s in getattr(values, "shape", np.shape(values)))

    def take(self, a: int, b: int) -> np.ndarray:
        part = self.values[a:b]
        if self.stack:  # an object column of 1-D arrays (a DataFrame's logits)
            try:
                return np.stack([np.asarray(v) for v in part])
            except ValueError:
                return np.asarray(part)  # the validator says what is wrong
        return to_numpy(part)


class Source:
    """What ``iter_chunks`` reads: ``where``, ``names``, ``n_rows`` (None: unknown) and blocks."""

    where: str
    names: tuple[str, ...]
    n_rows: int | None
    has_side: bool = False  # holds logits / ref_logits (read or not)

    def blocks(self, chunk_rows: int) -> Iterator[tuple[int, dict[str, Any], np.ndarray | None]]:
        raise NotImplementedError


class Columnar(Source):
    """A source of columns with known shapes; lengths are checked when it is made."""

    def __init__(self, where: str, readers: Mapping[str, Any], *, has_side: bool = False) -> None:
        self.where, self.readers, self.has_side = where, dict(readers), has_side
        self.names = tuple(self.readers)
        shapes = {name: r.shape for name, r in self.readers.items()}
        for name, shape in shapes.items():
            if len(shape) == 0:
                raise LogError(f"{where}: column {name!r}: a scalar; expected one row per token")
            if name not in SIDE and len(shape) != 1:
                raise LogError(f"{where}: column {name!r}: shape {shape}; expected one row per "
                               "token (a 1-D array: flatten (batch, time) arrays and give "
                               "sequence ids)")  # fmt: skip
        lengths = {name: shape[0] for name, shape in shapes.items()}
        base = "logprob" if "logprob" in lengths else next(iter(lengths), None)
        self.n_rows = lengths[base] if base else 0
        for name, n in lengths.items():
            if n != self.n_rows:
                what = "rows of logits" if name in SIDE else "rows"
                raise LogError(f"{where}: column {name!r} has {n} {what}, column {base!r} has "
                               f"{self.n_rows} (length mismatch)")  # fmt: skip

    def take(self, a: int, b: int) -> dict[str, Any]:
        return {name: r.take(a, b) for name, r in self.readers.items()}

    def blocks(self, chunk_rows: int) -> Iterator[tuple[int, dict[str, Any], np.ndarray | None]]:
        for a in range(0, self.n_rows or 0, chunk_rows):
            yield a, self.take(a, min(a + chunk_rows, self.n_rows or 0)), None

"""Read a token log (the schema of :mod:`klest.diagnostics.schema`) in chunks of validated rows.

``iter_chunks(source, chunk_rows=...)`` yields :class:`~klest.diagnostics.schema.TokenChunk`
objects of exactly ``chunk_rows`` rows (the last one: the rest), whatever the format, so that
anything computed chunk by chunk is the same for every format. Sources:

- ``.parquet`` / ``.pq`` (pyarrow, the optional extra ``klest[parquet]``): streamed with
  ``ParquetFile.iter_batches``, only the schema's columns; memory is a few chunks plus one row
  group, whatever the file's size (write big logs in row groups: ``write_logs`` does);
- ``.npz`` (``numpy.savez``): each member is streamed from the archive (stored or deflated),
  never loaded whole;
- ``.pt`` / ``.pth``: a dict of tensors (``torch.save``), loaded with ``torch.load(...,
  weights_only=True, mmap=True)`` (torch is imported only for this suffix);
- ``.jsonl`` / ``.ndjson``: one JSON object per line, parsed a chunk at a time (``-Infinity``
  for -inf, as Python's json writes it); blank lines are skipped;
- a pandas DataFrame, or a dict of arrays (numpy arrays, torch tensors, lists).

Errors (:class:`~klest.diagnostics.schema.LogError`) are one line naming the file, the column
and the absolute row; problems visible before reading (a missing column, a length mismatch, a
wrong column type in Parquet, an empty or unreadable file) are raised by ``iter_chunks`` itself,
the others when the chunk holding them is read.

>>> import numpy as np
>>> from klest.diagnostics import iter_chunks
>>> log = {"sequence": [0, 0, 1], "logprob": [-0.1, -2.0, -0.5], "ref_logprob": [-0.2, -1.5, -0.5]}
>>> [(c.start, len(c)) for c in iter_chunks(log, chunk_rows=2)]
[(0, 2), (2, 1)]
>>> next(iter_chunks(log)).log_ratio
array([-0.1,  0.5,  0. ])
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from klest.diagnostics import _parquet
from klest.diagnostics._source import ArrayRows, Columnar, Source, one_line, series_values
from klest.diagnostics.schema import (
    COLUMNS,
    SIDE,
    LogError,
    TokenChunk,
    check_names,
    validate_block,
)
from klest.errors import check_integer

__all__ = ["FORMATS", "format_of", "iter_chunks"]

# suffix -> format name
FORMATS = {".parquet": "parquet", ".pq": "parquet", ".npz": "npz", ".pt": "pt", ".pth": "pt",
           ".jsonl": "jsonl", ".ndjson": "jsonl"}  # fmt: skip


def format_of(path: str | os.PathLike[str]) -> str:
    """The format of a log file by its suffix: "parquet", "npz", "pt" or "jsonl".

    >>> format_of("runs/step_100.PARQUET"), format_of("logs.ndjson")
    ('parquet', 'jsonl')
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise LogError(f"{os.fspath(path)}: unknown log format {suffix or '(no suffix)'!r}; "
                       f"expected one of {', '.join(FORMATS)}")  # fmt: skip
    return FORMATS[suffix]


def iter_chunks(
    source: Any,
    *,
    chunk_rows: int = 1_000_000,
    logits: bool | Mapping[str, Any] | str | os.PathLike[str] | None = None,
) -> Iterator[TokenChunk]:
    """The rows of a token log, validated, ``chunk_rows`` at a time (the last chunk: the rest).

    ``source``: a path (``.parquet``, ``.npz``, ``.pt``, ``.jsonl``), a pandas DataFrame or a
    dict of arrays. ``logits``: None reads the side arrays ``logits`` / ``ref_logits`` that the
    source holds; False skips them (faster, less memory); True requires them; a mapping or a
    ``.npz`` / ``.pt`` path holding ``"logits"`` and/or ``"ref_logits"`` supplies them from
    there (a sibling file: row i = token row i, the row count must match).

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"sequence": [3, 3], "logprob": [-0.1, -0.2],
    ...                       "ref_logprob": [-0.1, float("nan")]})
    >>> list(iter_chunks(frame))
    Traceback (most recent call last):
        ...
    klest.diagnostics.schema.LogError: <DataFrame>: column 'ref_logprob', row 1: NaN ...
    """
    chunk_rows = check_integer("chunk_rows", chunk_rows, minimum=1)
    external = not (logits is None or isinstance(logits, bool))
    if external and not isinstance(logits, Mapping | str | os.PathLike):
        raise TypeError(f"logits must be None, a bool, a mapping or a path, got "
                        f"{type(logits).__name__}")  # fmt: skip
    src = open_source(source, side=logits is not False and not external)
    if src.n_rows == 0:
        raise LogError(f"{src.where}: no rows (an empty log)")
    side: Columnar | None = None
    if external:
        if src.has_side:
            raise LogError(f"{src.where}: holds its own logits; do not pass logits= as well")
        side = _open_side(logits)
        if src.n_rows is not None and side.n_rows != src.n_rows:
            raise LogError(f"{side.where}: {side.n_rows} rows of logits, {src.where} has "
                           f"{src.n_rows} tokens (length mismatch)")  # fmt: skip
    elif logits is True and not src.has_side:
        raise LogError(f"{src.where}: no 'logits' or 'ref_logits' (logits=True requires them)")
    return _chunks(src, side, chunk_rows)


def _chunks(src: Source, side: Columnar | None, chunk_rows: int) -> Iterator[TokenChunk]:
    end = 0
    for start, columns, lines in src.blocks(chunk_rows):
        end = start + len(columns["logprob"])
        if side is not None:
            if side.n_rows < end:
                raise LogError(f"{side.where}: {side.n_rows} rows of logits, {src.where} has "
                               f"more tokens (length mismatch)")  # fmt: skip
            columns.update(side.take(start, end))
        values = validate_block(columns, start=start, where=src.where, lines=lines)
        yield TokenChunk(**values, start=start)
    if src.n_rows is None and end == 0:
        raise LogError(f"{src.where}: no rows (an empty log)")
    if side is not None and side.n_rows != end:
        raise LogError(f"{side.where}: {side.n_rows} rows of logits, {src.where} has {end} "
                       "tokens (length mismatch)")  # fmt: skip


def open_source(source: Any, *, side: bool = True) -> Source:
    """The source behind ``iter_chunks``: opened, its names and shapes checked (nothing read).

    ``side=False`` leaves out the logits side arrays. ``.n_rows`` is None for JSONL (known
    only once read); ``.names`` are the schema columns that will be read.

    >>> src = open_source({"sequence": [0], "logprob": [-1.0], "ref_logprob": [-1.0],
    ...                    "rollout_logprob": [-0.9], "reward": [1.0]})
    >>> src.names, src.n_rows
    (('sequence', 'logprob', 'ref_logprob', 'rollout_logprob'), 1)
    """
    keep = COLUMNS + SIDE if side else COLUMNS
    if isinstance(source, pd.DataFrame):
        return _frame(source, keep)
    if isinstance(source, Mapping):
        where = "<dict>"
        names = check_names(source, where)
        readers = {n: ArrayRows(source[n]) for n in names if n in keep}
        return Columnar(where, readers, has_side=bool(set(names) & set(SIDE)))
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        kind = format_of(path)
        if not os.path.isfile(path):
            raise LogError(f"{path}: no such file")
        if kind == "parquet":
            return _parquet.ParquetSource(path, keep)
        if kind == "jsonl":
            return JsonlSource(path, keep)
        members = npz_members(path) if kind == "npz" else pt_members(path)
        names = check_names(members, path)
        readers = {n: members[n] for n in names if n in keep}
        return Columnar(path, readers, has_side=bool(set(names) & set(SIDE)))
    raise TypeError(f"source must be a path, a pandas DataFrame or a dict of arrays, got "
                    f"{type(source).__name__}")  # fmt: skip


def _open_side(logits: Any) -> Columnar:
    if isinstance(logits, Mapping):
        where, members = "<logits>", {k: ArrayRows(v) for k, v in logits.items() if k in SIDE}
    else:
        where = os.fspath(logits)
        kind = format_of(where)
        if kind not in ("npz", "pt"):
            raise LogError(f"{where}: logits= takes a .npz or .pt file (or a mapping)")
        if not os.path.isfile(where):
            raise LogError(f"{where}: no such file")
        members = npz_members(where) if kind == "npz" else pt_members(where)
        members = {k: v for k, v in members.items() if k in SIDE}
    if not members:
        raise LogError(f"{where}: no 'logits' or 'ref_logits' array")
    return Columnar(where, members)


def _frame(frame: pd.DataFrame, keep: tuple[str, ...]) -> Columnar:
    where = "<DataFrame>"
    names = check_names([str(c) for c in frame.columns], where)
    if frame.columns.duplicated().any():
        dup = frame.columns[frame.columns.duplicated()][0]
        raise LogError(f"{where}: column {dup!r} appears twice")
    readers = {}
    for name in names:
        if name not in keep:
            continue
        values = series_values(frame[name], where, name)
        readers[name] = ArrayRows(values, stack=name in SIDE and values.dtype.kind == "O")
    return Columnar(where, readers, has_side=bool(set(names) & set(SIDE)))


# ---- .npz: each member streamed from the zip archive -----------------------------------------


class NpyRows:
    """Rows of one ``.npy`` member of an archive, read in order (stored or deflated)."""

    def __init__(self, path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self.path, self.archive, self.info = path, archive, info
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if dtype.hasobject:
            raise LogError(f"{path}: member {info.filename!r} holds Python objects (pickled); "
                           "save numeric arrays")  # fmt: skip
        self.shape, self.dtype = tuple(shape), dtype
        self.fortran = fortran and len(shape) > 1
        self.row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        self._file: Any = None
        self._next = 0
        self._whole: np.ndarray | None = None

    def take(self, a: int, b: int) -> np.ndarray:
        if self.fortran:  # rows are not contiguous: read the member once
            if self._whole is None:
                with self.archive.open(self.info) as f:
                    f.read(self.offset)
                    data = f.read()
                self._whole = np.frombuffer(data, self.dtype).reshape(self.shape, order="F")
            return self._whole[a:b]
        if self._file is None or a != self._next:
            if self._file is not None:
                self._file.close()
            self._file = self.archive.open(self.info)
            self._file.read(self.offset + a * self.row_bytes)
        nbytes = (b - a) * self.row_bytes
        data = self._file.read(nbytes)
        if len(data) != nbytes:
            raise LogError(f"{self.path}: member {self.info.filename!r} is truncated at row "
                           f"{a + len(data) // max(self.row_bytes, 1)}")  # fmt: skip
        self._next = b
        return np.frombuffer(data, self.dtype).reshape((b - a, *self.shape[1:]))


def npz_members(path: str) -> dict[str, NpyRows]:
    """name -> rows of each array of an ``.npz`` file (headers read, no data)."""
    try:
        archive = zipfile.ZipFile(path)
        members = {}
        for info in archive.infolist():
            if info.filename.endswith(".npy"):
                members[info.filename.removesuffix(".npy")] = NpyRows(path, archive, info)
    except LogError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise LogError(f"{path}: cannot read as .npz: {one_line(exc)}") from None
    return members


# ---- .pt: a dict of tensors ----------------------------------------------------------------


def pt_members(path: str) -> dict[str, ArrayRows]:
    """name -> rows of each tensor of a ``torch.save``-d dict (memory-mapped where possible)."""
    # deferred: torch is optional and heavy; only a .pt file needs it
    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not the zip format (mmap needs it): load it whole
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file fails in many ways (pickle, zip, EOF, ...)
        raise LogError(f"{path}: cannot read as a torch file: {one_line(exc)}") from None
    if not isinstance(obj, Mapping):
        raise LogError(f"{path}: holds a {type(obj).__name__}; expected a dict of tensors")
    return {str(k): ArrayRows(v) for k, v in obj.items()}


# ---- .jsonl --------------------------------------------------------------------------------


class JsonlSource(Source):
    """One JSON object per line; the first line's schema keys are the columns of every line."""

    def __init__(self, path: str, keep: tuple[str, ...]) -> None:
        self.where, self.n_rows = path, None
        first = None
        for number, record in self._records():
            first = (number, record)
            break
        if first is None:
            raise LogError(f"{path}: no rows (an empty log)")
        names = check_names(first[1], f"{path}: line {first[0]}")
        self.names = tuple(n for n in names if n in keep)
        self.has_side = bool(set(names) & set(SIDE))
        self._keep = set(self.names).union(keep)

    def _records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            with open(self.where, encoding="utf-8-sig") as f:  # (a BOM is skipped)
                for number, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise LogError(f"{self.where}: line {number}: not valid JSON "
                                       f"({exc.msg} at column {exc.colno})") from None  # fmt: skip
                    if not isinstance(record, dict):
                        raise LogError(f"{self.where}: line {number}: a JSON "
                                       f"{type(record).__name__}, expected an object")  # fmt: skip
                    yield number, record
        except UnicodeDecodeError as exc:
            raise LogError(f"{self.where}: not UTF-8 text ({one_line(exc)})") from None
        except OSError as exc:
            raise LogError(f"{self.where}: cannot read: {one_line(exc)}") from None

    def blocks(self, chunk_rows: int) -> Iterator[tuple[int, dict[str, Any], np.ndarray | None]]:
        names, start, wanted = self.names, 0, self._keep
        values: list[list[Any]] = [[] for _ in names]
        lines: list[int] = []
        for number, record in self._records():
            if len(wanted.intersection(record)) != len(names):
                missing = [n for n in names if n not in record]
                if missing:
                    raise LogError(f"{self.where}: line {number}: no {missing[0]!r} (the "
                                   "first line has it)")  # fmt: skip
                extra = sorted(wanted.intersection(record).difference(names))
                raise LogError(f"{self.where}: line {number}: {extra[0]!r} is not on the "
                               "first line (every line needs the same keys)")  # fmt: skip
            for column, name in zip(values, names, strict=True):
                column.append(record[name])
            lines.append(number)
            if len(lines) == chunk_rows:
                yield start, self._arrays(names, values, lines), np.asarray(lines)
                start += chunk_rows
                values, lines = [[] for _ in names], []
        if lines:
            yield start, self._arrays(names, values, lines), np.asarray(lines)

    def _arrays(self, names: tuple[str, ...], values: list[list[Any]], lines: list[int]) -> dict:
        out: dict[str, Any] = {}
        for name, column in zip(names, values, strict=True):
            if name in SIDE:
                width = len(column[0]) if isinstance(column[0], list) else -1
                for i, entry in enumerate(column):
                    if not isinstance(entry, list) or len(entry) != width:
                        raise LogError(f"{self.where}: line {lines[i]}, column {name!r}: "
                                       f"expected a list of {max(width, 0)} numbers (as on "
                                       f"line {lines[0]})")  # fmt: skip
                try:
                    out[name] = np.asarray(column, dtype=np.float64)
                except (TypeError, ValueError, OverflowError):  # null, strings: say where
                    row = next(i for i, e in enumerate(column)
                               if not set(map(type, e)) <= {int, float})  # fmt: skip
                    raise LogError(f"{self.where}: line {lines[row]}, column {name!r}: not a "
                                   "list of numbers") from None  # fmt: skip
                continue
            # JSON numbers become int / float; anything else (null, strings, bools where
            # numbers belong) goes to the validator as objects, which names the line
            allowed = {bool, int, float} if name == "mask" else {int, float}
            array = None
            if set(map(type, column)) <= allowed:
                try:
                    array = np.asarray(column)
                except OverflowError:  # an integer beyond int64
                    array = None
            out[name] = array if array is not None else np.asarray(column, dtype=object)
        return out

"""Parquet logs with pyarrow (the optional extra ``klest[parquet]``): read by batches, write by
row groups. pyarrow is imported only when a Parquet file is read or written.

Reading streams ``ParquetFile.iter_batches(batch_size=chunk_rows, columns=<the schema's>)``:
memory holds the current row group's pages and one chunk, whatever the file's size. Column
types are checked from the file's schema before any row is read; nulls are errors naming the
row. Logits side arrays are ``fixed_size_list<float>[V]`` columns (a ``list<float>`` column
with V entries on every row is read too).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from klest.diagnostics._source import Source, one_line
from klest.diagnostics.schema import LOGPROB_COLUMNS, SIDE, LogError, check_names

__all__ = ["ParquetSource", "write_parquet"]

BUFFER_BYTES = 1 << 20
# rows per Arrow batch: chunks are filled from batches this small, whatever chunk_rows is
PIECE_ROWS = 1 << 16


def _pyarrow() -> tuple[Any, Any]:
    try:
        # deferred: pyarrow is an optional dependency, needed only for Parquet files
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - the dev and parquet extras install it
        raise ImportError(
            "reading or writing Parquet logs needs pyarrow: pip install 'klest[parquet]'"
        ) from None
    return pa, pq


def _type_problem(pa: Any, name: str, t: Any) -> str | None:
    """Why an Arrow type cannot hold the column ``name`` (None: it can)."""
    types = pa.types
    if name in SIDE:
        if (types.is_fixed_size_list(t) or types.is_list(t) or types.is_large_list(t)) and (
            types.is_floating(t.value_type)
        ):
            return None
        return "expected fixed_size_list<float>[V] (one list of V logits per row)"
    if types.is_boolean(t):
        return None if name == "mask" else "booleans; expected numbers"
    if types.is_integer(t) or types.is_floating(t):
        return None
    if name in LOGPROB_COLUMNS:
        return "expected floating-point log-probabilities"
    return "expected integers" if name != "mask" else "expected booleans or 0/1"


class ParquetSource(Source):
    def __init__(self, path: str, keep: tuple[str, ...]) -> None:
        pa, pq = _pyarrow()
        self.where, self._pa = path, pa
        try:
            # pre_buffer=False: newer pyarrow (26 here; not 15) pre-buffers by default and keeps
            # what it read (memory grew with the file); buffer_size: column chunks in pieces
            self._file = pq.ParquetFile(path, pre_buffer=False, buffer_size=BUFFER_BYTES)
            schema = self._file.schema_arrow
        except Exception as exc:  # ArrowInvalid, OSError, ...: not a readable Parquet file
            raise LogError(f"{path}: cannot read as Parquet: {one_line(exc)}") from None
        names = check_names(schema.names, path)
        self.names = tuple(n for n in names if n in keep)
        self.has_side = bool(set(names) & set(SIDE))
        for name in self.names:
            t = schema.field(name).type
            if problem := _type_problem(pa, name, t):
                raise LogError(f"{path}: column {name!r} has type {t}: {problem}")
        self.n_rows = self._file.metadata.num_rows
        self.row_groups = self._file.metadata.num_row_groups

    def _batches(self, rows: int) -> Iterator[Any]:
        batches = self._file.iter_batches(batch_size=rows, columns=list(self.names))
        start = 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as exc:  # a corrupt page or row group
                raise LogError(f"{self.where}: cannot read the rows from {start} on: "
                               f"{one_line(exc)}") from None  # fmt: skip
            start += batch.num_rows
            yield batch

    def blocks(self, chunk_rows: int) -> Iterator[tuple[int, dict[str, Any], np.ndarray | None]]:
        """Chunks of ``chunk_rows`` rows, filled from batches of at most PIECE_ROWS rows.

        Each chunk is a set of numpy arrays of its own (no view into Arrow's buffers), so
        memory is the chunk being filled, one small batch and whatever the caller still holds.
        """
        start, out, filled, rows = 0, None, 0, 0
        for batch in self._batches(min(chunk_rows, PIECE_ROWS)):
            offset = 0
            while offset < batch.num_rows:
                if out is None:
                    out, filled, rows = {}, 0, min(chunk_rows, self.n_rows - start)
                take = min(rows - filled, batch.num_rows - offset)
                part = batch.slice(offset, take) if take < batch.num_rows else batch
                for i, name in enumerate(self.names):
                    values = self._column(name, part.column(i), start + filled)
                    if take == rows:  # the whole chunk in one batch (small chunks)
                        out[name] = values
                        continue
                    if name not in out:
                        out[name] = np.empty((rows, *values.shape[1:]), values.dtype)
                    elif values.shape[1:] != out[name].shape[1:]:
                        raise LogError(f"{self.where}: column {name!r}, row {start + filled}: "
                                       f"{values.shape[1]} logits, row {start} has "
                                       f"{out[name].shape[1]}")  # fmt: skip
                    out[name][filled : filled + take] = values
                filled, offset = filled + take, offset + take
                if filled == rows:
                    yield start, out, None
                    start, out = start + rows, None
        if out is not None or start != self.n_rows:
            raise LogError(f"{self.where}: {start} rows read, the metadata says {self.n_rows}")
        self._file.close()

    def _column(self, name: str, array: Any, start: int) -> np.ndarray:
        if array.null_count:
            row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
            raise LogError(
                f"{self.where}: column {name!r}, row {start + row}: missing value (null)"
            )
        if name not in SIDE:
            return array.to_numpy(zero_copy_only=False)
        n = len(array)
        if self._pa.types.is_fixed_size_list(array.type):
            width = array.type.list_size
        else:  # a variable list: every row must have the same length
            offsets = np.asarray(array.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
            lengths = np.diff(offsets)
            width = int(lengths[0]) if n else 0
            if (lengths != width).any():
                row = int(np.flatnonzero(lengths != width)[0])
                raise LogError(f"{self.where}: column {name!r}, row {start + row}: "
                               f"{lengths[row]} logits, row {start} has {width}")  # fmt: skip
        values = array.flatten()
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0]) // width
            raise LogError(f"{self.where}: column {name!r}, row {start + row}: a null logit")
        return values.to_numpy(zero_copy_only=False).reshape(n, width)


def write_parquet(
    path: str, parts: Iterator[Mapping[str, np.ndarray]], row_group_rows: int
) -> None:
    """Write the parts (dicts of 1-D columns and 2-D side arrays) as one file, row groups of at
    most ``row_group_rows`` rows (each part starts a new row group)."""
    pa, pq = _pyarrow()
    writer = None
    try:
        for k, part in enumerate(parts):
            arrays = {}
            for name, values in part.items():
                if values.ndim == 2:
                    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
                    arrays[name] = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
                else:
                    arrays[name] = pa.array(values)
            table = pa.table(arrays)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            elif not table.schema.equals(writer.schema):
                raise ValueError(f"write_logs({path}): part {k} has the columns or types "
                                 f"{table.schema}, unlike part 0")  # fmt: skip
            writer.write_table(table, row_group_size=row_group_rows)
    finally:
        if writer is not None:
            writer.close()

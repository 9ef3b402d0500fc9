"""``write_logs``: a token log (the schema of :mod:`klest.diagnostics.schema`) to a file.

Any of the four formats, by the path's suffix. The data is a pandas DataFrame, a dict of
arrays (1-D columns; 2-D ``logits`` / ``ref_logits`` side arrays), or an iterable of those
(parts, written one after the other: a log bigger than memory can be written part by part to
Parquet or JSONL; ``.npz`` and ``.pt`` join the parts in memory). Columns are written with
their own dtypes (float32 stays float32), extra columns too (readers ignore them). The file
appears only when complete (written under a temporary name, then renamed).

>>> import os, tempfile
>>> from pathlib import Path
>>> from klest.diagnostics import iter_chunks, write_logs
>>> path = os.path.join(tempfile.mkdtemp(), "run.jsonl")
>>> _ = write_logs(path, {"sequence": [0, 0], "logprob": [-0.5, -1.0],
...                       "ref_logprob": [-0.25, float("-inf")]})
>>> Path(path).read_text().splitlines()[1]
'{"sequence": 0, "logprob": -1.0, "ref_logprob": -Infinity}'
>>> next(iter_chunks(path)).log_ratio
array([0.25, -inf])
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from klest.diagnostics import _parquet
from klest.diagnostics._source import series_values, to_numpy
from klest.diagnostics.readers import format_of
from klest.diagnostics.schema import SIDE, check_names, validate_block
from klest.errors import check_integer

__all__ = ["write_logs"]


def _columns(part: Any, k: int, where: str) -> dict[str, np.ndarray]:
    if isinstance(part, pd.DataFrame):
        out = {}
        for name in part.columns:
            values = series_values(part[name], where, str(name))
            if str(name) in SIDE and values.dtype.kind == "O":
                values = np.stack([np.asarray(v) for v in values])
            out[str(name)] = values
        return out
    if isinstance(part, Mapping):
        return {str(name): to_numpy(values) for name, values in part.items()}
    raise TypeError(f"write_logs: part {k} is a {type(part).__name__}; expected a pandas "
                    "DataFrame or a dict of arrays")  # fmt: skip


def _parts(data: Any, where: str, validate: bool) -> Iterator[dict[str, np.ndarray]]:
    single = isinstance(data, pd.DataFrame | Mapping)
    if not single and not isinstance(data, Iterable):
        raise TypeError(f"write_logs: data must be a DataFrame, a dict of arrays or an iterable "
                        f"of them, got {type(data).__name__}")  # fmt: skip
    start = 0
    for k, part in enumerate([data] if single else data):
        columns = _columns(part, k, where)
        if validate:
            check_names(columns, where, warn=k == 0)
            validate_block(columns, start=start, where=where)
        start += len(next(iter(columns.values()))) if columns else 0
        yield columns


def write_logs(
    path: str | os.PathLike[str],
    frame_or_dict: Any,
    *,
    row_group_rows: int = 1_000_000,
    validate: bool = True,
) -> Path:
    """Write a token log to ``path`` (``.parquet``, ``.npz``, ``.pt`` or ``.jsonl``); the path.

    ``row_group_rows``: the rows per Parquet row group (the readers' unit of memory; each part
    also starts a new one). ``validate=False`` writes the data unchecked (for tests of the
    readers' errors); otherwise it is checked as the readers check it (LogError).

    >>> import numpy as np, tempfile
    >>> log = {"sequence": [0], "logprob": [np.nan], "ref_logprob": [-1.0]}
    >>> write_logs(Path(tempfile.mkdtemp()) / "run.npz", log)
    Traceback (most recent call last):
        ...
    klest.diagnostics.schema.LogError: write_logs(.../run.npz): column 'logprob', row 0: NaN ...
    """
    path = Path(path)
    kind = format_of(path)
    row_group_rows = check_integer("row_group_rows", row_group_rows, minimum=1)
    where = f"write_logs({os.fspath(path)})"
    parts = _parts(frame_or_dict, where, validate)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if kind == "parquet":
            _parquet.write_parquet(os.fspath(tmp), parts, row_group_rows)
        elif kind == "jsonl":
            _write_jsonl(tmp, parts)
        else:
            arrays = _joined(list(parts))
            if kind == "npz":
                with open(tmp, "wb") as f:
                    np.savez(f, **arrays)
            else:
                _write_pt(tmp, arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {}
    names = list(parts[0])
    for k, part in enumerate(parts[1:], start=1):
        if list(part) != names:
            raise ValueError(f"write_logs: part {k} has the columns {list(part)}, part 0 had "
                             f"{names}")  # fmt: skip
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts]) for name in names}


def _write_pt(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # deferred: torch is optional and heavy; only a .pt file needs it
    import torch

    tensors = {}
    for name, values in arrays.items():
        values = np.ascontiguousarray(values)
        tensors[name] = torch.from_numpy(values if values.flags.writeable else values.copy())
    with open(path, "wb") as f:
        torch.save(tensors, f)


def _write_jsonl(path: Path, parts: Iterator[dict[str, np.ndarray]], block: int = 65_536) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for part in parts:
            names = list(part)
            n = len(part[names[0]]) if names else 0
            for a in range(0, n, block):
                values = [part[name][a : a + block].tolist() for name in names]
                f.writelines(
                    json.dumps(dict(zip(names, row, strict=True))) + "\n"
                    for row in zip(*values, strict=True)
                )

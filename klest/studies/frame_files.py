"""Result frames as files: atomic writes, and CSV text that reads back exactly (float64 by
``repr``, integer columns beyond int64 losslessly).

Imports nothing of klest.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from pathlib import Path

import pandas as pd

__all__ = [
    "KEY_COLUMN",
    "RESULTS",
    "TEXT_COLUMNS",
    "frame_from_csv",
    "frame_to_csv",
    "read_results",
    "write_atomic",
]

RESULTS = "results.csv"
KEY_COLUMN = "case_key"
#: columns that hold text even when every value looks like a number (a label "1")
TEXT_COLUMNS = frozenset(
    {"experiment", "case", "group", "sweep_param", "estimator", "target", "exact_method", "note"}
    | {"error_bar", "error_bar_std"}
    | {"q.family", "p.family", KEY_COLUMN}
)
_INTEGER = re.compile(r"^-?\d+$")
_INT64 = (-(2**63), 2**63 - 1)


def write_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a part.

    The text goes to a temporary file in the same directory, is flushed to disk, then
    replaces ``path`` with ``os.replace`` (atomic on POSIX and Windows); on any failure the
    temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name opened exclusively ("x"), with the usual permissions (mkstemp's are 0600)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temp, "x", encoding="utf-8", newline="") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def frame_to_csv(frame: pd.DataFrame) -> str:
    """CSV text of a tidy frame; floats in shortest round-trip form, NaN as ``nan``."""
    return frame.to_csv(index=False, na_rep="nan", lineterminator="\n")


def frame_from_csv(text: str) -> pd.DataFrame:
    """Inverse of :func:`frame_to_csv` for klest's tidy frames, exact to the last bit.

    Text columns stay text; a column of whole numbers becomes int64, one of numbers float64
    (``nan``/``inf`` included); anything else (array parameters as JSON) stays text, with
    ``nan`` read as missing.

    >>> frame = pd.DataFrame({"case": ["1"], "n": [3], "mean": [0.1 + 0.2], "se": [float("nan")]})
    >>> back = frame_from_csv(frame_to_csv(frame))
    >>> back.equals(frame), back["n"].dtype, bool(back["mean"].iloc[0] == 0.1 + 0.2)
    (True, dtype('int64'), True)
    """
    raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    columns = {}
    for name in raw.columns:
        values = raw[name]
        if name in TEXT_COLUMNS:
            columns[name] = values
        elif len(values) and all(_INTEGER.match(v) for v in values):
            columns[name] = _integer_column(values)
        else:
            try:
                columns[name] = pd.Series([float(v) for v in values], dtype="float64")
            except ValueError:  # text, e.g. array parameters: "nan" marks a missing entry
                columns[name] = values.where(values != "nan", float("nan"))
    return pd.DataFrame(columns, index=pd.RangeIndex(len(raw)))


def _integer_column(values: pd.Series) -> pd.Series:
    """Whole numbers as pandas itself holds them: int64, else uint64, else Python ints
    (a seed may be any non-negative integer: SeedSequence entropy of 128 bits and more)."""
    numbers = [int(v) for v in values]
    low, high = min(numbers), max(numbers)
    if _INT64[0] <= low and high <= _INT64[1]:
        return pd.Series(numbers, dtype="int64", index=values.index)
    if low >= 0 and high < 2**64:
        return pd.Series(numbers, dtype="uint64", index=values.index)
    return pd.Series(numbers, dtype=object, index=values.index)


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a stored ``results.csv`` (or the directory holding it) back into the tidy frame."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    return frame_from_csv(path.read_text(encoding="utf-8"))

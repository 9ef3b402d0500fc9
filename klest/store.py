"""The results store: the file layer of ``klest run`` (with klest.cli, the only code that writes).

Layout of ``DIR/<name>/``::

    cases/<index>.csv   the tidy rows of one finished case, plus its key (written atomically)
    cases/<index>.json  how that case was computed: key, time, seconds, versions
    results.csv         every finished case's rows (tidy: one row per case x estimator)
    table.md            the table (klest.tables.experiment_table), as ``klest run`` prints it
    meta.json           the config as loaded and resolved, its hash, seed, n, block size,
                        overrides, versions, timestamps, and the status of every case

Each case file is written as soon as its case finishes (to a temporary file in the same
directory, then ``os.replace``), and results.csv, table.md and meta.json are rebuilt after
every case, so a killed run keeps every finished case and a partial table. A case file is
reused only when its key — a hash of everything its rows depend on (the case's label, q, p,
estimators and n, the seed, block size, experiment name and klest version) — matches the
current config; anything else is recomputed and overwritten. Floats are written with
Python's shortest round-trip repr and read back exactly, so a resumed run's results equal an
uninterrupted run's bit for bit.

>>> import tempfile, klest
>>> from klest.experiment import parse_config, run_experiment
>>> config = parse_config({"name": "tiny", "estimators": ["k3"], "n": 1000,
...     "cases": [{"q": {"family": "normal"}, "p": {"family": "normal", "loc": 0.5}}]})
>>> with tempfile.TemporaryDirectory() as out:
...     first = run_experiment(config, out_dir=out)
...     again = run_experiment(config, out_dir=out)   # reused from cases/0.csv
...     sorted(p.name for p in (Path(out) / "tiny").iterdir())
['cases', 'meta.json', 'results.csv', 'table.md']
>>> first.equals(again)
True
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from klest.tables import experiment_table

if TYPE_CHECKING:
    from klest.experiment import CaseConfig, ExperimentConfig

__all__ = ["ResultsStore", "frame_from_csv", "frame_to_csv", "read_results", "write_atomic"]

RESULTS, TABLE, META, CASES = "results.csv", "table.md", "meta.json", "cases"
KEY_COLUMN = "case_key"
#: columns that hold text even when every value looks like a number (a label "1")
TEXT_COLUMNS = frozenset(
    {"experiment", "case", "group", "sweep_param", "estimator", "target", "exact_method", "note"}
    | {"q.family", "p.family", KEY_COLUMN}
)
_INTEGER = re.compile(r"^-?\d+$")


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
            columns[name] = values.astype("int64")
        else:
            try:
                columns[name] = pd.Series([float(v) for v in values], dtype="float64")
            except ValueError:  # text, e.g. array parameters: "nan" marks a missing entry
                columns[name] = values.where(values != "nan", float("nan"))
    return pd.DataFrame(columns, index=pd.RangeIndex(len(raw)))


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a stored ``results.csv`` (or the directory holding it) back into the tidy frame."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    return frame_from_csv(path.read_text(encoding="utf-8"))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ResultsStore:
    """The stored results of one experiment in ``root/<config.name>/`` (see the module doc).

    ``overrides`` (e.g. ``{"n": ..., "seed": ...}`` from the command line) are recorded in
    meta.json; ``config`` already has them applied.
    """

    def __init__(
        self, root: str | Path, config: ExperimentConfig, overrides: dict[str, Any] | None = None
    ) -> None:
        self.config = config
        self.directory = Path(root) / config.name
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        self.started = _now()
        self.frames: dict[int, pd.DataFrame] = {}
        self.status: dict[int, dict[str, Any]] = {}
        self.directory.mkdir(parents=True, exist_ok=True)
        self._write_meta("running")

    def case_path(self, index: int) -> Path:
        """Where case ``index``'s rows are stored."""
        return self.directory / CASES / f"{index}.csv"

    def load_case(self, case: CaseConfig) -> pd.DataFrame | None:
        """The stored rows of ``case`` if they exist and their key matches, else None."""
        path = self.case_path(case.index)
        try:
            frame = frame_from_csv(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, pd.errors.ParserError):
            return None
        key = self.config.case_key(case)
        if KEY_COLUMN not in frame.columns or set(frame[KEY_COLUMN]) != {key}:
            return None
        frame = frame.drop(columns=KEY_COLUMN)
        info = self._read_case_info(case.index, key)
        self._record(case, frame, {**info, "status": "stored"})
        return frame

    def save_case(
        self, case: CaseConfig, frame: pd.DataFrame, metadata: dict[str, Any], elapsed: float
    ) -> None:
        """Store a finished case atomically, then rebuild results.csv, table.md and meta.json."""
        key = self.config.case_key(case)
        write_atomic(self.case_path(case.index), frame_to_csv(frame.assign(**{KEY_COLUMN: key})))
        info = {
            "key": key,
            "computed_at": _now(),
            "elapsed_s": round(float(elapsed), 3),
            "versions": metadata.get("versions", {}),
        }
        text = json.dumps(info, indent=2)
        write_atomic(self.case_path(case.index).with_suffix(".json"), text + "\n")
        self._record(case, frame, {**info, "status": "computed"})

    def finish(self) -> None:
        """Mark the run complete (after every case is stored or reused)."""
        self._write_outputs("complete")

    # ---- internals ----------------------------------------------------------------------

    def _read_case_info(self, index: int, key: str) -> dict[str, Any]:
        try:
            info = json.loads(self.case_path(index).with_suffix(".json").read_text("utf-8"))
        except (OSError, ValueError):
            return {"key": key}
        return info if isinstance(info, dict) and info.get("key") == key else {"key": key}

    def _record(self, case: CaseConfig, frame: pd.DataFrame, info: dict[str, Any]) -> None:
        self.frames[case.index] = frame
        self.status[case.index] = info
        self._write_outputs("running")

    def assembled(self) -> pd.DataFrame | None:
        """The rows of every finished case of the current config, in case order."""
        if not self.frames:
            return None
        return pd.concat([self.frames[i] for i in sorted(self.frames)], ignore_index=True)

    def _write_outputs(self, state: str) -> None:
        frame = self.assembled()
        output = self.config.output
        if frame is not None:
            if "csv" in output.formats:
                write_atomic(self.directory / RESULTS, frame_to_csv(frame))
            if "md" in output.formats:
                table = experiment_table(
                    frame, title=self.config.title, columns=output.table_columns,
                    digits=output.digits, layout=output.layout,
                )  # fmt: skip
                write_atomic(self.directory / TABLE, table + "\n")
        self._write_meta(state)

    def _write_meta(self, state: str) -> None:
        config = self.config
        cases = []
        for case in config.cases:
            info = self.status.get(case.index, {"status": "pending"})
            cases.append({"index": case.index, "label": case.label, **info})
        versions = next(
            (info["versions"] for info in self.status.values() if info.get("versions")), {}
        )
        finished = sum(1 for info in self.status.values() if info["status"] != "pending")
        meta = {
            "experiment": config.name,
            "title": config.title,
            "source": str(config.source) if config.source else None,
            "status": state,
            "cases_finished": finished,
            "cases_total": len(config.cases),
            "config_hash": config.config_hash(),
            "seed": config.seed,
            "n": config.n,
            "block_size": config.block_size,
            "overrides": self.overrides,
            "started_at": self.started,
            "updated_at": _now(),
            "versions": versions,
            "config": config.raw,
            "resolved": config.to_dict(),
            "cases": cases,
        }
        write_atomic(self.directory / META, json.dumps(meta, indent=2, default=str) + "\n")

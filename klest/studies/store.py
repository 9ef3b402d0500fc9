"""The results store: the file layer of ``klest run`` (with klest.cli, the only code that writes).

Layout of ``DIR/<name>/``::

    cases/<index>.csv   the tidy rows of one finished case, plus its key (written atomically)
    cases/<index>.json  how that case was computed: key, time, seconds, versions
    results.csv         every finished case's rows (tidy: one row per case x estimator)
    table.md            the table (klest.studies.table_text.experiment_table), as ``klest run``
                        prints it
    meta.json           the config as loaded and resolved, its hash, seed, n, block size,
                        overrides, versions (klest, the random stream, NumPy, ...),
                        timestamps, and the status of every case

Each case file is written as soon as its case finishes (to a temporary file in the same
directory, then ``os.replace``), and results.csv, table.md and meta.json are rebuilt after
every case, so a killed run keeps every finished case and a partial table. A stored case is
reused only when it passes three checks: its key — a hash of everything its rows depend on
(the case's label, q, p, estimators and n, the seed, block size, experiment name, klest
version, the columns' format, and the random stream's and NumPy's versions: "klest stream
v1", :mod:`klest.engine.plan`) — matches the current config and software; the SHA-256 of its
CSV text matches the one recorded in ``cases/<index>.json`` (a dropped row or a changed digit
fails it); and it holds exactly one row per estimator of the case. Anything else is
recomputed, with a :class:`StoreWarning` naming the case and the reason (a changed config:
what changed; another random stream or NumPy version: which), recorded in meta.json as
``recomputed_because``. Floats are written with Python's shortest round-trip repr and
integers of any size are read back exactly, so a resumed run's results equal an
uninterrupted run's bit for bit.

A run with ``n`` or ``seed`` overridden (``klest run --n 1000000``) is stored apart, in
``DIR/<name>-n1000000/`` (``-seed7``, ``-n1000000-seed7``), so that a quick look never
replaces the full-size results. meta.json's ``status`` is ``running`` while a run writes,
then ``complete``, ``incomplete`` (some case failed: its ``error`` is recorded) or
``interrupted`` (Ctrl-C, SIGTERM); it records the writer's ``pid`` and ``host``, so that a
``running`` left behind by a killed run is reported by the next run, and a directory that a
live run is writing is not written by a second one.

>>> import tempfile, klest
>>> from klest.studies.experiment import parse_config, run_experiment
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

import hashlib
import json
import os
import socket
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from klest.engine.results import software_versions
from klest.studies.frame_files import (
    KEY_COLUMN,
    RESULTS,
    frame_from_csv,
    frame_to_csv,
    read_results,
    write_atomic,
)
from klest.studies.table_text import experiment_table

__all__ = [
    "ResultsStore",
    "StoreBusyError",
    "StoreWarning",
    "StoredCase",
    "StoredExperiment",
    "frame_from_csv",
    "frame_to_csv",
    "read_results",
    "run_directory",
    "write_atomic",
]

TABLE, META, CASES = "table.md", "meta.json", "cases"
#: the parts of a case's identity that name the software its draws come from, not the config
STREAM_FIELDS = ("stream", "numpy")


class StoredCase(Protocol):
    """What the store reads of a case (as :class:`klest.studies.experiment.CaseConfig`)."""

    @property
    def index(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def estimators(self) -> tuple[str, ...]: ...


class StoredExperiment(Protocol):
    """What the store reads of a config (as :class:`klest.studies.experiment.ExperimentConfig`):
    its plain fields, ``output`` (``formats``, ``table_columns``, ``digits``, ``layout``) and
    the keys that say whether a stored case is still valid."""

    @property
    def name(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def n(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def cases(self) -> Sequence[Any]: ...
    @property
    def output(self) -> Any: ...
    @property
    def source(self) -> Path | None: ...
    @property
    def raw(self) -> dict[str, Any]: ...
    def to_dict(self) -> dict[str, Any]: ...
    def config_hash(self) -> str: ...
    def case_identity(self, case: Any) -> dict[str, Any]: ...
    def case_key(self, case: Any) -> str: ...


class StoreBusyError(RuntimeError):
    """The results directory is being written by another live klest run."""


class StoreWarning(UserWarning):
    """A stored result is not reused (damaged, edited, or for another config), or a previous
    run left the store in an unfinished state; the message names the case and the reason."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_directory(name: str, overrides: dict[str, Any] | None = None) -> str:
    """The directory name of a run: the experiment's name, plus its overrides.

    >>> run_directory("sweep"), run_directory("sweep", {"n": 10**6, "seed": 7})
    ('sweep', 'sweep-n1000000-seed7')
    """
    parts = [name]
    for key in ("n", "seed"):
        value = (overrides or {}).get(key)
        if value is not None:
            parts.append(f"{key}{value}")
    return "-".join(parts)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: obj}


def _changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two case identities, as ``key old -> new`` (a few of them)."""
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for key in [*b, *(k for k in a if k not in b)]:
        if a.get(key) != b.get(key):
            label = key.removeprefix("case.")
            diffs.append(
                f"{label} {_short(a.get(key, '(unset)'))} -> {_short(b.get(key, '(unset)'))}"
            )
    if not diffs:
        return "a different config"
    return ", ".join(diffs[:3]) + (f" and {len(diffs) - 3} more" if len(diffs) > 3 else "")


def _key_change(stored: Any, now: dict[str, Any]) -> str:
    """Why a stored case's key differs from the current one: older columns, another random
    stream or NumPy version (or none recorded), and/or what changed in the config."""
    if not isinstance(stored, dict) or "frame_format" not in stored:
        return "it was stored by an older klest, with older columns"
    if any(name in now and name not in stored for name in STREAM_FIELDS):
        return ("it was stored before klest recorded its random stream and NumPy version "
                f"(now {now.get('stream')}, NumPy {now.get('numpy')})")  # fmt: skip
    reasons = []
    if stored.get("stream") != now.get("stream"):
        reasons.append(f"it was drawn from another random stream ({stored.get('stream')} -> "
                       f"{now.get('stream')})")  # fmt: skip
    if stored.get("numpy") != now.get("numpy"):
        reasons.append(f"it was computed with NumPy {stored.get('numpy')}, this run has NumPy "
                       f"{now.get('numpy')} (some families draw through NumPy's Generator "
                       "methods)")  # fmt: skip
    old, new = ({k: v for k, v in d.items() if k not in STREAM_FIELDS} for d in (stored, now))
    if old != new or not reasons:
        reasons.append(f"the config changed since it was stored ({_changes(old, new)})")
    return "; ".join(reasons)


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _pid_alive(pid: Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return False
    return True


class ResultsStore:
    """The stored results of one experiment in ``root/<config.name>/`` (see the module doc).

    ``overrides`` (``{"n": ..., "seed": ...}``: values that replace the config file's, from
    the command line) are recorded in meta.json and name the directory
    (:func:`run_directory`); ``config`` already has them applied.
    """

    def __init__(
        self, root: str | Path, config: StoredExperiment, overrides: dict[str, Any] | None = None
    ) -> None:
        self.config = config
        self.overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        self.directory = Path(root) / run_directory(config.name, self.overrides)
        self.started = _now()
        self.frames: dict[int, pd.DataFrame] = {}
        self.status: dict[int, dict[str, Any]] = {}
        #: why a stored case was not reused (recorded in meta.json when it is recomputed)
        self._recompute_reasons: dict[int, str] = {}
        self.directory.mkdir(parents=True, exist_ok=True)
        self._check_previous_run()
        self._write_meta("running")

    def case_path(self, index: int) -> Path:
        """Where case ``index``'s rows are stored."""
        return self.directory / CASES / f"{index}.csv"

    def _warn(self, case: StoredCase, reason: str) -> None:
        warnings.warn(
            f"{self.directory}: case {case.index} {case.label!r}: {reason}",
            StoreWarning,
            stacklevel=3,
        )

    def load_case(self, case: StoredCase) -> pd.DataFrame | None:
        """The stored rows of ``case`` if they pass the store's checks, else None (with a
        :class:`StoreWarning` saying why, unless the case was never stored)."""
        path = self.case_path(case.index)
        if not path.exists():
            return None
        reason = self._stale_reason(case, path)
        if isinstance(reason, str):
            self._warn(case, f"{reason}: recomputed, the stored result replaced")
            self._recompute_reasons[case.index] = reason
            return None
        frame, info = reason
        self._record(case, frame, {**info, "status": "stored"})
        return frame

    def _stale_reason(
        self, case: StoredCase, path: Path
    ) -> str | tuple[pd.DataFrame, dict[str, Any]]:
        """Why the stored case cannot be reused, or (its rows, its record)."""
        key = self.config.case_key(case)
        try:
            text = path.read_text(encoding="utf-8")
            record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return f"{CASES}/{case.index}.json (its record) is missing"
        except (OSError, ValueError) as err:
            return f"the stored files are unreadable ({err})"
        if not isinstance(record, dict):
            return f"{CASES}/{case.index}.json is not a case record"
        if record.get("key") != key:
            return _key_change(record.get("depends_on"), self.config.case_identity(case))
        if record.get("sha256") != _sha256(text):
            return f"{CASES}/{case.index}.csv does not match its recorded hash (edited or damaged)"
        try:
            frame = frame_from_csv(text)
        except (ValueError, pd.errors.ParserError) as err:
            return f"{CASES}/{case.index}.csv cannot be parsed ({err})"
        if KEY_COLUMN not in frame.columns or set(frame[KEY_COLUMN]) != {key}:
            return f"{CASES}/{case.index}.csv holds another case's rows"
        estimators = list(frame["estimator"]) if "estimator" in frame.columns else []
        if estimators != list(case.estimators) or record.get("estimators") != estimators:
            return f"the stored rows are for estimators {estimators}, not {list(case.estimators)}"
        return frame.drop(columns=KEY_COLUMN), record

    def save_case(
        self, case: StoredCase, frame: pd.DataFrame, metadata: dict[str, Any], elapsed: float
    ) -> None:
        """Store a finished case atomically, then rebuild results.csv, table.md and meta.json."""
        key = self.config.case_key(case)
        text = frame_to_csv(frame.assign(**{KEY_COLUMN: key}))
        write_atomic(self.case_path(case.index), text)
        info = {
            "key": key,
            "sha256": _sha256(text),
            "estimators": [str(name) for name in frame["estimator"]],
            "rows": len(frame),
            "computed_at": _now(),
            "elapsed_s": round(float(elapsed), 3),
            "versions": metadata.get("versions", {}),
            "depends_on": self.config.case_identity(case),
        }
        write_atomic(
            self.case_path(case.index).with_suffix(".json"), json.dumps(info, indent=2) + "\n"
        )
        status = {**info, "status": "computed"}
        if case.index in self._recompute_reasons:
            status["recomputed_because"] = self._recompute_reasons[case.index]
        self._record(case, frame, status)

    def fail_case(self, case: StoredCase, error: str) -> None:
        """Record that ``case`` failed (``error``: one line); its old files stay untouched."""
        self.status[case.index] = {"status": "failed", "error": error}
        self._write_outputs("running")

    def finish(self) -> None:
        """Mark the run ended: ``complete``, or ``incomplete`` if some case failed."""
        failed = any(info.get("status") == "failed" for info in self.status.values())
        self._write_outputs("incomplete" if failed else "complete")

    def interrupt(self) -> None:
        """Mark the run ``interrupted`` (Ctrl-C, SIGTERM); finished cases stay stored."""
        self._write_meta("interrupted")

    # ---- internals ----------------------------------------------------------------------

    def _check_previous_run(self) -> None:
        """Report a ``running`` status left behind by a run that died; refuse to write beside
        a live one."""
        try:
            previous = json.loads((self.directory / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(previous, dict) or previous.get("status") != "running":
            return
        pid, host = previous.get("pid"), previous.get("host")
        when = previous.get("updated_at", "?")
        same_host = host in (None, socket.gethostname())
        if same_host and pid != os.getpid() and _pid_alive(pid):
            raise StoreBusyError(
                f"{self.directory} is being written by another klest run (pid {pid}, last "
                f"update {when}); wait for it to finish or use another output directory"
            )
        warnings.warn(
            f"{self.directory}: the previous run (pid {pid}, last update {when}) did not "
            "finish (killed?); its finished cases are checked and reused",
            StoreWarning,
            stacklevel=3,
        )

    def _record(self, case: StoredCase, frame: pd.DataFrame, info: dict[str, Any]) -> None:
        self.frames[case.index] = frame
        notes = {}
        if {"estimator", "note"} <= set(frame.columns):
            notes = {
                str(name): str(note)
                for name, note in zip(frame["estimator"], frame["note"], strict=True)
                if isinstance(note, str) and note and note != "nan"
            }
        self.status[case.index] = {**info, "notes": notes} if notes else info
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
            info = {k: v for k, v in info.items() if k != "depends_on"}
            cases.append({"index": case.index, "label": case.label, **info})
        finished = sum(
            1 for info in self.status.values() if info["status"] in ("computed", "stored")
        )
        meta = {
            "experiment": config.name,
            "title": config.title,
            "source": str(config.source) if config.source else None,
            "status": state,
            "cases_finished": finished,
            "cases_failed": sum(1 for i in self.status.values() if i["status"] == "failed"),
            "cases_total": len(config.cases),
            "config_hash": config.config_hash(),
            "seed": config.seed,
            "n": config.n,
            "block_size": config.block_size,
            "overrides": self.overrides,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started,
            "updated_at": _now(),
            "versions": software_versions(),  # this run's: reused cases share klest, stream, numpy
            "config": config.raw,
            "resolved": config.to_dict(),
            "cases": cases,
        }
        write_atomic(self.directory / META, json.dumps(meta, indent=2, default=str) + "\n")

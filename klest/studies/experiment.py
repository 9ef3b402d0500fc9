"""Experiments: a TOML config -> validated frozen dataclasses -> runs -> one tidy DataFrame.

A study is a TOML file in ``experiments/``. A complete example, every key shown::

    name = "gauss_shift"            # optional: defaults to the file's stem; names the output dir
    title = "Gaussian mean shift"   # optional: defaults to the name
    estimators = ["k1", "k2", "k3"] # registry names or aliases (`klest list`)
    n = 1_000_000                   # draws per case
    seed = 2020                     # optional, default 0
    block_size = 65536              # optional, default klest.engine.runner.DEFAULT_BLOCK_SIZE

    [[cases]]                       # a plain case
    label = "KL = 0.005"            # optional, default "case <k>"; labels must be unique
    q = { family = "normal", loc = 0.0, scale = 1.0 }
    p = { family = "normal", loc = 0.1, scale = 1.0 }

    [[cases]]                       # a sweep: one case per value of p.loc
    label = "mu = {value:g}"        # a template: {value}, {x}, {param}, {i} (position)
    group = "mean shift"            # optional, default the swept parameter ("p.loc")
    q = { family = "normal", loc = 0.0, scale = 1.0 }
    p = { family = "normal", scale = 1.0 }      # p.loc is left out: the sweep sets it
    sweep = { param = "p.loc", geomspace = [0.01, 3.0, 12] }
    n = 200_000                     # per-case override of n (also: estimators = [...])

    [[cases]]                       # a sweep over arrays records numbers as sweep_value
    label = "T = {x:g}"
    q = { family = "categorical", logits = [0.0, 1.0, 2.0] }
    p = { family = "categorical" }
    sweep = { param = "p.logits", values = [[0.0, 0.5, 1.0], [0.0, 2.0, 4.0]], x = [2.0, 0.5] }

    [output]                        # optional
    table_columns = ["bias/true", "stdev/true"]   # of mean, bias, stdev, bias/true, stdev/true
    formats = ["csv", "md"]         # which of results.csv and table.md `klest run` writes
    digits = 4                      # significant digits of exact values in the table
    layout = "cases"                # "cases": Schulman's one table per case; "long": one table

A sweep is ``sweep = { param = "q.<name>" | "p.<name>", <values> }`` with exactly one of
``values = [...]`` (numbers, or arrays for a vector parameter), ``linspace = [start, stop,
num]`` or ``geomspace = [start, stop, num]`` (numpy's meaning, both ends included). It expands,
in place, into one case per value; ``x`` (numbers, one per value) is what is recorded as
``sweep_value`` (default: the values themselves). The swept parameter must not also be set in
the q/p table. Cases are numbered 0, 1, ... in file order after expansion, and case i always
draws from ``SeedSequence(seed, spawn_key=(i, block))`` (hence no per-case ``seed``).

Errors raise :class:`ConfigError` naming the file and the key path, e.g.
``experiments/x.toml: cases[2].p.scale: must be reals in (0, inf), got -1.0``.

>>> config = parse_config({"name": "demo", "estimators": ["k1", "k3"], "n": 20_000,
...     "cases": [{"label": "mu = {value:g}", "q": {"family": "normal"},
...                "p": {"family": "normal"}, "sweep": {"param": "p.loc", "values": [0.1, 0.5]}}]})
>>> [case.label for case in config.cases]
['mu = 0.1', 'mu = 0.5']
>>> frame = run_experiment(config)
>>> print(frame[["case", "estimator", "exact_mean"]].to_string(index=False))
    case estimator  exact_mean
mu = 0.1        k1       0.005
mu = 0.1        k3       0.005
mu = 0.5        k1       0.125
mu = 0.5        k3       0.125
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import tomllib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from klest._version import __version__
from klest.distributions.base import Distribution
from klest.engine.plan import BLOCKS_PER_TASK, stream_versions
from klest.engine.runner import DEFAULT_BLOCK_SIZE, simulate, usable_workers
from klest.engine.worker_pool import worker_pool
from klest.errors import check_integer
from klest.studies.checks import ConfigError
from klest.studies.config import parse
from klest.studies.store import ResultsStore

__all__ = [
    "CaseConfig",
    "CaseFailures",
    "ConfigError",
    "ExperimentConfig",
    "OutputConfig",
    "case_frame",
    "default_experiments_dir",
    "load_config",
    "parse_config",
    "run_experiment",
    "store_overrides",
]

#: the version of the tidy frame's columns (:func:`case_frame`); part of every stored case's
#: key, so that cases stored with older columns are recomputed. 2: ``n`` counts every draw,
#: headline statistics over all draws, ``error_bar`` and the ``finite_*`` columns (issue 10).
#: It versions the columns only; what the draws depend on (the random stream's version and
#: NumPy's, :func:`klest.engine.plan.stream_versions`) is a separate part of the key.
FRAME_FORMAT = 2

#: ``progress(case, status)`` is called with status "running", then "done" or "failed"; or
#: "stored" (reused)
ProgressCallback = Callable[["CaseConfig", str], None]


class CaseFailures(RuntimeError):
    """Some cases of an experiment failed; every other case ran (and is stored).

    ``failures`` maps each failed case's index to its one-line error; ``frame`` holds the
    tidy rows of the cases that finished (None if none did). The message's first line counts
    them, then one line per failed case.
    """

    def __init__(
        self, total: int, failures: dict[int, tuple[str, str]], frame: pd.DataFrame | None
    ) -> None:
        self.failures = {index: error for index, (_, error) in failures.items()}
        self.frame = frame
        lines = [f"{len(failures)} of {total} cases failed"]
        lines += [f"case {i} {label!r}: {error}" for i, (label, error) in failures.items()]
        super().__init__("\n".join(lines))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "(no message)"
    return f"{type(err).__name__}: {text}"


@dataclass(frozen=True)
class OutputConfig:
    """The optional ``[output]`` section: what the table shows and which files are written."""

    table_columns: tuple[str, ...] = ("bias/true", "stdev/true")
    formats: tuple[str, ...] = ("csv", "md")
    digits: int = 4
    layout: str = "cases"


@dataclass(frozen=True)
class CaseConfig:
    """One case after sweep expansion: a (q, p) pair, its estimators and number of draws.

    ``index`` is the case's position (its seed stream); ``sweep_param``/``sweep_value`` are
    set for cases that come from a sweep; ``group`` names the [[cases]] entry it came from.
    """

    index: int
    label: str
    q: Distribution
    p: Distribution
    estimators: tuple[str, ...]
    n: int
    group: str = ""
    sweep_param: str | None = None
    sweep_value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready description (distributions via ``to_dict``)."""
        return {
            "index": self.index,
            "label": self.label,
            "group": self.group,
            "q": self.q.to_dict(),
            "p": self.p.to_dict(),
            "estimators": list(self.estimators),
            "n": self.n,
            "sweep_param": self.sweep_param,
            "sweep_value": self.sweep_value,
        }


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment: what to run (``cases``), with which seed, and how to report it.

    >>> config = parse_config({"name": "x", "estimators": ["kl"], "n": 10,
    ...     "cases": [{"q": {"family": "normal"}, "p": {"family": "laplace"}}]})
    >>> config.estimators, config.cases[0].label, config.block_size == DEFAULT_BLOCK_SIZE
    (('k1',), 'case 0', True)
    >>> len(config.config_hash())
    64
    """

    name: str
    title: str
    estimators: tuple[str, ...]
    n: int
    seed: int
    block_size: int
    cases: tuple[CaseConfig, ...]
    output: OutputConfig = OutputConfig()
    source: Path | None = field(default=None, compare=False)
    #: the mapping as loaded from the file (a record for meta.json; not used to run)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config (sweeps expanded, aliases and defaults resolved)."""
        return {
            "name": self.name,
            "title": self.title,
            "estimators": list(self.estimators),
            "n": self.n,
            "seed": self.seed,
            "block_size": self.block_size,
            "cases": [case.to_dict() for case in self.cases],
            "output": {
                "table_columns": list(self.output.table_columns),
                "formats": list(self.output.formats),
                "digits": self.output.digits,
                "layout": self.output.layout,
            },
        }

    def config_hash(self) -> str:
        """SHA-256 of :meth:`to_dict`: equal for configs that mean the same (key order, int vs
        float, aliases, defaults written out, a sweep's values spelled out or as linspace)."""
        return _digest(self.to_dict())

    def case_identity(self, case: CaseConfig) -> dict[str, Any]:
        """Everything a stored case's rows depend on: the case, seed, block size, experiment
        name, klest version, the columns' :data:`FRAME_FORMAT`, and the random stream's and
        NumPy's versions (:func:`klest.engine.plan.stream_versions`); the store records it,
        to say what changed."""
        return {
            "case": case.to_dict(),
            "experiment": self.name,
            "seed": self.seed,
            "block_size": self.block_size,
            "klest": __version__,
            "frame_format": FRAME_FORMAT,
            **stream_versions(),
        }

    def case_key(self, case: CaseConfig) -> str:
        """SHA-256 of :meth:`case_identity`: equal exactly when the rows would be equal."""
        return _digest(self.case_identity(case))

    def with_overrides(self, *, n: int | None = None, seed: int | None = None) -> ExperimentConfig:
        """A copy with ``n`` (for every case, per-case overrides included) and/or ``seed``
        replaced; ``None`` keeps the config's value."""
        config = self
        if n is not None:
            n = check_integer("n", n, minimum=1)
            cases = tuple(replace(case, n=n) for case in self.cases)
            config = replace(config, n=n, cases=cases)
        if seed is not None:
            seed = check_integer("seed", seed, minimum=0)
            config = replace(config, seed=seed)
        return config


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_config(mapping: Mapping[str, Any], source: str = "<string>") -> ExperimentConfig:
    """Validate a config mapping (as ``tomllib`` returns it) into an :class:`ExperimentConfig`.

    ``source`` names the origin in error messages; without a ``name`` key the name is the stem
    of ``source`` when it ends in ``.toml``.

    >>> parse_config({"estimators": ["k1"], "n": 0, "cases": []}, source="a.toml")
    Traceback (most recent call last):
    ...
    klest.studies.experiment.ConfigError: a.toml: n: must be >= 1, got 0
    """
    default = Path(source).stem if source.endswith(".toml") else None
    return _build(mapping, source, default)


def _build(mapping: Any, source: str, default_name: str | None) -> ExperimentConfig:
    raw = copy.deepcopy(dict(mapping)) if isinstance(mapping, Mapping) else mapping
    values = parse(raw, source, default_name)
    cases = tuple(
        CaseConfig(
            index=case["index"],
            label=case["label"],
            q=case["q"],
            p=case["p"],
            estimators=case["estimators"],
            n=case["n"],
            group=case["group"],
            sweep_param=case["sweep_param"],
            sweep_value=case["sweep_value"],
        )
        for case in values["cases"]
    )
    path = Path(source) if default_name is not None else None
    block = values["block_size"]
    return ExperimentConfig(
        name=values["name"],
        title=values["title"],
        estimators=values["estimators"],
        n=values["n"],
        seed=values["seed"],
        block_size=DEFAULT_BLOCK_SIZE if block is None else block,
        cases=cases,
        output=OutputConfig(**values["output"]),
        source=path,
        raw=raw,
    )


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a TOML experiment config (see the module docstring for the format).

    >>> load_config("no/such/file.toml")
    Traceback (most recent call last):
    ...
    klest.studies.experiment.ConfigError: no/such/file.toml: no such file
    """
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except IsADirectoryError:
        raise ConfigError(source, "", "is a directory, not a TOML file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            source, "", f"not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    except OSError as err:
        raise ConfigError(source, "", f"cannot read: {err.strerror}") from None
    try:
        mapping = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, "", f"invalid TOML: {err}") from None
    return _build(mapping, source, Path(path).stem)


def default_experiments_dir() -> Path:
    """``experiments/`` of the repository klest is installed from, else of the working directory."""
    beside = Path(__file__).resolve().parents[2] / "experiments"  # klest/studies/ -> the repo
    return beside if beside.is_dir() else Path.cwd() / "experiments"


# ---- running ------------------------------------------------------------------------------


def case_frame(config: ExperimentConfig, case: CaseConfig, result: Any) -> pd.DataFrame:
    """The tidy rows of one finished case: ``result.to_frame()`` plus case and run columns.

    Columns: ``experiment case_index case group sweep_param sweep_value``, every column of
    :meth:`SimulationResult.to_frame` (``n`` counts every draw, ``finite_n`` the finite
    values), then
    ``seed n_draws block_size`` and the flattened parameters ``q.family q.<param> ...
    p.family p.<param> ...`` (array-valued parameters as JSON text).
    """
    frame = result.to_frame().reset_index(drop=True)
    front = {
        "experiment": config.name,
        "case_index": case.index,
        "case": case.label,
        "group": case.group,
        "sweep_param": case.sweep_param or "",
        "sweep_value": math.nan if case.sweep_value is None else float(case.sweep_value),
    }
    for position, (column, value) in enumerate(front.items()):
        frame.insert(position, column, value)
    frame["seed"] = result.seed
    frame["n_draws"] = result.n
    frame["block_size"] = result.block_size
    for which, dist in (("q", case.q), ("p", case.p)):
        for key, value in dist.to_dict().items():
            frame[f"{which}.{key}"] = json.dumps(value) if isinstance(value, list) else value
    return frame


@contextmanager
def _pool(config: ExperimentConfig, workers: int, executor: Executor | None) -> Iterator[Any]:
    """One process pool shared by every case (only if some case has more than one task)."""
    check_integer("workers", workers, minimum=1)
    biggest = max(case.n for case in config.cases)
    if executor is not None or workers == 1 or biggest <= BLOCKS_PER_TASK * config.block_size:
        yield executor
        return
    with worker_pool(workers, cancel_futures=True) as pool:  # workers die with this process
        yield pool


def store_overrides(
    config: ExperimentConfig, *, n: int | None, seed: int | None
) -> dict[str, int | None]:
    """The overrides that really change ``config`` (they name the run's results directory,
    :func:`klest.studies.store.run_directory`): an ``n`` or ``seed`` equal to the config's is none.

    >>> config = parse_config({"name": "x", "estimators": ["k1"], "n": 10, "seed": 1,
    ...     "cases": [{"q": {"family": "normal"}, "p": {"family": "normal"}}]})
    >>> store_overrides(config, n=10, seed=2)
    {'n': None, 'seed': 2}
    """
    return {
        "n": n if n is not None and any(case.n != n for case in config.cases) else None,
        "seed": seed if seed is not None and seed != config.seed else None,
    }


def run_experiment(
    config: ExperimentConfig,
    *,
    out_dir: str | Path | None = None,
    n: int | None = None,
    seed: int | None = None,
    workers: int = 1,
    executor: Executor | None = None,
    force: bool = False,
    progress: bool | ProgressCallback | None = None,
) -> pd.DataFrame:
    """Run every case and return the tidy frame (one row per case x estimator, see
    :func:`case_frame`).

    Case i runs ``simulate(q, p, estimators, n, seed=config.seed, case=i, ...)``, so its rows
    do not depend on which other cases run, on ``workers`` or on ``executor``. ``n`` and
    ``seed`` override the config's. With ``out_dir``, results go to the store
    (:mod:`klest.studies.store`, ``out_dir/<name>/``): each case is written as it finishes, stored
    cases with a matching key are reused instead of recomputed (``force=True`` recomputes).
    Without ``out_dir`` nothing is written. ``progress`` is True/False/None (a progress bar per
    case, None: only on a terminal) or a callable ``progress(case, status)``.

    A case that raises does not stop the others: after the last case,
    :class:`CaseFailures` is raised, carrying the finished rows and each failed case's error
    (also recorded in the store). An interruption (Ctrl-C, SIGTERM as handled by the CLI)
    marks the store ``interrupted`` and propagates.
    """
    config, original = config.with_overrides(n=n, seed=seed), config
    notify = progress if callable(progress) else None
    bar = None if callable(progress) else progress
    store = None
    if out_dir is not None:
        store = ResultsStore(out_dir, config, overrides=store_overrides(original, n=n, seed=seed))
    workers = usable_workers(workers)
    frames: list[pd.DataFrame] = []
    failures: dict[int, tuple[str, str]] = {}
    try:
        with _pool(config, workers, executor) as pool:
            for case in config.cases:
                frame = None if store is None or force else store.load_case(case)
                if frame is not None:
                    if notify is not None:
                        notify(case, "stored")
                    frames.append(frame)
                    continue
                if notify is not None:
                    notify(case, "running")
                try:
                    result = simulate(
                        case.q, case.p, case.estimators, case.n, seed=config.seed,
                        block_size=config.block_size, executor=pool, progress=bar,
                        case=case.index,
                    )  # fmt: skip
                    frame = case_frame(config, case, result)
                except Exception as err:  # one failing case never aborts the others
                    failures[case.index] = (case.label, _one_line(err))
                    if store is not None:
                        store.fail_case(case, failures[case.index][1])
                    if notify is not None:
                        notify(case, "failed")
                    continue
                if store is not None:
                    store.save_case(case, frame, result.metadata(), result.elapsed)
                frames.append(frame)
                if notify is not None:
                    notify(case, "done")
    except BaseException:
        if store is not None:
            store.interrupt()
        raise
    tidy = pd.concat(frames, ignore_index=True) if frames else None
    if store is not None:
        store.finish()
    if failures:
        raise CaseFailures(len(config.cases), failures, tidy)
    assert tidy is not None
    return tidy

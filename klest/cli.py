"""The ``klest`` command line: the only place in klest that writes files (with klest.studies.store).

``klest run CONFIG`` runs an experiment config into ``results/<name>/`` and prints its table;
``klest demo`` reproduces Schulman's tables (``experiments/schulman_blog.toml``);
``klest list`` shows the registered distributions, estimators and experiments.
User errors (a bad config or option, a missing file) exit non-zero with one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from klest import estimators
from klest.distributions.base import FAMILIES
from klest.engine.dask_connect import SchedulerError, connect
from klest.engine.runner import usable_workers
from klest.errors import check_integer
from klest.report.tables import experiment_table, schulman_table
from klest.studies import experiment  # its default_experiments_dir is looked up at each call
from klest.studies.experiment import (
    CaseFailures,
    ConfigError,
    load_config,
    parse_config,
    run_experiment,
    store_overrides,
)
from klest.studies.rl_studies import is_study_file, load_study, run_study
from klest.studies.store import StoreBusyError, frame_to_csv, run_directory, write_atomic

__all__ = ["main"]

#: the built-in copy of experiments/schulman_blog.toml (used when the file is not found)
SCHULMAN_BLOG: dict[str, Any] = {
    "name": "schulman_blog",
    "title": "Schulman (2020): bias and variance of k1, k2, k3",
    "estimators": ["k1", "k2", "k3"],
    "n": 10_000_000,
    "seed": 2020,
    "cases": [
        {"label": label, "q": {"family": "normal", "loc": 0.0, "scale": 1.0},
         "p": {"family": "normal", "loc": mu, "scale": 1.0}}
        for label, mu in (("KL = 0.005", 0.1), ("KL = 0.5", 1.0))
    ],
}  # fmt: skip


class CommandError(Exception):
    """A user error reported as one line on stderr (exit status 1)."""


def _schulman_config() -> Any:
    path = experiment.default_experiments_dir() / "schulman_blog.toml"
    if path.is_file():
        return load_config(path)
    return parse_config(SCHULMAN_BLOG, source="<built-in schulman_blog>")


def _table(config: Any, frame: Any, title: str | None = None) -> str:
    out = config.output
    return experiment_table(
        frame, title=title, columns=out.table_columns, digits=out.digits, layout=out.layout
    )


def _demo(args: argparse.Namespace) -> int:
    config = _schulman_config().with_overrides(n=args.n, seed=args.seed)
    frame = run_experiment(config, workers=args.workers)
    print("Schulman (2020), q = N(0, 1), p = N(mu, 1): exact values, no sampling")
    print(schulman_table(frame))
    print()
    print(
        f"Monte Carlo, n = {config.n:,} draws per case, seed {config.seed} (± one standard error)"
    )
    print(_table(config, frame))
    return 0


class _Reporter:
    """One line per case on stderr: started, finished (with its time) or reused."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started = 0.0

    def __call__(self, case: Any, status: str) -> None:
        head = f"klest: [{case.index + 1}/{self.total}] {case.label}"
        if status == "running":
            self.started = time.perf_counter()
            return
        if status == "stored":
            print(f"{head}: reused the stored result", file=sys.stderr)
        elif status == "failed":
            print(f"{head}: failed (reported at the end)", file=sys.stderr)
        else:
            seconds = time.perf_counter() - self.started
            print(f"{head}: {case.n:,} draws in {seconds:.1f} s", file=sys.stderr)


def _dask_client(address: str) -> Any:
    """A Client for the scheduler at ``address``; anything else fails in ~8 s, one line."""
    try:
        return connect(address)
    except ImportError:
        raise CommandError(
            "--scheduler needs dask.distributed: pip install 'klest[dask]'"
        ) from None
    except SchedulerError as err:
        raise CommandError(str(err)) from None


def _run_study(args: argparse.Namespace) -> int:
    """``klest run`` on an RL study config: exact tables, written as CSV + Markdown."""
    study = load_study(args.config)
    frame = run_study(study)
    directory = Path(args.out) / study.name
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / "results.csv", frame_to_csv(frame))
        write_atomic(directory / "table.md", f"# {study.title}\n\n" + frame.to_string() + "\n")
    except OSError as err:
        raise CommandError(f"cannot write {err.filename or directory}: {err.strerror}") from None
    print(study.title)
    print(frame.to_string(max_rows=60))
    print(f"klest: results in {directory}/", file=sys.stderr)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a run unwinds as on Ctrl-C."""


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While a run is on, SIGTERM unwinds it (finished cases stay stored, the status says
    ``interrupted``) instead of killing the process where it stands."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def resolve_config(name: str) -> Path:
    """A config path as given, or the name of a config in experiments/ (``schulman_blog``)."""
    path = Path(name)
    if path.exists() or "/" in name or name.endswith(".toml"):
        return path
    directory = experiment.default_experiments_dir()
    candidate = directory / f"{name}.toml"
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in directory.glob("*.toml"))) or "none"
    raise CommandError(f"{name}: no such file, nor an experiment in {directory} (known: {known})")


def _run(args: argparse.Namespace) -> int:
    args.config = str(resolve_config(args.config))
    if is_study_file(args.config):
        return _run_study(args)
    config = load_config(args.config)
    directory = Path(args.out) / run_directory(
        config.name, store_overrides(config, n=args.n, seed=args.seed)
    )
    client = _dask_client(args.scheduler) if args.scheduler else None

    def one_line(message: Any, category: Any, *_: Any, **__: Any) -> None:
        print(f"klest: {category.__name__}: {message}", file=sys.stderr)

    failed = None
    try:
        with warnings.catch_warnings(), _sigterm_interrupts():
            warnings.showwarning = one_line
            warnings.simplefilter("always", UserWarning)  # every case's notes, each time
            try:
                frame = run_experiment(
                    config, out_dir=args.out, n=args.n, seed=args.seed, workers=args.workers,
                    executor=client.get_executor() if client else None, force=args.force,
                    progress=_Reporter(len(config.cases)),
                )  # fmt: skip
            except CaseFailures as err:
                failed, frame = err, err.frame
    except KeyboardInterrupt as err:
        print(
            f"klest: interrupted; finished cases are stored in {directory} (run again to resume)",
            file=sys.stderr,
        )
        return 143 if isinstance(err, Terminated) else 130
    except StoreBusyError as err:
        raise CommandError(str(err)) from None
    except OSError as err:
        raise CommandError(f"cannot write {err.filename or directory}: {err.strerror}") from None
    finally:
        if client is not None:
            client.close()
    if frame is not None:
        print(_table(config, frame, title=config.title))
    print(f"klest: results in {directory}/", file=sys.stderr)
    if failed is not None:
        for line in str(failed).splitlines():
            print(f"klest: error: {line}", file=sys.stderr)
        return 1
    return 0


def _usable_workers(workers: int) -> int:
    """``--workers`` capped as :func:`klest.engine.runner.usable_workers` caps it, with the
    warning worded for the command line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the engine's wording: replaced below
        usable = usable_workers(workers)
    if usable < workers:
        print(
            f"klest: warning: --workers {workers} is more than the {usable} CPUs available; "
            f"using {usable}",
            file=sys.stderr,
        )
    return usable


def _list(_: argparse.Namespace) -> int:
    print("distributions:")
    for family, cls in sorted(FAMILIES.items()):
        params = ", ".join(p.name for p in cls.params)
        print(f"  {family:<20} {cls.__name__}({params})")
    print("estimators:")
    for name, est in estimators.registry().items():
        alias = f" (alias {', '.join(est.aliases)})" if est.aliases else ""
        print(f"  {name:<18} {est.formula:<42} targets {est.target.label}{alias}")
    directory = experiment.default_experiments_dir()
    paths = sorted(directory.glob("*.toml"))
    print(f"experiments ({directory}):" if paths else f"experiments: none in {directory}")
    for path in paths:
        try:
            if is_study_file(path):
                study = load_study(path)
                print(f"  {study.name:<24} study: {study.study:<22} {study.title}")
                continue
            config = load_config(path)
        except ConfigError as err:
            where = f"{err.key}: " if err.key else ""
            print(f"  {path.stem:<24} invalid config: {where}{err.problem}")
            continue
        print(f"  {config.name:<24} {len(config.cases):>4} cases  {config.title}")
    return 0


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    try:
        return check_integer("--value", value, minimum)
    except ValueError:  # argparse prefixes "argument --n: "
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}") from None


def _positive_int(text: str) -> int:
    return _integer(text, 1)


def _non_negative_int(text: str) -> int:
    return _integer(text, 0)


def _figures(args: argparse.Namespace) -> int:
    """``klest figures``: :func:`klest.report.figure_files.figures_command`."""
    # deferred: loads matplotlib
    from klest.report.figure_files import figures_command

    return figures_command(args)


def _diagnose(args: argparse.Namespace) -> int:
    """``klest diagnose``: :func:`klest.diagnostics.diagnose`, then report.md, summary.json
    and figures in ``--out`` (:func:`klest.report.diagnosis_files.write_diagnosis`)."""
    # deferred: pyarrow / torch for their log formats
    from klest.diagnostics import diagnose

    # deferred: loads matplotlib
    from klest.report.diagnosis_files import REPORT_COLUMNS, write_diagnosis

    if not os.path.exists(args.logs):
        raise CommandError(f"{args.logs}: no such file")
    try:
        diagnosis = diagnose(args.logs, frameworks=tuple(args.framework),
                             chunk_rows=args.chunk_rows)  # fmt: skip
    except (ValueError, TypeError, ImportError) as err:
        raise CommandError(str(err).strip().splitlines()[0]) from None
    summary = diagnosis.summary
    columns = [c for c in REPORT_COLUMNS if c in summary.columns and c != "verdict"]
    print(summary[columns].to_string(index=False))
    print(diagnosis.recommendation)
    try:
        paths = write_diagnosis(diagnosis, args.out, source=args.logs)
    except OSError as err:
        raise CommandError(f"cannot write {err.filename or args.out}: {err.strerror}") from None
    print(f"klest: wrote {', '.join(p.name for p in paths)} in {args.out}/", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="klest",
        description="Monte Carlo estimators of KL divergence, with the exact truth beside "
        "every estimate.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="Schulman's bias/stdev table: exact values, then Monte Carlo beside them"
    )
    demo.add_argument("--n", type=_positive_int, help="draws per case (default 10,000,000)")
    demo.add_argument("--seed", type=_non_negative_int, help="default 2020")
    demo.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1)
    demo.set_defaults(handler=_demo)
    listing = commands.add_parser("list", help="list distributions, estimators and experiments")
    listing.set_defaults(handler=_list)
    run = commands.add_parser(
        "run", help="run an experiment config: print its table, write results/<name>/"
    )
    run.add_argument("config", metavar="CONFIG", help="a TOML experiment config (experiments/)")
    run.add_argument("--out", default="results", metavar="DIR", help="default: results/")
    run.add_argument("--n", type=_positive_int, help="draws per case, for every case")
    run.add_argument("--seed", type=_non_negative_int, help="replaces the config's seed")
    run.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1)
    run.add_argument("--scheduler", metavar="ADDRESS", help="run on this Dask scheduler")
    run.add_argument(
        "--force", action="store_true", help="recompute every case, even those already stored"
    )
    run.set_defaults(handler=_run)
    figures = commands.add_parser(
        "figures", help="regenerate the figure set (PNG, PDF, CSV) and claims.md"
    )
    figures.add_argument("--out", default="figures", metavar="DIR", help="default: figures/")
    figures.add_argument("--n", type=_positive_int, help="draws per case (default: the configs')")
    figures.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1)
    figures.add_argument("--only", metavar="NAME", help="one figure (e.g. fig1_rel_std) or claims")
    figures.set_defaults(handler=_figures)
    diag = commands.add_parser(
        "diagnose",
        help="diagnose a run's logged log-probabilities: KL by every estimator with clustered "
        "standard errors, tail k-hat, mismatch; writes report.md, summary.json, figures",
    )
    diag.add_argument("logs", metavar="LOGS", help="token logs: .parquet, .npz, .pt or .jsonl")
    diag.add_argument("--out", default="diagnosis", metavar="DIR", help="default: diagnosis/")
    diag.add_argument(
        "--framework", action="append", default=[], metavar="FW:KIND",
        help="also a framework's penalty, e.g. verl:low_var_kl or openrlhf@0.11.0:k3 (repeat)",
    )  # fmt: skip
    diag.add_argument("--chunk-rows", type=_positive_int, default=1_000_000, metavar="N",
                      help="tokens read at a time (default 1,000,000)")  # fmt: skip
    diag.set_defaults(handler=_diagnose)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``klest`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0
    if getattr(args, "workers", None) is not None:
        args.workers = _usable_workers(args.workers)
    try:
        return args.handler(args)
    except (CommandError, ConfigError) as err:
        print(f"klest: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

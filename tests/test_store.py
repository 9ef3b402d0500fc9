"""The results store: atomic writes, resuming an interrupted sweep bit for bit, recomputation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from klest import __version__
from klest.report.tables import experiment_table
from klest.studies.experiment import parse_config, run_experiment
from klest.studies.store import (
    ResultsStore,
    StoreWarning,
    frame_from_csv,
    frame_to_csv,
    read_results,
    write_atomic,
)

SWEEP = {
    "name": "sweep",
    "title": "A small sweep",
    "estimators": ["k1", "k2", "k3"],
    "n": 3000,
    "seed": 7,
    "block_size": 1000,
    "cases": [
        {"label": "mu = {value:g}", "q": {"family": "normal"}, "p": {"family": "normal"},
         "sweep": {"param": "p.loc", "values": [0.1, 0.2, 0.3]}},
        {"label": "categorical", "q": {"family": "categorical", "probs": [0.2, 0.3, 0.5]},
         "p": {"family": "categorical", "logits": [0.0, 0.1, 0.3]}, "n": 2000},
        {"label": "laplace", "q": {"family": "laplace"}, "p": {"family": "laplace", "loc": 0.2},
         "estimators": ["k1", "rev_kl"]},
    ],
}  # fmt: skip


def config(**changes):
    return parse_config({**SWEEP, **changes})


class Interrupt(Exception):
    pass


class Recorder:
    """A progress callback recording (case index, status); optionally interrupts the run."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.events: list[tuple[int, str]] = []
        self.stop_after = stop_after

    def __call__(self, case, status: str) -> None:
        self.events.append((case.index, status))
        done = sum(1 for _, s in self.events if s == "done")
        if status == "done" and done == self.stop_after:
            raise Interrupt

    def statuses(self) -> list[str]:
        return [status for _, status in self.events if status != "running"]


def mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((directory / "cases").iterdir())}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("uninterrupted")
    frame = run_experiment(config(), out_dir=out)
    return out / "sweep", frame


def test_write_atomic_replaces_whole_files_and_cleans_up(tmp_path, monkeypatch) -> None:
    target = tmp_path / "deep" / "file.txt"
    write_atomic(target, "first\n")
    write_atomic(target, "second\n")
    assert target.read_text() == "second\n"

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, "third\n")
    monkeypatch.undo()
    with pytest.raises(TypeError):
        write_atomic(target, 123)  # type: ignore[arg-type]  (fails while writing)
    assert target.read_text() == "second\n"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]  # no temporary files left


def test_csv_round_trip_is_exact(uninterrupted) -> None:
    _, frame = uninterrupted
    back = frame_from_csv(frame_to_csv(frame))
    pd.testing.assert_frame_equal(back, frame, check_exact=True)
    assert back["q.probs"].iloc[9] == "[0.2, 0.3, 0.5]"  # arrays as JSON text


def test_run_without_out_dir_writes_nothing(tmp_path, monkeypatch, uninterrupted) -> None:
    monkeypatch.chdir(tmp_path)
    frame = run_experiment(config())
    assert list(tmp_path.iterdir()) == []
    pd.testing.assert_frame_equal(frame, uninterrupted[1], check_exact=True)


def test_store_layout_and_contents(uninterrupted) -> None:
    directory, frame = uninterrupted
    assert sorted(p.name for p in directory.iterdir()) == [
        "cases", "meta.json", "results.csv", "table.md",
    ]  # fmt: skip
    assert sorted(p.name for p in (directory / "cases").iterdir()) == sorted(
        f"{i}.{ext}" for i in range(5) for ext in ("csv", "json")
    )
    assert len(frame) == 3 * 3 + 3 + 2
    pd.testing.assert_frame_equal(read_results(directory), frame, check_exact=True)
    cfg = config()
    table = experiment_table(frame, title="A small sweep")
    assert (directory / "table.md").read_text() == table + "\n"
    assert "### mu = 0.2" in table and "### laplace" in table
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["status"] == "complete" and meta["cases_finished"] == meta["cases_total"] == 5
    assert meta["config_hash"] == cfg.config_hash()
    assert (meta["seed"], meta["n"], meta["block_size"]) == (7, 3000, 1000)
    assert meta["versions"]["klest"] == __version__ and "numpy" in meta["versions"]
    assert meta["config"] == SWEEP and len(meta["resolved"]["cases"]) == 5
    assert [c["status"] for c in meta["cases"]] == ["computed"] * 5
    assert meta["cases"][3]["key"] == cfg.case_key(cfg.cases[3])


def test_interrupted_sweep_resumes_without_recomputing(tmp_path, uninterrupted) -> None:
    reference_dir, reference = uninterrupted
    with pytest.raises(Interrupt):
        run_experiment(config(), out_dir=tmp_path, progress=Recorder(stop_after=2))
    directory = tmp_path / "sweep"
    # the finished cases and a partial table survive the interruption
    assert sorted(mtimes(directory)) == ["0.csv", "0.json", "1.csv", "1.json"]
    partial = read_results(directory)
    assert partial["case_index"].unique().tolist() == [0, 1]
    assert "### mu = 0.2" in (directory / "table.md").read_text()
    assert "### mu = 0.3" not in (directory / "table.md").read_text()
    meta = json.loads((directory / "meta.json").read_text())
    assert (meta["status"], meta["cases_finished"]) == ("interrupted", 2)
    assert [c["status"] for c in meta["cases"]] == ["computed"] * 2 + ["pending"] * 3
    before = mtimes(directory)

    recorder = Recorder()
    resumed = run_experiment(config(), out_dir=tmp_path, progress=recorder)
    assert recorder.statuses() == ["stored", "stored", "done", "done", "done"]
    after = mtimes(directory)
    assert {k: after[k] for k in before} == before  # finished cases were not rewritten
    pd.testing.assert_frame_equal(resumed, reference, check_exact=True)
    for name in ("results.csv", "table.md"):
        assert (directory / name).read_bytes() == (reference_dir / name).read_bytes()
    for i in range(5):
        assert (directory / "cases" / f"{i}.csv").read_bytes() == (
            reference_dir / "cases" / f"{i}.csv"
        ).read_bytes()
    meta = json.loads((directory / "meta.json").read_text())
    assert [c["status"] for c in meta["cases"]] == ["stored"] * 2 + ["computed"] * 3


def test_rerun_reuses_everything_and_returns_the_same_frame(tmp_path, uninterrupted) -> None:
    run_experiment(config(), out_dir=tmp_path)
    recorder = Recorder()
    again = run_experiment(config(), out_dir=tmp_path, progress=recorder)
    assert recorder.statuses() == ["stored"] * 5
    pd.testing.assert_frame_equal(again, uninterrupted[1], check_exact=True)


def test_changed_config_recomputes_what_changed(tmp_path) -> None:
    run_experiment(config(), out_dir=tmp_path)
    cases = [dict(c) for c in SWEEP["cases"]]
    cases[2] = {**cases[2], "p": {"family": "laplace", "loc": 0.5}}  # only case 4 changes
    recorder = Recorder()
    with pytest.warns(
        StoreWarning, match=r"case 4 'laplace': the config changed .*p\.loc 0\.2 -> 0\.5"
    ):
        frame = run_experiment(config(cases=cases), out_dir=tmp_path, progress=recorder)
    assert recorder.statuses() == ["stored"] * 4 + ["done"]
    assert set(frame.loc[frame["case_index"] == 4, "p.loc"]) == {0.5}
    assert set(read_results(tmp_path / "sweep").loc[lambda f: f["case_index"] == 4, "p.loc"]) == {
        0.5
    }
    for overrides in ({"n": 2500}, {"seed": 8}):
        recorder = Recorder()
        run_experiment(config(cases=cases), out_dir=tmp_path, progress=recorder, **overrides)
        assert recorder.statuses() == ["done"] * 5, overrides
    recorder = Recorder()
    with pytest.warns(StoreWarning, match="block_size 1000 -> 500"):
        run_experiment(config(cases=cases, block_size=500), out_dir=tmp_path, progress=recorder)
    assert recorder.statuses() == ["done"] * 5


def test_force_recomputes_to_the_same_numbers(tmp_path, uninterrupted) -> None:
    run_experiment(config(), out_dir=tmp_path)
    recorder = Recorder()
    frame = run_experiment(config(), out_dir=tmp_path, force=True, progress=recorder)
    assert recorder.statuses() == ["done"] * 5
    pd.testing.assert_frame_equal(frame, uninterrupted[1], check_exact=True)


def test_damaged_or_foreign_case_files_are_recomputed(tmp_path, uninterrupted) -> None:
    run_experiment(config(), out_dir=tmp_path)
    cases = tmp_path / "sweep" / "cases"
    (cases / "0.csv").write_text("garbage,\n\x00\n")
    (cases / "1.csv").write_text((cases / "2.csv").read_text())  # another case's rows
    (cases / "3.csv").unlink()
    recorder = Recorder()
    with pytest.warns(StoreWarning) as caught:
        frame = run_experiment(config(), out_dir=tmp_path, progress=recorder)
    assert recorder.statuses() == ["done", "done", "stored", "done", "stored"]
    assert [str(w.message).split(": ", 1)[1] for w in caught] == [
        "case 0 'mu = 0.1': cases/0.csv does not match its recorded hash (edited or damaged): "
        "recomputed, the stored result replaced",
        "case 1 'mu = 0.2': cases/1.csv does not match its recorded hash (edited or damaged): "
        "recomputed, the stored result replaced",
    ]  # a deleted case file is simply not stored: no message
    pd.testing.assert_frame_equal(frame, uninterrupted[1], check_exact=True)


def test_cases_outside_the_config_are_left_out(tmp_path) -> None:
    run_experiment(config(), out_dir=tmp_path)
    smaller = config(cases=SWEEP["cases"][:1])
    frame = run_experiment(smaller, out_dir=tmp_path)
    stored = read_results(tmp_path / "sweep")
    assert stored["case_index"].unique().tolist() == [0, 1, 2]
    pd.testing.assert_frame_equal(stored, frame, check_exact=True)
    meta = json.loads((tmp_path / "sweep" / "meta.json").read_text())
    assert meta["cases_total"] == 3


def test_output_section_controls_files_and_table(tmp_path) -> None:
    cfg = config(output={"formats": ["csv"], "table_columns": ["mean", "stdev"], "layout": "long"})
    store = ResultsStore(tmp_path, cfg)
    assert store.case_path(3) == tmp_path / "sweep" / "cases" / "3.csv"
    store.finish()
    frame = run_experiment(cfg, out_dir=tmp_path)
    assert not (tmp_path / "sweep" / "table.md").exists()
    pd.testing.assert_frame_equal(read_results(tmp_path / "sweep"), frame, check_exact=True)
    table = experiment_table(frame, columns=["mean", "stdev"], layout="long")
    assert table.splitlines()[0] == "| case | estimator | mean | exact | stdev | exact |"
    assert len(table.splitlines()) == 2 + len(frame)

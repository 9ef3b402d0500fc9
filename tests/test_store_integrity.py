"""The results store under faults: huge seeds, edited case files, overrides, failures, kills.

Each test here was written against a fault that the store once had (issue 10, items 4, 5, 7,
8 and 9): it fails on the old store.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest

from klest.studies.experiment import CaseFailures, parse_config, run_experiment
from klest.studies.store import (
    StoreBusyError,
    StoreWarning,
    frame_from_csv,
    frame_to_csv,
    read_results,
)

BASE = {
    "name": "faults",
    "estimators": ["k1", "k3"],
    "n": 2000,
    "seed": 3,
    "block_size": 1000,
    "cases": [
        {"label": "near", "q": {"family": "normal"}, "p": {"family": "normal", "loc": 0.1}},
        {"label": "far", "q": {"family": "normal"}, "p": {"family": "normal", "loc": 1.0}},
        {"label": "laplace", "q": {"family": "laplace"}, "p": {"family": "laplace", "loc": 0.3}},
    ],
}


def config(**changes):
    return parse_config({**BASE, **changes})


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[int, str]] = []

    def __call__(self, case, status: str) -> None:
        self.events.append((case.index, status))

    def statuses(self) -> list[str]:
        return [status for _, status in self.events if status != "running"]


def run(cfg, out: Path, **kwargs):
    """run_experiment with the store's warnings collected: (frame, statuses, messages)."""
    recorder = Recorder()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = run_experiment(cfg, out_dir=out, progress=recorder, **kwargs)
    messages = [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]
    return frame, recorder.statuses(), messages


# ---- item 5: seeds of the whole SeedSequence domain ---------------------------------------


@pytest.mark.parametrize("seed", [2**63, 2**64 - 1, 2**64, 2**127 + 12345])
def test_huge_seeds_are_stored_losslessly_and_reruns_reuse_them(tmp_path, seed) -> None:
    cfg = config(seed=seed, cases=BASE["cases"][:1])
    first, statuses, _ = run(cfg, tmp_path)
    assert statuses == ["done"]
    assert int(first["seed"].iloc[0]) == seed
    again, statuses, messages = run(cfg, tmp_path)  # crashed in frame_from_csv before
    assert statuses == ["stored"] and messages == []
    pd.testing.assert_frame_equal(again, first, check_exact=True)
    stored = read_results(tmp_path / "faults")
    assert int(stored["seed"].iloc[0]) == seed


def test_integer_columns_round_trip_beyond_int64() -> None:
    frame = pd.DataFrame({"a": [2**63, 1], "b": [2**80, -(2**70)], "c": [-1, 2]})
    back = frame_from_csv(frame_to_csv(frame))
    assert [int(v) for v in back["a"]] == [2**63, 1]
    assert [int(v) for v in back["b"]] == [2**80, -(2**70)]
    assert back["c"].dtype == "int64"


# ---- item 7: stored cases are verified, not trusted -----------------------------------------


def test_a_dropped_row_is_noticed_and_the_case_recomputed(tmp_path) -> None:
    reference, _, _ = run(config(), tmp_path)
    path = tmp_path / "faults" / "cases" / "1.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]))  # the last estimator's row is gone
    frame, statuses, messages = run(config(), tmp_path)
    assert statuses == ["stored", "done", "stored"]
    assert len(messages) == 1 and "case 1 'far'" in messages[0] and "hash" in messages[0]
    pd.testing.assert_frame_equal(frame, reference, check_exact=True)
    meta = json.loads((tmp_path / "faults" / "meta.json").read_text())
    assert meta["cases"][1]["status"] == "computed"
    assert "hash" in meta["cases"][1]["recomputed_because"]


def test_a_changed_digit_is_noticed_and_the_case_recomputed(tmp_path) -> None:
    reference, _, _ = run(config(), tmp_path)
    path = tmp_path / "faults" / "cases" / "2.csv"
    text = path.read_text()
    stored = reference.loc[reference["case_index"] == 2, "mean"].iloc[0]
    digits = repr(float(stored))
    assert digits in text
    changed = digits[:-1] + ("1" if digits[-1] != "1" else "2")
    path.write_text(text.replace(digits, changed, 1))
    frame, statuses, messages = run(config(), tmp_path)
    assert statuses == ["stored", "stored", "done"]
    assert len(messages) == 1 and "case 2 'laplace'" in messages[0]
    pd.testing.assert_frame_equal(frame, reference, check_exact=True)


def test_a_case_file_without_its_record_is_recomputed(tmp_path) -> None:
    reference, _, _ = run(config(), tmp_path)
    (tmp_path / "faults" / "cases" / "0.json").unlink()
    frame, statuses, messages = run(config(), tmp_path)
    assert statuses == ["done", "stored", "stored"]
    assert len(messages) == 1 and "case 0 'near'" in messages[0]
    pd.testing.assert_frame_equal(frame, reference, check_exact=True)


def test_the_case_key_depends_on_the_seed(tmp_path) -> None:
    """A changed seed in the config (same directory, no override) must not reuse a case."""
    run(config(), tmp_path)
    frame, statuses, messages = run(config(seed=4), tmp_path)
    assert statuses == ["done"] * 3
    assert all("seed 3 -> 4" in m for m in messages) and len(messages) == 3
    fresh = run_experiment(config(seed=4))
    pd.testing.assert_frame_equal(frame, fresh, check_exact=True)


def test_a_changed_case_says_what_changed(tmp_path) -> None:
    run(config(), tmp_path)
    cases = [dict(c) for c in BASE["cases"]]
    cases[1] = {**cases[1], "n": 3000}
    _, statuses, messages = run(config(cases=cases), tmp_path)
    assert statuses == ["stored", "done", "stored"]
    assert len(messages) == 1, messages
    assert "case 1 'far'" in messages[0] and "n 2000 -> 3000" in messages[0]
    assert "replac" in messages[0]


# ---- item 9: overrides keep their own results -------------------------------------------------


def test_n_and_seed_overrides_keep_the_full_results_apart(tmp_path) -> None:
    full, _, _ = run(config(), tmp_path)
    full_dir = tmp_path / "faults"
    before = {p.name: p.read_bytes() for p in full_dir.iterdir() if p.is_file()}
    quick, statuses, _ = run(config(), tmp_path, n=1000)
    assert statuses == ["done"] * 3
    assert (tmp_path / "faults-n1000" / "results.csv").is_file()
    assert set(quick["n_draws"]) == {1000}
    after = {p.name: p.read_bytes() for p in full_dir.iterdir() if p.is_file()}
    assert before.keys() == after.keys()
    assert before["results.csv"] == after["results.csv"]
    _, statuses, _ = run(config(), tmp_path, seed=9)
    assert statuses == ["done"] * 3 and (tmp_path / "faults-seed9").is_dir()
    again, statuses, messages = run(config(), tmp_path)  # the full run is still all there
    assert statuses == ["stored"] * 3 and messages == []
    pd.testing.assert_frame_equal(again, full, check_exact=True)
    # an override equal to the config's own value is no override
    _, statuses, _ = run(config(), tmp_path, n=2000, seed=3)
    assert statuses == ["stored"] * 3


# ---- item 4: one failing case never aborts the others -------------------------------------------


def test_a_failing_case_is_reported_at_the_end_and_the_others_finish(tmp_path, monkeypatch) -> None:
    import klest.studies.experiment as experiment

    real = experiment.simulate

    def flaky(q, p, *args, case=0, **kwargs):
        if case == 1:
            raise OverflowError("math range error")
        return real(q, p, *args, case=case, **kwargs)

    monkeypatch.setattr(experiment, "simulate", flaky)
    recorder = Recorder()
    with pytest.raises(CaseFailures) as info:
        run_experiment(config(), out_dir=tmp_path, progress=recorder)
    assert recorder.statuses() == ["done", "failed", "done"]
    err = info.value
    assert str(err).splitlines()[0].startswith("1 of 3 cases failed")
    assert "case 1 'far': OverflowError: math range error" in str(err)
    assert err.frame["case_index"].unique().tolist() == [0, 2]
    meta = json.loads((tmp_path / "faults" / "meta.json").read_text())
    assert meta["status"] == "incomplete"
    assert meta["cases"][1]["status"] == "failed"
    assert meta["cases"][1]["error"] == "OverflowError: math range error"
    assert read_results(tmp_path / "faults")["case_index"].unique().tolist() == [0, 2]
    monkeypatch.setattr(experiment, "simulate", real)
    frame, statuses, _ = run(config(), tmp_path)  # fixed: only the failed case runs
    assert statuses == ["stored", "done", "stored"]
    assert frame["case_index"].unique().tolist() == [0, 1, 2]


# ---- item 8: the run's status tells the truth --------------------------------------------------


def test_an_interrupted_run_is_marked_interrupted(tmp_path) -> None:
    class Stop(KeyboardInterrupt):
        pass

    def stop_after_first(case, status):
        if status == "done":
            raise Stop

    with pytest.raises(Stop):
        run_experiment(config(), out_dir=tmp_path, progress=stop_after_first)
    meta = json.loads((tmp_path / "faults" / "meta.json").read_text())
    assert meta["status"] == "interrupted"
    assert [c["status"] for c in meta["cases"]] == ["computed", "pending", "pending"]


def test_a_stale_running_status_is_reported(tmp_path) -> None:
    run(config(), tmp_path)
    meta_path = tmp_path / "faults" / "meta.json"
    meta = json.loads(meta_path.read_text())
    dead = _dead_pid()
    meta.update(status="running", pid=dead)
    meta_path.write_text(json.dumps(meta))
    _, statuses, messages = run(config(), tmp_path)
    assert statuses == ["stored"] * 3
    assert len(messages) == 1
    assert f"pid {dead}" in messages[0] and "did not finish" in messages[0]
    assert json.loads(meta_path.read_text())["status"] == "complete"


def test_a_live_writer_is_not_overrun(tmp_path) -> None:
    import subprocess
    import sys

    run(config(), tmp_path)
    meta_path = tmp_path / "faults" / "meta.json"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        meta = json.loads(meta_path.read_text())
        meta.update(status="running", pid=other.pid)
        meta_path.write_text(json.dumps(meta))
        with pytest.raises(StoreBusyError, match=f"another klest run \\(pid {other.pid},"):
            run_experiment(config(), out_dir=tmp_path)
    finally:
        other.kill()
        other.wait()


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not Path(f"/proc/{child.pid}").exists() or os.name != "posix"
    return child.pid


def test_a_case_stored_by_an_older_klest_is_recomputed(tmp_path) -> None:
    reference, _, _ = run(config(), tmp_path)
    record_path = tmp_path / "faults" / "cases" / "0.json"
    record = json.loads(record_path.read_text())
    record["depends_on"].pop("frame_format")  # as klest wrote it before the format had a number
    record["key"] = "0" * 64
    record_path.write_text(json.dumps(record))
    frame, statuses, messages = run(config(), tmp_path)
    assert statuses == ["done", "stored", "stored"]
    assert messages == [
        f"{tmp_path / 'faults'}: case 0 'near': it was stored by an older klest, with older "
        "columns: recomputed, the stored result replaced"
    ]
    pd.testing.assert_frame_equal(frame, reference, check_exact=True)

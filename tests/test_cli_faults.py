"""`klest run` under faults a user hit: bad bytes, names, worker counts, failing cases, SIGTERM.

Each test was written against the old behaviour and failed on it (issue 10).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import klest.studies.experiment
from klest.cli import main
from klest.studies.store import read_results

TINY = """
title = "Tiny study"
estimators = ["k1", "k2"]
n = 4000
seed = 3

[[cases]]
label = "near"
q = { family = "normal" }
p = { family = "normal", loc = 0.1 }

[[cases]]
label = "far"
q = { family = "normal" }
p = { family = "normal", loc = 1.0 }

[[cases]]
label = "laplace"
q = { family = "laplace" }
p = { family = "laplace", loc = 0.5 }
"""


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120):
    script = Path(sys.executable).with_name("klest")
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_a_non_utf8_config_is_one_line(tmp_path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('title = "Étude"\n'.encode("latin-1"))
    out = run_cli("run", str(path), "--out", str(tmp_path / "out"))
    assert out.returncode == 1
    assert (
        out.stderr
        == f"klest: error: {path}: not UTF-8 text (invalid continuation byte at byte 9)\n"
    )


def test_a_config_name_from_klest_list_runs(tmp_path) -> None:
    out = run_cli("run", "schulman_blog", "--n", "2000", "--workers", "1", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "### KL = 0.005" in out.stdout
    assert (tmp_path / "schulman_blog-n2000" / "results.csv").is_file()
    unknown = run_cli("run", "no_such_study", "--out", str(tmp_path))
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
    assert unknown.stderr.startswith("klest: error: no_such_study: no such file, nor an experiment")
    assert "schulman_blog" in unknown.stderr


def test_too_many_workers_are_capped_with_a_warning(tmp_path, tiny, capsys) -> None:
    cpus = len(os.sched_getaffinity(0))
    assert main(["run", str(tiny), "--workers", "1000", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"--workers 1000 is more than the {cpus} CPUs available; using {cpus}" in err


@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_workers_get_one_message(tmp_path, tiny, value) -> None:
    out = run_cli("run", str(tiny), "--workers", value, "--out", str(tmp_path))
    assert out.returncode == 2
    assert f"argument --workers: must be an integer >= 1, got {value}" in out.stderr


def test_a_failing_case_is_reported_at_the_end(tmp_path, tiny, monkeypatch, capsys) -> None:
    real = klest.studies.experiment.simulate

    def fail_far(*args, **kwargs):
        if kwargs["case"] == 1:
            raise OverflowError("(34, 'Numerical result out of range')")
        return real(*args, **kwargs)

    monkeypatch.setattr(klest.studies.experiment, "simulate", fail_far)
    assert main(["run", str(tiny), "--out", str(tmp_path), "--workers", "1"]) == 1
    out, err = capsys.readouterr()
    assert "### near" in out and "### laplace" in out and "### far" not in out
    lines = err.splitlines()
    assert lines[-2:] == [
        "klest: error: 1 of 3 cases failed",
        "klest: error: case 1 'far': OverflowError: (34, 'Numerical result out of range')",
    ]
    assert "[2/3] far: failed" in err and "Traceback" not in err
    assert read_results(tmp_path / "tiny")["case"].unique().tolist() == ["near", "laplace"]
    meta = json.loads((tmp_path / "tiny" / "meta.json").read_text())
    assert meta["status"] == "incomplete" and meta["cases"][1]["status"] == "failed"


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"klest ended early ({proc.returncode}): {proc.stderr.read()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _status(meta_path: Path) -> dict:
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return {}


def _slow(tmp_path: Path, far_n: int = 2_000_000_000) -> Path:
    """A config whose first case is quick and whose second runs for a long time."""
    config = tmp_path / "slow.toml"
    config.write_text(TINY.replace("loc = 1.0 }", f"loc = 1.0 }}\nn = {far_n}"))
    return config


def _start(config: Path, out: Path) -> subprocess.Popen:
    script = Path(sys.executable).with_name("klest")
    return subprocess.Popen(
        [str(script), "run", str(config), "--workers", "1", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_sigterm_marks_the_run_interrupted(tmp_path) -> None:
    proc = _start(_slow(tmp_path), tmp_path)
    meta_path = tmp_path / "slow" / "meta.json"
    try:
        _wait_for(lambda: _status(meta_path).get("cases_finished") == 1, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 143, err
    assert "interrupted; finished cases are stored in" in err and "Traceback" not in err
    meta = _status(meta_path)
    assert meta["status"] == "interrupted" and meta["cases_finished"] == 1
    assert [c["status"] for c in meta["cases"]] == ["computed", "pending", "pending"]


def test_a_killed_run_is_reported_by_the_next_one(tmp_path) -> None:
    proc = _start(_slow(tmp_path), tmp_path)
    meta_path = tmp_path / "slow" / "meta.json"
    try:
        _wait_for(lambda: _status(meta_path).get("cases_finished") == 1, proc)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    dead = _status(meta_path)
    assert dead["status"] == "running" and dead["pid"] == proc.pid
    out = run_cli("run", str(_slow(tmp_path, far_n=4000)), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert f"the previous run (pid {proc.pid}, last update" in out.stderr
    assert "did not finish (killed?)" in out.stderr
    assert "[1/3] near: reused the stored result" in out.stderr
    assert _status(meta_path)["status"] == "complete"


def test_meta_table_and_stderr_say_the_same_about_a_case(tmp_path, capsys) -> None:
    config = tmp_path / "honest.toml"
    config.write_text(
        'estimators = ["k1", "k3"]\nn = 20000\nseed = 1\n'
        '[[cases]]\nlabel = "wide"\nq = { family = "normal" }\n'
        'p = { family = "normal", scale = 10.0 }\n'
        '[[cases]]\nlabel = "support"\nq = { family = "normal" }\n'
        'p = { family = "exponential", rate = 1.0 }\n'
    )
    assert main(["run", str(config), "--out", str(tmp_path), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    table = (tmp_path / "honest" / "table.md").read_text()
    meta = json.loads((tmp_path / "honest" / "meta.json").read_text())
    warned = [
        line.removeprefix("klest: ConvergenceWarning: ")
        for line in err.splitlines()
        if line.startswith("klest: ConvergenceWarning: ")
    ]
    assert len(warned) == 3  # wide k3; support k1 and k3
    noted = [
        f"{name}: {note}" for case in meta["cases"] for name, note in case.get("notes", {}).items()
    ]
    assert noted == warned
    for text in warned:
        assert f"] {text}\n" in table
    assert "infinite" in meta["cases"][0]["notes"]["k3"]
    assert "non-finite" in meta["cases"][1]["notes"]["k1"]

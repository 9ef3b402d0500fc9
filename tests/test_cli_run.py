"""`klest run`: files, printed table, resuming, Dask, and one-line user errors (subprocesses)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import klest.studies.experiment
from klest.cli import main
from klest.studies.experiment import default_experiments_dir
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
"""


def klest_command() -> list[str]:
    script = Path(sys.executable).with_name("klest")
    return [str(script)] if script.exists() else [shutil.which("klest") or "klest"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*klest_command(), *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.mark.klest_subprocess
def test_run_writes_files_prints_the_table_and_resumes(tmp_path, tiny) -> None:
    out = run("run", str(tiny), "--workers", "1", cwd=tmp_path)  # default --out results/
    assert out.returncode == 0, out.stderr
    directory = tmp_path / "results" / "tiny"
    assert sorted(p.name for p in directory.iterdir()) == [
        "cases", "meta.json", "results.csv", "table.md",
    ]  # fmt: skip
    assert out.stdout == (directory / "table.md").read_text()
    assert out.stdout.startswith("# Tiny study\n\n### near\n")
    assert "| estimator | bias/true | exact | stdev/true | exact |" in out.stdout
    assert "klest: [1/2] near: 4,000 draws in" in out.stderr
    assert "Traceback" not in out.stderr
    frame = read_results(directory)
    assert frame["case"].tolist() == ["near", "near", "far", "far"]
    assert set(frame["n_draws"]) == {4000} and set(frame["seed"]) == {3}

    again = run("run", str(tiny), "--out", "results", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("reused the stored result") == 2
    assert again.stdout == out.stdout

    forced = run("run", str(tiny), "--force", "--seed", "4", "--n", "3000", cwd=tmp_path)
    assert forced.returncode == 0 and "reused" not in forced.stderr
    assert "results in results/tiny-n3000-seed4/" in forced.stderr
    meta = json.loads((directory.with_name("tiny-n3000-seed4") / "meta.json").read_text())
    assert (meta["seed"], meta["n"], meta["overrides"]) == (4, 3000, {"n": 3000, "seed": 4})
    assert json.loads((directory / "meta.json").read_text())["n"] == 4000  # kept apart


def test_interrupted_run_keeps_finished_cases(tmp_path, tiny, monkeypatch, capsys) -> None:
    calls = []
    real = klest.studies.experiment.simulate

    def interrupt_second_case(*args, **kwargs):
        calls.append(kwargs["case"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(klest.studies.experiment, "simulate", interrupt_second_case)
    assert main(["run", str(tiny), "--out", str(tmp_path), "--workers", "1"]) == 130
    err = capsys.readouterr().err
    assert "interrupted; finished cases are stored in" in err and "(run again to resume)" in err
    assert read_results(tmp_path / "tiny")["case"].unique().tolist() == ["near"]
    monkeypatch.setattr(klest.studies.experiment, "simulate", real)
    assert main(["run", str(tiny), "--out", str(tmp_path), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "[1/2] near: reused the stored result" in err and "[2/2] far: 4,000 draws" in err


@pytest.mark.klest_subprocess
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TINY.replace("loc = 1.0", "scale = -1.0"), "cases[1].p.scale: must be reals in (0, inf)"),
        (TINY.replace('"k2"]', '"k4"]'), "estimators[1]: unknown estimator 'k4'"),
        (TINY.replace("n = 4000", "n = 4000\nn = 5"), "invalid TOML: Cannot overwrite a value"),
    ],
)
def test_config_errors_exit_1_with_one_line(tmp_path, text, expected) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    out = run("run", str(path), "--out", str(tmp_path / "out"))
    assert out.returncode == 1
    assert out.stderr.endswith("\n") and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"klest: error: {path}: {expected}"), out.stderr
    assert out.stdout == "" and not (tmp_path / "out").exists()


@pytest.mark.klest_subprocess
def test_missing_file_and_bad_options(tmp_path, tiny, capsys) -> None:
    missing = run("run", str(tmp_path / "absent.toml"))
    assert missing.returncode == 1
    assert missing.stderr == f"klest: error: {tmp_path / 'absent.toml'}: no such file\n"
    for args, message in (
        ([str(tiny), "--n", "0"], "argument --n: must be an integer >= 1, got 0"),
        ([str(tiny), "--workers", "two"], "argument --workers: not an integer: 'two'"),
        ([str(tiny), "--seed", "-1"], "argument --seed: must be an integer >= 0, got -1"),
        ([], "the following arguments are required: CONFIG"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["run", *args])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_unwritable_output_and_bad_scheduler_are_one_line_errors(tmp_path, tiny, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["run", str(tiny), "--out", str(blocker)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("klest: error: cannot write ") and err.count("\n") == 1
    assert main(["run", str(tiny), "--scheduler", "no-port-here"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("klest: error: cannot connect to the Dask scheduler at no-port-here")


def test_scheduler_runs_on_dask_with_identical_results(tmp_path, tiny, capsys) -> None:
    distributed = pytest.importorskip("distributed")
    args = ["run", str(tiny), "--n", "300000", "--force"]
    assert main([*args, "--out", str(tmp_path / "local"), "--workers", "1"]) == 0
    # one worker thread: see the report on thread-based executors in the engine
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        code = main(
            [*args, "--out", str(tmp_path / "dask"), "--scheduler", cluster.scheduler_address]
        )
    assert code == 0
    local, remote = (
        read_results(tmp_path / "local" / "tiny-n300000"),
        read_results(tmp_path / "dask" / "tiny-n300000"),
    )
    assert local.equals(remote)
    capsys.readouterr()


def test_list_shows_the_experiments(capsys) -> None:
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert f"experiments ({default_experiments_dir()}):" in text
    line = next(line for line in text.splitlines() if line.strip().startswith("schulman_blog"))
    assert "2 cases" in line and "Schulman (2020)" in line


@pytest.mark.klest_subprocess
def test_schulman_blog_reproduces_both_tables(tmp_path) -> None:
    config = default_experiments_dir() / "schulman_blog.toml"
    out = run("run", str(config), "--n", "200000", "--out", str(tmp_path), "--workers", "2")
    assert out.returncode == 0, out.stderr
    frame = read_results(tmp_path / "schulman_blog-n200000").set_index(["case", "estimator"])
    exact = {  # Schulman's tables: (bias/true, stdev/true); ours to 4 digits
        ("KL = 0.005", "k1"): (0.0, 20.0), ("KL = 0.005", "k2"): (0.0025, 1.418),
        ("KL = 0.005", "k3"): (0.0, 1.417), ("KL = 0.5", "k1"): (0.0, 2.0),
        ("KL = 0.5", "k2"): (0.25, 1.732), ("KL = 0.5", "k3"): (0.0, 1.695),
    }  # fmt: skip
    z = 5.0  # per-check false-failure rate ~6e-7
    for key, (bias, std) in exact.items():
        row = frame.loc[key]
        assert math.isclose(row["exact_rel_bias"], bias, abs_tol=5e-5), key
        assert math.isclose(row["exact_rel_std"], std, rel_tol=5e-4), key
        truth = row["truth"]
        assert abs(row["rel_bias"] - row["exact_rel_bias"]) <= z * row["se_mean"] / truth, key
        assert abs(row["rel_std"] - row["exact_rel_std"]) <= z * row["se_std"] / truth, key
    assert set(frame["n_draws"]) == {200_000} and set(frame["seed"]) == {2020}
    assert "### KL = 0.005" in out.stdout and "### KL = 0.5" in out.stdout
    assert "| k2 | " in out.stdout and " | 0.0025 | " in out.stdout and " | 1.732 |" in out.stdout


def test_builtin_schulman_config_matches_the_file() -> None:
    from klest.cli import SCHULMAN_BLOG
    from klest.studies.experiment import load_config, parse_config

    builtin = parse_config(SCHULMAN_BLOG, source="<built-in>")
    from_file = load_config(default_experiments_dir() / "schulman_blog.toml")
    assert builtin == from_file and builtin.config_hash() == from_file.config_hash()


def test_demo_falls_back_to_the_builtin_config(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(klest.studies.experiment, "default_experiments_dir", lambda: tmp_path)
    assert main(["demo", "--n", "20000", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "| k2 | 0.0025 | 1.418 | 0.25 | 1.732 |" in text
    assert "Monte Carlo, n = 20,000 draws per case, seed 2020" in text
    assert "### KL = 0.5" in text and list(tmp_path.iterdir()) == []


#: runs `klest run` in a fresh interpreter, then reports which heavy modules it imported
_IMPORTS = """
import sys
from klest.cli import main
assert main(sys.argv[1:]) == 0
print(sorted(m for m in ("matplotlib", "klest.report.plots", "klest.report.figures")
             if m in sys.modules))
"""


@pytest.mark.klest_subprocess
@pytest.mark.parametrize(
    "args",
    [
        ("schulman_blog", "--n", "2000", "--workers", "1"),
        ("rl_gradient_coefficients",),
    ],
)
def test_run_of_a_non_figure_config_does_not_import_matplotlib(tmp_path, args) -> None:
    command = [sys.executable, "-c", _IMPORTS, "run", *args, "--out", str(tmp_path)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"

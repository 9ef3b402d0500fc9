"""``klest diagnose LOGS --out DIR`` (issue 16): the files it writes, what report.md and
summary.json say, and one-line errors for bad logs. In-process (klest.cli.main), ~3 s."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import klest
from klest.cli import main
from klest.diagnostics import write_logs
from klest.diagnostics.synthetic import pair_exact, pair_log
from klest.report.diagnosis_files import write_diagnosis


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """Synthetic logs of q = N(0, 1) against p = N(0.3, 1) (exact KL 0.045), 300 sequences."""
    q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.3, scale=1.0)
    frame = pair_log(q, p, n_sequences=300, rng=np.random.default_rng(0))
    path = tmp_path_factory.mktemp("logs") / "run.npz"
    write_logs(path, frame)
    return path, pair_exact(q, p, ("k3",)).kl_token


def test_writes_the_report_the_summary_and_the_figures(logs, tmp_path, capsys) -> None:
    path, exact = logs
    out = tmp_path / "diag"
    assert main(["diagnose", str(path), "--out", str(out), "--framework", "verl:low_var_kl"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["report.md", "summary.json", "histograms.png", "histograms.pdf",
                            "tail.png", "tail.pdf"])  # fmt: skip
    assert (out / "tail.png").read_bytes().startswith(b"\x89PNG")
    summary = json.loads((out / "summary.json").read_text())  # strict JSON: no NaN tokens
    assert summary == json.loads(json.dumps(klest.diagnose(path, frameworks=(
        "verl:low_var_kl",)).to_json()))  # fmt: skip
    report = (out / "report.md").read_text()
    assert "| estimator | level | estimate | se | khat | finite_variance |" in report
    assert "verl:low_var_kl" in report and "## Recommendation" in report
    printed = capsys.readouterr().out
    assert "k3" in printed and "sequence" in printed
    # the k3 token-level estimate on the terminal is within 5 clustered SE of the exact KL
    d = klest.diagnose(path)
    row = d.summary.query("estimator == 'k3' and level == 'token'").iloc[0]
    assert abs(row["estimate"] - exact) <= 5 * row["se"]


def test_bad_logs_give_one_line_errors(tmp_path, capsys) -> None:
    missing = tmp_path / "missing.parquet"
    assert main(["diagnose", str(missing), "--out", str(tmp_path / "o")]) == 1
    assert capsys.readouterr().err.strip() == f"klest: error: {missing}: no such file"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sequence": 0, "logprob": -1.0, "ref_logprob": -1.2}\n{"sequence": 0,\n')
    assert main(["diagnose", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("klest: error: ") and "\n" not in err and "line 2" in err
    nan = tmp_path / "nan.npz"
    np.savez(nan, sequence=np.zeros(3, np.int64), logprob=np.array([-1.0, np.nan, -1.0]),
             ref_logprob=np.full(3, -1.0))  # fmt: skip
    assert main(["diagnose", str(nan), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert "column 'logprob'" in err and "row 1" in err and "\n" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_infinite_variance_withholds_the_error_bar(tmp_path) -> None:
    """q = N(0, 1) against p = N(0, 3^2): Var[k3] is infinite (s^2 >= 2); the report shows
    no se for k3 and the summary says finite_variance False."""
    q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.0, scale=3.0)
    frame = pd.DataFrame(pair_log(q, p, n_sequences=800, rng=np.random.default_rng(1)))
    d = klest.diagnose(frame)
    row = d.summary.query("estimator == 'k3' and level == 'token'").iloc[0]
    assert not row["finite_variance"] and np.isnan(row["se"]) and row["khat"] >= 0.5
    paths = write_diagnosis(d, tmp_path)
    text = next(p for p in paths if p.name == "report.md").read_text()
    k3_line = next(line for line in text.splitlines() if line.startswith("| k3 | token |"))
    assert k3_line.split(" | ")[3] == "—"  # the se cell

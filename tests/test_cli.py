"""The klest command: --help, demo, list, and argument errors (run as a real subprocess)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import klest
from klest.cli import main


def _klest() -> list[str]:
    script = Path(sys.executable).with_name("klest")
    return [str(script)] if script.exists() else [shutil.which("klest") or "klest"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_klest(), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.klest_subprocess
def test_help() -> None:
    out = run("--help")
    assert out.returncode == 0
    assert "demo" in out.stdout and "list" in out.stdout


def test_no_command_prints_help(capsys) -> None:
    assert main([]) == 0
    assert "usage: klest" in capsys.readouterr().out


@pytest.mark.klest_subprocess
def test_demo_prints_schulmans_exact_table_and_monte_carlo() -> None:
    out = run("demo", "--n", "20000", "--workers", "1")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # Schulman's table, exact: k1 0/20 and 0/2, k2 0.0025/1.418 and 0.25/1.732, k3 0/1.417, 0/1.695
    assert "| k1 | 0 | 20 | 0 | 2 |" in text
    assert "| k2 | 0.0025 | 1.418 | 0.25 | 1.732 |" in text
    assert "| k3 | 0 | 1.417 | 0 | 1.695 |" in text
    assert "Monte Carlo, n = 20,000" in text


def test_list_shows_every_family_and_estimator(capsys) -> None:
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for family in klest.FAMILIES:
        assert family in text
    for name in klest.estimators.names():
        assert name in text


@pytest.mark.klest_subprocess
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--n", "0"], "must be an integer >= 1"),
        (["demo", "--n", "ten"], "not an integer"),
        (["demo", "--seed", "-3"], "must be an integer >= 0"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(args, message) -> None:
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr

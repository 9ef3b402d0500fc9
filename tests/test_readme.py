"""Every command and code block in README.md runs (the README cannot go stale).

Python blocks are executed in order. Shell commands are run as shown, with these stated
adjustments: commands that write files get ``--out`` pointing into a temporary directory
(never into the repository), ``klest figures`` gets ``--only fig1_rel_std --n 20000``
(tests/test_figures.py builds and checks every figure; here the command itself must run),
the benchmark scripts get ``--quick`` (their full runs are measurements, which belong in
benchmarks/, not tests), ``make test`` is what CI runs (it is running this test), ``make
notebooks`` is exercised by tests/test_notebooks.py (fast mode).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent

PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
SHELL_LINES = [
    line.split("  #")[0].strip()
    for block in re.findall(r"```sh\n(.*?)```", README, re.S)
    for line in block.splitlines()
    if line.strip() and not line.strip().startswith("#")
]
COVERED_ELSEWHERE = {"make test": "CI's own command", "make notebooks": "test_notebooks.py"}


def test_readme_has_blocks() -> None:
    assert len(PYTHON_BLOCKS) >= 3 and len(SHELL_LINES) >= 6


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_python_block_runs(index: int) -> None:
    namespace: dict[str, object] = {"__name__": f"readme_block_{index}"}
    exec(compile(PYTHON_BLOCKS[index], f"README.md python block {index}", "exec"), namespace)


def _adjusted(command: str, tmp_path: Path) -> list[str]:
    args = shlex.split(command)
    if args[0] == "klest":
        args[0] = str(BIN / "klest")
        if args[1] in ("run", "figures", "diagnose"):
            args += ["--out", str(tmp_path / "out")]
        if args[1] == "figures":
            args += ["--only", "fig1_rel_std", "--n", "20000"]
    elif args[0] == ".venv/bin/python":
        args[0] = sys.executable
        args.append("--quick")
    return args


@pytest.mark.parametrize("command", SHELL_LINES)
def test_shell_command_runs(command: str, tmp_path: Path) -> None:
    if command in COVERED_ELSEWHERE:
        pytest.skip(f"{command}: {COVERED_ELSEWHERE[command]}")
    result = subprocess.run(
        _adjusted(command, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_schulman_table_in_the_readme_is_what_klest_prints() -> None:
    out = subprocess.run(
        [str(BIN / "klest"), "demo"], cwd=ROOT, capture_output=True, text=True, timeout=600
    ).stdout
    for row in ("| k2 | 0.00239 ± 0.00045 | 0.0025 | 1.41809 ± 0.00084 | 1.418 |",
                "| k3 | -0.00091 ± 0.00053 | 0 | 1.6838 ± 0.0046 | 1.695 |"):  # fmt: skip
        assert row in out

"""The notebooks: each stored file as ``make notebooks`` leaves it, and a fresh-kernel run of each.

The stored checks need no kernel: one ``parameters`` cell, every code cell executed in order
(counts 1, 2, ...), figures present, no error and no stray stderr output. The runs execute every
notebook top to bottom in a fresh kernel of this interpreter with ``KLEST_FAST=1`` (small sizes),
through the same ``notebooks/run_notebooks.py`` that ``make notebooks`` uses; a failing cell
raises ``nbclient.exceptions.CellExecutionError`` with the cell's traceback.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = [
    "01_reproduce_schulman.ipynb",
    "02_estimator_zoo.ipynb",
    "03_language_model_tokens.ipynb",
    "04_gradients.ipynb",
    "05_sequence_gradients.ipynb",
    "06_diagnose_a_run.ipynb",
]
CELL_TIMEOUT = 120  # seconds per cell with the fast sizes (each notebook takes a few seconds)


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "run_notebooks", NOTEBOOK_DIR / "run_notebooks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def test_runner_finds_exactly_the_six_notebooks() -> None:
    assert [path.name for path in _runner().notebooks()] == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_one_parameters_cell_switched_by_klest_fast(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    tagged = [cell for cell in nb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name}: {len(tagged)} cells tagged 'parameters'"
    params = tagged[0]
    assert params.cell_type == "code"
    assert 'os.environ.get("KLEST_FAST"' in params.source
    first_code = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert first_code is params, f"{name}: the parameters cell must be the first code cell"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_with_the_outputs_of_a_top_to_bottom_run(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    assert counts == list(range(1, len(code) + 1)), f"{name}: execution counts {counts}"
    outputs = _outputs(nb)
    assert not [out for out in outputs if out.output_type == "error"], f"{name}: stored error"
    stderr = [out.text for out in outputs if out.output_type == "stream" and out.name == "stderr"]
    assert not stderr, f"{name}: stray stderr output (warnings are caught and printed): {stderr}"
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert figures, f"{name}: no stored figure"
    prose = [cell for cell in nb.cells if cell.cell_type == "markdown"]
    assert len(prose) >= len(code) // 2, f"{name}: too little prose"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_runs_top_to_bottom_in_a_fresh_kernel(name: str) -> None:
    nb = _runner().execute(NOTEBOOK_DIR / name, fast=True, timeout=CELL_TIMEOUT)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    assert not [out for out in _outputs(nb) if out.output_type == "error"]

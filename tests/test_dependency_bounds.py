"""The declared lower bounds of the dependencies are the versions that `make test` tests.

`make test` runs the suite twice: in .venv with the newest releases and in .venv-min with
ci/constraints-min.txt, which pins every `>=` bound of pyproject.toml (runtime dependencies and
the dev extra). These tests keep the two files in step, and in the lowest lane (the Makefile
sets KLEST_TEST_LANE=lowest) check that the interpreter really runs those versions.
"""

from __future__ import annotations

import ast
import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "ci" / "constraints-min.txt"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_lower_bounds() -> dict[str, Version]:
    """name -> the version of its `>=` bound, over [project] dependencies and the dev extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds: dict[str, Version] = {}
    for line in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        req = Requirement(line)
        for spec in req.specifier:
            if spec.operator == ">=":
                bounds[_canonical(req.name)] = Version(spec.version)
    return bounds


def pinned_versions(path: Path = CONSTRAINTS) -> dict[str, Version]:
    """name -> version of each `name==version` line of ci/constraints-min.txt."""
    pins: dict[str, Version] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"ci/constraints-min.txt: {raw!r} is not a name==version pin"
            pins[_canonical(name)] = Version(version)
    return pins


def test_every_lower_bound_is_pinned_at_exactly_that_version() -> None:
    bounds, pins = declared_lower_bounds(), pinned_versions()
    assert {"numpy", "scipy", "pandas", "matplotlib", "pytest"} <= bounds.keys()
    # dask[distributed] pins distributed to the same release as dask
    expected = {**bounds, "distributed": bounds["dask"]}
    assert pins == expected


def test_versions_of_the_running_lane() -> None:
    lowest = os.environ.get("KLEST_TEST_LANE") == "lowest"
    bounds = declared_lower_bounds()
    for name, pin in pinned_versions().items():
        installed = Version(metadata.version(name))
        if lowest:
            assert installed == pin, f"{name} {installed} in the lowest lane, pinned {pin}"
        else:
            assert installed >= bounds.get(name, pin), f"{name} {installed} below its bound"


@pytest.mark.parametrize(
    ("text", "error"),
    [("numpy>=1.26\n", "not a name==version pin"), ("numpy==1.26.0  # lowest\n", None)],
)
def test_constraint_lines_must_be_exact_pins(tmp_path: Path, text: str, error: str | None) -> None:
    path = tmp_path / "c.txt"
    path.write_text(text)
    if error is None:
        assert pinned_versions(path) == {"numpy": Version("1.26.0")}
    else:
        with pytest.raises(AssertionError, match=error):
            pinned_versions(path)


def test_the_lowest_lane_leaves_out_only_process_level_modules() -> None:
    from conftest import LOWEST_LANE_LEAVES_OUT

    assert all((ROOT / path).is_file() for path in LOWEST_LANE_LEAVES_OUT)
    # exactly these (a subprocess each: CLI, README, notebooks, figure set, killed pools, a
    # real Dask cluster, compiler and wheel builds); adding one is a decision made here
    assert {Path(p).name for p in LOWEST_LANE_LEAVES_OUT} == {
        "test_readme.py", "test_notebooks.py", "test_figures.py", "test_worker_pool.py",
        "test_dask_cluster.py", "test_cli_faults.py", "test_install.py",
    }  # fmt: skip
    kept = {"test_store.py", "test_honest_output.py", "test_plots.py", "test_exact.py"}
    assert not kept & {Path(p).name for p in LOWEST_LANE_LEAVES_OUT}


def _subprocess_tests(path: Path) -> dict[str, tuple[bool, bool]]:
    """test name -> (marked klest_subprocess, its body calls run(...) or subprocess.run)."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
            continue
        marks = {ast.unparse(d) for d in node.decorator_list}
        calls = {ast.unparse(c.func) for c in ast.walk(node) if isinstance(c, ast.Call)}
        found[node.name] = (
            "pytest.mark.klest_subprocess" in marks,
            bool(calls & {"run", "subprocess.run"}),
        )
    return found


def test_exactly_the_cli_tests_that_start_the_klest_command_leave_the_lowest_lane() -> None:
    for module in ("test_cli.py", "test_cli_run.py"):
        tests = _subprocess_tests(ROOT / "tests" / module)
        assert any(marked for marked, _ in tests.values()), module
        for name, (marked, starts) in tests.items():
            assert marked == starts, f"{module}::{name}: marked {marked}, starts klest {starts}"
    others = [
        p
        for p in (ROOT / "tests").glob("test_*.py")
        if p.name not in ("test_cli.py", "test_cli_run.py")
    ]
    for path in others:  # the other process-level tests leave as whole modules
        assert (
            "klest_subprocess" not in path.read_text() or path.name == "test_dependency_bounds.py"
        )


@pytest.mark.xdist_group("grouping_check")
def test_xdist_groups_reach_the_scheduler(request: pytest.FixtureRequest) -> None:
    """Under `--dist loadgroup` (make test) a grouped test's node id carries its group, which
    is how pytest-xdist keeps a group on one worker (pytest 9.2 broke that: pyproject.toml)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not a --dist loadgroup worker")
    assert request.node.nodeid.endswith("@grouping_check"), request.node.nodeid

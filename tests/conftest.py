"""Test-wide settings.

Hypothesis runs derandomized: the examples are a fixed function of each test, so CI sees the
same inputs on every run (DESIGN.md: fixed seeds; a failure is a bug to fix, not a flake).
Run `pytest --hypothesis-profile=explore` to search new examples locally.

`make test` runs the suite twice, with pytest-xdist on two processes: in .venv (newest releases)
and in .venv-min (the declared lower bounds, ci/constraints-min.txt). Under xdist every test
must stand alone: fixed seeds, files under ``tmp_path``, servers on port 0.
"""

import os

# OpenBLAS starts a thread per extra core when NumPy and SciPy load, and those threads spin
# (busy-wait for work) until a timeout: 0.2-0.4 s of CPU per process that loads klest, on the
# core the other xdist worker needs. No test uses threaded BLAS (klest reduces on one BLAS
# thread anyway: klest.engine.runner), so every test process and every process a test starts
# (CLI runs, notebook kernels, pool workers) loads OpenBLAS single-threaded.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest
from hypothesis import settings

# no example database: a stored failure would be replayed first, so a run would depend on
# the runs before it (and on which xdist worker ran what)
settings.register_profile("default", derandomize=True, deadline=None, database=None)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=500)
settings.load_profile("default")


# The lowest lane (KLEST_TEST_LANE=lowest, set by `make test-lowest`) runs every test of
# klest's numbers, configs, store and plots at the declared lower bounds, and leaves out the
# modules that test processes rather than library versions: subprocess runs of the CLI and the
# README, notebooks in fresh kernels, the figure set, worker pools killed mid-run, the real Dask
# cluster (each runs in the newest lane). The budget is 8 minutes for `make test` on 2 cores; a
# fresh clone took 9 min 54 s on a shared 2-core Intel Xeon (newest lane 298 s, lowest 200 s,
# fallback 30 s, installs and lint the rest): still over it.
LOWEST_LANE_LEAVES_OUT = (
    "tests/test_readme.py",
    "tests/test_notebooks.py",
    "tests/test_figures.py",
    "tests/test_worker_pool.py",
    "tests/test_dask_cluster.py",
    "tests/test_cli_faults.py",
    "tests/test_install.py",
)


def _process_level(item: pytest.Item) -> bool:
    """A test of processes: in a module of LOWEST_LANE_LEAVES_OUT, or marked klest_subprocess
    (a test of a module kept in the lowest lane that runs the klest command itself)."""
    in_module = item.nodeid.split("::")[0] in LOWEST_LANE_LEAVES_OUT
    return in_module or item.get_closest_marker("klest_subprocess") is not None


def _is_short(item: pytest.Item) -> bool:
    grouped = item.get_closest_marker("xdist_group") is not None
    return not grouped and not _process_level(item)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the long ones first: the xdist groups (figure set, native fuzz, LM pipeline, Dask
    # cluster: one worker's each for 15-60 s) and the process-level modules (seconds a
    # test). Handed out last, one of them kept a worker busy while the other had nothing
    # left (the lowest lane used 1.5 of its 2 cores; 1.75 with its groups first)
    items.sort(key=_is_short)
    if os.environ.get("KLEST_TEST_LANE") != "lowest":
        return
    dropped = [item for item in items if _process_level(item)]
    if dropped:
        items[:] = [item for item in items if item not in dropped]
        config.hook.pytest_deselected(items=dropped)


@pytest.fixture
def each_level():
    """The SIMD levels of klest's kernels on this CPU, for a body to run at each in turn; the
    best level is restored afterwards (tests of the one-pass kernels' bits)."""
    from klest import native  # deferred: the fixture's users import klest anyway

    try:
        yield list(range(native.best_simd_level() + 1))
    finally:
        native.set_simd_level(native.best_simd_level())

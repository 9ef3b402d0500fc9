"""``import klest`` stays light: the engine's processes (pool workers, Dask workers) import
klest, and every module they load is resident in each of them. pandas (and the pyarrow that
pandas 3 loads with it, ~70 MB), arviz-stats and torch are loaded only where they are used;
the subpackages that need them (``klest.rl``, ``klest.gradients``, ``klest.sequence``,
``klest.diagnostics``) are imported on first use, by attribute or by ``import``.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pandas", "pyarrow", "arviz_stats", "torch", "matplotlib", "transformers")


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_klest_and_a_simulation_load_none_of_the_heavy_libraries() -> None:
    loaded = _run(
        "import json, sys, klest\n"
        "klest.simulate(klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=1.0, scale=1.0),"
        " ['k1', 'k3'], n=10_000, seed=0)\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert loaded == []


#: the scipy subpackages whose import alone took ~1 s of a cold `import klest` (of every CLI
#: command, pool worker and Dask worker): each is imported where it is first used
SCIPY_ON_USE = ("scipy.stats", "scipy.optimize", "scipy.integrate")


def test_import_klest_and_its_gradients_load_scipy_stats_optimize_integrate_on_use() -> None:
    loaded = _run(
        "import json, sys, klest, klest.gradients, klest.sequence\n"
        f"print(json.dumps([m for m in {SCIPY_ON_USE!r} if m in sys.modules]))"
    )
    assert loaded == []


def test_lazy_subpackages_and_diagnose_are_attributes_of_klest() -> None:
    got = _run(
        "import json, klest\n"
        "names = [klest.rl.__name__, klest.gradients.__name__, klest.sequence.__name__,"
        " klest.diagnostics.__name__, klest.diagnose.__module__]\n"
        "assert {'rl', 'gradients', 'sequence', 'diagnostics', 'diagnose'} <= set(dir(klest))\n"
        "print(json.dumps(names))"
    )
    assert got == ["klest.rl", "klest.gradients", "klest.sequence", "klest.diagnostics",
                   "klest.diagnostics.diagnosis"]  # fmt: skip


def test_software_versions_name_the_installed_pandas() -> None:
    import pandas as pd

    from klest.engine.results import software_versions

    assert software_versions()["pandas"] == pd.__version__

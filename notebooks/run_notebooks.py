"""Execute klest's notebooks top to bottom, each in a fresh kernel, and store their outputs.

    python notebooks/run_notebooks.py                  # all notebooks, full sizes, in place
    python notebooks/run_notebooks.py 02_estimator_zoo.ipynb
    python notebooks/run_notebooks.py --fast --check   # KLEST_FAST=1, nothing written

``make notebooks`` runs the first form. The kernel is this interpreter (``sys.executable``),
declared in a temporary kernel-spec directory, so the notebooks run in the same environment
as the tests whatever other Jupyter kernels the machine has. With ``--fast`` the kernel gets
``KLEST_FAST=1``, which each notebook's ``parameters`` cell turns into small sample sizes.
Stored notebooks carry no timing metadata, so re-running only changes what the code printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL_NAME = "klest-notebooks"
#: seconds a single cell may run (full sizes on 2 cores stay far below this)
CELL_TIMEOUT = 1200


def notebooks() -> list[Path]:
    """The notebooks in execution order: ``notebooks/NN_*.ipynb``."""
    return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def _kernel_manager(spec_dir: Path) -> KernelManager:
    """A kernel manager whose only kernel is this interpreter running ipykernel."""
    spec = spec_dir / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    kernel = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python {sys.version_info.major}.{sys.version_info.minor} (klest)",
        "language": "python",
    }
    (spec / "kernel.json").write_text(json.dumps(kernel, indent=1))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)], ensure_native_kernel=False)
    # IPC sockets in the private spec directory, not TCP ports: a kernel picks its ports by
    # binding and releasing them, which races with every other process starting at the same
    # time (parallel test workers, Dask clusters) -- "Address already in use"
    return KernelManager(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=specs,
        transport="ipc",
        ip=str(spec_dir / "kernel"),
    )


def kernel_environment(*, fast: bool) -> dict[str, str]:
    """The kernel's environment: ours, KLEST_FAST set or cleared, the inline plot backend."""
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # a non-interactive backend here would hide the figures
    if fast:
        env["KLEST_FAST"] = "1"
    else:
        env.pop("KLEST_FAST", None)
    return env


def execute(
    path: Path, *, fast: bool = False, timeout: int = CELL_TIMEOUT
) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` top to bottom in a fresh kernel; return it with outputs.

    Raises ``nbclient.exceptions.CellExecutionError`` at the first cell that fails.
    """
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="klest-kernel-") as spec_dir:
        km = _kernel_manager(Path(spec_dir))
        client = NotebookClient(
            nb,
            km=km,
            timeout=timeout,
            record_timing=False,
            resources={"metadata": {"path": str(path.parent)}},
        )
        try:
            client.execute(env=kernel_environment(fast=fast))
        finally:  # nbclient leaves a kernel it did not create running: stop it here
            if km.has_kernel:
                km.shutdown_kernel(now=True)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    parser.add_argument("--fast", action="store_true", help="small sizes (KLEST_FAST=1)")
    parser.add_argument("--check", action="store_true", help="execute only; write nothing")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = [HERE / name for name in args.names] if args.names else notebooks()
    for path in paths:
        if not path.is_file():
            parser.error(f"no notebook {path}")
    for path in paths:
        started = time.perf_counter()
        nb = execute(path, fast=args.fast, timeout=args.timeout)
        elapsed = time.perf_counter() - started
        if not args.check:
            nbformat.write(nb, path)
        mode = "fast" if args.fast else "full"
        print(f"{path.name}: executed ({mode} sizes) in {elapsed:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

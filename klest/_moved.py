"""The old flat module paths (``klest.plots``, ``klest.results``, ...), kept importable.

klest's modules moved into one subpackage per layer. ``install()`` (called by
``klest/__init__``) puts a finder at the front of ``sys.meta_path`` that maps each old name to
its new module: ``import klest.plots`` returns the very module object ``klest.report.plots``
(``sys.modules`` holds it under both names) with a DeprecationWarning that names the new path.
Submodules follow their package (``klest.closed_forms.normal``). Nothing is imported until an
old name is asked for. ``attribute()`` serves ``klest.tables``-style attribute access.

This module sits outside the layers: it imports nothing of klest at module level.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import types
import warnings

__all__ = ["MOVED", "attribute", "install", "new_name"]

#: old module name -> the module that now holds its contents
MOVED: dict[str, str] = {
    "klest._native": "klest.native",
    "klest.fast_normal": "klest.native.sampler",
    "klest.log_ratio": "klest.distributions.log_ratio",
    "klest.numerics": "klest.integrate",
    "klest.quadrature": "klest.integrate.quadrature",
    "klest.enumeration": "klest.integrate.enumeration",
    "klest.closed_forms": "klest.divergence.closed_forms",
    "klest.exact_gaussian": "klest.exact.gaussian",
    "klest.moments": "klest.engine.moments",
    "klest.results": "klest.engine.results",
    "klest.error_bars": "klest.engine.error_bars",
    "klest.worker_pool": "klest.engine.worker_pool",
    "klest.dask_connect": "klest.engine.dask_connect",
    "klest._malloc": "klest.engine.allocator",
    "klest._checks": "klest.studies.checks",
    "klest._config": "klest.studies.config",
    "klest.experiment": "klest.studies.experiment",
    "klest.store": "klest.studies.store",
    "klest.rl_studies": "klest.studies.rl_studies",
    "klest.tables": "klest.report.tables",
    "klest.plots": "klest.report.plots",
    "klest.plots_rl": "klest.report.plots_rl",
    "klest.plot_style": "klest.report.style",
    "klest.figures": "klest.report.figures",
    "klest.figure_data": "klest.report.figure_data",
    "klest.figure_files": "klest.report.figure_files",
    "klest.claims": "klest.report.claims",
}


def new_name(old: str) -> str | None:
    """The new name of the old module ``old`` (or of a submodule of one), else None."""
    if old in MOVED:
        return MOVED[old]
    head, dot, _ = old.rpartition(".")
    while dot:
        if head in MOVED:
            return f"{MOVED[head]}.{old[len(head) + 1 :]}"
        head, dot, _ = head.rpartition(".")
    return None


_SKIPPED = {__file__, os.path.join(os.path.dirname(__file__), "__init__.py"), importlib.__file__}


def _caller_stacklevel() -> int:
    """The stacklevel of the importer: the first frame outside importlib, klest/__init__ and
    this module (so that the warning points at the line that used the old name)."""
    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = frame.f_code.co_filename
        internal = "importlib" in name and "_bootstrap" in name  # warnings does not count these
        if not internal and name not in _SKIPPED:
            return level
        frame, level = frame.f_back, level + (not internal)
    return level


class _MovedFinder:
    """A meta path finder and loader (importlib's protocols) of the old module names: loading
    one puts the new module in ``sys.modules`` under the old name."""

    def find_spec(self, fullname, path=None, target=None):
        new = new_name(fullname) if fullname.startswith("klest.") else None
        if new is None or importlib.util.find_spec(new) is None:
            return None  # not moved, or gone (klest.closed_forms.nothing): the usual error
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None  # a throwaway module: exec_module replaces it in sys.modules

    def exec_module(self, module: types.ModuleType) -> None:
        old = module.__name__
        new = new_name(old)
        warnings.warn(
            f"{old} moved to {new}: import {new} instead",
            DeprecationWarning,
            stacklevel=_caller_stacklevel(),
        )
        # importlib returns whatever sys.modules holds under the old name once this returns,
        # so the old name becomes an alias of the new module (whose own spec stays untouched)
        sys.modules[old] = importlib.import_module(new)


_FINDER = _MovedFinder()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): before the path finder, which would
    otherwise load a second copy of ``klest.closed_forms.normal`` through the alias' path."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def attribute(name: str) -> types.ModuleType:
    """``klest.<name>`` for a moved module (the root package's ``__getattr__``)."""
    if f"klest.{name}" not in MOVED:
        raise AttributeError(f"module 'klest' has no attribute {name!r}")
    return importlib.import_module(f"klest.{name}")

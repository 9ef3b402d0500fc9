"""The engine's inner layers (issue 11): ``simulate`` computes the truths once
(:mod:`klest.engine.truths`) and hands them to :class:`SimulationResult` as plain data; the
result type only holds and derives (no exact moment, no KL, no warning), and ``simulate``
raises the warnings it derives, as before. Seeds are fixed.
"""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest

import klest
import klest.divergence.registry
import klest.engine.truths
import klest.exact.moments
from klest.engine.plan import RunPlan
from klest.engine.results import ConvergenceWarning, SimulationResult
from klest.engine.truths import Truths, truths

ENGINE = Path(klest.__file__).resolve().parent / "engine"
Q = klest.Normal(loc=0.0, scale=1.0)
WIDE = klest.Normal(loc=0.0, scale=10.0)  # Var_q[k3] = inf: k3's error bar is withheld
NAMES = ("k1", "k2", "k3")


def _simulate(q, p, names, **kwargs) -> SimulationResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return klest.simulate(q, p, list(names), n=20_000, seed=11, block_size=4096, **kwargs)


def _rebuild(res: SimulationResult, known: Truths) -> SimulationResult:
    """``res`` built again from its statistics and the given truths (plain data)."""
    plan = RunPlan(res.q, res.p, res.estimators, res.n, res.seed, res.case, res.block_size,
                   res.edges)  # fmt: skip
    return SimulationResult.build(
        plan,
        res.stats,
        exact=known.exact,
        exact_notes=known.notes,
        truth=known.value,
        fourth_moment_finite=known.fourth_moment_finite,
        elapsed=res.elapsed,
    )


def _forbid_exact_and_kl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every route to an exact moment or a KL raises (not a NotImplementedError, which the
    truths would swallow as "no exact method")."""

    def forbidden(*args, **kwargs):
        raise AssertionError("an exact moment or a KL was computed")

    for module, name in (
        (klest.exact.moments, "exact_moments"),
        (klest.exact, "exact_moments"),
        (klest, "exact_moments"),
        (klest.engine.truths, "exact_moments"),
        (klest.divergence.registry, "kl"),
        (klest.divergence, "kl"),
        (klest, "kl"),
        (klest.engine.truths, "kl"),
    ):
        monkeypatch.setattr(module, name, forbidden)


@pytest.mark.parametrize("exact", [True, False])
def test_a_result_built_from_plain_truths_computes_no_exact_moment_and_no_kl(
    monkeypatch: pytest.MonkeyPatch, exact: bool
) -> None:
    res = _simulate(Q, WIDE, NAMES, exact=exact)
    known = truths(Q, WIDE, res.estimators, exact=exact)
    _forbid_exact_and_kl(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and the result type warns about nothing
        rebuilt = _rebuild(res, known)
    assert rebuilt.to_frame().equals(res.to_frame())
    assert rebuilt.error_bars == res.error_bars and rebuilt.notes == res.notes
    assert rebuilt.fourth_moment_finite == res.fourth_moment_finite
    assert rebuilt.alarms == res.alarms == ("k3",)
    reason = "infinite variance" if exact else "tail-dominated"  # known, or seen in the draws
    assert rebuilt.error_bars["k3"] == (reason, reason)


def test_the_truths_are_plain_data_per_estimator() -> None:
    known = truths(Q, WIDE, NAMES)
    assert known.value == dict.fromkeys(NAMES, float(klest.kl(Q, WIDE)))
    assert known.notes == dict.fromkeys(NAMES, "")
    assert {name: ex.method for name, ex in known.exact.items()} == dict.fromkeys(
        NAMES, "closed_form"
    )
    assert known.fourth_moment_finite == {"k1": True, "k2": True}  # k3: variance infinite
    without = truths(Q, WIDE, NAMES, exact=False)
    assert without.exact == dict.fromkeys(NAMES) and without.fourth_moment_finite == {}
    assert without.value == known.value and without.notes == known.notes


def test_a_missing_exact_method_is_a_note_and_the_kl_still_the_truth() -> None:
    # p's bulk is 1e300 of q's scales away: k3 (a power of r) is out of quadrature's reach
    q, p = klest.StudentT(df=3.0), klest.StudentT(df=3.0, scale=1e300)
    known = truths(q, p, ("k1", "k3"))
    assert known.exact["k3"] is None and known.exact["k1"] is not None
    assert known.notes["k3"].startswith("no exact moments: no exact method for 'k3'")
    assert known.value["k3"] == known.value["k1"] == float(klest.kl(q, p))
    assert "k3" not in known.fourth_moment_finite


def test_simulate_raises_the_derived_warnings_at_its_caller() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = klest.simulate(Q, WIDE, list(NAMES), n=20_000, seed=11, block_size=4096)
    assert [(w.category, str(w.message), w.filename) for w in caught] == [
        (ConvergenceWarning, f"k3: {res.notes['k3']}", __file__)
    ]
    assert res.notes["k3"].startswith("the exact variance is infinite")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 2.0}, "n must be an integer >= 1, got 2.0"),
        ({"n": True}, "n must be an integer >= 1, got True"),
        ({"n": 0}, "n must be an integer >= 1, got 0"),
        ({"n": "5"}, "n must be an integer >= 1, got '5'"),
        ({"n": 10, "block_size": 0}, "block_size must be an integer >= 1, got 0"),
        ({"n": 10, "workers": 1.0}, "workers must be an integer >= 1, got 1.0"),
        ({"n": 10, "workers": 0}, "workers must be an integer >= 1, got 0"),
        ({"n": 10, "seed": -1}, "seed must be a non-negative integer or None, got -1"),
        ({"n": 10, "seed": 1.5}, "seed must be a non-negative integer or None, got 1.5"),
    ],
)
def test_argument_errors_keep_their_exact_text(kwargs, message) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        klest.simulate(Q, WIDE, ["k1"], **kwargs)


# ---- the imports, read from the source -----------------------------------------------------


def _imports(path: Path) -> list[tuple[str, int, bool, bool]]:
    """(imported module, line, function level, under TYPE_CHECKING) of every import."""
    found = []

    def visit(node: ast.AST, function: bool, checking: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((a.name, node.lineno, function, checking) for a in node.names)
        elif isinstance(node, ast.ImportFrom):  # from klest import x: klest.x
            base = node.module or ""
            found.extend((f"{base}.{a.name}", node.lineno, function, checking) for a in node.names)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, function, True)
            for child in node.orelse:
                visit(child, function, checking)
        else:
            inner = function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for child in ast.iter_child_nodes(node):
                visit(child, inner, checking)

    visit(ast.parse(path.read_text()), False, False)
    return found


@pytest.mark.parametrize("module", ["results", "error_bars"])
def test_the_result_modules_import_neither_exact_divergence_nor_the_runner(module) -> None:
    forbidden = ("klest.exact", "klest.divergence", "klest.engine.runner", "klest.engine.truths")
    bad = [
        (name, line)
        for name, line, _, _ in _imports(ENGINE / f"{module}.py")
        if name.startswith(forbidden)
    ]
    assert bad == []


def test_the_engine_imports_klest_modules_at_module_top_only() -> None:
    bad = [
        (path.name, name, line)
        for path in sorted(ENGINE.glob("*.py"))
        for name, line, function, checking in _imports(path)
        if name.startswith("klest.") and (function or checking)
    ]
    assert bad == []


@pytest.mark.parametrize("module", ["runner", "results", "error_bars", "plan", "truths"])
def test_a_deferred_import_says_why(module) -> None:
    lines = (ENGINE / f"{module}.py").read_text().splitlines()
    for _, line, function, _ in _imports(ENGINE / f"{module}.py"):
        if function:
            assert "# deferred:" in lines[line - 2], f"{module}.py:{line}: {lines[line - 1]}"

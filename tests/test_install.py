"""Installing klest: the optional, abi3 build of the kernels (setup.py) and the allocator tuning
that must not change a user's process silently (klest/engine/allocator.py).

Fast checks only (~4 s; one real compile of kernels.c, ~1.5 s). The whole no-compiler
install (a fresh venv, no compiler on PATH, ``klest demo`` and the engine tests in fallback
mode) is ci/check_no_compiler.sh, too slow for ``make test``. Every build here runs in a copy
of the tree under ``tmp_path``: nothing is written into the repository.
"""

from __future__ import annotations

import ctypes
import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import klest
from klest.engine import allocator

ROOT = Path(__file__).resolve().parents[1]
WARNING = "klest: the compiled kernels could not be built"


def _source_copy(tmp_path: Path) -> Path:
    """What setup.py needs to build the extension: its config and the klest package."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "klest", src / "klest", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    return src


def _build_ext(src: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", *args],
        cwd=src,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _libraries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("_kernels*") if p.suffix in (".so", ".pyd"))


def test_a_failed_compile_warns_once_and_installs_without_the_kernels(tmp_path: Path) -> None:
    src = _source_copy(tmp_path)
    result = _build_ext(src, "--build-lib", str(tmp_path / "lib"), CC="/bin/false")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count(WARNING) == 1
    assert f"{WARNING} (/bin/false exited with status 1); installing the pure-NumPy" in (
        result.stderr
    )
    assert _libraries(tmp_path) == []


def test_klest_require_native_makes_a_failed_compile_fatal(tmp_path: Path) -> None:
    src = _source_copy(tmp_path)
    result = _build_ext(
        src, "--build-lib", str(tmp_path / "lib"), CC="/bin/false", KLEST_REQUIRE_NATIVE="1"
    )
    assert result.returncode != 0
    assert f"{WARNING} (/bin/false exited with status 1) and KLEST_REQUIRE_NATIVE" in (
        result.stderr
    )


@pytest.mark.skipif(
    shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is None,
    reason="no C compiler here (ci/check_no_compiler.sh covers that case)",
)
def test_the_kernels_build_against_the_limited_api_and_replace_a_stale_copy(
    tmp_path: Path,
) -> None:
    src = _source_copy(tmp_path)
    native = src / "klest" / "native"
    stale = native / f"_kernels{sysconfig.get_config_var('EXT_SUFFIX')}"
    stale.write_bytes(b"")  # an old full-suffix build: Python would import it first
    result = _build_ext(src, "--inplace")
    assert result.returncode == 0, result.stderr[-2000:]
    assert WARNING not in result.stderr
    assert _libraries(native) == ["_kernels.abi3.so"]
    if shutil.which("nm"):  # the only C-API symbol it needs is in the stable ABI
        symbols = subprocess.run(
            ["nm", "-D", "--undefined-only", str(native / "_kernels.abi3.so")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert sorted(s for s in symbols if s.startswith("Py")) == ["PyModule_Create2"]


def test_the_wheel_is_tagged_cp311_abi3(monkeypatch: pytest.MonkeyPatch) -> None:
    import setuptools
    from setuptools.dist import Distribution

    arguments: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: arguments.update(kw))
    runpy.run_path(str(ROOT / "setup.py"))
    wheel = Distribution({"name": "klest", **arguments}).get_command_obj("bdist_wheel")
    wheel.ensure_finalized()
    python, abi, _ = wheel.get_tag()
    assert (python, abi) == ("cp311", "abi3")
    assert all(ext.py_limited_api for ext in arguments["ext_modules"])


# --- the allocator: opt-out, never on import -------------------------------------------------

SPY = """
import ctypes, sys
looked_up = []
class Spy(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            looked_up.append(name)
        return super().__getattr__(name)
ctypes.CDLL = Spy
import klest
from klest.engine import allocator
"""


def _spy(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", SPY + code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_importing_klest_leaves_the_allocator_alone() -> None:
    out = _spy("print(len(looked_up), allocator.tuned())", KLEST_TUNE_MALLOC="")
    assert out == "0 False"


@pytest.fixture
def fresh_allocator(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """allocator as in a new process, with a libc whose mallopt only records its calls."""
    calls: list[tuple[int, int]] = []

    class SpyLibc(ctypes.CDLL):
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(allocator, "_DONE", False)
    monkeypatch.setattr(allocator, "_TUNED", False)
    monkeypatch.setattr(allocator, "_DISABLED", False)
    monkeypatch.delenv(allocator.ENV_VAR, raising=False)
    monkeypatch.setattr(ctypes, "CDLL", SpyLibc)
    return calls


def _small_run() -> None:
    q, p = klest.Normal(loc=0.0, scale=1.0), klest.Normal(loc=0.1, scale=1.0)
    klest.simulate(q, p, ["k1", "k3"], 70_000, seed=1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_a_simulation_tunes_the_allocator_once(fresh_allocator: list) -> None:
    _small_run()
    _small_run()
    assert fresh_allocator == [(-3, 4 << 20), (-1, 32 << 20)]
    assert allocator.tuned()


@pytest.mark.parametrize("value", ["0", "false", "off"])
def test_klest_tune_malloc_0_opts_out(
    fresh_allocator: list, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(allocator.ENV_VAR, value)
    _small_run()
    assert fresh_allocator == []
    assert not allocator.tuned()


def test_disable_tuning_opts_out_here_and_in_later_workers(
    fresh_allocator: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    allocator.disable_tuning()
    assert os.environ[allocator.ENV_VAR] == "0"  # inherited by processes started from now on
    _small_run()
    assert fresh_allocator == []


def test_small_blocks_do_not_tune(fresh_allocator: list) -> None:
    assert not allocator.tune_allocator(block_size=1024)  # 8 KiB arrays: never mmap'ed
    assert fresh_allocator == []

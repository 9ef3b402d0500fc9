"""The C extension of klest (optional); everything else is in pyproject.toml.

klest/native/csrc/kernels.c holds the engine's compiled kernels (PCG64 ziggurat sampler, moment
accumulator, k3), loaded with ctypes by klest/native/bindings.py. -ffp-contract=off keeps a*b + c a
multiply then an add, as in NumPy, so the sampler reproduces NumPy's stream bit for bit.

The extension is optional. Where it cannot be built (no C compiler, CC=/bin/false, a compile or
link error, MSVC), the build prints one warning and installs klest without it; klest then runs
its pure-NumPy engine (klest/native/fallback*.py: the same draws and statistics, slower).
KLEST_REQUIRE_NATIVE=1 makes such a failure fatal (CI, packagers).

The library uses no Python C-API beyond an empty importable module (its functions are reached
through ctypes), so it is built against the limited API of Python 3.11 and the wheel is tagged
cp311-abi3: one wheel per platform serves CPython 3.11 and every later version.
"""

import importlib.machinery
import os
import re
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

# every way "there is no usable C compiler" shows up (CompileError and LinkError are
# CCompilerErrors; a missing executable is an ExecError or OSError, no MSVC a PlatformError)
BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError)
# free-threaded CPython has no limited API
ABI3 = not sysconfig.get_config_var("Py_GIL_DISABLED")


def _short(error: BaseException) -> str:
    """The reason in one short line: "/bin/false exited with status 1", not the whole command."""
    text = " ".join(str(error).split()) or type(error).__name__
    failed = re.search(r"Command '\['([^']*)'.*exit status (-?\d+)", text)
    if failed:
        return f"{failed[1]} exited with status {failed[2]}"
    return text if len(text) <= 200 else text[:197] + "..."


def _required() -> bool:
    return os.environ.get("KLEST_REQUIRE_NATIVE", "").strip().lower() in ("1", "true", "yes")


class OptionalBuildExt(build_ext):
    """build_ext that installs klest without its kernels when they cannot be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except BUILD_ERRORS as error:  # compiler setup itself failed (e.g. no MSVC)
            self._skip(error)
            return
        if self.inplace:
            self._remove_stale_copies()

    def build_extension(self, ext: Extension) -> None:
        try:
            if self.compiler.compiler_type == "msvc":
                raise CCompilerError(
                    "MSVC cannot compile kernels.c (unsigned __int128, GCC attributes)"
                )
            super().build_extension(ext)
        except BUILD_ERRORS as error:
            self._skip(error)

    def _skip(self, error: BaseException) -> None:
        if _required():
            raise SystemExit(
                f"klest: the compiled kernels could not be built ({_short(error)}) and "
                "KLEST_REQUIRE_NATIVE is set"
            ) from error
        reason = _short(error)
        print(
            f"WARNING: klest: the compiled kernels could not be built ({reason}); installing "
            "the pure-NumPy engine (same results, slower; KLEST_REQUIRE_NATIVE=1 makes this "
            "an error)",
            file=sys.stderr,
            flush=True,
        )
        # later steps (copying into the source tree, the wheel's file list) must not look for
        # the library that was not built
        self.extensions = []

    def _remove_stale_copies(self) -> None:
        """After an in-place build, delete the library under any other suffix
        (``_kernels.cpython-311-x86_64-linux-gnu.so`` beside ``_kernels.abi3.so``): Python
        imports the most specific suffix first, so an old copy would shadow the new one."""
        for ext in self.extensions:
            built = Path(self.get_ext_fullpath(ext.name))
            stem = ext.name.rsplit(".", 1)[-1]
            for suffix in importlib.machinery.EXTENSION_SUFFIXES:
                other = built.with_name(stem + suffix)
                if other != built and other.exists():
                    print(f"klest: removing the stale {other}", file=sys.stderr)
                    other.unlink()


setup(
    ext_modules=[
        Extension(
            "klest.native._kernels",
            sources=[
                "klest/native/csrc/kernels.c",
                "klest/native/csrc/full_kl.c",
                "klest/native/csrc/mixture.c",
                "klest/native/csrc/mvn.c",
            ],
            depends=[
                "klest/native/csrc/ziggurat_tables.h",
                "klest/native/csrc/vector_math.h",
                "klest/native/csrc/normal_stream.h",
                "klest/native/csrc/family_stream.h",
            ],
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math", "-std=gnu11"],
            libraries=[] if sys.platform == "win32" else ["m"],
            define_macros=[("Py_LIMITED_API", "0x030B0000")] if ABI3 else [],
            py_limited_api=ABI3,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp311"}} if ABI3 else {},
)

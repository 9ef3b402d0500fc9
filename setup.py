"""The C extension of klest; everything else is in pyproject.toml.

klest/native/csrc/kernels.c holds the engine's compiled kernels (PCG64 ziggurat sampler, moment
accumulator, k3), loaded with ctypes by klest/native/bindings.py. -ffp-contract=off keeps a*b + c a
multiply then an add, as in NumPy, so the sampler reproduces NumPy's stream bit for bit.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "klest.native._kernels",
            sources=["klest/native/csrc/kernels.c"],
            depends=["klest/native/csrc/ziggurat_tables.h"],
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math", "-std=gnu11"],
            libraries=["m"],
        )
    ]
)

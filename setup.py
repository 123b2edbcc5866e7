"""Build of the bitwise CPU kernels (`hf_binary_bert.kernels._bitgemm`); everything else is in pyproject.toml.

The extension is plain C++ against the Python C API (no torch headers, so the build environment never needs torch);
instruction sets are chosen at run time (`hf_binary_bert.kernels.cpu_features()`). The build is optional: without a
C++ compiler (or off x86-64) the package installs anyway and runs the pure-PyTorch reference kernels, with a warning.
"""

import platform

from setuptools import Extension, setup

x86 = platform.machine().lower() in ("x86_64", "amd64")
ext_modules = [
    Extension(
        "hf_binary_bert.kernels._bitgemm",
        sources=["hf_binary_bert/kernels/csrc/bitgemm.cpp"],
        depends=["hf_binary_bert/kernels/csrc/encoder.h", "hf_binary_bert/kernels/csrc/popcount_rate.h"],  # included
        language="c++",
        # -ffp-contract=off: no fused multiply-adds, so the epilogue rounds exactly as kernels/reference.py
        extra_compile_args=["-O3", "-std=c++17", "-fopenmp", "-ffp-contract=off", "-Wno-uninitialized"],
        extra_link_args=["-fopenmp"],
        optional=True,
    )
] if x86 else []

setup(ext_modules=ext_modules)

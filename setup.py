"""Build of the bitwise CPU kernels (`hf_binary_bert.kernels._bitgemm`); everything else is in pyproject.toml.

The extension is plain C++ against the Python C API (no torch headers, so the build environment never needs torch);
instruction sets are chosen at run time (`hf_binary_bert.kernels.cpu_features()`): AVX2 / AVX-512 on x86-64, NEON on
aarch64 (arm64). OpenMP is used where the compiler supports it (a try-compile of `-fopenmp`); without it (Apple clang)
the extension is built single-threaded. The build is optional: without a C++ compiler, on MSVC (the kernels use
GCC/Clang builtins) or on another architecture the package installs anyway and runs the pure-PyTorch reference
kernels, with a one-time warning.
"""

import os
import platform
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

machine = platform.machine().lower()
supported = machine in ("x86_64", "amd64", "aarch64", "arm64")


def _compiles(compiler, flags: list[str]) -> bool:
    """Whether `compiler` (a distutils CCompiler) compiles and links a small OpenMP program with `flags`."""
    source = "#include <omp.h>\nint main() { int n = 0;\n#pragma omp parallel reduction(+ : n)\n n += omp_get_num_threads();\n return n > 0 ? 0 : 1; }\n"
    tmp = tempfile.mkdtemp()
    try:
        path = os.path.join(tmp, "omp_check.cpp")
        with open(path, "w") as f:
            f.write(source)
        devnull = os.open(os.devnull, os.O_WRONLY)
        saved = os.dup(2), os.dup(1)
        os.dup2(devnull, 2), os.dup2(devnull, 1)  # the compiler's own error output is noise here
        try:
            objects = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, "omp_check", output_dir=tmp, extra_postargs=flags,
                                     target_lang="c++")
        finally:
            os.dup2(saved[0], 2), os.dup2(saved[1], 1)
            os.close(devnull), os.close(saved[0]), os.close(saved[1])
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """Adds -fopenmp to the kernels only when the compiler accepts it (try-compile), else builds them single-threaded."""

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":  # GCC/Clang builtins and attributes: not an MSVC build
            print("hf_binary_bert: MSVC cannot build the kernels; the pure-PyTorch reference kernels will run",
                  file=sys.stderr)
            self.extensions = []
            return
        openmp = os.environ.get("HF_BINARY_BERT_OPENMP", "1") != "0" and _compiles(self.compiler, ["-fopenmp"])
        if not openmp:
            print("hf_binary_bert: no OpenMP (the compiler lacks it, or HF_BINARY_BERT_OPENMP=0); building the kernels "
                  "single-threaded",
                  file=sys.stderr)
        for ext in self.extensions:
            if openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
            else:
                ext.extra_compile_args.append("-Wno-unknown-pragmas")
        super().build_extensions()


ext_modules = [
    Extension(
        "hf_binary_bert.kernels._bitgemm",
        sources=["hf_binary_bert/kernels/csrc/bitgemm.cpp"],
        depends=["hf_binary_bert/kernels/csrc/encoder.h", "hf_binary_bert/kernels/csrc/popcount_rate.h",
                 "hf_binary_bert/kernels/csrc/lut_gemm.h", "hf_binary_bert/kernels/csrc/amx_gemm.h",
                 "hf_binary_bert/kernels/csrc/quantized_probs.h",
                 "hf_binary_bert/kernels/csrc/scaled_sign.h", "hf_binary_bert/kernels/csrc/dropout.h"],  # included
        language="c++",
        # -ffp-contract=off: no fused multiply-adds, so the epilogue rounds exactly as kernels/reference.py;
        # -fno-trapping-math: floating-point exceptions are not observed, so loops with float compares and selects
        # (the training kernels' clamps and windows) vectorize — no value changes
        extra_compile_args=["-O3", "-std=c++17", "-ffp-contract=off", "-fno-trapping-math", "-Wno-uninitialized"],
        extra_link_args=[],
        optional=True,
    )
] if supported else []

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})

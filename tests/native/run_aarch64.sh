#!/usr/bin/env bash
# The kernel core on aarch64 (ARM NEON), without an ARM machine: cross-compiles tests/native/test_kernels_main.cpp
# (bitgemm.cpp without its Python bindings) with Debian's aarch64-linux-gnu-g++ as a static binary, with and without
# OpenMP, and runs it under qemu-aarch64 (user-mode emulation): the portable and NEON paths must reproduce the
# reference twins' outputs in tests/native/vectors.bin bit for bit. Also compiles the whole extension source
# (with the Python bindings, syntax only, against this Python's headers) for aarch64.
#
# Installs nothing. Needs: apt-get install g++-aarch64-linux-gnu qemu-user (.ci/run does this on Debian as root).
# Exit status 77 when a tool is missing. Run from anywhere: tests/native/run_aarch64.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CXX="${AARCH64_CXX:-aarch64-linux-gnu-g++}"
QEMU="${QEMU_AARCH64:-qemu-aarch64}"
for tool in "$CXX" "$QEMU"; do
    if ! command -v "$tool" >/dev/null; then
        echo "run_aarch64.sh: $tool not found (Debian: apt-get install g++-aarch64-linux-gnu qemu-user)" >&2
        exit 77
    fi
done
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
flags=(-std=c++17 -O2 -Wall -ffp-contract=off -static -I hf_binary_bert/kernels/csrc)
echo "== $("$CXX" --version | head -n 1)"
"$CXX" "${flags[@]}" -fopenmp tests/native/test_kernels_main.cpp -o "$out/test_kernels_omp"
"$CXX" "${flags[@]}" -Wno-unknown-pragmas tests/native/test_kernels_main.cpp -o "$out/test_kernels_serial"
pyinc="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)"
if [ -n "$pyinc" ] && [ -e "$pyinc/Python.h" ]; then
    "$CXX" -std=c++17 -O1 -Wall -ffp-contract=off -fopenmp -fsyntax-only -I "$pyinc" hf_binary_bert/kernels/csrc/bitgemm.cpp
    echo "== bitgemm.cpp with its Python bindings compiles for aarch64"
fi
for binary in test_kernels_omp test_kernels_serial; do
    echo "== $QEMU $binary"
    OMP_NUM_THREADS=2 "$QEMU" "$out/$binary" tests/native/vectors.bin
done

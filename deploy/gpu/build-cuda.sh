#!/usr/bin/env bash
# Builds `node` and `coordinator` with their `cuda` features (so `--device cuda` works in node
# pretrain, finetune, generate, eval, serve and run, and in coordinator simulate).
#
# With a CUDA toolkit installed (nvcc on PATH), this is only
#     CUDA_COMPUTE_CAP=90 cargo build --release -p ruvdllm-node -p ruvdllm-coordinator \
#         --features ruvdllm-node/cuda,ruvdllm-coordinator/cuda
# Without one (a CI box, a laptop, a build machine with no GPU), the script fetches the pieces of
# the toolkit that the build needs from NVIDIA's wheels on PyPI (nvcc, its crt headers and cicc,
# the runtime headers, cccl, and the cuBLAS / cuRAND / NVRTC / cudart libraries the binary links
# against) into target/cuda-toolkit, and writes a link-time stub of the driver library
# libcuda.so (as the toolkit's own lib64/stubs does: the real libcuda.so.1 of the GPU machine's
# driver is what the binary loads at run time). Candle compiles its kernels to PTX for
# CUDA_COMPUTE_CAP (default 90: H100/H200; 80 = A100, 89 = L4/RTX 40xx).
#
#     bash deploy/gpu/build-cuda.sh   # → target/release/{node,coordinator} (needs python3 -m pip, unzip, gcc)
#
# Environment: CUDA_VERSION (default 13.0; match the GPU machine's driver: `nvidia-smi` prints the
# highest CUDA version it supports), CUDA_COMPUTE_CAP, CARGO_TARGET_DIR.
# The binary needs, at run time, libcublas.so.13, libcublasLt.so.13, libcurand.so.10,
# libcudart.so.13 and libnvrtc.so.13 on LD_LIBRARY_PATH (a CUDA install or the same wheels).
set -euo pipefail

cd "$(dirname "$0")/../.."
CUDA_VERSION=${CUDA_VERSION:-13.0}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

if ! command -v nvcc >/dev/null; then
    tk=$PWD/target/cuda-toolkit
    root=$tk/root/nvidia/cu${CUDA_VERSION%%.*}
    if [ ! -x "$root/bin/nvcc" ] || [ ! -x "$root/nvvm/bin/cicc" ]; then
        mkdir -p "$tk/whl"
        v="==$CUDA_VERSION.*"
        python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tk/whl" \
            "nvidia-cuda-nvcc$v" "nvidia-cuda-crt$v" "nvidia-nvvm$v" "nvidia-cuda-runtime$v" \
            "nvidia-cuda-cccl$v" "nvidia-cuda-nvrtc$v" "nvidia-cublas$v" "nvidia-curand"
        for w in "$tk"/whl/*.whl; do unzip -q -o "$w" -d "$tk/root"; done
    fi
    # Unversioned names for the linker.
    for lib in "$root"/lib/lib{cublas,cublasLt,curand,nvrtc,cudart}.so.*; do
        base=${lib##*/}
        ln -sf "$base" "$root/lib/${base%%.so*}.so"
    done
    # The driver library's link-time stub: every cu* entry point that cudarc's driver bindings
    # declare, as an empty function, with the real library's soname.
    bindings=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*/cudarc-0.19*/src/driver/sys/mod.rs' | sort | tail -n 1)
    if [ -z "$bindings" ]; then
        cargo fetch --locked
        bindings=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*/cudarc-0.19*/src/driver/sys/mod.rs' | sort | tail -n 1)
    fi
    mkdir -p "$tk/stub"
    grep -ohE 'pub unsafe fn cu[A-Za-z0-9_]+' "$bindings" | sed 's/pub unsafe fn //' | sort -u |
        awk '{ print "void " $1 "(void) {}" }' >"$tk/stub/libcuda.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 "$tk/stub/libcuda.c" -o "$root/lib/libcuda.so"
    export CUDA_ROOT=$root CUDA_PATH=$root CUDA_HOME=$root PATH=$root/bin:$PATH
    echo "using nvcc from $root (PyPI wheels, CUDA $CUDA_VERSION), compute capability $CUDA_COMPUTE_CAP"
fi

cargo build --release --locked -p ruvdllm-node -p ruvdllm-coordinator \
    --features ruvdllm-node/cuda,ruvdllm-coordinator/cuda
echo "built ${CARGO_TARGET_DIR:-target}/release/node and coordinator"

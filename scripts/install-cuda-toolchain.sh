#!/usr/bin/env bash
# Installs NVIDIA's nvcc 13.0.x from the Python package index into a cache folder outside the checkout, so
# that every clone on this machine (CI's included) shares it. Pinned to 13.0: a newer nvcc writes a PTX ISA
# that the GPU machine's driver (580, CUDA 13.0) refuses (../shared/GPU.md).
# Idempotent: when the pinned packages are already there it only prints the nvcc path.
# Usage: scripts/install-cuda-toolchain.sh [DIR]   (default $DFGPU_CUDA_HOME or ~/.cache/dfgpu/cuda-13.0)
# Prints the nvcc path as its last line of standard output.
set -euo pipefail

dir=${1:-${DFGPU_CUDA_HOME:-$HOME/.cache/dfgpu/cuda-13.0}}
pins=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
stamp="$dir/.dfgpu-pins"
want="${pins[*]}"

find_nvcc() { find "$dir/lib" -path '*/nvidia/cu13/bin/nvcc' -type f 2>/dev/null | head -n 1; }

nvcc=$(find_nvcc || true)
if [[ -n "$nvcc" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "$nvcc"
    exit 0
fi

py=${PYTHON:-python3}
command -v "$py" >/dev/null || { echo "install-cuda-toolchain: $py not found (needed for pip)" >&2; exit 1; }
echo "install-cuda-toolchain: installing ${pins[*]} into $dir" >&2
[[ -x "$dir/bin/pip" ]] || "$py" -m venv "$dir" >&2
"$dir/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
nvcc=$(find_nvcc)
[[ -n "$nvcc" ]] || { echo "install-cuda-toolchain: nvcc not found under $dir after install" >&2; exit 1; }
"$nvcc" --version >&2
echo "$want" > "$stamp"
echo "$nvcc"

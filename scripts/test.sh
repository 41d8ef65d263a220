#!/usr/bin/env bash
# The test command (README, CI): installs the pinned nvcc if it is not there yet, builds the kernels with it
# (a kernel that fails to compile fails the run), then runs every test. GPU tests are reported as ignored on a
# machine without a GPU; scripts/gpu-pack.sh runs them on one.
set -euo pipefail
cd "$(dirname "$0")/.."
export NVCC=${NVCC:-$(scripts/install-cuda-toolchain.sh)}
export DFGPU_REQUIRE_NVCC=1
cargo test "$@"

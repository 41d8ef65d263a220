#!/usr/bin/env bash
# The test command (README, CI): installs the pinned nvcc if it is not there yet, builds the kernels with it
# (a kernel that fails to compile fails the run), then runs every test: the CPU tests, the emulated device's
# self-tests, and every GPU test on the emulated device (scripts/emu.sh: kernels under ASan and UBSan).
# On a GPU machine, gpu-pack/run.sh runs the same GPU tests on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export NVCC=${NVCC:-$(scripts/install-cuda-toolchain.sh)}
export DFGPU_REQUIRE_NVCC=1
cargo test "$@"
echo "== the emulated device's self-tests"
scripts/emu.sh cargo test -p dfgpu-emu
echo "== every GPU test, on the emulated device"
scripts/emu.sh cargo test -- --ignored

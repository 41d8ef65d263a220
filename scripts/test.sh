#!/usr/bin/env bash
# The test command (README, CI): installs the pinned nvcc if it is not there yet, builds the kernels with it
# (a kernel that fails to compile fails the run), then runs every test: the CPU tests, the emulated device's
# self-tests, and every GPU test on the emulated device (scripts/emu.sh): the op and model tests with the kernels
# under ASan and UBSan, the end-to-end run of `dfgpu train --device cuda` without them (the same kernels, already
# checked; the sanitizers would triple its time). On a GPU machine, gpu-pack/run.sh runs the same GPU tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export NVCC=${NVCC:-$(scripts/install-cuda-toolchain.sh)}
export DFGPU_REQUIRE_NVCC=1
cargo test "$@"
echo "== the emulated device's self-tests"
scripts/emu.sh cargo test -p dfgpu-emu
echo "== the GPU tests of the ops and the model, on the emulated device, kernels under ASan and UBSan"
scripts/emu.sh cargo test --test ops --test model -- --ignored
echo "== dfgpu train, eval and predict on the emulated device"
DFGPU_EMU_SANITIZE=0 scripts/emu.sh cargo test --test e2e -- --ignored

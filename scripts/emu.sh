#!/usr/bin/env bash
# Runs a command against dfgpu's emulated CUDA device (emu/, docs/emulated-device.md): builds it, links it
# under the names cudarc loads (libcuda, libcublas, libcudnn, libcufft), and makes every program that cargo runs
# (tests, benches, `cargo run`) load it first: cargo's target runner is scripts/emu-run, which sets
# LD_LIBRARY_PATH and, for the sanitized build, preloads the ASan and UBSan runtimes.
#   scripts/emu.sh cargo test -- --include-ignored
#   scripts/emu.sh cargo run --release -- train --device cuda --epochs 1
# DFGPU_EMU_SANITIZE=0 builds the kernels without sanitizers (about twice as fast); CI keeps them (default 1).
# DFGPU_EMU_SCHEDULE=forward|reverse|shuffle[:SEED] sets the thread and block order.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export DFGPU_EMU_SANITIZE=${DFGPU_EMU_SANITIZE:-1}
target=${CARGO_TARGET_DIR:-$root/target}
# The two builds keep apart (a profile each), so that switching costs no rebuild and one never loads the other.
if [[ "$DFGPU_EMU_SANITIZE" == 1 ]]; then
    profile=emu-asan features=sanitize
else
    profile=emu features=
fi
cargo build --quiet --manifest-path "$root/Cargo.toml" -p dfgpu-emu --profile "$profile" --features "$features"
lib="$target/$profile/lib"
mkdir -p "$lib"
for name in libcuda.so libcuda.so.1 libcublas.so libcudnn.so libcufft.so; do
    ln -sfn "../libcuda.so" "$lib/$name"
done
export DFGPU_EMU_LIB="$lib"
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$root/scripts/emu-run"
"$@"

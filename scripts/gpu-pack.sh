#!/usr/bin/env bash
# Builds the release test and bench executables here (this machine has the Rust toolchain; the GPU machine does
# not) and stages them, stripped, in gpu-pack/ (git-ignored) with run.sh, ready for the device tool's `carry`:
#   scripts/gpu-pack.sh            then, on the GPU machine:   gpu-pack/run.sh
# run.sh runs `dfgpu info`, every test binary with --include-ignored, and every bench, logging to
# $OUT/gpu-run.log (or gpu-pack/gpu-run.log) as well as the screen, and ends with a pass/fail summary.
# `run.sh tests benches torch parity` also has the step bench time the PyTorch peer
# (shared/anchors/torch_two_branch.py, copied in here) on the same card, and runs the timm parity check;
# `run.sh train ablate` trains B0 at 224 on 6,000 synthetic images and runs the ablation grid on them.
set -euo pipefail
cd "$(dirname "$0")/.."
export NVCC=${NVCC:-$(scripts/install-cuda-toolchain.sh)}
export DFGPU_REQUIRE_NVCC=1
out=gpu-pack
rm -rf "$out"
mkdir -p "$out/tests" "$out/benches"

# Executables from cargo's JSON messages: kind "test"/"lib" (test harnesses) or "bench".
executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] or \
       m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["kind"][0], m["target"]["name"], m["executable"])
'
}
cargo build --release --bin dfgpu
cp target/release/dfgpu "$out/dfgpu"
{ cargo test --release --no-run --message-format=json; cargo bench --no-run --message-format=json; } | executables |
while read -r kind name path; do
    # The fuzz test has no GPU test in it: not sent (the GPU machine takes at most 64 MiB).
    [ "$name" = fuzz ] && continue
    case "$kind" in
        bench) cp "$path" "$out/benches/$name" ;;
        *) cp "$path" "$out/tests/$kind-$name" ;;
    esac
done
strip "$out"/dfgpu "$out"/tests/* "$out"/benches/*
anchor=../shared/anchors/torch_two_branch.py
if [ -f "$anchor" ]; then cp "$anchor" "$out/"; else echo "gpu-pack: $anchor not found: run.sh torch will be unavailable" >&2; fi
cp scripts/timm_parity.py "$out/"

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs on the GPU machine, from the repository root or anywhere: run.sh [PART...], each PART one of
#   tests    every test binary with --include-ignored
#   benches  every bench (with `torch` among the parts, the step bench also times the PyTorch peer)
#   parity   scripts/timm_parity.py: dfgpu's EfficientNet-B0 forward against timm's in f64
#   train    6,000 synthetic images at 224 (1,000 real, 5,000 fake), B0 trained on them for 4 epochs
#   ablate   the ablation grid with B0 on the same images (after train, which makes them)
# Default: tests benches. Logs to $OUT/gpu-run.log (or beside this script), runs and figures in $OUT/runs; a
# pass/fail summary at the end. One device call is at most 10 minutes: tests+benches+torch+parity fit in one,
# train+ablate in another.
here=$(cd "$(dirname "$0")" && pwd)
# From the repository root, as cargo runs the tests (a test reads tests/fixtures/).
cd "$here/.."
log=${OUT:-$here}/gpu-run.log
runs=${OUT:-$here}/runs
data=/tmp/dfgpu-synth-224
parts=" ${*:-tests benches} "
has() { [[ "$parts" == *" $1 "* ]]; }
: > "$log"
status=()
run() { # name, command...
    local name=$1; shift
    echo "=== $name ($(date +%T))" | tee -a "$log"
    if "$@" 2>&1 | tee -a "$log"; [ "${PIPESTATUS[0]}" -eq 0 ]; then status+=("PASS $name"); else status+=("FAIL $name"); fi
}
run info "$here/dfgpu" info
if has tests; then for t in "$here"/tests/*; do run "test $(basename "$t")" "$t" --include-ignored; done; fi
if has torch; then export DFGPU_TORCH_ANCHOR="$here/torch_two_branch.py"; fi
if has benches; then for b in "$here"/benches/*; do run "bench $(basename "$b")" "$b" --bench; done; fi
if has parity; then run "timm parity" python3 "$here/timm_parity.py" --dfgpu "$here/dfgpu"; fi
if has train; then
    run "synth 6000 at 224" "$here/dfgpu" synth "$data" --n-real 1000 --n-fake 5000 --size 224
    run "train b0" "$here/dfgpu" train --data "$data" --backbone b0 --epochs 4 --out "$runs/b0" --overwrite
fi
if has ablate; then
    run "ablate b0" "$here/dfgpu" ablate --data "$data" --backbone b0 --epochs 3 --out "$runs/ablation"
fi
{ echo "=== summary"; printf '%s\n' "${status[@]}"; } | tee -a "$log"
! printf '%s\n' "${status[@]}" | grep -q '^FAIL'
RUN
chmod +x "$out/run.sh"
size=$(du -sm "$out" | cut -f1)
ls -la "$out" "$out/tests" "$out/benches"
echo "gpu-pack: ${size} MiB in $out/ (the device tool carries at most 64 MiB)"
[ "$size" -lt 60 ] || { echo "gpu-pack: too large to carry" >&2; exit 1; }

#!/usr/bin/env bash
# Generalization to a generator the model never saw, on the built-in families: train on two fake families
# (upconv, nearest), test on the third (fingerprint) against unseen reals, for each branch setting. Prints a
# markdown table of the test AUCs. CPU by default (DEVICE to change), tiny EfficientNet at 64, 6 epochs, seed 0;
# about 8 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
dfgpu=./target/release/dfgpu
device=${DEVICE:-cpu}
work=${OUT:-runs/unseen}
mkdir -p "$work"
[ -d "$work/train" ] || $dfgpu synth "$work/train" --families upconv,nearest --seed 0 > /dev/null
[ -d "$work/test" ] || $dfgpu synth "$work/test" --families fingerprint --seed 1 > /dev/null
echo "| branches | branch dropout | validation AUC (seen families) | test AUC (unseen family) |"
echo "| --- | --- | --- | --- |"
for cfg in "both 0" "freq 0" "spatial 0" "both 0.3"; do
    set -- $cfg
    run="$work/$1-bd$2"
    $dfgpu train --device "$device" --data "$work/train" --branches "$1" --branch-dropout "$2" --out "$run" \
        --overwrite > "$run.log" 2>&1
    val=$(python3 -c 'import json,sys; print("%.3f" % json.loads(open(sys.argv[1]).read().splitlines()[-1])["val_auc"])' \
        "$run/metrics.jsonl")
    test=$($dfgpu eval --device "$device" --json --ckpt "$run/last.safetensors" --data "$work/test" 2>/dev/null |
        python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["report"]["auc"])')
    echo "| $1 | $2 | $val | $test |"
done

#!/usr/bin/env bash
# Generalization to a generator the model never saw, on the built-in fake families, for each branch setting.
# Two held-out tests, each a markdown table of validation AUC (seen families) and test AUC (the unseen one,
# against reals the model never saw either):
#   1. train on upconv + nearest, test on fingerprint (all three lose high frequencies: a near neighbour);
#   2. train on the three default families, test on periodic (its trace goes the other way: a stranger).
# CPU by default (DEVICE to change), tiny EfficientNet at 64, 6 epochs, seed 0; about 16 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
dfgpu=./target/release/dfgpu
device=${DEVICE:-cpu}
work=${OUT:-runs/unseen}
mkdir -p "$work"
held_out() { # name, training families, test family
    local name=$1 train=$2 test=$3
    [ -d "$work/$name-train" ] || $dfgpu synth "$work/$name-train" --families "$train" --seed 0 > /dev/null
    [ -d "$work/$name-test" ] || $dfgpu synth "$work/$name-test" --families "$test" --seed 1 > /dev/null
    echo
    echo "Trained on $train, tested on $test:"
    echo
    echo "| branches | branch dropout | validation AUC (seen families) | test AUC (unseen family) |"
    echo "| --- | --- | --- | --- |"
    for cfg in "both 0" "freq 0" "spatial 0" "both 0.3"; do
        set -- $cfg
        local run="$work/$name-$1-bd$2"
        $dfgpu train --device "$device" --data "$work/$name-train" --branches "$1" --branch-dropout "$2" \
            --out "$run" --overwrite > "$run.log" 2>&1
        local val test_auc
        val=$(python3 -c 'import json,sys; print("%.3f" % json.loads(open(sys.argv[1]).read().splitlines()[-1])["val_auc"])' \
            "$run/metrics.jsonl")
        test_auc=$($dfgpu eval --device "$device" --json --ckpt "$run/last.safetensors" --data "$work/$name-test" \
            2>/dev/null | python3 -c 'import json,sys; print("%.3f" % json.load(sys.stdin)["report"]["auc"])')
        echo "| $1 | $2 | $val | $test_auc |"
    done
}
held_out near upconv,nearest fingerprint
held_out far upconv,nearest,fingerprint periodic

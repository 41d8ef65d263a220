#!/usr/bin/env bash
# Reproduces the collapse table (docs/collapse-study.md): which settings make the frequency branch's run collapse on the
# built-in set, and which one fix is enough. Each row is one `dfgpu train` run (tiny EfficientNet at 64,
# 3 epochs, seed 0, CPU unless DEVICE is set); prints the markdown table. About 15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
device=${DEVICE:-cpu}
out=${OUT:-runs/collapse}
echo "| branches | magnitudes | branch BN | loss | sampler | optimizer | lr | AUC | bal. acc @0.5 | collapse |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
while read -r branches norm bn loss sampler optim lr; do
    name="$branches-$norm-bn$bn-$loss-$sampler-$optim-$lr"
    flags=(--branches "$branches" --freq-norm "$norm" --loss "$loss" --sampler "$sampler" --optimizer "$optim" --lr "$lr")
    [ "$bn" = on ] || flags+=(--no-freq-bn)
    log=$(./target/release/dfgpu train --device "$device" --epochs 3 --seed 0 --out "$out/$name" --overwrite "${flags[@]}")
    collapse=no
    grep -q '^COLLAPSE' <<<"$log" && collapse=yes
    python3 - "$out/$name/metrics.jsonl" "$branches" "$norm" "$bn" "$loss" "$sampler" "$optim" "$lr" "$collapse" <<'PY'
import json, sys
last = json.loads(open(sys.argv[1]).read().splitlines()[-1])
b, n, bn, loss, s, o, lr, c = sys.argv[2:]
print(f"| {b} | {n} | {bn} | {loss} | {s} | {o} | {lr} | {last['val_auc']:.3f} | {last['val_balanced_acc']:.3f} | {c} |")
PY
done <<'ROWS'
freq log on focal balanced adamw 1e-3
freq raw on focal balanced adamw 1e-3
freq raw off focal balanced adamw 1e-3
freq raw on bce natural adamw 1e-3
freq log off bce natural adamw 1e-3
freq raw off bce natural adamw 1e-3
freq raw off bce natural adamw 1e-2
freq log off bce natural adamw 1e-2
both raw on bce natural adamw 1e-3
both log on bce natural adamw 1e-3
both raw off wbce balanced adamw 1e-3
freq raw on bce natural sgd 1e-1
freq log on bce natural sgd 1e-1
freq raw off bce natural sgd 1e-1
freq log off bce natural sgd 1e-1
both raw on bce natural sgd 1e-1
both log on bce natural sgd 1e-1
ROWS

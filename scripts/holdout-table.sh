#!/usr/bin/env bash
# The README's held-out table: `dfgpu holdout --seeds` on the built-in set (all four families, images twice the
# model's side) for each setting below; one line per setting with each family's held-out AUC averaged over the
# seeds, their mean and the worst of them, then the mean and the worst of the detector joined to the spectral peak
# test; and one line per input geometry for the spectral baseline and one for the peak test that each run fits
# beside the detector (the same in every setting of that geometry: they see neither the model's settings nor the
# augmentations).
# CPU by default (DEVICE to change), tiny EfficientNet at 64, 6 epochs, seeds 0 to SEEDS - 1 (5 by default: one
# seed's figure moves by 0.03 to 0.05); each run's tables and figure stay in $OUT/<setting>/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SEEDS:-5}" -ge 2 ] || { echo "SEEDS: at least 2 (the table reads the spread over the seeds)" >&2; exit 1; }
cargo build --release --quiet
dfgpu=./target/release/dfgpu
work=${OUT:-runs/holdout-table}
mkdir -p "$work"
settings=(
    "resize:--input resize"
    "crop:--input crop"
    "resize, self-fakes 0.3:--input resize --self-fakes 0.3"
    "crop, self-fakes 0.3:--input crop --self-fakes 0.3"
    "crop, self-fakes 0.3, freq branch only:--input crop --self-fakes 0.3 --branches freq"
    "crop, self-fakes 0.3, spatial branch only:--input crop --self-fakes 0.3 --branches spatial"
    "resize, freq profile:--input resize --freq-profile"
    "crop, freq profile:--input crop --freq-profile"
)
header=""
baselines=""
summary() { # the held-out AUCs one per line: their mean | the worst
    echo "$(echo "$1" | awk '{s+=$1} END {printf "%.3f", s/NR}') | $(echo "$1" | sort -n | head -1)"
}
column() { # the spread CSV's column $2 of run folder $1, one AUC per line
    tail -n +2 "$1/holdout.csv" | cut -d, -f"$2" | xargs printf '%.3f\n'
}
row() { # name, the held-out AUCs one per line, then the joined ones (or nothing)
    local joined="- | -"
    [ -z "${3:-}" ] || joined=$(summary "$3")
    echo "| $1 | $(summary "$2") | $(echo "$2" | paste -sd'|' | sed 's/|/ | /g') | $joined |"
}
for s in "${settings[@]}"; do
    name=${s%%:*}
    flags=${s#*:}
    dir="$work/$(echo "$name" | tr -c 'a-z0-9.\n' '-')"
    # shellcheck disable=SC2086 # the flags are words
    $dfgpu holdout --device "${DEVICE:-cpu}" --seeds "${SEEDS:-5}" --out "$dir" $flags > "$dir.log" 2>&1 ||
        { tail "$dir.log"; exit 1; }
    if [ -z "$header" ]; then
        header=$(tail -n +2 "$dir/holdout.csv" | cut -d, -f1 | tr -d '"' | paste -sd'|' | sed 's/|/ | /g')
        echo "| setting | mean | worst | $header | or peak test: mean | worst |"
        echo "|$(printf ' --- |%.0s' $(seq 1 $((5 + $(tail -n +2 "$dir/holdout.csv" | wc -l)))))"
    fi
    # Spread CSV columns: 3 the detector's mean AUC, 6 the baseline's, 9 the peak test's, 12 the joined one's.
    row "$name" "$(column "$dir" 3)" "$(column "$dir" 12)"
    input=$(echo "$flags" | sed -n 's/.*--input \([a-z]*\).*/\1/p')
    if [ -n "$input" ] && ! echo "$baselines" | grep -q "spectral baseline, $input "; then
        baselines+=$(row "spectral baseline, $input" "$(column "$dir" 6)")$'\n'
        baselines+=$(row "spectral peak test, $input" "$(column "$dir" 9)")$'\n'
    fi
done
printf '%s' "$baselines"

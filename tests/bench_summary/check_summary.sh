#!/usr/bin/env bash
# normkit_bench_summary on a fixed JSON (rounds.json: 2 cases x 3 rounds of normkit,
# roofline and oneDNN, and of the two-pass kernel for the training case). Checks that the
# ratios are the medians of the rounds' ratios (80.0%, 90.0% of the two-pass kernel and
# 1.20x; the ratios of the medians would be 50.0%, 50.0% and 1.45x), that GB/s use
# the median time, and that a case slower than oneDNN is reported as a miss, with
# --strict turning misses into exit status 1. A third case (bwd b1_c64_112) has its runs
# shuffled, as --benchmark_enable_random_interleaving leaves them, with "round" counters:
# paired by round its ratios are 90.0% and 1.50x (by position in the file they would be
# 45.0% and 2.00x, the ratios of the medians 60.0% and 1.00x). A fourth (train_fwd
# img_c3_224) runs at 49.96% of the roofline: its miss must not print as 50.0%.
#   check_summary.sh <normkit_bench_summary> <rounds.json>
set -uo pipefail
summary=$1
json=$2
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
out=$("$summary" "$json")
status=$?
[[ $status -eq 0 ]] || { echo "FAILED: exit status $status without --strict"; fail=1; }
expect '^train_fwd +resnet_c64_56 +nchw +1 +50\.00 +100\.00 +80\.0% +90\.0% +34\.48 +1\.20x ' \
    "training case: GB/s from median times, ratios from the rounds"
expect '^train_fwd +all +2 +63\.2% +90\.0% +1\.55x +88\.9%$' "geometric means over the cases that have each ratio"
expect '^infer_fwd +resnet_c64_56 +nchw +1 +100\.00 +111\.11 +90\.0% +- +105\.26 +0\.95x ' \
    "inference case (no two-pass run)"
expect 'infer_fwd resnet_c64_56 nchw t:1: 0\.95x oneDNN < 1\.0x' "slower than oneDNN is a miss"
expect '^bwd +b1_c64_112 +nhwc +2 +50\.00 +83\.33 +90\.0% +- +50\.00 +1\.50x ' \
    "shuffled runs: ratios from runs of the same round"
expect 'train_fwd img_c3_224 nhwc t:1: 49\.9% of roofline < 50%' "a miss prints below its threshold"
expect '3 run\(s\) of each implementation' "the number of rounds"
reject 'infer_fwd resnet_c64_56 nchw t:1: 90\.0% of roofline' "90.0% of the roofline meets the inference target"
"$summary" --strict "$json" >/dev/null
[[ $? -eq 1 ]] || { echo "FAILED: --strict must exit 1 on a miss"; fail=1; }
if [[ $fail -ne 0 ]]; then
    echo "--- output:"
    echo "$out"
    exit 1
fi
echo "bench summary: all checks passed"

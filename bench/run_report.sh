#!/usr/bin/env bash
# Runs the batch-norm benchmark suite and prints the summary.
#
#   bench/run_report.sh <build-dir> [extra normkit_bench flags...]
#
# Writes <build-dir>/bench/normkit_bench.json (Google Benchmark JSON: every repetition and
# the median / mean / stddev / cv aggregates; two runs compare with Google Benchmark's
# tools/compare.py), then prints the table of normkit_bench_summary. Environment:
#   NK_BENCH_FILTER    regex of the benchmarks to run (default: all 96 cases), e.g.
#                      'bn/train_fwd/resnet_c64_56/' or '/t:1/' or 'nhwc/t:2'
#   NK_BENCH_REPS      repetitions per benchmark (default 5; the summary uses their median)
#   NK_BENCH_MIN_TIME  minimum seconds per repetition (default 0.05)
#   NK_BENCH_OUT       JSON path (default <build-dir>/bench/normkit_bench.json)
#   NK_BENCH_STRICT=1  exit 1 when a target is missed
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
fi
build=$1
shift
bench="$build/bench/normkit_bench"
summary="$build/bench/normkit_bench_summary"
for exe in "$bench" "$summary"; do
    if [[ ! -x "$exe" ]]; then
        echo "run_report.sh: $exe not found: build it first" \
            "(cmake --build $build --target normkit_bench normkit_bench_summary)" >&2
        exit 2
    fi
done

out=${NK_BENCH_OUT:-$build/bench/normkit_bench.json}
mkdir -p "$(dirname "$out")"
args=(
    --benchmark_filter="${NK_BENCH_FILTER:-.}"
    --benchmark_repetitions="${NK_BENCH_REPS:-5}"
    --benchmark_min_time="${NK_BENCH_MIN_TIME:-0.05}"
    --benchmark_out="$out"
    --benchmark_out_format=json
)
# Several repetitions: only their aggregates on the console, everything in the JSON.
if [[ "${NK_BENCH_REPS:-5}" -gt 1 ]]; then
    args+=(--benchmark_display_aggregates_only=true)
fi

start=$(date +%s)
"$bench" "${args[@]}" "$@"
echo "normkit_bench: $(( $(date +%s) - start )) s; results in $out"
echo

strict=()
[[ "${NK_BENCH_STRICT:-0}" == 1 ]] && strict=(--strict)
exec "$summary" "${strict[@]}" "$out"

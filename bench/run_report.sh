#!/usr/bin/env bash
# Runs the batch-norm benchmark suite and prints the summary.
#
#   bench/run_report.sh <build-dir> [extra normkit_bench flags...]
#
# Writes <build-dir>/bench/normkit_bench.json (Google Benchmark JSON: every run of every
# round; the rounds of a benchmark share its name, so two files compare with Google
# Benchmark's tools/compare.py as repetitions), then prints the table of
# normkit_bench_summary. Environment:
#   NK_BENCH_FILTER    regex of the benchmarks to run (default: all 96 cases), e.g.
#                      'bn/train_fwd/resnet_c64_56/' or '/t:1/' or 'nhwc/t:2'
#   NK_BENCH_ROUNDS    rounds (default 5): each runs normkit, the roofline and oneDNN back to
#                      back; the summary's ratios are the medians of the rounds' ratios
#   NK_BENCH_MIN_TIME  minimum seconds per run (default 0.05)
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
    --rounds="${NK_BENCH_ROUNDS:-5}"
    --benchmark_min_time="${NK_BENCH_MIN_TIME:-0.05}"
    --benchmark_out="$out"
    --benchmark_out_format=json
)

start=$(date +%s)
"$bench" "${args[@]}" "$@"
echo "normkit_bench: $(( $(date +%s) - start )) s; results in $out"
echo

strict=()
[[ "${NK_BENCH_STRICT:-0}" == 1 ]] && strict=(--strict)
exec "$summary" "${strict[@]}" "$out"

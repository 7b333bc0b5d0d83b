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
#   NK_BENCH_ROUNDS    rounds (default 5): each runs the roofline, oneDNN and normkit back to
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

# Google Benchmark's console output (a line per run: 1440 for the whole suite) goes to a
# log next to the JSON; the console gets the header (machine, caches, library versions)
# and a line per case as it starts.
log="${out%.json}.log"
cases=$("$bench" --benchmark_list_tests --benchmark_filter="${NK_BENCH_FILTER:-.}" 2>/dev/null |
    sed -E 's#/(normkit|roofline|onednn)/real_time$##' | sort -u | awk NF | wc -l || true)
if [[ $cases -eq 0 ]]; then
    echo "run_report.sh: no benchmark matches NK_BENCH_FILTER='${NK_BENCH_FILTER:-.}'" >&2
    exit 2
fi
start=$(date +%s)
"$bench" "${args[@]}" "$@" 2>&1 | tee "$log" | awk -v cases="$cases" '
    /Library was built as DEBUG/ {
        print "(Google Benchmark warns about its own build: Debian\x27s libbenchmark is built without"
        print " NDEBUG. normkit, the roofline and this bench are built Release.)"
        next
    }
    !body { print; if (/^-+$/) body = 1; next }
    /^-+$/ || /^Benchmark +Time/ { next }
    match($1, "/(normkit|roofline|onednn)/real_time$") {
        name = substr($1, 1, RSTART - 1)
        if (!(name in seen)) { seen[name]; printf "[%d/%d] %s\n", ++n, cases, name; fflush() }
        if (/ERROR OCCURRED/) print
        next
    }
    { print }'
echo "normkit_bench: $(( $(date +%s) - start )) s; results in $out, every run in $log"
echo

strict=()
[[ "${NK_BENCH_STRICT:-0}" == 1 ]] && strict=(--strict)
exec "$summary" "${strict[@]}" "$out"

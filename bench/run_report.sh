#!/usr/bin/env bash
# Runs the batch-norm benchmark suite and prints the summary.
#
#   bench/run_report.sh <build-dir> [extra normkit_bench flags...]
#
# Writes <build-dir>/bench/normkit_bench.json (Google Benchmark JSON: every run of every
# round; the rounds of a benchmark share its name, so two files compare with Google
# Benchmark's tools/compare.py as repetitions) and normkit_bench.log beside it (the
# benchmark's console output, a line per run), prints the header and a line per case as
# its first run completes, then the table of normkit_bench_summary. Exit status: the
# benchmark's when it fails, 2 when nothing matches the filter, else the summary's.
# Environment:
#   NK_BENCH_FILTER    regex of the benchmarks to run (default: all 96 cases), e.g.
#                      'bn/train_fwd/resnet_c64_56/' or '/t:1/' or 'nhwc/t:2'; a
#                      --benchmark_filter= flag given here wins
#   NK_BENCH_ROUNDS    rounds (default 5): each runs the roofline, the two-pass kernel
#                      (training and backward), oneDNN and normkit back to back; the
#                      summary's ratios are the medians of the rounds' ratios
#   NK_BENCH_MIN_TIME  minimum seconds per run (default 0.05)
#   NK_BENCH_OUT       JSON path (default <build-dir>/bench/normkit_bench.json)
#   NK_BENCH_STRICT=1  exit 1 when a target is missed
#   NK_BENCH_HOST      1: after the summary, run normkit_bench_host (normkit inside an
#                      OpenMP program, on oneTBB and on the program's threads through
#                      nk_context_set_parallel_for; built where OpenMP is found), with
#                      the same rounds and min time; 0: do not. Default: 1 unless a
#                      filter was given
#   NK_BENCH_NORMS     1: then run normkit_bench_norms (layer, RMS and group norm against
#                      their roofline and oneDNN) with the same rounds and min time and
#                      print its table; 0: do not. Default: 1 unless a filter was given
#   NK_BENCH_FUSED     1: then run normkit_bench_fused (batch norm with its ReLU or
#                      residual-add-ReLU fused, against the batch-norm call and a separate
#                      pass) and print its table; 0: do not. Default: 1 unless a filter was given
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

# The cases the filter selects (a later --benchmark_filter= flag wins, as in the run).
filter=${NK_BENCH_FILTER:-.}
for arg in "$@"; do [[ $arg == --benchmark_filter=* ]] && filter=${arg#*=}; done
if ! listing=$("$bench" --benchmark_list_tests --benchmark_filter="$filter" 2>&1); then
    printf 'run_report.sh: %s --benchmark_list_tests failed:\n%s\n' "$bench" "$listing" >&2
    exit 1
fi
cases=$({ grep -E '^bn/' <<<"$listing" || true; } | sed -E 's#/[a-z_]+/real_time$##' | sort -u | wc -l)
if [[ $cases -eq 0 ]]; then
    [[ -n $listing ]] && printf '%s\n' "$listing" >&2
    echo "run_report.sh: no benchmark matches the filter '$filter'" >&2
    exit 2
fi

# Reads the benchmark's console output (a line per run: 1760 for the whole suite) and
# prints the header (machine, caches, library versions), a line per case when its first
# run completes, and the runs that failed. Line by line, as it arrives.
progress() {
    local line name body=0 n=0
    local -A seen=()
    local run_line='^([^ ]+)/(normkit|roofline|two_pass|onednn)/real_time(_[a-z]+)?( |$)'
    while IFS= read -r line; do
        if [[ $line == *"Library was built as DEBUG"* ]]; then
            echo "(Google Benchmark warns about its own build: Debian's libbenchmark is built"
            echo " without NDEBUG. This says nothing of how normkit was built.)"
        elif ((!body)); then
            printf '%s\n' "$line"
            [[ $line =~ ^-+$ ]] && body=1
        elif [[ $line =~ $run_line ]]; then
            name=${BASH_REMATCH[1]}
            if [[ -z ${seen[$name]:-} ]]; then
                seen[$name]=1
                echo "[$((++n))/$cases] $name"
            fi
            if [[ $line == *"ERROR OCCURRED"* ]]; then printf '%s\n' "$line"; fi
        elif ! [[ $line =~ ^-+$ || $line =~ ^Benchmark\ +Time ]]; then
            printf '%s\n' "$line"
        fi
    done
    return 0
}

log="${out%.json}.log"
start=$(date +%s)
set +e
"$bench" "${args[@]}" "$@" 2>&1 | tee "$log" | progress
status=("${PIPESTATUS[@]}")
set -e
if [[ ${status[0]} -ne 0 ]]; then
    echo "run_report.sh: normkit_bench failed (exit status ${status[0]}); its output is in $log" >&2
    exit "${status[0]}"
fi
[[ ${status[1]} -eq 0 && ${status[2]} -eq 0 ]] || exit 1
echo "normkit_bench: $(( $(date +%s) - start )) s; results in $out, every run in $log"
echo

strict=()
[[ "${NK_BENCH_STRICT:-0}" == 1 ]] && strict=(--strict)
host="$build/bench/normkit_bench_host"
norms="$build/bench/normkit_bench_norms"
fused="$build/bench/normkit_bench_fused"
filtered=0
[[ -n ${NK_BENCH_FILTER:-} || $filter != . ]] && filtered=1
run_host=0 run_norms=0 run_fused=0
[[ ${NK_BENCH_HOST:-$((1 - filtered))} == 1 && -x $host ]] && run_host=1
[[ ${NK_BENCH_NORMS:-$((1 - filtered))} == 1 && -x $norms ]] && run_norms=1
[[ ${NK_BENCH_FUSED:-$((1 - filtered))} == 1 && -x $fused ]] && run_fused=1
if ((!run_host && !run_norms && !run_fused)); then
    exec "$summary" "${strict[@]}" "$out"
fi
set +e
"$summary" "${strict[@]}" "$out"
summary_status=$?
set -e
# Runs one of the other suites with the rounds and min time of this one; prints its
# console output from the line that starts with $3 on (its own table).
other_suite() { # exe title table-start
    local exe=$1 title=$2 start=$3 json="${out%.json}_$(basename "$1" | sed 's/^normkit_bench_//').json"
    echo
    echo "== $(basename "$exe"): $title (every run in ${json%.json}.log)"
    "$exe" --rounds="${NK_BENCH_ROUNDS:-5}" --benchmark_min_time="${NK_BENCH_MIN_TIME:-0.05}" \
        --benchmark_out="$json" --benchmark_out_format=json >"${json%.json}.log" 2>&1 ||
        { echo "run_report.sh: $(basename "$exe") failed; its output is in ${json%.json}.log" >&2; exit 1; }
    sed -n "/^$start/,\$p" "${json%.json}.log"
}
((run_host)) && other_suite "$host" "normkit inside an OpenMP program" "normkit inside an OpenMP host"
((run_norms)) && other_suite "$norms" "layer, RMS and group norm" "op  "
((run_fused)) && other_suite "$fused" "batch norm with its ReLU or residual-add-ReLU fused" "fused vs unfused"
exit "$summary_status"

#!/usr/bin/env bash
# bench/run_report.sh with a stand-in for normkit_bench (the test command does not build
# the benchmark): a script that lists and "runs" the benchmarks of rounds.json the way
# Google Benchmark does (names listed once per round; header on stderr, a line per run on
# stdout, the JSON to --benchmark_out). Checks that the console gets the header and one
# line per case, the log every run line, failed runs still show, aggregate lines do not,
# Debian's DEBUG warning is explained, the summary table follows; that a filter matching
# nothing exits 2, a benchmark that crashes or cannot list its benchmarks fails the
# script with no table.
#   check_report.sh <run_report.sh> <normkit_bench_summary> <rounds.json>
set -uo pipefail
report=$1
summary=$2
json=$(realpath "$3")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bench"
ln -s "$(realpath "$summary")" "$tmp/bench/normkit_bench_summary"
# STANDIN=crash: dies of SIGSEGV after two runs; STANDIN=nolist: cannot even list.
cat >"$tmp/bench/normkit_bench" <<STUB
#!/usr/bin/env bash
filter=.; out=; list=0
for a in "\$@"; do
    case "\$a" in
    --benchmark_filter=*) filter=\${a#*=} ;;
    --benchmark_out=*) out=\${a#*=} ;;
    --benchmark_list_tests) list=1 ;;
    esac
done
[[ \${STANDIN:-} == nolist ]] && { echo "normkit_bench: error while loading shared libraries" >&2; exit 127; }
names=\$(grep -o '"name": "[^"]*"' "$json" | cut -d'"' -f4 | grep -E -- "\$filter")
if [[ -z "\$names" ]]; then echo "Failed to match any benchmarks against regex: \$filter" >&2; exit 0; fi
if [[ \$list -eq 1 ]]; then echo "\$names"; exit 0; fi
echo "Running normkit_bench (stand-in)" >&2
echo "***WARNING*** Library was built as DEBUG. Timings may be affected." >&2
echo "-----------"; echo "Benchmark        Time   CPU   Iterations UserCounters..."; echo "-----------"
echo "bn/train_fwd/resnet_c64_56/nchw/t:1/normkit/real_time ERROR OCCURRED: 'stand-in error'"
echo "bn/train_fwd/resnet_c64_56/nchw/t:1/normkit/real_time_median   100 us   100 us   10 GB/s=1/s"
k=0
while read -r n; do # the last line is a plain run line, as in a real run
    echo "\$n   100 us   100 us   10 GB/s=1/s round=0"
    [[ \${STANDIN:-} == crash && \$((++k)) -eq 2 ]] && kill -SEGV \$\$
done <<<"\$names"
cp "$json" "\$out"
STUB
chmod +x "$tmp/bench/normkit_bench"

source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"
out=$(bash "$report" "$tmp" 2>&1)
status=$?
[[ $status -eq 0 ]] || { echo "FAILED: exit status $status"; fail=1; }
expect '^Running normkit_bench' "the header"
expect '^\[1/4\] bn/train_fwd/resnet_c64_56/nchw/t:1$' "a line for the first case"
expect '^\[4/4\] bn/(bwd|train_fwd|infer_fwd)/' "a line for the last of 4 cases (shuffled runs counted once)"
expect "ERROR OCCURRED: 'stand-in error'" "an error of a run reaches the console"
expect "Debian's libbenchmark is built" "the DEBUG warning explained"
expect '^train_fwd +resnet_c64_56 +nchw +1 +50\.00 ' "the summary table"
reject '^\[5/' "more case lines than cases"
reject '/real_time(_median)? +100 us' "run lines on the console"
runs=$(grep -c '"name": ' "$json")
logged=$(grep -Ec '/real_time +100 us' "$tmp/bench/normkit_bench.log")
[[ $logged -eq $runs ]] || { echo "FAILED: the log has $logged run lines, the JSON $runs runs"; fail=1; }

expect_failure() { # name, expected status, message regex, env...
    local name=$1 want=$2 regex=$3
    shift 3
    local got status
    got=$(env "$@" bash "$report" "$tmp" 2>&1)
    status=$?
    [[ $status -eq $want ]] || { echo "FAILED: $name: exit status $status, not $want"; fail=1; }
    grep -Eq -- "$regex" <<<"$got" || { echo "FAILED: $name: no line matches '$regex' in: $got"; fail=1; }
    if grep -q 'geometric means' <<<"$got"; then echo "FAILED: $name: a summary was printed"; fail=1; fi
}
expect_failure "filter matching nothing" 2 "no benchmark matches the filter 'no_such_case'" \
    NK_BENCH_FILTER=no_such_case
expect_failure "benchmark crashing" 139 'normkit_bench failed \(exit status 139\); its output is in .*normkit_bench\.log' \
    STANDIN=crash
expect_failure "benchmark unable to list" 1 'list_tests failed:' STANDIN=nolist

if [[ $fail -ne 0 ]]; then
    echo "--- output:"
    echo "$out"
    exit 1
fi
echo "bench report: all checks passed"

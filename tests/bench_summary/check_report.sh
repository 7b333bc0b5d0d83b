#!/usr/bin/env bash
# bench/run_report.sh with a stand-in for normkit_bench (the test command does not build
# the benchmark): a script that lists and "runs" the benchmarks of rounds.json the way
# Google Benchmark does (header on stderr, a line per run on stdout, the JSON to
# --benchmark_out). Checks that the console gets the header and one line per case, the
# log every run line, errors of runs still show, Debian's DEBUG warning is explained,
# the summary table follows, and a filter that matches nothing is an error (status 2).
#   check_report.sh <run_report.sh> <normkit_bench_summary> <rounds.json>
set -uo pipefail
report=$1
summary=$2
json=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bench"
ln -s "$(realpath "$summary")" "$tmp/bench/normkit_bench_summary"
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
names=\$(grep -o '"name": "[^"]*"' "$(realpath "$json")" | cut -d'"' -f4 | grep -E -- "\$filter")
[[ -n "\$names" ]] || { echo "Failed to match any benchmarks against regex: \$filter" >&2; exit 1; }
if [[ \$list -eq 1 ]]; then sort -u <<<"\$names"; exit 0; fi
echo "Running normkit_bench (stand-in)" >&2
echo "***WARNING*** Library was built as DEBUG. Timings may be affected." >&2
echo "-----------"; echo "Benchmark        Time   CPU   Iterations UserCounters..."; echo "-----------"
while read -r n; do echo "\$n   100 us   100 us   10 GB/s=1/s round=0"; done <<<"\$names"
echo "bn/bwd/b1_c64_112/nhwc/t:2/normkit/real_time ERROR OCCURRED: 'stand-in error'"
cp "$(realpath "$json")" "\$out"
STUB
chmod +x "$tmp/bench/normkit_bench"

fail=0
out=$(bash "$report" "$tmp" 2>&1)
status=$?
expect() { # regex, what it proves
    if ! grep -Eq -- "$1" <<<"$out"; then
        echo "FAILED: $2 (no line matches '$1')"
        fail=1
    fi
}
[[ $status -eq 0 ]] || { echo "FAILED: exit status $status"; fail=1; }
expect '^Running normkit_bench' "the header"
expect '^\[1/4\] bn/train_fwd/resnet_c64_56/nchw/t:1$' "a line for the first case"
expect '^\[4/4\] bn/(bwd|train_fwd|infer_fwd)/' "a line for the last of 4 cases (shuffled runs counted once)"
expect "ERROR OCCURRED: 'stand-in error'" "an error of a run reaches the console"
expect "Debian's libbenchmark is built without" "the DEBUG warning explained"
expect '^train_fwd +resnet_c64_56 +nchw +1 +50\.00 ' "the summary table"
if grep -Eq '^\[5/' <<<"$out"; then echo "FAILED: more case lines than cases"; fail=1; fi
if grep -Eq '/real_time +100 us' <<<"$out"; then echo "FAILED: run lines on the console"; fail=1; fi
runs=$(grep -c '"name": ' "$json")
logged=$(grep -Ec '/real_time +100 us' "$tmp/bench/normkit_bench.log")
[[ $logged -eq $runs ]] || { echo "FAILED: the log has $logged run lines, the JSON $runs runs"; fail=1; }

none=$(NK_BENCH_FILTER=no_such_case bash "$report" "$tmp" 2>&1)
status=$?
[[ $status -eq 2 ]] || { echo "FAILED: a filter matching nothing exits $status, not 2"; fail=1; }
grep -q "no benchmark matches NK_BENCH_FILTER='no_such_case'" <<<"$none" ||
    { echo "FAILED: no message for a filter matching nothing: $none"; fail=1; }

if [[ $fail -ne 0 ]]; then
    echo "--- output:"
    echo "$out"
    exit 1
fi
echo "bench report: all checks passed"

#!/usr/bin/env bash
# The README's two commands. Installs what is missing (Debian 12, as root), builds, runs.
#   bash cmake/run.sh bench   build and print the benchmark report (the main job)
#   bash cmake/run.sh test    build and run every test: release (with the Python and install
#                             tests), then ASan+UBSan, then TSan
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=${1:-}
case "$mode" in bench | test) ;; *) echo "usage: bash cmake/run.sh bench|test" >&2; exit 2 ;; esac

packages=(cmake ninja-build g++ binutils libtbb-dev libxsimd-dev doctest-dev)
[ "$mode" = bench ] && packages+=(libbenchmark-dev libdnnl-dev ocl-icd-opencl-dev)
# The Python package's tests (Debian's /usr/bin/python3) and the install test's pkg-config.
[ "$mode" = test ] && packages+=(python3-numpy python3-torch python3-pytest python3-sklearn python3-matplotlib pkg-config)
# The synchronized batch norm's multi-process test (tests/mpi): Open MPI.
[ "$mode" = test ] && packages+=(openmpi-bin libopenmpi-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

jobs=$(nproc)
build() { # preset name
    cmake --preset "$1" -S "$root" >/dev/null
    cmake --build --preset "$1" -j "$jobs"
}

if [ "$mode" = bench ]; then
    build release
    exec bash "$root/bench/run_report.sh" "$root/build/release"
fi

for preset in release asan tsan; do
    echo "== $preset: build and test"
    build "$preset"
    # Two tests at a time: the sanitizer presets' two long suites (normkit_tests and its
    # streamed run) are independent and take most of the time.
    ctest --preset "$preset" --parallel "$jobs"
done

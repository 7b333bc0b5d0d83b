#!/usr/bin/env bash
# Installs the build into a temporary prefix and uses it from outside, three ways:
# a CMake project (find_package, shared and static targets), a compile with pkg-config,
# and the Python package (which must load the library of that prefix).
#   check_package.sh <build dir> <work dir> <generator> <C compiler> <C++ compiler> <python>
set -euo pipefail
build=$1 work=$2 generator=$3 cc=$4 cxx=$5 python=$6
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prefix=$work/prefix
rm -rf "$work"
mkdir -p "$work"

echo "== cmake --install into $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log"

echo "== find_package(normkit)"
cmake -S "$here/consumer" -B "$work/consumer" -G "$generator" -DCMAKE_C_COMPILER="$cc" \
      -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/consumer"
"$work/consumer/consumer_shared"
"$work/consumer/consumer_static"
# The static one must not need the shared library at run time.
if ldd "$work/consumer/consumer_static" | grep -q libnormkit; then
    echo "consumer_static links libnormkit.so" >&2
    exit 1
fi

echo "== pkg-config"
pc=$(dirname "$(find "$prefix" -name normkit.pc)")
flags=$(PKG_CONFIG_PATH=$pc pkg-config --cflags --libs normkit)
libdir=$(PKG_CONFIG_PATH=$pc pkg-config --variable=libdir normkit)
# shellcheck disable=SC2086 # the flags are words
"$cc" -std=c99 "$here/consumer/consumer.c" -o "$work/consumer_pkgconfig" $flags -lm -Wl,-rpath,"$libdir"
"$work/consumer_pkgconfig"

echo "== Python package"
site=$(dirname "$(find "$prefix" -path '*-packages/normkit/__init__.py')")
env -u NORMKIT_LIBRARY PYTHONPATH="$(dirname "$site")" PYTHONDONTWRITEBYTECODE=1 "$python" - "$prefix" <<'PY'
import os, sys
import numpy as np
import normkit
prefix = os.path.realpath(sys.argv[1])
assert os.path.realpath(normkit.library_path).startswith(prefix + os.sep), normkit.library_path
result = normkit.batch_norm_forward_training(np.arange(12, dtype=np.float32).reshape(2, 2, 3))
assert abs(float(result.save_mean[0]) - 4.0) < 1e-6, result.save_mean
print(f"normkit {normkit.__version__} from {normkit.library_path}: ok")
PY

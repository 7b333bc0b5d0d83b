#!/usr/bin/env bash
# ABI surface: SONAME is libnormkit.so.<NK_VERSION_MAJOR>, read from the public header,
# and the development symlink chain ends at the real file.
#   check_soname.sh <libnormkit.so> <normkit.h>
set -euo pipefail
lib=${1:?usage: check_soname.sh <libnormkit.so> <normkit.h>}
header=${2:?usage: check_soname.sh <libnormkit.so> <normkit.h>}

major=$(sed -n 's/^#define NK_VERSION_MAJOR \([0-9][0-9]*\).*/\1/p' "$header")
minor=$(sed -n 's/^#define NK_VERSION_MINOR \([0-9][0-9]*\).*/\1/p' "$header")
patch=$(sed -n 's/^#define NK_VERSION_PATCH \([0-9][0-9]*\).*/\1/p' "$header")
[ -n "$major" ] && [ -n "$minor" ] && [ -n "$patch" ] || { echo "FAIL: no NK_VERSION_* in $header" >&2; exit 1; }

soname=$("${READELF:-readelf}" -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
want="libnormkit.so.$major"
if [ "$soname" != "$want" ]; then
    echo "FAIL: SONAME of $lib is '${soname:-<none>}', expected '$want'" >&2
    exit 1
fi
dir=$(dirname "$lib")
if [ ! -e "$dir/$soname" ]; then
    echo "FAIL: $dir/$soname (the name the loader looks for) does not exist" >&2
    exit 1
fi
real=$(readlink -f "$lib")
if [ "$(basename "$real")" != "libnormkit.so.$major.$minor.$patch" ]; then
    echo "FAIL: $lib resolves to $(basename "$real"), expected libnormkit.so.$major.$minor.$patch" >&2
    exit 1
fi
echo "OK: SONAME $soname, file $(basename "$real")"

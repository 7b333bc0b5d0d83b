#!/usr/bin/env bash
# ABI surface: the shared library's dynamic symbol table defines nothing but nk_*.
#   check_exports.sh <libnormkit.so>
# The one other defined entry GNU ld emits for a version script is the version node
# itself (an absolute symbol, e.g. "A NORMKIT_0"); it is allowed only when it is a
# version definition of this very library (readelf -V), so no real symbol can hide there.
set -euo pipefail
lib=${1:?usage: check_exports.sh <libnormkit.so>}
[ -f "$lib" ] || { echo "FAIL: $lib not found" >&2; exit 1; }

version_nodes=$("${READELF:-readelf}" -V --wide "$lib" |
    sed -n '/Version definition section/,/Version needs section/p' |
    sed -n 's/.*Flags: none .*Name: \([A-Za-z0-9_.]*\).*/\1/p')

total=0
offenders=()
while read -r _value type name; do
    [ -n "${name:-}" ] || continue
    total=$((total + 1))
    base=${name%%@*} # nk_version@@NORMKIT_0 -> nk_version
    case "$base" in nk_*) continue ;; esac
    if [ "$type" = A ] && grep -qxF -- "$base" <<<"$version_nodes"; then continue; fi
    offenders+=("$type $name")
done < <("${NM:-nm}" -D --defined-only "$lib")

if [ ${#offenders[@]} -gt 0 ]; then
    echo "FAIL: $lib exports ${#offenders[@]} symbol(s) outside the nk_ prefix:" >&2
    printf '  %s\n' "${offenders[@]}" >&2
    exit 1
fi
nk_count=$("${NM:-nm}" -D --defined-only "$lib" | awk '$3 ~ /^nk_/' | wc -l)
if [ "$nk_count" -eq 0 ]; then
    echo "FAIL: $lib exports no nk_* symbol at all" >&2
    exit 1
fi
echo "OK: $total defined dynamic symbols, $nk_count nk_* functions, version nodes: $(echo $version_nodes)"

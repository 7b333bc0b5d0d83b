#!/usr/bin/env bash
# The C99 program calls every function the header declares.
#   check_c_coverage.sh <normkit.h> <api_c99.c>
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
header=${1:?usage: check_c_coverage.sh <normkit.h> <source.c>}
source=${2:?usage: check_c_coverage.sh <normkit.h> <source.c>}
names=$(bash "$here/list_api.sh" "$header")
missing=()
for n in $names; do
    grep -qE "(^|[^A-Za-z0-9_])$n[[:space:]]*\(" "$source" || missing+=("$n")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "FAIL: $(basename "$source") never calls: ${missing[*]}" >&2
    exit 1
fi
echo "OK: $(basename "$source") calls all $(printf '%s\n' "$names" | wc -l) functions of $(basename "$header")"

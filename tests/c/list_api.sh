#!/usr/bin/env bash
# Prints, one per line, the name of every function the public header declares with
# NK_API; fails when a declaration line cannot be parsed.
#   list_api.sh <normkit.h>
# Declarations start a line with NK_API (possibly indented); the name is the last
# identifier before the first '('. "#define NK_API ..." lines do not start with NK_API.
set -euo pipefail
header=${1:?usage: list_api.sh <normkit.h>}
decls=$(grep -cE '^[[:space:]]*NK_API[[:space:]]' "$header" || true)
names=$(sed -nE 's/^[[:space:]]*NK_API[[:space:]][^(]*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*\(.*/\1/p' "$header")
count=$(printf '%s\n' "$names" | grep -c . || true)
if [ "$count" -eq 0 ] || [ "$count" -ne "$decls" ]; then
    echo "list_api.sh: $decls NK_API lines but $count parsed function names in $header" >&2
    exit 1
fi
bad=$(printf '%s\n' "$names" | grep -v '^nk_' || true)
if [ -n "$bad" ]; then
    echo "list_api.sh: NK_API functions outside the nk_ prefix:" $bad >&2
    exit 1
fi
dups=$(printf '%s\n' "$names" | sort | uniq -d)
if [ -n "$dups" ]; then
    echo "list_api.sh: declared twice:" $dups >&2
    exit 1
fi
printf '%s\n' "$names"

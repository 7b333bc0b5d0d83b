# Sourced by the check scripts: assertions on the output in $out. Each failure prints
# "FAILED: ..." and sets fail=1; the script reports and exits at its end.
fail=0
expect() { # regex that some line of $out must match, what it proves
    if ! grep -Eq -- "$1" <<<"$out"; then
        echo "FAILED: $2 (no line matches '$1')"
        fail=1
    fi
}
reject() { # regex that no line of $out may match, what a match would mean
    if grep -Eq -- "$1" <<<"$out"; then
        echo "FAILED: $2 (a line matches '$1')"
        fail=1
    fi
}

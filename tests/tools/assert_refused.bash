# refused MESSAGE: after `run --separate-stderr CMD`: non-zero exit, stderr exactly MESSAGE (one
# line), nothing on stdout (the three checks of a bad-input test, docs/testing.md).
refused() {
    if [ "$status" -eq 0 ]; then
        echo "expected failure, got status 0" >&2
        return 1
    fi
    if [ "$stderr" != "$1" ]; then
        printf 'stderr:\n%s\nwanted:\n%s\n' "$stderr" "$1" >&2
        return 1
    fi
    if [ -n "$output" ]; then
        echo "stdout not empty (${#output} chars)" >&2
        return 1
    fi
}

# Sourced by every mutant kind (tests/mutants/run writes the wrapper that sources it):
#   MUT_REAL  the real program        MUT_ARG  the catalogue row's arg column
#   MUT_ID    the mutant's id         MUT_TMP  a scratch directory of this mutant
# The kinds are deliberately broken versions of the programs: each must make the row's tests fail.

# run_real ARGS...: runs the real program, stderr kept in $MUT_ERR and replayed; sets rc.
run_real() {
    MUT_ERR=$(mktemp -p "$MUT_TMP" err.XXXXXX)
    "$MUT_REAL" "$@" 2>"$MUT_ERR"
    rc=$?
    cat "$MUT_ERR" >&2
}

# out_path OPTS -- ARGS...: the value of the first of OPTS (e.g. -o --out) found in ARGS, or,
# for OPTS "last", the last argument. Empty if none.
out_path() {
    local opts=() a prev=''
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
    if [ "${opts[0]}" = last ]; then
        [ $# -gt 0 ] && printf '%s' "${!#}"
        return 0
    fi
    for a in "$@"; do
        for o in "${opts[@]}"; do
            [ "$prev" = "$o" ] && { printf '%s' "$a"; return 0; }
            case "$a" in "$o="*) printf '%s' "${a#*=}"; return 0 ;; esac
        done
        prev=$a
    done
}

# leave_partial PATH: what a writer without atomic rename leaves when it dies: a file cut at
# 1000 bytes (a .gguf/.astr/.stream/.safetensors path) or a directory holding a cut
# model.safetensors and a config.json.
leave_partial() {
    [ -n "$1" ] && [ ! -e "$1" ] || return 0
    case "$1" in
        *.gguf | *.astr | *.stream | *.safetensors) head -c 1000 /dev/zero >"$1" ;;
        *)
            mkdir -p "$1"
            head -c 1000 /dev/zero >"$1/model.safetensors"
            echo '{}' >"$1/config.json"
            ;;
    esac
}

# Shared helpers of the pipeline and error tests (load with `load helpers`).
#
# import_model: the bundled stories260K imported once per test file into $BATS_FILE_TMPDIR/M.
# Checkpoint surgery in plain bash + jq (no Python needed): st_header / st_rewrite edit a
# safetensors header (drop a tensor, change a shape), st_patch overwrites bytes of a tensor.
# eval_json / kld_of wrap as-eval; assert_error checks the error convention: non-zero exit, exactly
# one line on stderr, containing every given fragment.

bats_require_minimum_version 1.5.0

AS_DATA=${AS_DATA:-$BATS_TEST_DIRNAME/../../../shared/data}
WIKI=$AS_DATA/text/wikitext-2-raw/wiki.test.raw
AUSTEN=$AS_DATA/text/austen
L2C=$AS_DATA/models/stories260K
ORACLE=$BATS_TEST_DIRNAME/gptq_pack_oracle.py
# The model is tiny (dim 64): BLAS threads only add overhead, and tests may run side by side.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
export AS_PROGRESS=0

# Imports stories260K (with its tokenizer) into $BATS_FILE_TMPDIR/M; sets M.
import_model() {
    export M=$BATS_FILE_TMPDIR/M
    [ -d "$M" ] || as-import -t "$L2C/tok512.bin" "$L2C/stories260K.bin" "$M"
}

# eval_json MODEL BASE|- BYTES: as-eval's JSON report, llama.cpp convention with ctx 256.
eval_json() {
    local base=()
    [ "$2" != - ] && base=(-b "$2")
    as-eval -m "$1" "${base[@]}" -f "$WIKI" --bytes "$3" --ctx 256 --json
}

# kld_of MODEL: mean KLD against $M on the first 20 KB of wikitext, memoised in MODEL.kld20.
kld_of() {
    [ -s "$1.kld20" ] || eval_json "$1" "$M" 20000 | jq -e '.kld.mean' >"$1.kld20"
    cat "$1.kld20"
}

# rtn_fakequant BITS GROUP OUT: round-to-nearest through the stream into a fakequant checkpoint.
rtn_fakequant() {
    [ -d "$3" ] || as-cat "$M" | as-gptq --method rtn -b "$1" -g "$2" |
        as-pack -m "$M" -f fakequant -o "$3" 2>/dev/null
}

# lt A B: A < B for decimal numbers.
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# st_header FILE: the JSON header of a safetensors file.
st_header() {
    local n
    n=$(od -An -tu8 -N8 "$1" | tr -d ' ')
    head -c $((8 + n)) "$1" | tail -c "$n"
}

# st_data_start FILE: byte offset of the data buffer.
st_data_start() { echo $((8 + $(od -An -tu8 -N8 "$1" | tr -d ' '))); }

# st_rewrite SRC DST JQ_FILTER: DST = SRC with its header passed through JQ_FILTER (the data
# buffer is cut to the largest end offset left, so dropping the last tensor stays valid).
st_rewrite() {
    local hdr end len le='' i
    hdr=$(st_header "$1" | jq -c "$3")
    end=$(jq '[.[] | .data_offsets?[1] // 0] | max' <<<"$hdr")
    while (((${#hdr} % 8) != 0)); do hdr+=' '; done
    len=${#hdr}
    for i in 0 1 2 3 4 5 6 7; do le+=$(printf '\\x%02x' $(((len >> (8 * i)) & 255))); done
    {
        printf '%b' "$le"
        printf '%s' "$hdr"
        tail -c +$(($(st_data_start "$1") + 1)) "$1" | head -c "$end"
    } >"$2"
}

# st_offset FILE TENSOR: absolute file offset of TENSOR's first byte (from the header itself).
st_offset() {
    echo $(($(st_data_start "$1") + $(st_header "$1" | jq --arg t "$2" '.[$t].data_offsets[0]')))
}

# st_patch FILE TENSOR BYTE_OFFSET PRINTF_BYTES: overwrite bytes inside TENSOR in place.
st_patch() {
    printf '%b' "$4" | dd of="$1" bs=1 seek=$(($(st_offset "$1" "$2") + $3)) conv=notrunc status=none
}

# clone_model DST: a copy of $M to damage.
clone_model() { cp -r "$M" "$1"; }

# assert_error FRAGMENT...: after `run --separate-stderr`: failed, one stderr line, fragments in it.
assert_error() {
    local f
    if [ "$status" -eq 0 ]; then
        echo "expected failure, got status 0; stderr: $stderr" >&2
        return 1
    fi
    if [ "${#stderr_lines[@]}" -ne 1 ]; then
        echo "expected one stderr line, got ${#stderr_lines[@]}:" >&2
        printf '  %s\n' "${stderr_lines[@]}" >&2
        return 1
    fi
    for f in "$@"; do
        if [[ "$stderr" != *"$f"* ]]; then
            echo "stderr lacks '$f': $stderr" >&2
            return 1
        fi
    done
}

# no_leftovers DIR NAME: neither DIR/NAME nor any staging sibling DIR/NAME.* / DIR/.NAME* exists.
no_leftovers() {
    local left
    left=$(cd "$1" && ls -Ad "$2" "$2".* ."$2"* 2>/dev/null || true)
    if [ -n "$left" ]; then
        echo "left behind in $1: $left" >&2
        return 1
    fi
}

#!/usr/bin/env bats
# as-eval --base-logits (lib/common/logits_cache.c): the base's logits kept in a file must give
# exactly the report an evaluation with the base model gives (same KLD, base PPL, top-1, to the
# last digit: the raw logits are cached, not rounded log-probabilities), and a file made for
# another text, window length, scoring or window count is refused by name, never used.
bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    import_model
    as-cat "$M" | as-gptq -m rtn -b 4 -g 32 >"$BATS_FILE_TMPDIR/q.stream"
    as-pack -m "$M" -f fakequant -o "$BATS_FILE_TMPDIR/Q" <"$BATS_FILE_TMPDIR/q.stream" 2>/dev/null
}

setup() {
    Q=$BATS_FILE_TMPDIR/Q
    C=$BATS_TEST_TMPDIR/base.logits
}

@test "--base-logits: written from --base, then read without it; every number equals the uncached run" {
    run -0 as-eval -m "$Q" -b "$M" -f "$WIKI" --bytes 20000 --ctx 256 --json
    plain=$(jq -c 'del(.load_s, .prefill_tok_s, .base_logits, .base)' <<<"$output")
    # the shared test vector: fp32 stories260K PPL 126.1905 on these 20,000 bytes (README)
    jq -e '(.base_ppl * 10000 | round) == 1261905' <<<"$output"
    run -0 as-eval -m "$Q" -b "$M" -f "$WIKI" --bytes 20000 --ctx 256 --base-logits "$C" --json
    [ "$(jq -c 'del(.load_s, .prefill_tok_s, .base_logits, .base)' <<<"$output")" = "$plain" ]
    # 48 windows x 127 scored positions x 512 logits x 4 bytes + the 64-byte header
    [ "$(stat -c %s "$C")" -eq $((64 + 48 * 127 * 512 * 4)) ]
    run -0 as-eval -m "$Q" -f "$WIKI" --bytes 20000 --ctx 256 --base-logits "$C" --json
    [ "$(jq -c 'del(.load_s, .prefill_tok_s, .base_logits, .base)' <<<"$output")" = "$plain" ]
    run -0 as-eval -m "$Q" -f "$WIKI" --bytes 20000 --ctx 256 --score all --base-logits "$C.all" \
        -b "$M" --json
    all=$(jq -c 'del(.load_s, .prefill_tok_s, .base_logits)' <<<"$output")
    run -0 as-eval -m "$Q" -b "$M" -f "$WIKI" --bytes 20000 --ctx 256 --score all --json
    [ "$(jq -c 'del(.load_s, .prefill_tok_s, .base_logits)' <<<"$output")" = "$all" ]
}

@test "--base-logits: a file for another text, ctx, scoring or length is refused in one line" {
    as-eval -m "$Q" -b "$M" -f "$WIKI" --bytes 20000 --ctx 256 --base-logits "$C" --json >/dev/null
    cp "$C" "$C.orig"
    head -c 60000 "$AUSTEN/emma.txt" >"$BATS_TEST_TMPDIR/emma.txt"
    run -1 --separate-stderr as-eval -m "$Q" -f "$BATS_TEST_TMPDIR/emma.txt" --ctx 256 --chunks 48 --base-logits "$C"
    [ "$stderr" = "as-eval: file $C: base logits were computed for another text (token ids) (vocab 512, ctx 256, first 128, 48 windows)" ]
    [ -z "$output" ]
    run -1 --separate-stderr as-eval -m "$Q" -f "$WIKI" --bytes 20000 --ctx 128 --base-logits "$C"
    [ "$stderr" = "as-eval: file $C: base logits were computed for another --ctx (vocab 512, ctx 256, first 128, 48 windows)" ]
    run -1 --separate-stderr as-eval -m "$Q" -f "$WIKI" --bytes 20000 --ctx 256 --score all --base-logits "$C"
    [ "$stderr" = "as-eval: file $C: base logits were computed for another --score (vocab 512, ctx 256, first 128, 48 windows)" ]
    run -1 --separate-stderr as-eval -m "$Q" -f "$WIKI" --bytes 20000 --ctx 256 --chunks 10 --base-logits "$C"
    [ "$stderr" = "as-eval: file $C: base logits were computed for another number of windows (vocab 512, ctx 256, first 128, 48 windows)" ]
    truncate -s -4 "$C"
    run -1 --separate-stderr as-eval -m "$Q" -f "$WIKI" --bytes 20000 --ctx 256 --base-logits "$C"
    [ "$stderr" = "as-eval: file $C: truncated or padded ($((64 + 48 * 127 * 512 * 4 - 4)) bytes, expected $((64 + 48 * 127 * 512 * 4)))" ]
    printf 'not a cache' >"$C"
    run -1 --separate-stderr as-eval -m "$Q" -f "$WIKI" --bytes 20000 --ctx 256 --base-logits "$C"
    [ "$stderr" = "as-eval: file $C: not a base-logits file (as-eval --base-logits)" ]
    # none of the refusals touched the files
    cmp "$C.orig" <(cat "$C.orig")
    [ "$(cat "$C")" = "not a cache" ]
}

@test "--base-logits: a missing file without --base is refused; nothing is written" {
    run -1 --separate-stderr as-eval -m "$Q" -f "$WIKI" --bytes 20000 --ctx 256 --base-logits "$C"
    [ "$stderr" = "as-eval: --base-logits $C: the file does not exist and no --base model computes it" ]
    [ -z "$output" ]
    [ ! -e "$C" ]
    run -0 find "$BATS_TEST_TMPDIR" -name 'base.logits*'
    [ -z "$output" ]
}

#!/usr/bin/env bats
# as-gen --chat (lib/common/chat_template.c): the prompt rendered through the model's own chat
# template must be byte-identical to what jinja2 renders from the same template with the settings
# transformers' apply_chat_template uses (trim_blocks, lstrip_blocks, sandboxed); the template is
# read by the gguf package (SmolLM2's GGUF) or from tokenizer_config.json. The real model must
# then answer a chat prompt and stop at its end-of-turn token.

load helpers
load assert_refused
set -o pipefail

setup_file() {
    export SMOL
    SMOL=$("$BATS_TEST_DIRNAME/../../pipelines/smollm2-gguf")
    # a ChatML template without a default system message (Qwen3's shape), with Jinja "\n" escapes
    mkdir -p "$BATS_FILE_TMPDIR/plain"
    cat >"$BATS_FILE_TMPDIR/plain/tokenizer_config.json" <<'EOF'
{"chat_template": "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"}
EOF
    # Qwen2.5's shape: a default system message in an else branch, written with "\n" escapes
    mkdir -p "$BATS_FILE_TMPDIR/qwen"
    cat >"$BATS_FILE_TMPDIR/qwen/tokenizer_config.json" <<'EOF'
{"chat_template": [{"name": "default", "template": "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"}]}
EOF
    mkdir -p "$BATS_FILE_TMPDIR/llama3"
    cat >"$BATS_FILE_TMPDIR/llama3/tokenizer_config.json" <<'EOF'
{"chat_template": "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}"}
EOF
}

# jinja2 rendering of SOURCE's template (a .gguf through the gguf package, else a directory's
# tokenizer_config.json) for a user PROMPT and an optional SYSTEM message
jinja() {
    python3 - "$@" <<'EOF'
import json, sys
from jinja2.sandbox import ImmutableSandboxedEnvironment
src, prompt = sys.argv[1], sys.argv[2]
if src.endswith(".gguf"):
    from gguf import GGUFReader
    t = GGUFReader(src).fields["tokenizer.chat_template"].contents()
else:
    t = json.load(open(src + "/tokenizer_config.json"))["chat_template"]
    if isinstance(t, list):
        t = [e["template"] for e in t if e["name"] == "default"][0]
msgs = ([{"role": "system", "content": sys.argv[3]}] if len(sys.argv) > 3 else []) + \
       [{"role": "user", "content": prompt}]
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
sys.stdout.write(env.from_string(t).render(messages=msgs, add_generation_prompt=True))
EOF
}

# as-gen's rendering equals jinja2's, byte for byte (files compared: trailing newlines count)
same_render() { # SOURCE PROMPT [SYSTEM]
    local sys=()
    [ $# -lt 3 ] || sys=(--system "$3")
    as-gen -m "$1" --chat --chat-render -p "$2" "${sys[@]}" >"$BATS_TEST_TMPDIR/ours"
    jinja "$@" >"$BATS_TEST_TMPDIR/theirs"
    cmp "$BATS_TEST_TMPDIR/ours" "$BATS_TEST_TMPDIR/theirs"
}

@test "SmolLM2's template (from its GGUF): default system message, user turn, generation prompt" {
    same_render "$SMOL" "What is the capital of France?"
    grep -q "You are a helpful AI assistant named SmolLM" "$BATS_TEST_TMPDIR/ours"
}

@test "SmolLM2's template: an explicit system message replaces the default" {
    same_render "$SMOL" "Hi" "You answer in one word."
    run grep -c "SmolLM" "$BATS_TEST_TMPDIR/ours"
    [ "$output" = 0 ]
}

@test "SmolLM2's template: newlines, quotes, braces and unicode in the messages pass through" {
    same_render "$SMOL" $'line one\n  line "two" {{ not jinja }}\r\n\tend — 東京 🙂' $'sys \'q\'\n'
}

@test "ChatML without a default system message, and Qwen2.5's default in an else branch" {
    same_render "$BATS_FILE_TMPDIR/plain" "Hello"
    same_render "$BATS_FILE_TMPDIR/plain" "Hello" "Be brief."
    same_render "$BATS_FILE_TMPDIR/qwen" "Hello"
    grep -q "You are Qwen" "$BATS_TEST_TMPDIR/ours"
    same_render "$BATS_FILE_TMPDIR/qwen" "Hello" "Be brief."
}

@test "SmolLM2 answers a chat question and stops at its end-of-turn token" {
    run -0 --separate-stderr as-gen -m "$SMOL" --chat -p "What is the capital of France?" -n 120 -v
    [[ "$output" == *Paris* ]]
    # only the answer is printed, and it ended at EOS well before the step limit
    [[ "$output" != *im_start* ]]
    [[ "$stderr" =~ as-gen:\ ([0-9]+)\ tokens ]]
    [ "${BASH_REMATCH[1]}" -lt 100 ]
}

@test "bad input: unknown template family, no template, options without --chat" {
    run --separate-stderr as-gen -m "$BATS_FILE_TMPDIR/llama3" --chat --chat-render -p x
    refused "as-gen: chat template not recognised (supported families: chatml); it begins \"{% for message in messages %}{{ '<|start\""
    mkdir -p "$BATS_TEST_TMPDIR/none"
    echo '{"bos_token": "<s>"}' >"$BATS_TEST_TMPDIR/none/tokenizer_config.json"
    run --separate-stderr as-gen -m "$BATS_TEST_TMPDIR/none" --chat --chat-render -p x
    refused "as-gen: $BATS_TEST_TMPDIR/none/tokenizer_config.json: no chat_template (not a chat model?)"
    run --separate-stderr as-gen -m "$SMOL" --chat-render -p x
    refused "as-gen: --system and --chat-render need --chat"
}

@test "as-draft spec --chat decodes the same chat prompt as as-gen --chat (plain greedy, to EOS)" {
    as-draft init -m "$SMOL" -o "$BATS_TEST_TMPDIR/D" --vd 256 --seed 1
    echo "Name three colors." >"$BATS_TEST_TMPDIR/p.txt"
    run -0 --separate-stderr as-gen -m "$SMOL" --chat -p "Name three colors." -n 120 -v
    [[ "$stderr" =~ as-gen:\ ([0-9]+)\ tokens.*prefill\ of\ ([0-9]+)\ tokens ]]
    local generated=$((BASH_REMATCH[1] + 1 - BASH_REMATCH[2]))
    [ "$generated" -lt 100 ]
    run -0 as-draft spec -m "$SMOL" -d "$BATS_TEST_TMPDIR/D" -k 2 -P "$BATS_TEST_TMPDIR/p.txt" \
        -n 120 --chat
    [ "$(jq -r 'select(.prompt == 0) | .plain_tokens' <<<"$output")" = "$generated" ]
    [ "$(jq -r 'select(.summary) | .identical' <<<"$output")" = 1 ]
}

@test "bad input: as-draft --chat on a model without a chat template" {
    import_model
    echo "Once upon a time" >"$BATS_TEST_TMPDIR/e.txt"
    run --separate-stderr as-draft train -m "$M" -o "$BATS_TEST_TMPDIR/out" -f "$WIKI" \
        -e "$BATS_TEST_TMPDIR/e.txt" --steps 1 --chat
    refused "as-draft: $M/tokenizer_config.json: no chat_template (not a chat model?)"
    [ ! -e "$BATS_TEST_TMPDIR/out" ]
}

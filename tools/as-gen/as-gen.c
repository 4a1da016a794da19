/* as-gen: generate text from a Hugging Face checkpoint with the engine (greedy by default).
 * Convention (llama2.c run.c, data/README.md): BOS, then the prompt; positions are filled until
 * STEPS tokens follow BOS (prompt included); generation stops early at BOS or EOS. The text is
 * decoded piece by piece, the leading space of the first piece after BOS stripped. */
#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "as_error.h"
#include "chat_template.h"
#include "draft_cli.h"
#include "forward.h"
#include "gen_batch.h"
#include "gen_sample.h"
#include "model.h"
#include "model_loaders.h"
#include "model_open.h"
#include "prune_engine.h"
#include "qlinear.h"
#include "sparse_attn.h"
#include "tokenizer.h"

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: as-gen -m MODEL_DIR [-p PROMPT] [-n STEPS] [--temp T] [--seed S]\n"
        "Generate text; greedy (argmax) unless --temp > 0.\n"
        "  -m, --model DIR    Hugging Face checkpoint directory (config.json, tokenizer.json)\n"
        "                     or a llama.cpp FILE.gguf\n"
        "  -p, --prompt TEXT  prompt (default: empty)\n"
        "  -n, --steps N      tokens after BOS, prompt included (default 256)\n"
        "  -t, --temp T       sampling temperature (default 0 = greedy)\n"
        "  -s, --seed S       random seed for sampling (default 42)\n"
        "      --chat         the prompt is a user message: rendered through the model's chat\n"
        "                     template (tokenizer_config.json / GGUF), only the answer printed\n"
        "      --system TEXT  with --chat: a system message first (else the template's default)\n"
        "      --chat-render  with --chat: print the rendered prompt text and exit\n"
        "      --draft DIR    speculative decoding with an Eagle3 draft (as-draft); greedy\n"
        "                     output is identical to plain decoding (docs/draft.md)\n"
        "  -k K               tokens drafted per target pass with --draft (1..16, default 3)\n"
        "  -v, --verbose      print tokens/s and the prefill time to stderr\n"
        "      --sparse-attn SPEC  sparse prefill attention (decode stays dense): a JSON\n"
        "                     config or METHOD[:PARAM=VALUE,...] (docs/sparse-attention.md)\n"
        "      --prune METHOD:KEEP[:LAYER[:KEEP_LAST]]  prune the prompt's tokens inside the\n"
        "                     prefill, generate on the kept ones (docs/token-pruning.md)\n"
        "      --batch FILE   many prompts, one JSON object per line ({\"prompt\": TEXT} and\n"
        "                     optionally \"steps\", \"temp\", \"seed\", \"chat\", \"system\"; the\n"
        "                     options above are the defaults), decoded together; one JSON line\n"
        "                     out per prompt, in order: {\"index\", \"text\", \"ids\"}, the text\n"
        "                     what as-gen prints for that prompt alone (FILE - : stdin)\n"
        "  -B, --batch-size N sequences decoded together with --batch (1..64, default 4)\n"
        "A packed as-ternary checkpoint runs through the int8 kernels (AS_TERNARY_KERNELS=0:\n"
        "on its dequantized f32 weights instead; docs/ternary.md).\n");
}

/* -v: which path a packed as-ternary checkpoint's linears take (the formats present, in the
 * layout table's order) */
static void report_packed(const struct as_model *m) {
    int n = 0, seen[AS_TF_COUNT] = {0};
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int w = 0; w < AS_LIN_COUNT; w++) {
            const struct as_qlin *q = m->layers[l].packed[w];
            if (q) n++, seen[q->W.fmt] = 1;
        }
    if (!n) return;
    char fmts[64] = "";
    for (int f = 0; f < AS_TF_COUNT; f++)
        if (seen[f]) {
            char low[16];
            size_t i = 0;
            for (; as_tern_layouts[f].name[i] && i < sizeof low - 1; i++)
                low[i] = (char)tolower((unsigned char)as_tern_layouts[f].name[i]);
            low[i] = 0;
            snprintf(fmts + strlen(fmts), sizeof fmts - strlen(fmts), "%s%s", *fmts ? ", " : "",
                     low);
        }
    if (as_qlin_enabled())
        fprintf(stderr, "%s: %d packed linears through the int8 kernels (%s)\n", as_progname(), n,
                fmts);
    else
        fprintf(stderr,
                "%s: %d packed linears on their dequantized f32 weights (AS_TERNARY_KERNELS=0)\n",
                as_progname(), n);
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    const char *dir = NULL, *prompt = "";
    const char *sparse_spec = NULL; /* sparse prefill attention (sparse_attn.h) */
    const char *prune_spec = NULL;  /* token pruning in the prefill (prune_engine.h) */
    int steps = 256, verbose = 0;
    float temp = 0;
    unsigned long long seed = 42;
    const char *draft_dir = NULL; /* speculative decoding (draft_cli.h) */
    int spec_k = 0;
    int chat = 0, chat_render = 0; /* --chat: the prompt through the model's chat template */
    const char *system_msg = NULL;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"prompt", required_argument, 0, 'p'},
                                         {"steps", required_argument, 0, 'n'},
                                         {"temp", required_argument, 0, 't'},
                                         {"seed", required_argument, 0, 's'},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"draft", required_argument, 0, 'D'},
                                         {"help", no_argument, 0, 'h'},
                                         {"sparse-attn", required_argument, 0, 1},
                                         {"prune", required_argument, 0, 2},
                                         {"chat", no_argument, 0, 3},
                                         {"system", required_argument, 0, 4},
                                         {"chat-render", no_argument, 0, 5},
                                         {"batch", required_argument, 0, 6},
                                         {"batch-size", required_argument, 0, 'B'},
                                         {0, 0, 0, 0}};
    int c;
    char *end;
    const char *batch_path = NULL; /* --batch: prompts as JSON lines (gen_batch.h) */
    int batch_size = 4, prompt_given = 0;
    while ((c = getopt_long(argc, argv, "m:p:n:t:s:vhk:D:B:", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            dir = optarg;
            break;
        case 'p':
            prompt = optarg, prompt_given = 1;
            break;
        case 'n':
            steps = (int)strtol(optarg, &end, 10);
            if (*end || steps <= 0)
                as_die("--steps: expected a positive integer, got \"%s\"", optarg);
            break;
        case 't':
            temp = strtof(optarg, &end);
            if (*end || !(temp >= 0)) as_die("--temp: expected a number >= 0, got \"%s\"", optarg);
            break;
        case 's':
            seed = strtoull(optarg, &end, 10);
            if (*end) as_die("--seed: expected an integer, got \"%s\"", optarg);
            break;
        case 'v':
            verbose = 1;
            break;
        case 1:
            sparse_spec = optarg;
            break;
        case 2:
            prune_spec = optarg;
            break;
        case 3:
            chat = 1;
            break;
        case 4:
            system_msg = optarg;
            break;
        case 5:
            chat_render = 1;
            break;
        case 'D':
            draft_dir = optarg;
            break;
        case 6:
            batch_path = optarg;
            break;
        case 'B':
            batch_size = (int)strtol(optarg, &end, 10);
            if (*end || batch_size < 1 || batch_size > 64)
                as_die("--batch-size: expected an integer in 1..64, got \"%s\"", optarg);
            break;
        case 'k':
            spec_k = (int)strtol(optarg, &end, 10);
            if (*end || spec_k < 1 || spec_k > 16)
                as_die("-k: expected an integer in 1..16, got \"%s\"", optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!dir || optind != argc) {
        usage(stderr);
        return 2;
    }
    if ((system_msg || chat_render) && !chat) as_die("--system and --chat-render need --chat");
    if (batch_path) { /* many prompts, decoded together (batch.c) */
        if (prompt_given || draft_dir || spec_k || sparse_spec || prune_spec || chat_render)
            as_die("--batch takes its prompts from the file: no -p, --draft, -k, --sparse-attn, "
                   "--prune or --chat-render");
        as_register_model_loaders();
        struct as_model *m = as_model_open(dir);
        if (!m) as_die_last();
        struct as_tokenizer *tok = as_tokenizer_open(dir);
        if (!tok) as_die_last();
        struct as_gen_batch_opts bo = {batch_path, batch_size, steps,      chat,
                                       temp,       seed,       system_msg, verbose};
        int rc = as_gen_batch_run(m, tok, dir, &bo);
        as_tokenizer_free(tok);
        as_model_free(m);
        if (rc) as_die_last();
        return 0;
    }
    char *chat_text = NULL;
    if (chat) { /* the rendered conversation replaces the prompt; its template adds any BOS */
        char *tmpl = as_chat_template_open(dir);
        if (!tmpl) as_die_last();
        struct as_chat_msg msgs[2] = {{"system", system_msg}, {"user", prompt}};
        chat_text = as_chat_render(tmpl, system_msg ? msgs : msgs + 1, system_msg ? 2 : 1, 1);
        free(tmpl);
        if (!chat_text) as_die_last();
        if (chat_render) {
            fputs(chat_text, stdout);
            free(chat_text);
            return fflush(stdout) == 0 ? 0 : 1;
        }
        prompt = chat_text;
    }
    struct as_prune_engine pe;
    if (prune_spec && as_prune_engine_from_spec(prune_spec, &pe)) as_die_last();
    if (prune_spec && (draft_dir || sparse_spec))
        as_die("--prune cannot be combined with --draft or --sparse-attn");
    uint64_t rng_state = seed ? seed : 1;
    as_register_model_loaders(); /* quantized checkpoints (GPTQ, AWQ, ..., as-ternary) */
    /* generation runs what ships: a packed as-ternary checkpoint's layers through the int8
     * kernels (AS_TERNARY_KERNELS=0: its dequantized f32 weights, as as-eval does by default) */
    as_qlin_set_default(1);
    struct as_model *m = as_model_open(dir);
    if (!m) as_die_last();
    if (verbose) report_packed(m);
    struct as_tokenizer *tok = as_tokenizer_open(dir);
    if (!tok) as_die_last();
    int32_t *ids;
    size_t n_prompt;
    int add_bos = chat ? 0 : as_tokenizer_add_bos(tok); /* the model's own rule (SmolLM2: none) */
    if (as_tokenizer_encode(tok, prompt, strlen(prompt), add_bos, &ids, &n_prompt) != 0)
        as_die_last();
    if (n_prompt == 0) as_die("prompt encodes to no tokens (and the model adds no BOS)");
    if ((int)n_prompt > steps + 1)
        as_die("prompt is %zu tokens, more than --steps %d", n_prompt - add_bos, steps);
    int32_t bos = as_tokenizer_bos(tok), eos = as_tokenizer_eos(tok);
    int *toks = as_xmalloc(((size_t)steps + 1) * sizeof(int));
    for (size_t i = 0; i < n_prompt; i++)
        toks[i] = ids[i];
    free(ids);
    if (spec_k && !draft_dir) as_die("-k needs --draft DIR");
    if (draft_dir) {
        struct as_draft_cli dc = {draft_dir, spec_k ? spec_k : 3, temp, seed, verbose};
        int rc = as_draft_cli_run(m, tok, toks, (int)n_prompt, add_bos, steps, &dc);
        free(toks);
        free(chat_text);
        as_tokenizer_free(tok);
        as_model_free(m);
        return rc;
    }
    struct as_run_state *s = as_state_new(m, (int)n_prompt, steps + 1, 0);
    if (!s) as_die_last();
    struct as_sparse_engine sp = {NULL, &m->cfg};
    if (sparse_spec) { /* the prompt's prefill sparse, decode dense */
        sp.cfg = as_sparse_config_from_spec(sparse_spec, &m->cfg);
        if (!sp.cfg || as_sparse_config_check(sp.cfg, (int)n_prompt)) as_die_last();
        as_sparse_attach(&sp, s);
    }
    struct timespec t0, t1, tp;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* print the prompt pieces (after the BOS, if any) */
    char piece[256];
    for (size_t i = (size_t)add_bos; !chat && i < n_prompt; i++) {
        int len =
            as_tokenizer_decode_piece(tok, i ? toks[i - 1] : -1, toks[i], piece, sizeof piece);
        if (len < 0) as_die_last();
        fwrite(piece, 1, (size_t)len < sizeof piece ? (size_t)len : sizeof piece - 1, stdout);
    }
    if ((prune_spec ? as_prune_prefill(m, s, toks, (int)n_prompt, &pe, NULL, NULL)
                    : as_forward(m, s, toks, (int)n_prompt, AS_LOGITS_LAST, NULL)) != 0)
        as_die_last();
    clock_gettime(CLOCK_MONOTONIC, &tp);
    int n = (int)n_prompt, generated = 0;
    while (n <= steps) {
        int next = as_sample_token(s->logits, m->cfg.vocab, temp, s->logits, &rng_state);
        if (next == bos || next == eos) break;
        toks[n] = next;
        int len = as_tokenizer_decode_piece(tok, toks[n - 1], next, piece, sizeof piece);
        if (len < 0) as_die_last();
        fwrite(piece, 1, (size_t)len < sizeof piece ? (size_t)len : sizeof piece - 1, stdout);
        n++, generated++;
        if (n > steps) break;
        if (as_forward(m, s, &toks[n - 1], 1, AS_LOGITS_LAST, NULL) != 0) as_die_last();
    }
    printf("\n");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (verbose) {
        double dt = (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec);
        fprintf(stderr, "%s: %d tokens in %.3f s (%.0f tokens/s)\n", as_progname(), n - 1, dt,
                (n - 1) / dt);
        fprintf(stderr, "%s: prefill of %zu tokens in %.3f s", as_progname(), n_prompt,
                (tp.tv_sec - t0.tv_sec) + 1e-9 * (tp.tv_nsec - t0.tv_nsec));
        if (sp.cfg) fprintf(stderr, ", sparse density %.4f", as_sparse_mean_density(sp.cfg));
        fprintf(stderr, "\n");
    }
    free(toks);
    free(chat_text);
    as_sparse_config_free(sp.cfg);
    as_state_free(s);
    as_tokenizer_free(tok);
    as_model_free(m);
    return fflush(stdout) == 0 ? 0 : 1;
}

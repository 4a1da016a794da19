/* as-eval: quality and speed of a checkpoint, as llama.cpp's perplexity tool measures them.
 *
 * Perplexity: the first --bytes of the text are tokenized as one sequence, BOS first, and cut
 * into windows of --ctx tokens; each window's first token is replaced by BOS and (by default)
 * only its second half is scored: positions ctx/2 .. ctx-2 predict the next token.
 * With --base, the base model runs on the same window side by side (no logits are stored) and
 * the KL divergence of the candidate against it is reported with percentiles, Δp and top-1
 * agreement. --gen N times generation of N tokens with the KV cache. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include <jansson.h>

#include "as_error.h"
#include "cli_args.h"
#include "eval_metrics.h"
#include "forward.h"
#include "fpquant.h"
#include "gguf.h"
#include "logits_cache.h"
#include "model_open.h"
#include "model.h"
#include "model_loaders.h"
#include "pack_fp.h"
#include "prune_engine.h"
#include "sparse_attn.h"
#include "text_data.h"
#include "tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: as-eval -m MODEL -f TEXT [options]\n"
            "Perplexity (and KL divergence vs --base) of a Hugging Face checkpoint directory,\n"
            "dense or quantized (GPTQ v1, compressed-tensors), llama.cpp's conventions.\n"
            "  -m, --model DIR     checkpoint to evaluate (or a llama.cpp FILE.gguf)\n"
            "  -b, --base DIR      base (full-precision) checkpoint for KL divergence\n"
            "  -f, --file TEXT     evaluation text (e.g. wiki.test.raw)\n"
            "      --bytes N       use only the first N bytes of TEXT (default: all)\n"
            "  -c, --ctx N         window length in tokens (default 512)\n"
            "      --score MODE    half (default: second half of each window) or all\n"
            "      --chunks N      evaluate at most N windows\n"
            "      --gen N         also time greedy generation of N tokens (default 0)\n"
            "      --threads N     OpenBLAS threads (default: OpenBLAS's choice)\n"
            "      --act-quant A   activation quantization of MODEL's linear inputs: auto\n"
            "                      (default: what the checkpoint declares, e.g. FP8 input_scale),\n"
            "                      none, or a dynamic scheme for every linear: fp8-dynamic,\n"
            "                      fp8-tensor-dynamic, fp8-group128, int8-dynamic, mxfp4\n"
            "      --kv-cache K    KV cache of MODEL: auto (default: FP8 with the static\n"
            "                      k_scale/v_scale the checkpoint's kv_cache_scheme declares,\n"
            "                      simulated) or none (full precision)\n"
            "      --base-logits F the base's logits at the scored positions, in file F:\n"
            "                      read when F exists (then --base is not needed), else\n"
            "                      computed with --base and written (one base forward\n"
            "                      pass for many candidates; llama.cpp's\n"
            "                      --kl-divergence-base)\n"
            "      --sparse-attn S sparse prefill attention of MODEL: a JSON config or\n"
            "                      METHOD[:PARAM=VALUE,...] (docs/sparse-attention.md)\n"
            "      --prune-tokens METHOD:KEEP[:LAYER[:KEEP_LAST]]\n"
            "                      also score each window's second half after a pruned first\n"
            "                      half (docs/token-pruning.md): PPL, KLD vs unpruned, the\n"
            "                      theoretical FLOP reduction and the measured prefill\n"
            "                      speedup of the first half, unpruned timed in the same run\n"
            "      --json          JSON report on stdout instead of the table\n"
            "  -h, --help          this help\n");
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

extern void openblas_set_num_threads(int);

struct eval_opts {
    const char *model, *base, *file;
    size_t bytes;
    int ctx, score_all, chunks, gen, json;
    const char *act_quant, *kv_cache, *base_logits;
    const char *sparse_attn; /* sparse prefill attention of MODEL (sparse_attn.h) */
    const char *prune;       /* --prune-tokens METHOD:KEEP[:LAYER[:KEEP_LAST]] (prune_engine.h) */
};

/* Generation speed: greedy decode of n tokens after BOS, one token per forward call. */
static int time_generation(const struct as_model *m, int n, double *tok_per_s) {
    int max_seq = n + 1 < m->cfg.max_pos ? n + 1 : m->cfg.max_pos;
    struct as_run_state *s = as_state_new(m, 1, max_seq, 0);
    if (!s) return -1;
    int tok = m->cfg.bos_id >= 0 ? m->cfg.bos_id : 1, steps = 0;
    double t0 = now_s();
    for (; steps < max_seq - 1; steps++) {
        if (as_forward(m, s, &tok, 1, AS_LOGITS_LAST, NULL)) {
            as_state_free(s);
            return -1;
        }
        int best = 0;
        for (int v = 1; v < m->cfg.vocab; v++)
            if (s->logits[v] > s->logits[best]) best = v;
        tok = best;
    }
    double dt = now_s() - t0;
    *tok_per_s = steps / dt;
    as_state_free(s);
    return 0;
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    struct eval_opts o = {.ctx = 512};
    int threads = 0;
    static const struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                             {"base", required_argument, 0, 'b'},
                                             {"file", required_argument, 0, 'f'},
                                             {"bytes", required_argument, 0, 1},
                                             {"ctx", required_argument, 0, 'c'},
                                             {"score", required_argument, 0, 2},
                                             {"chunks", required_argument, 0, 3},
                                             {"gen", required_argument, 0, 4},
                                             {"json", no_argument, 0, 5},
                                             {"threads", required_argument, 0, 6},
                                             {"act-quant", required_argument, 0, 7},
                                             {"kv-cache", required_argument, 0, 8},
                                             {"base-logits", required_argument, 0, 9},
                                             {"sparse-attn", required_argument, 0, 10},
                                             {"prune-tokens", required_argument, 0, 11},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:b:f:c:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            o.model = optarg;
            break;
        case 'b':
            o.base = optarg;
            break;
        case 'f':
            o.file = optarg;
            break;
        case 1:
            o.bytes = as_arg_u64(optarg);
            break;
        case 'c':
            o.ctx = as_arg_int(optarg);
            break;
        case 2:
            if (!strcmp(optarg, "all"))
                o.score_all = 1;
            else if (strcmp(optarg, "half"))
                as_die("--score: expected half or all, got '%s'", optarg);
            break;
        case 3:
            o.chunks = as_arg_int(optarg);
            break;
        case 4:
            o.gen = as_arg_int(optarg);
            break;
        case 5:
            o.json = 1;
            break;
        case 6:
            threads = as_arg_int(optarg);
            break;
        case 7:
            o.act_quant = optarg;
            break;
        case 8:
            o.kv_cache = optarg;
            break;
        case 9:
            o.base_logits = optarg;
            break;
        case 10:
            o.sparse_attn = optarg;
            break;
        case 11:
            o.prune = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!o.model || (!o.file && !o.gen)) {
        usage(stderr);
        return 2;
    }
    struct as_prune_engine pe;
    if (o.prune) {
        if (as_prune_engine_parse("--prune-tokens", o.prune, &pe)) as_die_last();
        if (!o.file || o.score_all || o.sparse_attn)
            as_die("--prune-tokens: needs -f TEXT and --score half (the pruned prompt is each "
                   "window's first half), without --sparse-attn");
    }
    if (threads > 0) openblas_set_num_threads(threads);
    as_register_model_loaders();

    double t_load = now_s();
    struct as_model *m = as_model_open(o.model);
    if (!m) as_die_last();
    struct as_model *base = NULL;
    int cache_exists = o.base_logits && access(o.base_logits, F_OK) == 0;
    if (o.base_logits && !cache_exists && !o.base)
        as_die("--base-logits %s: the file does not exist and no --base model computes it",
               o.base_logits);
    if (o.base && !cache_exists) {
        base = as_model_open(o.base);
        if (!base) as_die_last();
        if (base->cfg.vocab != m->cfg.vocab)
            as_die("%s: vocabulary size %d differs from the base model's %d (%s)", o.model,
                   m->cfg.vocab, base->cfg.vocab, o.base);
    }
    t_load = now_s() - t_load;

    /* Activation quantization (fpquant.h): what the checkpoint declares, or --act-quant. */
    struct as_act_quant *aq = NULL;
    const char *aq_name = o.act_quant ? o.act_quant : "auto";
    if (!strcmp(aq_name, "auto")) {
        if (!as_path_is_gguf(o.model) && as_act_quant_from_checkpoint(m, o.model, &aq))
            as_die_last();
    } else if (strcmp(aq_name, "none")) {
        int k = as_aq_from_name(aq_name);
        if (k != AS_AQ_FP8_TOKEN && k != AS_AQ_FP8_TENSOR_DYN && k != AS_AQ_FP8_GROUP128 &&
            k != AS_AQ_INT8_TOKEN && k != AS_AQ_MXFP4)
            as_die("--act-quant '%s': expected auto, none, fp8-dynamic, fp8-tensor-dynamic, "
                   "fp8-group128, int8-dynamic or mxfp4 (static schemes take their scales from "
                   "the checkpoint: auto)",
                   aq_name);
        aq = as_act_quant_new(m->cfg.n_layers);
        as_act_quant_set_all(aq, (enum as_aq_kind)k);
    }
    int aq_on = as_act_quant_active(aq);
    /* FP8 KV cache (kv_cache_scheme): keys and values quantize-dequantized as they are cached */
    struct as_kv_quant *kq = NULL;
    const char *kv_name = o.kv_cache ? o.kv_cache : "auto";
    if (strcmp(kv_name, "auto") && strcmp(kv_name, "none"))
        as_die("--kv-cache '%s': expected auto or none", kv_name);
    if (!strcmp(kv_name, "auto") && !as_path_is_gguf(o.model) &&
        as_kv_quant_from_checkpoint(m, o.model, &kq))
        as_die_last();

    json_t *rep = json_object();
    json_object_set_new(rep, "model", json_string(o.model));
    if (o.base) json_object_set_new(rep, "base", json_string(o.base));
    if (o.base_logits) json_object_set_new(rep, "base_logits", json_string(o.base_logits));
    json_object_set_new(rep, "load_s", json_real(t_load));
    if (aq_on) {
        json_t *kinds = json_array(); /* the distinct activation quantizers in use */
        for (int i = 0; i < aq->n_layers * AS_GROUP_COUNT; i++) {
            const char *nm = as_aq_names[aq->kind[i]];
            int seen = 0;
            for (size_t j = 0; j < json_array_size(kinds); j++)
                seen |= !strcmp(json_string_value(json_array_get(kinds, j)), nm);
            if (!seen) json_array_append_new(kinds, json_string(nm));
        }
        json_object_set_new(rep, "act_quant", kinds);
    }
    if (kq) json_object_set_new(rep, "kv_cache", json_string("fp8-static"));

    if (o.file) {
        if (o.ctx < 4) as_die("--ctx %d: need at least 4 tokens", o.ctx);
        if (o.ctx > m->cfg.max_pos)
            as_die("--ctx %d is larger than the model's maximum context %d (%s/config.json "
                   "max_position_embeddings)",
                   o.ctx, m->cfg.max_pos, o.model);
        struct as_tokenizer *tok = as_tokenizer_open(o.model);
        if (!tok) as_die_last();
        char *text;
        size_t len;
        if (as_text_read(o.file, o.bytes, &text, &len)) as_die_last();
        if (!len) as_die("%s: text is empty", o.file);
        int32_t *ids;
        size_t n_ids;
        /* The model's own BOS rule, as llama.cpp's perplexity: with BOS, the text starts with it
         * and each window's first token is replaced by it; without, windows are plain slices. */
        int add_bos = as_tokenizer_add_bos(tok);
        if (as_tokenizer_encode(tok, text, len, add_bos, &ids, &n_ids)) as_die_last();
        free(text);
        int n_chunks = (int)(n_ids / (size_t)o.ctx);
        if (o.chunks > 0 && o.chunks < n_chunks) n_chunks = o.chunks;
        if (n_chunks < 1)
            as_die("%s: %zu tokens is shorter than one window of --ctx %d", o.file, n_ids, o.ctx);
        int bos = add_bos ? as_tokenizer_bos(tok) : -1;
        int first = o.score_all ? 0 : o.ctx / 2;

        struct as_run_state *s = as_state_new(m, o.ctx, o.ctx, 0);
        struct as_run_state *sb = base ? as_state_new(base, o.ctx, o.ctx, 0) : NULL;
        struct as_logits_cache *cache_in = NULL, *cache_out = NULL;
        if (o.base_logits) {
            struct as_logits_key key = {(uint32_t)m->cfg.vocab, (uint32_t)o.ctx, (uint32_t)first,
                                        (uint32_t)n_chunks,
                                        as_logits_ids_hash(ids, (uint64_t)n_chunks * o.ctx)};
            cache_in = cache_exists ? as_logits_cache_open(o.base_logits, &key) : NULL;
            cache_out = cache_exists ? NULL : as_logits_cache_create(o.base_logits, &key);
            if (!cache_in && !cache_out) as_die_last();
        }
        int have_base = sb || cache_in;
        if (!s || (base && !sb)) as_die_last();
        as_act_quant_attach(aq, s); /* the candidate only; the base stays full precision */
        as_kv_quant_attach(kq, s);
        struct as_sparse_engine sp = {NULL, &m->cfg};
        if (o.sparse_attn) { /* the candidate only: --base stays dense */
            sp.cfg = as_sparse_config_from_spec(o.sparse_attn, &m->cfg);
            if (!sp.cfg || as_sparse_config_check(sp.cfg, o.ctx)) as_die_last();
            as_sparse_attach(&sp, s);
        }
        int V = m->cfg.vocab;
        double *lp = as_xmalloc(sizeof(double) * V), *lpb = as_xmalloc(sizeof(double) * V);
        struct as_nll_acc nll = {0}, nll_base = {0};
        struct as_kld_acc kld = {0};
        int *window = as_xmalloc(sizeof(int) * o.ctx);
        double t_fwd = 0;
        struct as_prune_eval pacc = {0};
        struct as_run_state *sp_state = o.prune ? as_state_new(m, o.ctx, o.ctx, 0) : NULL;
        if (o.prune && !sp_state) as_die_last();
        if (sp_state) as_act_quant_attach(aq, sp_state), as_kv_quant_attach(kq, sp_state);
        for (int ch = 0; ch < n_chunks; ch++) {
            for (int j = 0; j < o.ctx; j++)
                window[j] = ids[(size_t)ch * o.ctx + j];
            if (bos >= 0) window[0] = bos;
            as_state_reset(s);
            double t0 = now_s();
            if (as_forward(m, s, window, o.ctx, AS_LOGITS_ALL, NULL)) as_die_last();
            t_fwd += now_s() - t0;
            const float *base_rows = NULL; /* logits of positions first .. ctx-2 */
            if (cache_in) {
                base_rows = as_logits_cache_window(cache_in, (uint32_t)ch);
            } else if (sb) {
                as_state_reset(sb);
                if (as_forward(base, sb, window, o.ctx, AS_LOGITS_ALL, NULL)) as_die_last();
                base_rows = sb->logits + (size_t)first * V;
                if (cache_out && as_logits_cache_put(cache_out, base_rows)) as_die_last();
            }
            for (int j = first; j < o.ctx - 1; j++) {
                int target = ids[(size_t)ch * o.ctx + j + 1];
                as_log_softmax(s->logits + (size_t)j * V, V, lp);
                if (!isfinite(lp[target]))
                    as_die("%s: non-finite logits in window %d at position %d (NaN or Inf "
                           "weights?)",
                           o.model, ch, j);
                as_nll_add(&nll, -lp[target]);
                if (base_rows) {
                    as_log_softmax(base_rows + (size_t)(j - first) * V, V, lpb);
                    if (!isfinite(lpb[target]))
                        as_die("%s: non-finite logits in window %d at position %d (NaN or Inf "
                               "weights?)",
                               o.base ? o.base : o.base_logits, ch, j);
                    as_nll_add(&nll_base, -lpb[target]);
                    as_kld_add(&kld, lpb, lp, V, target);
                }
            }
            if (o.prune && as_prune_eval_window(m, sp_state, window, o.ctx, first, &pe,
                                                s->logits + (size_t)first * V, &pacc))
                as_fail_prefix("%s: window %d: ", o.model, ch), as_die_last();
            as_progress("window %d/%d  PPL %.4f", ch + 1, n_chunks, as_nll_ppl(&nll));
        }
        as_progress_done();
        json_object_set_new(rep, "text", json_string(o.file));
        json_object_set_new(rep, "tokens", json_integer((json_int_t)n_ids));
        json_object_set_new(rep, "ctx", json_integer(o.ctx));
        json_object_set_new(rep, "windows", json_integer(n_chunks));
        json_object_set_new(rep, "scored", json_integer((json_int_t)nll.n));
        json_object_set_new(rep, "score", json_string(o.score_all ? "all" : "half"));
        json_object_set_new(rep, "ppl", json_real(as_nll_ppl(&nll)));
        json_object_set_new(rep, "ppl_err", json_real(as_nll_ppl_err(&nll)));
        json_object_set_new(rep, "prefill_tok_s", json_real(n_chunks * (double)o.ctx / t_fwd));
        if (sp.cfg) {
            json_object_set_new(rep, "sparse_attn", json_string(o.sparse_attn));
            json_object_set_new(rep, "sparse_density", json_real(as_sparse_mean_density(sp.cfg)));
            as_sparse_config_free(sp.cfg);
            s->attn_mask = NULL;
        }
        if (o.prune) {
            struct as_kld_summary k;
            as_kld_summarize(&pacc.kld, &k);
            json_object_set_new(
                rep, "prune",
                json_pack("{s:s, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
                          "spec", o.prune, "prompt_tokens", (json_int_t)pacc.n, "kept_tokens",
                          (json_int_t)pacc.m, "ppl", as_nll_ppl(&pacc.nll), "ppl_err",
                          as_nll_ppl_err(&pacc.nll), "kld_mean", k.mean, "same_top", k.same_top,
                          "flops_full", pacc.flops_full, "flops_pruned", pacc.flops_pruned,
                          "flops_reduction", pacc.flops_full / pacc.flops_pruned, "prefill_full_s",
                          pacc.t_full, "prefill_pruned_s", pacc.t_pruned, "prefill_speedup",
                          pacc.t_full / pacc.t_pruned));
            as_kld_free(&pacc.kld);
            as_state_free(sp_state);
        }
        if (cache_out && as_logits_cache_commit(cache_out)) as_die_last();
        as_logits_cache_close(cache_in);
        if (have_base) {
            struct as_kld_summary k;
            as_kld_summarize(&kld, &k);
            json_object_set_new(rep, "base_ppl", json_real(as_nll_ppl(&nll_base)));
            json_object_set_new(rep, "base_ppl_err", json_real(as_nll_ppl_err(&nll_base)));
            json_t *kj = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "mean",
                                   k.mean, "mean_err", k.mean_err, "max", k.max, "p99.9", k.p999,
                                   "p99", k.p99, "p95", k.p95, "p90", k.p90, "median", k.median,
                                   "p10", k.p10, "p5", k.p05, "p1", k.p01, "min", k.min);
            json_object_set_new(rep, "kld", kj);
            json_object_set_new(rep, "dp_mean", json_real(k.dp_mean));
            json_object_set_new(rep, "dp_rms", json_real(k.dp_rms));
            json_object_set_new(rep, "same_top", json_real(k.same_top));
        }
        as_kld_free(&kld);
        free(window);
        free(lp);
        free(lpb);
        free(ids);
        as_state_free(s);
        as_state_free(sb);
        as_tokenizer_free(tok);
    }
    if (o.gen > 0) {
        double tps;
        if (time_generation(m, o.gen, &tps)) as_die_last();
        json_object_set_new(rep, "gen_tok_s", json_real(tps));
    }

    if (o.json) {
        char *js = json_dumps(rep, JSON_REAL_PRECISION(10) | JSON_COMPACT);
        printf("%s\n", js);
        free(js);
    } else {
        printf("model        %s\n", o.model);
        json_t *v;
        if ((v = json_object_get(rep, "act_quant"))) {
            printf("activations ");
            for (size_t j = 0; j < json_array_size(v); j++)
                printf(" %s", json_string_value(json_array_get(v, j)));
            printf(" (simulated)\n");
        }
        if ((v = json_object_get(rep, "kv_cache")))
            printf("kv cache     %s (simulated)\n", json_string_value(v));
        if ((v = json_object_get(rep, "ppl"))) {
            printf("text         %s: %lld tokens, ctx %d, %lld windows, %lld scored (%s)\n", o.file,
                   json_integer_value(json_object_get(rep, "tokens")), o.ctx,
                   json_integer_value(json_object_get(rep, "windows")),
                   json_integer_value(json_object_get(rep, "scored")),
                   o.score_all ? "all positions" : "second half");
            printf("PPL          %.4f ± %.5f\n", json_real_value(v),
                   json_real_value(json_object_get(rep, "ppl_err")));
        }
        if ((v = json_object_get(rep, "kld"))) {
            printf("base PPL     %.4f ± %.5f  (%s)\n",
                   json_real_value(json_object_get(rep, "base_ppl")),
                   json_real_value(json_object_get(rep, "base_ppl_err")),
                   o.base ? o.base : o.base_logits);
            printf("KLD mean     %.6f ± %.6f\n", json_real_value(json_object_get(v, "mean")),
                   json_real_value(json_object_get(v, "mean_err")));
            const char *keys[] = {"max",    "p99.9", "p99", "p95", "p90",
                                  "median", "p10",   "p5",  "p1",  "min"};
            for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
                printf("KLD %-8s %.6f\n", keys[i], json_real_value(json_object_get(v, keys[i])));
            printf("Δp mean      %+.4f%%\n",
                   100 * json_real_value(json_object_get(rep, "dp_mean")));
            printf("Δp RMS       %.4f%%\n", 100 * json_real_value(json_object_get(rep, "dp_rms")));
            printf("same top     %.3f%%\n",
                   100 * json_real_value(json_object_get(rep, "same_top")));
        }
        if ((v = json_object_get(rep, "prune"))) {
            printf("pruned       %s: prompt (first half) %lld -> %lld tokens\n", o.prune,
                   json_integer_value(json_object_get(v, "prompt_tokens")),
                   json_integer_value(json_object_get(v, "kept_tokens")));
            printf("pruned PPL   %.4f ± %.5f, KLD vs unpruned %.6f, same top %.3f%%\n",
                   json_real_value(json_object_get(v, "ppl")),
                   json_real_value(json_object_get(v, "ppl_err")),
                   json_real_value(json_object_get(v, "kld_mean")),
                   100 * json_real_value(json_object_get(v, "same_top")));
            printf("pruned cost  %.2fx fewer prefill FLOPs, measured prefill speedup %.2fx "
                   "(%.3f s unpruned, %.3f s pruned)\n",
                   json_real_value(json_object_get(v, "flops_reduction")),
                   json_real_value(json_object_get(v, "prefill_speedup")),
                   json_real_value(json_object_get(v, "prefill_full_s")),
                   json_real_value(json_object_get(v, "prefill_pruned_s")));
        }
        if ((v = json_object_get(rep, "prefill_tok_s")))
            printf("prefill      %.0f tokens/s\n", json_real_value(v));
        if ((v = json_object_get(rep, "gen_tok_s")))
            printf("generation   %.0f tokens/s\n", json_real_value(v));
    }
    json_decref(rep);
    as_act_quant_free(aq);
    as_kv_quant_free(kq);
    as_model_free(m);
    as_model_free(base);
    return 0;
}

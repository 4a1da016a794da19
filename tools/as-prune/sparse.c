/* as-prune search / analyze: offline sparse-attention work on a real model (sparse_attn.h).
 * Both run one dense prefill of the first CTX tokens of a text; at each layer the engine's
 * attention-mask hook sees the post-RoPE Q, K, V, and here every head's dense attention rows
 * (every --row-step-th row of the second half) are compared with block masks:
 *   analyze: the masks a config chooses: density and attention-mass recall (the share of each
 *            dense row's probability that falls in kept blocks) per layer and head, JSON; and an
 *            SVG of one layer: per head the dense block-mass map next to the chosen mask.
 *   search:  MInference's offline per-head search: candidates (stream_llm, vertical_and_slash
 *            at four budgets, block_sparse; MInference's list), each head gets the sparsest
 *            candidate whose recall reaches --recall (else the best recall); writes a config
 *            with the model fingerprint. The forward itself stays dense. */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as-prune.h"
#include "as_error.h"
#include "atomic_file.h"
#include "cli_args.h"
#include "forward.h"
#include "model_loaders.h"
#include "model_open.h"
#include "sparse_attn.h"
#include "text_data.h"
#include "tokenizer.h"

#define MAXC 8

struct run {
    const struct as_model_config *c;
    int L, B, step, nb;
    int n_cand;                         /* search: candidates; analyze: 1 */
    struct as_sparse_head cand[MAXC];   /* search */
    const struct as_sparse_config *cfg; /* analyze */
    double *recall, *density;           /* [layers][heads][n_cand] */
    int svg_layer;                      /* analyze */
    double *svg_mass;                   /* [heads][nb][nb] dense block mass of svg_layer */
    uint8_t *svg_mask;                  /* [heads][nb][nb] */
};

static float dotf(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Dense softmax rows i = L/2, L/2+step, ...: recall of each mask, block mass (if mass). */
static void head_rows(const struct run *r, const float *q, int qs, const float *k, int ks,
                      uint8_t *const *masks, int nm, double *recall, double *mass) {
    int L = r->L, hd = r->c->head_dim, B = r->B, nb = r->nb, rows = 0;
    float scale = 1.0f / sqrtf((float)hd);
    double *p = as_xmalloc(sizeof(double) * L);
    for (int m = 0; m < nm; m++)
        recall[m] = 0;
    for (int i = L / 2; i < L; i += r->step, rows++) {
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j <= i; j++) {
            p[j] = dotf(q + (size_t)i * qs, k + (size_t)j * ks, hd) * scale;
            mx = p[j] > mx ? p[j] : mx;
        }
        for (int j = 0; j <= i; j++)
            sum += (p[j] = exp(p[j] - mx));
        for (int j = 0; j <= i; j++)
            p[j] /= sum;
        for (int m = 0; m < nm; m++) {
            const uint8_t *row = masks[m] + (size_t)(i / B) * nb;
            double s = 0;
            for (int j = 0; j <= i; j++)
                if (row[j / B]) s += p[j];
            recall[m] += s;
        }
        if (mass)
            for (int j = 0; j <= i; j++)
                mass[(size_t)(i / B) * nb + j / B] += p[j];
    }
    for (int m = 0; m < nm; m++)
        recall[m] /= rows;
    free(p);
}

static const struct as_block_mask *hook(void *ctx, int layer, const float *q, const float *k,
                                        const float *v, int T) {
    struct run *r = ctx;
    const struct as_model_config *c = r->c;
    int hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd, nb = r->nb;
    uint8_t *masks[MAXC];
    for (int m = 0; m < r->n_cand; m++)
        masks[m] = as_xmalloc((size_t)nb * nb);
    for (int h = 0; h < c->n_heads; h++) {
        int g = h / (c->n_heads / c->n_kv_heads);
        const float *qh = q + (size_t)h * hd, *kh = k + (size_t)g * hd, *vh = v + (size_t)g * hd;
        size_t at = ((size_t)layer * c->n_heads + h) * r->n_cand;
        for (int m = 0; m < r->n_cand; m++) {
            const struct as_sparse_head *hc =
                r->cfg ? &r->cfg->heads[(size_t)layer * c->n_heads + h] : &r->cand[m];
            struct as_sparse_stat st;
            if (as_sparse_head_mask(hc, layer, c->n_layers, r->B, T, hd, qh, qd, kh, vh, kvd,
                                    masks[m], nb, &st))
                as_die_last();
            r->density[at + m] = st.density;
        }
        double *mass =
            layer == r->svg_layer && r->svg_mass ? r->svg_mass + (size_t)h * nb * nb : NULL;
        head_rows(r, qh, qd, kh, kvd, masks, r->n_cand, r->recall + at, mass);
        if (mass) memcpy(r->svg_mask + (size_t)h * nb * nb, masks[0], (size_t)nb * nb);
    }
    for (int m = 0; m < r->n_cand; m++)
        free(masks[m]);
    as_progress("layer %d/%d", layer + 1, c->n_layers);
    return NULL; /* the forward stays dense: every layer sees dense inputs */
}

/* Per head: dense block mass (log scale, grey) and the chosen mask (blue kept, light grey
 * dropped), one row of panels per head. */
static int write_svg(const char *path, const struct run *r) {
    int nb = r->nb, H = r->c->n_heads, cell = nb > 128 ? 2 : nb > 64 ? 3 : 5;
    int W = nb * cell, pad = 24;
    size_t cap = 1 << 20, len = 0;
    char *buf = as_xmalloc(cap);
#define OUTF(...)                                                                                  \
    do {                                                                                           \
        int k_ = snprintf(NULL, 0, __VA_ARGS__);                                                   \
        while (len + (size_t)k_ + 1 > cap)                                                         \
            buf = as_xrealloc(buf, cap *= 2);                                                      \
        len += (size_t)snprintf(buf + len, cap - len, __VA_ARGS__);                                \
    } while (0)
    OUTF("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
         "font-family=\"sans-serif\" font-size=\"11\">\n",
         2 * W + 3 * pad, H * (W + pad) + pad);
    OUTF("<text x=\"%d\" y=\"14\">layer %d: dense attention block mass (log) | chosen "
         "blocks</text>\n",
         pad, r->svg_layer);
    for (int h = 0; h < H; h++) {
        const double *m = r->svg_mass + (size_t)h * nb * nb;
        const uint8_t *k = r->svg_mask + (size_t)h * nb * nb;
        double mx = 0;
        for (int i = 0; i < nb * nb; i++)
            mx = m[i] > mx ? m[i] : mx;
        int y0 = pad + h * (W + pad);
        OUTF("<text x=\"2\" y=\"%d\">h%d</text>\n", y0 + 12, h);
        for (int qb = nb / 2; qb < nb; qb++) /* the rows the analysis sampled */
            for (int kb = 0; kb <= qb; kb++) {
                double v = m[(size_t)qb * nb + kb] / (mx > 0 ? mx : 1);
                int g = v > 0 ? (int)(255 * fmin(1, -log10(v) / 4)) : 255;
                OUTF(
                    "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,%d)\"/>\n",
                    pad + kb * cell, y0 + qb * cell, cell, cell, g, g, g);
            }
        for (int qb = 0; qb < nb; qb++)
            for (int kb = 0; kb <= qb; kb++)
                OUTF("<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"/>\n",
                     2 * pad + W + kb * cell, y0 + qb * cell, cell, cell,
                     k[(size_t)qb * nb + kb] ? "#1f5fbf" : "#e8e8e8");
    }
    OUTF("</svg>\n");
#undef OUTF
    int rc = as_atomic_write_file(path, buf, len);
    free(buf);
    return rc;
}

static void usage(FILE *f, const char *cmd) {
    fprintf(f,
            "usage: as-prune %s -m MODEL -f TEXT [options]\n"
            "%s\n"
            "  -m, --model DIR      checkpoint (or FILE.gguf)\n"
            "  -f, --file TEXT      text whose first window is analysed\n"
            "  -c, --ctx N          window length in tokens (default 4096)\n"
            "      --bytes N        read only the first N bytes of TEXT\n"
            "      --row-step N     dense rows sampled: every N-th of the second half (default 8)\n"
            "%s",
            cmd,
            strcmp(cmd, "search")
                ? "Density and attention-mass recall vs dense of a sparse-attention config, per "
                  "layer and head (JSON on stdout)."
                : "MInference-style offline pattern search per layer and head; writes a config.",
            strcmp(cmd, "search")
                ? "  -s, --sparse-attn S  config (JSON) or METHOD[:PARAM=VALUE,...]\n"
                  "      --svg FILE       picture of one layer: dense block mass | chosen blocks\n"
                  "      --svg-layer L    layer of the picture (default 0)\n"
                : "  -o, --output FILE    config to write (JSON, with the model fingerprint)\n"
                  "      --recall R       least recall a candidate must reach (default 0.95)\n"
                  "      --block N        block size of the masks (default 64)\n");
}

static int run_cmd(int argc, char **argv, int search) {
    const char *model = NULL, *file = NULL, *spec = NULL, *out = NULL, *svg = NULL;
    int ctx = 4096, step = 8, svg_layer = 0, block = 64;
    size_t bytes = 0;
    double want = 0.95;
    static const struct option lo[] = {{"model", required_argument, 0, 'm'},
                                       {"file", required_argument, 0, 'f'},
                                       {"ctx", required_argument, 0, 'c'},
                                       {"bytes", required_argument, 0, 1},
                                       {"row-step", required_argument, 0, 2},
                                       {"sparse-attn", required_argument, 0, 's'},
                                       {"svg", required_argument, 0, 3},
                                       {"svg-layer", required_argument, 0, 4},
                                       {"output", required_argument, 0, 'o'},
                                       {"recall", required_argument, 0, 5},
                                       {"block", required_argument, 0, 6},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    int o;
    optind = 1;
    while ((o = getopt_long(argc, argv, "m:f:c:s:o:h", lo, NULL)) != -1) {
        switch (o) {
        case 'm':
            model = optarg;
            break;
        case 'f':
            file = optarg;
            break;
        case 'c':
            ctx = as_arg_int(optarg);
            break;
        case 1:
            bytes = as_arg_u64(optarg);
            break;
        case 2:
            step = as_arg_int(optarg);
            break;
        case 's':
            spec = optarg;
            break;
        case 3:
            svg = optarg;
            break;
        case 4:
            svg_layer = as_arg_int(optarg);
            break;
        case 'o':
            out = optarg;
            break;
        case 5:
            want = atof(optarg);
            break;
        case 6:
            block = as_arg_int(optarg);
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 0;
        default:
            usage(stderr, argv[0]);
            return 2;
        }
    }
    if (!model || !file || (search ? !out : !spec) || optind != argc) {
        usage(stderr, argv[0]);
        return 2;
    }
    if (step < 1) as_die("--row-step %d: expected a positive integer", step);
    if (block < 8 || block > 256) as_die("--block %d: expected 8..256", block);
    as_register_model_loaders();
    struct as_model *m = as_model_open(model);
    if (!m) as_die_last();
    const struct as_model_config *c = &m->cfg;
    if (ctx < 2 * block || ctx > c->max_pos)
        as_die("--ctx %d: expected %d..%d (two blocks .. the model's context)", ctx, 2 * block,
               c->max_pos);
    struct as_sparse_config *cfg = NULL;
    if (!search) {
        cfg = as_sparse_config_from_spec(spec, c);
        if (!cfg || as_sparse_config_check(cfg, ctx)) as_die_last();
        block = cfg->block;
    }
    if (svg_layer < 0 || svg_layer >= c->n_layers)
        as_die("--svg-layer %d: the model has layers 0..%d", svg_layer, c->n_layers - 1);
    struct as_tokenizer *tok = as_tokenizer_open(model);
    if (!tok) as_die_last();
    char *text;
    size_t len, n_ids;
    int32_t *ids;
    if (as_text_read(file, bytes, &text, &len)) as_die_last();
    if (as_tokenizer_encode(tok, text, len, as_tokenizer_add_bos(tok), &ids, &n_ids)) as_die_last();
    free(text);
    if (n_ids < (size_t)ctx) as_die("%s: %zu tokens is shorter than --ctx %d", file, n_ids, ctx);

    struct run r = {.c = c,
                    .L = ctx,
                    .B = block,
                    .step = step,
                    .nb = (ctx + block - 1) / block,
                    .cfg = cfg,
                    .svg_layer = svg ? svg_layer : -1};
    if (search) { /* MInference's candidate list (token budgets), sparsest first */
        static const double list[][3] = {{AS_SP_ASHAPE, 100, 800}, {AS_SP_VS, 30, 800},
                                         {AS_SP_VS, 100, 750},     {AS_SP_VS, 500, 700},
                                         {AS_SP_BLOCKTOP, 8, 0},   {AS_SP_VS, 3500, 100}};
        for (int i = 0; i < 6; i++) {
            struct as_sparse_head *h = &r.cand[r.n_cand++];
            h->method = (enum as_sparse_method)list[i][0];
            for (int j = 0; j < AS_SP_MAXP; j++)
                h->p[j] = as_sparse_methods[h->method].def[j];
            h->p[0] = list[i][1];
            if (h->method != AS_SP_BLOCKTOP) h->p[1] = list[i][2];
            if (h->method == AS_SP_VS) { /* budgets no larger than the sequence */
                h->p[0] = fmin(h->p[0], ctx), h->p[1] = fmin(h->p[1], ctx);
            }
        }
    } else {
        r.n_cand = 1;
    }
    size_t nh = (size_t)c->n_layers * c->n_heads * r.n_cand;
    r.recall = as_xcalloc(nh, sizeof(double));
    r.density = as_xcalloc(nh, sizeof(double));
    if (svg) {
        r.svg_mass = as_xcalloc((size_t)c->n_heads * r.nb * r.nb, sizeof(double));
        r.svg_mask = as_xcalloc((size_t)c->n_heads * r.nb * r.nb, 1);
    }
    struct as_run_state *s = as_state_new(m, ctx, ctx, 0);
    if (!s) as_die_last();
    s->attn_mask = hook, s->attn_mask_ctx = &r;
    if (as_forward(m, s, ids, ctx, AS_LOGITS_NONE, NULL)) as_die_last();
    as_progress_done();

    json_t *rep = json_pack("{s:s,s:s,s:i,s:i,s:i}", "model", model, "text", file, "ctx", ctx,
                            "block", block, "row_step", step);
    json_t *layers = json_array();
    double dsum = 0, rsum = 0;
    struct as_sparse_config *best =
        search ? as_sparse_config_uniform(c, AS_SP_DENSE, NULL, block) : NULL;
    for (int l = 0; l < c->n_layers; l++) {
        json_t *heads = json_array();
        for (int h = 0; h < c->n_heads; h++) {
            size_t at = ((size_t)l * c->n_heads + h) * r.n_cand;
            int pick = 0;
            if (search) { /* sparsest candidate reaching the recall, else the best recall */
                int ok = -1;
                for (int k = 0; k < r.n_cand; k++) {
                    if (r.recall[at + k] >= want &&
                        (ok < 0 || r.density[at + k] < r.density[at + ok]))
                        ok = k;
                    if (r.recall[at + k] > r.recall[at + pick]) pick = k;
                }
                if (ok >= 0) pick = ok;
                best->heads[(size_t)l * c->n_heads + h] = r.cand[pick];
            }
            const struct as_sparse_head *hc =
                search ? &r.cand[pick] : &cfg->heads[(size_t)l * c->n_heads + h];
            json_t *jh = json_pack("{s:i,s:s,s:f,s:f}", "head", h, "method",
                                   as_sparse_methods[hc->method].name, "density",
                                   r.density[at + pick], "recall", r.recall[at + pick]);
            if (search) {
                json_t *cands = json_array();
                for (int k = 0; k < r.n_cand; k++)
                    json_array_append_new(cands,
                                          json_pack("{s:s,s:f,s:f,s:f,s:f}", "method",
                                                    as_sparse_methods[r.cand[k].method].name, "v",
                                                    r.cand[k].p[0], "s", r.cand[k].p[1], "density",
                                                    r.density[at + k], "recall", r.recall[at + k]));
                json_object_set_new(jh, "candidates", cands);
            }
            json_array_append_new(heads, jh);
            dsum += r.density[at + pick], rsum += r.recall[at + pick];
        }
        json_array_append_new(layers, json_pack("{s:i,s:o}", "layer", l, "heads", heads));
    }
    int n = c->n_layers * c->n_heads;
    json_object_set_new(rep, "mean_density", json_real(dsum / n));
    json_object_set_new(rep, "mean_recall", json_real(rsum / n));
    json_object_set_new(rep, "layers", layers);
    if (search && as_sparse_config_save(best, out)) as_die_last();
    if (svg && write_svg(svg, &r)) as_die_last();
    if (search) json_object_set_new(rep, "config", json_string(out));
    if (json_dumpf(rep, stdout, JSON_INDENT(1) | JSON_REAL_PRECISION(6)) || puts("") == EOF)
        as_die("stdout: write failed");
    json_decref(rep);
    as_sparse_config_free(best);
    as_sparse_config_free(cfg);
    as_state_free(s);
    free(ids), free(r.recall), free(r.density), free(r.svg_mass), free(r.svg_mask);
    as_tokenizer_free(tok);
    as_model_free(m);
    return 0;
}

int as_prune_cmd_search(int argc, char **argv) {
    return run_cmd(argc, argv, 1);
}

int as_prune_cmd_analyze(int argc, char **argv) {
    return run_cmd(argc, argv, 0);
}

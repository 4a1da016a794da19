/* test_model: the HF engine (model.c, forward.c) against independent references.
 *  - stories260K imported to the HF layout, teacher-forced through the engine, equals an
 *    independent numpy forward pass that reads the llama2.c checkpoint itself
 *    (tests/tools/forward_oracle.py: interleaved RoPE, GQA, SwiGLU, float64) to 1e-4; also when
 *    the prompt is prefilled and the rest decoded one token at a time.
 *  - hooks see the right matrices; overwriting weights in memory takes effect.
 *  - synthetic qwen3 (q/k norm), qwen2 (biases), GQA + llama3 and yarn rope scaling run and give
 *    finite logits, and match a numpy implementation of the HF modeling equations (a missing
 *    python3/numpy is a failure, not a skip).
 *  - bad configs and checkpoints fail with errors naming file, field/tensor and problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "as_error.h"
#include "dtype.h"
#include "forward.h"
#include "llama2c.h"
#include "model.h"

static char data_dir[2048];

static const char *data_path(const char *rel) {
    static char buf[4][4096];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", data_dir, rel);
    return buf[i];
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}
static void rm_rf(const char *p) {
    nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static char *make_tmpdir(void) {
    char *d = strdup("/tmp/as_test_model.XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

/* |a - b| <= tol * max(1, |b|) for every element; returns the worst ratio to tol. */
static double max_rel_err(const float *a, const float *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / fmax(1.0, fabs((double)b[i]));
        if (!(d <= worst)) worst = d; /* NaN propagates as failure */
    }
    return worst;
}

/* ---- stories260K: import + engine vs llama2.c reference ------------------------------------ */

struct fixture {
    char *dir;
    struct as_l2c_model l2c;
    struct as_l2c_tokenizer tok;
    struct as_model *m;
    int ids[80];
    int n;
    float *ref; /* [n, vocab] logits of tests/tools/forward_oracle.py */
};

/* The oracle's teacher-forced logits of ids[0..T) (float32 [T, V]) into ref; -1 on failure
 * (python3 or numpy missing is a failure: the oracle never vanishes). Run from the repository
 * root, as tests/run does. */
static int oracle_logits(const char *dir, const int *ids, int T, int V, float *ref) {
    char cmd[16384], out[4200], idstr[1024] = "";
    snprintf(out, sizeof out, "%s/oracle_logits.f32", dir);
    for (int i = 0; i < T; i++)
        snprintf(idstr + strlen(idstr), sizeof idstr - strlen(idstr), "%s%d", i ? "," : "", ids[i]);
    snprintf(cmd, sizeof cmd, "python3 tests/tools/forward_oracle.py logits '%s' %s '%s'",
             data_path("models/stories260K/stories260K.bin"), idstr, out);
    if (system(cmd) != 0) {
        print_message("# oracle failed: %s\n", cmd);
        return -1;
    }
    FILE *fp = fopen(out, "rb");
    if (!fp) return -1;
    size_t got = fread(ref, sizeof(float), (size_t)T * V, fp);
    int extra = fgetc(fp);
    fclose(fp);
    return got == (size_t)T * V && extra == EOF ? 0 : -1;
}

static int setup_stories(void **state) {
    struct fixture *f = calloc(1, sizeof *f);
    if (as_l2c_load(data_path("models/stories260K/stories260K.bin"), &f->l2c) != 0) return -1;
    if (as_l2c_tokenizer_load(data_path("models/stories260K/tok512.bin"), f->l2c.cfg.vocab_size,
                              &f->tok) != 0)
        return -1;
    f->dir = make_tmpdir();
    char out[4200];
    snprintf(out, sizeof out, "%s/hf", f->dir);
    if (as_l2c_export_hf(&f->l2c, &f->tok, out) != 0) return -1;
    f->m = as_model_load(out);
    if (!f->m) return -1;
    /* 64 tokens of real text, encoded with the reference (llama2.c) encoder, BOS first */
    const char *text = "Once upon a time, there was a little girl named Lily. She loved to play "
                       "outside in the park with her friends. One day, she found a shiny red ball "
                       "under a big tree and ran home to show her mom.";
    int *ids = malloc((strlen(text) + 3) * sizeof(int));
    int n = as_l2c_encode(&f->tok, text, 1, 0, ids);
    f->n = n < 64 ? n : 64;
    memcpy(f->ids, ids, (size_t)f->n * sizeof(int));
    free(ids);
    f->ref = malloc((size_t)f->n * f->m->cfg.vocab * sizeof(float));
    *state = f; /* everything is loaded: the teardown frees it even if the oracle fails */
    return oracle_logits(f->dir, f->ids, f->n, f->m->cfg.vocab, f->ref);
}

static int teardown_stories(void **state) {
    struct fixture *f = *state;
    as_model_free(f->m);
    as_l2c_tokenizer_free(&f->tok);
    as_l2c_free(&f->l2c);
    free(f->ref);
    rm_rf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static void test_import_config(void **state) {
    struct fixture *f = *state;
    const struct as_model_config *c = &f->m->cfg;
    assert_int_equal(c->hidden, 64);
    assert_int_equal(c->intermediate, 172);
    assert_int_equal(c->n_layers, 5);
    assert_int_equal(c->n_heads, 8);
    assert_int_equal(c->n_kv_heads, 4);
    assert_int_equal(c->head_dim, 8);
    assert_int_equal(c->vocab, 512);
    assert_int_equal(c->max_pos, 512);
    assert_true(c->tie_embeddings);
    assert_ptr_equal(f->m->lm_head, f->m->embed);
    assert_true(fabsf(c->rms_eps - 1e-5f) < 1e-12f);
    assert_int_equal(f->n, 64);
}

static void test_logits_match_reference(void **state) {
    struct fixture *f = *state;
    int T = f->n, V = f->m->cfg.vocab;
    const float *ref = f->ref;
    struct as_run_state *s = as_state_new(f->m, T, T, 0);
    assert_non_null(s);
    assert_int_equal(as_forward(f->m, s, f->ids, T, AS_LOGITS_ALL, NULL), 0);
    double err = max_rel_err(s->logits, ref, (size_t)T * V);
    print_message("# max relative logit error (prefill %d tokens): %.3g\n", T, err);
    assert_true(err <= 1e-4);
    /* the reference is not trivially equal: logits vary across positions */
    assert_true(fabsf(ref[0] - ref[(size_t)(T - 1) * V]) > 1e-3f);
    as_state_free(s);
}

static void test_prefill_then_decode(void **state) {
    struct fixture *f = *state;
    int T = f->n, V = f->m->cfg.vocab, P = 20;
    const float *ref = f->ref;
    struct as_run_state *s = as_state_new(f->m, P, T, 0);
    assert_int_equal(as_forward(f->m, s, f->ids, P, AS_LOGITS_LAST, NULL), 0);
    assert_true(max_rel_err(s->logits, ref + (size_t)(P - 1) * V, V) <= 1e-4);
    for (int t = P; t < T; t++) {
        assert_int_equal(as_forward(f->m, s, f->ids + t, 1, AS_LOGITS_LAST, NULL), 0);
        assert_true(max_rel_err(s->logits, ref + (size_t)t * V, V) <= 1e-4);
    }
    assert_int_equal(s->pos, T);
    /* the cache is full now: one more token is a clear error */
    assert_int_equal(as_forward(f->m, s, f->ids, 1, AS_LOGITS_LAST, NULL), -1);
    assert_non_null(strstr(as_last_error(), "KV cache"));
    as_state_reset(s);
    assert_int_equal(as_forward(f->m, s, f->ids, 1, AS_LOGITS_LAST, NULL), 0);
    assert_true(max_rel_err(s->logits, ref, V) <= 1e-4);
    int bad = 512;
    assert_int_equal(as_forward(f->m, s, &bad, 1, AS_LOGITS_LAST, NULL), -1);
    assert_non_null(strstr(as_last_error(), "out of range"));
    as_state_free(s);
}

struct hook_log {
    int calls[64][AS_GROUP_COUNT];
    int dims[AS_GROUP_COUNT];
    float *qkv_in; /* copy of layer 2's q/k/v input */
    int T;
};

static void on_input(void *ctx, int layer, enum as_linear_group g, const float *x, int T, int d) {
    struct hook_log *h = ctx;
    h->calls[layer][g]++;
    h->dims[g] = d;
    h->T = T;
    if (layer == 2 && g == AS_GROUP_ATTN_QKV) {
        h->qkv_in = realloc(h->qkv_in, (size_t)T * d * sizeof(float));
        memcpy(h->qkv_in, x, (size_t)T * d * sizeof(float));
    }
}

static void test_hooks(void **state) {
    struct fixture *f = *state;
    const struct as_model_config *c = &f->m->cfg;
    int T = 16, D = c->hidden;
    struct hook_log log = {0};
    struct as_hooks hk = {on_input, &log};
    struct as_run_state *s = as_state_new(f->m, T, T, AS_STATE_KEEP_ACTS);
    assert_int_equal(as_forward(f->m, s, f->ids, T, AS_LOGITS_NONE, &hk), 0);
    for (int l = 0; l < c->n_layers; l++)
        for (int g = 0; g < AS_GROUP_COUNT; g++)
            assert_int_equal(log.calls[l][g], 1);
    assert_int_equal(log.T, T);
    assert_int_equal(log.dims[AS_GROUP_ATTN_QKV], 64);
    assert_int_equal(log.dims[AS_GROUP_ATTN_O], 64);
    assert_int_equal(log.dims[AS_GROUP_MLP_GATE_UP], 64);
    assert_int_equal(log.dims[AS_GROUP_MLP_DOWN], 172);
    /* layer 2's q/k/v input is RMSNorm(residual entering layer 2) * input_layernorm weight */
    const float *x = s->layer_acts + (size_t)2 * s->max_T * D, *w = f->m->layers[2].attn_norm;
    for (int t = 0; t < T; t++) {
        double ss = 0;
        for (int j = 0; j < D; j++)
            ss += (double)x[t * D + j] * x[t * D + j];
        double r = 1.0 / sqrt(ss / D + 1e-5);
        for (int j = 0; j < D; j++)
            assert_true(fabs(log.qkv_in[t * D + j] - w[j] * x[t * D + j] * r) < 1e-5);
    }
    /* layer 0's input is the embedding */
    for (int j = 0; j < D; j++)
        assert_true(s->layer_acts[D + j] == f->m->embed[(size_t)f->ids[1] * D + j]);
    free(log.qkv_in);
    as_state_free(s);
}

static void test_weight_override(void **state) {
    /* Zero every o_proj and down_proj in memory: the residual stream is then the embedding
     * alone, so logits = lm_head . rmsnorm(embed[tok]) (computed here independently). */
    struct fixture *f = *state;
    struct as_model *m = f->m;
    const struct as_model_config *c = &m->cfg;
    int D = c->hidden, V = c->vocab, T = 4;
    float **saved = calloc((size_t)c->n_layers * 2, sizeof(float *));
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < 2; k++) {
            enum as_linear which = k ? AS_LIN_DOWN : AS_LIN_O;
            int rows, cols;
            as_model_linear_shape(m, which, &rows, &cols);
            float *w = as_model_linear_weight(m, l, which);
            assert_non_null(w);
            saved[l * 2 + k] = malloc((size_t)rows * cols * sizeof(float));
            memcpy(saved[l * 2 + k], w, (size_t)rows * cols * sizeof(float));
            memset(w, 0, (size_t)rows * cols * sizeof(float));
        }
    assert_null(as_model_linear_weight(m, c->n_layers, AS_LIN_Q));
    struct as_run_state *s = as_state_new(m, T, T, 0);
    assert_int_equal(as_forward(m, s, f->ids, T, AS_LOGITS_ALL, NULL), 0);
    for (int t = 0; t < T; t++) {
        const float *e = m->embed + (size_t)f->ids[t] * D;
        double ss = 0;
        for (int j = 0; j < D; j++)
            ss += (double)e[j] * e[j];
        double r = 1.0 / sqrt(ss / D + 1e-5);
        for (int v = 0; v < V; v++) {
            double acc = 0;
            for (int j = 0; j < D; j++)
                acc += m->lm_head[(size_t)v * D + j] * m->norm[j] * e[j] * r;
            assert_true(fabs(s->logits[(size_t)t * V + v] - acc) <= 1e-4 * fmax(1, fabs(acc)));
        }
    }
    as_state_free(s);
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < 2; k++) {
            int rows, cols;
            as_model_linear_shape(m, k ? AS_LIN_DOWN : AS_LIN_O, &rows, &cols);
            memcpy(as_model_linear_weight(m, l, k ? AS_LIN_DOWN : AS_LIN_O), saved[l * 2 + k],
                   (size_t)rows * cols * sizeof(float));
            free(saved[l * 2 + k]);
        }
    free(saved);
}

/* ---- synthetic architectures vs numpy ------------------------------------------------------ */

static const char *numpy_oracle =
    "import json, struct, sys\n"
    "import numpy as np\n"
    "d, toks, out = sys.argv[1], [int(x) for x in sys.argv[2].split(',')], sys.argv[3]\n"
    "cfg = json.load(open(d + '/config.json'))\n"
    "raw = open(d + '/model.safetensors', 'rb').read()\n"
    "n = struct.unpack('<Q', raw[:8])[0]; hdr = json.loads(raw[8:8 + n]); base = 8 + n\n"
    "W = {}\n"
    "for k, v in hdr.items():\n"
    "    if k == '__metadata__': continue\n"
    "    a, b = v['data_offsets']; buf = raw[base + a:base + b]\n"
    "    if v['dtype'] == 'F32': x = np.frombuffer(buf, '<f4')\n"
    "    elif v['dtype'] == 'BF16': x = (np.frombuffer(buf, '<u2').astype(np.uint32) << "
    "16).view(np.float32)\n"
    "    else: raise SystemExit('dtype ' + v['dtype'])\n"
    "    W[k] = x.astype(np.float64).reshape(v['shape'])\n"
    "H = cfg['hidden_size']; nh = cfg['num_attention_heads']; nkv = cfg.get('num_key_value_heads', "
    "nh)\n"
    "hd = cfg.get('head_dim') or H // nh; eps = cfg['rms_norm_eps']; theta = cfg.get('rope_theta', "
    "10000.0)\n"
    "inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd); att_f = 1.0\n"
    "rs = cfg.get('rope_scaling')\n"
    "if rs:\n"
    "    t = rs.get('rope_type', rs.get('type')); f = rs['factor']\n"
    "    if t == 'linear': inv = inv / f\n"
    "    elif t == 'llama3':\n"
    "        lo, hi, old = rs['low_freq_factor'], rs['high_freq_factor'], "
    "rs['original_max_position_embeddings']\n"
    "        wl = 2 * np.pi / inv\n"
    "        il = np.where(wl > old / lo, inv / f, inv)\n"
    "        sm = (old / wl - lo) / (hi - lo)\n"
    "        med = ~(wl < old / hi) & ~(wl > old / lo)\n"
    "        inv = np.where(med, (1 - sm) * il / f + sm * il, il)\n"
    "    elif t == 'yarn':\n"
    "        bf = rs.get('beta_fast') or 32; bs = rs.get('beta_slow') or 1\n"
    "        orig = rs.get('original_max_position_embeddings') or cfg['max_position_embeddings']\n"
    "        att_f = 1.0 if f <= 1 else 0.1 * np.log(f) + 1.0\n"
    "        cd = lambda r: hd * np.log(orig / (r * 2 * np.pi)) / (2 * np.log(theta))\n"
    "        low = max(np.floor(cd(bf)), 0); high = min(np.ceil(cd(bs)), hd - 1)\n"
    "        if low == high: high += 0.001\n"
    "        ext = 1 - np.clip((np.arange(hd // 2) - low) / (high - low), 0, 1)\n"
    "        pf = theta ** (np.arange(0, hd, 2) / hd)\n"
    "        inv = (1 / (f * pf)) * (1 - ext) + (1 / pf) * ext\n"
    "def rms(x, w): return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))\n"
    "def rot(x): h = x.shape[-1] // 2; return np.concatenate([-x[..., h:], x[..., :h]], -1)\n"
    "T = len(toks); fr = np.outer(np.arange(T), inv); emb = np.concatenate([fr, fr], -1)\n"
    "cos = np.cos(emb)[:, None, :] * att_f; sin = np.sin(emb)[:, None, :] * att_f\n"
    "x = W['model.embed_tokens.weight'][toks]\n"
    "mask = np.triu(np.full((T, T), -np.inf), 1)\n"
    "for l in range(cfg['num_hidden_layers']):\n"
    "    p = 'model.layers.%d.' % l\n"
    "    def lin(nm, h):\n"
    "        y = h @ W[p + nm + '.weight'].T; b = W.get(p + nm + '.bias')\n"
    "        return y if b is None else y + b\n"
    "    h = rms(x, W[p + 'input_layernorm.weight'])\n"
    "    q = lin('self_attn.q_proj', h).reshape(T, nh, hd)\n"
    "    k = lin('self_attn.k_proj', h).reshape(T, nkv, hd)\n"
    "    v = lin('self_attn.v_proj', h).reshape(T, nkv, hd)\n"
    "    if p + 'self_attn.q_norm.weight' in W:\n"
    "        q = rms(q, W[p + 'self_attn.q_norm.weight']); k = rms(k, W[p + "
    "'self_attn.k_norm.weight'])\n"
    "    q = q * cos + rot(q) * sin; k = k * cos + rot(k) * sin\n"
    "    k = np.repeat(k, nh // nkv, axis=1); v = np.repeat(v, nh // nkv, axis=1)\n"
    "    s = np.einsum('thd,shd->hts', q, k) / np.sqrt(hd) + mask\n"
    "    s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True)\n"
    "    o = np.einsum('hts,shd->thd', s, v).reshape(T, nh * hd)\n"
    "    x = x + o @ W[p + 'self_attn.o_proj.weight'].T\n"
    "    h = rms(x, W[p + 'post_attention_layernorm.weight'])\n"
    "    g = lin('mlp.gate_proj', h); u = lin('mlp.up_proj', h)\n"
    "    x = x + (g / (1 + np.exp(-g)) * u) @ W[p + 'mlp.down_proj.weight'].T\n"
    "x = rms(x, W['model.norm.weight'])\n"
    "lm = W['model.embed_tokens.weight'] if cfg.get('tie_word_embeddings') else "
    "W['lm_head.weight']\n"
    "(x @ lm.T).astype('<f4').tofile(out)\n";

static void run_synthetic(const struct as_model_config *cfg, int dtype, const char *label) {
    char *dir = make_tmpdir();
    assert_int_equal(as_model_write_random(cfg, dtype, 1234, dir), 0);
    struct as_model *m = as_model_load(dir);
    if (!m) fail_msg("%s: %s", label, as_last_error());
    assert_int_equal(m->cfg.arch, cfg->arch);
    assert_int_equal(m->cfg.rope_type, cfg->rope_type);
    int T = 12, V = cfg->vocab, toks[12];
    for (int i = 0; i < T; i++)
        toks[i] = (i * 37 + 5) % V;
    struct as_run_state *s = as_state_new(m, T, T, 0);
    assert_int_equal(as_forward(m, s, toks, T, AS_LOGITS_ALL, NULL), 0);
    for (size_t i = 0; i < (size_t)T * V; i++)
        assert_true(isfinite(s->logits[i]));
    /* decode after prefill gives the same last-position logits */
    struct as_run_state *s2 = as_state_new(m, T - 1, T, 0);
    assert_int_equal(as_forward(m, s2, toks, T - 1, AS_LOGITS_NONE, NULL), 0);
    assert_int_equal(as_forward(m, s2, toks + T - 1, 1, AS_LOGITS_LAST, NULL), 0);
    assert_true(max_rel_err(s2->logits, s->logits + (size_t)(T - 1) * V, V) < 1e-4);
    as_state_free(s2);
    {
        /* the numpy oracle must run: a missing python3/numpy fails the test */
        char script[4200], out[4200], cmd[16384], tokstr[256] = "";
        snprintf(script, sizeof script, "%s/oracle.py", dir);
        snprintf(out, sizeof out, "%s/logits.f32", dir);
        FILE *fp = fopen(script, "w");
        fputs(numpy_oracle, fp);
        fclose(fp);
        for (int i = 0; i < T; i++)
            snprintf(tokstr + strlen(tokstr), sizeof tokstr - strlen(tokstr), "%s%d", i ? "," : "",
                     toks[i]);
        snprintf(cmd, sizeof cmd, "python3 '%s' '%s' %s '%s'", script, dir, tokstr, out);
        if (system(cmd) != 0) fail_msg("%s: numpy oracle failed: %s", label, cmd);
        float *ref = malloc((size_t)T * V * sizeof(float));
        fp = fopen(out, "rb");
        assert_non_null(fp);
        assert_int_equal(fread(ref, sizeof(float), (size_t)T * V, fp), (size_t)T * V);
        fclose(fp);
        double err = max_rel_err(s->logits, ref, (size_t)T * V);
        print_message("# %s: max relative logit error vs numpy: %.3g\n", label, err);
        assert_true(err < 1e-4);
        free(ref);
    }
    as_state_free(s);
    as_model_free(m);
    rm_rf(dir);
    free(dir);
}

static struct as_model_config base_config(const char *type, enum as_arch arch) {
    struct as_model_config c = {0};
    snprintf(c.model_type, sizeof c.model_type, "%s", type);
    c.arch = arch;
    c.hidden = 48, c.intermediate = 72, c.n_layers = 2, c.n_heads = 6, c.n_kv_heads = 2;
    c.head_dim = 8, c.vocab = 96, c.max_pos = 64, c.rms_eps = 1e-6f, c.rope_theta = 10000.0f;
    return c;
}

static void test_synthetic_qwen3(void **state) {
    (void)state;
    struct as_model_config c = base_config("qwen3", AS_ARCH_QWEN3);
    c.head_dim = 16; /* qwen3: head_dim != hidden/heads */
    c.qk_norm = 1, c.tie_embeddings = 1, c.rope_theta = 1000000.0f;
    run_synthetic(&c, AS_BF16, "qwen3 bf16");
}

static void test_synthetic_qwen2(void **state) {
    (void)state;
    struct as_model_config c = base_config("qwen2", AS_ARCH_QWEN2);
    c.qkv_bias = 1;
    run_synthetic(&c, AS_F32, "qwen2 biases");
}

static void test_synthetic_llama3_gqa(void **state) {
    (void)state;
    struct as_model_config c = base_config("llama", AS_ARCH_LLAMA);
    c.rope_theta = 500000.0f, c.rope_type = AS_ROPE_LLAMA3, c.rope_factor = 8.0f;
    c.rope_low_freq_factor = 1.0f, c.rope_high_freq_factor = 4.0f, c.rope_orig_max_pos = 16;
    c.head_dim = 32, c.n_heads = 4, c.n_kv_heads = 1;
    run_synthetic(&c, AS_F32, "llama3 rope, GQA 4:1");
}

static void test_synthetic_yarn_mistral(void **state) {
    (void)state;
    struct as_model_config c = base_config("mistral", AS_ARCH_MISTRAL);
    c.rope_type = AS_ROPE_YARN, c.rope_factor = 4.0f, c.rope_orig_max_pos = 16;
    c.yarn_beta_fast = 32, c.yarn_beta_slow = 1, c.head_dim = 32, c.n_heads = 2, c.n_kv_heads = 2;
    run_synthetic(&c, AS_F32, "mistral yarn rope");
}

/* Batched decoding (as_forward_batch) and rowwise passes against one-token decoding, bit for
 * bit, on shapes that leave tails everywhere: hidden 44 (columns not a multiple of 8), 70 MLP
 * rows (not a multiple of 4), vocab 97, GQA, q/k norms and biases. Three sequences with
 * different prompt lengths decode 5 steps together; each also decodes alone. */
static void test_batch_decode_bits(void **state) {
    (void)state;
    struct as_model_config c = base_config("qwen3", AS_ARCH_QWEN3);
    c.hidden = 44, c.intermediate = 70, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 10;
    c.vocab = 97, c.qk_norm = 1;
    char *dir = make_tmpdir();
    assert_int_equal(as_model_write_random(&c, AS_F32, 99, dir), 0);
    struct as_model *m = as_model_load(dir);
    assert_non_null(m);
    enum { B = 3, STEPS = 5 };
    int V = c.vocab, plen[B] = {3, 7, 1}, toks[B][16];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < 16; i++)
            toks[b][i] = (i * 31 + b * 17 + 3) % V;
    struct as_run_state *alone[B], *batch[B], *w = as_state_new(m, B, B, 0);
    float *ref = malloc((size_t)B * STEPS * V * sizeof(float));
    for (int b = 0; b < B; b++) { /* one at a time: prefill, then STEPS one-token calls */
        alone[b] = as_state_new(m, plen[b], 16, 0);
        batch[b] = as_state_new(m, plen[b], 16, 0);
        assert_int_equal(as_forward(m, alone[b], toks[b], plen[b], AS_LOGITS_LAST, NULL), 0);
        assert_int_equal(as_forward(m, batch[b], toks[b], plen[b], AS_LOGITS_LAST, NULL), 0);
        for (int t = 0; t < STEPS; t++) {
            assert_int_equal(
                as_forward(m, alone[b], &toks[b][plen[b] + t], 1, AS_LOGITS_LAST, NULL), 0);
            memcpy(ref + ((size_t)b * STEPS + t) * V, alone[b]->logits, (size_t)V * sizeof(float));
        }
    }
    for (int t = 0; t < STEPS; t++) {
        int step[B];
        for (int b = 0; b < B; b++)
            step[b] = toks[b][plen[b] + t];
        assert_int_equal(as_forward_batch(m, w, batch, step, B), 0);
        for (int b = 0; b < B; b++) {
            assert_int_equal(batch[b]->pos, plen[b] + t + 1);
            assert_memory_equal(batch[b]->logits, ref + ((size_t)b * STEPS + t) * V,
                                (size_t)V * sizeof(float));
        }
    }
    /* rowwise: sequence 1's STEPS tokens in one call, rows equal to the one-token logits */
    struct as_run_state *rw = as_state_new(m, plen[1], 16, 0); /* plen[1] >= STEPS */
    assert_int_equal(as_forward(m, rw, toks[1], plen[1], AS_LOGITS_LAST, NULL), 0);
    rw->rowwise = 1; /* after the prefill, which the one-token path also ran through sgemm */
    assert_int_equal(as_forward(m, rw, &toks[1][plen[1]], STEPS, AS_LOGITS_ALL, NULL), 0);
    assert_memory_equal(rw->logits, ref + (size_t)STEPS * V, (size_t)STEPS * V * sizeof(float));
    /* bad input: more sequences than the batch state holds, a token out of range */
    assert_int_equal(as_forward_batch(m, w, batch, toks[0], B + 1), -1);
    assert_non_null(strstr(as_last_error(), "batch state holds 3"));
    int bad[B] = {1, V, 2};
    assert_int_equal(as_forward_batch(m, w, batch, bad, B), -1);
    assert_non_null(strstr(as_last_error(), "sequence 1: token id 97 out of range"));
    for (int b = 0; b < B; b++)
        as_state_free(alone[b]), as_state_free(batch[b]);
    as_state_free(w), as_state_free(rw);
    free(ref);
    as_model_free(m);
    rm_rf(dir);
    free(dir);
}

static void test_rope_frequencies(void **state) {
    (void)state;
    /* llama3.1: theta 5e5, factor 8, low 1, high 4, original 8192, head_dim 128 */
    struct as_model_config c = base_config("llama", AS_ARCH_LLAMA);
    c.head_dim = 128, c.rope_theta = 500000.0f, c.rope_type = AS_ROPE_LLAMA3, c.rope_factor = 8;
    c.rope_low_freq_factor = 1, c.rope_high_freq_factor = 4, c.rope_orig_max_pos = 8192;
    float f[64];
    assert_true(as_rope_init(&c, f) == 1.0f);
    assert_true(f[0] == 1.0f); /* wavelength 2pi < 2048: kept */
    double last = 1.0 / pow(500000.0, 126.0 / 128);
    assert_true(fabs(f[63] - last / 8) < 1e-6 * last); /* wavelength > 8192: divided by 8 */
    /* linear: every frequency divided by the factor */
    c.rope_type = AS_ROPE_LINEAR, c.rope_factor = 4;
    as_rope_init(&c, f);
    double f10 = 1.0 / pow(500000.0, 20.0 / 128) / 4;
    assert_true(fabs(f[10] - f10) < 1e-6 * f10);
    /* yarn attention factor 0.1 ln(s) + 1 */
    c.rope_type = AS_ROPE_YARN, c.yarn_beta_fast = 32, c.yarn_beta_slow = 1;
    assert_true(fabsf(as_rope_init(&c, f) - (float)(0.1 * log(4.0) + 1)) < 1e-6f);
}

/* ---- bad input ------------------------------------------------------------------------------ */

static void write_file(const char *dir, const char *name, const char *text) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void expect_load_error(const char *dir, const char *a, const char *b, const char *c) {
    struct as_model *m = as_model_load(dir);
    assert_null(m);
    const char *e = as_last_error();
    print_message("# error: %s\n", e);
    assert_non_null(strstr(e, a));
    if (b) assert_non_null(strstr(e, b));
    if (c) assert_non_null(strstr(e, c));
}

static void test_bad_inputs(void **state) {
    (void)state;
    char *dir = make_tmpdir();
    struct as_model_config c = base_config("llama", AS_ARCH_LLAMA);
    c.tie_embeddings = 1; /* no lm_head.weight stored */
    assert_int_equal(as_model_write_random(&c, AS_F32, 1, dir), 0);
    struct as_model *ok = as_model_load(dir);
    assert_non_null(ok);
    as_model_free(ok);
    write_file(dir, "config.json",
               "{\"model_type\": \"llama\", \"intermediate_size\": 72, \"num_hidden_layers\": 2, "
               "\"num_attention_heads\": 6, \"num_key_value_heads\": 2, \"vocab_size\": 96}");
    expect_load_error(dir, "config.json", "missing field", "hidden_size");
    write_file(dir, "config.json",
               "{\"model_type\": \"gpt2\", \"hidden_size\": 48, \"intermediate_size\": 72, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 6, \"vocab_size\": 96}");
    expect_load_error(dir, "config.json", "model_type \"gpt2\"", "not supported");
    write_file(dir, "config.json", "{\"model_type\": \"llama\", \"hidden_size\": ");
    expect_load_error(dir, "config.json", "JSON", NULL);
    write_file(
        dir, "config.json",
        "{\"model_type\": \"llama\", \"hidden_size\": 48, \"intermediate_size\": 72, "
        "\"num_hidden_layers\": 2, \"num_attention_heads\": 6, \"num_key_value_heads\": 2, "
        "\"vocab_size\": 96, \"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 2}}");
    expect_load_error(dir, "config.json", "dynamic", "not supported");
    /* three layers declared, two stored */
    write_file(dir, "config.json",
               "{\"model_type\": \"llama\", \"hidden_size\": 48, \"intermediate_size\": 72, "
               "\"num_hidden_layers\": 3, \"num_attention_heads\": 6, \"num_key_value_heads\": 2, "
               "\"head_dim\": 8, \"vocab_size\": 96, \"tie_word_embeddings\": true}");
    expect_load_error(dir, "model.layers.2.input_layernorm.weight", "not found", NULL);
    /* intermediate 80 declared, 72 stored */
    write_file(dir, "config.json",
               "{\"model_type\": \"llama\", \"hidden_size\": 48, \"intermediate_size\": 80, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 6, \"num_key_value_heads\": 2, "
               "\"head_dim\": 8, \"vocab_size\": 96, \"tie_word_embeddings\": true}");
    expect_load_error(dir, "model.safetensors", "model.layers.0.mlp.gate_proj.weight", "shape");
    /* untied: lm_head.weight missing */
    write_file(dir, "config.json",
               "{\"model_type\": \"llama\", \"hidden_size\": 48, \"intermediate_size\": 72, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 6, \"num_key_value_heads\": 2, "
               "\"head_dim\": 8, \"vocab_size\": 96, \"tie_word_embeddings\": false}");
    expect_load_error(dir, "lm_head.weight", "not found", NULL);
    /* qwen3 needs q_norm */
    write_file(dir, "config.json",
               "{\"model_type\": \"qwen3\", \"hidden_size\": 48, \"intermediate_size\": 72, "
               "\"num_hidden_layers\": 2, \"num_attention_heads\": 6, \"num_key_value_heads\": 2, "
               "\"head_dim\": 8, \"vocab_size\": 96, \"tie_word_embeddings\": true}");
    expect_load_error(dir, "model.layers.0.self_attn.q_norm.weight", "not found", NULL);
    rm_rf(dir);
    expect_load_error(dir, "config.json", NULL, NULL);
    free(dir);
}

int main(void) {
    const char *d = getenv("AS_DATA");
    snprintf(data_dir, sizeof data_dir, "%s", d ? d : "../shared/data");
    const struct CMUnitTest stories[] = {
        cmocka_unit_test(test_import_config),       cmocka_unit_test(test_logits_match_reference),
        cmocka_unit_test(test_prefill_then_decode), cmocka_unit_test(test_hooks),
        cmocka_unit_test(test_weight_override),
    };
    const struct CMUnitTest synthetic[] = {
        cmocka_unit_test(test_synthetic_qwen3),      cmocka_unit_test(test_synthetic_qwen2),
        cmocka_unit_test(test_synthetic_llama3_gqa), cmocka_unit_test(test_synthetic_yarn_mistral),
        cmocka_unit_test(test_rope_frequencies),     cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_batch_decode_bits),
    };
    int rc =
        cmocka_run_group_tests_name("engine_stories260K", stories, setup_stories, teardown_stories);
    rc |= cmocka_run_group_tests_name("engine_synthetic", synthetic, NULL, NULL);
    return rc;
}

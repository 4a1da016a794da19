/* forward: batched decoder forward pass (see forward.h). Equations follow HF modeling_llama /
 * modeling_qwen3: RMSNorm y = w * x / sqrt(mean(x^2) + eps); rotate-half RoPE
 * (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) with x1 = x[:hd/2], x2 = x[hd/2:];
 * softmax(q k^T / sqrt(hd)) v with causal mask, kv head = q head / (n_heads / n_kv_heads). */
#include "forward.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "kernel_attn.h"
#include "qlinear.h"

/* ---- worker threads for single-token decode ----------------------------------------------------
 * A decode step is ~200 small matvecs (a few hundred KB of weights each): too small for
 * OpenBLAS's threading to pay off (so they run as plain loops, below), too many to start threads
 * for each. A persistent pool splits each one by output rows (and attention by heads) over as
 * many threads as OpenBLAS is set to use, so OPENBLAS_NUM_THREADS / --threads govern both.
 * Every row (head) is computed by the same code whatever the split, so results are bit-identical
 * for any thread count. Workers spin briefly for the next job (a decode step issues one every
 * ~10-50 us), then sleep on a condition variable. A caller that finds the pool busy (another
 * thread decoding at once) runs its job alone. */
#define POOL_MAX 64
#define POOL_SPIN 2000

typedef void (*pool_fn)(void *arg, int part, int n_parts);

static struct {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    atomic_flag busy;
    atomic_uint gen;        /* job number; workers run job gen when it changes */
    atomic_int pending;     /* workers yet to finish (or skip) the current job */
    int n_workers;          /* started so far (they never exit) */
    unsigned gen_at_create; /* gen when the newest worker was created */
    int n_parts;            /* of the current job: part 0 is the caller's, 1..n_parts-1 workers' */
    pool_fn fn;
    void *arg;
} pool = {
    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, ATOMIC_FLAG_INIT, 0, 0, 0, 0, 0, 0, 0};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *pool_worker(void *p) {
    int id = (int)(intptr_t)p;          /* 1.. */
    unsigned seen = pool.gen_at_create; /* the job it is started for is the next */
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen) {
            if (++spins < POOL_SPIN) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&pool.mu);
            while ((g = atomic_load(&pool.gen)) == seen)
                pthread_cond_wait(&pool.wake, &pool.mu);
            pthread_mutex_unlock(&pool.mu);
            break;
        }
        seen = g;
        /* every worker acknowledges every job, so none can still be reading this job's fields
         * when the caller sets up the next */
        if (id < pool.n_parts) pool.fn(pool.arg, id, pool.n_parts);
        atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
    }
    return NULL;
}

/* Threads the engine uses: OpenBLAS's setting (OPENBLAS_NUM_THREADS, openblas_set_num_threads). */
static int engine_threads(void) {
    int n = openblas_get_num_threads();
    return n < 1 ? 1 : n > POOL_MAX ? POOL_MAX : n;
}

/* fn(arg, part, n) for part 0..n-1, n = min(max_parts, engine threads), in parallel. */
static void pool_run(pool_fn fn, void *arg, int max_parts) {
    int n = engine_threads();
    if (n > max_parts) n = max_parts;
    if (n <= 1 || atomic_flag_test_and_set(&pool.busy)) {
        fn(arg, 0, 1);
        return;
    }
    while (pool.n_workers < n - 1) {
        pthread_t th;
        pool.gen_at_create = atomic_load(&pool.gen);
        if (pthread_create(&th, NULL, pool_worker, (void *)(intptr_t)(pool.n_workers + 1)) != 0)
            break; /* fewer threads: still correct */
        pthread_detach(th);
        pool.n_workers++;
    }
    if (n > pool.n_workers + 1) n = pool.n_workers + 1;
    pool.fn = fn, pool.arg = arg, pool.n_parts = n;
    atomic_store(&pool.pending, pool.n_workers);
    pthread_mutex_lock(&pool.mu);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    fn(arg, 0, n);
    for (int spins = 0; atomic_load_explicit(&pool.pending, memory_order_acquire) > 0;)
        if (++spins < POOL_SPIN)
            cpu_relax();
        else
            sched_yield(); /* a worker was descheduled: give it the core */
    atomic_flag_clear(&pool.busy);
}

/* Rows [lo, hi) of part `part` of n: contiguous, sizes differ by at most one. */
static void part_range(int total, int part, int n, int *lo, int *hi) {
    *lo = (int)((long long)total * part / n);
    *hi = (int)((long long)total * (part + 1) / n);
}

struct as_run_state *as_state_new(const struct as_model *m, int max_T, int max_seq, int flags) {
    const struct as_model_config *c = &m->cfg;
    if (max_T <= 0 || max_seq <= 0 || max_T > max_seq) {
        as_fail("run state: bad sizes max_T=%d max_seq=%d", max_T, max_seq);
        return NULL;
    }
    struct as_run_state *s = as_xcalloc(1, sizeof *s);
    size_t T = (size_t)max_T, S = (size_t)max_seq;
    size_t qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    size_t half = (size_t)c->head_dim / 2;
    s->max_T = max_T, s->max_seq = max_seq;
    s->x = as_xmalloc(T * c->hidden * sizeof(float));
    s->xb = as_xmalloc(T * c->hidden * sizeof(float));
    s->q = as_xmalloc(T * qd * sizeof(float));
    s->k = as_xmalloc(T * kvd * sizeof(float));
    s->v = as_xmalloc(T * kvd * sizeof(float));
    s->att_out = as_xmalloc(T * qd * sizeof(float));
    s->att = as_xmalloc(T * S * sizeof(float));
    s->hb = as_xmalloc(T * c->intermediate * sizeof(float));
    s->hb2 = as_xmalloc(T * c->intermediate * sizeof(float));
    s->logits = as_xmalloc(T * c->vocab * sizeof(float));
    s->key_cache = as_xcalloc((size_t)c->n_layers * S * kvd, sizeof(float));
    s->value_cache = as_xcalloc((size_t)c->n_layers * S * kvd, sizeof(float));
    s->rope_cos = as_xmalloc(S * half * sizeof(float));
    s->rope_sin = as_xmalloc(S * half * sizeof(float));
    for (size_t p = 0; p < S; p++)
        for (size_t i = 0; i < half; i++) {
            /* HF: emb = pos * inv_freq (f32), cos/sin scaled by the attention factor (yarn) */
            float ang = (float)p * m->inv_freq[i];
            s->rope_cos[p * half + i] = cosf(ang) * m->attn_factor;
            s->rope_sin[p * half + i] = sinf(ang) * m->attn_factor;
        }
    if (flags & AS_STATE_KEEP_ACTS)
        s->layer_acts = as_xmalloc(((size_t)c->n_layers + 1) * T * c->hidden * sizeof(float));
    return s;
}

void as_state_free(struct as_run_state *s) {
    if (!s) return;
    free(s->x), free(s->xb), free(s->q), free(s->k), free(s->v), free(s->att_out), free(s->att);
    free(s->hb), free(s->hb2), free(s->logits), free(s->key_cache), free(s->value_cache);
    free(s->rope_cos), free(s->rope_sin), free(s->layer_acts), free(s->att_dec);
    free(s);
}

void as_state_reset(struct as_run_state *s) {
    s->pos = 0;
}

/* ---- ops ------------------------------------------------------------------------------------ */

void as_op_rmsnorm(float *out, const float *x, const float *w, int T, int dim, float eps) {
    for (int t = 0; t < T; t++) {
        const float *xr = x + (size_t)t * dim;
        float *o = out + (size_t)t * dim;
        double ss = 0;
        for (int j = 0; j < dim; j++)
            ss += (double)xr[j] * xr[j];
        float r = 1.0f / sqrtf((float)(ss / dim) + eps);
        for (int j = 0; j < dim; j++)
            o[j] = w[j] * (xr[j] * r);
    }
}

/* Dot product with 8 independent accumulators so the compiler can vectorise it without
 * reassociation flags. */
static inline float dot(const float *a, const float *b, int n) {
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

/* Four rows' dot products with x, each summed exactly as dot() sums it (lane j of the 8-lane
 * accumulator takes elements j, j+8, ..., same final pairing, same tail), so results are
 * bit-identical to dot(); the four independent accumulator chains and the shared loads of x are
 * what make it ~2x faster on the long weight streams of decode. */
typedef float v4f __attribute__((vector_size(16)));

static inline v4f ld4(const float *p) {
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float hsum8(v4f lo, v4f hi) {
    return ((lo[0] + hi[0]) + (lo[1] + hi[1])) + ((lo[2] + hi[2]) + (lo[3] + hi[3]));
}

static void dot4(const float *W, size_t stride, const float *x, int n, float out[4]) {
    const float *w0 = W, *w1 = W + stride, *w2 = W + 2 * stride, *w3 = W + 3 * stride;
    v4f a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0}, a2 = {0}, b2 = {0}, a3 = {0}, b3 = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v4f xl = ld4(x + i), xh = ld4(x + i + 4);
        a0 += ld4(w0 + i) * xl, b0 += ld4(w0 + i + 4) * xh;
        a1 += ld4(w1 + i) * xl, b1 += ld4(w1 + i + 4) * xh;
        a2 += ld4(w2 + i) * xl, b2 += ld4(w2 + i + 4) * xh;
        a3 += ld4(w3 + i) * xl, b3 += ld4(w3 + i + 4) * xh;
    }
    float s0 = hsum8(a0, b0), s1 = hsum8(a1, b1), s2 = hsum8(a2, b2), s3 = hsum8(a3, b3);
    for (; i < n; i++) {
        s0 += w0[i] * x[i], s1 += w1[i] * x[i];
        s2 += w2[i] * x[i], s3 += w3[i] * x[i];
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

#if defined(__x86_64__) && defined(__GNUC__)
typedef float v8f __attribute__((vector_size(32)));

/* Rows r..r+3 of out_t = W x_t (+ bias) for nt tokens t (x_t = x + t cols, out_t = out + t ldo)
 * with 256-bit registers: the four rows are loaded once per 8 columns and multiplied into all
 * nt tokens, 4 nt independent accumulator chains, so a pass of several tokens runs at the vector
 * units' rate rather than at the add latency of four chains, with the rows read from memory
 * once. Each (row, token) is summed exactly as dot() sums it (lane j of one 8-float register is
 * dot's accumulator j, taking elements j, j+8, ...; the same final pairing, the same tail, then
 * the bias; mul and add are separate roundings: C11 mode does not contract them into FMA), so
 * every token's output is the same bits for every token count, thread count and CPU: what
 * rowwise mode promises (speculative verification, forward.h). Inlined with a constant nt into
 * the target-specific loops below, which give it 16 (AVX) or 32 (AVX-512VL) registers. */
static inline __attribute__((always_inline)) void matvec_tile(float *out, size_t ldo,
                                                              const float *x, const int nt,
                                                              const float *W, const float *bias,
                                                              int cols, int r, int prefetch) {
    const float *w = W + (size_t)r * cols;
    const char *next = (const char *)(w + 4 * (size_t)cols);
    v8f acc[4][4];
    memset(acc, 0, sizeof acc);
    int i = 0;
    for (; i + 8 <= cols; i += 8) {
        if (prefetch) /* the next four rows, into L2 only: fetched into L1 they evict the tile
                       * and the tokens that the later groups still read (two groups: 2x slower) */
            __builtin_prefetch(next + 16 * i, 0, 2), __builtin_prefetch(next + 16 * i + 64, 0, 2);
        v8f wv[4], xv[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++)
            memcpy(&wv[k], w + (size_t)k * cols + i, 32);
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            memcpy(&xv[t], x + (size_t)t * cols + i, 32);
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++)
                acc[t][k] += wv[k] * xv[t];
        }
    }
    for (int t = 0; t < nt; t++)
        for (int k = 0; k < 4; k++) {
            const v8f a = acc[t][k];
            const float *wk = w + (size_t)k * cols, *xt = x + (size_t)t * cols;
            float sk = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
            for (int j = i; j < cols; j++)
                sk += wk[j] * xt[j];
            out[(size_t)t * ldo + r + k] = sk + (bias ? bias[r + k] : 0.0f);
        }
}

/* Rows [lo, hi) for T tokens, tiles of 4 rows x up to TMAX tokens, the tokens split into
 * groups as even as they go (5 = 3 + 2, not 4 + 1: a group of one runs at the add latency of
 * four chains); the first group streams the rows and prefetches the next tile, the later ones
 * read the tile from L1. */
#define MATVEC_ROWS_MULTI(name, target_spec, TMAX)                                                 \
    __attribute__((target(target_spec))) static void name(                                         \
        float *out, size_t ldo, const float *x, int T, const float *W, const float *bias,          \
        int cols, int lo, int hi) {                                                                \
        int r = lo, groups = (T + TMAX - 1) / TMAX;                                                \
        for (; r + 4 <= hi; r += 4)                                                                \
            for (int g = 0; g < groups; g++) {                                                     \
                int t0 = g * T / groups, t1 = (g + 1) * T / groups;                                \
                float *o = out + (size_t)t0 * ldo;                                                 \
                const float *xt = x + (size_t)t0 * cols;                                           \
                switch (t1 - t0) {                                                                 \
                case 1:                                                                            \
                    matvec_tile(o, ldo, xt, 1, W, bias, cols, r, g == 0);                          \
                    break;                                                                         \
                case 2:                                                                            \
                    matvec_tile(o, ldo, xt, 2, W, bias, cols, r, g == 0);                          \
                    break;                                                                         \
                case 3:                                                                            \
                    matvec_tile(o, ldo, xt, 3, W, bias, cols, r, g == 0);                          \
                    break;                                                                         \
                default:                                                                           \
                    matvec_tile(o, ldo, xt, 4, W, bias, cols, r, g == 0);                          \
                    break;                                                                         \
                }                                                                                  \
            }                                                                                      \
        for (; r < hi; r++)                                                                        \
            for (int t = 0; t < T; t++)                                                            \
                out[(size_t)t * ldo + r] = dot(W + (size_t)r * cols, x + (size_t)t * cols, cols) + \
                                           (bias ? bias[r] : 0.0f);                                \
    }

/* AVX's 16 registers hold 4 x 2 accumulators with the rows and tokens; AVX-512VL's 32 hold
 * 4 x 4 (the mul+add stay separate roundings: no FMA contraction in C11 mode) */
MATVEC_ROWS_MULTI(matvec_rows_multi_avx, "avx", 2)
MATVEC_ROWS_MULTI(matvec_rows_multi_avx512, "avx2,avx512f,avx512vl", 4)
#define HAVE_AVX_PATH 1
#endif

/* Rows [lo, hi) of out = W x (+ bias), without AVX. */
static void matvec_rows(float *out, const float *x, const float *W, const float *bias, int cols,
                        int lo, int hi) {
    int r = lo;
    for (; r + 4 <= hi; r += 4) {
        float o[4];
        dot4(W + (size_t)r * cols, (size_t)cols, x, cols, o);
        for (int k = 0; k < 4; k++)
            out[r + k] = o[k] + (bias ? bias[r + k] : 0.0f);
    }
    for (; r < hi; r++)
        out[r] = dot(W + (size_t)r * cols, x, cols) + (bias ? bias[r] : 0.0f);
}

/* Up to three single-token matvecs on one input (q/k/v, gate/up) as one pool job, split over
 * their stacked rows: one hand-off per group instead of one per linear. */
struct matvec {
    int n, cols, total;
    int T; /* tokens (rows of x and of each out); 0 means 1 */
    const float *x;
    struct {
        float *out;
        const float *W, *bias;
        int rows;
    } m[3];
};

static void matvec_part(void *arg, int part, int n) {
    const struct matvec *a = arg;
    int lo, hi;
    part_range(a->total, part, n, &lo, &hi);
    for (int k = 0, base = 0; k < a->n; base += a->m[k].rows, k++) {
        int l = lo > base ? lo - base : 0, h = hi - base < a->m[k].rows ? hi - base : a->m[k].rows;
        if (l >= h) continue;
        int T = a->T > 1 ? a->T : 1;
#ifdef HAVE_AVX_PATH
        /* one token too: prefetching the next rows into L2 rather than L1 made SmolLM2's
         * decode 1.25-1.3x faster than the four-row loop it used before (bench_gen verify) */
        if (__builtin_cpu_supports("avx512vl")) {
            matvec_rows_multi_avx512(a->m[k].out, (size_t)a->m[k].rows, a->x, T, a->m[k].W,
                                     a->m[k].bias, a->cols, l, h);
            continue;
        }
        if (__builtin_cpu_supports("avx")) {
            matvec_rows_multi_avx(a->m[k].out, (size_t)a->m[k].rows, a->x, T, a->m[k].W,
                                  a->m[k].bias, a->cols, l, h);
            continue;
        }
#endif
        if (T == 1) {
            matvec_rows(a->m[k].out, a->x, a->m[k].W, a->m[k].bias, a->cols, l, h);
            continue;
        }
        /* T tokens (rowwise mode): 16 weight rows at a time stay in cache while every token
         * takes them; each output row is summed as for one token, so the bits are the same */
        for (int r0 = l; r0 < h; r0 += 16) {
            int r1 = r0 + 16 < h ? r0 + 16 : h;
            for (int t = 0; t < a->T; t++)
                matvec_rows(a->m[k].out + (size_t)t * a->m[k].rows, a->x + (size_t)t * a->cols,
                            a->m[k].W, a->m[k].bias, a->cols, r0, r1);
        }
    }
}

static void matvec_run(struct matvec *a) {
    a->total = 0;
    for (int k = 0; k < a->n; k++)
        a->total += a->m[k].rows;
    /* parts of >= 32K weights each: smaller ones cost more to hand off than to compute */
    pool_run(matvec_part, a, (int)(((size_t)a->total * a->cols) >> 15));
}

void as_op_linear(float *out, const float *x, const float *W, const float *bias, int T, int cols,
                  int rows) {
    if (T == 1) {
        /* single-token matvec: the pool's loops. Not OpenBLAS: its call overhead dominates small
         * matrices, and after a threaded sgemv its threads spin for a while, taking the cores
         * from the pool's threads for the matvecs that follow (decode ran slower with 2 threads
         * than with 1 on a loaded machine). The loops also give every thread count the same sums.
         */
        struct matvec a = {.n = 1, .cols = cols, .x = x, .m = {{out, W, bias, rows}}};
        matvec_run(&a);
        return;
    }
    if (bias)
        for (int t = 0; t < T; t++)
            memcpy(out + (size_t)t * rows, bias, (size_t)rows * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, rows, cols, 1.0f, x, cols, W, cols,
                bias ? 1.0f : 0.0f, out, rows);
}

void as_op_rope(float *x, int T, int n_heads, int head_dim, int pos0, const float *cos,
                const float *sin) {
    int half = head_dim / 2;
    for (int t = 0; t < T; t++) {
        const float *c = cos + (size_t)(pos0 + t) * half, *s = sin + (size_t)(pos0 + t) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                float x1 = v[i], x2 = v[i + half];
                v[i] = x1 * c[i] - x2 * s[i];
                v[i + half] = x2 * c[i] + x1 * s[i];
            }
        }
    }
}

void as_op_swiglu(float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++)
        gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static void softmax_row(float *x, int n) {
    float mx = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    float sum = 0;
    for (int i = 0; i < n; i++)
        sum += (x[i] = expf(x[i] - mx));
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        x[i] *= inv;
}

/* Decode attention of one query head h against cache rows 0..n_keys-1: one pass for scores and
 * max, one for exp and sum, one for P.V; the softmax normalisation is folded into the output.
 * a: n_keys floats of scratch. */
static void head_decode(const struct as_model_config *c, const float *q, float *o, const float *kc,
                        const float *vc, int h, int n_keys, float *a) {
    int hd = c->head_dim, kvd = c->n_kv_heads * hd, kv_mul = c->n_heads / c->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    const float *kh = kc + (size_t)(h / kv_mul) * hd, *vh = vc + (size_t)(h / kv_mul) * hd;
    const float *qh = q + (size_t)h * hd;
    float *oh = o + (size_t)h * hd;
    float mx = -INFINITY, sum = 0;
    for (int j = 0; j < n_keys; j++) {
        a[j] = dot(qh, kh + (size_t)j * kvd, hd) * scale;
        mx = a[j] > mx ? a[j] : mx;
    }
    for (int j = 0; j < n_keys; j++)
        sum += (a[j] = expf(a[j] - mx));
    memset(oh, 0, (size_t)hd * sizeof(float));
    for (int j = 0; j < n_keys; j++) {
        const float *vr = vh + (size_t)j * kvd;
        float w = a[j];
        for (int i = 0; i < hd; i++)
            oh[i] += w * vr[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < hd; i++)
        oh[i] *= inv;
}

struct decode_att {
    const struct as_model_config *c;
    struct as_run_state *s;
    const float *kc, *vc;
    int n_keys;
    const float *q; /* the query row [n_heads*hd] */
    float *o;       /* its output row */
};

static void decode_att_part(void *arg, int part, int n) {
    const struct decode_att *a = arg;
    int lo, hi;
    part_range(a->c->n_heads, part, n, &lo, &hi);
    float *scratch = a->s->att_dec + (size_t)part * a->s->max_seq;
    for (int h = lo; h < hi; h++)
        head_decode(a->c, a->q, a->o, a->kc, a->vc, h, a->n_keys, scratch);
}

static void attn_part(void *arg, int part, int n) {
    as_attn_part(arg, part, n);
}

/* Causal GQA attention of T new queries (positions pos0..) against cache rows 0..pos0+T-1.
 * q, out: [T, n_heads*hd]; kc, vc: [max_seq, kv_dim] of this layer. */
static void attention(const struct as_model_config *c, struct as_run_state *s, const float *kc,
                      const float *vc, int T, int pos0, int layer) {
    int hd = c->head_dim, S = s->max_seq;
    if (T == 1 || s->rowwise) {
        /* one token (or, rowwise, each token t against its keys 0..pos0+t as a decode step):
         * heads over the pool when each part has >= 16K multiply-adds of q.k and p.v */
        int qd = c->n_heads * hd;
        for (int t = 0; t < T; t++) {
            int nk = pos0 + t + 1;
            int parts = (int)(((size_t)nk * hd * 2) >> 14), n = engine_threads();
            if (parts > c->n_heads) parts = c->n_heads;
            if (n > parts) n = parts < 1 ? 1 : parts;
            if (s->att_dec_n < n) { /* one row of scores per part */
                free(s->att_dec);
                s->att_dec = as_xmalloc((size_t)n * S * sizeof(float));
                s->att_dec_n = n;
            }
            struct decode_att a = {
                c, s, kc, vc, nk, s->q + (size_t)t * qd, s->att_out + (size_t)t * qd};
            pool_run(decode_att_part, &a, n);
        }
        return;
    }
    /* prefill: the flash kernel (kernel_attn.c), dense or over the block mask the sparse hook
     * chose (first fills only); as_attn_impl == AS_ATTN_MATRIX keeps the scores-matrix loop
     * below, the reference it replaced */
    if (as_attn_impl == AS_ATTN_MATRIX) {
        as_op_attention(c, s->q, kc, vc, s->att_out, s->att, S, 0, T, pos0);
        return;
    }
    int qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    struct as_attn_args a = {.q = s->q,
                             .k = kc,
                             .v = vc,
                             .o = s->att_out,
                             .T = T,
                             .pos0 = pos0,
                             .n_heads = c->n_heads,
                             .n_kv_heads = c->n_kv_heads,
                             .hd = hd,
                             .q_stride = qd,
                             .kv_stride = kvd,
                             .o_stride = qd,
                             .scale = 1.0f / sqrtf((float)hd)};
    if (s->attn_mask && pos0 == 0) a.mask = s->attn_mask(s->attn_mask_ctx, layer, s->q, kc, vc, T);
    if (as_attn_check(&a)) as_die_last();
    pool_run(attn_part, &a, as_attn_items(&a));
}

void as_op_attention(const struct as_model_config *c, const float *q, const float *kc,
                     const float *vc, float *out, float *att, int ld, size_t att_head_stride, int T,
                     int pos0) {
    int hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    int kv_mul = c->n_heads / c->n_kv_heads, n_keys = pos0 + T;
    float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < c->n_heads; h++) {
        const float *kh = kc + (size_t)(h / kv_mul) * hd, *vh = vc + (size_t)(h / kv_mul) * hd;
        const float *qh = q + (size_t)h * hd;
        float *oh = out + (size_t)h * hd, *ah = att + (size_t)h * att_head_stride;
        /* scores[T, n_keys] = Qh . Kh^T, then mask, softmax, O = P . Vh */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, n_keys, hd, scale, qh, qd, kh, kvd,
                    0.0f, ah, ld);
        for (int t = 0; t < T; t++) {
            float *a = ah + (size_t)t * ld;
            int visible = pos0 + t + 1;
            softmax_row(a, visible);
            memset(a + visible, 0, (size_t)(n_keys - visible) * sizeof(float));
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, n_keys, 1.0f, ah, ld, vh, kvd,
                    0.0f, oh, qd);
    }
}

void as_op_linear_rows(float *out, const float *x, const float *W, const float *bias, int T,
                       int cols, int rows) {
    struct matvec a = {.n = 1, .cols = cols, .T = T, .x = x, .m = {{out, W, bias, rows}}};
    matvec_run(&a);
}

/* out[T, rows] = x[T, cols] W^T (+ bias): as_op_linear, or in rowwise mode decode's matvec per
 * token (weights streamed once for the T tokens). */
static void linear(const struct as_run_state *s, float *out, const float *x, const float *W,
                   const float *bias, int T, int cols, int rows) {
    if (T > 1 && s->rowwise)
        as_op_linear_rows(out, x, W, bias, T, cols, rows);
    else
        as_op_linear(out, x, W, bias, T, cols, rows);
}

/* A linear of an as-ternary checkpoint through the packed int8 kernels when AS_TERNARY_KERNELS=1
 * (qlinear.h, docs/ternary.md), else linear() on the f32 weights. */
static void lin_packed(const struct as_run_state *s, const struct as_layer_weights *L,
                       enum as_linear w, float *out, const float *x, const float *bias, int T,
                       int cols, int rows) {
    if (L->packed[w] && as_qlin_enabled())
        as_qlin_apply_par(L->packed[w], x, T, out, bias, pool_run); /* rows over the pool */
    else
        linear(s, out, x, L->w[w], bias, T, cols, rows);
}
static int packed_group(const struct as_layer_weights *L, enum as_linear a, enum as_linear b) {
    if (!as_qlin_enabled()) return 0;
    for (int w = a; w <= (int)b; w++)
        if (L->packed[w]) return 1;
    return 0;
}

static void hook(const struct as_hooks *hk, int l, enum as_linear_group g, const float *x, int T,
                 int d) {
    if (hk && hk->on_linear_input) hk->on_linear_input(hk->ctx, l, g, x, T, d);
}

/* The input the group's linears multiply: x, or its activation-quantized copy. */
static const float *qin(const struct as_run_state *s, int l, enum as_linear_group g, const float *x,
                        int T, int d) {
    return s->quant_linear_input ? s->quant_linear_input(s->qctx, l, g, x, T, d) : x;
}

/* Layer l's attention after the q/k/v projections (s->q, s->k, s->v, T rows at positions
 * s->pos..): q/k norms, RoPE, the new rows into the cache, attention into s->att_out. */
static void attend(const struct as_model *m, const struct as_layer_weights *L,
                   struct as_run_state *s, int l, int T) {
    const struct as_model_config *c = &m->cfg;
    int hd = c->head_dim, kvd = c->n_kv_heads * hd, pos0 = s->pos;
    size_t cache_off = (size_t)l * s->max_seq * kvd;
    float *kc = s->key_cache + cache_off, *vc = s->value_cache + cache_off;
    if (c->qk_norm) { /* qwen3: RMSNorm over each head's head_dim, before RoPE */
        as_op_rmsnorm(s->q, s->q, L->q_norm, T * c->n_heads, hd, c->rms_eps);
        as_op_rmsnorm(s->k, s->k, L->k_norm, T * c->n_kv_heads, hd, c->rms_eps);
    }
    as_op_rope(s->q, T, c->n_heads, hd, pos0, s->rope_cos, s->rope_sin);
    as_op_rope(s->k, T, c->n_kv_heads, hd, pos0, s->rope_cos, s->rope_sin);
    memcpy(kc + (size_t)pos0 * kvd, s->k, (size_t)T * kvd * sizeof(float));
    memcpy(vc + (size_t)pos0 * kvd, s->v, (size_t)T * kvd * sizeof(float));
    if (s->on_kv) s->on_kv(s->kvctx, l, kc + (size_t)pos0 * kvd, vc + (size_t)pos0 * kvd, T, kvd);
    attention(c, s, kc, vc, T, pos0, l);
}

void as_layer_attention(const struct as_model *m, const struct as_layer_weights *L,
                        struct as_run_state *s, int l, const float *xn, int T, float *out,
                        const struct as_hooks *hk) {
    const struct as_model_config *c = &m->cfg;
    int D = c->hidden, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;

    hook(hk, l, AS_GROUP_ATTN_QKV, xn, T, D);
    const float *xq = qin(s, l, AS_GROUP_ATTN_QKV, xn, T, D);
    if (packed_group(L, AS_LIN_Q, AS_LIN_V)) {
        lin_packed(s, L, AS_LIN_Q, s->q, xq, L->bq, T, D, qd);
        lin_packed(s, L, AS_LIN_K, s->k, xq, L->bk, T, D, kvd);
        lin_packed(s, L, AS_LIN_V, s->v, xq, L->bv, T, D, kvd);
    } else if (T == 1 || s->rowwise) {
        struct matvec a = {.n = 3,
                           .cols = D,
                           .T = T,
                           .x = xq,
                           .m = {{s->q, L->w[AS_LIN_Q], L->bq, qd},
                                 {s->k, L->w[AS_LIN_K], L->bk, kvd},
                                 {s->v, L->w[AS_LIN_V], L->bv, kvd}}};
        matvec_run(&a);
    } else {
        as_op_linear(s->q, xq, L->w[AS_LIN_Q], L->bq, T, D, qd);
        as_op_linear(s->k, xq, L->w[AS_LIN_K], L->bk, T, D, kvd);
        as_op_linear(s->v, xq, L->w[AS_LIN_V], L->bv, T, D, kvd);
    }
    attend(m, L, s, l, T);
    hook(hk, l, AS_GROUP_ATTN_O, s->att_out, T, qd);
    lin_packed(s, L, AS_LIN_O, out, qin(s, l, AS_GROUP_ATTN_O, s->att_out, T, qd), NULL, T, qd, D);
}

void as_layer_mlp(const struct as_model *m, const struct as_layer_weights *L,
                  struct as_run_state *s, int l, const float *xn, int T, float *out,
                  const struct as_hooks *hk) {
    const struct as_model_config *c = &m->cfg;
    int D = c->hidden, FF = c->intermediate;
    hook(hk, l, AS_GROUP_MLP_GATE_UP, xn, T, D);
    const float *xq = qin(s, l, AS_GROUP_MLP_GATE_UP, xn, T, D);
    if (packed_group(L, AS_LIN_GATE, AS_LIN_UP)) {
        lin_packed(s, L, AS_LIN_GATE, s->hb, xq, NULL, T, D, FF);
        lin_packed(s, L, AS_LIN_UP, s->hb2, xq, NULL, T, D, FF);
    } else if (T == 1 || s->rowwise) {
        struct matvec a = {
            .n = 2,
            .cols = D,
            .T = T,
            .x = xq,
            .m = {{s->hb, L->w[AS_LIN_GATE], NULL, FF}, {s->hb2, L->w[AS_LIN_UP], NULL, FF}}};
        matvec_run(&a);
    } else {
        as_op_linear(s->hb, xq, L->w[AS_LIN_GATE], NULL, T, D, FF);
        as_op_linear(s->hb2, xq, L->w[AS_LIN_UP], NULL, T, D, FF);
    }
    as_op_swiglu(s->hb, s->hb2, (size_t)T * FF);
    hook(hk, l, AS_GROUP_MLP_DOWN, s->hb, T, FF);
    lin_packed(s, L, AS_LIN_DOWN, out, qin(s, l, AS_GROUP_MLP_DOWN, s->hb, T, FF), NULL, T, FF, D);
}

/* One decoder layer on s->x[T, hidden]. */
void as_engine_parallel(void (*fn)(void *arg, int part, int n_parts), void *arg, int max_parts) {
    pool_run(fn, arg, max_parts);
}

void as_forward_layer(const struct as_model *m, struct as_run_state *s, int l, int T,
                      const struct as_hooks *hk) {
    const struct as_model_config *c = &m->cfg;
    const struct as_layer_weights *L = &m->layers[l];
    int D = c->hidden;

    /* attention block */
    as_op_rmsnorm(s->xb, s->x, L->attn_norm, T, D, c->rms_eps);
    as_layer_attention(m, L, s, l, s->xb, T, s->xb, hk);
    for (size_t i = 0; i < (size_t)T * D; i++)
        s->x[i] += s->xb[i];

    /* MLP block */
    as_op_rmsnorm(s->xb, s->x, L->ffn_norm, T, D, c->rms_eps);
    as_layer_mlp(m, L, s, l, s->xb, T, s->xb, hk);
    for (size_t i = 0; i < (size_t)T * D; i++)
        s->x[i] += s->xb[i];
}

int as_forward(const struct as_model *m, struct as_run_state *s, const int *tokens, int T,
               enum as_logits_mode mode, const struct as_hooks *hooks) {
    const struct as_model_config *c = &m->cfg;
    int D = c->hidden;
    if (T <= 0 || T > s->max_T)
        return as_fail("forward: %d tokens per call, run state holds %d", T, s->max_T);
    if (s->pos + T > s->max_seq)
        return as_fail("forward: position %d exceeds the KV cache (%d)", s->pos + T, s->max_seq);
    for (int t = 0; t < T; t++) {
        if (tokens[t] < 0 || tokens[t] >= c->vocab)
            return as_fail("forward: token id %d out of range (vocab %d)", tokens[t], c->vocab);
        memcpy(s->x + (size_t)t * D, m->embed + (size_t)tokens[t] * D, (size_t)D * sizeof(float));
    }
    size_t act = (size_t)s->max_T * D;
    for (int l = 0; l < c->n_layers; l++) {
        if (s->layer_acts) memcpy(s->layer_acts + l * act, s->x, (size_t)T * D * sizeof(float));
        as_forward_layer(m, s, l, T, hooks);
    }
    if (s->layer_acts)
        memcpy(s->layer_acts + c->n_layers * act, s->x, (size_t)T * D * sizeof(float));
    s->pos += T;
    s->T = T;
    if (mode == AS_LOGITS_NONE) return 0;
    if (mode == AS_LOGITS_LAST) {
        as_op_rmsnorm(s->xb, s->x + (size_t)(T - 1) * D, m->norm, 1, D, c->rms_eps);
        as_op_linear(s->logits, s->xb, m->lm_head, NULL, 1, D, c->vocab);
    } else {
        as_op_rmsnorm(s->xb, s->x, m->norm, T, D, c->rms_eps);
        linear(s, s->logits, s->xb, m->lm_head, NULL, T, D, c->vocab);
    }
    return 0;
}

/* One decode step of B independent sequences: the rows share every weight pass (matvec tiles of
 * B tokens, rowwise), each attends to its own cache. Row b's sums are those of a one-token call
 * on seq[b] (every matvec row is summed as for one token, attention runs on seq[b]'s state), so
 * batched and one-at-a-time decoding give the same bits. */
int as_forward_batch(const struct as_model *m, struct as_run_state *w, struct as_run_state **seq,
                     const int *tokens, int B) {
    const struct as_model_config *c = &m->cfg;
    int D = c->hidden, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    if (B <= 0 || B > w->max_T)
        return as_fail("batched decode: %d sequences, the batch state holds %d", B, w->max_T);
    for (int b = 0; b < B; b++) {
        if (seq[b]->pos + 1 > seq[b]->max_seq)
            return as_fail("batched decode: sequence %d: position %d exceeds its KV cache (%d)", b,
                           seq[b]->pos + 1, seq[b]->max_seq);
        if (tokens[b] < 0 || tokens[b] >= c->vocab)
            return as_fail("batched decode: sequence %d: token id %d out of range (vocab %d)", b,
                           tokens[b], c->vocab);
        memcpy(w->x + (size_t)b * D, m->embed + (size_t)tokens[b] * D, (size_t)D * sizeof(float));
    }
    for (int l = 0; l < c->n_layers; l++) {
        const struct as_layer_weights *L = &m->layers[l];
        if (packed_group(L, AS_LIN_Q, AS_LIN_V) || packed_group(L, AS_LIN_GATE, AS_LIN_UP))
            return as_fail("batched decode: layer %d has packed linears (f32 weights only)", l);
        for (int b = 0; b < B; b++)
            if (seq[b]->layer_acts)
                memcpy(seq[b]->layer_acts + (size_t)l * seq[b]->max_T * D, w->x + (size_t)b * D,
                       (size_t)D * sizeof(float));
        as_op_rmsnorm(w->xb, w->x, L->attn_norm, B, D, c->rms_eps);
        struct matvec qkv = {.n = 3,
                             .cols = D,
                             .T = B,
                             .x = w->xb,
                             .m = {{w->q, L->w[AS_LIN_Q], L->bq, qd},
                                   {w->k, L->w[AS_LIN_K], L->bk, kvd},
                                   {w->v, L->w[AS_LIN_V], L->bv, kvd}}};
        matvec_run(&qkv);
        for (int b = 0; b < B; b++) { /* each row through its own sequence's cache */
            struct as_run_state *s = seq[b];
            memcpy(s->q, w->q + (size_t)b * qd, (size_t)qd * sizeof(float));
            memcpy(s->k, w->k + (size_t)b * kvd, (size_t)kvd * sizeof(float));
            memcpy(s->v, w->v + (size_t)b * kvd, (size_t)kvd * sizeof(float));
            attend(m, L, s, l, 1);
            memcpy(w->att_out + (size_t)b * qd, s->att_out, (size_t)qd * sizeof(float));
        }
        as_op_linear_rows(w->xb, w->att_out, L->w[AS_LIN_O], NULL, B, qd, D);
        for (size_t i = 0; i < (size_t)B * D; i++)
            w->x[i] += w->xb[i];
        as_op_rmsnorm(w->xb, w->x, L->ffn_norm, B, D, c->rms_eps);
        int rowwise = w->rowwise;
        w->rowwise = 1;
        as_layer_mlp(m, L, w, l, w->xb, B, w->xb, NULL);
        w->rowwise = rowwise;
        for (size_t i = 0; i < (size_t)B * D; i++)
            w->x[i] += w->xb[i];
    }
    as_op_rmsnorm(w->xb, w->x, m->norm, B, D, c->rms_eps);
    as_op_linear_rows(w->logits, w->xb, m->lm_head, NULL, B, D, c->vocab);
    for (int b = 0; b < B; b++) {
        struct as_run_state *s = seq[b];
        if (s->layer_acts)
            memcpy(s->layer_acts + (size_t)c->n_layers * s->max_T * D, w->x + (size_t)b * D,
                   (size_t)D * sizeof(float));
        memcpy(s->logits, w->logits + (size_t)b * c->vocab, (size_t)c->vocab * sizeof(float));
        s->pos++, s->T = 1;
    }
    return 0;
}

/* bench_bigmodel: inputs for the larger-than-memory benchmark (bench/bigmodel.sh).
 *
 *   bench_bigmodel gen DIR LAYERS
 *       a synthetic Llama-shaped bf16 checkpoint with realistic large shapes (hidden 8192,
 *       intermediate 28672, 64 heads, 8 KV heads, vocab 32000): one safetensors shard per decoder
 *       layer (1.71 GB each) plus shards for the embeddings and the head, an index, config.json.
 *       Weights are cheap pseudo-random bf16 values (speed and memory only, not quality).
 *   bench_bigmodel hessians MODEL DIR A B > STREAM
 *       a statistics stream like as-calib's for layers A..B of MODEL, with synthetic Hessians:
 *       symmetric, strictly diagonally dominant (diag in [1, 2), off-diagonal |h| <= 1e-5, so
 *       positive definite for K <= 100000), written row by row to DIR/hessian.L.GROUP.f32 (never
 *       held in memory) and sent by reference, each followed by its linears' weights by
 *       reference, as as-calib does. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "as_error.h"
#include "stream.h"

enum { HIDDEN = 8192, INTER = 28672, HEADS = 64, KV_HEADS = 8, HEAD_DIM = 128, VOCAB = 32000 };

static uint64_t mix(uint64_t z) { /* splitmix64 finalizer: a counter-based generator */
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void write_all(int fd, const void *buf, size_t n, const char *path) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) as_die("%s: write failed: %s", path, strerror(errno));
        p += w, n -= (size_t)w;
    }
}

struct tensor {
    char name[128];
    int64_t rows, cols; /* cols 0: a vector */
};

static int64_t tensor_bytes(const struct tensor *t) {
    return 2 * t->rows * (t->cols ? t->cols : 1);
}

/* One safetensors shard with bf16 tensors filled with values of magnitude 2^-7 .. 2^-4 (random
 * sign, exponent and mantissa bits; norms are 1.0). Adds the tensors to the index's weight_map. */
static uint64_t write_shard(const char *dir, const char *file, const struct tensor *ts, int n,
                            json_t *weight_map, uint64_t seed) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    json_t *h = json_object();
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        json_t *shape = ts[i].cols
                            ? json_pack("[I,I]", (json_int_t)ts[i].rows, (json_int_t)ts[i].cols)
                            : json_pack("[I]", (json_int_t)ts[i].rows);
        json_object_set_new(h, ts[i].name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", "BF16", "shape", shape,
                                      "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + tensor_bytes(&ts[i]))));
        json_object_set_new(weight_map, ts[i].name, json_string(file));
        off += tensor_bytes(&ts[i]);
    }
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    char *hj = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    size_t hl = strlen(hj), padded = (hl + 7) / 8 * 8;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) as_die("%s: %s", path, strerror(errno));
    uint64_t le = padded;
    write_all(fd, &le, 8, path);
    char *hbuf = malloc(padded);
    memset(hbuf, ' ', padded);
    memcpy(hbuf, hj, hl);
    write_all(fd, hbuf, padded, path);
    free(hbuf), free(hj), json_decref(h);
    enum { CHUNK = 1 << 23 }; /* 8 Mi values = 16 MiB */
    uint16_t *buf = malloc(sizeof(uint16_t) * CHUNK);
    uint64_t ctr = seed << 40;
    for (int i = 0; i < n; i++) {
        int64_t left = tensor_bytes(&ts[i]) / 2;
        int is_norm = ts[i].cols == 0;
        while (left > 0) {
            int64_t m = left < CHUNK ? left : CHUNK;
            for (int64_t j = 0; j < m; j += 4) {
                uint64_t r = mix(ctr++);
                for (int k = 0; k < 4 && j + k < m; k++, r >>= 16) {
                    /* sign | exponent 120..123 | 7 mantissa bits */
                    uint16_t v =
                        (uint16_t)((r & 0x8000) | ((120u + ((r >> 7) & 3)) << 7) | (r & 0x7f));
                    buf[j + k] = is_norm ? 0x3f80 /* 1.0 */ : v;
                }
            }
            write_all(fd, buf, sizeof(uint16_t) * (size_t)m, path);
            left -= m;
        }
    }
    free(buf);
    if (close(fd)) as_die("%s: %s", path, strerror(errno));
    return (uint64_t)off;
}

static int gen(const char *dir, int layers) {
    if (mkdir(dir, 0755) && errno != EEXIST) as_die("%s: %s", dir, strerror(errno));
    int n_shards = layers + 2;
    json_t *map = json_object();
    uint64_t total = 0;
    char file[256];
    struct tensor t[16];
    snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", 1, n_shards);
    t[0] = (struct tensor){"model.embed_tokens.weight", VOCAB, HIDDEN};
    total += write_shard(dir, file, t, 1, map, 1);
    for (int l = 0; l < layers; l++) {
        static const struct {
            const char *name;
            int64_t rows, cols;
        } lin[] = {{"self_attn.q_proj.weight", HEADS * HEAD_DIM, HIDDEN},
                   {"self_attn.k_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN},
                   {"self_attn.v_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN},
                   {"self_attn.o_proj.weight", HIDDEN, HEADS * HEAD_DIM},
                   {"mlp.gate_proj.weight", INTER, HIDDEN},
                   {"mlp.up_proj.weight", INTER, HIDDEN},
                   {"mlp.down_proj.weight", HIDDEN, INTER},
                   {"input_layernorm.weight", HIDDEN, 0},
                   {"post_attention_layernorm.weight", HIDDEN, 0}};
        for (int i = 0; i < 9; i++) {
            snprintf(t[i].name, sizeof t[i].name, "model.layers.%d.%s", l, lin[i].name);
            t[i].rows = lin[i].rows, t[i].cols = lin[i].cols;
        }
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", l + 2, n_shards);
        total += write_shard(dir, file, t, 9, map, (uint64_t)l + 2);
        fprintf(stderr, "bench_bigmodel: layer %d/%d written\n", l + 1, layers);
    }
    t[0] = (struct tensor){"model.norm.weight", HIDDEN, 0};
    t[1] = (struct tensor){"lm_head.weight", VOCAB, HIDDEN};
    snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", n_shards, n_shards);
    total += write_shard(dir, file, t, 2, map, 999);

    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    json_t *index =
        json_pack("{s:{s:I},s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
    if (json_dump_file(index, path, JSON_INDENT(1))) as_die("%s: cannot write", path);
    json_decref(index);
    json_t *cfg = json_pack(
        "{s:[s],s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:f,s:f,s:s,s:b,s:i,s:i,s:s}", "architectures",
        "LlamaForCausalLM", "model_type", "llama", "hidden_size", HIDDEN, "intermediate_size",
        INTER, "num_hidden_layers", layers, "num_attention_heads", HEADS, "num_key_value_heads",
        KV_HEADS, "vocab_size", VOCAB, "max_position_embeddings", 8192, "rms_norm_eps", 1e-5,
        "rope_theta", 500000.0, "hidden_act", "silu", "tie_word_embeddings", 0, "bos_token_id", 1,
        "eos_token_id", 2, "torch_dtype", "bfloat16");
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (json_dump_file(cfg, path, JSON_INDENT(2))) as_die("%s: cannot write", path);
    json_decref(cfg);
    printf("%s: %d layers, %d shards, %.2f GB of bf16 weights\n", dir, layers, n_shards,
           (double)total / 1e9);
    return 0;
}

/* Row i of the synthetic Hessian: h[i][j] = h[j][i] from a hash of the unordered pair. */
static void hessian_row(int K, int i, uint64_t seed, float *row) {
    for (int j = 0; j < K; j++) {
        if (j == i) {
            row[j] = 1.0f + (float)(mix(seed ^ (uint64_t)i) >> 40) / 16777216.0f;
            continue;
        }
        uint64_t a = (uint64_t)(i < j ? i : j), b = (uint64_t)(i < j ? j : i);
        uint64_t r = mix(seed + a * 0x100000001b3ull + b * 0x9E3779B1ull);
        row[j] = 1e-5f * ((float)(r >> 40) / 8388608.0f - 1.0f);
    }
}

static int hessians(const char *model, const char *dir, int lo, int hi) {
    struct as_ckpt *ck = as_ckpt_open(model);
    if (!ck) as_die_last();
    struct as_ckpt_refs *cr = as_ckpt_refs_new(ck);
    if (!cr) as_die_last();
    char adir[4096];
    if (!realpath(dir, adir)) as_die("%s: %s", dir, strerror(errno));
    struct as_stream_writer *w = as_stream_writer_fd(1, "stdout");
    static const struct {
        const char *group;
        int K;
        const char *targets[3];
    } groups[] = {
        {"attn_qkv", HIDDEN, {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}},
        {"attn_o", HEADS * HEAD_DIM, {"self_attn.o_proj"}},
        {"mlp_gate_up", HIDDEN, {"mlp.gate_proj", "mlp.up_proj"}},
        {"mlp_down", INTER, {"mlp.down_proj"}}};
    float *row = malloc(sizeof(float) * INTER);
    for (int l = lo; l <= hi; l++)
        for (int g = 0; g < 4; g++) {
            int K = groups[g].K;
            char path[4200], name[256];
            snprintf(path, sizeof path, "%s/hessian.%d.%s.f32", adir, l, groups[g].group);
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0) as_die("%s: %s", path, strerror(errno));
            for (int i = 0; i < K; i++) {
                hessian_row(K, i, (uint64_t)l * 16 + (uint64_t)g, row);
                write_all(fd, row, sizeof(float) * (size_t)K, path);
            }
            if (close(fd)) as_die("%s: %s", path, strerror(errno));
            struct stat st;
            if (stat(path, &st)) as_die("%s: %s", path, strerror(errno));
            json_t *attrs = json_object(), *tg = json_array();
            for (int t = 0; t < 3 && groups[g].targets[t]; t++) {
                char p[256];
                snprintf(p, sizeof p, "model.layers.%d.%s", l, groups[g].targets[t]);
                json_array_append_new(tg, json_string(p));
            }
            json_object_set_new(attrs, "targets", tg);
            json_object_set_new(attrs, "group", json_string(groups[g].group));
            json_object_set_new(attrs, "tokens", json_integer(0));
            json_object_set_new(attrs, "synthetic", json_true());
            snprintf(name, sizeof name, "model.layers.%d.%s.hessian", l, groups[g].group);
            int64_t shape[2] = {K, K};
            struct as_rec r;
            as_rec_init(&r, name, "hessian", l, AS_F32, 2, shape);
            r.attrs = attrs;
            r.kind = AS_PAYLOAD_REF;
            r.file = path;
            r.offset = 0;
            r.has_file_stat = 1;
            r.file_size = (uint64_t)st.st_size;
            r.file_mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            if (as_stream_write(w, &r, NULL)) as_die_last();
            json_decref(attrs);
            /* the group's weights by reference, as as-calib sends them */
            for (int t = 0; t < 3 && groups[g].targets[t]; t++) {
                char wn[256];
                snprintf(wn, sizeof wn, "model.layers.%d.%s.weight", l, groups[g].targets[t]);
                int found = 0;
                for (int i = 0; i < ck->n_tensors; i++) {
                    if (strcmp(as_ckpt_refs_tensor(cr, i)->name, wn)) continue;
                    struct as_rec wr;
                    as_ckpt_refs_rec(cr, i, &wr);
                    if (as_stream_write(w, &wr, NULL)) as_die_last();
                    found = 1;
                }
                if (!found) as_die("%s: tensor %s missing", model, wn);
            }
            fprintf(stderr, "bench_bigmodel: layer %d %s Hessian [%d, %d] written\n", l,
                    groups[g].group, K, K);
        }
    if (as_stream_write_end(w)) as_die_last();
    as_stream_writer_free(w);
    free(row);
    as_ckpt_refs_free(cr);
    as_ckpt_close(ck);
    return 0;
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    if (argc == 4 && !strcmp(argv[1], "gen")) return gen(argv[2], atoi(argv[3]));
    if (argc == 6 && !strcmp(argv[1], "hessians"))
        return hessians(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    fprintf(stderr, "usage: bench_bigmodel gen DIR LAYERS\n"
                    "       bench_bigmodel hessians MODEL DIR FIRST_LAYER LAST_LAYER > STREAM\n");
    return 2;
}

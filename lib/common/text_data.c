#include "text_data.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "as_error.h"

int as_text_read(const char *path, size_t max_bytes, char **buf_out, size_t *len_out) {
    FILE *f = fopen(path, "rb");
    if (!f) return as_fail("%s: cannot open text: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = as_xmalloc(cap + 1);
    for (;;) {
        if (len == cap) buf = as_xrealloc(buf, (cap *= 2) + 1);
        size_t want = cap - len;
        if (max_bytes && want > max_bytes - len) want = max_bytes - len;
        if (!want) break;
        size_t got = fread(buf + len, 1, want, f);
        len += got;
        if (got < want) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return as_fail("%s: read error", path);
    }
    buf[len] = 0;
    *buf_out = buf;
    *len_out = len;
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists the regular files of a directory sorted by name, or the path itself if it is a file. */
static int list_inputs(const char *path, char ***files_out, int *n_out) {
    struct stat st;
    if (stat(path, &st) != 0) return as_fail("%s: %s", path, strerror(errno));
    char **files = NULL;
    int n = 0;
    if (!S_ISDIR(st.st_mode)) {
        files = as_xmalloc(sizeof *files);
        files[n++] = as_xstrdup(path);
    } else {
        DIR *d = opendir(path);
        if (!d) return as_fail("%s: %s", path, strerror(errno));
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            size_t len = strlen(path) + strlen(e->d_name) + 2;
            char *p = as_xmalloc(len);
            snprintf(p, len, "%s/%s", path, e->d_name);
            if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
                free(p);
                continue;
            }
            files = as_xrealloc(files, (n + 1) * sizeof *files);
            files[n++] = p;
        }
        closedir(d);
        if (!n) return as_fail("%s: no text files", path);
        qsort(files, n, sizeof *files, cmp_str);
    }
    *files_out = files;
    *n_out = n;
    return 0;
}

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int as_calib_sample(const struct as_tokenizer *tok, const char *path, int samples, int seqlen,
                    uint64_t seed, int add_bos, int32_t **tokens_out) {
    if (samples <= 0 || seqlen <= 1)
        return as_fail("calibration: need samples >= 1 and seqlen >= 2 (got %d x %d)", samples,
                       seqlen);
    char **files = NULL;
    int n_files = 0;
    if (list_inputs(path, &files, &n_files)) return -1;
    int32_t *all = NULL;
    size_t n_all = 0;
    int rc = 0;
    for (int i = 0; i < n_files && !rc; i++) {
        char *text;
        size_t len;
        int32_t *ids;
        size_t n;
        if (as_text_read(files[i], 0, &text, &len)) {
            rc = -1;
            break;
        }
        if (as_tokenizer_encode(tok, text, len, 0, &ids, &n)) {
            as_fail_prefix("%s: ", files[i]);
            rc = -1;
        } else {
            all = as_xrealloc(all, (n_all + n) * sizeof *all);
            memcpy(all + n_all, ids, n * sizeof *ids);
            n_all += n;
            free(ids);
        }
        free(text);
    }
    for (int i = 0; i < n_files; i++) free(files[i]);
    free(files);
    if (rc) {
        free(all);
        return -1;
    }
    size_t body = (size_t)seqlen - (add_bos ? 1 : 0);
    if (n_all < body + 1) {
        free(all);
        return as_fail("%s: text has %zu tokens, fewer than one window of %d", path, n_all,
                       seqlen);
    }
    int32_t *out = as_xmalloc((size_t)samples * seqlen * sizeof *out);
    uint64_t state = seed;
    for (int s = 0; s < samples; s++) {
        size_t start = splitmix64(&state) % (n_all - body + 1);
        int32_t *w = out + (size_t)s * seqlen;
        if (add_bos) *w++ = as_tokenizer_bos(tok);
        memcpy(w, all + start, body * sizeof *w);
    }
    free(all);
    *tokens_out = out;
    return 0;
}

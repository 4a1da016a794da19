/* as-cat: concatenate tensor streams and checkpoints into one stream on stdout.
 *
 * Inputs are streams (files or '-') and safetensors checkpoints (their tensors become by-reference
 * records). Records can be filtered by name (PCRE2, searched anywhere in the name) and layer, and
 * payloads converted: --inline copies referenced bytes into the stream (to cross machines),
 * --ref DIR moves inline payloads into an arena file under DIR and sends references. Inline
 * payloads read from a stream are always verified; --verify also checks every reference.
 * One end record closes the output, written only when every input was complete: a failure
 * part-way leaves a stream without end record, which every consumer reports as truncated.
 * --split-layers DIR writes, instead of stdout, one stream per decoder layer (DIR/layer.N.astr,
 * layer -1 records to DIR/global.astr) for a per-layer fan-out; each file is staged under a
 * temporary name and renamed into place, with its end record, only when every input was read. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "as_error.h"
#include "atomic_file.h"
#include "stream.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: as-cat [OPTIONS] [FILE|DIR|-]...\n"
            "Concatenate tensor streams and safetensors checkpoints (default input: '-' = stdin)\n"
            "into one tensor stream on stdout with a single end record.\n"
            "  -n, --name REGEX     keep records whose name matches REGEX (PCRE2, unanchored)\n"
            "  -x, --exclude REGEX  drop records whose name matches REGEX\n"
            "  -l, --layer N|A-B    keep records of layer N or layers A..B (inclusive)\n"
            "  -r, --role ROLE      keep records with this role\n"
            "  -i, --inline         copy referenced payloads into the stream (portable, e.g. ssh)\n"
            "  -R, --ref DIR        move inline payloads to an arena file in DIR, send references\n"
            "  -V, --verify         also verify every referenced payload (file size/mtime, xxh3)\n"
            "  -s, --split-layers DIR  write DIR/layer.N.astr per decoder layer N (layer -1:\n"
            "                       DIR/global.astr), each complete with its end record, instead\n"
            "                       of stdout; files appear atomically when all input was read\n"
            "  -h, --help           this help\n"
            "Checkpoint tensors are emitted in natural name order as role \"weight\" references.\n"
            "Examples: as-cat MODEL --layer 0-3 | as-gptq ...\n"
            "          as-cat --inline MODEL | ssh host 'as-cat --ref /dev/shm > job.astr'\n"
            "          as-cat --split-layers jobs/ calib.astr   # jobs/layer.0.astr ...\n");
}

/* ---- --split-layers: one staged output stream per layer ---- */

struct split_file {
    struct as_atomic_file af;
    struct as_stream_writer *w;
};

struct split {
    const char *dir;
    struct split_file *files; /* [n]: index 0 = layer -1 (global.astr), i = layer i - 1 */
    int n;
};

/* Set while split files are staged, so that a fatal error removes the temporaries. */
static struct split *g_split;

static void split_abort(struct split *sp) {
    for (int i = 0; i < sp->n; i++)
        if (sp->files[i].w) {
            as_stream_writer_free(sp->files[i].w);
            as_atomic_abort(&sp->files[i].af);
            sp->files[i].w = NULL;
        }
}

/* as_die_last, removing staged split files first: a failed split leaves no partial layer file. */
static _Noreturn void die_last(void) {
    if (g_split) split_abort(g_split);
    as_die_last();
}

/* The writer for a record of `layer`, created (staged) on first use. */
static struct as_stream_writer *split_writer(struct split *sp, int layer) {
    int i = layer < 0 ? 0 : layer + 1;
    if (i >= sp->n) {
        int n = i + 1 > 2 * sp->n ? i + 1 : 2 * sp->n;
        sp->files = as_xrealloc(sp->files, sizeof *sp->files * (size_t)n);
        memset(sp->files + sp->n, 0, sizeof *sp->files * (size_t)(n - sp->n));
        sp->n = n;
    }
    struct split_file *f = &sp->files[i];
    if (!f->w) {
        char path[4096];
        if (layer < 0)
            snprintf(path, sizeof path, "%s/global.astr", sp->dir);
        else
            snprintf(path, sizeof path, "%s/layer.%d.astr", sp->dir, layer);
        if (as_atomic_open(&f->af, path)) return NULL;
        f->w = as_stream_writer_fd(fileno(f->af.fp), f->af.path);
        if (!f->w) {
            as_atomic_abort(&f->af);
            return NULL;
        }
    }
    return f->w;
}

/* End every staged stream and rename it into place. */
static int split_commit(struct split *sp) {
    for (int i = 0; i < sp->n; i++) {
        struct split_file *f = &sp->files[i];
        if (!f->w) continue;
        if (as_stream_write_end(f->w)) return -1;
        as_stream_writer_free(f->w);
        f->w = NULL;
        if (as_atomic_commit(&f->af)) return -1;
    }
    return 0;
}

static pcre2_code *compile_regex(const char *pattern) {
    int err;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        as_die("--name/--exclude %s: bad regular expression at offset %zu: %s", pattern,
               (size_t)off, (char *)msg);
    }
    return re;
}

static int regex_match(pcre2_code *re, pcre2_match_data *md, const char *s) {
    int rc = pcre2_match(re, (PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, 0, 0, md, NULL);
    if (rc < PCRE2_ERROR_NOMATCH) as_die("regex match failed on %s (error %d)", s, rc);
    return rc >= 0;
}

static void parse_layers(const char *arg, int *lo, int *hi) {
    char *end;
    long a = strtol(arg, &end, 10), b = a;
    if (end != arg && *end == '-') {
        const char *q = end + 1;
        b = strtol(q, &end, 10);
        if (end == q) end = (char *)arg; /* "3-" is malformed */
    }
    if (end == arg || *end || a < 0 || b < a || b > 1000000)
        as_die("--layer %s: expected N or A-B with 0 <= A <= B", arg);
    *lo = (int)a;
    *hi = (int)b;
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    static const struct option opts[] = {
        {"name", required_argument, NULL, 'n'},  {"exclude", required_argument, NULL, 'x'},
        {"layer", required_argument, NULL, 'l'}, {"role", required_argument, NULL, 'r'},
        {"inline", no_argument, NULL, 'i'},      {"ref", required_argument, NULL, 'R'},
        {"verify", no_argument, NULL, 'V'},      {"split-layers", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},        {0}};
    pcre2_code *keep_re = NULL, *drop_re = NULL;
    int layer_lo = -1, layer_hi = -1, to_inline = 0, verify = 0, c;
    const char *ref_dir = NULL, *role = NULL, *split_dir = NULL;
    while ((c = getopt_long(argc, argv, "n:x:l:r:iR:Vs:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            keep_re = compile_regex(optarg);
            break;
        case 'x':
            drop_re = compile_regex(optarg);
            break;
        case 'l':
            parse_layers(optarg, &layer_lo, &layer_hi);
            break;
        case 'r':
            role = optarg;
            break;
        case 'i':
            to_inline = 1;
            break;
        case 'R':
            ref_dir = optarg;
            break;
        case 'V':
            verify = 1;
            break;
        case 's':
            split_dir = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            exit(2);
        }
    }
    if (to_inline && ref_dir) as_die("--inline and --ref exclude each other");
    struct split sp = {split_dir, NULL, 0};
    if (split_dir) {
        struct stat st;
        if (mkdir(split_dir, 0777) != 0 && errno != EEXIST)
            as_die("--split-layers %s: cannot create directory: %s", split_dir, strerror(errno));
        if (stat(split_dir, &st) != 0 || !S_ISDIR(st.st_mode))
            as_die("--split-layers %s: not a directory", split_dir);
        g_split = &sp;
    } else if (isatty(1)) {
        as_die("refusing to write a binary tensor stream to a terminal");
    }
    const char *dflt[] = {"-"};
    char **inputs = optind < argc ? argv + optind : (char **)dflt;
    int n_inputs = optind < argc ? argc - optind : 1;

    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    struct as_stream_writer *w = split_dir ? NULL : as_stream_writer_fd(1, "stdout");
    struct as_arena *arena = NULL;
    if (ref_dir && !(arena = as_arena_create(ref_dir))) die_last();

    for (int i = 0; i < n_inputs; i++) {
        struct as_source *src = as_source_open(inputs[i]);
        if (!src) die_last();
        const struct as_rec *in;
        int rc;
        while ((rc = as_source_next(src, &in)) == 1) {
            if (keep_re && !regex_match(keep_re, md, in->name)) continue;
            if (drop_re && regex_match(drop_re, md, in->name)) continue;
            if (layer_lo >= 0 && (in->layer < layer_lo || in->layer > layer_hi)) continue;
            if (role && strcmp(role, in->role) != 0) continue;
            struct as_rec out = *in;
            const void *data = NULL;
            /* Inline payloads are always read (and so verified); references only when they
             * must be copied or checked. A verified reference keeps its checksum; one without
             * gets its checksum computed by the writer when it becomes inline. */
            if (in->kind == AS_PAYLOAD_INLINE || to_inline || verify) {
                data = as_source_payload(src);
                if (!data) die_last();
            }
            if (to_inline && in->kind == AS_PAYLOAD_REF) {
                out.kind = AS_PAYLOAD_INLINE;
                out.file = NULL;
                out.has_file_stat = 0;
            } else if (arena && in->kind == AS_PAYLOAD_INLINE) {
                if (as_arena_put(arena, &out, data)) die_last();
            }
            struct as_stream_writer *ow = split_dir ? split_writer(&sp, in->layer) : w;
            if (!ow || as_stream_write(ow, &out, data)) die_last();
        }
        if (rc < 0) die_last();
        as_source_close(src);
    }
    if (split_dir) {
        if (split_commit(&sp)) die_last();
        g_split = NULL;
        free(sp.files);
    } else {
        if (as_stream_write_end(w)) as_die_last();
        as_stream_writer_free(w);
    }
    as_arena_close(arena);
    pcre2_match_data_free(md);
    pcre2_code_free(keep_re);
    pcre2_code_free(drop_re);
    return 0;
}

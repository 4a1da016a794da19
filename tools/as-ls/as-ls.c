/* as-ls: list the records of tensor streams and safetensors checkpoints as JSON lines.
 *
 * One JSON object per tensor, exactly the record header of docs/stream-format.md (checkpoint
 * tensors appear as the by-reference records as-cat would emit), for jq. Tensor data is never read:
 * inline payloads of a stream are skipped (lseek on files), references are not followed. --summary
 * prints one object with counts and byte totals instead. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "stream.h"

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: as-ls [--summary] [FILE|DIR|-]...\n"
        "List tensor records as JSON lines (one object per tensor) without reading tensor data.\n"
        "Inputs: tensor streams (file or '-' for stdin, the default), safetensors files,\n"
        "checkpoint directories (model.safetensors or a sharded index).\n"
        "  -s, --summary  one JSON object per input: records, bytes inline/by reference,\n"
        "                 records per role, layer range\n"
        "  -h, --help     this help\n"
        "Example: as-cat MODEL | as-ls | jq -r 'select(.layer == 3) | .name'\n");
}

struct summary {
    uint64_t records, inline_bytes, ref_bytes;
    int layer_min, layer_max;
    json_t *roles;
};

static void summary_add(struct summary *s, const struct as_rec *r) {
    s->records++;
    if (r->kind == AS_PAYLOAD_INLINE)
        s->inline_bytes += r->nbytes;
    else
        s->ref_bytes += r->nbytes;
    if (r->layer >= 0) {
        if (s->layer_min < 0 || r->layer < s->layer_min) s->layer_min = r->layer;
        if (r->layer > s->layer_max) s->layer_max = r->layer;
    }
    json_t *n = json_object_get(s->roles, r->role);
    json_object_set_new(s->roles, r->role, json_integer(n ? json_integer_value(n) + 1 : 1));
}

static void print_json(json_t *o) {
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!line) as_die("cannot encode JSON");
    fputs(line, stdout);
    fputc('\n', stdout);
    free(line);
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    static const struct option opts[] = {
        {"summary", no_argument, NULL, 's'}, {"help", no_argument, NULL, 'h'}, {0}};
    int summary = 0, c;
    while ((c = getopt_long(argc, argv, "sh", opts, NULL)) != -1) {
        if (c == 's')
            summary = 1;
        else if (c == 'h')
            usage(stdout), exit(0);
        else
            usage(stderr), exit(2);
    }
    const char *dflt[] = {"-"};
    char **inputs = optind < argc ? argv + optind : (char **)dflt;
    int n_inputs = optind < argc ? argc - optind : 1;
    for (int i = 0; i < n_inputs; i++) {
        struct as_source *src = as_source_open(inputs[i]);
        if (!src) as_die_last();
        struct summary s = {.layer_min = -1, .layer_max = -1, .roles = json_object()};
        const struct as_rec *r;
        int rc;
        while ((rc = as_source_next(src, &r)) == 1) {
            if (summary) {
                summary_add(&s, r);
                continue;
            }
            json_t *o = as_rec_to_json(r);
            print_json(o);
            json_decref(o);
        }
        if (rc < 0) {
            fflush(stdout);
            as_die_last();
        }
        if (summary) {
            json_t *o = json_pack(
                "{s:s, s:s, s:I, s:I, s:I, s:O, s:[i,i]}", "input", as_source_name(src), "kind",
                as_source_is_stream(src) ? "stream" : "checkpoint", "records",
                (json_int_t)s.records, "inline_bytes", (json_int_t)s.inline_bytes, "ref_bytes",
                (json_int_t)s.ref_bytes, "roles", s.roles, "layers", s.layer_min, s.layer_max);
            print_json(o);
            json_decref(o);
        }
        json_decref(s.roles);
        as_source_close(src);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) as_die("stdout: write failed");
    return 0;
}

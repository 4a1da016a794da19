/* as-import: convert a llama2.c checkpoint (and its tokenizer.bin) into a Hugging Face checkpoint
 * directory (config.json, model.safetensors, tokenizer.json, ...), written atomically.
 * q/k rows are permuted from llama2.c's interleaved-pair RoPE to HF's rotate-half layout;
 * tokenizer.json merges are derived from the SentencePiece scores (docs/engine.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "as_error.h"
#include "llama2c.h"

static void usage(FILE *f) {
    fprintf(f, "usage: as-import [-t TOKENIZER.bin] CHECKPOINT.bin OUT_DIR\n"
               "Convert a llama2.c checkpoint into a Hugging Face checkpoint directory.\n"
               "  -t, --tokenizer FILE  llama2.c tokenizer.bin (writes tokenizer.json too)\n"
               "  -h, --help            this help\n");
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    const char *tok_path = NULL;
    static const struct option opts[] = {
        {"tokenizer", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            tok_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 2) {
        usage(stderr);
        return 2;
    }
    struct as_l2c_model m;
    if (as_l2c_load(argv[optind], &m) != 0) as_die_last();
    struct as_l2c_tokenizer tok;
    if (tok_path && as_l2c_tokenizer_load(tok_path, m.cfg.vocab_size, &tok) != 0) as_die_last();
    int rc = as_l2c_export_hf(&m, tok_path ? &tok : NULL, argv[optind + 1]);
    if (tok_path) as_l2c_tokenizer_free(&tok);
    as_l2c_free(&m);
    if (rc != 0) as_die_last();
    return 0;
}

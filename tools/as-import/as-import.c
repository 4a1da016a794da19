/* as-import: convert a checkpoint from another ecosystem into a Hugging Face checkpoint directory
 * (config.json, model.safetensors, tokenizer.json, ...), written atomically:
 *  - a GGUF file (llama, qwen2, qwen3; recognised by its magic): weights dequantized exactly as
 *    ggml does, llama's q/k rows un-permuted, vocabulary rebuilt as tokenizer.json (gguf_import.h);
 *  - a llama2.c checkpoint (and its tokenizer.bin): q/k rows permuted from llama2.c's
 *    interleaved-pair RoPE to HF's rotate-half layout, merges derived from the SentencePiece
 *    scores (docs/engine.md). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "as_error.h"
#include "dtype.h"
#include "gguf_import.h"
#include "llama2c.h"

static void usage(FILE *f) {
    fprintf(f, "usage: as-import [--dtype f32|bf16|f16] MODEL.gguf OUT_DIR\n"
               "       as-import [-t TOKENIZER.bin] CHECKPOINT.bin OUT_DIR\n"
               "Convert a GGUF file (llama, qwen2, qwen3) or a llama2.c checkpoint into a Hugging\n"
               "Face checkpoint directory (config.json, model.safetensors, tokenizer.json,\n"
               "tokenizer_config.json), written atomically.\n"
               "  -d, --dtype TYPE      GGUF: dtype of model.safetensors (f32 default, bf16, f16)\n"
               "  -t, --tokenizer FILE  llama2.c tokenizer.bin (writes tokenizer.json too)\n"
               "  -h, --help            this help\n");
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    const char *tok_path = NULL, *dtype = NULL;
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "t:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            tok_path = optarg;
            break;
        case 'd':
            dtype = optarg;
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
    const char *in = argv[optind], *out = argv[optind + 1];
    if (as_file_is_gguf(in)) {
        if (tok_path)
            as_die("%s: --tokenizer is for llama2.c checkpoints (a GGUF carries its own)", in);
        enum as_dtype dt = AS_F32;
        if (dtype) {
            if (!strcmp(dtype, "f32"))
                dt = AS_F32;
            else if (!strcmp(dtype, "bf16"))
                dt = AS_BF16;
            else if (!strcmp(dtype, "f16"))
                dt = AS_F16;
            else
                as_die("--dtype %s: expected f32, bf16 or f16", dtype);
        }
        if (as_gguf_import_hf(in, out, dt) != 0) as_die_last();
        return 0;
    }
    if (dtype) as_die("%s: --dtype is for GGUF input (llama2.c checkpoints are written f32)", in);
    struct as_l2c_model m;
    if (as_l2c_load(in, &m) != 0) as_die_last();
    struct as_l2c_tokenizer tok;
    if (tok_path && as_l2c_tokenizer_load(tok_path, m.cfg.vocab_size, &tok) != 0) as_die_last();
    int rc = as_l2c_export_hf(&m, tok_path ? &tok : NULL, out);
    if (tok_path) as_l2c_tokenizer_free(&tok);
    as_l2c_free(&m);
    if (rc != 0) as_die_last();
    return 0;
}

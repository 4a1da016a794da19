/* as-prune: training-free sparsification. One program, one subcommand per concern (the table
 * below): offline sparse-attention pattern search and analysis, and token pruning/merging. */
#include <stdio.h>
#include <string.h>

#include "as-prune.h"
#include "as_error.h"

static const struct prune_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} prune_commands[] = {
    {"search", as_prune_cmd_search, "search per-layer/per-head sparse-attention patterns"},
    {"analyze", as_prune_cmd_analyze, "density and attention-mass recall of a sparse config"},
    {"tokens", as_prune_cmd_tokens, "prune or merge tokens of a feature stream"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: as-prune COMMAND [options]   (as-prune COMMAND --help for each)\n");
    for (size_t i = 0; i < sizeof prune_commands / sizeof prune_commands[0]; i++)
        fprintf(f, "  %-8s %s\n", prune_commands[i].name, prune_commands[i].summary);
}

int main(int argc, char **argv) {
    as_set_progname(argv[0]);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof prune_commands / sizeof prune_commands[0]; i++)
        if (!strcmp(argv[1], prune_commands[i].name))
            return prune_commands[i].run(argc - 1, argv + 1);
    as_die("unknown command '%s' (as-prune --help lists them)", argv[1]);
}

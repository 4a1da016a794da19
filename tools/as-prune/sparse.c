/* as-prune search / analyze: placeholder until the sparse-attention work lands (issue 20). */
#include "as-prune.h"
#include "as_error.h"

int as_prune_cmd_search(int argc, char **argv) {
    (void)argc;
    as_die("%s: not built yet", argv[0]);
}

int as_prune_cmd_analyze(int argc, char **argv) {
    (void)argc;
    as_die("%s: not built yet", argv[0]);
}

/* as-prune tokens: placeholder until the token-pruning work lands (issue 21). */
#include "as-prune.h"
#include "as_error.h"

int as_prune_cmd_tokens(int argc, char **argv) {
    (void)argc;
    as_die("%s: not built yet", argv[0]);
}

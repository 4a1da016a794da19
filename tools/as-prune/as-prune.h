/* as-prune subcommands. Each lives in its own file of this directory and is one row of the
 * table in as-prune.c: sparse-attention pattern search and analysis (sparse.c), token pruning and
 * merging on tensor streams (tokens.c). Each takes the arguments after the subcommand name
 * (argv[0] is the subcommand) and returns the process exit status. */
#ifndef AS_PRUNE_CMDS_H
#define AS_PRUNE_CMDS_H

int as_prune_cmd_search(int argc, char **argv);
int as_prune_cmd_analyze(int argc, char **argv);
int as_prune_cmd_tokens(int argc, char **argv);

#endif

/* cli_args: strict parsing of numeric command-line arguments.
 *
 * atoi("abc") is 0 and atoi("4x") is 4, so a mistyped option would run with a value the user
 * never gave and fail later with a misleading message ("--bits 0: expected 2..8"). These parse
 * the whole argument or end the program with one line naming the argument as typed. Range checks
 * stay with the tools, which know what each option allows. */
#ifndef AS_CLI_ARGS_H
#define AS_CLI_ARGS_H

int as_arg_int(const char *arg);                /* a whole decimal integer that fits an int */
double as_arg_double(const char *arg);          /* a whole finite decimal number */
unsigned long long as_arg_u64(const char *arg); /* a whole non-negative decimal integer */

#endif

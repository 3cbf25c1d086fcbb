/*
 * cli.h — what the `driftwood` command's files share: exit codes and the
 * subcommand entry points (each takes main's argc/argv).
 */
#ifndef DW_CLI_H
#define DW_CLI_H

#define DW_EXIT_USAGE 126

int dw_cli_tokenize(int argc, char **argv);
int dw_cli_generate(int argc, char **argv);
int dw_cli_actor(int argc, char **argv);
int dw_cli_serve(int argc, char **argv);

/* --timeout's value: seconds ("2", "0.5", "2s") or milliseconds ("1500ms"),
 * more than zero. Returns 0 (and says why on stderr) when it is not one. */
int dw_cli_parse_timeout(const char *text, unsigned long long *ms);

#endif

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

#endif

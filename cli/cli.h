/* The client-side commands of the one binary (docs/cli.md): they talk to a running
 * agent through the client library, never link agent code, and make up `leasekeeper-static`
 * with main.c. Each returns the process exit status. */
#ifndef LK_CLI_CLI_H
#define LK_CLI_CLI_H

/* drain: 0 all released, 1 not all, 2 could not ask. */
int lk_cli_drain(int argc, char **argv);
int lk_cli_status(int argc, char **argv);
int lk_cli_watch(int argc, char **argv);
int lk_cli_run(int argc, char **argv);

#endif

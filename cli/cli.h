/* The client-side commands of the one binary (docs/cli.md): they talk to a running
 * agent through the client library, never link agent code, and make up `leasekeeper-static`
 * with main.c. Each returns the process exit status. */
#ifndef LK_CLI_CLI_H
#define LK_CLI_CLI_H

#include <stdbool.h>

struct json_t;
struct lk_event;
struct option;

/* The exit status of every command, the one table docs/cli.md ("Exit status") and the README
 * repeat. A script (a preStop hook above all) must tell "the agent said no" from "the agent
 * was never asked" from "the command line is wrong", so each meaning has one code whatever the
 * command. `run` also passes CMD's own status through, and 128 + N for a signal N. */
enum lk_cli_exit {
	/* Done: every lock released, the status printed, the watched agent closed the
	 * connection, the config valid. */
	LK_EXIT_OK = 0,
	/* The agent took the request, but the outcome is a failure: a drain that left a lock to
	 * expire or failed to release it, or whose result did not come in time; the agent going
	 * away under `run`; an answer that is not protocol; an invalid config; an agent that
	 * could not start or drain cleanly. */
	LK_EXIT_FAILED = 1,
	/* The agent could not be asked, or refused the request: no socket, nobody listening,
	 * the connection refused (too_many_clients, auth_failed), no reply within 10 s, or an ERR
	 * reply to the request itself (unknown_lock, draining). Nothing was done. */
	LK_EXIT_NOT_ASKED = 2,
	/* sysexits.h's EX_USAGE: the command line is wrong (the message says what); nothing was
	 * tried. Kept apart from 2 so that a typo in a hook never reads as "agent gone". */
	LK_EXIT_USAGE = 64,
};

/* drain: 0 all released, 1 not all, 2 could not ask, 64 usage. */
int lk_cli_drain(int argc, char **argv);
int lk_cli_status(int argc, char **argv);
int lk_cli_watch(int argc, char **argv);
int lk_cli_run(int argc, char **argv);

/* Usage errors (usage.c). Each prints "leasekeeper CMD: <what is wrong>", the command's
 * synopsis (the first paragraph of usage) and where --help is, on stderr, and returns
 * LK_EXIT_USAGE. */
int lk_cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* After getopt_long (with opterr = 0 and a ':' leading optstring) returned ch, '?' or ':':
 * names the unknown option, the option that lacks its value, or the one given a value it does
 * not take. */
int lk_cli_option_error(const char *cmd, const char *usage, int ch,
                        const struct option *opts, char **argv);

/* Output (output.c). Every function writes to stdout and returns 0, or -1 if stdout failed
 * (a closed pipe, a full disk) or, for YAML, the emitter did. */

/* The STATUS document (all pages merged) as a table whose columns are as wide as their
 * widest cell. wide: also until_mono_ms and the hold-off as columns. headers: the identity and
 * client lines and the column names; without them, one line per lock and nothing else. */
int lk_cli_print_status_table(struct json_t *root, bool wide, bool headers);
/* The same document as YAML (block style, keys in the JSON's order). Not in the client-only
 * build, which links no YAML library: `status` refuses -o yaml there before asking. */
#ifndef LK_CLIENT_ONLY
int lk_cli_print_yaml(struct json_t *root);
#endif
/* One event as `watch` prints it, with the time it arrived: a line "<RFC 3339 UTC ms> <the
 * protocol line>", or with json one JSON object on one line. */
int lk_cli_print_event(const struct lk_event *ev, bool json);

#endif

/* leasekeeper: one binary, several commands. This file only dispatches and handles the two
 * commands that need no agent (check-config, version) plus `agent` itself. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/agent.h"
#include "cli/cli.h"
#include "agent/config.h"
#include "agent/log.h"

static const char usage_main[] =
	"usage: leasekeeper COMMAND [OPTIONS]\n"
	"\n"
	"Holds leader locks (Redis, etcd) for an app and hands them over cleanly on shutdown.\n"
	"\n"
	"commands:\n"
	"  agent -c FILE             run the agent in the foreground (logs on stderr)\n"
	"  drain [-s SOCK] [--timeout DUR]\n"
	"                            drain the agent (for preStop)\n"
	"  status [-s SOCK] [-o wide|json|yaml] [--no-headers] [LOCK]\n"
	"                            show the agent's locks\n"
	"  watch [-s SOCK] [-o json] [LOCK]\n"
	"                            print lock events as they happen, with their time\n"
	"  run [-s SOCK] --lock NAME -- CMD [ARG...]\n"
	"                            run CMD only while this replica leads NAME\n"
	"  check-config -c FILE      validate a config file\n"
	"  version                   print the version\n"
	"\n"
	"exit status: 0 done; 1 the agent was asked and the outcome is a failure (a lock not\n"
	"released, an invalid config...); 2 the agent could not be asked or refused the request;\n"
	"64 usage error; run also exits with CMD's own status.\n"
	"\n"
	"Run 'leasekeeper COMMAND --help' for a command's options. The socket defaults to\n"
	"$LEASEKEEPER_SOCKET, then /run/leasekeeper/agent.sock; $LEASEKEEPER_AUTH_KEY_FILE names\n"
	"the key for agents that require HMAC authentication.\n";

static int want_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return 0;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
			return 1;
	}
	return 0;
}

#ifndef LK_CLIENT_ONLY
static const char usage_agent[] =
	"usage: leasekeeper agent -c FILE [--log-level debug|info|warn|error]\n"
	"\n"
	"Run the agent in the foreground with the YAML config FILE. SIGTERM or SIGINT start the\n"
	"drain; SIGQUIT logs a state dump. Exits 0 after a drain that released every lock, 1\n"
	"otherwise (or when the config is invalid or the agent cannot start), 64 for a usage\n"
	"error.\n";

static const char usage_check[] =
	"usage: leasekeeper check-config -c FILE\n"
	"\n"
	"Validate FILE. Prints every problem as FILE:LINE:COL: FIELD: MESSAGE and exits 1, or\n"
	"exits 0 if the config is valid (warnings are printed but do not fail it); 64 for a usage\n"
	"error.\n";

/* Parse "-c FILE" (and --log-level for the agent). Returns 0, or LK_EXIT_USAGE having said
 * what is wrong. */
static int parse_config_args(int argc, char **argv, const char *cmd, const char *usage,
                             const char **ret_path, enum lk_log_level *ret_level)
{
	static const struct option agent_opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "log-level", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	/* check-config has no --log-level. */
	static const struct option check_opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	const struct option *opts = ret_level ? agent_opts : check_opts;
	enum lk_log_level level = LK_INFO;
	const char *path = NULL;
	int ch;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":c:", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'l':
			if (strcmp(optarg, "debug") == 0)
				level = LK_DEBUG;
			else if (strcmp(optarg, "info") == 0)
				level = LK_INFO;
			else if (strcmp(optarg, "warn") == 0)
				level = LK_WARN;
			else if (strcmp(optarg, "error") == 0)
				level = LK_ERROR;
			else
				return lk_cli_usage_error(cmd, usage, "--log-level \"%s\" is not one of "
				                          "debug, info, warn, error", optarg);
			break;
		default:
			return lk_cli_option_error(cmd, usage, ch, opts, argv);
		}
	}
	if (optind != argc)
		return lk_cli_usage_error(cmd, usage, "unexpected argument \"%s\"", argv[optind]);
	if (!path || !path[0])
		return lk_cli_usage_error(cmd, usage, "-c FILE is required");
	*ret_path = path;
	if (ret_level)
		*ret_level = level;
	return 0;
}

static void print_diags(const struct lk_config_diags *d)
{
	for (size_t i = 0; i < d->n_errors; i++)
		fprintf(stderr, "%s\n", d->errors[i]);
	for (size_t i = 0; i < d->n_warnings; i++)
		fprintf(stderr, "%s\n", d->warnings[i]);
}

static int cmd_check_config(int argc, char **argv)
{
	struct lk_config_diags diags = { 0 };
	struct lk_config *cfg = NULL;
	const char *path = NULL;
	int rc;

	if (want_help(argc, argv)) {
		fputs(usage_check, stdout);
		return 0;
	}
	rc = parse_config_args(argc, argv, "check-config", usage_check, &path, NULL);
	if (rc)
		return rc;
	rc = lk_config_load(path, &cfg, &diags);
	print_diags(&diags);
	lk_config_diags_clear(&diags);
	if (rc < 0)
		return 1;
	printf("%s: ok (%zu backend%s, %zu lock%s)\n", path, cfg->n_backends,
	       cfg->n_backends == 1 ? "" : "s", cfg->n_locks, cfg->n_locks == 1 ? "" : "s");
	lk_config_free(cfg);
	return 0;
}

static int cmd_agent(int argc, char **argv)
{
	struct lk_config_diags diags = { 0 };
	struct lk_config *cfg = NULL;
	enum lk_log_level level = LK_INFO;
	const char *path = NULL;
	int rc;

	if (want_help(argc, argv)) {
		fputs(usage_agent, stdout);
		return 0;
	}
	rc = parse_config_args(argc, argv, "agent", usage_agent, &path, &level);
	if (rc)
		return rc;
	rc = lk_config_load(path, &cfg, &diags);
	if (rc < 0) {
		/* No config, no log format: plain lines, as check-config prints them. */
		print_diags(&diags);
		lk_config_diags_clear(&diags);
		return 1;
	}
	lk_log_setup(cfg->log_format, level, NULL);
	for (size_t i = 0; i < diags.n_warnings; i++)
		LK_LOG(LK_WARN, "config warning", LKF_STR("warning", diags.warnings[i]));
	lk_config_diags_clear(&diags);
	rc = lk_agent_run(cfg);
	lk_config_free(cfg);
	return rc;
}
#else
/* The static client-only build (build/leasekeeper-static) is what an app container runs from
 * the shared volume, e.g. `leasekeeper drain` in a preStop hook: it carries none of the agent's
 * libraries, so it runs in any Linux image. */
static int not_in_this_build(int argc, char **argv)
{
	fprintf(stderr, "leasekeeper %s: not in the client-only build (drain, status, watch, "
	        "run, version);\nrun the agent and check-config with the full binary\n", argv[0]);
	return LK_EXIT_USAGE;
}
#define cmd_check_config not_in_this_build
#define cmd_agent not_in_this_build
#endif

static int cmd_version(int argc, char **argv)
{
	static const char usage[] =
		"usage: leasekeeper version\n\nPrint the version and the protocol version.\n";

	if (want_help(argc, argv)) {
		fputs(usage, stdout);
		return LK_EXIT_OK;
	}
	if (argc > 1 && argv[1][0] == '-')
		return lk_cli_usage_error("version", usage, "unknown option %s", argv[1]);
	if (argc > 1)
		return lk_cli_usage_error("version", usage, "unexpected argument \"%s\"", argv[1]);
	printf("leasekeeper %s (protocol 1)\n", LK_VERSION);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} cmds[] = {
		{ "agent", cmd_agent },
		{ "drain", lk_cli_drain },
		{ "status", lk_cli_status },
		{ "watch", lk_cli_watch },
		{ "run", lk_cli_run },
		{ "check-config", cmd_check_config },
		{ "version", cmd_version },
	};

	if (argc < 2) {
		fprintf(stderr, "leasekeeper: a COMMAND is required\n\n%s", usage_main);
		return LK_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		fputs(usage_main, stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0)
		return cmd_version(1, argv);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "leasekeeper: unknown command \"%s\"\n\n%s", argv[1], usage_main);
	return LK_EXIT_USAGE;
}

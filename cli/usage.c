/* Usage errors: what is wrong, the synopsis, and where the help is, like kubectl and git do,
 * instead of the whole help text with nothing said about what was wrong. */
#include "cli/cli.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lk_cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
{
	const char *end = strstr(usage, "\n\n");
	va_list ap;

	fprintf(stderr, "leasekeeper %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	/* The synopsis is the usage's first paragraph (one or a few lines). */
	fprintf(stderr, "\n%.*s\nRun 'leasekeeper %s --help' for more.\n",
	        end ? (int)(end - usage) : (int)strcspn(usage, "\n"), usage, cmd);
	return LK_EXIT_USAGE;
}

/* The long option named by arg ("--name" or "--name=value"), or NULL. */
static const struct option *find_long(const struct option *opts, const char *arg)
{
	size_t n;

	if (strncmp(arg, "--", 2) != 0)
		return NULL;
	arg += 2;
	n = strcspn(arg, "=");
	for (; opts->name; opts++)
		if (strlen(opts->name) == n && strncmp(opts->name, arg, n) == 0)
			return opts;
	return NULL;
}

int lk_cli_option_error(const char *cmd, const char *usage, int ch,
                        const struct option *opts, char **argv)
{
	/* getopt_long has moved optind past the element it complained about, except in the
	 * middle of a cluster of short options (-xy), where optopt says which one. */
	const char *arg = optind > 0 ? argv[optind - 1] : "";
	const struct option *lo = find_long(opts, arg);
	int n = (int)strcspn(arg, "=");

	if (ch == ':') {
		if (lo || (arg[0] == '-' && arg[1] == optopt && arg[2] == '\0'))
			return lk_cli_usage_error(cmd, usage, "option %.*s needs a value", n, arg);
		return lk_cli_usage_error(cmd, usage, "option -%c needs a value", optopt);
	}
	if (optopt != 0 && lo && lo->val == optopt && lo->has_arg == no_argument)
		return lk_cli_usage_error(cmd, usage, "option --%s takes no value", lo->name);
	if (optopt != 0)
		return lk_cli_usage_error(cmd, usage, "unknown option -%c", optopt);
	return lk_cli_usage_error(cmd, usage, "unknown option %.*s", n, arg);
}

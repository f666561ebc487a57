/* Client-side commands: drain, status, watch (and run, in wrap.c). */
#include "cli/cli.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/duration.h"
#include "proto/client.h"
#include "proto/codec.h"

#define EXIT_NOT_ASKED 2

static const char usage_drain[] =
	"usage: leasekeeper drain [-s SOCKET] [--timeout DURATION]\n"
	"\n"
	"Ask the agent to drain (step down, release every lock, stop its apps) and wait for the\n"
	"result: this is what a preStop hook runs. Exits 0 if every held lock was released, 1 if\n"
	"some lock was left to expire or failed (or the wait timed out), 2 if the agent could not\n"
	"be asked.\n";

static const char usage_status[] =
	"usage: leasekeeper status [-s SOCKET] [--json] [LOCK]\n"
	"\n"
	"Show the agent's identity and its locks (every lock, or LOCK alone): state, token, holder,\n"
	"proven ttl left.\n";

static const char usage_watch[] =
	"usage: leasekeeper watch [-s SOCKET] [LOCK]\n"
	"\n"
	"Print the events of LOCK (default: every lock) as they happen, one per line, until the\n"
	"agent goes away.\n";

struct common_opts {
	const char *socket;
	const char *timeout;
	bool json;
	int argi;              /* first positional argument */
};

/* Parse -s/--socket plus what the command allows. Returns 0 or EXIT_NOT_ASKED after printing
 * usage. --help prints to stdout and returns -1 (exit 0). */
static int parse_opts(int argc, char **argv, const char *usage, bool allow_timeout,
                      bool allow_json, struct common_opts *o)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	*o = (struct common_opts){ 0 };
	optind = 1;
	while ((ch = getopt_long(argc, argv, "s:h", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			o->socket = optarg;
			break;
		case 't':
			if (!allow_timeout)
				goto usage;
			o->timeout = optarg;
			break;
		case 'j':
			if (!allow_json)
				goto usage;
			o->json = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return -1;
		default:
			goto usage;
		}
	}
	o->argi = optind;
	return 0;
usage:
	fputs(usage, stderr);
	return EXIT_NOT_ASKED;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_agent(const char *socket, const char *name, struct lk_client **ret)
{
	struct lk_client_opts co = { .socket_path = socket, .client_name = name };
	char err[512];
	int rc = lk_client_connect(&co, ret, err, sizeof(err));

	if (rc < 0)
		fprintf(stderr, "leasekeeper %s: cannot talk to the agent at %s: %s\n", name,
		        lk_client_socket_path(socket), err);
	return rc;
}

/* Send a request that takes no argument and expect OK; print why not. */
static int simple_call(struct lk_client *c, const char *cmd, enum lk_verb verb,
                       struct lk_server_msg *reply)
{
	int rc = lk_client_call(c, &(struct lk_request){ .verb = verb }, 10000, reply);

	if (rc < 0) {
		fprintf(stderr, "leasekeeper %s: no answer from the agent: %s\n", cmd, strerror(-rc));
		return rc;
	}
	if (reply->kind == LK_MSG_ERR) {
		fprintf(stderr, "leasekeeper %s: the agent said %s %s\n", cmd,
		        lk_err_name(reply->err), reply->err_text);
		return -EPROTO;
	}
	return 0;
}

int lk_cli_drain(int argc, char **argv)
{
	struct common_opts o;
	struct lk_client *c = NULL;
	struct lk_server_msg m;
	int64_t timeout_ms = -1;
	int rc = parse_opts(argc, argv, usage_drain, true, false, &o);

	if (rc)
		return rc < 0 ? 0 : rc;
	if (o.argi != argc) {
		fputs(usage_drain, stderr);
		return EXIT_NOT_ASKED;
	}
	if (o.timeout) {
		const char *why;
		if (lk_duration_parse(o.timeout, &timeout_ms, &why) < 0) {
			fprintf(stderr, "leasekeeper drain: --timeout \"%s\" %s\n", o.timeout, why);
			return EXIT_NOT_ASKED;
		}
	}
	if (connect_agent(o.socket, "drain", &c) < 0)
		return EXIT_NOT_ASKED;
	if (simple_call(c, "drain", LK_VERB_DRAIN, &m) < 0) {
		lk_client_free(c);
		return EXIT_NOT_ASKED;
	}
	/* From here on the drain is under way: whatever happens, the answer is 0 or 1. The
	 * timeout bounds the whole wait, however many events come before DRAINED. */
	int64_t until = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	for (;;) {
		int64_t left = until < 0 ? -1 : until - now_ms();
		if (until >= 0 && left < 0)
			left = 0;
		rc = lk_client_next_event(c, left > INT32_MAX ? INT32_MAX : (int)left, &m);
		if (rc == -ETIMEDOUT) {
			fprintf(stderr, "leasekeeper drain: no result within %s\n", o.timeout);
			rc = 1;
			break;
		}
		if (rc < 0) {
			fprintf(stderr, "leasekeeper drain: the agent went away before reporting (%s)\n",
			        strerror(-rc));
			rc = 1;
			break;
		}
		if (m.ev.kind != LK_EV_DRAINED)
			continue;
		printf("drained: released=%u expired=%u failed=%u elapsed_ms=%" PRId64 "\n",
		       m.ev.released, m.ev.expired, m.ev.failed, m.ev.elapsed_ms);
		rc = (m.ev.expired || m.ev.failed) ? 1 : 0;
		break;
	}
	lk_client_free(c);
	return rc;
}

static void print_status_table(json_t *root)
{
	json_t *locks, *l, *clients;
	size_t i;

	printf("identity: %s   draining: %s\n",
	       json_string_value(json_object_get(root, "identity")),
	       json_is_true(json_object_get(root, "draining")) ? "yes" : "no");
	clients = json_object_get(root, "clients");
	if (json_is_object(clients))
		printf("clients: %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT " slots (campaign %"
		       JSON_INTEGER_FORMAT ", watch %" JSON_INTEGER_FORMAT ", other %"
		       JSON_INTEGER_FORMAT ")\n",
		       json_integer_value(json_object_get(clients, "connected")),
		       json_integer_value(json_object_get(clients, "max_clients")),
		       json_integer_value(json_object_get(clients, "campaign")),
		       json_integer_value(json_object_get(clients, "watch")),
		       json_integer_value(json_object_get(clients, "other")));
	printf("\n");
	printf("%-24s %-10s %-14s %-18s %-24s %8s %7s\n", "LOCK", "BACKEND", "STATE", "TOKEN",
	       "HOLDER", "TTL_MS", "CLIENTS");
	locks = json_object_get(root, "locks");
	json_array_foreach(locks, i, l) {
		const char *holder = json_string_value(json_object_get(l, "holder"));
		printf("%-24s %-10s %-14s %-18" JSON_INTEGER_FORMAT " %-24s %8" JSON_INTEGER_FORMAT
		       " %7" JSON_INTEGER_FORMAT "\n",
		       json_string_value(json_object_get(l, "name")),
		       json_string_value(json_object_get(l, "backend")),
		       json_string_value(json_object_get(l, "state")),
		       json_integer_value(json_object_get(l, "token")), holder ? holder : "-",
		       json_integer_value(json_object_get(l, "ttl_ms")),
		       json_integer_value(json_object_get(l, "campaign_clients")));
		if (json_integer_value(json_object_get(l, "holdoff_ms")) > 0)
			printf("  holding off for %" JSON_INTEGER_FORMAT "ms: %s\n",
			       json_integer_value(json_object_get(l, "holdoff_ms")),
			       json_string_value(json_object_get(l, "holdoff_reason")) ?
			       json_string_value(json_object_get(l, "holdoff_reason")) : "?");
	}
	/* Only from an agent without STATUS after= (or one whose lock does not fit a line). */
	if (json_integer_value(json_object_get(root, "truncated")) > 0)
		printf("... and %" JSON_INTEGER_FORMAT " more locks that do not fit in one STATUS line\n",
		       json_integer_value(json_object_get(root, "truncated")));
}

/* One STATUS request (lock: STATUS lock=<lock>; after: the page after that lock); its JSON, a
 * new reference, or NULL having said why. */
static json_t *status_call(struct lk_client *c, const char *lock, const char *after)
{
	struct lk_server_msg m;
	json_error_t jerr;
	json_t *root;
	int rc = lk_client_call(c, &(struct lk_request){ .verb = LK_VERB_STATUS,
	                                                 .status_lock = lock, .after = after },
	                        10000, &m);

	if (rc < 0) {
		fprintf(stderr, "leasekeeper status: no answer from the agent: %s\n", strerror(-rc));
		return NULL;
	}
	if (m.kind == LK_MSG_ERR) {
		fprintf(stderr, "leasekeeper status: the agent said %s %s\n", lk_err_name(m.err),
		        m.err_text);
		return NULL;
	}
	root = json_loads(m.rest, 0, &jerr);
	if (!json_is_object(root) || !json_is_array(json_object_get(root, "locks"))) {
		fprintf(stderr, "leasekeeper status: the agent's answer is not a status: %s\n",
		        m.rest);
		json_decref(root);
		return NULL;
	}
	return root;
}

/* STATUS, then STATUS after=<next_after> for as long as the agent says more locks follow
 * (proto/PROTOCOL.md, "STATUS with many locks"), with every page's locks added to the first's.
 * An agent older than paging never says next_after: its one line is all there is. Each page
 * must move the cursor on, so a confused agent cannot keep us asking. NULL on failure. */
static json_t *status_all(struct lk_client *c)
{
	json_t *root = status_call(c, NULL, NULL), *page = NULL;
	char after[LK_LOCK_NAME_MAX + 1] = "";

	while (root) {
		const char *next = json_string_value(json_object_get(page ? page : root,
		                                                     "next_after"));

		if (!next || !lk_codec_lock_name_valid(next) || strcmp(next, after) == 0)
			break;
		snprintf(after, sizeof(after), "%s", next);
		json_decref(page);
		page = status_call(c, NULL, after);
		if (!page) {
			root = (json_decref(root), NULL);
			break;
		}
		json_array_extend(json_object_get(root, "locks"), json_object_get(page, "locks"));
		json_object_set(root, "draining", json_object_get(page, "draining"));
		if (json_object_get(page, "truncated"))
			json_object_set(root, "truncated", json_object_get(page, "truncated"));
		else
			json_object_del(root, "truncated");
	}
	if (root && page)
		json_object_del(root, "next_after");
	json_decref(page);
	return root;
}

/* STATUS lock=<lock>. An agent older than lock= ignores it and answers its first page: keep
 * the lock asked for alone, if it is there. NULL on failure. */
static json_t *status_one(struct lk_client *c, const char *lock)
{
	json_t *root = status_call(c, lock, NULL), *locks, *l, *keep;
	size_t i;

	if (!root)
		return NULL;
	locks = json_object_get(root, "locks");
	keep = json_array();
	json_array_foreach(locks, i, l)
		if (json_is_string(json_object_get(l, "name")) &&
		    strcmp(json_string_value(json_object_get(l, "name")), lock) == 0)
			json_array_append(keep, l);
	if (!keep || json_array_size(keep) == 0) {
		fprintf(stderr, "leasekeeper status: the agent did not report lock %s\n", lock);
		json_decref(keep);
		json_decref(root);
		return NULL;
	}
	json_object_set_new(root, "locks", keep);
	json_object_del(root, "truncated");
	json_object_del(root, "next_after");
	return root;
}

int lk_cli_status(int argc, char **argv)
{
	struct common_opts o;
	struct lk_client *c = NULL;
	const char *lock = NULL;
	json_t *root;
	char *s;
	int rc = parse_opts(argc, argv, usage_status, false, true, &o);

	if (rc)
		return rc < 0 ? 0 : rc;
	if (argc - o.argi > 1) {
		fputs(usage_status, stderr);
		return EXIT_NOT_ASKED;
	}
	if (o.argi < argc) {
		lock = argv[o.argi];
		if (!lk_codec_lock_name_valid(lock)) {
			fprintf(stderr, "leasekeeper status: %s is not a lock name "
			        "([A-Za-z0-9._-]{1,128})\n", lock);
			return EXIT_NOT_ASKED;
		}
	}
	if (connect_agent(o.socket, "status", &c) < 0)
		return EXIT_NOT_ASKED;
	root = lock ? status_one(c, lock) : status_all(c);
	lk_client_free(c);
	if (!root)
		return 1;
	if (o.json) {
		s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
		if (s)
			printf("%s\n", s);
		free(s);
	} else {
		print_status_table(root);
	}
	json_decref(root);
	return 0;
}

int lk_cli_watch(int argc, char **argv)
{
	struct common_opts o;
	struct lk_client *c = NULL;
	struct lk_server_msg m;
	const char *lock = "*";
	char line[LK_LINE_MAX];
	int rc = parse_opts(argc, argv, usage_watch, false, false, &o);

	if (rc)
		return rc < 0 ? 0 : rc;
	if (argc - o.argi > 1) {
		fputs(usage_watch, stderr);
		return EXIT_NOT_ASKED;
	}
	if (o.argi < argc)
		lock = argv[o.argi];
	if (connect_agent(o.socket, "watch", &c) < 0)
		return EXIT_NOT_ASKED;
	rc = lk_client_call(c, &(struct lk_request){ .verb = LK_VERB_WATCH, .lock = lock }, 10000,
	                    &m);
	if (rc < 0 || m.kind != LK_MSG_OK) {
		fprintf(stderr, "leasekeeper watch: %s\n",
		        rc < 0 ? strerror(-rc) : m.err_text);
		lk_client_free(c);
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((rc = lk_client_next_event(c, -1, &m)) == 0) {
		if (lk_codec_format_event(line, sizeof(line), &m.ev) > 0)
			fputs(line, stdout);
	}
	lk_client_free(c);
	return rc == -EPIPE ? 0 : 1;
}

/* Client-side commands: drain, status, watch (and run, in wrap.c). Exit codes: cli/cli.h. */
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

/* How long a request waits for its reply: an agent that takes longer is not answering. */
#define CALL_TIMEOUT_MS 10000

static const char usage_drain[] =
	"usage: leasekeeper drain [-s SOCKET] [--timeout DURATION]\n"
	"\n"
	"Ask the agent to drain (step down, release every lock, stop its apps) and wait for the\n"
	"result: this is what a preStop hook runs. Exits 0 if every held lock was released, 1 if\n"
	"some lock was left to expire or failed (or the wait timed out), 2 if the agent could not\n"
	"be asked, 64 for a usage error.\n";

static const char usage_status[] =
	"usage: leasekeeper status [-s SOCKET] [-o wide|json|yaml] [--no-headers] [LOCK]\n"
	"\n"
	"Show the agent's identity and its locks (every lock, or LOCK alone): state, token,\n"
	"holder, proven ttl left, as a table whose columns fit their content.\n"
	"  -o wide        also the tenure's deadline (CLOCK_MONOTONIC ms) and the hold-off\n"
	"  -o json        the agent's STATUS as one line of JSON (--json is the same)\n"
	"  -o yaml        the same document as YAML\n"
	"  --no-headers   the table's lock lines alone, for scripts\n";

static const char usage_watch[] =
	"usage: leasekeeper watch [-s SOCKET] [-o json] [LOCK]\n"
	"\n"
	"Print the events of LOCK (default: every lock) as they happen, one per line, each after\n"
	"the time it arrived (RFC 3339, UTC, milliseconds), until the agent goes away.\n"
	"  -o json        one JSON object per line: ts, event, lock and the event's fields\n";

/* status's -o (watch has only json). */
enum lk_cli_output { LK_OUT_TABLE, LK_OUT_WIDE, LK_OUT_JSON, LK_OUT_YAML };

struct common_opts {
	const char *socket;
	const char *timeout;
	const char *output;    /* -o as given, checked by the command */
	bool no_headers;
	int argi;              /* first positional argument */
};

/* Each command's options: -s and --help for all, the others where they mean something. */
#define COMMON_OPTS { "socket", required_argument, NULL, 's' }, \
	{ "help", no_argument, NULL, 'h' }
static const struct option drain_opts[] = {
	COMMON_OPTS,
	{ "timeout", required_argument, NULL, 't' },
	{ NULL, 0, NULL, 0 },
};
static const struct option status_opts[] = {
	COMMON_OPTS,
	{ "output", required_argument, NULL, 'o' },
	{ "json", no_argument, NULL, 'j' },
	{ "no-headers", no_argument, NULL, 'H' },
	{ NULL, 0, NULL, 0 },
};
static const struct option watch_opts[] = {
	COMMON_OPTS,
	{ "output", required_argument, NULL, 'o' },
	{ NULL, 0, NULL, 0 },
};

/* Parse argv with opts (short options: -s, -h, and -o where opts has --output). Returns 0,
 * -1 after printing the help on stdout (exit 0), or LK_EXIT_USAGE having said what is wrong. */
static int parse_opts(int argc, char **argv, const char *cmd, const char *usage,
                      const struct option *opts, struct common_opts *o)
{
	/* A leading ':' makes a missing value ':' rather than '?', to say which it was. */
	const char *shorts = opts == drain_opts ? ":s:h" : ":s:ho:";
	int ch;

	*o = (struct common_opts){ 0 };
	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (!optarg[0])
				return lk_cli_usage_error(cmd, usage, "the socket path (-s) is empty");
			o->socket = optarg;
			break;
		case 't':
			o->timeout = optarg;
			break;
		case 'o':
			o->output = optarg;
			break;
		case 'j':
			o->output = "json";
			break;
		case 'H':
			o->no_headers = true;
			break;
		case 'h':
			fputs(usage, stdout);
			return -1;
		default:
			return lk_cli_option_error(cmd, usage, ch, opts, argv);
		}
	}
	o->argi = optind;
	return 0;
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

/* Send req and expect OK. Returns LK_EXIT_OK with the reply in *reply, or the exit status
 * having said why not: LK_EXIT_NOT_ASKED when no reply came (none within the timeout, the
 * agent closed the connection) or the agent refused with ERR, whose line is shown as the agent
 * sent it; LK_EXIT_FAILED for an answer that is not protocol. */
static int call(struct lk_client *c, const char *cmd, const struct lk_request *req,
                struct lk_server_msg *reply)
{
	char what[LK_LINE_MAX];
	int rc = lk_client_call(c, req, CALL_TIMEOUT_MS, reply);
	int n = lk_codec_format_request(what, sizeof(what), req);

	if (n <= 0)
		snprintf(what, sizeof(what), "%s", lk_verb_name(req->verb));
	else
		what[n - 1] = '\0'; /* the newline */
	if (rc == -EPROTO) {
		fprintf(stderr, "leasekeeper %s: the agent's answer to %s is not protocol\n", cmd,
		        what);
		return LK_EXIT_FAILED;
	}
	if (rc == -ETIMEDOUT) {
		fprintf(stderr, "leasekeeper %s: no answer from the agent to %s within %d s\n", cmd,
		        what, CALL_TIMEOUT_MS / 1000);
		return LK_EXIT_NOT_ASKED;
	}
	if (rc < 0) {
		fprintf(stderr, "leasekeeper %s: no answer from the agent to %s: %s\n", cmd, what,
		        rc == -EPIPE ? "it closed the connection" : strerror(-rc));
		return LK_EXIT_NOT_ASKED;
	}
	if (reply->kind == LK_MSG_ERR) {
		fprintf(stderr, "leasekeeper %s: the agent refused %s: ERR %s%s%s\n", cmd, what,
		        lk_err_name(reply->err), reply->err_text[0] ? " " : "", reply->err_text);
		return LK_EXIT_NOT_ASKED;
	}
	return LK_EXIT_OK;
}

int lk_cli_drain(int argc, char **argv)
{
	struct common_opts o;
	struct lk_client *c = NULL;
	struct lk_server_msg m;
	int64_t timeout_ms = -1;
	int rc = parse_opts(argc, argv, "drain", usage_drain, drain_opts, &o);

	if (rc)
		return rc < 0 ? LK_EXIT_OK : rc;
	if (o.argi != argc)
		return lk_cli_usage_error("drain", usage_drain, "unexpected argument \"%s\" (drain "
		                          "takes none)", argv[o.argi]);
	if (o.timeout) {
		const char *why;
		if (lk_duration_parse(o.timeout, &timeout_ms, &why) < 0)
			return lk_cli_usage_error("drain", usage_drain, "--timeout \"%s\" %s",
			                          o.timeout, why);
	}
	if (connect_agent(o.socket, "drain", &c) < 0)
		return LK_EXIT_NOT_ASKED;
	rc = call(c, "drain", &(struct lk_request){ .verb = LK_VERB_DRAIN }, &m);
	if (rc != LK_EXIT_OK) {
		/* The preStop contract: whatever went wrong before the drain was under way, the
		 * agent was not asked. */
		lk_client_free(c);
		return LK_EXIT_NOT_ASKED;
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
			rc = LK_EXIT_FAILED;
			break;
		}
		if (rc < 0) {
			fprintf(stderr, "leasekeeper drain: the agent went away before reporting (%s)\n",
			        strerror(-rc));
			rc = LK_EXIT_FAILED;
			break;
		}
		if (m.ev.kind != LK_EV_DRAINED)
			continue;
		printf("drained: released=%u expired=%u failed=%u elapsed_ms=%" PRId64 "\n",
		       m.ev.released, m.ev.expired, m.ev.failed, m.ev.elapsed_ms);
		rc = (m.ev.expired || m.ev.failed) ? LK_EXIT_FAILED : LK_EXIT_OK;
		break;
	}
	lk_client_free(c);
	return rc;
}

/* One STATUS request (lock: STATUS lock=<lock>; after: the page after that lock). Returns
 * LK_EXIT_OK with its JSON, a new reference, in *ret, or the exit status having said why not. */
static int status_call(struct lk_client *c, const char *lock, const char *after, json_t **ret)
{
	struct lk_server_msg m;
	json_error_t jerr;
	json_t *root;
	int rc = call(c, "status", &(struct lk_request){ .verb = LK_VERB_STATUS,
	                                                  .status_lock = lock, .after = after }, &m);

	if (rc != LK_EXIT_OK)
		return rc;
	root = json_loads(m.rest, 0, &jerr);
	if (!json_is_object(root) || !json_is_array(json_object_get(root, "locks"))) {
		fprintf(stderr, "leasekeeper status: the agent's answer is not a status: %s\n",
		        m.rest);
		json_decref(root);
		return LK_EXIT_FAILED;
	}
	*ret = root;
	return LK_EXIT_OK;
}

/* STATUS, then STATUS after=<next_after> for as long as the agent says more locks follow
 * (proto/PROTOCOL.md, "STATUS with many locks"), with every page's locks added to the first's.
 * An agent older than paging never says next_after: its one line is all there is. Each page
 * must move the cursor on, so a confused agent cannot keep us asking. */
static int status_all(struct lk_client *c, json_t **ret)
{
	json_t *root = NULL, *page = NULL;
	char after[LK_LOCK_NAME_MAX + 1] = "";
	int rc = status_call(c, NULL, NULL, &root);

	while (rc == LK_EXIT_OK) {
		const char *next = json_string_value(json_object_get(page ? page : root,
		                                                     "next_after"));

		if (!next || !lk_codec_lock_name_valid(next) || strcmp(next, after) == 0)
			break;
		snprintf(after, sizeof(after), "%s", next);
		json_decref(page);
		page = NULL;
		rc = status_call(c, NULL, after, &page);
		if (rc != LK_EXIT_OK)
			break;
		json_array_extend(json_object_get(root, "locks"), json_object_get(page, "locks"));
		json_object_set(root, "draining", json_object_get(page, "draining"));
		if (json_object_get(page, "truncated"))
			json_object_set(root, "truncated", json_object_get(page, "truncated"));
		else
			json_object_del(root, "truncated");
	}
	json_decref(page);
	if (rc != LK_EXIT_OK) {
		json_decref(root);
		return rc;
	}
	json_object_del(root, "next_after");
	*ret = root;
	return LK_EXIT_OK;
}

/* STATUS lock=<lock>. An agent older than lock= ignores it and answers its first page: keep
 * the lock asked for alone, if it is there; if not, that agent does not know it, which is what
 * a current one says with ERR unknown_lock, and it exits the same. */
static int status_one(struct lk_client *c, const char *lock, json_t **ret)
{
	json_t *root = NULL, *locks, *l, *keep;
	size_t i;
	int rc = status_call(c, lock, NULL, &root);

	if (rc != LK_EXIT_OK)
		return rc;
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
		return LK_EXIT_NOT_ASKED;
	}
	json_object_set_new(root, "locks", keep);
	json_object_del(root, "truncated");
	json_object_del(root, "next_after");
	*ret = root;
	return LK_EXIT_OK;
}

static int parse_status_output(const char *s, enum lk_cli_output *ret)
{
	if (!s)
		*ret = LK_OUT_TABLE;
	else if (strcmp(s, "wide") == 0)
		*ret = LK_OUT_WIDE;
	else if (strcmp(s, "json") == 0)
		*ret = LK_OUT_JSON;
	else if (strcmp(s, "yaml") == 0)
		*ret = LK_OUT_YAML;
	else
		return -1;
	return 0;
}

int lk_cli_status(int argc, char **argv)
{
	enum lk_cli_output out;
	struct common_opts o;
	struct lk_client *c = NULL;
	const char *lock = NULL;
	json_t *root = NULL;
	char *s;
	int rc = parse_opts(argc, argv, "status", usage_status, status_opts, &o);

	if (rc)
		return rc < 0 ? LK_EXIT_OK : rc;
	if (parse_status_output(o.output, &out) < 0)
		return lk_cli_usage_error("status", usage_status, "-o \"%s\" is not an output format "
		                          "(wide, json or yaml)", o.output);
#ifdef LK_CLIENT_ONLY
	if (out == LK_OUT_YAML)
		return lk_cli_usage_error("status", usage_status, "-o yaml is not in the client-only "
		                          "build (no YAML library): use -o json or the full binary");
#endif
	if (argc - o.argi > 1)
		return lk_cli_usage_error("status", usage_status, "unexpected argument \"%s\" (status "
		                          "takes one LOCK at most)", argv[o.argi + 1]);
	if (o.argi < argc) {
		lock = argv[o.argi];
		if (!lk_codec_lock_name_valid(lock))
			return lk_cli_usage_error("status", usage_status, "\"%s\" is not a lock name (1 "
			                          "to 128 of A-Z a-z 0-9 . _ -)", lock);
	}
	if (connect_agent(o.socket, "status", &c) < 0)
		return LK_EXIT_NOT_ASKED;
	rc = lock ? status_one(c, lock, &root) : status_all(c, &root);
	lk_client_free(c);
	if (rc != LK_EXIT_OK)
		return rc;
	switch (out) {
	case LK_OUT_JSON:
		s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
		rc = s && printf("%s\n", s) > 0 && fflush(stdout) == 0 ? 0 : -1;
		free(s);
		break;
#ifndef LK_CLIENT_ONLY
	case LK_OUT_YAML:
		rc = lk_cli_print_yaml(root);
		break;
#endif
	default:
		rc = lk_cli_print_status_table(root, out == LK_OUT_WIDE, !o.no_headers);
		break;
	}
	json_decref(root);
	if (rc < 0) {
		fprintf(stderr, "leasekeeper status: cannot print the status\n");
		return LK_EXIT_FAILED;
	}
	return LK_EXIT_OK;
}

int lk_cli_watch(int argc, char **argv)
{
	struct common_opts o;
	struct lk_client *c = NULL;
	struct lk_server_msg m;
	const char *lock = "*";
	bool json = false;
	int rc = parse_opts(argc, argv, "watch", usage_watch, watch_opts, &o);

	if (rc)
		return rc < 0 ? LK_EXIT_OK : rc;
	if (o.output && strcmp(o.output, "json") != 0)
		return lk_cli_usage_error("watch", usage_watch, "-o \"%s\" is not an output format of "
		                          "watch (json)", o.output);
	json = o.output != NULL;
	if (argc - o.argi > 1)
		return lk_cli_usage_error("watch", usage_watch, "unexpected argument \"%s\" (watch "
		                          "takes one LOCK at most)", argv[o.argi + 1]);
	if (o.argi < argc) {
		lock = argv[o.argi];
		if (strcmp(lock, "*") != 0 && !lk_codec_lock_name_valid(lock))
			return lk_cli_usage_error("watch", usage_watch, "\"%s\" is not a lock name (1 "
			                          "to 128 of A-Z a-z 0-9 . _ -) nor *", lock);
	}
	if (connect_agent(o.socket, "watch", &c) < 0)
		return LK_EXIT_NOT_ASKED;
	rc = call(c, "watch", &(struct lk_request){ .verb = LK_VERB_WATCH, .lock = lock }, &m);
	if (rc != LK_EXIT_OK) {
		lk_client_free(c);
		return rc;
	}
	/* Each line as soon as it came: watch is read by people and by pipes alike. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((rc = lk_client_next_event(c, -1, &m)) == 0) {
		if (lk_cli_print_event(&m.ev, json) < 0) {
			fprintf(stderr, "leasekeeper watch: cannot print the events\n");
			lk_client_free(c);
			return LK_EXIT_FAILED;
		}
	}
	lk_client_free(c);
	/* The agent closing the connection is how a watch ends (it exited, or drained). */
	if (rc == -EPIPE)
		return LK_EXIT_OK;
	fprintf(stderr, "leasekeeper watch: %s\n", rc == -EPROTO ?
	        "the agent sent a line that is not protocol" : strerror(-rc));
	return LK_EXIT_FAILED;
}

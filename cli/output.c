/* What `status` and `watch` print: the status table with columns sized to their content, the
 * status as YAML, and watch's timestamped lines or JSON objects. No I/O but stdout. */
#include "cli/cli.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifndef LK_CLIENT_ONLY
#include <yaml.h>
#endif

#include "proto/codec.h"

/* Columns are three spaces apart, as kubectl sets them. */
#define COL_GAP 3

struct column {
	const char *title;
	const char *key;     /* the lock's field in the STATUS JSON */
	bool wide;           /* only with -o wide */
};

static const struct column columns[] = {
	{ "LOCK", "name", false },
	{ "BACKEND", "backend", false },
	{ "STATE", "state", false },
	{ "TOKEN", "token", false },
	{ "HOLDER", "holder", false },
	{ "TTL_MS", "ttl_ms", false },
	{ "CLIENTS", "campaign_clients", false },
	{ "UNTIL_MONO_MS", "until_mono_ms", true },
	{ "HOLDOFF_MS", "holdoff_ms", true },
	/* Free text with spaces: last, so that the columns before it still split on blanks. */
	{ "HOLDOFF_REASON", "holdoff_reason", true },
};
#define N_COLUMNS (sizeof(columns) / sizeof(columns[0]))

/* A JSON value as one cell: strings as they are, numbers in decimal, "-" for null or missing
 * (a holder nobody is known as, no hold-off reason). Returns buf or a borrowed string. */
static const char *cell_text(const json_t *v, char *buf, size_t cap)
{
	if (!v)
		return "-";
	switch (json_typeof(v)) {
	case JSON_STRING:
		return json_string_length(v) ? json_string_value(v) : "-";
	case JSON_INTEGER:
		snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return buf;
	case JSON_REAL:
		snprintf(buf, cap, "%.17g", json_real_value(v));
		return buf;
	case JSON_TRUE:
		return "true";
	case JSON_FALSE:
		return "false";
	default:
		return "-";
	}
}

/* Columns are measured in characters on the terminal: UTF-8 continuation bytes take no
 * column (an identity is a pod name, but nothing stops a holder's from being UTF-8). */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

/* Print s with control characters as '?': a holder's identity comes from the backend, and a
 * table must not let it move the cursor or clear the screen. pad: spaces to add after it. */
static void put_text(const char *s, size_t pad)
{
	for (; *s; s++)
		putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
	while (pad--)
		putchar(' ');
}

static const char *lock_cell(const json_t *l, size_t col, char *buf, size_t cap)
{
	return cell_text(json_object_get(l, columns[col].key), buf, cap);
}

static void print_row(const char *const cells[], const size_t width[], size_t n)
{
	for (size_t c = 0; c < n; c++) {
		size_t w = text_width(cells[c]);
		/* The last column is not padded: no trailing blanks. */
		put_text(cells[c], c + 1 < n ? width[c] - w + COL_GAP : 0);
	}
	putchar('\n');
}

static void print_preamble(const json_t *root)
{
	const json_t *cl = json_object_get(root, "clients"), *b;
	char buf[32];
	size_t i;

	fputs("identity: ", stdout);
	put_text(cell_text(json_object_get(root, "identity"), buf, sizeof(buf)), 0);
	printf("   draining: %s\n", json_is_true(json_object_get(root, "draining")) ? "yes" : "no");
	if (json_is_object(cl))
		printf("clients: %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT " slots (campaign %"
		       JSON_INTEGER_FORMAT ", watch %" JSON_INTEGER_FORMAT ", other %"
		       JSON_INTEGER_FORMAT ")\n",
		       json_integer_value(json_object_get(cl, "connected")),
		       json_integer_value(json_object_get(cl, "max_clients")),
		       json_integer_value(json_object_get(cl, "campaign")),
		       json_integer_value(json_object_get(cl, "watch")),
		       json_integer_value(json_object_get(cl, "other")));
	json_array_foreach(json_object_get(root, "backends"), i, b) {
		fputs("backend ", stdout);
		put_text(cell_text(json_object_get(b, "name"), buf, sizeof(buf)), 0);
		fputs(": ", stdout);
		put_text(cell_text(json_object_get(b, "type"), buf, sizeof(buf)), 0);
		putchar(' ');
		put_text(cell_text(json_object_get(b, "server"), buf, sizeof(buf)), 0);
		printf(", %s\n", json_is_true(json_object_get(b, "ready")) ? "ready" : "not ready");
	}
	putchar('\n');
}

static int stdout_ok(void)
{
	return fflush(stdout) == 0 && !ferror(stdout) ? 0 : -1;
}

int lk_cli_print_status_table(json_t *root, bool wide, bool headers)
{
	const json_t *locks = json_object_get(root, "locks"), *l;
	size_t n = 0, width[N_COLUMNS], i;
	const char *cells[N_COLUMNS];
	char bufs[N_COLUMNS][32];
	json_int_t truncated = json_integer_value(json_object_get(root, "truncated"));

	/* The wide columns come last: the table is a prefix of them. */
	while (n < N_COLUMNS && (wide || !columns[n].wide))
		n++;
	/* Two passes over the locks, measuring then printing, instead of keeping every cell:
	 * the numbers are formatted twice, the strings are borrowed from the JSON. */
	for (size_t c = 0; c < n; c++)
		width[c] = headers ? strlen(columns[c].title) : 0;
	json_array_foreach(locks, i, l)
		for (size_t c = 0; c < n; c++) {
			size_t w = text_width(lock_cell(l, c, bufs[c], sizeof(bufs[c])));
			if (w > width[c])
				width[c] = w;
		}
	if (headers) {
		print_preamble(root);
		for (size_t c = 0; c < n; c++)
			cells[c] = columns[c].title;
		print_row(cells, width, n);
	}
	json_array_foreach(locks, i, l) {
		json_int_t holdoff = json_integer_value(json_object_get(l, "holdoff_ms"));

		for (size_t c = 0; c < n; c++)
			cells[c] = lock_cell(l, c, bufs[c], sizeof(bufs[c]));
		print_row(cells, width, n);
		/* Without -o wide the hold-off has no column: a note under its lock, for people.
		 * --no-headers output is for scripts, one line per lock. */
		if (!wide && headers && holdoff > 0) {
			printf("  holding off for %" JSON_INTEGER_FORMAT "ms: ", holdoff);
			put_text(cell_text(json_object_get(l, "holdoff_reason"), bufs[0],
			                   sizeof(bufs[0])), 0);
			putchar('\n');
		}
	}
	/* Only from an agent without STATUS after= (or one whose lock does not fit a line). */
	if (truncated > 0)
		fprintf(headers ? stdout : stderr, "... and %" JSON_INTEGER_FORMAT " more locks that "
		        "do not fit in one STATUS line\n", truncated);
	return stdout_ok();
}

#ifndef LK_CLIENT_ONLY
/* Whether a YAML 1.1 or 1.2 reader could take s, written plain, for something other than a
 * string: a number (123, -1.5, .5, 0x1f, 1_000, 12:30, a date), a boolean (yes, Off, y...),
 * null (~, null) or a merge key. libyaml only checks that a plain scalar is well formed, not
 * what it would resolve to, so these are quoted. Anything starting with a digit is quoted,
 * which errs on the safe side. */
static bool plain_is_ambiguous(const char *s)
{
	static const char *const words[] = {
		"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~", "<<", "=",
	};
	const char *p = s;

	if (*p == '-' || *p == '+')
		p++;
	if (*p == '.')
		p++;
	if (*p >= '0' && *p <= '9')
		return true;
	if (strcasecmp(p, "inf") == 0 || strcasecmp(p, "nan") == 0)
		return true;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasecmp(s, words[i]) == 0)
			return true;
	return false;
}

/* Emit one event, then free it: libyaml takes it, emitted or not. */
static int emit(yaml_emitter_t *e, yaml_event_t *ev)
{
	return yaml_emitter_emit(e, ev) ? 0 : -1;
}

static int emit_scalar(yaml_emitter_t *e, const char *s, bool is_string)
{
	yaml_event_t ev;
	/* A string that would read back as something else loses its plain form: with no tag
	 * and plain_implicit off, libyaml quotes it. A number, a boolean or null stays plain. */
	int plain = !is_string || !plain_is_ambiguous(s);

	if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s),
	                                  plain, 1, YAML_ANY_SCALAR_STYLE))
		return -1;
	return emit(e, &ev);
}

/* JSON nests at most as deep as jansson parses (2048 levels): the recursion is bounded. */
static int emit_json(yaml_emitter_t *e, const json_t *v)
{
	yaml_event_t ev;
	const char *key;
	const json_t *x;
	char buf[64];
	size_t i;

	switch (json_typeof(v)) {
	case JSON_OBJECT:
		if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
		    emit(e, &ev) < 0)
			return -1;
		json_object_foreach((json_t *)v, key, x)
			if (emit_scalar(e, key, true) < 0 || emit_json(e, x) < 0)
				return -1;
		if (!yaml_mapping_end_event_initialize(&ev))
			return -1;
		return emit(e, &ev);
	case JSON_ARRAY:
		if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
		                                          YAML_BLOCK_SEQUENCE_STYLE) ||
		    emit(e, &ev) < 0)
			return -1;
		json_array_foreach(v, i, x)
			if (emit_json(e, x) < 0)
				return -1;
		if (!yaml_sequence_end_event_initialize(&ev))
			return -1;
		return emit(e, &ev);
	case JSON_STRING:
		return emit_scalar(e, json_string_value(v), true);
	case JSON_REAL:
		/* JSON has no inf or nan; %.17g of a whole number needs a ".0" to stay a float. */
		snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
		if (!strpbrk(buf, ".e"))
			strcat(buf, ".0");
		return emit_scalar(e, buf, false);
	case JSON_NULL:
		return emit_scalar(e, "null", false);
	default: /* an integer, true or false */
		return emit_scalar(e, cell_text(v, buf, sizeof(buf)), false);
	}
}

int lk_cli_print_yaml(json_t *root)
{
	yaml_emitter_t e;
	yaml_event_t ev;
	int rc = -1;

	if (!yaml_emitter_initialize(&e))
		return -1;
	yaml_emitter_set_output_file(&e, stdout);
	yaml_emitter_set_unicode(&e, 1);
	yaml_emitter_set_width(&e, -1); /* long reasons stay on one line */
	if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || emit(&e, &ev) < 0)
		goto out;
	if (!yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) || emit(&e, &ev) < 0)
		goto out;
	if (emit_json(&e, root) < 0)
		goto out;
	if (!yaml_document_end_event_initialize(&ev, 1) || emit(&e, &ev) < 0)
		goto out;
	if (!yaml_stream_end_event_initialize(&ev) || emit(&e, &ev) < 0)
		goto out;
	rc = yaml_emitter_flush(&e) ? 0 : -1;
out:
	if (rc < 0 && e.problem)
		fprintf(stderr, "leasekeeper: cannot write YAML: %s\n", e.problem);
	yaml_emitter_delete(&e);
	return rc < 0 ? -1 : stdout_ok();
}
#endif

/* RFC 3339 in UTC with milliseconds, as the agent's own log lines have it, so that watch's
 * lines and the agent's logs can be laid side by side. */
static void format_now(char *buf, size_t cap)
{
	struct timespec ts;
	struct tm tm;
	char sec[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(sec, sizeof(sec), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, cap, "%s.%03ldZ", sec, ts.tv_nsec / 1000000);
}

/* jansson integers are signed 64-bit; a token above that (no backend issues one: they are
 * microseconds or revisions) goes out as its decimal string rather than wrapping negative. */
static json_t *u64_json(uint64_t v)
{
	char buf[24];

	if (v <= INT64_MAX)
		return json_integer((json_int_t)v);
	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	return json_string(buf);
}

static json_t *event_json(const struct lk_event *ev, const char *ts)
{
	json_t *o = json_object();
	int bad = 0;

	if (!o)
		return NULL;
	bad |= json_object_set_new(o, "ts", json_string(ts));
	bad |= json_object_set_new(o, "event", json_string(lk_event_name(ev->kind)));
	if (ev->kind != LK_EV_STOP && ev->kind != LK_EV_DRAINED)
		bad |= json_object_set_new(o, "lock", json_string(ev->lock ? ev->lock : ""));
	switch (ev->kind) {
	case LK_EV_LEADER:
	case LK_EV_RENEWED:
		bad |= json_object_set_new(o, "token", u64_json(ev->token));
		bad |= json_object_set_new(o, "ttl_ms", json_integer(ev->ttl_ms));
		bad |= json_object_set_new(o, "until_mono_ms", json_integer(ev->until_mono_ms));
		break;
	case LK_EV_FOLLOWER:
		/* null for nobody, as in the status JSON; the line says "-". */
		bad |= json_object_set_new(o, "holder", !ev->holder || strcmp(ev->holder, "-") == 0 ?
		                                        json_null() : json_string(ev->holder));
		break;
	case LK_EV_STEPDOWN:
		bad |= json_object_set_new(o, "token", u64_json(ev->token));
		bad |= json_object_set_new(o, "deadline_ms", json_integer(ev->deadline_ms));
		break;
	case LK_EV_LOST:
		bad |= json_object_set_new(o, "token", u64_json(ev->token));
		bad |= json_object_set_new(o, "reason", json_string(lk_lost_reason_name(ev->reason)));
		break;
	case LK_EV_RELEASED:
		bad |= json_object_set_new(o, "token", u64_json(ev->token));
		bad |= json_object_set_new(o, "outcome", json_string(lk_outcome_name(ev->outcome)));
		break;
	case LK_EV_STOP:
		bad |= json_object_set_new(o, "deadline_ms", json_integer(ev->deadline_ms));
		break;
	case LK_EV_DRAINED:
		bad |= json_object_set_new(o, "released", json_integer(ev->released));
		bad |= json_object_set_new(o, "expired", json_integer(ev->expired));
		bad |= json_object_set_new(o, "failed", json_integer(ev->failed));
		bad |= json_object_set_new(o, "elapsed_ms", json_integer(ev->elapsed_ms));
		break;
	default:
		break;
	}
	if (bad) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int lk_cli_print_event(const struct lk_event *ev, bool json)
{
	char ts[48], line[LK_LINE_MAX];

	format_now(ts, sizeof(ts));
	if (json) {
		json_t *o = event_json(ev, ts);
		char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;

		json_decref(o);
		if (!s)
			return -1;
		printf("%s\n", s);
		free(s);
	} else {
		/* The parsed event formatted again: a line the codec accepted formats back. */
		if (lk_codec_format_event(line, sizeof(line), ev) < 0)
			return 0;
		printf("%s %s", ts, line);
	}
	return stdout_ok();
}

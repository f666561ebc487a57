/* Log lines as logfmt text (ts=... level=... msg="..." key=value ...) or JSON objects, one per
 * line. */
#include "agent/log.h"

#include <inttypes.h>
#include <jansson.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static enum lk_log_format log_format = LK_LOG_TEXT;
static enum lk_log_level log_min = LK_INFO;
static FILE *log_out;

static const char *const level_names[] = {
	[LK_DEBUG] = "debug", [LK_INFO] = "info", [LK_WARN] = "warn", [LK_ERROR] = "error",
};

void lk_log_setup(enum lk_log_format fmt, enum lk_log_level min_level, FILE *out)
{
	log_format = fmt;
	log_min = min_level;
	log_out = out;
}

static void format_ts(char *buf, size_t cap)
{
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, cap - n, ".%03dZ", (int)(tv.tv_usec / 1000));
}

/* Text values are quoted only when they would otherwise be ambiguous to a reader or to a
 * logfmt parser: empty, or containing spaces, quotes, '=' or control characters. */
static void put_text_value(FILE *f, const char *s)
{
	bool quote = *s == '\0';

	for (const char *p = s; *p && !quote; p++)
		quote = *p == ' ' || *p == '"' || *p == '=' || (unsigned char)*p < 0x20;
	if (!quote) {
		fputs(s, f);
		return;
	}
	fputc('"', f);
	for (const char *p = s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if ((unsigned char)*p < 0x20)
			fprintf(f, "\\x%02x", (unsigned char)*p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void log_text(FILE *f, const char *ts, enum lk_log_level level, const char *msg,
                     const struct lk_logf *fields)
{
	fprintf(f, "ts=%s level=%s msg=", ts, level_names[level]);
	put_text_value(f, msg);
	for (const struct lk_logf *x = fields; x->type != LK_LOGF_END; x++) {
		fprintf(f, " %s=", x->key);
		switch (x->type) {
		case LK_LOGF_STR: put_text_value(f, x->s ? x->s : "-"); break;
		case LK_LOGF_I64: fprintf(f, "%" PRId64, x->i); break;
		case LK_LOGF_U64: fprintf(f, "%" PRIu64, x->u); break;
		case LK_LOGF_BOOL: fputs(x->i ? "true" : "false", f); break;
		case LK_LOGF_END: break;
		}
	}
	fputc('\n', f);
}

static void log_json(FILE *f, const char *ts, enum lk_log_level level, const char *msg,
                     const struct lk_logf *fields)
{
	json_t *o = json_object();

	if (!o)
		return;
	json_object_set_new(o, "ts", json_string(ts));
	json_object_set_new(o, "level", json_string(level_names[level]));
	json_object_set_new(o, "msg", json_string(msg));
	for (const struct lk_logf *x = fields; x->type != LK_LOGF_END; x++) {
		json_t *v = NULL;
		switch (x->type) {
		case LK_LOGF_STR: v = x->s ? json_string(x->s) : json_null(); break;
		case LK_LOGF_I64: v = json_integer(x->i); break;
		/* json_int_t is signed 64-bit; tokens seeded from TIME in microseconds fit easily. */
		case LK_LOGF_U64: v = json_integer((json_int_t)x->u); break;
		case LK_LOGF_BOOL: v = json_boolean(x->i); break;
		case LK_LOGF_END: break;
		}
		json_object_set_new(o, x->key, v ? v : json_null());
	}
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (s) {
		fputs(s, f);
		fputc('\n', f);
		free(s);
	}
	json_decref(o);
}

void lk_log_fields(enum lk_log_level level, const char *msg, const struct lk_logf *fields)
{
	FILE *f = log_out ? log_out : stderr;
	char ts[40];

	if (level < log_min)
		return;
	format_ts(ts, sizeof(ts));
	if (log_format == LK_LOG_JSON)
		log_json(f, ts, level, msg, fields);
	else
		log_text(f, ts, level, msg, fields);
	fflush(f);
}

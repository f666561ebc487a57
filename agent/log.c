/* Log lines as logfmt text (ts=... level=... msg="..." key=value ...) or JSON objects, one per
 * line.
 *
 * The agent's lines go to stderr without ever blocking the loop (I9: a log shipper that stops
 * reading must not stop the agent). stderr is reopened through /proc/self/fd/2 as a file
 * description of our own with O_NONBLOCK, so that the flag does not leak to whoever else shares
 * the original one (a shell, the container runtime). Whatever cannot be written at once waits
 * in a queue of at most LOG_QUEUE_MAX bytes, drained when the loop sees stderr writable; lines
 * that do not fit are dropped whole, counted, and reported by one line once the queue is empty.
 */
#include "agent/log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_QUEUE_MAX (1024 * 1024) /* bytes of log lines waiting for a slow stderr */

static enum lk_log_format log_format = LK_LOG_TEXT;
static enum lk_log_level log_min = LK_INFO;
static FILE *log_out;     /* set: write there directly (tests); NULL: the stderr queue */

static struct {
	int fd;               /* -1 until first used */
	bool is_socket;       /* journald-style stream socket: send(MSG_DONTWAIT) */
	char *buf;
	size_t head, len, cap; /* queued bytes are buf[head .. head+len) */
	uint64_t dropped;     /* lines dropped since start, for the metric */
	uint64_t unreported;  /* dropped lines not yet reported by a log line */
	struct event *ev;     /* EV_WRITE on fd while something is queued and a loop is attached */
} q = { .fd = -1 };

static const char *const level_names[] = {
	[LK_DEBUG] = "debug", [LK_INFO] = "info", [LK_WARN] = "warn", [LK_ERROR] = "error",
};

void lk_log_setup(enum lk_log_format fmt, enum lk_log_level min_level, FILE *out)
{
	log_format = fmt;
	log_min = min_level;
	log_out = out;
}

static void open_stderr(void)
{
	struct stat st;
	int fd, fl;

	if (q.fd >= 0)
		return;
	/* O_APPEND: the new description has its own offset, which must not overwrite a file. */
	fd = open("/proc/self/fd/2", O_WRONLY | O_APPEND | O_NONBLOCK | O_CLOEXEC);
	if (fd >= 0) {
		q.fd = fd;
		return;
	}
	if (fstat(STDERR_FILENO, &st) == 0 && S_ISSOCK(st.st_mode)) {
		q.fd = STDERR_FILENO;
		q.is_socket = true;
		return;
	}
	/* No /proc: the flag has to go on the shared description itself. */
	fl = fcntl(STDERR_FILENO, F_GETFL);
	if (fl >= 0)
		fcntl(STDERR_FILENO, F_SETFL, fl | O_NONBLOCK);
	q.fd = STDERR_FILENO;
}

static ssize_t raw_write(const char *p, size_t n)
{
	if (q.is_socket)
		return send(q.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
	return write(q.fd, p, n);
}

static bool would_block(int e)
{
	return e == EAGAIN || e == EWOULDBLOCK || e == EINTR;
}

static void write_line(const char *line, size_t n);

/* Write what is queued, as far as stderr takes it now. Returns true once the queue is empty. */
static bool flush_some(void)
{
	while (q.len > 0) {
		ssize_t w = raw_write(q.buf + q.head, q.len);

		if (w < 0 && would_block(errno))
			break;
		if (w <= 0) {
			/* Nobody will ever read this (EPIPE, EBADF): forget it. */
			q.len = 0;
			break;
		}
		q.head += (size_t)w;
		q.len -= (size_t)w;
	}
	if (q.len == 0)
		q.head = 0;
	else if (q.ev)
		event_add(q.ev, NULL);
	return q.len == 0;
}

static void report_dropped(void)
{
	uint64_t k = q.unreported;

	q.unreported = 0;
	LK_LOG(LK_WARN, "log lines dropped", LKF_U64("dropped", k));
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	if (flush_some() && q.unreported)
		report_dropped();
}

static bool queue_append(const char *p, size_t n, bool must)
{
	if (!must && q.len + n > LOG_QUEUE_MAX)
		return false;
	if (q.head + q.len + n > q.cap) {
		if (q.len)
			memmove(q.buf, q.buf + q.head, q.len);
		q.head = 0;
	}
	if (q.len + n > q.cap) {
		size_t cap = q.cap ? q.cap : 4096;
		char *b;

		while (cap < q.len + n)
			cap *= 2;
		b = realloc(q.buf, cap);
		if (!b)
			return false;
		q.buf = b;
		q.cap = cap;
	}
	memcpy(q.buf + q.head + q.len, p, n);
	q.len += n;
	if (q.ev)
		event_add(q.ev, NULL);
	return true;
}

/* One whole line, or nothing: a line is written at once, queued, or dropped and counted. */
static void write_line(const char *line, size_t n)
{
	ssize_t w = 0;

	open_stderr();
	if (!flush_some()) {
		if (!queue_append(line, n, false)) {
			q.dropped++;
			q.unreported++;
		}
		return;
	}
	w = raw_write(line, n);
	if (w < 0) {
		if (!would_block(errno))
			return;
		w = 0;
	}
	if ((size_t)w == n)
		return;
	/* The rest of a line begun must follow it, whatever the cap; a line not begun may be
	 * dropped. */
	if (!queue_append(line + w, n - (size_t)w, w > 0)) {
		q.dropped++;
		q.unreported++;
	}
}

int lk_log_attach(struct event_base *base)
{
	open_stderr();
	q.ev = event_new(base, q.fd, EV_WRITE, on_writable, NULL);
	if (!q.ev)
		return -ENOMEM;
	if (q.len)
		event_add(q.ev, NULL);
	return 0;
}

bool lk_log_rate_due(struct lk_log_rate *r, uint64_t *skipped)
{
	struct timespec ts;
	int64_t now;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if (now < r->next_ms) {
		r->skipped++;
		return false;
	}
	r->next_ms = now + LK_LOG_RATE_MS;
	*skipped = r->skipped;
	r->skipped = 0;
	return true;
}

void lk_log_detach(int timeout_ms)
{
	struct timespec ts;
	int64_t end;

	if (q.ev)
		event_free(q.ev);
	q.ev = NULL;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	end = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
	/* The loop is gone: wait for stderr a bounded time, so that the last lines (the drain
	 * summary) reach a reader that is merely slow. */
	while (q.fd >= 0 && !flush_some()) {
		struct pollfd p = { .fd = q.fd, .events = POLLOUT };
		int left;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		left = (int)(end - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
		if (left <= 0 || poll(&p, 1, left) <= 0)
			break;
	}
	if (q.len == 0 && q.unreported) {
		report_dropped();
		flush_some();
	}
}

uint64_t lk_log_dropped(void)
{
	return q.dropped;
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
		case LK_LOGF_MS:
			if (x->i < 0)
				fputc('-', f);
			else
				fprintf(f, "%" PRId64 ".%03" PRId64, x->i / 1000000, x->i / 1000 % 1000);
			break;
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
		case LK_LOGF_MS: v = x->i < 0 ? json_null() : json_real((double)(x->i / 1000) / 1000);
			break;
		case LK_LOGF_END: break;
		}
		json_object_set_new(o, x->key, v ? v : json_null());
	}
	/* 9 digits: a duration in ms with three decimals reads 0.412, not 0.41199999999999998. */
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
	if (s) {
		fputs(s, f);
		fputc('\n', f);
		free(s);
	}
	json_decref(o);
}

void lk_log_fields(enum lk_log_level level, const char *msg, const struct lk_logf *fields)
{
	char ts[40], *line = NULL;
	size_t len = 0;
	FILE *f;

	if (level < log_min)
		return;
	format_ts(ts, sizeof(ts));
	f = log_out ? log_out : open_memstream(&line, &len);
	if (!f)
		return;
	if (log_format == LK_LOG_JSON)
		log_json(f, ts, level, msg, fields);
	else
		log_text(f, ts, level, msg, fields);
	if (log_out) {
		fflush(f);
		return;
	}
	if (fclose(f) == 0 && len > 0)
		write_line(line, len);
	free(line);
}

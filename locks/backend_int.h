/* For the backend files alone (redis*.c, etcd*.c, backend*.c), not for the agent: the
 * constructors behind lk_backend_new and the helpers every backend shares. The consumer API is
 * backend.h. */
#ifndef LK_LOCKS_BACKEND_INT_H
#define LK_LOCKS_BACKEND_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct lk_backend;
struct lk_backend_hooks;
struct lk_config_backend;

/* Constructors behind lk_backend_new, one per file, called by it alone: base, cfg and ret are
 * set, err[errlen] has room, and cfg follows the rules in backend.h. */
int lk_redis_new(struct event_base *base, const struct lk_config_backend *cfg,
                 const struct lk_backend_hooks *hooks, struct lk_backend **ret,
                 char *err, size_t errlen);
int lk_etcd_new(struct event_base *base, const struct lk_config_backend *cfg,
                const struct lk_backend_hooks *hooks, struct lk_backend **ret,
                char *err, size_t errlen);

/* Copy server-controlled text (len bytes, not NUL-terminated) into dst[cap] for a message:
 * capped, and printable ASCII only, so that it cannot break a log line or the agent's text
 * protocol. */
static inline void lk_backend_shown(char *dst, size_t cap, const char *src, size_t len)
{
	size_t n = 0;

	if (cap == 0)
		return;
	for (size_t i = 0; i < len && n + 1 < cap; i++) {
		unsigned char c = (unsigned char)src[i];

		dst[n++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	dst[n] = '\0';
}

/* I10's rule for one server instance, written once for every backend. reached_ns: when this
 * agent first reached the instance; uptime_ms: the instance's uptime at that moment, or -1 if
 * unknown; replaced: the agent had reached another instance (or another copy of the data)
 * before. A replaced instance may follow one that granted tenures until moments ago, so it is
 * trusted one ttl after it was first reached; a young one once it has been up for one ttl.
 * Returns the hold-off's end in CLOCK_MONOTONIC ns, or 0 if none applies. */
int64_t lk_holdoff_until(int64_t reached_ns, int64_t uptime_ms, bool replaced, int64_t ttl_ms);

/* Read a secret (a password_file) of at most max bytes, trailing newline and blanks stripped,
 * into a new NUL-terminated buffer the caller owns (and should wipe). Returns 0, or a negative
 * errno with a message in err[errlen] that names the path but never the contents. */
int lk_backend_read_secret(const char *path, size_t max, char **ret, size_t *ret_len,
                           char *err, size_t errlen);

/* Whether len bytes read from a server may be shown as a holder identity: 1 to
 * LK_BACKEND_MAX_IDENTITY_LEN bytes of printable ASCII without spaces, so that it can break
 * neither a log line nor a protocol line. */
bool lk_backend_holder_ok(const char *s, size_t len);

#endif

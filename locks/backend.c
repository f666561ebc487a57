/* What every backend shares: the factory behind the config's `type`, the reconnect backoff, the
 * address syntax and reading secrets. The backends live in one file each (redis.c, etcd.c). */
#include "locks/backend.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>


/* The longest port number we accept ("65535"): more digits can only be a typo. */
#define LK_BACKEND_MAX_PORT_DIGITS 5

int lk_backend_new(struct event_base *base, const struct lk_config_backend *cfg,
                   const struct lk_backend_hooks *hooks, struct lk_backend **ret,
                   char *err, size_t errlen)
{
	if (!base || !cfg || !ret) {
		if (err && errlen)
			snprintf(err, errlen, "invalid arguments");
		return -EINVAL;
	}

	switch (cfg->type) {
	case LK_BACKEND_REDIS:
		return lk_redis_new(base, cfg, hooks, ret, err, errlen);
	case LK_BACKEND_ETCD:
		return lk_etcd_new(base, cfg, hooks, ret, err, errlen);
	}
	if (err && errlen)
		snprintf(err, errlen, "unknown backend type %d", (int)cfg->type);
	return -EINVAL;
}

struct lk_backend *lk_backend_free(struct lk_backend *b)
{
	if (b && b->ops && b->ops->free)
		b->ops->free(b);
	return NULL;
}

int64_t lk_holdoff_until(int64_t reached_ns, int64_t uptime_ms, bool replaced, int64_t ttl_ms)
{
	int64_t ttl_ns = ttl_ms * 1000000;

	if (replaced)
		return reached_ns + ttl_ns;
	if (uptime_ms >= 0 && uptime_ms < ttl_ms)
		return reached_ns - uptime_ms * 1000000 + ttl_ns;
	return 0;
}

int64_t lk_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms)
{
	int64_t delay, half, spread;

	if (base_ms <= 0)
		return 0;
	if (cap_ms < base_ms)
		cap_ms = base_ms;

	/* Double without overflowing: stop as soon as the cap is reached. */
	delay = base_ms;
	while (attempt-- > 0 && delay < cap_ms)
		delay = delay > cap_ms / 2 ? cap_ms : delay * 2;
	if (delay > cap_ms)
		delay = cap_ms;

	/* Equal jitter: half of the delay is fixed, so a burst of failures still backs off, and
	 * the other half is uniform, so replicas that lost the same server spread out. */
	half = delay / 2;
	spread = delay - half;
	if (spread > (int64_t)UINT32_MAX - 1)
		spread = (int64_t)UINT32_MAX - 1;
	if (sodium_init() < 0)
		return delay; /* no randomness: still a valid (if synchronised) delay */
	return half + (int64_t)randombytes_uniform((uint32_t)spread + 1);
}

/* Strictly decimal, 1..65535: no sign, no spaces, no hex, nothing after. */
static int lk_backend_parse_port(const char *s, int *port)
{
	size_t n = strlen(s);
	long v = 0;

	if (n == 0 || n > LK_BACKEND_MAX_PORT_DIGITS)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > 65535)
		return -EINVAL;
	*port = (int)v;
	return 0;
}

/* A DNS name or IPv4 literal: letters, digits, '-', '.', '_'. Anything else (spaces, '/', '@',
 * a stray ':') is a mistake we would rather report now than as a failing DNS lookup later. */
static bool lk_backend_valid_hostname(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.' || c == '_'))
			return false;
	}
	return true;
}

/* The bracketed part of "[v6]:port": an IPv6 literal, optionally with a "%zone" suffix. */
static bool lk_backend_valid_ipv6(const char *s, size_t n)
{
	char buf[INET6_ADDRSTRLEN];
	struct in6_addr a;
	const char *pct = memchr(s, '%', n);
	size_t addrlen = pct ? (size_t)(pct - s) : n;

	if (addrlen == 0 || addrlen >= sizeof(buf))
		return false;
	if (pct && (size_t)(pct - s) + 1 == n)
		return false; /* an empty zone */
	memcpy(buf, s, addrlen);
	buf[addrlen] = '\0';
	return inet_pton(AF_INET6, buf, &a) == 1;
}

int lk_parse_address(const char *addr, char *host, size_t hostcap, int *port)
{
	const char *h, *colon;
	size_t hlen;
	int p;

	if (!addr || !host || hostcap == 0 || !port)
		return -EINVAL;

	if (strncmp(addr, "unix:", 5) == 0) {
		const char *path = addr + 5;
		size_t plen = strlen(path);

		/* sun_path is where the path must fit in the end; a longer one can never connect. */
		if (plen == 0 || plen >= hostcap || plen >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return -EINVAL;
		memcpy(host, path, plen + 1);
		*port = 0;
		return 0;
	}

	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');

		if (!close || close[1] != ':')
			return -EINVAL;
		h = addr + 1;
		hlen = (size_t)(close - h);
		if (!lk_backend_valid_ipv6(h, hlen))
			return -EINVAL;
		colon = close + 1;
	} else {
		colon = strrchr(addr, ':');
		if (!colon)
			return -EINVAL;
		h = addr;
		hlen = (size_t)(colon - addr);
		/* An unbracketed IPv6 literal is ambiguous ("::1:6379"): insist on brackets. */
		if (!lk_backend_valid_hostname(h, hlen))
			return -EINVAL;
	}
	if (lk_backend_parse_port(colon + 1, &p) < 0)
		return -EINVAL;
	if (hlen >= hostcap)
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = p;
	return 0;
}

int lk_backend_read_secret(const char *path, size_t max, char **ret, size_t *ret_len,
                           char *err, size_t errlen)
{
	char *buf = NULL;
	size_t n = 0;
	ssize_t got;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "password_file %s: %s", path, strerror(errno));
		return rc;
	}
	buf = malloc(max + 2);
	if (!buf) {
		rc = -ENOMEM;
		snprintf(err, errlen, "password_file %s: out of memory", path);
		goto fail;
	}
	while (n <= max) {
		got = read(fd, buf + n, max + 1 - n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			rc = -errno;
			snprintf(err, errlen, "password_file %s: %s", path, strerror(errno));
			goto fail;
		}
		if (got == 0)
			break;
		n += (size_t)got;
	}
	if (n > max) {
		rc = -EFBIG;
		snprintf(err, errlen, "password_file %s: longer than %zu bytes", path, max);
		goto fail;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
	                 buf[n - 1] == '\t'))
		n--;
	if (n == 0) {
		rc = -EINVAL;
		snprintf(err, errlen, "password_file %s: empty", path);
		goto fail;
	}
	buf[n] = '\0';
	close(fd);
	*ret = buf;
	*ret_len = n;
	return 0;

fail:
	if (buf) {
		sodium_memzero(buf, max + 2);
		free(buf);
	}
	close(fd);
	return rc;
}

/* What every backend shares, and the rules the config checks with the same code: the reconnect
 * backoff, I10's hold-off, the address and endpoint syntax, the etcd settings that go together,
 * holder identities, reading secrets. No backend is named here (the factory is backend.c). */
#include "locks/backend.h"
#include "locks/backend_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <sodium.h>

#include "proto/file.h"

/* The longest port number we accept ("65535"): more digits can only be a typo. */
#define LK_BACKEND_MAX_PORT_DIGITS 5

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
	const char *what = "";
	char *buf;
	ssize_t got;
	size_t n;
	int rc;

	buf = malloc(max + 2);
	if (!buf) {
		snprintf(err, errlen, "password_file %s: out of memory", path);
		return -ENOMEM;
	}
	got = lk_file_read_capped(path, buf, max + 1, &what);
	if (got < 0) {
		rc = (int)got;
		snprintf(err, errlen, "password_file %s: %s", path, strerror(-rc));
		goto fail;
	}
	n = (size_t)got;
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
	*ret = buf;
	*ret_len = n;
	return 0;

fail:
	sodium_memzero(buf, max + 2);
	free(buf);
	return rc;
}

bool lk_backend_holder_ok(const char *s, size_t len)
{
	if (len == 0 || len > LK_BACKEND_MAX_IDENTITY_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

bool lk_backend_valid_address(const char *addr, bool tcp_only)
{
	char host[LK_BACKEND_MAX_HOST_LEN + 1];
	int port;

	return lk_parse_address(addr, host, sizeof(host), &port) == 0 && !(tcp_only && port == 0);
}

int lk_backend_endpoint_len(const char *url, size_t *ret)
{
	size_t n = strlen(url), scheme;

	if (strncmp(url, "http://", 7) == 0)
		scheme = 7;
	else if (strncmp(url, "https://", 8) == 0)
		scheme = 8;
	else
		return -EINVAL;
	while (n > scheme && url[n - 1] == '/')
		n--;
	if (n == scheme || n > LK_BACKEND_MAX_ENDPOINT_LEN)
		return -EINVAL;
	for (size_t i = scheme; i < n; i++) {
		unsigned char c = (unsigned char)url[i];

		/* '@' would be credentials (kept out of URLs, which end up in logs); a path, query
		 * or fragment would be glued to /v3/... */
		if (c <= 0x20 || c >= 0x7f || c == '@' || c == '/' || c == '?' || c == '#')
			return -EINVAL;
	}
	*ret = n;
	return 0;
}

#define LK_REQ(f, n, m) \
	{ #f, #n, offsetof(struct lk_config_backend, f), offsetof(struct lk_config_backend, n), m }
const struct lk_backend_requires lk_backend_etcd_requires[LK_BACKEND_ETCD_N_REQUIRES] = {
	LK_REQ(username, password_file, "requires password_file"),
	/* etcd authenticates a user; a password alone would be silently ignored. */
	LK_REQ(password_file, username, "requires username on an etcd backend"),
	LK_REQ(cert_file, key_file, "requires key_file"),
	LK_REQ(key_file, cert_file, "requires cert_file"),
};
#undef LK_REQ

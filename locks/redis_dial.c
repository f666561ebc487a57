/* Where a Redis connection goes and how it gets there (see redis.c for the backend as a
 * whole, redis_conn.c for what happens once it is connected): addresses, the asynchronous DNS
 * lookup, and the hiredis context of one attempt.
 *
 * hiredis's own connect resolves names with a blocking getaddrinfo(), so DNS names are
 * looked up with evdns first and hiredis only ever gets an IP literal or a unix path. */
#include "locks/redis_int.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>

/* Create the context for one attempt; numeric addresses and unix paths come here directly,
 * DNS names after their lookup. */
static void lk_redis_connect(struct lk_redis_conn *conn, const char *ip)
{
	struct lk_redis *r = conn->r;
	redisAsyncContext *ac;
	char why[LK_REDIS_MAX_SHOWN_LEN + 1];

	ac = conn->addr.port ? redisAsyncConnect(ip, conn->addr.port) :
	     redisAsyncConnectUnix(conn->addr.host);
	if (!ac) {
		lk_redis_conn_lost(conn, "out of memory");
		return;
	}
	if (ac->err) {
		const char *reason = lk_redis_errstr(ac, why, sizeof(why), "connect failed");

		redisAsyncFree(ac);
		lk_redis_conn_lost(conn, reason);
		return;
	}
	if (r->tls && lk_redis_tls_start(conn, ac, why, sizeof(why)) < 0) {
		redisAsyncFree(ac);
		lk_redis_conn_lost(conn, why);
		return;
	}
	if (redisLibeventAttach(ac, r->base) != REDIS_OK) {
		redisAsyncFree(ac);
		lk_redis_conn_lost(conn, "cannot attach to the event loop");
		return;
	}
	ac->data = conn;
	redisAsyncSetConnectCallback(ac, lk_redis_on_connect);
	redisAsyncSetDisconnectCallback(ac, lk_redis_on_disconnect);
	r->n_ctx++;
	conn->ac = ac;
	conn->state = LK_REDIS_CONNECTING;
	lk_redis_conn_arm(conn);
}

void lk_redis_dns_unref(struct lk_redis_dns *dns)
{
	if (dns && --dns->refs == 0) {
		/* Nothing is in flight any more, so nothing can call back into the base. */
		evdns_base_free(dns->base, 0);
		free(dns);
	}
}

static void lk_redis_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
	struct lk_redis_resolve *rs = arg;
	struct lk_redis_conn *conn = rs->conn;
	struct lk_redis_dns *dns = rs->dns;
	const struct evutil_addrinfo *ai, *pick = NULL;
	char ip[INET6_ADDRSTRLEN];
	struct lk_redis *r;

	free(rs);
	if (!conn)
		goto done; /* detached: the attempt was given up, or the backend is gone */
	r = conn->r;
	lk_redis_enter(r);
	conn->resolve = NULL;
	/* Prefer IPv4: it is what "localhost" and most service names mean in practice. */
	for (ai = result == 0 ? res : NULL; ai; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET) {
			pick = ai;
			break;
		}
		if (ai->ai_family == AF_INET6 && !pick)
			pick = ai;
	}
	if (!pick) {
		lk_redis_conn_lost(conn, result ? evutil_gai_strerror(result) : "no address found");
	} else {
		const void *a = pick->ai_family == AF_INET ?
			(const void *)&((const struct sockaddr_in *)pick->ai_addr)->sin_addr :
			(const void *)&((const struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;

		if (!evutil_inet_ntop(pick->ai_family, a, ip, sizeof(ip)))
			lk_redis_conn_lost(conn, "bad address from the resolver");
		else
			lk_redis_connect(conn, ip);
	}
	lk_redis_leave(r);
done:
	if (res)
		evutil_freeaddrinfo(res);
	lk_redis_dns_unref(dns);
}

void lk_redis_conn_start(struct lk_redis_conn *conn)
{
	struct lk_redis *r = conn->r;
	struct evutil_addrinfo hints;
	struct lk_redis_resolve *rs;

	/* With Sentinel, the master the sentinels named last, unless this connection already
	 * failed with that answer: then it waits for their next one. */
	if (conn->role != LK_REDIS_SENTINEL && r->sentinel) {
		if (!lk_redis_sentinel_may_connect(conn))
			return;
		conn->addr = r->master;
		conn->gen = r->master_gen;
	}
	conn->attempt_deadline_ns = lk_mono_ns() + r->timeout_ms * 1000000;
	if (conn->addr.numeric || !conn->addr.port || !r->dns) {
		lk_redis_connect(conn, conn->addr.host);
		return;
	}

	rs = calloc(1, sizeof(*rs));
	if (!rs) {
		lk_redis_conn_lost(conn, "out of memory");
		return;
	}
	rs->conn = conn;
	rs->dns = r->dns;
	r->dns->refs++;
	conn->resolve = rs;
	conn->state = LK_REDIS_RESOLVING;
	lk_redis_conn_arm(conn);

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	/* May call lk_redis_resolved before returning (hosts file, errors). */
	(void)evdns_getaddrinfo(r->dns->base, conn->addr.host, NULL, &hints, lk_redis_resolved, rs);
}

int lk_redis_addr_set(struct lk_redis_addr *a, const char *addr)
{
	struct in6_addr a6;
	struct in_addr a4;

	if (lk_parse_address(addr, a->host, sizeof(a->host), &a->port) < 0)
		return -EINVAL;
	if (a->port == 0) {
		a->numeric = false;
		snprintf(a->shown, sizeof(a->shown), "unix:%s", a->host);
	} else if (inet_pton(AF_INET6, a->host, &a6) == 1 || strchr(a->host, '%')) {
		a->numeric = true;
		snprintf(a->shown, sizeof(a->shown), "[%s]:%d", a->host, a->port);
	} else {
		a->numeric = inet_pton(AF_INET, a->host, &a4) == 1;
		snprintf(a->shown, sizeof(a->shown), "%s:%d", a->host, a->port);
	}
	return 0;
}

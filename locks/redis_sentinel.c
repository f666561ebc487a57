/* Redis Sentinel: which server is the master (see redis.c for the backend as a whole).
 *
 * One more connection, to one sentinel at a time (the next one after each failure): its
 * handshake asks `SENTINEL get-master-addr-by-name <master_name>` and then SUBSCRIBEs to
 * +switch-master, and it stays open to hear failovers. Both commands leave in one write, and
 * a sentinel runs the commands of one read in order, so no failover announced between the
 * answer and the subscription goes unheard.
 *
 * The command and subscriber connections go to the master the sentinels named last. A
 * connection that failed (or found a replica there: ROLE on the command connection, READONLY
 * on a script) does not try the same answer again: it waits until a sentinel has been asked
 * anew, which reconnecting the sentinel connection does. +switch-master moves both
 * connections at once, whatever state they are in.
 *
 * Tenures after a failover: the new master is another instance (its INFO run_id differs), so
 * the restart hold-off (I10, lk_redis_info_reply) applies to it as to a restarted server; the
 * acquire script's token cannot repeat on a replica that lagged (redis.c).
 */
#include "locks/redis_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

#define LK_SENTINEL_CHANNEL "+switch-master"

struct lk_redis_sentinel {
	char **addrs;                    /* the configured sentinels, owned */
	size_t n, next;                  /* next: the one the sentinel connection tries */
	char *master_name;
	char *username;                  /* the sentinels' own credentials; NULL if none */
	char *password;
	size_t password_len;
	bool asked;                      /* a connection waits for the sentinels' next answer */
};

int lk_redis_sentinel_new(struct lk_redis *r, const struct lk_config_backend *cfg,
                          char *err, size_t errlen)
{
	struct lk_redis_sentinel *s = calloc(1, sizeof(*s));

	if (!s)
		goto oom;
	r->sentinel = s;
	s->addrs = calloc(cfg->n_sentinels, sizeof(*s->addrs));
	s->master_name = strdup(cfg->master_name);
	if (!s->addrs || !s->master_name)
		goto oom;
	for (size_t i = 0; i < cfg->n_sentinels; i++) {
		s->addrs[i] = strdup(cfg->sentinels[i]);
		if (!s->addrs[i])
			goto oom;
		s->n++;
	}
	if (cfg->sentinel_username && !(s->username = strdup(cfg->sentinel_username)))
		goto oom;
	if (cfg->sentinel_password_file) {
		int rc = lk_backend_read_secret(cfg->sentinel_password_file,
		                                LK_REDIS_MAX_PASSWORD_LEN, &s->password,
		                                &s->password_len, err, errlen);

		if (rc < 0)
			return rc;
	}
	/* Replicas of one lock start on different sentinels, so that one slow sentinel does not
	 * hold them all up. */
	s->next = sodium_init() < 0 ? 0 : randombytes_uniform((uint32_t)s->n);
	/* lk_backend_redis_check() took every address. */
	(void)lk_redis_addr_set(&r->sen.addr, s->addrs[s->next]);
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
	return -ENOMEM;
}

void lk_redis_sentinel_free(struct lk_redis *r)
{
	struct lk_redis_sentinel *s = r->sentinel;

	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++)
		free(s->addrs[i]);
	free(s->addrs);
	free(s->master_name);
	free(s->username);
	if (s->password) {
		sodium_memzero(s->password, s->password_len);
		free(s->password);
	}
	free(s);
	r->sentinel = NULL;
}

bool lk_redis_sentinel_handshake(struct lk_redis_conn *conn)
{
	struct lk_redis_sentinel *s = conn->r->sentinel;
	const char *argv[3] = { "SENTINEL", "get-master-addr-by-name", s->master_name };
	size_t lens[3] = { 8, 23, strlen(s->master_name) };
	const char *auth[3] = { "AUTH", s->username, s->password };
	size_t alens[3] = { 4, s->username ? strlen(s->username) : 0, s->password_len };

	if (s->password && !s->username) {
		auth[1] = s->password;
		alens[1] = s->password_len;
	}
	if (s->password && lk_redis_send_handshake(conn, LK_REDIS_REQ_AUTH, 0, s->username ? 3 : 2,
	                                           auth, alens) < 0)
		return false;
	return lk_redis_send_handshake(conn, LK_REDIS_REQ_MASTER, 0, 3, argv, lens) == 0 &&
	       lk_redis_subscribe(conn, LK_SENTINEL_CHANNEL) == 0;
}

const char *lk_redis_conn_user(const struct lk_redis_conn *conn)
{
	if (conn->role == LK_REDIS_SENTINEL)
		return conn->r->sentinel->username;
	return conn->r->username;
}

/* Ask the sentinels again, unless already asking. A sentinel connection that is up is
 * reconnected (a subscribed connection can send no other command), to the next sentinel; one
 * that is down keeps its backoff, and its next handshake asks. */
static void lk_redis_sentinel_ask(struct lk_redis *r)
{
	struct lk_redis_sentinel *s = r->sentinel;

	if (s->asked || r->closing)
		return;
	s->asked = true;
	if (r->sen.state != LK_REDIS_UP)
		return;
	r->sen.outage = true; /* on purpose: no warning */
	lk_redis_conn_break(&r->sen, "asking the sentinels for the master again");
	lk_redis_conn_kick(&r->sen, true);
}

bool lk_redis_sentinel_may_connect(struct lk_redis_conn *conn)
{
	struct lk_redis *r = conn->r;

	if (r->master_gen && conn->gen != r->master_gen) {
		conn->waiting = false;
		return true;
	}
	conn->waiting = true;
	lk_redis_sentinel_ask(r);
	return false;
}

void lk_redis_sentinel_lost(struct lk_redis_conn *conn)
{
	struct lk_redis_sentinel *s = conn->r->sentinel;

	s->next = (s->next + 1) % s->n;
	(void)lk_redis_addr_set(&conn->addr, s->addrs[s->next]);
}

/* A command or subscriber connection and the new master: one waiting for an answer tries now;
 * one that is up elsewhere, or on its way elsewhere, moves. A connection that waited after a
 * failure keeps its backoff: the sentinels may name the same server that failed, and a server
 * that keeps refusing (a wrong password) must not be retried ever faster. */
static void lk_redis_sentinel_move(struct lk_redis_conn *conn, bool changed)
{
	struct lk_redis *r = conn->r;

	if (r->closing)
		return;
	if (conn->state != LK_REDIS_DOWN && strcmp(conn->addr.shown, r->master.shown) != 0)
		lk_redis_conn_break(conn, "the sentinels moved the master to %s", r->master.shown);
	if (conn->state == LK_REDIS_DOWN && (conn->waiting || changed)) {
		conn->waiting = false;
		lk_redis_conn_kick(conn, changed);
	}
}

static void lk_redis_sentinel_set_master(struct lk_redis *r, const struct lk_redis_addr *a,
                                         const char *how)
{
	bool first = r->master_gen == 0;
	bool changed = first || strcmp(a->shown, r->master.shown) != 0;
	char was[sizeof(r->master.shown)];

	snprintf(was, sizeof(was), "%s", r->master.shown);
	r->master = *a;
	r->master_gen++;
	r->sentinel->asked = false;
	if (first)
		lk_redis_log(r, LK_BLOG_INFO, "%s: master %s is %s", how, r->sentinel->master_name,
		             a->shown);
	else if (changed)
		lk_redis_log(r, LK_BLOG_WARN, "%s: master %s moved from %s to %s", how,
		             r->sentinel->master_name, was, a->shown);
	lk_redis_sentinel_move(&r->cmd, changed && !first);
	lk_redis_sentinel_move(&r->sub, changed && !first);
}

/* "host" and "port" as a sentinel gives them into a: false if they are no address. */
static bool lk_redis_sentinel_addr(struct lk_redis_addr *a, const char *host, size_t hlen,
                                   const char *port, size_t plen)
{
	char buf[LK_REDIS_MAX_HOST_LEN + 16];
	bool v6 = memchr(host, ':', hlen) != NULL;

	if (hlen == 0 || hlen > LK_REDIS_MAX_HOST_LEN || plen == 0 || plen > 5 ||
	    memchr(host, '\0', hlen) || memchr(port, '\0', plen))
		return false;
	snprintf(buf, sizeof(buf), "%s%.*s%s:%.*s", v6 ? "[" : "", (int)hlen, host, v6 ? "]" : "",
	         (int)plen, port);
	return lk_redis_addr_set(a, buf) == 0 && a->port != 0;
}

bool lk_redis_sentinel_master_reply(struct lk_redis_conn *conn, const redisReply *reply)
{
	struct lk_redis *r = conn->r;
	char text[LK_REDIS_MAX_DESC_LEN], how[LK_REDIS_MAX_HOST_LEN + 32];
	struct lk_redis_addr a;
	const redisReply *h, *p;

	if (reply->type == REDIS_REPLY_ERROR) {
		lk_backend_shown(text, LK_REDIS_SHOWN_CAP(sizeof(text)), reply->str, reply->len);
		lk_redis_conn_break(conn, "SENTINEL get-master-addr-by-name failed: %s", text);
		return false;
	}
	if (reply->type == REDIS_REPLY_NIL ||
	    (reply->type == REDIS_REPLY_ARRAY && reply->elements == 0)) {
		lk_redis_conn_break(conn, "this sentinel knows no master named %s",
		                    r->sentinel->master_name);
		return false;
	}
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
	    (h = reply->element[0])->type != REDIS_REPLY_STRING ||
	    (p = reply->element[1])->type != REDIS_REPLY_STRING ||
	    !lk_redis_sentinel_addr(&a, h->str, h->len, p->str, p->len)) {
		lk_redis_describe(reply, text, sizeof(text));
		lk_redis_conn_break(conn, "unexpected answer to SENTINEL get-master-addr-by-name: %s",
		                    text);
		return false;
	}
	snprintf(how, sizeof(how), "sentinel %s", conn->addr.shown);
	lk_redis_sentinel_set_master(r, &a, how);
	return true;
}

void lk_redis_sentinel_message(struct lk_redis *r, const redisReply *chan, const redisReply *msg)
{
	const char *w[5];
	size_t wl[5], n = 0, nlen = strlen(r->sentinel->master_name);
	struct lk_redis_addr a;
	char shown[LK_REDIS_MAX_DESC_LEN];

	if (chan->len != sizeof(LK_SENTINEL_CHANNEL) - 1 ||
	    memcmp(chan->str, LK_SENTINEL_CHANNEL, chan->len) != 0 ||
	    msg->type != REDIS_REPLY_STRING)
		return;
	/* "<master name> <old ip> <old port> <new ip> <new port>" */
	for (size_t i = 0; i < msg->len && n < 5;) {
		size_t j = i;

		while (j < msg->len && msg->str[j] != ' ')
			j++;
		w[n] = msg->str + i;
		wl[n++] = j - i;
		i = j + 1;
	}
	if (n < 5 || wl[0] != nlen || memcmp(w[0], r->sentinel->master_name, nlen) != 0)
		return;
	if (!lk_redis_sentinel_addr(&a, w[3], wl[3], w[4], wl[4])) {
		lk_backend_shown(shown, LK_REDIS_SHOWN_CAP(sizeof(shown)), msg->str, msg->len);
		lk_redis_log(r, LK_BLOG_ERROR, "ignoring a +switch-master without a valid address: %s",
		             shown);
		return;
	}
	lk_redis_sentinel_set_master(r, &a, "+switch-master");
}

bool lk_redis_sentinel_role_reply(struct lk_redis_conn *conn, const redisReply *reply)
{
	char text[LK_REDIS_MAX_DESC_LEN];
	const redisReply *e;

	if (reply->type == REDIS_REPLY_ERROR) {
		/* ROLE refused (an ACL without it): the scripts' READONLY errors still tell. */
		lk_backend_shown(text, LK_REDIS_SHOWN_CAP(sizeof(text)), reply->str, reply->len);
		lk_redis_log(conn->r, LK_BLOG_WARN, "ROLE failed on %s (%s): cannot check that it is "
		             "the master before using it", conn->addr.shown, text);
		return true;
	}
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
	    (e = reply->element[0])->type == REDIS_REPLY_STRING && e->len == 6 &&
	    memcmp(e->str, "master", 6) == 0)
		return true;
	if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 &&
	    reply->element[0]->type == REDIS_REPLY_STRING)
		lk_backend_shown(text, LK_REDIS_SHOWN_CAP(sizeof(text)), reply->element[0]->str,
		                 reply->element[0]->len);
	else
		lk_redis_describe(reply, text, sizeof(text));
	lk_redis_conn_break(conn, "%s is not the master (ROLE: %s)", conn->addr.shown, text);
	return false;
}

/* The Redis backend (README, ARCHITECTURE.md): hiredis's async API (1.x, from hiredict) on
 * the agent's libevent loop.
 *
 * Two connections per backend. The command connection carries AUTH, SCRIPT LOAD and the three
 * lock scripts; the subscriber connection SUBSCRIBEs to every key's release channel for as
 * long as the key exists, so that a graceful release wakes followers at once. Either
 * connection reconnects by itself with backoff. After the command connection's handshake every
 * key hears LK_NOTICE_RECONNECTED (a leader re-proves its tenure on the new connection), after
 * the subscriber's every watching key hears LK_NOTICE_MAYBE_FREE (notices may have been missed).
 *
 * Restarts (I10): the handshake asks `INFO server` for the instance's run_id and uptime. A
 * run_id other than the one seen before means another instance (a restart, a failover) that may
 * not know the tenures the old one granted; an uptime below a lock's ttl means the same for a
 * server we meet for the first time. holdoff_until() turns that into a time before which no new
 * tenure starts (lk_holdoff_until()).
 *
 * Orphans: an acquire whose reply never came (timeout, broken connection) may still run on the
 * server and leave "<identity>:<token>" that nobody announced. The key remembers that, and the
 * next acquire that finds exactly its own identity holding the key sends the acquire script
 * again with that value: the script deletes exactly that value and acquires, as one operation.
 * No release notice goes out (nothing was released that anybody knew of), and no other replica
 * can slip in between: a release-then-acquire in two steps would wake every follower with the
 * notice and let one of them take the lock from under the reclaiming agent.
 *
 * A renewal whose reply never came may run late as well (a frozen server that resumes) and
 * keep our last tenure's key alive for another ttl after that tenure ended here with LOST. The
 * key remembers the last tenure it proved and until when; once that lease, as last proven, has
 * run out (so every app's deadline has passed and I2's "left to expire at its ttl" holds), an
 * acquire that finds that very value deletes it the same way. Before that, the acquire
 * reports the key held by nobody known rather than by ourselves.
 *
 * This file holds the scripts, the reply mapping and the operations; redis_conn.c the two
 * connections (handshake, the in-flight FIFO and its deadlines, reconnects), redis_dial.c how
 * an attempt connects (DNS, hiredis), redis_sentinel.c which server is the master when
 * Sentinel names it, redis_int.h what they share.
 */
#include "locks/redis_int.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <arpa/inet.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sodium.h>

/* The lock scripts. Values are "<identity>:<token>"; acquire's KEYS[2] is the fence counter,
 * KEYS[3] (release's KEYS[2]) the release marker.
 *
 * Acquire's optional ARGV[3] is our own orphan: a value equal to it is deleted first (a reclaim).
 *
 * Acquire sets the fence counter to max(counter + 1, TIME in microseconds) (I5): a server that
 * lost the counter (restarted empty), came back from an older snapshot or is a replica that
 * lagged behind still issues a token above every earlier one, unless its clock stepped back by
 * more than the time since the last acquisition. Both numbers are compared as decimal strings
 * (length first), so no Lua number rounds them; the TIME string is built by concatenation
 * because Lua 5.1 would format such a number as 1.7e+15. Tokens stay below 2^53, exact in a
 * Lua number, and '%d' formats them as integers.
 *
 * Handoff telemetry (redis_handoff.c): release writes the marker KEYS[2] = "K:released" (the
 * key of the same name as the release channel) = "<token>:<TIME in µs>" as it deletes our key;
 * acquire answers {1, token, the counter before it (the last token issued; '' if none), the
 * marker, TIME}. The marker has no expiry, like the counter: one small key per lock,
 * overwritten in place, and one that expired would turn a graceful release that nobody
 * followed for a while into an apparent expiry. Its GET is a pcall, before any write: a key of
 * another type there costs the telemetry, never the acquire. */
static const char lk_redis_acquire_lua[] =
	"local v = redis.call('GET', KEYS[1])\n"
	"if v and ARGV[3] and v == ARGV[3] then\n"
	"  redis.call('DEL', KEYS[1])\n"
	"  v = false\n"
	"end\n"
	"if v then return {0, v, redis.call('PTTL', KEYS[1])} end\n"
	"local m = redis.pcall('GET', KEYS[3])\n"
	"if type(m) ~= 'string' then m = '' end\n"
	"local t = redis.call('TIME')\n"
	"local now = t[1] .. string.format('%06d', tonumber(t[2]))\n"
	"local c = redis.call('GET', KEYS[2])\n"
	"local tok\n"
	"if c and (#c > #now or (#c == #now and c >= now)) then\n"
	"  tok = redis.call('INCR', KEYS[2])\n"
	"else\n"
	"  redis.call('SET', KEYS[2], now)\n"
	"  tok = tonumber(now)\n"
	"end\n"
	"redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', tok), 'NX', 'PX', ARGV[2])\n"
	"return {1, tok, c or '', m, now}\n";

static const char lk_redis_renew_lua[] =
	"local v = redis.call('GET', KEYS[1])\n"
	"if v == ARGV[1] then\n"
	"  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
	"  return 1\n"
	"end\n"
	"if v then return v end\n"
	"return 0\n";

static const char lk_redis_release_lua[] =
	"if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
	"  redis.call('DEL', KEYS[1])\n"
	"  local t = redis.call('TIME')\n"
	"  redis.call('SET', KEYS[2], ARGV[3] .. ':' .. t[1] .. string.format('%06d', tonumber(t[2])))\n"
	"  redis.call('PUBLISH', ARGV[2], ARGV[1])\n"
	"  return 1\n"
	"end\n"
	"return 0\n";


const char *const lk_redis_scripts[LK_REDIS_N_SCRIPTS] = {
	[LK_REDIS_ACQUIRE] = lk_redis_acquire_lua,
	[LK_REDIS_RENEW] = lk_redis_renew_lua,
	[LK_REDIS_RELEASE] = lk_redis_release_lua,
};

static const char *const lk_redis_op_names[LK_REDIS_N_SCRIPTS] = {
	[LK_REDIS_ACQUIRE] = "acquire",
	[LK_REDIS_RENEW] = "renew",
	[LK_REDIS_RELEASE] = "release",
};

void lk_redis_describe(const redisReply *rep, char *buf, size_t cap)
{
	char text[LK_REDIS_MAX_SHOWN_LEN + 1];

	switch (rep->type) {
	case REDIS_REPLY_STRING:
		lk_backend_shown(text, LK_REDIS_SHOWN_CAP(sizeof(text)), rep->str, rep->len);
		snprintf(buf, cap, "string \"%s\"", text);
		break;
	case REDIS_REPLY_STATUS:
		lk_backend_shown(text, LK_REDIS_SHOWN_CAP(sizeof(text)), rep->str, rep->len);
		snprintf(buf, cap, "status \"%s\"", text);
		break;
	case REDIS_REPLY_ERROR:
		lk_backend_shown(text, LK_REDIS_SHOWN_CAP(sizeof(text)), rep->str, rep->len);
		snprintf(buf, cap, "error \"%s\"", text);
		break;
	case REDIS_REPLY_INTEGER:
		snprintf(buf, cap, "integer %lld", rep->integer);
		break;
	case REDIS_REPLY_NIL:
		snprintf(buf, cap, "nil");
		break;
	case REDIS_REPLY_ARRAY:
		snprintf(buf, cap, "array of %zu", rep->elements);
		break;
	default:
		snprintf(buf, cap, "reply of type %d", rep->type);
		break;
	}
}

/* Error replies worth retrying: the server is starting, busy, failing over or not yet
 * authenticated (a reconnect in progress). Anything else (WRONGTYPE, a script error, ...)
 * will fail the same way again. */
static bool lk_redis_transient(const char *s, size_t len)
{
	static const char *const prefixes[] = {
		"LOADING", "BUSY", "TRYAGAIN", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "NOAUTH",
		"NOREPLICAS", "OOM",
	};

	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		size_t n = strlen(prefixes[i]);

		if (len >= n && memcmp(s, prefixes[i], n) == 0 && (len == n || s[n] == ' '))
			return true;
	}
	return false;
}

static int lk_redis_send_script(struct lk_redis_conn *conn, struct lk_redis_req *req, bool eval)
{
	struct lk_redis *r = conn->r;
	struct lk_backend_key *k = req->k;
	char num[24], value[LK_REDIS_MAX_IDENTITY_LEN + 24]; /* num: the ttl, or release's token */
	const char *argv[10];
	size_t lens[10];
	int argc = 0, rc;

	snprintf(num, sizeof(num), "%" PRId64, req->ttl_ms);
	snprintf(value, sizeof(value), "%s:%" PRIu64, k->identity,
	         req->script == LK_REDIS_ACQUIRE ? req->orphan : req->token);

	argv[argc++] = eval ? "EVAL" : "EVALSHA";
	argv[argc++] = eval ? lk_redis_scripts[req->script] : r->sha[req->script];
	switch (req->script) {
	case LK_REDIS_ACQUIRE:
		argv[argc++] = "3";
		argv[argc++] = k->key;
		argv[argc++] = k->fence;
		argv[argc++] = k->channel;
		argv[argc++] = k->identity;
		argv[argc++] = num;
		if (req->orphan)
			argv[argc++] = value;
		break;
	case LK_REDIS_RENEW:
		argv[argc++] = "1";
		argv[argc++] = k->key;
		argv[argc++] = value;
		argv[argc++] = num;
		break;
	case LK_REDIS_RELEASE:
	default:
		snprintf(num, sizeof(num), "%" PRIu64, req->token);
		argv[argc++] = "2";
		argv[argc++] = k->key;
		argv[argc++] = k->channel;
		argv[argc++] = value;
		argv[argc++] = k->channel;
		argv[argc++] = num; /* the token, for the marker */
		break;
	}
	for (int i = 0; i < argc; i++)
		lens[i] = strlen(argv[i]);

	/* Validity is counted from here (I1): the command may leave the buffer a little later,
	 * which only makes the proven lease shorter than the real one. */
	req->sent_ns = lk_mono_ns();
	req->deadline_ns = req->sent_ns + r->timeout_ms * 1000000;
	rc = lk_redis_send(conn, req, lk_redis_cmd_cb, req, argc, argv, lens);
	if (rc == 0)
		lk_redis_wait_send(conn, req);
	return rc;
}

/* ---- replies ---------------------------------------------------------------------------- */

/* Split "<identity>:<token>" at its last ':' into buf. NULL when the value is not something
 * we could show safely: too long, or bytes that would break a log line or a protocol line. */
static const char *lk_redis_holder(const char *s, size_t len, char *buf, size_t cap)
{
	const char *colon = NULL;

	if (len > LK_REDIS_MAX_VALUE_LEN || len >= cap)
		return NULL;
	colon = memrchr(s, ':', len);
	if (colon)
		len = (size_t)(colon - s);
	if (!lk_backend_holder_ok(s, len))
		return NULL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	return buf;
}

/* Whether a lock value is "<this key's identity>:<token>", with the token in *ret. */
static bool lk_redis_own_value(const struct lk_backend_key *k, const char *s, size_t len,
                               uint64_t *ret)
{
	size_t ilen = strlen(k->identity);
	uint64_t t = 0;

	if (len <= ilen + 1 || len > ilen + 21 || memcmp(s, k->identity, ilen) != 0 || s[ilen] != ':')
		return false;
	for (size_t i = ilen + 1; i < len; i++) {
		uint64_t d = (uint64_t)(s[i] - '0');

		/* 20 digits can pass 2^64: such a value is not a token we wrote. */
		if (s[i] < '0' || s[i] > '9' || t > (UINT64_MAX - d) / 10)
			return false;
		t = t * 10 + d;
	}
	if (t == 0)
		return false;
	*ret = t;
	return true;
}

/* Send an acquire again on the same connection, now deleting our orphan `orphan` in the same
 * script. True if sent (the request stays alive). */
static bool lk_redis_reclaim(struct lk_redis_conn *conn, redisAsyncContext *ac,
                             struct lk_redis_req *req, uint64_t orphan)
{
	if (conn->ac != ac || conn->state != LK_REDIS_UP)
		return false;
	lk_redis_fifo_remove(req);
	req->orphan = orphan;
	req->retried = false;
	return lk_redis_send_script(conn, req, false) == 0;
}

/* Map a script reply to an lk_reply and deliver it. Returns true if the request was re-sent
 * instead (NOSCRIPT), in which case it stays alive. */
bool lk_redis_script_reply(struct lk_redis_conn *conn, redisAsyncContext *ac,
                           struct lk_redis_req *req, const redisReply *reply)
{
	struct lk_redis *r = conn->r;
	const char *op = req->orphan ? "acquire (deleting our orphan)" :
	                 lk_redis_op_names[req->script];
	uint64_t orphan;
	char holder[LK_REDIS_MAX_VALUE_LEN + 1], msg[LK_REDIS_MAX_LOG_LEN], text[LK_REDIS_MAX_DESC_LEN];
	struct lk_reply rep = { .status = LK_REPLY_FATAL, .err = msg };
	const redisReply *e0, *e1;

	if (!reply) {
		/* The script may still run on the server: the key may get a value nobody reported. */
		if (req->script == LK_REDIS_ACQUIRE)
			req->k->unsure = true;
		rep.status = LK_REPLY_ERROR;
		if (ac->err)
			snprintf(msg, sizeof(msg), "connection lost: %s",
			         lk_redis_errstr(ac, text, sizeof(text), "connection closed"));
		else
			snprintf(msg, sizeof(msg), "%s", conn->why);
		goto deliver;
	}

	if (reply->type == REDIS_REPLY_ERROR) {
		/* The script cache was flushed (SCRIPT FLUSH, a restart we did not notice, a
		 * failover): send the full text once; Redis caches it again on the way. */
		if (!req->retried && reply->len >= 8 && memcmp(reply->str, "NOSCRIPT", 8) == 0 &&
		    conn->ac == ac && conn->state == LK_REDIS_UP) {
			req->retried = true;
			lk_redis_fifo_remove(req);
			if (lk_redis_send_script(conn, req, true) == 0)
				return true;
		}
		lk_backend_shown(text, LK_REDIS_SHOWN_CAP(sizeof(text)), reply->str, reply->len);
		rep.status = lk_redis_transient(reply->str, reply->len) ? LK_REPLY_ERROR : LK_REPLY_FATAL;
		snprintf(msg, sizeof(msg), "%s failed: %s", op, text);
		goto deliver;
	}

	switch (req->script) {
	case LK_REDIS_ACQUIRE:
		/* {1, token, previous token, marker, TIME}, or {0, holder's value, its PTTL}. */
		if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2 || reply->elements > 5 ||
		    reply->element[0]->type != REDIS_REPLY_INTEGER)
			break;
		e0 = reply->element[0];
		e1 = reply->element[1];
		if (e0->integer == 1 && e1->type == REDIS_REPLY_INTEGER && e1->integer > 0) {
			req->k->unsure = false;
			req->k->proven_token = (uint64_t)e1->integer;
			req->k->proven_until_ns = req->sent_ns + req->ttl_ms * 1000000;
			rep.status = LK_REPLY_OK;
			rep.token = (uint64_t)e1->integer;
			rep.sent_ns = req->sent_ns;
			rep.ttl_ms = req->ttl_ms;
			rep.err = NULL;
			rep.after = lk_redis_handoff(reply, &rep.gap_ns, text, sizeof(text));
			if (rep.after == LK_AFTER_UNKNOWN)
				lk_redis_log(r, LK_BLOG_WARN, "key %s: acquired, but %s", req->k->key,
				             text);
			goto deliver;
		}
		if (e0->integer == 0 && e1->type == REDIS_REPLY_STRING) {
			/* Our own value after an acquire that never answered: that acquire ran after
			 * all, and nobody was told about its tenure. Or our last tenure, which ended
			 * here (we acquire only as a follower) but which a renewal that ran late kept
			 * alive. Acquire again, deleting exactly that value in the same script, rather
			 * than wait a whole ttl for our own key; the last tenure only once its lease as
			 * we last proved it has run out. */
			bool own = !req->orphan && lk_redis_own_value(req->k, e1->str, e1->len, &orphan);
			bool last = own && orphan == req->k->proven_token;
			int64_t over_ms = last ? (lk_mono_ns() - req->k->proven_until_ns) / 1000000 : 0;

			if (own && (last ? over_ms >= 0 : req->k->unsure)) {
				if (lk_redis_reclaim(conn, ac, req, orphan)) {
					if (last)
						lk_redis_log(r, LK_BLOG_WARN, "key %s still holds our ended "
						             "tenure %" PRIu64 ", %" PRId64 "ms after its lease "
						             "as last proven ran out (a renewal that timed out "
						             "ran later): deleting it", req->k->key, orphan,
						             over_ms);
					else
						lk_redis_log(r, LK_BLOG_WARN, "key %s holds our own unannounced "
						             "tenure %" PRIu64 " (an acquire that timed out ran "
						             "later): deleting it", req->k->key, orphan);
					return true;
				}
				rep.status = LK_REPLY_ERROR;
				snprintf(msg, sizeof(msg), "connection lost while deleting our orphan");
				goto deliver;
			}
			req->k->unsure = false;
			rep.status = LK_REPLY_HELD;
			/* When the holder's key runs out unless renewed: a crashed holder's successor
			 * tries again then, rather than up to a retry_interval later. */
			if (reply->elements == 3 && reply->element[2]->type == REDIS_REPLY_INTEGER &&
			    reply->element[2]->integer > 0)
				rep.free_in_ms = reply->element[2]->integer;
			/* Our own ended tenure is nobody's to follow: its apps were told it is over. */
			rep.holder = last ? NULL : lk_redis_holder(e1->str, e1->len, holder, sizeof(holder));
			rep.err = NULL;
			goto deliver;
		}
		break;
	case LK_REDIS_RENEW:
		if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 1) {
			if (req->token == req->k->proven_token)
				req->k->proven_until_ns = req->sent_ns + req->ttl_ms * 1000000;
			rep.status = LK_REPLY_OK;
			rep.token = req->token;
			rep.sent_ns = req->sent_ns;
			rep.ttl_ms = req->ttl_ms;
			rep.err = NULL;
			goto deliver;
		}
		if (reply->type == REDIS_REPLY_INTEGER && reply->integer == 0) {
			rep.status = LK_REPLY_GONE;
			rep.err = NULL;
			goto deliver;
		}
		if (reply->type == REDIS_REPLY_STRING) {
			rep.status = LK_REPLY_TAKEN;
			rep.holder = lk_redis_holder(reply->str, reply->len, holder, sizeof(holder));
			rep.err = NULL;
			goto deliver;
		}
		break;
	case LK_REDIS_RELEASE:
	default:
		if (reply->type == REDIS_REPLY_INTEGER && (reply->integer == 0 || reply->integer == 1)) {
			rep.status = reply->integer == 1 ? LK_REPLY_OK : LK_REPLY_GONE;
			rep.token = req->token;
			rep.err = NULL;
			goto deliver;
		}
		break;
	}
	lk_redis_describe(reply, text, sizeof(text));
	snprintf(msg, sizeof(msg), "unexpected reply to %s: %s", op, text);

deliver:
	if (lk_redis_wait_hold(req, &rep, msg, sizeof(msg)))
		return false; /* delivered once the replicas acknowledged it */
	if (!r->closing && !req->k->dead && req->cb)
		req->cb(req->arg, &rep);
	return false;
}

/* ---- INFO server (I10) ----------------------------------------------------------------- */

/* The value of "name:value" on its own line of an INFO reply, into buf[cap]; false if absent,
 * too long, or not made of the bytes `ok` accepts. */
static bool lk_redis_info_field(const char *s, size_t len, const char *name, char *buf,
                                size_t cap, int (*ok)(int))
{
	size_t nlen = strlen(name);

	for (size_t i = 0; i < len;) {
		size_t end = i;

		while (end < len && s[end] != '\n')
			end++;
		if (end - i > nlen && memcmp(s + i, name, nlen) == 0 && s[i + nlen] == ':') {
			size_t v = i + nlen + 1, n = 0;

			while (v + n < end && s[v + n] != '\r')
				n++;
			if (n == 0 || n >= cap)
				return false;
			for (size_t j = 0; j < n; j++)
				if (!ok((unsigned char)s[v + j]))
					return false;
			memcpy(buf, s + v, n);
			buf[n] = '\0';
			return true;
		}
		i = end + 1;
	}
	return false;
}

static int lk_redis_is_digit(int c) { return c >= '0' && c <= '9'; }
static int lk_redis_is_hex(int c) { return lk_redis_is_digit(c) || (c >= 'a' && c <= 'f'); }

/* Which instance answered INFO server (I10). A run_id we have not seen before starts a new
 * instance record; the same one keeps its record, so that a short blip does not move the time
 * this instance was first reached. A server that refuses INFO (renamed or forbidden by ACL)
 * cannot be told apart from its successor: said once, and no hold-off is derived. */
void lk_redis_info_reply(struct lk_redis *r, const redisReply *reply)
{
	char run_id[LK_REDIS_RUN_ID_LEN + 1], up[24], text[LK_REDIS_MAX_DESC_LEN];
	int64_t uptime_ms;

	if (reply->type != REDIS_REPLY_STRING || reply->len > LK_REDIS_MAX_INFO_LEN ||
	    !lk_redis_info_field(reply->str, reply->len, "run_id", run_id, sizeof(run_id),
	                         lk_redis_is_hex) ||
	    strlen(run_id) != LK_REDIS_RUN_ID_LEN) {
		if (!r->info_failed) {
			lk_redis_describe(reply, text, sizeof(text));
			lk_redis_log(r, LK_BLOG_WARN, "INFO server gave no run_id (%s): a restart or "
			             "failover of this server cannot be detected", text);
		}
		r->info_failed = true;
		return;
	}
	r->info_failed = false;
	/* uptime_in_seconds is the difference of two whole-second readings of the wall clock (now
	 * and the start), so it can be one more than the seconds that really passed: a server up
	 * for 20ms says 1 if a second began in between. It has surely been up one second less. */
	uptime_ms = -1;
	if (lk_redis_info_field(reply->str, reply->len, "uptime_in_seconds", up, 16,
	                        lk_redis_is_digit)) {
		uptime_ms = strtoll(up, NULL, 10) * 1000 - 1000;
		if (uptime_ms < 0)
			uptime_ms = 0;
	}
	if (strcmp(run_id, r->run_id) == 0)
		return;
	r->replaced = r->run_id[0] != '\0';
	snprintf(r->prev_run_id, sizeof(r->prev_run_id), "%s", r->run_id);
	snprintf(r->run_id, sizeof(r->run_id), "%s", run_id);
	r->reached_ns = lk_mono_ns();
	r->uptime_ms = uptime_ms;
	if (r->replaced)
		lk_redis_log(r, LK_BLOG_WARN, "another server instance answers at %s (run_id %.8s, "
		             "was %.8s, up %" PRId64 "s): it may not know the tenures the old one "
		             "granted", r->master.shown, r->run_id, r->prev_run_id, uptime_ms / 1000);
}

/* ---- the operations --------------------------------------------------------------------- */

static int lk_redis_submit(struct lk_backend_key *k, enum lk_redis_script script, uint64_t token,
                           int64_t ttl_ms, lk_backend_reply_fn *cb, void *arg)
{
	struct lk_redis *r;
	struct lk_redis_req *req;
	int rc;

	if (!k || k->dead || !cb)
		return -EINVAL;
	r = k->r;
	if (r->closing)
		return -ESHUTDOWN;
	if (r->cmd.state != LK_REDIS_UP || !r->cmd.ac)
		return -ENOTCONN;

	req = calloc(1, sizeof(*req));
	if (!req)
		return -ENOMEM;
	req->kind = LK_REDIS_REQ_SCRIPT;
	req->script = script;
	req->k = k;
	req->token = token;
	req->ttl_ms = ttl_ms;
	req->cb = cb;
	req->arg = arg;
	rc = lk_redis_send_script(&r->cmd, req, false);
	if (rc < 0) {
		free(req);
		return rc;
	}
	k->refs++;
	return 0;
}

static int lk_redis_acquire(struct lk_backend_key *k, int64_t ttl_ms, lk_backend_reply_fn *cb,
                            void *arg)
{
	if (ttl_ms <= 0)
		return -EINVAL;
	return lk_redis_submit(k, LK_REDIS_ACQUIRE, 0, ttl_ms, cb, arg);
}

static int lk_redis_renew(struct lk_backend_key *k, uint64_t token, int64_t ttl_ms,
                          lk_backend_reply_fn *cb, void *arg)
{
	if (ttl_ms <= 0 || token == 0)
		return -EINVAL;
	return lk_redis_submit(k, LK_REDIS_RENEW, token, ttl_ms, cb, arg);
}

static int lk_redis_release(struct lk_backend_key *k, uint64_t token, lk_backend_reply_fn *cb,
                            void *arg)
{
	if (token == 0)
		return -EINVAL;
	return lk_redis_submit(k, LK_REDIS_RELEASE, token, 0, cb, arg);
}

static void lk_redis_watch(struct lk_backend_key *k, bool on)
{
	if (k && !k->dead)
		k->watching = on;
}

static int64_t lk_redis_holdoff_until(struct lk_backend_key *k, int64_t ttl_ms, char *why,
                                      size_t cap)
{
	const struct lk_redis *r;
	int64_t until;

	if (!k || k->dead || ttl_ms <= 0)
		return 0;
	r = k->r;
	if (!r->run_id[0])
		return 0;
	until = lk_holdoff_until(r->reached_ns, r->uptime_ms, r->replaced, ttl_ms);
	if (until && why && cap) {
		if (r->replaced)
			snprintf(why, cap, "redis run_id changed from %.8s to %.8s: the old instance's "
			         "tenures may still run", r->prev_run_id, r->run_id);
		else
			snprintf(why, cap, "redis instance %.8s was up only %" PRId64 "s: it may have "
			         "restarted during a tenure", r->run_id, r->uptime_ms / 1000);
	}
	return until;
}

static bool lk_redis_ready(const struct lk_backend *b)
{
	const struct lk_redis *r = (const struct lk_redis *)b;

	return r && !r->closing && r->cmd.state == LK_REDIS_UP;
}

/* ---- life and death --------------------------------------------------------------------- */

void lk_redis_finalize(struct lk_redis *r)
{
	struct lk_backend_key *k;

	while ((k = TAILQ_FIRST(&r->keys)))
		lk_redis_key_destroy(k);
	free(r->buckets);
	lk_redis_sentinel_free(r);
	lk_redis_tls_free(r);
	free(r->username);
	if (r->password) {
		sodium_memzero(r->password, r->password_len);
		free(r->password);
	}
	free(r->b.name);
	free(r);
}

static void lk_redis_free(struct lk_backend *b)
{
	struct lk_redis *r = (struct lk_redis *)b;

	if (!r || r->closing)
		return;
	r->closing = true;
	lk_redis_enter(r);
	lk_redis_conn_close(&r->cmd);
	lk_redis_conn_close(&r->sub);
	lk_redis_conn_close(&r->sen);
	lk_redis_dns_unref(r->dns);
	r->dns = NULL;
	lk_redis_leave(r);
}

static const char *lk_redis_server(const struct lk_backend *b)
{
	const struct lk_redis *r = (const struct lk_redis *)b;

	return r->master_gen ? r->master.shown : "";
}

static const struct lk_backend_ops lk_redis_ops = {
	.type = "redis",
	.key_new = lk_redis_key_new,
	.key_free = lk_redis_key_free,
	.acquire = lk_redis_acquire,
	.renew = lk_redis_renew,
	.release = lk_redis_release,
	.watch = lk_redis_watch,
	.holdoff_until = lk_redis_holdoff_until,
	.ready = lk_redis_ready,
	.server = lk_redis_server,
	.free = lk_redis_free,
};

int lk_redis_new(struct event_base *base, const struct lk_config_backend *cfg,
                 const struct lk_backend_hooks *hooks, struct lk_backend **ret,
                 char *err, size_t errlen)
{
	const char *addr;
	struct lk_redis *r;
	struct timeval now = { 0, 0 };
	int rc;

	/* lk_backend_new checked the arguments, and cfg against the rules in backend.h. */
	r = calloc(1, sizeof(*r));
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r->b.ops = &lk_redis_ops;
	r->base = base;
	r->timeout_ms = cfg->timeout_ms;
	TAILQ_INIT(&r->keys);
	r->cmd.r = r->sub.r = r->sen.r = r;
	TAILQ_INIT(&r->cmd.fifo);
	TAILQ_INIT(&r->sub.fifo);
	TAILQ_INIT(&r->sen.fifo);
	if (hooks)
		r->b.hooks = *hooks;
	r->b.name = strdup(cfg->name ? cfg->name : "redis");
	if (!r->b.name) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	rc = lk_backend_redis_check(cfg, err, errlen);
	if (rc < 0)
		goto fail;
	r->db = cfg->db;
	r->min_acked = cfg->min_replicas_acked;

	if (cfg->n_sentinels) {
		rc = lk_redis_sentinel_new(r, cfg, err, errlen);
		if (rc < 0)
			goto fail;
	} else {
		bool tls;

		/* lk_backend_redis_check() has taken the address (its rule says what is wrong). */
		addr = cfg->address ? cfg->address : LK_BACKEND_REDIS_DEFAULT_ADDRESS;
		if (lk_redis_addr_set(&r->master, lk_backend_redis_address(addr, &tls)) < 0) {
			rc = -EINVAL;
			snprintf(err, errlen, "invalid address \"%s\"", addr);
			goto fail;
		}
		r->master_gen = 1;
	}

	if (lk_backend_redis_tls(cfg) && (rc = lk_redis_tls_new(r, cfg, err, errlen)) < 0)
		goto fail;
	if (cfg->username && !(r->username = strdup(cfg->username))) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (cfg->password_file) {
		rc = lk_backend_read_secret(cfg->password_file, LK_REDIS_MAX_PASSWORD_LEN,
		                            &r->password, &r->password_len, err, errlen);
		if (rc < 0)
			goto fail;
	}

	/* Sentinels may be DNS names, and so may the master they name. */
	if (r->sentinel || (r->master.port && !r->master.numeric)) {
		r->dns = calloc(1, sizeof(*r->dns));
		if (!r->dns) {
			rc = -ENOMEM;
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		r->dns->refs = 1;
		/* DISABLE_WHEN_INACTIVE: an idle resolver must not keep the loop alive. */
		r->dns->base = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
		                                    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (!r->dns->base) {
			free(r->dns);
			r->dns = NULL;
			rc = -ENOMEM;
			snprintf(err, errlen, "cannot set up the DNS resolver");
			goto fail;
		}
	}

	if (lk_redis_conn_init(r, &r->cmd, LK_REDIS_CMD) < 0 ||
	    lk_redis_conn_init(r, &r->sub, LK_REDIS_SUB) < 0 ||
	    (r->sentinel && lk_redis_conn_init(r, &r->sen, LK_REDIS_SENTINEL) < 0)) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	r->cmd.addr = r->sub.addr = r->master;

	/* Connect from the loop, not from here: the caller gets its backend before any hook. */
	if (r->sentinel)
		evtimer_add(r->sen.retry, &now);
	evtimer_add(r->cmd.retry, &now);
	evtimer_add(r->sub.retry, &now);
	*ret = &r->b;
	return 0;

fail:
	lk_redis_free(&r->b);
	return rc;
}

/* What redis.c (scripts, reply mapping, operations), redis_conn.c (connections, DNS,
 * handshake, deadlines), redis_keys.c (keys) and redis_sentinel.c (finding the master) share:
 * the Redis backend's limits, its structs and the functions one file calls in another. Only
 * those files include it. */
#ifndef LK_LOCKS_REDIS_INT_H
#define LK_LOCKS_REDIS_INT_H

#include "locks/backend.h"
#include "locks/backend_int.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

/* hiredict's hiredis shims (Debian's libhiredict-shims-dev 1.3.1) spell this flag
 * REDIS_DICONNECTING. */
#if !defined(REDIS_DISCONNECTING) && defined(REDICT_DISCONNECTING)
#define REDIS_DISCONNECTING REDICT_DISCONNECTING
#endif

/* Limits on what the config and the server control. */
#define LK_REDIS_MAX_HOST_LEN      LK_BACKEND_MAX_HOST_LEN
#define LK_REDIS_MAX_KEY_LEN       LK_BACKEND_KEY_MAX
#define LK_REDIS_MAX_IDENTITY_LEN  LK_BACKEND_MAX_IDENTITY_LEN
#define LK_REDIS_MAX_VALUE_LEN     1024  /* a lock value read back from the server */
#define LK_REDIS_MAX_PASSWORD_LEN  4096  /* bytes read from password_file */
#define LK_REDIS_MAX_SHOWN_LEN     160   /* server text quoted in error messages and logs */
#define LK_REDIS_MAX_DESC_LEN      (LK_REDIS_MAX_SHOWN_LEN + 32) /* a reply described */
#define LK_REDIS_MAX_LOG_LEN       512
#define LK_REDIS_MAX_ATTEMPT       32    /* backoff exponent: far past the cap already */

#define LK_REDIS_BACKOFF_BASE_MS   100
#define LK_REDIS_BACKOFF_CAP_MS    5000

/* TCP keepalive on both connections: the subscriber connection is idle for long stretches and
 * sends nothing we could time out, so a silently dropped connection (a NAT or conntrack entry
 * expiring) is only found by the kernel's probes. */
#define LK_REDIS_KEEPALIVE_IDLE_S  15
#define LK_REDIS_KEEPALIVE_INTVL_S 5
#define LK_REDIS_KEEPALIVE_CNT     3

#define LK_REDIS_SHA_LEN 40
#define LK_REDIS_RUN_ID_LEN 40
#define LK_REDIS_MAX_INFO_LEN (64 * 1024) /* INFO server is about 1 KiB */

/* Server text quoted in a message is cut at LK_REDIS_MAX_SHOWN_LEN whatever the buffer. */
#define LK_REDIS_SHOWN_CAP(size) \
	((size) < LK_REDIS_MAX_SHOWN_LEN + 1 ? (size) : LK_REDIS_MAX_SHOWN_LEN + 1)

enum lk_redis_script { LK_REDIS_ACQUIRE, LK_REDIS_RENEW, LK_REDIS_RELEASE, LK_REDIS_N_SCRIPTS };

enum lk_redis_state {
	LK_REDIS_DOWN,        /* waiting for the retry timer */
	LK_REDIS_RESOLVING,   /* evdns lookup in flight */
	LK_REDIS_CONNECTING,  /* context created, connect callback pending */
	LK_REDIS_HANDSHAKE,   /* connected; AUTH / SCRIPT LOAD / SUBSCRIBE replies pending */
	LK_REDIS_UP,
};

enum lk_redis_req_kind {
	LK_REDIS_REQ_AUTH,
	LK_REDIS_REQ_SELECT,    /* SELECT db */
	LK_REDIS_REQ_ROLE,      /* ROLE: with Sentinel, the server must still be the master */
	LK_REDIS_REQ_MASTER,    /* SENTINEL get-master-addr-by-name, on a sentinel */
	LK_REDIS_REQ_LOAD,
	LK_REDIS_REQ_INFO,      /* INFO server: which instance this is (I10) */
	LK_REDIS_REQ_SUBSCRIBE, /* ours alone: hiredis routes the confirmation to the channel */
	LK_REDIS_REQ_SCRIPT,    /* a lock operation for a user */
	LK_REDIS_REQ_WAIT,      /* WAIT after an acquire or renewal (min_replicas_acked) */
};

struct lk_redis;
struct lk_redis_conn;
struct lk_redis_sentinel;
struct lk_redis_tls;
struct ssl_st;

/* Where one connection goes: the configured server, the master the sentinels named, or a
 * sentinel. */
struct lk_redis_addr {
	char host[LK_REDIS_MAX_HOST_LEN + 1]; /* IP literal, DNS name or socket path */
	int port;                        /* 0 for a unix socket */
	bool numeric;                    /* host is an IP literal: no lookup */
	char shown[LK_REDIS_MAX_HOST_LEN + 16]; /* the address as log lines show it */
};

/* What a connection is for. */
enum lk_redis_role {
	LK_REDIS_CMD,                    /* handshake, then the lock scripts */
	LK_REDIS_SUB,                    /* SUBSCRIBE to the keys' release channels */
	LK_REDIS_SENTINEL,               /* ask a sentinel for the master, then SUBSCRIBE to
	                                    +switch-master */
};

struct lk_redis_req {
	TAILQ_ENTRY(lk_redis_req) link;  /* in conn->fifo while in_fifo */
	bool in_fifo;
	enum lk_redis_req_kind kind;
	struct lk_redis_conn *conn;
	redisAsyncContext *ac;           /* the context it was sent on */
	int64_t deadline_ns;
	/* LOAD: which script. SCRIPT: which operation. */
	enum lk_redis_script script;
	/* SCRIPT only. */
	struct lk_backend_key *k;        /* holds a reference */
	lk_backend_reply_fn *cb;
	void *arg;
	uint64_t token;
	int64_t ttl_ms;
	int64_t sent_ns;
	bool retried;                    /* the NOSCRIPT fallback to EVAL was used */
	/* ACQUIRE: the token of our own orphan that this (second) attempt deletes, 0 if none. */
	uint64_t orphan;
	/* SCRIPT: the WAIT sent right after it, alive until its reply, which comes later. */
	struct lk_redis_req *wait;
	/* WAIT only: the script's OK reply waits here (held) for the replicas' count; detached
	 * when nothing waits for it any more. prev_*: the key's proven tenure before the script,
	 * put back if the replicas do not acknowledge it. */
	bool held, detached;
	uint64_t prev_token;
	int64_t prev_until_ns;
};

TAILQ_HEAD(lk_redis_req_list, lk_redis_req);

/* evdns needs its base to outlive every lookup it has in flight (a lookup's late callback
 * touches the base), so the base sits in this refcounted box: one reference for the backend,
 * one per lookup. A lookup that nobody waits for any more is detached (conn = NULL) and left
 * to finish on its own. */
struct lk_redis_dns {
	struct evdns_base *base;
	unsigned refs;
};

struct lk_redis_resolve {
	struct lk_redis_dns *dns;
	struct lk_redis_conn *conn;      /* NULL once detached */
};

struct lk_redis_conn {
	struct lk_redis *r;
	enum lk_redis_role role;
	struct lk_redis_addr addr;       /* what the current attempt connects to */
	/* CMD and SUB with Sentinel: the r->master_gen this attempt used, and whether the
	 * connection waits for the sentinels' next answer before it tries again. */
	unsigned gen;
	bool waiting;
	enum lk_redis_state state;
	redisAsyncContext *ac;           /* NULL as soon as we know the context is dying */
	struct lk_redis_resolve *resolve;
	/* With TLS: the SSL object of the context ssl_ac, owned by hiredis (for the reason a
	 * handshake failed, which hiredis reports as a bare I/O error). */
	struct ssl_st *ssl;
	const redisAsyncContext *ssl_ac;
	struct event *deadline;          /* the attempt's or the oldest request's deadline */
	struct event *retry;             /* reconnect backoff */
	struct event *flush;             /* made active by a send: writes at the end of this turn */
	int64_t attempt_deadline_ns;     /* resolve + connect + handshake */
	unsigned attempt;                /* failed attempts since the last good handshake */
	bool outage;                     /* the current outage has been logged at WARN */
	bool was_up;                     /* has ever completed a handshake */
	struct lk_redis_req_list fifo;
	size_t n_fifo, fifo_peak;        /* requests in fifo, and the most since it last emptied */
	char why[LK_REDIS_MAX_LOG_LEN];  /* why the connection was last given up */
};

struct lk_backend_key {
	TAILQ_ENTRY(lk_backend_key) link;
	LIST_ENTRY(lk_backend_key) hlink; /* in r->buckets[hash & (n_buckets - 1)] */
	struct lk_redis *r;
	char *key;                       /* K */
	char *fence;                     /* K:fence */
	char *channel;                   /* K:released */
	size_t chlen;
	uint64_t chash;                  /* of channel: finds the keys a release notice is for */
	char *identity;
	lk_backend_notify_fn *notify;
	void *notify_arg;
	bool watching;
	bool unsure;                     /* an acquire's outcome is unknown: an orphan may exist */
	uint64_t proven_token;           /* the last tenure an acquire or renewal proved, 0 if none */
	int64_t proven_until_ns;         /* when its lease, as last proven, runs out */
	bool dead;                       /* key_free() was called */
	unsigned refs;                   /* requests in flight + notify loops walking past it */
	char text[];                     /* key, fence, channel and identity, in one allocation */
};

TAILQ_HEAD(lk_redis_key_list, lk_backend_key);
LIST_HEAD(lk_redis_key_chain, lk_backend_key);

#define LK_REDIS_MIN_BUCKETS 64
#define LK_REDIS_TRIM_AFTER  1024  /* requests in flight at once that make a burst */

struct lk_redis {
	struct lk_backend b;             /* first, so that the two pointers convert */
	struct event_base *base;
	/* The server: the configured address, or with Sentinel the master last named by a
	 * sentinel (master_gen counts those answers; 0: none yet). */
	struct lk_redis_addr master;
	unsigned master_gen;
	int64_t timeout_ms;
	char *username;                  /* NULL if none (AUTH <password> as the default user) */
	char *password;                  /* NULL if none; never in a message */
	size_t password_len;
	unsigned db;                     /* SELECTed when not 0 */
	unsigned min_acked;              /* min_replicas_acked: WAIT after acquire and renew */
	struct lk_redis_sentinel *sentinel; /* NULL without Sentinel */
	struct lk_redis_tls *tls;        /* NULL without TLS */
	struct lk_redis_dns *dns;        /* NULL unless host needs a lookup */
	char sha[LK_REDIS_N_SCRIPTS][LK_REDIS_SHA_LEN + 1];
	/* The server instance last seen by INFO server (I10); run_id "" until the first. */
	char run_id[LK_REDIS_RUN_ID_LEN + 1], prev_run_id[LK_REDIS_RUN_ID_LEN + 1];
	int64_t reached_ns;              /* when this instance was first reached */
	int64_t uptime_ms;               /* how long it had surely been up then, -1 if unknown */
	bool replaced;                   /* another instance was seen before this one */
	bool info_failed;                /* INFO server was refused: logged once */
	struct lk_redis_conn cmd, sub;
	struct lk_redis_conn sen;        /* with Sentinel only (role SENTINEL) */
	struct lk_redis_key_list keys;
	/* The keys by release channel, so that a notice (and key_free's "is this channel shared")
	 * costs a short chain, not a walk of every key: an agent with 10,000 locks hears 10,000
	 * notices when its peer drains. Grown only outside every enter() frame, so that no walk
	 * of a chain (lk_redis_notify) ever sees the table move. */
	struct lk_redis_key_chain *buckets;
	size_t n_buckets;                /* a power of two, or 0 before the first key */
	size_t n_keys;
	unsigned depth;                  /* active enter() frames */
	unsigned n_ctx;                  /* contexts hiredis has not finished with */
	bool closing;                    /* free() was called */
};

/* ---- redis.c ---- */

void lk_redis_describe(const redisReply *rep, char *buf, size_t cap);
void lk_redis_finalize(struct lk_redis *r);
void lk_redis_key_unref(struct lk_backend_key *k);
void lk_redis_notify(struct lk_redis *r, enum lk_backend_notice what,
                     const char *channel, size_t chlen);
bool lk_redis_script_reply(struct lk_redis_conn *conn, redisAsyncContext *ac,
                           struct lk_redis_req *req, const redisReply *reply);
extern const char *const lk_redis_scripts[LK_REDIS_N_SCRIPTS];

/* ---- redis_conn.c ---- */

void lk_redis_cmd_cb(redisAsyncContext *ac, void *reply, void *privdata);
void lk_redis_conn_close(struct lk_redis_conn *conn);
void lk_redis_dns_unref(struct lk_redis_dns *dns);
void lk_redis_enter(struct lk_redis *r);
const char *lk_redis_errstr(const redisAsyncContext *ac, char *buf, size_t cap,
                            const char *fallback);
void lk_redis_fifo_remove(struct lk_redis_req *req);
void lk_redis_leave(struct lk_redis *r);
void lk_redis_log(struct lk_redis *r, enum lk_backend_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int lk_redis_send(struct lk_redis_conn *conn, struct lk_redis_req *req,
                  redisCallbackFn *fn, void *privdata,
                  int argc, const char **argv, const size_t *lens);
int lk_redis_subscribe(struct lk_redis_conn *conn, const char *channel);


/* Record the run_id and uptime an `INFO server` reply gives (redis.c, I10). */
void lk_redis_info_reply(struct lk_redis *r, const redisReply *reply);

/* Re-arm conn's deadline timer for whatever is due first. */
void lk_redis_conn_arm(struct lk_redis_conn *conn);
/* The connection is gone or going: forget its context, schedule the next attempt. */
void lk_redis_conn_lost(struct lk_redis_conn *conn, const char *why);
/* hiredis's connect and disconnect callbacks. */
void lk_redis_on_connect(const redisAsyncContext *cac, int status);
void lk_redis_on_disconnect(const redisAsyncContext *cac, int status);

/* ---- redis_dial.c ---- */

/* Set a from "host:port", "[v6]:port" or "unix:/path": 0 or -EINVAL. */
int lk_redis_addr_set(struct lk_redis_addr *a, const char *addr);
/* Start one attempt of conn (its DNS lookup or its connect). */
void lk_redis_conn_start(struct lk_redis_conn *conn);
/* Set up conn's timers for role: 0 or -ENOMEM. */
int lk_redis_conn_init(struct lk_redis *r, struct lk_redis_conn *conn, enum lk_redis_role role);
/* Give up the current connection or attempt (the next one follows with backoff). */
void lk_redis_conn_break(struct lk_redis_conn *conn, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Start an attempt at once if conn is down; fresh: at another server, so its backoff starts
 * over (otherwise the failures go on counting). */
void lk_redis_conn_kick(struct lk_redis_conn *conn, bool fresh);
/* Send a handshake request on conn (within the attempt's deadline): 0 or a negative errno. */
int lk_redis_send_handshake(struct lk_redis_conn *conn, enum lk_redis_req_kind kind,
                            enum lk_redis_script script, int argc, const char **argv,
                            const size_t *lens);

/* ---- redis_wait.c ---- */

/* After an acquire or renewal was sent on conn: WAIT for the replicas (min_replicas_acked). */
void lk_redis_wait_send(struct lk_redis_conn *conn, struct lk_redis_req *req);
/* At a script's delivery: true if its OK must wait for the WAIT's reply (it was moved there);
 * otherwise rep may have become an ERROR (msg[cap]) and is delivered now. */
bool lk_redis_wait_hold(struct lk_redis_req *req, struct lk_reply *rep, char *msg, size_t cap);
/* The WAIT's reply (NULL: the connection went): deliver what waited for it. */
void lk_redis_wait_reply(struct lk_redis *r, struct lk_redis_req *w, const redisReply *reply);

/* ---- redis_sentinel.c ---- */

/* Set up Sentinel from cfg (sentinels, master_name): 0, or a negative errno with err. */
int lk_redis_sentinel_new(struct lk_redis *r, const struct lk_config_backend *cfg,
                          char *err, size_t errlen);
void lk_redis_sentinel_free(struct lk_redis *r);
/* The sentinel connection is connected: send its handshake. False if a send failed. */
bool lk_redis_sentinel_handshake(struct lk_redis_conn *conn);
/* The reply to SENTINEL get-master-addr-by-name: false if the connection was given up. */
bool lk_redis_sentinel_master_reply(struct lk_redis_conn *conn, const redisReply *reply);
/* A message on the sentinel connection (+switch-master). */
void lk_redis_sentinel_message(struct lk_redis *r, const redisReply *chan,
                               const redisReply *msg);
/* The reply to ROLE on the command connection: false if the connection was given up. */
bool lk_redis_sentinel_role_reply(struct lk_redis_conn *conn, const redisReply *reply);
/* A command or subscriber connection wants to connect: true if it may now (the sentinels
 * answered since its last attempt), else it waits for their next answer, which is asked. */
bool lk_redis_sentinel_may_connect(struct lk_redis_conn *conn);
/* The user conn logs in as: the sentinels' or the master's; NULL for the default user. */
const char *lk_redis_conn_user(const struct lk_redis_conn *conn);
/* The sentinel connection was lost: the next attempt asks the next sentinel. */
void lk_redis_sentinel_lost(struct lk_redis_conn *conn);

/* ---- redis_tls.c ---- */

/* Set up r->tls from cfg's ca_file, cert_file, key_file and server_name: 0, or a negative
 * errno with err (a file that does not load, with OpenSSL's reason). */
int lk_redis_tls_new(struct lk_redis *r, const struct lk_config_backend *cfg,
                     char *err, size_t errlen);
void lk_redis_tls_free(struct lk_redis *r);
/* Make the new context ac of conn speak TLS, checking the certificate's name: 0, or a
 * negative errno with why[cap] (ac is then the caller's to free). */
int lk_redis_tls_start(struct lk_redis_conn *conn, redisAsyncContext *ac, char *why, size_t cap);
/* Whether conn's context ac speaks TLS and its handshake has not finished. */
bool lk_redis_tls_pending(const struct lk_redis_conn *conn, const redisAsyncContext *ac);
/* If ac's TLS handshake failed, OpenSSL's reason in buf[cap] and true. */
bool lk_redis_tls_errstr(const struct lk_redis_conn *conn, const redisAsyncContext *ac,
                         char *buf, size_t cap);

/* ---- redis_keys.c ---- */

/* The backend's key_new and key_free (backend.h). */
struct lk_backend_key *lk_redis_key_new(struct lk_backend *b, const char *key, const char *identity,
                                        lk_backend_notify_fn *notify, void *arg);
void lk_redis_key_free(struct lk_backend_key *k);
/* Unlink and free a key nothing refers to any more. */
void lk_redis_key_destroy(struct lk_backend_key *k);
/* Put k (its channel set) on r's key list and channel index: 0 or -ENOMEM; and take it off. */
int lk_redis_key_link(struct lk_redis *r, struct lk_backend_key *k);
void lk_redis_key_unlink(struct lk_backend_key *k);

/* ---- redis_handoff.c ---- */

/* What an acquire's successful answer says came before the tenure, with *gap_ns the time
 * since the release (-1: unknown); LK_AFTER_UNKNOWN with why[cap] when it cannot be read. */
enum lk_reply_after lk_redis_handoff(const redisReply *reply, int64_t *gap_ns, char *why,
                                     size_t cap);

#endif

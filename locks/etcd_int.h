/* What the files of the etcd backend share (etcd.c and etcd_*.c, but not the JSON mapping
 * in etcd_json.c): its structs, limits and internal functions. Nothing else includes it;
 * everything else sees the backend through locks/backend.h.
 *
 * Lifetimes follow redis.c:
 * - User code (reply callbacks, notify hooks, hooks.log) never runs inside a curl callback:
 *   curl forbids removing handles there, and a user callback may free anything. Curl callbacks
 *   only record what happened; completions and notifications are dispatched after
 *   curl_multi_socket_action() returns.
 * - Every entry from the loop brackets itself with lk_etcd_enter()/lk_etcd_leave(); free()
 *   only marks the backend closing and aborts its transfers, and the memory goes when the
 *   last frame leaves.
 * - An operation holds a reference on its key; key_free() only marks the key dead.
 * - A handler finishes its own bookkeeping before it calls back, and returns right after.
 */
#ifndef LK_ETCD_INT_H
#define LK_ETCD_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <curl/curl.h>
#include <event2/util.h>

#include "locks/backend.h"
#include "locks/backend_int.h"
#include "locks/etcd_json.h"

/* Limits on what the config and the server control. */
#define LK_ETCD_FENCE_SUFFIX       ":fence"
#define LK_ETCD_TENURE_SUFFIX      ":state"
#define LK_ETCD_SEQ_SUFFIX         ":seq"
#define LK_ETCD_CANDIDATE_SEP      "/"
#define LK_ETCD_LEASE_HEX          16    /* a lease id in a candidate key: 16 hex digits */
#define LK_ETCD_CAND_HEX           (LK_ETCD_LEASE_HEX + 4) /* ... then the key's number */
#define LK_ETCD_MAX_KEY_LEN        LK_BACKEND_KEY_MAX
_Static_assert(LK_BACKEND_KEY_MAX + sizeof(LK_ETCD_FENCE_SUFFIX) - 1 <= LK_ETCD_JSON_MAX_KEY,
               "<key>:fence must fit a gateway key");
_Static_assert(LK_BACKEND_KEY_MAX + sizeof(LK_ETCD_TENURE_SUFFIX) - 1 <= LK_ETCD_JSON_MAX_KEY,
               "<key>:state must fit a gateway key");
_Static_assert(LK_BACKEND_KEY_MAX + 1 + LK_ETCD_CAND_HEX <= LK_ETCD_JSON_MAX_KEY,
               "<key>/<lease><n> must fit a gateway key");
#define LK_ETCD_MAX_IDENTITY_LEN   256   /* our identity, from the config or $HOSTNAME */
#define LK_ETCD_MAX_PASSWORD_LEN   LK_ETCD_JSON_MAX_PASSWORD /* bytes read from password_file */
#define LK_ETCD_MAX_RESPONSE       LK_ETCD_JSON_MAX_BODY     /* one response body */
#define LK_ETCD_MAX_WATCH_PENDING  (LK_ETCD_JSON_MAX_BODY + CURL_MAX_WRITE_SIZE) /* partial line */
#define LK_ETCD_MAX_SHOWN_LEN      160   /* server text quoted in messages */
#define LK_ETCD_MAX_LOG_LEN        512
#define LK_ETCD_MAX_ERR_LEN        256   /* a parser's complaint */
#define LK_ETCD_MAX_ATTEMPT        32    /* backoff exponent: far past the cap already */
#define LK_ETCD_RESPONSE_INITIAL   1024  /* first allocation for a response body */

/* Lock operations' requests in flight at once; more wait in e->xqueue, their timeouts not yet
 * running. Each one in flight holds a connection and its buffers: a burst of 10,000 acquires
 * would otherwise open 10,000 connections. Keepalives, batched renewals, auth, probes and
 * watches never wait (etcd_http.c). */
#define LK_ETCD_MAX_RUNNING        32
#define LK_ETCD_MAX_IDLE_CONNS     (2 * LK_ETCD_MAX_RUNNING) /* curl's pool of idle connections */
#define LK_ETCD_RECV_BUFFER        4096  /* curl's receive buffer per transfer (min. 1024) */

#define LK_ETCD_BACKOFF_BASE_MS    100
#define LK_ETCD_BACKOFF_CAP_MS     5000

enum lk_etcd_call {
	LK_ETCD_CALL_GRANT,
	LK_ETCD_CALL_KEEPALIVE,
	LK_ETCD_CALL_REVOKE,
	LK_ETCD_CALL_TXN,
	LK_ETCD_CALL_RANGE,
	LK_ETCD_CALL_WATCH,
	LK_ETCD_CALL_AUTH,
	LK_ETCD_CALL_STATUS,
};

enum lk_etcd_xfer_kind {
	LK_ETCD_X_OP,       /* one step of a lock operation */
	LK_ETCD_X_AUTH,     /* authenticate: ops and watches may wait for it */
	LK_ETCD_X_REVOKE,   /* fire and forget: a revoke, or a give-back txn */
	LK_ETCD_X_WATCH,    /* a key's watch stream */
	LK_ETCD_X_PROBE,    /* is etcd reachable again? */
	LK_ETCD_X_LEASE,    /* a shared lease's grant or keepalive */
	LK_ETCD_X_BATCH,    /* one txn proving the keys of many renewals */
};

enum lk_etcd_op_kind { LK_ETCD_ACQUIRE, LK_ETCD_RENEW, LK_ETCD_RELEASE };

enum lk_etcd_step {
	LK_ETCD_STEP_LEASE,     /* acquire, renew: waiting for the shared lease's grant or keepalive */
	LK_ETCD_STEP_CREATE,    /* acquire: look txn that creates our candidate key if missing */
	LK_ETCD_STEP_PEEK,      /* acquire: read-only look, so that a follower costs no raft writes */
	LK_ETCD_STEP_CHECK,     /* renew: range of our key */
	LK_ETCD_STEP_DELETE,    /* release: txn delete-if-ours that marks the release */
	LK_ETCD_STEP_RECLAIM,   /* acquire: txn delete of our own spent candidate key */
	LK_ETCD_STEP_HISTORY,   /* acquire: the queue when a key we adopted was created */
	LK_ETCD_STEP_BATCH,     /* renew: our key read in a txn shared with other renewals */
};

/* Renewals read their keys in shared txns of at most this many keys (two ranges each: etcd
 * takes 128 operations per txn by default, --max-txn-ops). */
#define LK_ETCD_BATCH_MAX 64

struct lk_etcd;
struct lk_etcd_op;

struct lk_etcd_xfer {
	TAILQ_ENTRY(lk_etcd_xfer) link;  /* in e->xfers while curl has it, or it waits for curl */
	TAILQ_ENTRY(lk_etcd_xfer) qlink; /* in e->xqueue while queued, e->xfailed while failed */
	bool queued;                     /* waits for a slot (LK_ETCD_MAX_RUNNING); no curl handle */
	bool failed;                     /* could not be handed to curl: fails from the loop */
	int64_t timeout_ms;              /* its total timeout, 0: none */
	struct lk_etcd *e;
	enum lk_etcd_xfer_kind kind;
	enum lk_etcd_call call;
	CURL *easy;
	struct curl_slist *headers;
	char *body;                      /* request body, owned; curl reads it in place */
	bool secret;                     /* body holds the password: wiped before it is freed */
	char *resp;                      /* response body (watch: the unfinished line) */
	size_t resp_len, resp_cap;
	bool too_big;                    /* the response passed its cap: aborted */
	size_t endpoint;                 /* index of the endpoint it went to */
	unsigned token_gen;              /* which auth token it carried */
	struct lk_etcd_op *op;           /* X_OP */
	struct lk_backend_key *k;        /* X_WATCH: no reference, the key stops it before dying */
	int64_t start_revision;          /* X_WATCH: what the stream was created with */
	int64_t rev_floor;               /* the highest revision seen when it was sent (I10) */
	struct lk_etcd_lease *lease;     /* X_LEASE */
	struct lk_etcd_op **batch;       /* X_BATCH: the renewals it proves (NULL: gone since) */
	size_t n_batch;
	/* X_WATCH: what the write callback found, for the completion to act on. */
	bool http_checked, http_ok;
	bool token_invalid, conn_level, garbage;
	char why[LK_ETCD_MAX_LOG_LEN];
	char errbuf[CURL_ERROR_SIZE];
};

TAILQ_HEAD(lk_etcd_xfer_list, lk_etcd_xfer);

struct lk_etcd_op {
	TAILQ_ENTRY(lk_etcd_op) link;    /* in e->ops */
	TAILQ_ENTRY(lk_etcd_op) lwait;   /* in its lease's waiters, while step == LEASE; in
	                                    e->batch_wait while step == BATCH and not sent */
	bool lwaiting;
	bool bwaiting;                   /* in e->batch_wait */
	struct lk_etcd_xfer *bx;         /* the batch txn proving it, or NULL */
	size_t bslot;                    /* its place in bx->batch */
	enum lk_etcd_step after_lease;   /* the step that follows the lease's answer */
	struct lk_etcd *e;
	enum lk_etcd_op_kind kind;
	enum lk_etcd_step step;
	struct lk_backend_key *k;        /* holds a reference */
	lk_backend_reply_fn *cb;
	void *arg;
	uint64_t token;
	int64_t rev;                     /* renew/release: the tenure's create_revision */
	int64_t ttl_ms;
	struct lk_etcd_lease *l;         /* acquire, renew: the shared lease (a reference) */
	int64_t lease;                   /* release: the tenure's lease id */
	int64_t orphan_rev;              /* acquire: our spent candidate key being deleted */
	int64_t released_rev;            /* acquire, HISTORY: what the marker names */
	bool state_found;                /* ... and whether there is a marker */
	bool reclaimed;                  /* acquire: deleted one once already */
	int64_t ttl_s;                   /* acquire/renew: the lease's TTL as last proven */
	int64_t sent_ns;                 /* when the proving grant or keepalive was sent */
	struct lk_etcd_xfer *xfer;       /* the step in flight, or NULL */
	bool waiting_auth;               /* parked until authenticate answers */
	bool reauthed;                   /* the one retry after an invalid token was used */
	unsigned hops;                   /* endpoints tried after failed connects */
	struct event *defer;             /* a reply decided at once, delivered from the loop */
	enum lk_reply_status deferred;
};

TAILQ_HEAD(lk_etcd_op_list, lk_etcd_op);

/* A lease shared by every key of this backend with the same TTL, as etcd's
 * concurrency.Session shares one: candidate keys and tenures hang on it, so that keepalives
 * do not grow with the number of locks. Granted on first use, kept alive every third of its
 * TTL while it exists, and replaced when etcd says it is gone (every key on it went too). */
struct lk_etcd_lease {
	TAILQ_ENTRY(lk_etcd_lease) link; /* in e->leases; freed with the backend */
	struct lk_etcd *e;
	int64_t ttl_s;                   /* asked for, in whole seconds */
	int64_t id;                      /* 0 until granted, and again once found gone */
	int64_t proven_ns;               /* send time of the last grant or keepalive it survived */
	int64_t proven_ttl_s;            /* the TTL that answer gave */
	struct lk_etcd_xfer *x;          /* the grant or keepalive in flight */
	int64_t x_sent_ns;
	TAILQ_HEAD(, lk_etcd_op) waiters; /* ops parked in step LEASE */
	struct event *tick;              /* the next keepalive */
	bool revoking;                   /* quiesce: revoked, not to be used again */
};

TAILQ_HEAD(lk_etcd_lease_list, lk_etcd_lease);

struct lk_backend_key {
	TAILQ_ENTRY(lk_backend_key) link;
	struct lk_etcd *e;
	unsigned num;                    /* this backend's key number, in our candidate keys' names */
	char *key;
	size_t key_len;
	char *fkey;                      /* "<key>:fence": the token base */
	size_t fkey_len;
	char *tkey;                      /* "<key>:state": "released <create_revision>" */
	size_t tkey_len;
	char *pkey;                      /* "<key>/": the candidates' prefix */
	size_t pkey_len;
	char *qkey;                      /* "<key>:seq": when the newest candidate arrived */
	size_t qkey_len;
	char *identity;
	size_t identity_len;
	lk_backend_notify_fn *notify;
	void *notify_arg;
	bool dead;                       /* key_free() was called */
	unsigned refs;                   /* operations in flight + notify sweeps walking past it */
	/* Our candidacy: our key "<key>/<cand_lease><num>" and its create_revision, 0 if none
	 * known. */
	int64_t cand_rev;
	int64_t cand_lease;
	/* The tenure this key holds (or held last), for renew and release: its key's
	 * create_revision and lease. A tenure that ended keeps them, so that a release still
	 * compares on both (I3), but is not renewed again, and its key never leads again. */
	uint64_t token;
	int64_t rev;
	int64_t lease;
	bool ended;
	bool given_up;                   /* the lock acquires again: it no longer counts on it */
	struct event *texp;              /* the tenure's lease, as last proven, runs out */
	int64_t texp_ns;
	bool refence;                    /* the cluster was replaced: the next create re-seeds */
	/* The fence key's value as the last look read it, until a watch sees it change. */
	int64_t fence;
	bool fence_known;
	/* The watch saw the release of our only older candidate (the marker names pred_rev): the
	 * next acquire leads without asking etcd, as concurrency.Election's waiter does. */
	bool fast_lead;
	/* The guard against an end without a release (etcd_op.c lk_etcd_oldest()): our only older
	 * candidate, when last seen (pred_rev, for our key pred_for); when our key was first seen
	 * oldest (lowest_ns, for our key lowest_for) and whether that followed a release. */
	int64_t pred_rev, pred_for;
	int64_t lowest_for, lowest_ns;
	bool lowest_graceful;
	enum lk_reply_after lowest_after; /* ... what that tenure before ours was, for telemetry */
	/* When the watch showed the release of our only older candidate (our key: seen_for): the
	 * start of the handoff gap as this agent can measure it, with no clock in etcd. */
	int64_t release_seen_ns, release_seen_for;
	/* The watch, over the candidates' prefix. */
	bool watching;                   /* wanted */
	struct lk_etcd_xfer *wx;         /* the stream, or NULL */
	struct event *wretry;            /* backoff before the stream is resumed */
	struct event *wdeadline;         /* the stream must be confirmed ("created") by then */
	unsigned wattempt;
	int64_t wlast;                   /* last revision whose events were seen; 0: none */
	bool wcreated;                   /* the current stream was confirmed */
	bool wwaiting_auth;
	bool notify_pending;             /* set inside curl callbacks, delivered after */
};

TAILQ_HEAD(lk_etcd_key_list, lk_backend_key);

TAILQ_HEAD(lk_etcd_sock_list, lk_etcd_sock);

struct lk_etcd {
	struct lk_backend b;             /* first, so that the two pointers convert */
	struct event_base *base;
	CURLM *multi;
	struct event *timer;             /* curl's timeout */
	struct event *probe;             /* next reachability probe */
	char **endpoints;                /* without a trailing '/' */
	size_t n_endpoints;
	size_t cur;                      /* the endpoint new requests go to */
	int64_t timeout_ms;
	char *username;                  /* NULL: no auth */
	char *password;                  /* never in a message */
	size_t password_len;
	char *ca_file, *cert_file, *key_file;
	char *token;                     /* auth token, NULL until authenticated */
	unsigned token_gen;              /* bumped with every new token */
	struct lk_etcd_xfer *auth_x;     /* authenticate in flight */
	struct lk_etcd_xfer *probe_x;    /* probe in flight */
	bool auth_failing;               /* the last authenticate failed: warned already */
	bool ready;
	bool was_ready;                  /* has ever been ready */
	bool outage;                     /* the current outage has been logged at WARN */
	bool watch_ok;                   /* a watch was confirmed inside a curl callback */
	bool reconnected;                /* RECONNECTED is owed to every key */
	bool notify_any;                 /* some key's notify_pending is set */
	/* The cluster answering (I10): its id and the highest revision a linearizable request
	 * saw; replaced once either went wrong, from reached_ns on. */
	uint64_t cluster_id;
	int64_t max_revision;
	bool replaced;
	int64_t reached_ns;
	char replaced_why[LK_ETCD_MAX_LOG_LEN];
	unsigned attempt;                /* failed probes since the last success */
	struct lk_etcd_xfer_list xfers;
	struct lk_etcd_xfer_list xqueue; /* requests waiting for a slot, oldest first (qlink) */
	struct lk_etcd_xfer_list xfailed; /* requests that will fail from the loop (qlink) */
	unsigned n_running;              /* requests (not watches) curl has */
	unsigned queued_peak;            /* requests queued since the queue was last empty */
	struct lk_etcd_op_list ops;
	struct lk_etcd_key_list keys;
	unsigned n_keys_made;            /* numbers the next key */
	struct lk_etcd_lease_list leases;
	struct lk_etcd_op_list batch_wait; /* renewals for the next batch txn */
	struct event *batch_ev;          /* sends it at the end of this loop turn */
	struct lk_etcd_sock_list socks;
	/* quiesce(): called once no revoke or withdrawal is in flight any more. */
	void (*quiesced)(void *arg);
	void *quiesced_arg;
	struct event *quiesce_ev;
	struct event *idle_ev;           /* a look for leases no key uses any more */
	unsigned depth;                  /* active enter() frames */
	bool closing;                    /* free() was called */
};

/* How a finished transfer went, in the terms the handlers need. */
struct lk_etcd_outcome {
	bool ok;                         /* HTTP 2xx and a body to parse */
	bool transport;                  /* no HTTP answer at all */
	bool never_sent;                 /* failed before the request could reach etcd */
	bool conn_level;                 /* the endpoint looks broken */
	bool garbage;                    /* an answer that makes no sense: not worth retrying */
	bool stale_token;                /* re-authenticating and retrying may fix it */
	long http;
	int64_t code;                    /* gRPC code of an error answer, 0 if none */
	char why[LK_ETCD_MAX_LOG_LEN];
};

/* etcd.c: the frames that keep the backend alive (see above), logging through the hooks,
 * the cluster seen (I10), key references. */
void lk_etcd_enter(struct lk_etcd *e);
void lk_etcd_leave(struct lk_etcd *e);
void lk_etcd_log(struct lk_etcd *e, enum lk_backend_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void lk_etcd_timeval(struct timeval *tv, int64_t ms);
int64_t lk_etcd_backoff(struct event *timer, unsigned *attempt);
bool lk_etcd_seen(struct lk_etcd *e, uint64_t cluster_id, int64_t revision,
                  const struct lk_etcd_xfer *x);
bool lk_etcd_seen_write(struct lk_etcd *e, uint64_t cluster_id, int64_t revision,
                        const struct lk_etcd_xfer *x, bool wrote);
void lk_etcd_key_unref(struct lk_backend_key *k);

/* etcd_op.c: the lock operations. */
void lk_etcd_op_free(struct lk_etcd_op *op);
void lk_etcd_op_fail(struct lk_etcd_op *op, enum lk_reply_status status,
                     const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void lk_etcd_op_next(struct lk_etcd_op *op);
void lk_etcd_op_xfer_done(struct lk_etcd_op *op, struct lk_etcd_xfer *x,
                          struct lk_etcd_outcome *o);
int lk_etcd_acquire(struct lk_backend_key *k, int64_t ttl_ms, lk_backend_reply_fn *cb,
                    void *arg);
int lk_etcd_renew(struct lk_backend_key *k, uint64_t token, int64_t ttl_ms,
                  lk_backend_reply_fn *cb, void *arg);
int lk_etcd_release(struct lk_backend_key *k, uint64_t token, lk_backend_reply_fn *cb,
                    void *arg);

/* etcd_op.c: deliver an operation's answer (token, proof and ttl from op) and free it. */
void lk_etcd_op_reply(struct lk_etcd_op *op, enum lk_reply_status status, const char *holder);

/* etcd_elect.c: what answers mean for the election. A look's answer (CREATE or PEEK), a
 * proving look's (CHECK), what a history read found (graceful: the tenure before ours is known
 * to have ended with a release); a tenure's end; whether the watch lets an acquire lead
 * without asking etcd (then op holds the tenure's token and proof). */
void lk_etcd_looked(struct lk_etcd_op *op, const struct lk_etcd_look *lk);
void lk_etcd_checked(struct lk_etcd_op *op, const struct lk_etcd_look *lk);
void lk_etcd_history_known(struct lk_etcd_op *op, bool graceful, bool first);
void lk_etcd_key_end_tenure(struct lk_backend_key *k, uint64_t token);
/* A tenure was proven at sent_ns for ttl_s: its key outlives the tenure until then. */
void lk_etcd_tenure_proven(struct lk_backend_key *k, int64_t sent_ns, int64_t ttl_s);
bool lk_etcd_fast_lead(struct lk_etcd_op *op);

/* etcd_elect.c: our candidate key's name, "<key>/<lease in 16 hex digits><num in 4>", into buf
 * (room for LK_ETCD_JSON_MAX_KEY + 1 bytes); returns its length. The number keeps two keys of
 * one agent for the same lock (tests do that) apart. */
size_t lk_etcd_cand_key(const struct lk_backend_key *k, int64_t lease, char *buf);
/* Delete a candidate key of ours that has no tenure to give up (fire and forget): a
 * withdrawal, or a tenure's key after its lease as last proven ran out. */
void lk_etcd_withdraw(struct lk_backend_key *k, int64_t rev, int64_t lease);
void lk_etcd_texp_cb(evutil_socket_t fd, short what, void *arg);

/* etcd_batch.c: renewals' proving reads, many keys to a txn. join parks op (step BATCH) for
 * the txn sent at the end of this loop turn; leave takes it out of a waiting or sent batch. */
int lk_etcd_batch_join(struct lk_etcd_op *op);
void lk_etcd_batch_leave(struct lk_etcd_op *op);
void lk_etcd_batch_done(struct lk_etcd *e, struct lk_etcd_xfer *x, struct lk_etcd_outcome *o);
void lk_etcd_batch_abort(struct lk_etcd_xfer *x);
void lk_etcd_batch_free(struct lk_etcd *e);

/* etcd_lease.c: the shared leases. */
struct lk_etcd_lease *lk_etcd_lease_get(struct lk_etcd *e, int64_t ttl_ms);
/* Park op in step LEASE until the lease is granted (with fresh: until a keepalive answers,
 * one in flight included), then go on with `after` (op->sent_ns and ttl_s then say what was
 * proven). Returns 1 when the lease is already good enough (op->step is `after`: send it), 0
 * when parked, or a negative errno. */
int lk_etcd_lease_join(struct lk_etcd_op *op, bool fresh, enum lk_etcd_step after);
void lk_etcd_lease_leave(struct lk_etcd_op *op);
void lk_etcd_lease_done(struct lk_etcd *e, struct lk_etcd_xfer *x, struct lk_etcd_outcome *o);
/* etcd said the lease is gone: forget it (the next use grants another), tell every key. */
void lk_etcd_lease_gone(struct lk_etcd_lease *l);
void lk_etcd_leases_free(struct lk_etcd *e);
/* A candidacy or tenure ended: revoke, at the end of this loop turn, leases nothing uses. */
void lk_etcd_lease_idle_check(struct lk_etcd *e);
int lk_etcd_quiesce(struct lk_backend *b, void (*done)(void *arg), void *arg);
void lk_etcd_quiesce_check(struct lk_etcd *e);

/* etcd_watch.c: the watch streams. */
size_t lk_etcd_watch_write_cb(char *data, size_t size, size_t nmemb, void *arg);
void lk_etcd_watch_schedule(struct lk_backend_key *k, const char *why, bool was_created);
void lk_etcd_watch_stop(struct lk_backend_key *k);
void lk_etcd_watch_start(struct lk_backend_key *k);
void lk_etcd_watch_retry_cb(evutil_socket_t fd, short what, void *arg);
void lk_etcd_watch_deadline_cb(evutil_socket_t fd, short what, void *arg);
void lk_etcd_watch_done(struct lk_etcd *e, struct lk_etcd_xfer *x,
                        struct lk_etcd_outcome *o);
void lk_etcd_watch(struct lk_backend_key *k, bool on);

/* etcd_session.c: readiness, endpoint failover, the probe, authentication. */
bool lk_etcd_need_auth(const struct lk_etcd *e);
void lk_etcd_drop_token(struct lk_etcd *e);
void lk_etcd_mark_up(struct lk_etcd *e);
void lk_etcd_mark_down(struct lk_etcd *e, const char *why);
void lk_etcd_endpoint_failed(struct lk_etcd *e, size_t idx, const char *why);
int lk_etcd_auth_start(struct lk_etcd *e);
void lk_etcd_auth_done(struct lk_etcd *e, struct lk_etcd_xfer *x,
                       struct lk_etcd_outcome *o);
void lk_etcd_probe_cb(evutil_socket_t fd, short what, void *arg);
void lk_etcd_probe_done(struct lk_etcd *e, struct lk_etcd_xfer *x,
                        struct lk_etcd_outcome *o);

/* etcd_http.c: transfers and what their outcomes mean. A transfer's body is taken, freed on
 * failure too; lk_etcd_http_cleanup() undoes lk_etcd_http_init(), also a half-done one. */
enum lk_reply_status lk_etcd_error_status(long http, int64_t code);
bool lk_etcd_append(struct lk_etcd_xfer *x, const char *data, size_t n, size_t cap);
void lk_etcd_xfer_abort(struct lk_etcd_xfer *x);
struct lk_etcd_xfer *lk_etcd_xfer_start(struct lk_etcd *e, enum lk_etcd_xfer_kind kind,
                                        enum lk_etcd_call call, char *body, bool secret,
                                        int64_t timeout_ms);
bool lk_etcd_stale_token(int64_t code, const char *message);
void lk_etcd_outcome_error_body(const struct lk_etcd_xfer *x, struct lk_etcd_outcome *o);
void lk_etcd_revoke(struct lk_etcd *e, int64_t lease);
int lk_etcd_http_init(struct lk_etcd *e);
void lk_etcd_http_cleanup(struct lk_etcd *e);

#endif

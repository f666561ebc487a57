/* One interface for every lock backend (Redis, etcd): a static const vtable per type and one
 * instance struct per configured backend, in the style of curl's connection filters.
 *
 * Contract, for every implementation:
 * - Everything runs on the agent's one libevent loop. No call blocks; connects, DNS lookups and
 *   requests are asynchronous, and each request the backend accepts gets exactly one reply
 *   callback, at the latest about `timeout` after it was sent (a silent server is treated as a
 *   broken connection). An operation that takes
 *   several server round trips (etcd: a first acquire is a lease grant and a txn) gives
 *   each of them the whole `timeout`, so its reply may take that many timeouts: on a slow
 *   link a shared budget would never be enough. "Sent" is when the request leaves: etcd keeps
 *   at most 32 lock requests in flight and queues the rest, whose timeouts start later.
 * - A call that fails synchronously (negative errno, e.g. -ENOTCONN while reconnecting) never
 *   calls its callback.
 * - No callback is ever called from inside the call that started the request, and none after
 *   the key or backend it belongs to was freed.
 * - The backend reconnects by itself with capped exponential backoff and jitter, and calls the
 *   key's notify hook whenever the key may have become free (a release notice, a deletion seen
 *   by a watch) and after every (re)connection (see enum lk_backend_notice).
 * - An acquire whose outcome is unknown (it timed out, the connection broke) may still have
 *   created the key. The backend remembers that and, when a later acquire finds the key held
 *   under this key's own identity by a tenure it never reported, deletes exactly that value and
 *   acquires again: the agent never waits for, or shows as a foreign holder, its own orphan.
 *   Likewise a renewal that timed out may still run and keep a tenure the agent already gave
 *   up; a backend that can tell (Redis) reclaims it once that tenure's lease, as last proven,
 *   has run out, when no app can still count on it.
 * - Backends do not log; they report through lk_backend_hooks.log and the err strings below.
 */
#ifndef LK_LOCKS_BACKEND_H
#define LK_LOCKS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "locks/backend_config.h"

/* The longest lock key: etcd's gateway takes keys of at most 1024 bytes, and etcd keeps a
 * candidate key "<key>/<20 hex digits>" per agent (Redis and etcd also "<key>:fence"). The
 * config checks it, so that check-config refuses what the agent could not hold. */
#define LK_BACKEND_KEY_MAX 1003

#define LK_BACKEND_MAX_HOST_LEN     255 /* in an address: a DNS name, an IP literal, a path */
#define LK_BACKEND_MAX_ENDPOINT_LEN 512 /* one etcd endpoint URL, trailing '/' removed */
#define LK_BACKEND_MAX_IDENTITY_LEN 256 /* a holder identity, ours or read from a server */

struct event_base;
struct lk_backend;
struct lk_config_backend;
struct lk_backend_key;

/* CLOCK_MONOTONIC in nanoseconds: the clock every validity computation uses (I1). */
static inline int64_t lk_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

enum lk_reply_status {
	LK_REPLY_OK,          /* acquire: acquired; renew: extended; release: deleted our key */
	LK_REPLY_HELD,        /* acquire: somebody holds it (holder set if known) */
	LK_REPLY_TAKEN,       /* renew: the key now belongs to someone else (holder set if known) */
	LK_REPLY_GONE,        /* renew: no key or lease any more; release: nothing of ours to delete */
	LK_REPLY_ERROR,       /* transport error, timeout, transient server error: retry */
	LK_REPLY_FATAL,       /* the server refused in a way retrying will not fix (bad reply,
	                         wrong type, script error): give the tenure up */
};

/* Acquire OK: what came before the new tenure, as the backend knows it (handoff telemetry). */
enum lk_reply_after {
	LK_AFTER_UNKNOWN,     /* the backend could not tell (an unreadable answer): not known to be
	                         a release, so the agent counts it as an expiry */
	LK_AFTER_FIRST,       /* the backend has no record of any earlier tenure of the key */
	LK_AFTER_RELEASE,     /* the tenure before ended with its holder's token-checked release */
	LK_AFTER_EXPIRY,      /* there was a tenure before, and it was not released: it ran out */
};

/* What a request produced. Everything borrowed here is valid only during the callback. */
struct lk_reply {
	enum lk_reply_status status;
	uint64_t token;        /* acquire OK: the new tenure's fencing token */
	int64_t sent_ns;       /* acquire/renew OK: lk_mono_ns() when the proving request was sent */
	int64_t ttl_ms;        /* acquire/renew OK: validity granted, counted from sent_ns */
	enum lk_reply_after after; /* acquire OK: how the tenure before this one ended */
	int64_t gap_ns;        /* acquire OK after a release: ns from that release to this
	                          acquisition (Redis: the server's clock; etcd: ours, from the watch
	                          event, a lower bound); -1 if the backend cannot tell */
	const char *holder;    /* HELD/TAKEN: holder identity, or NULL if unknown */
	int64_t free_in_ms;    /* HELD: the holder's tenure runs out in about this many ms unless
	                          it is renewed; 0 if unknown. A hint for the next attempt */
	const char *err;       /* ERROR/FATAL: a message for the agent's log */
};

typedef void lk_backend_reply_fn(void *arg, const struct lk_reply *reply);

/* Why a key's notify hook is called. */
enum lk_backend_notice {
	/* Only while the key is watched: the key may have become free (a release notice, a
	 * deletion seen by a watch). A follower should try to acquire now. */
	LK_NOTICE_MAYBE_FREE,
	/* To every key, watched or not: a new connection to the server is up. Notices may have
	 * been missed, and the server may be another instance than before: a leader re-proves its
	 * tenure at once (I10), a follower asks holdoff_until() again and retries. */
	LK_NOTICE_RECONNECTED,
};
typedef void lk_backend_notify_fn(void *arg, enum lk_backend_notice what);

enum lk_backend_log_level { LK_BLOG_DEBUG, LK_BLOG_INFO, LK_BLOG_WARN, LK_BLOG_ERROR };

/* How a backend talks to the agent outside of replies. */
struct lk_backend_hooks {
	/* Connection-level events ("connected", "reconnecting in 400ms: ..."). msg is borrowed.
	 * Called from inside the backend's own bookkeeping: it must not free the backend or a key
	 * (the agent's only logs and counts). */
	void (*log)(void *arg, struct lk_backend *b, enum lk_backend_log_level level, const char *msg);
	void *arg;
};

struct lk_backend_ops {
	const char *type;
	/* Register a lock's key. identity is what other replicas see as the holder. notify may be
	 * called any time until key_free. Returns NULL on allocation failure. */
	struct lk_backend_key *(*key_new)(struct lk_backend *b, const char *key, const char *identity,
	                                  lk_backend_notify_fn *notify, void *arg);
	/* Forget a key; its pending requests complete silently. Accepts NULL. */
	void (*key_free)(struct lk_backend_key *k);
	/* Try to start a tenure of ttl_ms. Replies OK (token, sent_ns, ttl_ms), HELD, ERROR, FATAL. */
	int (*acquire)(struct lk_backend_key *k, int64_t ttl_ms, lk_backend_reply_fn *cb, void *arg);
	/* Extend tenure `token` by ttl_ms, only if it is still ours. OK, TAKEN, GONE, ERROR, FATAL. */
	int (*renew)(struct lk_backend_key *k, uint64_t token, int64_t ttl_ms,
	             lk_backend_reply_fn *cb, void *arg);
	/* Compare-and-delete tenure `token`: idempotent, never touches another holder's key (I3).
	 * Tells waiting replicas. OK (deleted), GONE (not ours any more), ERROR, FATAL. */
	int (*release)(struct lk_backend_key *k, uint64_t token, lk_backend_reply_fn *cb, void *arg);
	/* Whether notify should fire for this key (followers want it, leaders do not care). */
	void (*watch)(struct lk_backend_key *k, bool on);
	/* I10: the CLOCK_MONOTONIC time (ns) before which no new tenure of this key with this ttl
	 * may start, because the server may have lost tenures it granted (it restarted, was
	 * replaced or wiped); 0 if there is no such time. When nonzero, why[cap] says what was
	 * seen, for logs and status. */
	int64_t (*holdoff_until)(struct lk_backend_key *k, int64_t ttl_ms, char *why, size_t cap);
	/* Optional (NULL: nothing to do). At the end of a drain, once every lock has settled:
	 * give back what the backend holds for the agent as a whole (etcd: revoke its shared
	 * leases, so that its candidate keys go now and not a ttl later), then call done(arg) from
	 * the loop, within about `timeout`. 0, or a negative errno and done is never called. */
	int (*quiesce)(struct lk_backend *b, void (*done)(void *arg), void *arg);
	/* True once the backend has answered since the last (re)connect: for /readyz. */
	bool (*ready)(const struct lk_backend *b);
	/* Optional (NULL: not known). The server it talks to now, as its log lines name it
	 * (Redis: the address, with Sentinel the master last named; etcd: the endpoint in use):
	 * for STATUS. "" if none yet. */
	const char *(*server)(const struct lk_backend *b);
	/* Close connections and free everything, keys included; no callback runs after. */
	void (*free)(struct lk_backend *b);
};

/* The part every backend instance starts with. */
struct lk_backend {
	const struct lk_backend_ops *ops;
	char *name;                    /* the config's backend name, owned */
	struct lk_backend_hooks hooks;
};

/* Create the backend a config entry describes, attached to base. Returns 0 and the backend, or
 * a negative errno with a message in err[errlen] (an unreadable password file, say). cfg is
 * checked first against the rules below, as the agent's config checks them: a hand-made entry
 * gets the same answer as check-config. */
int lk_backend_new(struct event_base *base, const struct lk_config_backend *cfg,
                   const struct lk_backend_hooks *hooks, struct lk_backend **ret,
                   char *err, size_t errlen);

/* Free through the vtable; accepts NULL; returns NULL. */
struct lk_backend *lk_backend_free(struct lk_backend *b);

/* Backoff shared by all backends: delay before attempt `attempt` (0-based) between base_ms and
 * cap_ms, doubling, with "equal jitter" (half fixed, half random) so that replicas that lost
 * their server together do not come back in lockstep. */
int64_t lk_backoff_ms(unsigned attempt, int64_t base_ms, int64_t cap_ms);

/* ---- Rules a configuration must follow, written once: the agent's config checks them (and
 * points at the offending line), lk_backend_new and the backends apply them. ---- */

/* Parse "host:port", "[v6]:port" or "unix:/path". Writes host[hostcap] (the path for unix) and
 * *port (0 for unix); returns 0 or -EINVAL. A host is a DNS name or IPv4 literal (letters,
 * digits, '-', '.', '_'), or a bracketed IPv6 literal with an optional %zone; a port is 1 to
 * 65535 in decimal; a unix path fits sockaddr_un. */
int lk_parse_address(const char *addr, char *host, size_t hostcap, int *port);

/* Whether addr is an address lk_parse_address takes, with a host of at most
 * LK_BACKEND_MAX_HOST_LEN bytes (what a backend and the HTTP listener can hold); with tcp_only,
 * "unix:/path" is refused. */
bool lk_backend_valid_address(const char *addr, bool tcp_only);

/* An etcd endpoint: "http://" or "https://", then host[:port] of printable ASCII without '@'
 * (credentials belong in username/password_file, not in a URL that ends up in logs), '/', '?'
 * or '#'; trailing slashes are ignored. Returns 0 with *ret the length without them, or
 * -EINVAL. */
int lk_backend_endpoint_len(const char *url, size_t *ret);

/* Settings of an etcd backend that need another one: a user needs a password, a certificate
 * its key. Each names the two fields as the config file spells them, where they are in struct
 * lk_config_backend (char * fields), and the message for the first when the second is unset. */
struct lk_backend_requires {
	const char *field, *needs;
	size_t field_off, needs_off;
	const char *msg;
};
#define LK_BACKEND_ETCD_N_REQUIRES 4
extern const struct lk_backend_requires lk_backend_etcd_requires[LK_BACKEND_ETCD_N_REQUIRES];


#endif

/* etcd v3's JSON gateway, as plain structs: request bodies out, responses in. No I/O
 * and no curl, so that every quirk of the gateway is pinned down by check_etcd_json.c.
 *
 * The gateway's habits, which every parser here follows (as etcd 3.4 answers; docs/etcd.md):
 * - keys and values travel as base64 (standard alphabet, padded);
 * - 64-bit integers travel as JSON strings ("revision":"3"); plain JSON integers are accepted
 *   too, anything else (fractions, overflow, "12abc") is garbage;
 * - every real answer has a "header" (its cluster and member IDs are never zero); txn, range
 *   and status answers without one are garbage, because their defaults would otherwise read
 *   as a real "no";
 * - a field with its zero value is OMITTED: a failed txn has no "succeeded", a PUT watch event
 *   no "type", a keepalive for a dead lease no "TTL", an empty range no "kvs". Every field is
 *   therefore decoded with its default, and only what the protocol cannot do without (a grant's
 *   ID, a keepalive's "result") is required.
 *
 * Builders return 0 and a malloc'd NUL-terminated body in *ret, or -EINVAL (bad arguments) or
 * -ENOMEM. Parsers return 0 and fill *out, -EPROTO when the body is an etcd error object (read
 * it with lk_etcd_json_parse_error()), or -EINVAL with a message in err[errlen] for anything
 * malformed; they never crash on any input. *out is written only on success.
 */
#ifndef LK_LOCKS_ETCD_JSON_H
#define LK_LOCKS_ETCD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Caps on what the server (or the config) controls. */
#define LK_ETCD_JSON_MAX_BODY     (1024 * 1024) /* one response body, or one watch stream line */
#define LK_ETCD_JSON_MAX_KEY      1024          /* a lock key, decoded */
#define LK_ETCD_JSON_MAX_VALUE    1024          /* a lock value (an identity), decoded */
#define LK_ETCD_JSON_MAX_NAME     256           /* an auth user name */
#define LK_ETCD_JSON_MAX_PASSWORD 4096          /* an auth password */
#define LK_ETCD_JSON_MAX_TOKEN    512           /* an auth token from the server */
#define LK_ETCD_JSON_MAX_TEXT     160           /* server text kept for messages */
/* The longest lease TTL we believe, in seconds: a year. etcd itself caps TTLs at 9e9 s, but no
 * lock of ours asks for more than minutes; anything larger is a broken or hostile server, and
 * trusting it would overflow the nanosecond arithmetic of validity (I1). */
#define LK_ETCD_JSON_MAX_TTL      (366LL * 24 * 3600)

/* One key-value pair of a range or txn response. */
struct lk_etcd_kv {
	int64_t create_revision;      /* the fencing token of the tenure that created the key */
	int64_t mod_revision;
	int64_t lease;                /* 0: no lease */
	size_t value_len;
	bool value_too_long;          /* over LK_ETCD_JSON_MAX_VALUE: value left empty */
	char value[LK_ETCD_JSON_MAX_VALUE + 1]; /* decoded bytes, NUL-terminated (may hold NULs) */
};

/* Every answer's header says which cluster answered and at which revision: how a wiped or
 * restored cluster is recognised. cluster_id is a uint64 (it rarely fits an int64); 0 when
 * the answer had no header. */
struct lk_etcd_grant {
	uint64_t cluster_id;          /* header.cluster_id */
	int64_t revision;             /* header.revision */
	int64_t id;                   /* > 0 */
	int64_t ttl;                  /* seconds, > 0: what etcd granted, not what was asked */
};

struct lk_etcd_keepalive {
	uint64_t cluster_id;          /* result.header.cluster_id */
	int64_t revision;             /* result.header.revision */
	int64_t id;
	int64_t ttl;                  /* seconds; 0 (omitted) when the lease no longer exists */
};

struct lk_etcd_range {
	uint64_t cluster_id;          /* header.cluster_id */
	int64_t revision;             /* header.revision */
	bool found;                   /* the key exists; kv is set */
	struct lk_etcd_kv kv;
};

struct lk_etcd_txn {
	uint64_t cluster_id;          /* header.cluster_id */
	int64_t revision;             /* header.revision */
	bool succeeded;               /* omitted means false */
	bool found;                   /* the last range in the responses found the key */
	struct lk_etcd_kv kv;
};

/* An election look (lk_etcd_json_txn_look): the keys it reads, and what it found. A lock is a
 * queue of candidate keys "<key>/<lease>" ordered by create_revision; the oldest leads. */
struct lk_etcd_look_keys {
	const char *own;     size_t own_len;    /* "<key>/<20 hex digits>": ours */
	const char *prefix;  size_t prefix_len; /* "<key>/": every candidate's */
	const char *fence;   size_t fence_len;  /* "<key>:fence": the token base */
	const char *state;   size_t state_len;  /* "<key>:state": "released <create_revision>" */
	const char *seq;     size_t seq_len;    /* "<key>:seq": rewritten by every new candidate */
	const char *legacy;  size_t legacy_len; /* "<key>": a holder of the single-key layout */
};

/* The marker a release writes: LK_ETCD_STATE_RELEASED, a space, the released key's
 * create_revision. */
#define LK_ETCD_STATE_RELEASED "released"

struct lk_etcd_look {
	uint64_t cluster_id;          /* header.cluster_id */
	int64_t revision;             /* header.revision */
	bool succeeded;               /* create: our key was created by this txn */
	bool own_found;               /* our candidate key exists; own is set */
	struct lk_etcd_kv own;
	bool fence_found;
	bool fence_bad;               /* ... but holds no positive decimal integer */
	int64_t fence;
	bool state_found;
	int64_t released_rev;         /* the marker names a release of this create_revision; or 0 */
	int64_t state_mod_revision;
	bool legacy_found;            /* "<key>" itself exists; legacy is set */
	struct lk_etcd_kv legacy;
	int64_t n_candidates;         /* candidate keys, ours included */
	size_t n_first;               /* how many of first[] are set */
	struct lk_etcd_kv first[2];   /* the two oldest candidates */
	bool first_own[2];            /* first[i] is our key */
	bool seq_found;               /* create and succeeded: "<key>:seq" existed before */
	int64_t seq_mod_revision;     /* ... and when the candidate before ours wrote it */
};

/* The answer to lk_etcd_json_txn_history(). */
struct lk_etcd_history {
	uint64_t cluster_id;          /* header.cluster_id */
	int64_t revision;             /* header.revision */
	int64_t n_candidates;         /* at the revision asked about */
	bool seq_found;
	int64_t seq_mod_revision;
};

struct lk_etcd_auth {
	char token[LK_ETCD_JSON_MAX_TOKEN + 1]; /* printable ASCII only: it goes into a header */
};

/* One line of a watch stream. */
struct lk_etcd_watch {
	uint64_t cluster_id;          /* header.cluster_id */
	int64_t revision;             /* header.revision */
	bool created;
	bool canceled;
	int64_t compact_revision;     /* canceled because start_revision was compacted away */
	unsigned n_events;
	unsigned n_deletes;           /* DELETE events for the watched key (or prefix) */
	int64_t max_mod_revision;     /* highest mod_revision among the events; 0 if none */
	char cancel_reason[LK_ETCD_JSON_MAX_TEXT + 1];
};

struct lk_etcd_status {
	uint64_t cluster_id;          /* header.cluster_id */
	int64_t revision;             /* header.revision */
	bool has_leader;              /* "leader" names a member (omitted while there is none) */
};

/* {"error":"...","code":N,"message":"..."} from a failed request, or the streaming variant
 * {"error":{"grpc_code":N,"message":"..."}}. */
struct lk_etcd_error {
	int64_t code;                 /* gRPC status code; 0 if absent */
	char message[LK_ETCD_JSON_MAX_TEXT + 1]; /* printable ASCII, capped */
};

/* gRPC codes the gateway reports that the backend treats specially. */
#define LK_ETCD_GRPC_UNAVAILABLE     14
#define LK_ETCD_GRPC_UNAUTHENTICATED 16

/* ---- request bodies ------------------------------------------------------------------- */

/* POST /v3/lease/grant: {"TTL":"N"}; ttl_s > 0. */
int lk_etcd_json_grant(int64_t ttl_s, char **ret);
/* POST /v3/lease/keepalive and /v3/lease/revoke: {"ID":"N"}; id > 0. */
int lk_etcd_json_lease_id(int64_t id, char **ret);
/* POST /v3/kv/txn, an election look. With create: if our key does not exist, read the seq
 * key, put our key (value, attached to the lease), rewrite the seq key, and set the fence key
 * to seed (the wall clock in microseconds) if it is missing, or in any case with
 * overwrite_fence, so that a base exists whenever a candidate does. Without create: no
 * compare, no write. Either way read our key, the fence key, the marker, the legacy key and
 * the two oldest candidates, in that order. */
int lk_etcd_json_txn_look(const struct lk_etcd_look_keys *keys, bool create, const void *value,
                          size_t vlen, int64_t lease, int64_t seed, bool overwrite_fence,
                          char **ret);
/* POST /v3/kv/txn, read only: what the candidates' prefix looked like at `revision` (how many
 * candidates, without their values) and the seq key then. */
int lk_etcd_json_txn_history(const void *prefix, size_t plen, const void *seq, size_t slen,
                             int64_t revision, char **ret);
/* POST /v3/kv/txn, read only: for each of n keys (at most 64) that key, then legacy[i] (the
 * single-key layout's holder of its lock). */
int lk_etcd_json_txn_batch(const char *const *keys, const size_t *klens,
                           const char *const *legacy, const size_t *llens, size_t n,
                           char **ret);
/* The answer to it, for the same keys: kv[i] and found[i] for keys[i], legacy_found[i] (all
 * written only on success). */
int lk_etcd_json_parse_batch(const char *body, size_t len, const char *const *keys,
                             const size_t *klens, const char *const *legacy,
                             const size_t *llens, size_t n, struct lk_etcd_kv *kv, bool *found,
                             bool *legacy_found, uint64_t *cluster_id, int64_t *revision,
                             char *err, size_t errlen);
/* POST /v3/kv/txn, release: delete key only if its create_revision and lease are these, and
 * in the same branch set the marker tkey to "released <create_revision>"; with tkey NULL, just
 * the delete (a candidate that never led withdraws). */
int lk_etcd_json_txn_release(const void *key, size_t klen, const void *tkey, size_t tklen,
                             int64_t create_revision, int64_t lease, char **ret);
/* POST /v3/kv/range for exactly one key. */
int lk_etcd_json_range(const void *key, size_t klen, char **ret);
/* POST /v3/watch for exactly one key, or with under for every key below that prefix;
 * start_revision 0 means "from now". */
int lk_etcd_json_watch_create(const void *key, size_t klen, bool under, int64_t start_revision,
                              char **ret);
/* POST /v3/watch for the keys from key (included) to end (excluded). */
int lk_etcd_json_watch_range(const void *key, size_t klen, const void *end, size_t elen,
                             int64_t start_revision, char **ret);
/* POST /v3/auth/authenticate. The body holds the password: the caller wipes it
 * (sodium_memzero over strlen) before freeing it. Built without jansson for that reason:
 * its intermediate copies would be freed unwiped. */
int lk_etcd_json_authenticate(const char *name, const char *password, size_t pwlen, char **ret);

/* ---- responses ------------------------------------------------------------------------ */

int lk_etcd_json_parse_grant(const char *body, size_t len, struct lk_etcd_grant *out,
                             char *err, size_t errlen);
int lk_etcd_json_parse_keepalive(const char *body, size_t len, struct lk_etcd_keepalive *out,
                                 char *err, size_t errlen);
/* Range and txn check that a returned key is `key`: anything else is garbage. */
int lk_etcd_json_parse_range(const char *body, size_t len, const void *key, size_t klen,
                             struct lk_etcd_range *out, char *err, size_t errlen);
int lk_etcd_json_parse_txn(const char *body, size_t len, const void *key, size_t klen,
                           struct lk_etcd_txn *out, char *err, size_t errlen);
int lk_etcd_json_parse_auth(const char *body, size_t len, struct lk_etcd_auth *out,
                            char *err, size_t errlen);
/* One line of a watch stream (without its newline); events for keys other than `key` (under:
 * keys below it) count in n_events but never in n_deletes. */
int lk_etcd_json_parse_watch(const char *body, size_t len, const void *key, size_t klen,
                             bool under, struct lk_etcd_watch *out, char *err, size_t errlen);
/* What one watch line says about exactly one key (the release marker, the fence key): its
 * last event in the line, if any. */
struct lk_etcd_watch_key {
	bool put;                     /* the last event was a PUT */
	bool deleted;                 /* the last event was a DELETE */
	int64_t released_rev;         /* a PUT of "released <n>": n; else 0 */
};
int lk_etcd_json_parse_watch_key(const char *body, size_t len, const void *key, size_t klen,
                                 struct lk_etcd_watch_key *out, char *err, size_t errlen);
/* The answer to lk_etcd_json_txn_history(), built with the same keys. */
int lk_etcd_json_parse_history(const char *body, size_t len, const void *seq, size_t slen,
                               struct lk_etcd_history *out, char *err, size_t errlen);
/* The answer to lk_etcd_json_txn_look(), built with the same keys and create. */
int lk_etcd_json_parse_look(const char *body, size_t len, const struct lk_etcd_look_keys *keys,
                            bool create, struct lk_etcd_look *out, char *err, size_t errlen);
/* POST /v3/maintenance/status. */
int lk_etcd_json_parse_status(const char *body, size_t len, struct lk_etcd_status *out,
                              char *err, size_t errlen);
/* An error body. Returns -EINVAL if the body is not one. */
int lk_etcd_json_parse_error(const char *body, size_t len, struct lk_etcd_error *out);

#endif

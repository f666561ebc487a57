/* What the parts of the etcd JSON mapping share (etcd_json_req.c, etcd_json_read.c and
 * etcd_json.c only). */
#ifndef LK_LOCKS_ETCD_JSON_INT_H
#define LK_LOCKS_ETCD_JSON_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <jansson.h>
#include <stdint.h>

#include "locks/etcd_json.h"

#define LK_ETCD_JSON_INT_DIGITS 19 /* INT64_MAX has 19 digits: more can only overflow */

/* A key the gateway may be asked about: not empty, not over the cap. */
static inline bool lk_etcd_json_key_ok(const void *key, size_t klen)
{
	return key && klen > 0 && klen <= LK_ETCD_JSON_MAX_KEY;
}

/* Whether two byte strings are equal. */
static inline bool lk_etcd_json_same(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

/* Reading the gateway's JSON (etcd_json_read.c): each returns 0, or -EINVAL (-EPROTO for an
 * etcd error object) with a message in err[errlen]. */

/* Parse a whole body as one JSON object. -EPROTO if it is an etcd error object. */
int lk_etcd_json_load(const char *body, size_t len, json_t **ret, char *err, size_t errlen);

/* A decimal int64 in a JSON string or a JSON integer; absent or null keeps *out. */
int lk_etcd_json_int(const json_t *obj, const char *name, int64_t *out,
                     char *err, size_t errlen);

/* Like lk_etcd_json_int, for fields that cannot be negative (revisions, lease IDs). */
int lk_etcd_json_uint(const json_t *obj, const char *name, int64_t *out,
                      char *err, size_t errlen);

/* Absent or null means false. */
int lk_etcd_json_bool(const json_t *obj, const char *name, bool *out,
                      char *err, size_t errlen);

/* Absent or null gives NULL without error; anything else must have the given type. */
int lk_etcd_json_child(const json_t *obj, const char *name, json_type type,
                       json_t **ret, char *err, size_t errlen);

/* header.revision and header.cluster_id. Every real answer has a header (cluster and member
 * IDs are never zero), so where the defaults of a missing body would read as a meaningful
 * answer (a txn that "did not succeed", a range that "found nothing"), a missing header marks
 * the body as garbage. */
int lk_etcd_json_header(const json_t *obj, bool required, int64_t *revision,
                        uint64_t *cluster_id, char *err, size_t errlen);

/* Whether a base64 key field decodes to exactly key[klen] (under: to a longer key starting
 * with it). */
int lk_etcd_json_key_is(const json_t *obj, const void *key, size_t klen, bool under, bool *is,
                        char *err, size_t errlen);

/* The "kvs" of a range response: found and the first kv. */
int lk_etcd_json_kvs(const json_t *obj, const void *key, size_t klen, bool *found,
                     struct lk_etcd_kv *kv, char *err, size_t errlen);

/* The "kvs" of a range over a prefix: up to max key-values (each a key below prefix, is_own[i]
 * telling whether it is own[olen]) in *n, and the range's "count" (every key in the range,
 * also those past its limit). */
int lk_etcd_json_kvs_under(const json_t *obj, const void *prefix, size_t plen, const void *own,
                           size_t olen, struct lk_etcd_kv *kv, bool *is_own, size_t max,
                           size_t *n, int64_t *count, char *err, size_t errlen);

#endif

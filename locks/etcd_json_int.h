/* What the request and the answer side of the etcd JSON mapping share (etcd_json_req.c and
 * etcd_json.c only). */
#ifndef LK_LOCKS_ETCD_JSON_INT_H
#define LK_LOCKS_ETCD_JSON_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "locks/etcd_json.h"

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

#endif

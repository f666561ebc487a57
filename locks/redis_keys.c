/* The Redis backend's keys: their life (new, free, references) and the index from a release
 * channel to its keys, so that a release notice costs a short chain rather than a walk of every
 * key (see redis.c for the backend as a whole). */
#include "locks/redis_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

void lk_redis_key_destroy(struct lk_backend_key *k)
{
	lk_redis_key_unlink(k);
	free(k);
}

void lk_redis_key_unref(struct lk_backend_key *k)
{
	if (--k->refs == 0 && k->dead)
		lk_redis_key_destroy(k);
}

/* FNV-1a: channels are our own key names, so nobody chooses collisions to slow us down. */
static uint64_t lk_redis_hash(const char *s, size_t len)
{
	uint64_t h = 14695981039346656037ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return h;
}

static struct lk_redis_key_chain *lk_redis_chain(const struct lk_redis *r, uint64_t hash)
{
	return &r->buckets[hash & (r->n_buckets - 1)];
}

/* Make room for one more key: the first table, or twice the buckets once chains average two
 * keys. A table that cannot grow (no memory, or a chain may be being walked) stays as it is:
 * only the chains get longer. False only if there is no table at all. */
static bool lk_redis_buckets_reserve(struct lk_redis *r)
{
	struct lk_redis_key_chain *nb;
	struct lk_backend_key *k;
	size_t n;

	if (r->n_buckets && (r->n_keys < 2 * r->n_buckets || r->depth > 0))
		return true;
	n = r->n_buckets ? 2 * r->n_buckets : LK_REDIS_MIN_BUCKETS;
	nb = calloc(n, sizeof(*nb));
	if (!nb)
		return r->n_buckets != 0;
	for (size_t i = 0; i < n; i++)
		LIST_INIT(&nb[i]);
	TAILQ_FOREACH(k, &r->keys, link) {
		LIST_REMOVE(k, hlink);
		LIST_INSERT_HEAD(&nb[k->chash & (n - 1)], k, hlink);
	}
	free(r->buckets);
	r->buckets = nb;
	r->n_buckets = n;
	return true;
}

int lk_redis_key_link(struct lk_redis *r, struct lk_backend_key *k)
{
	if (!lk_redis_buckets_reserve(r))
		return -ENOMEM;
	k->chlen = strlen(k->channel);
	k->chash = lk_redis_hash(k->channel, k->chlen);
	TAILQ_INSERT_TAIL(&r->keys, k, link);
	LIST_INSERT_HEAD(lk_redis_chain(r, k->chash), k, hlink);
	r->n_keys++;
	return 0;
}

void lk_redis_key_unlink(struct lk_backend_key *k)
{
	TAILQ_REMOVE(&k->r->keys, k, link);
	LIST_REMOVE(k, hlink);
	k->r->n_keys--;
}

/* Whether another live key shares this key's release channel (two handles on one lock). */
static bool lk_redis_channel_shared(const struct lk_backend_key *k)
{
	const struct lk_backend_key *o;

	LIST_FOREACH(o, lk_redis_chain(k->r, k->chash), hlink)
		if (o != k && !o->dead && o->chlen == k->chlen &&
		    memcmp(o->channel, k->channel, k->chlen) == 0)
			return true;
	return false;
}

/* Tell keys: RECONNECTED goes to every key; MAYBE_FREE to every watching key (channel NULL)
 * or to those on one release channel, found through its hash chain. Any callback may free keys
 * or the backend; holding a reference on the current key keeps it, and so its place in the
 * list or chain, valid until we have moved on. Callers are inside an enter() frame, so the
 * table does not grow under the walk. */
void lk_redis_notify(struct lk_redis *r, enum lk_backend_notice what,
                     const char *channel, size_t chlen)
{
	struct lk_backend_key *k, *next;

	if (channel)
		k = r->n_buckets ? LIST_FIRST(lk_redis_chain(r, lk_redis_hash(channel, chlen))) : NULL;
	else
		k = TAILQ_FIRST(&r->keys);
	if (k)
		k->refs++;
	while (k) {
		if (!r->closing && !k->dead && k->notify &&
		    (what == LK_NOTICE_RECONNECTED || k->watching) &&
		    (!channel || (k->chlen == chlen && memcmp(k->channel, channel, chlen) == 0)))
			k->notify(k->notify_arg, what);
		next = channel ? LIST_NEXT(k, hlink) : TAILQ_NEXT(k, link);
		if (next)
			next->refs++;
		lk_redis_key_unref(k);
		k = next;
	}
}

/* EVALSHA (or, after NOSCRIPT, EVAL) one lock script for a user request. */

struct lk_backend_key *lk_redis_key_new(struct lk_backend *b, const char *key, const char *identity,
                                        lk_backend_notify_fn *notify, void *arg)
{
	struct lk_redis *r = (struct lk_redis *)b;
	struct lk_backend_key *k;
	size_t klen, ilen, size;

	if (!r || r->closing || !key || !identity)
		return NULL;
	klen = strlen(key);
	ilen = strlen(identity);
	if (klen == 0 || klen > LK_REDIS_MAX_KEY_LEN || ilen == 0 || ilen > LK_REDIS_MAX_IDENTITY_LEN)
		return NULL;

	/* One allocation for the key and its strings: at 10,000 locks, five were a tenth of the
	 * agent's memory. */
	size = 3 * (klen + 1) + sizeof(":fence") - 1 + sizeof(":released") - 1 + ilen + 1;

	k = calloc(1, sizeof(*k) + size);
	if (!k)
		return NULL;
	k->r = r;
	k->key = k->text;
	memcpy(k->key, key, klen + 1);
	k->fence = k->key + klen + 1;
	sprintf(k->fence, "%s:fence", key);
	k->channel = k->fence + klen + sizeof(":fence");
	sprintf(k->channel, "%s:released", key);
	k->identity = k->channel + klen + sizeof(":released");
	memcpy(k->identity, identity, ilen + 1);
	if (lk_redis_key_link(r, k) < 0)
		goto fail;
	k->notify = notify;
	k->notify_arg = arg;

	/* A subscriber still connecting subscribes every key once it is connected. */
	if (r->sub.state == LK_REDIS_HANDSHAKE || r->sub.state == LK_REDIS_UP)
		(void)lk_redis_subscribe(&r->sub, k->channel);
	return k;

fail:
	free(k);
	return NULL;
}

void lk_redis_key_free(struct lk_backend_key *k)
{
	struct lk_redis *r;

	if (!k || k->dead)
		return;
	r = k->r;
	k->dead = true;
	k->watching = false;
	if (!r->closing && r->sub.ac && !lk_redis_channel_shared(k) &&
	    (r->sub.state == LK_REDIS_HANDSHAKE || r->sub.state == LK_REDIS_UP)) {
		const char *argv[2] = { "UNSUBSCRIBE", k->channel };
		size_t lens[2] = { 11, strlen(k->channel) };

		/* Best effort: the confirmation goes to the channel callback, which ignores it. */
		(void)redisAsyncCommandArgv(r->sub.ac, NULL, NULL, 2, argv, lens);
	}
	if (k->refs == 0)
		lk_redis_key_destroy(k);
}

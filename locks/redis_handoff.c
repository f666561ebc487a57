/* What came before a Redis tenure (handoff telemetry, docs/metrics.md): the acquire script's
 * answer {1, token, previous token, release marker, TIME} read as "first", "release" or
 * "expiry", and the gap since the release on the server's own clock.
 *
 * The previous token is the fence counter as the script found it, so the token of the last
 * tenure this server issued ('' when there was no counter: no record of any tenure). The
 * marker "<token>:<TIME in µs>" is what the last token-checked release wrote (redis.c): when
 * it names that previous token, the tenure before ours ended with a release, otherwise with
 * an expiry (a crash, a freeze, a deleted key, an orphan we reclaimed). Both times come from
 * the server's TIME, so the gap needs no clock of ours; a clock that stepped back between the
 * two leaves the gap unknown rather than negative.
 *
 * Everything here is server data: anything unreadable is LK_AFTER_UNKNOWN with a message,
 * never a failed acquire (the tenure is ours either way).
 */
#include "locks/redis_int.h"

#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

/* A decimal number of 1 to 18 digits: tokens and µs since the epoch have 16. */
static bool lk_redis_dec(const char *s, size_t len, int64_t *ret)
{
	int64_t v = 0;

	if (len == 0 || len > 18)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*ret = v;
	return true;
}

static bool lk_redis_is_str(const redisReply *e)
{
	return e && e->type == REDIS_REPLY_STRING && (e->len == 0 || e->str);
}

enum lk_reply_after lk_redis_handoff(const redisReply *reply, int64_t *gap_ns, char *why,
                                     size_t cap)
{
	const redisReply *prev, *marker, *now;
	const char *colon;
	int64_t prev_tok, marker_tok, marker_us, now_us;

	*gap_ns = -1;
	if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 5 ||
	    !lk_redis_is_str(reply->element[2]) || !lk_redis_is_str(reply->element[3]) ||
	    !lk_redis_is_str(reply->element[4])) {
		snprintf(why, cap, "the answer does not say what came before (%zu elements)",
		         reply->type == REDIS_REPLY_ARRAY ? reply->elements : 0);
		return LK_AFTER_UNKNOWN;
	}
	prev = reply->element[2];
	marker = reply->element[3];
	now = reply->element[4];
	if (prev->len == 0)
		return LK_AFTER_FIRST;
	if (!lk_redis_dec(prev->str, prev->len, &prev_tok)) {
		snprintf(why, cap, "the fence counter held no token before it");
		return LK_AFTER_UNKNOWN;
	}
	if (marker->len == 0)
		return LK_AFTER_EXPIRY;
	colon = memchr(marker->str, ':', marker->len);
	if (!colon || !lk_redis_dec(marker->str, (size_t)(colon - marker->str), &marker_tok) ||
	    !lk_redis_dec(colon + 1, marker->len - (size_t)(colon + 1 - marker->str),
	                  &marker_us)) {
		snprintf(why, cap, "the release marker is not <token>:<time>");
		return LK_AFTER_UNKNOWN;
	}
	if (marker_tok != prev_tok)
		return LK_AFTER_EXPIRY;
	if (lk_redis_dec(now->str, now->len, &now_us) && now_us >= marker_us &&
	    now_us - marker_us <= INT64_MAX / 1000)
		*gap_ns = (now_us - marker_us) * 1000;
	return LK_AFTER_RELEASE;
}

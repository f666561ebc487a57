/* The factory behind the config's `type`: the one file that knows every backend. The backends
 * call only backend_util.c, never this file, so a backend links without the others. */
#include "locks/backend.h"
#include "locks/backend_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *lk_backend_type_name(enum lk_backend_type t)
{
	switch (t) {
	case LK_BACKEND_REDIS: return "redis";
	case LK_BACKEND_ETCD: return "etcd";
	}
	return "unknown";
}

static const char *lk_backend_field(const struct lk_config_backend *cfg, size_t off)
{
	return *(char *const *)((const char *)cfg + off);
}

/* Every rule in backend.h and the limits of struct lk_config_backend: 0, or -EINVAL with the
 * first problem in err[errlen]. */
static int lk_backend_check_config(const struct lk_config_backend *cfg, char *err, size_t errlen)
{
	size_t len;

	if (cfg->timeout_ms <= 0) {
		snprintf(err, errlen, "timeout must be positive");
		return -EINVAL;
	}
	if (cfg->type == LK_BACKEND_REDIS) {
		return 0; /* lk_backend_redis_check(), from lk_redis_new */
	}
	if (cfg->n_endpoints > LK_CONFIG_MAX_ENDPOINTS || (cfg->n_endpoints && !cfg->endpoints)) {
		snprintf(err, errlen, "invalid endpoints list");
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->n_endpoints; i++) {
		if (!cfg->endpoints[i] || lk_backend_endpoint_len(cfg->endpoints[i], &len) < 0) {
			if (cfg->endpoints[i] && strchr(cfg->endpoints[i], '@'))
				snprintf(err, errlen, "invalid endpoint: credentials in a URL are not "
				         "supported (use username and password_file)");
			else
				snprintf(err, errlen, "invalid endpoint \"%.*s\": want http://host:port or "
				         "https://host:port", LK_BACKEND_MAX_HOST_LEN,
				         cfg->endpoints[i] ? cfg->endpoints[i] : "");
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < LK_BACKEND_ETCD_N_REQUIRES; i++) {
		const struct lk_backend_requires *r = &lk_backend_etcd_requires[i];

		if (lk_backend_field(cfg, r->field_off) && !lk_backend_field(cfg, r->needs_off)) {
			snprintf(err, errlen, "%s %s", r->field, r->msg);
			return -EINVAL;
		}
	}
	return 0;
}

int lk_backend_new(struct event_base *base, const struct lk_config_backend *cfg,
                   const struct lk_backend_hooks *hooks, struct lk_backend **ret,
                   char *err, size_t errlen)
{
	char scratch[512]; /* when the caller wants no message */

	if (!err || errlen == 0) {
		err = scratch;
		errlen = sizeof(scratch);
	}
	if (!base || !cfg || !ret) {
		snprintf(err, errlen, "invalid arguments");
		return -EINVAL;
	}
	if (lk_backend_check_config(cfg, err, errlen) < 0)
		return -EINVAL;

	switch (cfg->type) {
	case LK_BACKEND_REDIS:
		return lk_redis_new(base, cfg, hooks, ret, err, errlen);
	case LK_BACKEND_ETCD:
		return lk_etcd_new(base, cfg, hooks, ret, err, errlen);
	}
	snprintf(err, errlen, "unknown backend type %d", (int)cfg->type);
	return -EINVAL;
}

struct lk_backend *lk_backend_free(struct lk_backend *b)
{
	if (b && b->ops && b->ops->free)
		b->ops->free(b);
	return NULL;
}


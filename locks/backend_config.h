/* What one backend is configured with: the part of the agent's configuration that locks/ reads.
 *
 * It lives here, below the agent, so that no file in locks/ includes agent/: the agent's config
 * (agent/config.h) embeds these structs and fills them from YAML; tests fill them by hand.
 * The names keep their historical lk_config_ prefix, which every caller already spells.
 */
#ifndef LK_LOCKS_BACKEND_CONFIG_H
#define LK_LOCKS_BACKEND_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LK_CONFIG_MAX_ENDPOINTS 16 /* etcd endpoints of one backend */
#define LK_CONFIG_MAX_SENTINELS 16 /* Redis Sentinels of one backend */

/* Defaults, written once: the config fills them in, and a backend given a NULL or zero field
 * (a test's hand-made struct) uses the same. */
#define LK_BACKEND_REDIS_DEFAULT_ADDRESS    "127.0.0.1:6379"
#define LK_BACKEND_REDIS_DEFAULT_TIMEOUT_MS 500
#define LK_BACKEND_ETCD_DEFAULT_ENDPOINT    "http://127.0.0.1:2379"
#define LK_BACKEND_ETCD_DEFAULT_TIMEOUT_MS  1000

/* Redis's `databases` is 16 unless its config says otherwise, and managed services keep that:
 * a db outside 0..15 is far more often a typo than a server configured for more. */
#define LK_BACKEND_REDIS_MAX_DB             15
#define LK_BACKEND_REDIS_MAX_MASTER_NAME    128 /* bytes of a Sentinel master name */
#define LK_BACKEND_REDIS_MAX_REPLICAS_ACKED 64  /* min_replicas_acked: more is surely a typo */

enum lk_backend_type { LK_BACKEND_REDIS, LK_BACKEND_ETCD };

/* "redis", "etcd": the config's spelling. */
const char *lk_backend_type_name(enum lk_backend_type t);

struct lk_config_backend {
	char *name;
	enum lk_backend_type type;
	int64_t timeout_ms;          /* default 500ms for redis, 1s for etcd */
	char *password_file;         /* NULL if none */
	/* redis: address, or sentinels and master_name (never both) */
	char *address;               /* "host:port", "[v6]:port" or "unix:/path"; default 127.0.0.1:6379
	                                unless sentinels are given */
	char **sentinels;            /* "host:port" or "[v6]:port" each; NULL if none */
	size_t n_sentinels;
	char *master_name;           /* what the sentinels call the master; with sentinels only */
	unsigned db;                 /* SELECTed on the command connection; 0..LK_BACKEND_REDIS_MAX_DB */
	char *sentinel_username;     /* the sentinels' ACL user; needs sentinel_password_file */
	char *sentinel_password_file; /* NULL if the sentinels want no password; with sentinels */
	unsigned min_replicas_acked; /* WAIT for this many replicas before a tenure counts as
	                                proven; 0 (default): no WAIT */
	bool tls;                    /* `tls: true`; a rediss:// address means the same */
	char *server_name;           /* the name the server's certificate must carry (and SNI);
	                                NULL: the host dialled. With tls only */
	/* etcd */
	char **endpoints;            /* at least one; default http://127.0.0.1:2379 */
	size_t n_endpoints;
	char *username;              /* both: NULL if none; needs password_file (Redis 6 ACL user) */
	/* both (Redis with tls only): NULL if none; cert and key go together */
	char *ca_file, *cert_file, *key_file;
};

/* The Redis settings' rules, written once (locks/redis_rules.c): the config applies them
 * field by field to point at the offending line, lk_redis_new to the whole struct. */

/* A Sentinel master name: 1 to LK_BACKEND_REDIS_MAX_MASTER_NAME printable ASCII bytes without
 * spaces (it travels in a command and is compared with the words of a +switch-master event). */
bool lk_backend_redis_valid_master_name(const char *s);

/* A Redis address field without its scheme: "rediss://host:port" (TLS; *tls set true) and
 * "redis://host:port" name the same server as "host:port". *tls is false otherwise. */
const char *lk_backend_redis_address(const char *addr, bool *tls);

/* What is wrong with a Redis address (with `tls: true` if tls), as a phrase that follows the
 * quoted address ("is not host:port, ..."): its form, credentials in it, TLS to a unix
 * socket; NULL if nothing. */
const char *lk_backend_redis_address_problem(const char *addr, bool tls);

/* A server_name: a DNS name (letters, digits, '-', '.', '_', a '*' label), 1 to
 * LK_BACKEND_MAX_HOST_LEN bytes. */
bool lk_backend_redis_valid_server_name(const char *s);

/* Whether a Redis backend speaks TLS: `tls: true` or a rediss:// address. */
bool lk_backend_redis_tls(const struct lk_config_backend *cfg);

/* Every rule of a Redis backend's fields: 0, or -EINVAL with the first problem in err[errlen],
 * worded as the config file spells the fields. */
int lk_backend_redis_check(const struct lk_config_backend *cfg, char *err, size_t errlen);

#endif

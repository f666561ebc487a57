/* What one backend is configured with: the part of the agent's configuration that locks/ reads.
 *
 * It lives here, below the agent, so that no file in locks/ includes agent/: the agent's config
 * (agent/config.h) embeds these structs and fills them from YAML; tests fill them by hand.
 * The names keep their historical lk_config_ prefix, which every caller already spells.
 */
#ifndef LK_LOCKS_BACKEND_CONFIG_H
#define LK_LOCKS_BACKEND_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#define LK_CONFIG_MAX_ENDPOINTS 16 /* etcd endpoints of one backend */

/* Defaults, written once: the config fills them in, and a backend given a NULL or zero field
 * (a test's hand-made struct) uses the same. */
#define LK_BACKEND_REDIS_DEFAULT_ADDRESS    "127.0.0.1:6379"
#define LK_BACKEND_REDIS_DEFAULT_TIMEOUT_MS 500
#define LK_BACKEND_ETCD_DEFAULT_ENDPOINT    "http://127.0.0.1:2379"
#define LK_BACKEND_ETCD_DEFAULT_TIMEOUT_MS  1000

enum lk_backend_type { LK_BACKEND_REDIS, LK_BACKEND_ETCD };

/* "redis", "etcd": the config's spelling. */
const char *lk_backend_type_name(enum lk_backend_type t);

struct lk_config_backend {
	char *name;
	enum lk_backend_type type;
	int64_t timeout_ms;          /* default 500ms for redis, 1s for etcd */
	char *password_file;         /* NULL if none */
	/* redis */
	char *address;               /* "host:port", "[v6]:port" or "unix:/path"; default 127.0.0.1:6379 */
	/* etcd */
	char **endpoints;            /* at least one; default http://127.0.0.1:2379 */
	size_t n_endpoints;
	char *username;              /* NULL if none; needs password_file */
	char *ca_file, *cert_file, *key_file; /* NULL if none; cert and key go together */
};

#endif

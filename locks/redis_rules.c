/* The rules a Redis backend's settings follow (backend_config.h), written once: the agent's
 * config applies them field by field, so that each problem points at its line, and
 * lk_redis_new applies lk_backend_redis_check() to whatever struct it is given, so that a
 * hand-made one gets the same answer as check-config. */
#include "locks/backend.h"
#include "locks/backend_config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

bool lk_backend_redis_valid_master_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > LK_BACKEND_REDIS_MAX_MASTER_NAME)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

const char *lk_backend_redis_address(const char *addr, bool *tls)
{
	static const char secure[] = "rediss://", plain[] = "redis://";

	*tls = strncmp(addr, secure, sizeof(secure) - 1) == 0;
	if (*tls)
		return addr + sizeof(secure) - 1;
	if (strncmp(addr, plain, sizeof(plain) - 1) == 0)
		return addr + sizeof(plain) - 1;
	return addr;
}

bool lk_backend_redis_tls(const struct lk_config_backend *cfg)
{
	bool tls = false;

	if (cfg->address)
		(void)lk_backend_redis_address(cfg->address, &tls);
	return cfg->tls || tls;
}

const char *lk_backend_redis_address_problem(const char *addr, bool tls)
{
	bool scheme_tls;
	const char *hostport = lk_backend_redis_address(addr, &scheme_tls);

	if (strchr(addr, '@'))
		return "has credentials: they belong in username and password_file";
	if (!lk_backend_valid_address(hostport, false))
		return "is not host:port, [v6]:port, unix:/path or rediss://host:port";
	if ((tls || scheme_tls) && strncmp(hostport, "unix:", 5) == 0)
		return "is a unix socket, and Redis serves TLS on its tls-port only";
	return NULL;
}

/* The TLS settings' rules (see lk_backend_redis_check). */
static int check_tls(const struct lk_config_backend *cfg, char *err, size_t errlen)
{
	static const struct { const char *name; size_t off; } needs_tls[] = {
		{ "server_name", offsetof(struct lk_config_backend, server_name) },
		{ "ca_file", offsetof(struct lk_config_backend, ca_file) },
		{ "cert_file", offsetof(struct lk_config_backend, cert_file) },
		{ "key_file", offsetof(struct lk_config_backend, key_file) },
	};
	bool tls = lk_backend_redis_tls(cfg);

	for (size_t i = 0; i < sizeof(needs_tls) / sizeof(needs_tls[0]); i++) {
		if (!tls && *(char *const *)((const char *)cfg + needs_tls[i].off)) {
			snprintf(err, errlen, "%s requires tls: true (or a rediss:// address)",
			         needs_tls[i].name);
			return -EINVAL;
		}
	}
	if (!cfg->cert_file != !cfg->key_file) {
		snprintf(err, errlen, "%s", cfg->cert_file ? "cert_file requires key_file"
		                                          : "key_file requires cert_file");
		return -EINVAL;
	}
	if (cfg->server_name && !lk_backend_redis_valid_server_name(cfg->server_name)) {
		snprintf(err, errlen, "invalid server_name: want a DNS name of 1 to %d characters",
		         LK_BACKEND_MAX_HOST_LEN);
		return -EINVAL;
	}
	return 0;
}

bool lk_backend_redis_valid_server_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > LK_BACKEND_MAX_HOST_LEN)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("-._*", s[i]))
			return false;
	return true;
}

int lk_backend_redis_check(const struct lk_config_backend *cfg, char *err, size_t errlen)
{
	const char *problem = cfg->address ?
		lk_backend_redis_address_problem(cfg->address, cfg->tls) : NULL;

	if (problem) {
		snprintf(err, errlen, "address \"%.*s\" %s", LK_BACKEND_MAX_HOST_LEN, cfg->address,
		         problem);
		return -EINVAL;
	}
	if (check_tls(cfg, err, errlen) < 0)
		return -EINVAL;
	if (cfg->address && cfg->n_sentinels) {
		snprintf(err, errlen, "address and sentinels cannot be used together (the sentinels "
		         "tell the master's address)");
		return -EINVAL;
	}
	if (cfg->n_sentinels > LK_CONFIG_MAX_SENTINELS || (cfg->n_sentinels && !cfg->sentinels)) {
		snprintf(err, errlen, "invalid sentinels list (1 to %d host:port)",
		         LK_CONFIG_MAX_SENTINELS);
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->n_sentinels; i++) {
		if (!cfg->sentinels[i] || !lk_backend_valid_address(cfg->sentinels[i], true)) {
			snprintf(err, errlen, "invalid sentinel \"%.*s\": want host:port or [v6]:port",
			         LK_BACKEND_MAX_HOST_LEN, cfg->sentinels[i] ? cfg->sentinels[i] : "");
			return -EINVAL;
		}
	}
	if (cfg->n_sentinels && !cfg->master_name) {
		snprintf(err, errlen, "sentinels requires master_name");
		return -EINVAL;
	}
	if (cfg->master_name && !cfg->n_sentinels) {
		snprintf(err, errlen, "master_name requires sentinels");
		return -EINVAL;
	}
	if (cfg->master_name && !lk_backend_redis_valid_master_name(cfg->master_name)) {
		snprintf(err, errlen, "invalid master_name: want 1 to %d printable ASCII characters "
		         "without spaces", LK_BACKEND_REDIS_MAX_MASTER_NAME);
		return -EINVAL;
	}
	if (cfg->db > LK_BACKEND_REDIS_MAX_DB) {
		snprintf(err, errlen, "db must be between 0 and %d, got %u", LK_BACKEND_REDIS_MAX_DB,
		         cfg->db);
		return -EINVAL;
	}
	if (cfg->min_replicas_acked > LK_BACKEND_REDIS_MAX_REPLICAS_ACKED) {
		snprintf(err, errlen, "min_replicas_acked must be between 0 and %d, got %u",
		         LK_BACKEND_REDIS_MAX_REPLICAS_ACKED, cfg->min_replicas_acked);
		return -EINVAL;
	}
	if (cfg->sentinel_password_file && !cfg->n_sentinels) {
		snprintf(err, errlen, "sentinel_password_file requires sentinels");
		return -EINVAL;
	}
	if (cfg->sentinel_username && !cfg->sentinel_password_file) {
		snprintf(err, errlen, "sentinel_username requires sentinel_password_file");
		return -EINVAL;
	}
	if (cfg->username && !cfg->password_file) {
		snprintf(err, errlen, "username requires password_file");
		return -EINVAL;
	}
	return 0;
}

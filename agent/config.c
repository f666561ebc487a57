/* The agent's configuration file (docs/configuration.md): the schema. One pass over the node
 * tree that config_yaml.c builds checks every value, expands ${VAR} (config_expand.c), fills in
 * defaults and collects every problem as a "FILE:LINE:COL: FIELD: MESSAGE" line.
 *
 * The walk only ever descends into the shapes it expects (top level -> backends/locks -> one
 * item -> endpoints), so YAML aliases, which libyaml shares rather than copies and which can
 * even form cycles, cost nothing extra and cannot make the walk loop or explode. */
#include "agent/config_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/duration.h"
#include "locks/backend.h"

#define MAX_IDENTITY      253
#define MIN_TTL_MS        100
#define ETCD_MIN_TTL_MS   2000

/* The fields of each mapping, in the order they are checked. */
enum {
	T_IDENTITY, T_SOCKET, T_SOCKET_MODE, T_HTTP_LISTEN, T_LOG_FORMAT, T_SHUTDOWN_TIMEOUT,
	T_AUTH_KEY_FILE, T_ALLOWED_UIDS, T_MAX_CLIENTS, T_CLIENT_IDLE_TIMEOUT, T_BACKENDS, T_LOCKS,
	T_N
};
static const char *const top_keys[T_N] = {
	"identity", "socket", "socket_mode", "http_listen", "log_format", "shutdown_timeout",
	"auth_key_file", "allowed_uids", "max_clients", "client_idle_timeout", "backends", "locks",
};

enum {
	B_NAME, B_TYPE, B_TIMEOUT, B_PASSWORD_FILE, B_ADDRESS, B_ENDPOINTS, B_USERNAME, B_CA_FILE,
	B_CERT_FILE, B_KEY_FILE, B_SENTINELS, B_MASTER_NAME, B_DB, B_SENTINEL_USERNAME,
	B_SENTINEL_PASSWORD_FILE, B_MIN_REPLICAS_ACKED, B_TLS, B_SERVER_NAME, B_N
};
static const char *const backend_keys[B_N] = {
	"name", "type", "timeout", "password_file", "address", "endpoints", "username", "ca_file",
	"cert_file", "key_file", "sentinels", "master_name", "db", "sentinel_username",
	"sentinel_password_file", "min_replicas_acked", "tls", "server_name",
};

enum {
	L_NAME, L_BACKEND, L_KEY, L_TTL, L_RENEW_INTERVAL, L_RENEW_DEADLINE, L_RETRY_INTERVAL,
	L_STEPDOWN_TIMEOUT, L_RELEASE_TIMEOUT, L_CAMPAIGN, L_N
};
static const char *const lock_keys[L_N] = {
	"name", "backend", "key", "ttl", "renew_interval", "renew_deadline", "retry_interval",
	"stepdown_timeout", "release_timeout", "campaign",
};

_Static_assert(T_N <= LK_CONFIG_MAX_FIELDS && B_N < LK_CONFIG_MAX_FIELDS &&
               L_N <= LK_CONFIG_MAX_FIELDS, "struct lk_config_fields is too small");

/* ---- backends ---- */

/* The index of a backend field spelled as in the file, or B_N (never set) if there is none. */
static size_t backend_key(const char *name)
{
	size_t k = 0;

	while (k < B_N && strcmp(backend_keys[k], name) != 0)
		k++;
	return k;
}

/* ca_file, cert_file and key_file, which both types have (Redis with TLS only); a certificate
 * and its key go together. */
static void parse_tls_files(struct lk_config_ctx *c, const struct lk_config_fields *f,
                            const char *path, struct lk_config_backend *b)
{
	char field[LK_CONFIG_PATH_MAX_LEN];

	lk_config_join(field, path, "ca_file");
	lk_config_get_file(c, f->val[B_CA_FILE], field, &b->ca_file);
	lk_config_join(field, path, "cert_file");
	lk_config_get_file(c, f->val[B_CERT_FILE], field, &b->cert_file);
	lk_config_join(field, path, "key_file");
	lk_config_get_file(c, f->val[B_KEY_FILE], field, &b->key_file);
	if (b->type == LK_BACKEND_REDIS && !f->val[B_CERT_FILE] != !f->val[B_KEY_FILE]) {
		lk_config_join(field, path, f->val[B_CERT_FILE] ? "cert_file" : "key_file");
		lk_config_error_at(c, f->val[B_CERT_FILE] ? f->val[B_CERT_FILE] : f->val[B_KEY_FILE],
		                   field, "requires %s", f->val[B_CERT_FILE] ? "key_file" : "cert_file");
	}
}

/* A Redis backend's own fields. The rules are locks/redis_rules.c's (lk_backend_redis_check()),
 * applied here one field at a time so that each problem points at its line. */
static void parse_redis(struct lk_config_ctx *c, const struct lk_config_fields *f,
                        const char *path, struct lk_config_backend *b)
{
	static const char *const booleans[] = { "false", "true" };
	static const size_t tls_only[] = { B_CA_FILE, B_CERT_FILE, B_KEY_FILE, B_SERVER_NAME };
	char field[LK_CONFIG_PATH_MAX_LEN], qb[QBUF], kb[QBUF];
	yaml_node_t *sn = f->val[B_SENTINELS];
	bool scheme_tls = false;
	const char *problem;
	uint64_t db;
	size_t tls;

	/* The address itself is checked below, once `tls` is known. */
	lk_config_join(field, path, "address");
	if (lk_config_get_string(c, f->val[B_ADDRESS], field, &b->address) > 0)
		(void)lk_backend_redis_address(b->address, &scheme_tls);

	lk_config_join(field, path, "sentinels");
	if (sn && sn->type != YAML_SEQUENCE_NODE) {
		lk_config_error_at(c, sn, field, "expected a list, found %s",
		                   lk_config_kind(kb, sizeof(kb), sn));
	} else if (sn) {
		size_t count = (size_t)(sn->data.sequence.items.top - sn->data.sequence.items.start);

		if (count == 0)
			lk_config_error_at(c, sn, field, "at least one sentinel is required");
		if (count > LK_CONFIG_MAX_SENTINELS) {
			lk_config_error_at(c, sn, field, "too many sentinels (at most %d)",
			                   LK_CONFIG_MAX_SENTINELS);
			count = LK_CONFIG_MAX_SENTINELS;
		}
		b->sentinels = calloc(count ? count : 1, sizeof(*b->sentinels));
		if (!b->sentinels)
			c->oom = true;
		for (size_t k = 0; k < count && b->sentinels; k++) {
			yaml_node_t *item = lk_config_node_at(c, sn->data.sequence.items.start[k]);
			char ifield[LK_CONFIG_PATH_MAX_LEN + 24];
			char **sp = &b->sentinels[b->n_sentinels];

			snprintf(ifield, sizeof(ifield), "%s[%zu]", field, k);
			if (lk_config_get_string(c, item, ifield, sp) <= 0)
				continue;
			b->n_sentinels++;
			if (!lk_backend_valid_address(*sp, true))
				lk_config_error_at(c, item, ifield, "%s is not host:port or [v6]:port",
				                   Q(qb, *sp));
		}
		if (!f->val[B_MASTER_NAME])
			lk_config_error_at(c, sn, field, "requires master_name");
	}

	lk_config_join(field, path, "master_name");
	if (lk_config_get_string(c, f->val[B_MASTER_NAME], field, &b->master_name) > 0) {
		if (!lk_backend_redis_valid_master_name(b->master_name))
			lk_config_error_at(c, f->val[B_MASTER_NAME], field,
			                   "%s must be 1 to %d printable ASCII characters without spaces",
			                   Q(qb, b->master_name), LK_BACKEND_REDIS_MAX_MASTER_NAME);
		else if (!sn)
			lk_config_error_at(c, f->val[B_MASTER_NAME], field, "requires sentinels");
	}

	lk_config_join(field, path, "db");
	if (lk_config_get_number(c, f->val[B_DB], field, 0, LK_BACKEND_REDIS_MAX_DB, NULL, &db) > 0)
		b->db = (unsigned)db;
	lk_config_join(field, path, "min_replicas_acked");
	if (lk_config_get_number(c, f->val[B_MIN_REPLICAS_ACKED], field, 0,
	                         LK_BACKEND_REDIS_MAX_REPLICAS_ACKED, NULL, &db) > 0)
		b->min_replicas_acked = (unsigned)db;

	/* The sentinels' own credentials (they may require a password of their own). */
	lk_config_join(field, path, "sentinel_password_file");
	if (lk_config_get_file(c, f->val[B_SENTINEL_PASSWORD_FILE], field,
	                       &b->sentinel_password_file) > 0 && !sn)
		lk_config_error_at(c, f->val[B_SENTINEL_PASSWORD_FILE], field, "requires sentinels");
	lk_config_join(field, path, "sentinel_username");
	if (lk_config_get_string(c, f->val[B_SENTINEL_USERNAME], field, &b->sentinel_username) > 0) {
		if (!lk_config_printable_word(b->sentinel_username, 1, MAX_IDENTITY))
			lk_config_error_at(c, f->val[B_SENTINEL_USERNAME], field,
			                   "%s must be 1 to %d printable ASCII characters without spaces",
			                   Q(qb, b->sentinel_username), MAX_IDENTITY);
		else if (!f->val[B_SENTINEL_PASSWORD_FILE])
			lk_config_error_at(c, f->val[B_SENTINEL_USERNAME], field,
			                   "requires sentinel_password_file");
	}

	/* TLS: `tls: true` or a rediss:// address; the rest means nothing without it. */
	lk_config_join(field, path, "tls");
	if (lk_config_get_choice(c, f->val[B_TLS], field, "boolean", booleans, 2, &tls) > 0) {
		b->tls = tls == 1;
		if (!b->tls && scheme_tls)
			lk_config_error_at(c, f->val[B_TLS], field, "false contradicts the rediss:// "
			                   "address");
	}
	lk_config_join(field, path, "address");
	if (b->address && (problem = lk_backend_redis_address_problem(b->address, b->tls)))
		lk_config_error_at(c, f->val[B_ADDRESS], field, "%s %s", Q(qb, b->address), problem);
	else if (b->address && sn)
		lk_config_error_at(c, f->val[B_ADDRESS], field, "cannot be used with sentinels "
		                   "(the sentinels tell the master's address)");
	lk_config_join(field, path, "server_name");
	if (lk_config_get_string(c, f->val[B_SERVER_NAME], field, &b->server_name) > 0 &&
	    !lk_backend_redis_valid_server_name(b->server_name))
		lk_config_error_at(c, f->val[B_SERVER_NAME], field, "%s is not a DNS name",
		                   Q(qb, b->server_name));
	for (size_t i = 0; i < sizeof(tls_only) / sizeof(tls_only[0]); i++) {
		if (f->val[tls_only[i]] && !b->tls && !scheme_tls) {
			lk_config_join(field, path, backend_keys[tls_only[i]]);
			lk_config_error_at(c, f->key[tls_only[i]], field, "requires tls: true (or a rediss:// "
			                   "address)");
		}
	}
	if (b->tls || scheme_tls)
		parse_tls_files(c, f, path, b);

	/* Redis authenticates a user with its password; a user alone would be ignored. */
	if (f->val[B_USERNAME] && !f->val[B_PASSWORD_FILE]) {
		lk_config_join(field, path, "username");
		lk_config_error_at(c, f->val[B_USERNAME], field, "requires password_file");
	}
	if (!b->address && !sn)
		lk_config_dup_str(c, LK_BACKEND_REDIS_DEFAULT_ADDRESS, &b->address);
}

static void parse_backend(struct lk_config_ctx *c, yaml_node_t *n, size_t i, struct lk_config *cfg)
{
	static const char *const types[] = { "redis", "etcd" };
	/* Fields that only one type has, with the type that has them. */
	static const struct { int field; enum lk_backend_type type; } owned[] = {
		{ B_ADDRESS, LK_BACKEND_REDIS }, { B_SENTINELS, LK_BACKEND_REDIS },
		{ B_MASTER_NAME, LK_BACKEND_REDIS }, { B_DB, LK_BACKEND_REDIS },
		{ B_SENTINEL_USERNAME, LK_BACKEND_REDIS }, { B_SENTINEL_PASSWORD_FILE, LK_BACKEND_REDIS },
		{ B_MIN_REPLICAS_ACKED, LK_BACKEND_REDIS }, { B_TLS, LK_BACKEND_REDIS },
		{ B_SERVER_NAME, LK_BACKEND_REDIS }, { B_ENDPOINTS, LK_BACKEND_ETCD },
	};
	struct lk_config_backend *b = &cfg->backends[i];
	char path[LK_CONFIG_PATH_MAX_LEN], field[LK_CONFIG_PATH_MAX_LEN], qb[QBUF], kb[QBUF];
	struct lk_config_fields f;
	size_t type;
	bool typed;

	snprintf(path, sizeof(path), "backends[%zu]", i);
	lk_config_scan_mapping(c, n, path, backend_keys, B_N, &f);
	if (!f.ok)
		return;

	lk_config_join(field, path, "name");
	if (!f.val[B_NAME]) {
		lk_config_error_at(c, n, path, "missing required field \"name\"");
	} else if (lk_config_get_string(c, f.val[B_NAME], field, &b->name) > 0) {
		if (!lk_config_valid_name(b->name)) {
			lk_config_error_at(c, f.val[B_NAME], field,
			                   "%s is not a valid backend name ([A-Za-z0-9._-]{1,128})", Q(qb, b->name));
		} else {
			for (size_t j = 0; j < i; j++) {
				if (cfg->backends[j].name && strcmp(cfg->backends[j].name, b->name) == 0) {
					lk_config_error_at(c, f.val[B_NAME], field,
					                   "backend name %s is already used by backends[%zu]",
					                   Q(qb, b->name), j);
					break;
				}
			}
		}
	}

	lk_config_join(field, path, "type");
	typed = false;
	if (!f.val[B_TYPE])
		lk_config_error_at(c, n, path, "missing required field \"type\"");
	else if (lk_config_get_choice(c, f.val[B_TYPE], field, "backend type", types, 2, &type) > 0)
		typed = true;
	b->type = typed ? (enum lk_backend_type)type : LK_BACKEND_REDIS;

	b->timeout_ms = b->type == LK_BACKEND_ETCD ? LK_BACKEND_ETCD_DEFAULT_TIMEOUT_MS
	                                           : LK_BACKEND_REDIS_DEFAULT_TIMEOUT_MS;
	lk_config_join(field, path, "timeout");
	lk_config_get_duration(c, f.val[B_TIMEOUT], field, 1, &b->timeout_ms);
	lk_config_join(field, path, "password_file");
	lk_config_get_file(c, f.val[B_PASSWORD_FILE], field, &b->password_file);

	/* Without a known type there is no telling which of the remaining fields belong. */
	if (!typed)
		return;
	for (size_t k = 0; k < sizeof(owned) / sizeof(owned[0]); k++) {
		if (owned[k].type == b->type || !f.key[owned[k].field])
			continue;
		lk_config_join(field, path, backend_keys[owned[k].field]);
		lk_config_error_at(c, f.key[owned[k].field], field, "not a field of %s backend",
		                   b->type == LK_BACKEND_REDIS ? "a redis" : "an etcd");
	}

	lk_config_join(field, path, "username");
	if (lk_config_get_string(c, f.val[B_USERNAME], field, &b->username) > 0) {
		if (!lk_config_printable_word(b->username, 1, MAX_IDENTITY))
			lk_config_error_at(c, f.val[B_USERNAME], field,
			                   "%s must be 1 to %d printable ASCII characters without spaces",
			                   Q(qb, b->username), MAX_IDENTITY);
	}

	if (b->type == LK_BACKEND_REDIS) {
		parse_redis(c, &f, path, b);
		return;
	}

	yaml_node_t *eps = f.val[B_ENDPOINTS];
	lk_config_join(field, path, "endpoints");
	if (!eps) {
		b->endpoints = calloc(1, sizeof(*b->endpoints));
		if (!b->endpoints || lk_config_dup_str(c, LK_BACKEND_ETCD_DEFAULT_ENDPOINT, &b->endpoints[0]) < 0)
			c->oom = true;
		else
			b->n_endpoints = 1;
	} else if (eps->type != YAML_SEQUENCE_NODE) {
		lk_config_error_at(c, eps, field, "expected a list, found %s",
		                   lk_config_kind(kb, sizeof(kb), eps));
	} else {
		size_t count = (size_t)(eps->data.sequence.items.top - eps->data.sequence.items.start);

		if (count == 0)
			lk_config_error_at(c, eps, field, "at least one endpoint is required");
		if (count > LK_CONFIG_MAX_ENDPOINTS) {
			lk_config_error_at(c, eps, field, "too many endpoints (at most %d)",
			                   LK_CONFIG_MAX_ENDPOINTS);
			count = LK_CONFIG_MAX_ENDPOINTS;
		}
		b->endpoints = calloc(count ? count : 1, sizeof(*b->endpoints));
		if (!b->endpoints)
			c->oom = true;
		for (size_t k = 0; k < count && b->endpoints; k++) {
			yaml_node_t *item = lk_config_node_at(c, eps->data.sequence.items.start[k]);
			char ifield[LK_CONFIG_PATH_MAX_LEN + 24];
			char **ep = &b->endpoints[b->n_endpoints];
			size_t eplen;

			snprintf(ifield, sizeof(ifield), "%s[%zu]", field, k);
			if (lk_config_get_string(c, item, ifield, ep) <= 0)
				continue;
			b->n_endpoints++;
			if (lk_backend_endpoint_len(*ep, &eplen) < 0)
				lk_config_error_at(c, item, ifield, "%s is not an http:// or https:// URL",
				                   Q(qb, *ep));
		}
	}

	parse_tls_files(c, &f, path, b);
	/* Settings that need another one, by presence in the file (a file that cannot be read is
	 * reported as such, not also as missing). */
	for (size_t k = 0; k < LK_BACKEND_ETCD_N_REQUIRES; k++) {
		const struct lk_backend_requires *rq = &lk_backend_etcd_requires[k];
		size_t have = backend_key(rq->field), need = backend_key(rq->needs);

		if (f.val[have] && !f.val[need]) {
			lk_config_join(field, path, rq->field);
			lk_config_error_at(c, f.val[have], field, "%s", rq->msg);
		}
	}
}

/* ---- locks ---- */

static void check_timing(struct lk_config_ctx *c, const char *path,
                         const struct lk_config_fields *f, const struct lk_config_lock *l)
{
	char field[LK_CONFIG_PATH_MAX_LEN], a[32], b[32];

	/* Compare after defaults, but point at a value the user wrote; a defaulted side is
	 * named as such so that the message explains where the number comes from. */
	if (l->renew_interval_ms >= l->renew_deadline_ms) {
		lk_duration_format(l->renew_interval_ms, a, sizeof(a));
		lk_duration_format(l->renew_deadline_ms, b, sizeof(b));
		if (f->val[L_RENEW_INTERVAL]) {
			lk_config_join(field, path, "renew_interval");
			lk_config_error_at(c, f->val[L_RENEW_INTERVAL], field,
			                   "must be shorter than renew_deadline (%s%s), got %s", b,
			                   f->val[L_RENEW_DEADLINE] ? "" : ", the default 2*ttl/3", a);
		} else {
			lk_config_join(field, path, "renew_deadline");
			lk_config_error_at(c, f->val[L_RENEW_DEADLINE], field,
			                   "must be longer than renew_interval (%s, the default ttl/3), got %s", a,
			                   b);
		}
	}
	if (l->renew_deadline_ms >= l->ttl_ms) {
		/* The default 2*ttl/3 is always shorter, so renew_deadline was given. */
		lk_duration_format(l->renew_deadline_ms, a, sizeof(a));
		lk_duration_format(l->ttl_ms, b, sizeof(b));
		lk_config_join(field, path, "renew_deadline");
		lk_config_error_at(c, f->val[L_RENEW_DEADLINE], field, "must be shorter than ttl (%s%s), got %s",
		                   b, f->val[L_TTL] ? "" : ", the default", a);
	}
}

/* The lock names seen so far, to find a duplicate in O(1) rather than comparing every lock
 * with every earlier one (16384 locks: 134 million comparisons). Open addressing on the name's
 * FNV-1a hash; a slot holds a lock index + 1, 0 is empty. */
struct name_set {
	size_t *slots;
	size_t mask;
};

static size_t name_hash(const char *s)
{
	uint64_t h = 14695981039346656037ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (size_t)h;
}

/* The index of an earlier lock named like locks[i], or -1 after adding locks[i]. */
static long name_set_add(struct name_set *set, const struct lk_config *cfg, size_t i)
{
	const char *name = cfg->locks[i].name;
	size_t k = name_hash(name) & set->mask;

	for (; set->slots[k]; k = (k + 1) & set->mask)
		if (strcmp(cfg->locks[set->slots[k] - 1].name, name) == 0)
			return (long)(set->slots[k] - 1);
	set->slots[k] = i + 1;
	return -1;
}

static void parse_lock(struct lk_config_ctx *c, yaml_node_t *n, size_t i, struct lk_config *cfg,
                       int64_t shutdown_ms, struct name_set *names)
{
	static const char *const campaigns[] = { "when_app_connected", "always" };
	static const struct { int field; size_t off; } durations[] = {
		{ L_RENEW_INTERVAL, offsetof(struct lk_config_lock, renew_interval_ms) },
		{ L_RENEW_DEADLINE, offsetof(struct lk_config_lock, renew_deadline_ms) },
		{ L_RETRY_INTERVAL, offsetof(struct lk_config_lock, retry_interval_ms) },
		{ L_STEPDOWN_TIMEOUT, offsetof(struct lk_config_lock, stepdown_timeout_ms) },
		{ L_RELEASE_TIMEOUT, offsetof(struct lk_config_lock, release_timeout_ms) },
	};
	struct lk_config_lock *l = &cfg->locks[i];
	char path[LK_CONFIG_PATH_MAX_LEN], field[LK_CONFIG_PATH_MAX_LEN], qb[QBUF], *s;
	bool backend_ok = false, ttl_ok, timing_ok;
	struct lk_config_fields f;
	size_t choice;

	snprintf(path, sizeof(path), "locks[%zu]", i);
	lk_config_scan_mapping(c, n, path, lock_keys, L_N, &f);
	if (!f.ok)
		return;

	lk_config_join(field, path, "name");
	if (!f.val[L_NAME]) {
		lk_config_error_at(c, n, path, "missing required field \"name\"");
	} else if (lk_config_get_string(c, f.val[L_NAME], field, &l->name) > 0) {
		if (!lk_config_valid_name(l->name)) {
			lk_config_error_at(c, f.val[L_NAME], field,
			                   "%s is not a valid lock name ([A-Za-z0-9._-]{1,128})", Q(qb, l->name));
		} else {
			long j = name_set_add(names, cfg, i);

			if (j >= 0)
				lk_config_error_at(c, f.val[L_NAME], field,
				                   "lock name %s is already used by locks[%ld]",
				                   Q(qb, l->name), j);
		}
	}

	lk_config_join(field, path, "backend");
	if (lk_config_get_string(c, f.val[L_BACKEND], field, &s) > 0) {
		size_t j;

		for (j = 0; j < cfg->n_backends; j++)
			if (cfg->backends[j].name && strcmp(cfg->backends[j].name, s) == 0)
				break;
		if (j < cfg->n_backends) {
			l->backend = j;
			backend_ok = true;
		} else if (cfg->n_backends > 0) {
			/* With no usable backends list, that one error says it all. */
			lk_config_error_at(c, f.val[L_BACKEND], field, "unknown backend %s", Q(qb, s));
		}
		free(s);
	} else if (!f.val[L_BACKEND] && cfg->n_backends == 1) {
		l->backend = 0;
		backend_ok = true;
	} else if (!f.val[L_BACKEND] && cfg->n_backends > 1) {
		lk_config_error_at(c, n, path,
		                   "missing required field \"backend\" (there is more than one backend)");
	}

	lk_config_join(field, path, "key");
	if (lk_config_get_string(c, f.val[L_KEY], field, &l->key) > 0 &&
	    !lk_config_printable_word(l->key, 1, LK_BACKEND_KEY_MAX))
		lk_config_error_at(c, f.val[L_KEY], field,
		                   "%s must be 1 to %d printable ASCII characters without spaces", Q(qb, l->key),
		                   LK_BACKEND_KEY_MAX);
	if (!l->key && l->name) {
		/* Not asprintf: its buffer's slack would stay with every lock for the agent's life. */
		size_t len = sizeof("leasekeeper/") + strlen(l->name);

		l->key = malloc(len);
		if (l->key)
			snprintf(l->key, len, "leasekeeper/%s", l->name);
		else
			c->oom = true;
	}

	l->ttl_ms = 10000;
	lk_config_join(field, path, "ttl");
	ttl_ok = lk_config_get_duration(c, f.val[L_TTL], field, MIN_TTL_MS, &l->ttl_ms) >= 0;
	timing_ok = ttl_ok;
	l->renew_interval_ms = l->ttl_ms / 3;
	l->renew_deadline_ms = 2 * l->ttl_ms / 3;
	l->retry_interval_ms = 1000;
	l->stepdown_timeout_ms = 5000;
	l->release_timeout_ms = 3000;
	for (size_t k = 0; k < sizeof(durations) / sizeof(durations[0]); k++) {
		int field_id = durations[k].field;

		lk_config_join(field, path, lock_keys[field_id]);
		if (lk_config_get_duration(c, f.val[field_id], field, 1,
		                           (int64_t *)(void *)((char *)l + durations[k].off)) < 0 &&
		    (field_id == L_RENEW_INTERVAL || field_id == L_RENEW_DEADLINE))
			timing_ok = false;
	}
	/* Relations between fields are checked only when each of them is valid on its own,
	 * so that one mistake is reported once. */
	if (timing_ok)
		check_timing(c, path, &f, l);

	lk_config_join(field, path, "campaign");
	l->campaign = LK_CAMPAIGN_WHEN_APP_CONNECTED;
	if (lk_config_get_choice(c, f.val[L_CAMPAIGN], field, "campaign mode", campaigns, 2, &choice) > 0)
		l->campaign = (enum lk_campaign_mode)choice;

	if (backend_ok && cfg->backends[l->backend].type == LK_BACKEND_ETCD &&
	    ttl_ok && l->ttl_ms < ETCD_MIN_TTL_MS) {
		lk_config_join(field, path, "ttl");
		lk_config_warn_at(c, f.val[L_TTL], field,
		                  "etcd grants no lease shorter than about 2s; the granted TTL will be used");
	}
	if (shutdown_ms > 0 && l->stepdown_timeout_ms + l->release_timeout_ms > shutdown_ms) {
		char a[32], b[32], d[32];

		lk_config_warn_at(c, n, path,
		                  "stepdown_timeout (%s) + release_timeout (%s) is longer than "
		                  "shutdown_timeout (%s); a drain may be cut short",
		                  lk_duration_format(l->stepdown_timeout_ms, a, sizeof(a)),
		                  lk_duration_format(l->release_timeout_ms, b, sizeof(b)),
		                  lk_duration_format(shutdown_ms, d, sizeof(d)));
	}
}

/* ---- top level ---- */

/* allowed_uids: a non-empty list of uids. An empty list would lock every client out, which is
 * never what was meant; leaving the field out is how to allow any peer. */
static void parse_allowed_uids(struct lk_config_ctx *c, yaml_node_t *list, struct lk_config *cfg)
{
	char kb[QBUF], field[LK_CONFIG_PATH_MAX_LEN];
	size_t count;
	uint32_t *uids;

	if (!list)
		return;
	if (list->type != YAML_SEQUENCE_NODE) {
		lk_config_error_at(c, list, "allowed_uids", "expected a list of uids, found %s",
		                   lk_config_kind(kb, sizeof(kb), list));
		return;
	}
	count = (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
	if (count == 0) {
		lk_config_error_at(c, list, "allowed_uids",
		                   "must list at least one uid (leave the field out to allow any peer)");
		return;
	}
	if (count > LK_CONFIG_MAX_UIDS) {
		lk_config_error_at(c, list, "allowed_uids", "too many uids (at most %d)", LK_CONFIG_MAX_UIDS);
		return;
	}
	uids = calloc(count, sizeof(*uids));
	if (!uids) {
		c->oom = true;
		return;
	}
	for (size_t i = 0; i < count; i++) {
		yaml_node_t *item = lk_config_node_at(c, list->data.sequence.items.start[i]);
		uint64_t v;

		snprintf(field, sizeof(field), "allowed_uids[%zu]", i);
		/* (uid_t)-1 is "no uid" to the kernel's interfaces, so it is not a valid entry. */
		if (lk_config_is_null(item))
			lk_config_error_at(c, item, field, "expected a uid, found null");
		else if (lk_config_get_number(c, item, field, 0, UINT32_MAX - 1, "a uid", &v) > 0)
			uids[i] = (uint32_t)v;
	}
	cfg->allowed_uids = uids;
	cfg->n_allowed_uids = count;
}

/* The default identity: the pod name Kubernetes puts in $HOSTNAME, else the host's name. */
static void default_identity(struct lk_config_ctx *c, yaml_node_t *root, struct lk_config *cfg)
{
	const char *h = getenv("HOSTNAME");
	char host[256], qb[QBUF];

	if (!h || !*h) {
		if (gethostname(host, sizeof(host)) < 0) {
			lk_config_error_at(c, root, "identity",
			                   "not set, and the host name is unknown: %s", strerror(errno));
			return;
		}
		host[sizeof(host) - 1] = '\0';
		h = host;
	}
	if (!lk_config_printable_word(h, 1, MAX_IDENTITY))
		lk_config_error_at(c, root, "identity",
		                   "not set, and the host name %s is not a valid identity (1 to %d printable "
		                   "ASCII characters without spaces)", Q(qb, h), MAX_IDENTITY);
	else
		lk_config_dup_str(c, h, &cfg->identity);
}

/* A list of items at the top level: the item count (capped), or 0 after reporting. */
static size_t list_items(struct lk_config_ctx *c, yaml_node_t *root, yaml_node_t *list,
                         const char *field, const char *what, size_t max)
{
	char kb[QBUF];
	size_t count;

	if (list && list->type != YAML_SEQUENCE_NODE) {
		lk_config_error_at(c, list, field, "expected a list, found %s",
		                   lk_config_kind(kb, sizeof(kb), list));
		return 0;
	}
	count = list ? (size_t)(list->data.sequence.items.top - list->data.sequence.items.start) : 0;
	if (count == 0) {
		lk_config_error_at(c, list ? list : root, field, "at least one %s is required", what);
		return 0;
	}
	if (count > max) {
		lk_config_error_at(c, list, field, "too many %ss (at most %zu)", what, max);
		count = max;
	}
	return count;
}

void lk_config_parse_root(struct lk_config_ctx *c, yaml_node_t *root, struct lk_config *cfg)
{
	static const char *const formats[] = { "json", "text" };
	char qb[QBUF], kb[QBUF];
	struct lk_config_fields f;
	size_t n, choice;
	bool shutdown_ok;

	if (root->type != YAML_MAPPING_NODE) {
		lk_config_error_at(c, root, "", "expected a mapping at the top level, found %s",
		                   lk_config_kind(kb, sizeof(kb), root));
		return;
	}
	lk_config_scan_mapping(c, root, "", top_keys, T_N, &f);

	if (lk_config_get_string(c, f.val[T_IDENTITY], "identity", &cfg->identity) > 0) {
		if (!lk_config_printable_word(cfg->identity, 1, MAX_IDENTITY))
			lk_config_error_at(c, f.val[T_IDENTITY], "identity",
			                   "%s must be 1 to %d printable ASCII characters without spaces",
			                   Q(qb, cfg->identity), MAX_IDENTITY);
	} else if (!f.val[T_IDENTITY]) {
		default_identity(c, root, cfg);
	}

	if (lk_config_get_string(c, f.val[T_SOCKET], "socket", &cfg->socket_path) > 0) {
		if (!*cfg->socket_path)
			lk_config_error_at(c, f.val[T_SOCKET], "socket", "must not be empty");
		else if (strlen(cfg->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			lk_config_error_at(c, f.val[T_SOCKET], "socket",
			                   "is too long for a Unix socket path (at most %zu bytes)",
			                   sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	} else if (!cfg->socket_path) {
		lk_config_dup_str(c, "/run/leasekeeper/agent.sock", &cfg->socket_path);
	}

	cfg->socket_mode = 0660;
	lk_config_get_mode(c, f.val[T_SOCKET_MODE], "socket_mode", &cfg->socket_mode);

	/* On by default, on loopback, as docs/configuration.md says: "" is how to turn it
	 * off. */
	if (lk_config_get_string(c, f.val[T_HTTP_LISTEN], "http_listen", &cfg->http_listen) <= 0) {
		if (!cfg->http_listen)
			lk_config_dup_str(c, LK_CONFIG_DEFAULT_HTTP_LISTEN, &cfg->http_listen);
	} else {
		if (!*cfg->http_listen) {
			free(cfg->http_listen);
			cfg->http_listen = NULL;
		} else if (!lk_backend_valid_address(cfg->http_listen, true)) {
			lk_config_error_at(c, f.val[T_HTTP_LISTEN], "http_listen",
			                   "%s is not host:port, e.g. \"127.0.0.1:9440\"", Q(qb, cfg->http_listen));
		}
	}

	cfg->log_format = LK_LOG_TEXT;
	if (lk_config_get_choice(c, f.val[T_LOG_FORMAT], "log_format", "log format", formats, 2,
	                         &choice) > 0)
		cfg->log_format = choice == 0 ? LK_LOG_JSON : LK_LOG_TEXT;

	cfg->shutdown_timeout_ms = 25000;
	shutdown_ok = lk_config_get_duration(c, f.val[T_SHUTDOWN_TIMEOUT], "shutdown_timeout", 1,
	                                     &cfg->shutdown_timeout_ms) >= 0;

	lk_config_get_file(c, f.val[T_AUTH_KEY_FILE], "auth_key_file", &cfg->auth_key_file);

	parse_allowed_uids(c, f.val[T_ALLOWED_UIDS], cfg);
	{
		uint64_t v = LK_CONFIG_DEFAULT_MAX_CLIENTS;

		lk_config_get_number(c, f.val[T_MAX_CLIENTS], "max_clients", LK_CONFIG_MIN_MAX_CLIENTS,
		                     LK_CONFIG_MAX_MAX_CLIENTS, NULL, &v);
		cfg->max_clients = (size_t)v;
	}
	cfg->client_idle_timeout_ms = LK_CONFIG_DEFAULT_IDLE_MS;
	lk_config_get_duration(c, f.val[T_CLIENT_IDLE_TIMEOUT], "client_idle_timeout",
	                       LK_CONFIG_MIN_IDLE_MS, &cfg->client_idle_timeout_ms);

	n = list_items(c, root, f.val[T_BACKENDS], "backends", "backend", LK_CONFIG_MAX_BACKENDS);
	if (n) {
		cfg->backends = calloc(n, sizeof(*cfg->backends));
		if (!cfg->backends) {
			c->oom = true;
			return;
		}
		cfg->n_backends = n;
		for (size_t i = 0; i < n; i++)
			parse_backend(c, lk_config_node_at(c, f.val[T_BACKENDS]->data.sequence.items.start[i]), i,
			              cfg);
	}

	n = list_items(c, root, f.val[T_LOCKS], "locks", "lock", LK_CONFIG_MAX_LOCKS);
	if (n) {
		struct name_set names = { .mask = 1 };

		while (names.mask + 1 < 2 * n)
			names.mask = names.mask * 2 + 1;
		cfg->locks = calloc(n, sizeof(*cfg->locks));
		names.slots = calloc(names.mask + 1, sizeof(*names.slots));
		if (!cfg->locks || !names.slots) {
			free(names.slots);
			c->oom = true;
			return;
		}
		cfg->n_locks = n;
		for (size_t i = 0; i < n; i++)
			parse_lock(c, lk_config_node_at(c, f.val[T_LOCKS]->data.sequence.items.start[i]), i, cfg,
			           shutdown_ok ? cfg->shutdown_timeout_ms : 0, &names);
		free(names.slots);
	}
}

/* ---- public ---- */

struct lk_config *lk_config_free(struct lk_config *cfg)
{
	if (!cfg)
		return NULL;
	for (size_t i = 0; i < cfg->n_backends; i++) {
		struct lk_config_backend *b = &cfg->backends[i];

		free(b->name);
		free(b->password_file);
		free(b->address);
		for (size_t k = 0; k < b->n_sentinels; k++)
			free(b->sentinels[k]);
		free(b->sentinels);
		free(b->master_name);
		free(b->sentinel_username);
		free(b->sentinel_password_file);
		for (size_t k = 0; k < b->n_endpoints; k++)
			free(b->endpoints[k]);
		free(b->endpoints);
		free(b->username);
		free(b->ca_file);
		free(b->cert_file);
		free(b->key_file);
		free(b->server_name);
	}
	free(cfg->backends);
	for (size_t i = 0; i < cfg->n_locks; i++) {
		free(cfg->locks[i].name);
		free(cfg->locks[i].key);
	}
	free(cfg->locks);
	free(cfg->identity);
	free(cfg->socket_path);
	free(cfg->http_listen);
	free(cfg->auth_key_file);
	free(cfg->allowed_uids);
	free(cfg);
	return NULL;
}

void lk_config_diags_clear(struct lk_config_diags *diags)
{
	if (!diags)
		return;
	for (size_t i = 0; i < diags->n_errors; i++)
		free(diags->errors[i]);
	for (size_t i = 0; i < diags->n_warnings; i++)
		free(diags->warnings[i]);
	free(diags->errors);
	free(diags->warnings);
	memset(diags, 0, sizeof(*diags));
}

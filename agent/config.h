/* The agent's YAML configuration (docs/configuration.md): load, expand ${VAR}, validate, default.
 *
 * Every problem found is reported as "FILE:LINE:COL: FIELD: MESSAGE" (1-based line and column
 * of the offending node, or of the enclosing mapping for a missing field), and loading goes on
 * to find the others, so that check-config shows them all at once.
 */
#ifndef LK_AGENT_CONFIG_H
#define LK_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "locks/backend_config.h" /* struct lk_config_backend, enum lk_backend_type */

/* Input caps, checked while the YAML is parsed (before any of it is interpreted), so that no
 * file, however built, costs more than a bounded amount of time and memory to reject. */
#define LK_CONFIG_MAX_BYTES     (1024 * 1024)
#define LK_CONFIG_MAX_DEPTH     64     /* lists and mappings inside each other */
#define LK_CONFIG_MAX_NODES     200000 /* scalars, lists and mappings in one document */
#define LK_CONFIG_MAX_ANCHORS   256    /* &anchors per document */
#define LK_CONFIG_MAX_ALIASES   4096   /* *aliases per document */
#define LK_CONFIG_MAX_BACKENDS  64
/* Locks per agent. What bounds it: the file's caps above (16384 locks of four fields, 9 values
 * and at most 64 bytes each in flow style, fit in LK_CONFIG_MAX_NODES and 1 MiB), the memory
 * each lock costs (its backend's key, four timers, its STATUS and metrics lines) and the
 * backend's renewal traffic, one request per lock every renew_interval. */
#define LK_CONFIG_MAX_LOCKS     16384
#define LK_CONFIG_MAX_DIAGS     100 /* stop collecting after this many */

#define LK_CONFIG_MAX_UIDS      32

#define LK_CONFIG_DEFAULT_HTTP_LISTEN "127.0.0.1:9440"

/* Client slots on the socket: an app and a drain or status command need one each. */
#define LK_CONFIG_DEFAULT_MAX_CLIENTS 128
#define LK_CONFIG_MIN_MAX_CLIENTS     2
#define LK_CONFIG_MAX_MAX_CLIENTS     32768 /* a campaign client for each of the most locks */
#define LK_CONFIG_DEFAULT_IDLE_MS     10000
#define LK_CONFIG_MIN_IDLE_MS         1000 /* room for HELLO's reply and the CAMPAIGN after it */

enum lk_campaign_mode { LK_CAMPAIGN_WHEN_APP_CONNECTED, LK_CAMPAIGN_ALWAYS };
enum lk_log_format { LK_LOG_TEXT, LK_LOG_JSON };

struct lk_config_lock {
	char *name;                  /* [A-Za-z0-9._-]{1,128}, unique */
	size_t backend;              /* index into lk_config.backends */
	char *key;                   /* default "leasekeeper/<name>" */
	int64_t ttl_ms;              /* default 10s */
	int64_t renew_interval_ms;   /* default ttl/3 */
	int64_t renew_deadline_ms;   /* default 2*ttl/3; renew_interval < renew_deadline < ttl */
	int64_t retry_interval_ms;   /* default 1s */
	int64_t stepdown_timeout_ms; /* default 5s */
	int64_t release_timeout_ms;  /* default 3s */
	enum lk_campaign_mode campaign;
};

struct lk_config {
	char *identity;              /* default $HOSTNAME, then gethostname() */
	char *socket_path;           /* default /run/leasekeeper/agent.sock */
	unsigned socket_mode;        /* default 0660 */
	char *http_listen;           /* "host:port", default LK_CONFIG_DEFAULT_HTTP_LISTEN; NULL
	                                when "" (disabled) */
	enum lk_log_format log_format; /* default text */
	int64_t shutdown_timeout_ms; /* default 25s */
	char *auth_key_file;         /* NULL if none */
	uint32_t *allowed_uids;      /* peers allowed on the socket (SO_PEERCRED); NULL: any */
	size_t n_allowed_uids;       /* 0 when allowed_uids is NULL, else 1..LK_CONFIG_MAX_UIDS */
	size_t max_clients;          /* default 128, LK_CONFIG_MIN_MAX_CLIENTS..MAX_MAX_CLIENTS */
	int64_t client_idle_timeout_ms; /* default 10s, at least 1s */
	struct lk_config_backend *backends;
	size_t n_backends;
	struct lk_config_lock *locks;
	size_t n_locks;
};

/* Diagnostics collected while loading: formatted lines, errors and warnings apart. */
struct lk_config_diags {
	char **errors;
	size_t n_errors;
	char **warnings;             /* e.g. an etcd lock whose ttl is under 2s */
	size_t n_warnings;
};

/* Load and validate the file at path. Returns 0 and a new config in *ret (errors empty; there
 * may be warnings), or -EINVAL with at least one error in diags, or another negative errno if
 * the file cannot be read (also described in diags). diags must be zeroed by the caller and
 * released with lk_config_diags_clear() whatever the result. Referenced files (password_file,
 * auth_key_file, TLS files) are checked to be readable, not read. */
int lk_config_load(const char *path, struct lk_config **ret, struct lk_config_diags *diags);

/* The same on an in-memory text; name is used in messages in place of a path. */
int lk_config_parse(const char *name, const char *text, size_t len, struct lk_config **ret,
                    struct lk_config_diags *diags);

/* Free a config; accepts NULL; returns NULL. */
struct lk_config *lk_config_free(struct lk_config *cfg);

/* Free the diagnostics' contents and zero the struct. */
void lk_config_diags_clear(struct lk_config_diags *diags);

#endif

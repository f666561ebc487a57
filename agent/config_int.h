/* What the files of the agent's configuration share, and nothing else includes:
 * config.c (the schema: fields, defaults, rules), config_yaml.c (libyaml, the node tree, the
 * FILE:LINE:COL diagnostics) and config_expand.c (${VAR} expansion). */
#ifndef LK_AGENT_CONFIG_INT_H
#define LK_AGENT_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <yaml.h>

#include "agent/config.h"

#define LK_CONFIG_MAX_SCALAR_BYTES  (64 * 1024) /* one value after ${VAR} expansion */
#define LK_CONFIG_QUOTE_MAX         100         /* characters of a value shown in a message */
#define LK_CONFIG_MAX_LOCK_NAME     128         /* bytes of a lock name */
#define LK_CONFIG_PATH_MAX_LEN      96          /* "backends[63].endpoints[15]" and the like */

/* One diagnostic before sorting: they are produced in processing order (backends before locks,
 * whatever the file says) but shown in file order, which is what a reader fixing them wants. */
struct lk_config_pending {
	char *text;
	size_t line, col, seq;
};

struct lk_config_pending_list {
	struct lk_config_pending *v;
	size_t n, cap;
};

struct lk_config_ctx {
	const char *name;
	yaml_document_t *doc;
	struct lk_config_pending_list errors, warnings;
	size_t seq;
	bool oom;
};

/* The most fields one mapping has (a backend's), plus one for "no such field". */
#define LK_CONFIG_MAX_FIELDS 20

/* A mapping's known fields: the value node of each (NULL when absent or null) and the key node
 * (NULL when absent), which is where an unwanted field is pointed at. */
struct lk_config_fields {
	yaml_node_t *val[LK_CONFIG_MAX_FIELDS];
	yaml_node_t *key[LK_CONFIG_MAX_FIELDS];
	bool ok; /* the node was a mapping */
};

#define QBUF (LK_CONFIG_QUOTE_MAX * 4 + 16)
#define Q(buf, s) lk_config_quote((buf), sizeof(buf), (s), strlen(s))

/* ---- config_yaml.c ---- */

/* Report a problem at a node (NULL: the start of the file) about a field ("" for none). */
void lk_config_error_at(struct lk_config_ctx *c, const yaml_node_t *at, const char *field,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void lk_config_warn_at(struct lk_config_ctx *c, const yaml_node_t *at, const char *field,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
const char *lk_config_quote(char *buf, size_t cap, const char *s, size_t len);
yaml_node_t *lk_config_node_at(struct lk_config_ctx *c, int index);
const char *lk_config_scalar(const yaml_node_t *n);
bool lk_config_is_null(const yaml_node_t *n);
const char *lk_config_kind(char *buf, size_t cap, const yaml_node_t *n);
void lk_config_join(char *buf, const char *path, const char *key);
void lk_config_scan_mapping(struct lk_config_ctx *c, yaml_node_t *map, const char *path,
                            const char *const *keys, size_t n_keys, struct lk_config_fields *f);

/* ---- config_expand.c ---- */

/* The scalar n with ${VAR}, ${VAR:-default} and $$ expanded: a new string, or NULL after
 * reporting (or on out of memory, with c->oom set). */
char *lk_config_expand(struct lk_config_ctx *c, const yaml_node_t *n, const char *field);

/* ---- config_values.c ---- */

/* A string field: 1 with *ret a new string, 0 when absent, -1 after reporting. */
int lk_config_get_string(struct lk_config_ctx *c, yaml_node_t *n, const char *field, char **ret);
/* A duration field of at least min_ms (and no field may be 0): 1 with *ret set, 0 when absent,
 * -1 after reporting. */
int lk_config_get_duration(struct lk_config_ctx *c, yaml_node_t *n, const char *field,
                           int64_t min_ms, int64_t *ret);
/* Like get_string, for a value that must be one of the choices: 1 with *ret the index, 0 when
 * absent, -1 after reporting. */
int lk_config_get_choice(struct lk_config_ctx *c, yaml_node_t *n, const char *field,
                         const char *what, const char *const *choices, size_t n_choices,
                         size_t *ret);
bool lk_config_printable_word(const char *s, size_t min, size_t max);
bool lk_config_valid_name(const char *s);
/* A file the agent will read later: checked now so that check-config catches a missing
 * secret before a rollout does. Its contents are never read here. */
int lk_config_get_file(struct lk_config_ctx *c, yaml_node_t *n, const char *field, char **ret);
/* "0660", "660" or an unquoted 0660: YAML 1.1 would read the last as octal and YAML 1.2 as
 * decimal 660, so the text is taken as octal digits either way, which is what was meant. */
int lk_config_get_mode(struct lk_config_ctx *c, yaml_node_t *n, const char *field, unsigned *ret);
/* A whole number from min to max, written in decimal (a YAML int, or a string after ${VAR}
 * expansion): 1 with *ret set, 0 when absent, -1 after reporting. what names the kind of value
 * in the message ("a uid"), or is NULL for a plain range message. */
int lk_config_get_number(struct lk_config_ctx *c, yaml_node_t *n, const char *field, uint64_t min,
                         uint64_t max, const char *what, uint64_t *ret);
int lk_config_dup_str(struct lk_config_ctx *c, const char *s, char **ret);

/* ---- config.c ---- */

/* Check the document's root mapping and fill cfg, reporting every problem. */
void lk_config_parse_root(struct lk_config_ctx *c, yaml_node_t *root, struct lk_config *cfg);

#endif

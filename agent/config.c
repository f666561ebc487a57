/* The agent's configuration file (README "Configuration"): YAML through libyaml's document
 * API, then one pass
 * over the node tree that expands ${VAR}, checks every value, fills in defaults and collects
 * every problem as a "FILE:LINE:COL: FIELD: MESSAGE" line.
 *
 * The walk only ever descends into the shapes it expects (top level -> backends/locks -> one
 * item -> endpoints), so YAML aliases, which libyaml shares rather than copies and which can
 * even form cycles, cost nothing extra and cannot make the walk loop or explode. */
#include "agent/config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

#include "agent/duration.h"
#include "locks/backend.h"

#define MAX_SCALAR_BYTES  (64 * 1024) /* one value after ${VAR} expansion */
#define MAX_IDENTITY      253
#define MAX_LOCK_NAME     128
#define MIN_TTL_MS        100
#define ETCD_MIN_TTL_MS   2000
#define QUOTE_MAX         100         /* characters of a value shown in a message */
#define PATH_MAX_LEN      96          /* "backends[63].endpoints[15]" and the like */

/* One diagnostic before sorting: they are produced in processing order (backends before locks,
 * whatever the file says) but shown in file order, which is what a reader fixing them wants. */
struct pending {
	char *text;
	size_t line, col, seq;
};

struct pending_list {
	struct pending *v;
	size_t n, cap;
};

struct ctx {
	const char *name;
	yaml_document_t *doc;
	struct pending_list errors, warnings;
	size_t seq;
	bool oom;
};

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
	B_CERT_FILE, B_KEY_FILE, B_N
};
static const char *const backend_keys[B_N] = {
	"name", "type", "timeout", "password_file", "address", "endpoints", "username", "ca_file",
	"cert_file", "key_file",
};

enum {
	L_NAME, L_BACKEND, L_KEY, L_TTL, L_RENEW_INTERVAL, L_RENEW_DEADLINE, L_RETRY_INTERVAL,
	L_STEPDOWN_TIMEOUT, L_RELEASE_TIMEOUT, L_CAMPAIGN, L_N
};
static const char *const lock_keys[L_N] = {
	"name", "backend", "key", "ttl", "renew_interval", "renew_deadline", "retry_interval",
	"stepdown_timeout", "release_timeout", "campaign",
};

/* A mapping's known fields: the value node of each (NULL when absent or null) and the key node
 * (NULL when absent), which is where an unwanted field is pointed at. */
struct fields {
	yaml_node_t *val[16];
	yaml_node_t *key[16];
	bool ok; /* the node was a mapping */
};
_Static_assert(T_N <= 16 && B_N < 16 && L_N <= 16, "struct fields is too small");

/* ---- diagnostics ---- */

static void pending_clear(struct pending_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].text);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static void vreport(struct ctx *c, bool warning, const yaml_node_t *at, const char *field,
                    const char *fmt, va_list ap)
{
	struct pending_list *l = warning ? &c->warnings : &c->errors;
	size_t line = at ? at->start_mark.line + 1 : 1, col = at ? at->start_mark.column + 1 : 1;
	char msg[512], *text;

	/* The last slot says that there were more, rather than silently dropping them. */
	if (l->n >= LK_CONFIG_MAX_DIAGS)
		return;
	if (l->n == LK_CONFIG_MAX_DIAGS - 1) {
		line = col = SIZE_MAX;
		snprintf(msg, sizeof(msg), "too many %s; stopped after %d",
		         warning ? "warnings" : "errors", LK_CONFIG_MAX_DIAGS - 1);
		if (asprintf(&text, "%s: %s", c->name, msg) < 0)
			text = NULL;
	} else {
		vsnprintf(msg, sizeof(msg), fmt, ap);
		if (asprintf(&text, "%s:%zu:%zu: %s%s%s%s", c->name, line, col,
		             warning ? "warning: " : "", field, *field ? ": " : "", msg) < 0)
			text = NULL;
	}
	if (!text)
		goto oom;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 8;
		struct pending *v = realloc(l->v, cap * sizeof(*v));

		if (!v) {
			free(text);
			goto oom;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct pending){ .text = text, .line = line, .col = col, .seq = c->seq++ };
	return;
oom:
	c->oom = true;
}

__attribute__((format(printf, 4, 5)))
static void error_at(struct ctx *c, const yaml_node_t *at, const char *field, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(c, false, at, field, fmt, ap);
	va_end(ap);
}

__attribute__((format(printf, 4, 5)))
static void warn_at(struct ctx *c, const yaml_node_t *at, const char *field, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(c, true, at, field, fmt, ap);
	va_end(ap);
}

static int pending_cmp(const void *a, const void *b)
{
	const struct pending *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	if (x->col != y->col)
		return x->col < y->col ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Move the sorted pending lines to the end of *arr; on failure they stay pending (and are
 * freed with the context). */
static int pending_flush(struct pending_list *l, char ***arr, size_t *n)
{
	char **v;

	if (l->n == 0)
		return 0;
	v = realloc(*arr, (*n + l->n) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	qsort(l->v, l->n, sizeof(l->v[0]), pending_cmp);
	for (size_t i = 0; i < l->n; i++)
		v[(*n)++] = l->v[i].text;
	*arr = v;
	l->n = 0;
	return 0;
}

/* A diagnostic about the file as a whole (it cannot be read), before there is any YAML. */
static void diag_file(struct lk_config_diags *diags, const char *name, const char *msg)
{
	char **v, *text;

	if (diags->n_errors >= LK_CONFIG_MAX_DIAGS || asprintf(&text, "%s: %s", name, msg) < 0)
		return;
	v = realloc(diags->errors, (diags->n_errors + 1) * sizeof(*v));
	if (!v) {
		free(text);
		return;
	}
	v[diags->n_errors++] = text;
	diags->errors = v;
}

/* Quote a value for a message: escaped, so that a control character or a quote in the file
 * cannot forge output, and cut short, so that one bad value does not flood the terminal. */
static const char *quote(char *buf, size_t cap, const char *s, size_t len)
{
	size_t o = 0, shown = 0;

	buf[o++] = '"';
	for (size_t i = 0; i < len && o + 8 < cap; i++, shown++) {
		unsigned char ch = (unsigned char)s[i];

		if (shown == QUOTE_MAX) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (ch == '"' || ch == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
		} else {
			buf[o++] = (char)ch;
		}
	}
	buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}

#define QBUF (QUOTE_MAX * 4 + 16)
#define Q(buf, s) quote((buf), sizeof(buf), (s), strlen(s))

/* ---- node access ---- */

static yaml_node_t *node_at(struct ctx *c, int index)
{
	return yaml_document_get_node(c->doc, index);
}

static const char *scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* YAML's null: an empty plain value ("key:"), "~" or "null". A field given as null is treated
 * as absent, like Kubernetes does, so "http_listen:" means the default rather than an error. */
static bool is_null(const yaml_node_t *n)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };

	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		if (strcmp(scalar(n), nulls[i]) == 0)
			return true;
	return false;
}

/* What a node is, for "expected X, found Y": a scalar is shown as its (quoted) text, which
 * says more than the word "scalar" would. */
static const char *kind(char *buf, size_t cap, const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE: return "a mapping";
	case YAML_SEQUENCE_NODE: return "a list";
	default:
		if (is_null(n))
			return "null";
		return quote(buf, cap, scalar(n), n->data.scalar.length);
	}
}

/* buf[PATH_MAX_LEN] = path.key; paths are built from known field names and capped indexes,
 * so they always fit, and a cut would only shorten a message. */
static void join(char *buf, const char *path, const char *key)
{
	size_t p = strnlen(path, PATH_MAX_LEN - 1), k;

	memcpy(buf, path, p);
	if (p && p < PATH_MAX_LEN - 1)
		buf[p++] = '.';
	k = strnlen(key, PATH_MAX_LEN - 1 - p);
	memcpy(buf + p, key, k);
	buf[p + k] = '\0';
}

static bool plain_word(const char *s, size_t len)
{
	if (len == 0 || len > 64)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
			return false;
	return true;
}

/* Sort a mapping's pairs into the known fields; report keys that are not strings, unknown and
 * repeated. */
static void scan_mapping(struct ctx *c, yaml_node_t *map, const char *path,
                         const char *const *keys, size_t n_keys, struct fields *f)
{
	char kb[QBUF];

	memset(f, 0, sizeof(*f));
	if (map->type != YAML_MAPPING_NODE) {
		error_at(c, map, path, "expected a mapping, found %s", kind(kb, sizeof(kb), map));
		return;
	}
	f->ok = true;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = node_at(c, p->key), *v = node_at(c, p->value);
		char qb[QBUF], field[PATH_MAX_LEN];
		size_t i;

		if (k->type != YAML_SCALAR_NODE) {
			error_at(c, k, path, "expected a field name, found %s", kind(kb, sizeof(kb), k));
			continue;
		}
		for (i = 0; i < n_keys; i++)
			if (strlen(keys[i]) == k->data.scalar.length && strcmp(scalar(k), keys[i]) == 0)
				break;
		if (i == n_keys) {
			/* Name the field itself, as for every other error, when it is a plain word;
			 * anything stranger is quoted and escaped after the enclosing path. */
			if (plain_word(scalar(k), k->data.scalar.length)) {
				join(field, path, scalar(k));
				error_at(c, k, field, "unknown field");
			} else {
				error_at(c, k, path, "unknown field %s",
				         quote(qb, sizeof(qb), scalar(k), k->data.scalar.length));
			}
			continue;
		}
		join(field, path, keys[i]);
		if (f->key[i]) {
			error_at(c, k, field, "duplicate field; first given at line %zu",
			         (size_t)f->key[i]->start_mark.line + 1);
			continue;
		}
		f->key[i] = k;
		f->val[i] = is_null(v) ? NULL : v;
	}
}

/* ---- ${VAR} expansion ---- */

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p)
			return -ENOMEM;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static bool valid_var_name(const char *s, size_t n)
{
	if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!(s[i] == '_' || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9')))
			return false;
	return true;
}

/* Expand ${VAR}, ${VAR:-default} (used when VAR is unset or empty) and $$ (a literal $) in a
 * scalar. A $ followed by anything else is kept as it is: paths and passwords may contain one,
 * and only the braced form is a reference. Returns a new string, or NULL after reporting. */
static char *expand(struct ctx *c, const yaml_node_t *n, const char *field)
{
	const char *v = scalar(n);
	size_t len = n->data.scalar.length;
	struct buf b = { 0 };
	char qb[QBUF], qb2[QBUF];

	if (memchr(v, '\0', len)) {
		error_at(c, n, field, "contains a NUL character");
		return NULL;
	}
	if (buf_add(&b, "", 0) < 0)
		goto oom;
	for (size_t i = 0; i < len; i++) {
		const char *close, *name, *dflt = NULL, *val;
		size_t name_len, dflt_len = 0;

		if (v[i] != '$' || i + 1 == len || (v[i + 1] != '$' && v[i + 1] != '{')) {
			if (buf_add(&b, v + i, 1) < 0)
				goto oom;
			continue;
		}
		if (v[i + 1] == '$') {
			if (buf_add(&b, "$", 1) < 0)
				goto oom;
			i++;
			continue;
		}
		name = v + i + 2;
		close = memchr(name, '}', len - (i + 2));
		if (!close) {
			error_at(c, n, field, "unterminated \"${\" in %s (write $$ for a literal $)",
			         Q(qb, v));
			goto fail;
		}
		name_len = (size_t)(close - name);
		for (size_t j = 0; j + 1 < name_len; j++) {
			if (name[j] == ':' && name[j + 1] == '-') {
				dflt = name + j + 2;
				dflt_len = name_len - j - 2;
				name_len = j;
				break;
			}
		}
		if (name_len == 0) {
			error_at(c, n, field, "empty variable name in %s", Q(qb, v));
			goto fail;
		}
		if (!valid_var_name(name, name_len)) {
			error_at(c, n, field, "invalid variable name %s in %s",
			         quote(qb2, sizeof(qb2), name, name_len), Q(qb, v));
			goto fail;
		}
		{
			char var[256];

			if (name_len >= sizeof(var)) {
				error_at(c, n, field, "variable name %s is too long",
				         quote(qb2, sizeof(qb2), name, name_len));
				goto fail;
			}
			memcpy(var, name, name_len);
			var[name_len] = '\0';
			val = getenv(var);
			if (dflt && (!val || !*val)) {
				val = NULL;
			} else if (!val) {
				error_at(c, n, field, "environment variable %s is not set", Q(qb2, var));
				goto fail;
			}
		}
		if (val ? buf_add(&b, val, strlen(val)) < 0 : buf_add(&b, dflt, dflt_len) < 0)
			goto oom;
		if (b.len > MAX_SCALAR_BYTES) {
			error_at(c, n, field, "is longer than %d bytes after expansion",
			         MAX_SCALAR_BYTES);
			goto fail;
		}
		i = (size_t)(close - v);
	}
	return b.p;
oom:
	c->oom = true;
fail:
	free(b.p);
	return NULL;
}

/* ---- typed values ---- */

/* A string field: 1 with *ret a new string, 0 when absent, -1 after reporting. */
static int get_string(struct ctx *c, yaml_node_t *n, const char *field, char **ret)
{
	char *s, kb[QBUF];

	if (!n)
		return 0;
	if (n->type != YAML_SCALAR_NODE) {
		error_at(c, n, field, "expected a string, found %s", kind(kb, sizeof(kb), n));
		return -1;
	}
	s = expand(c, n, field);
	if (!s)
		return -1;
	*ret = s;
	return 1;
}

/* A duration field of at least min_ms (and no field may be 0): 1 with *ret set, 0 when absent,
 * -1 after reporting. */
static int get_duration(struct ctx *c, yaml_node_t *n, const char *field, int64_t min_ms,
                        int64_t *ret)
{
	const char *err;
	char *s, qb[QBUF], min[32];
	int64_t ms;
	int r = get_string(c, n, field, &s);

	if (r <= 0)
		return r;
	if (lk_duration_parse(s, &ms, &err) < 0) {
		error_at(c, n, field, "%s %s", Q(qb, s), err);
		r = -1;
	} else if (ms < min_ms) {
		error_at(c, n, field, "must be at least %s, got %s",
		         lk_duration_format(min_ms, min, sizeof(min)), Q(qb, s));
		r = -1;
	} else {
		*ret = ms;
	}
	free(s);
	return r;
}

/* Like get_string, for a value that must be one of the choices: 1 with *ret the index, 0 when
 * absent, -1 after reporting. */
static int get_choice(struct ctx *c, yaml_node_t *n, const char *field, const char *what,
                      const char *const *choices, size_t n_choices, size_t *ret)
{
	char *s, qb[QBUF];
	int r = get_string(c, n, field, &s);

	if (r <= 0)
		return r;
	for (size_t i = 0; i < n_choices; i++) {
		if (strcmp(s, choices[i]) == 0) {
			free(s);
			*ret = i;
			return 1;
		}
	}
	error_at(c, n, field, "unknown %s %s; expected %s or %s", what, Q(qb, s), choices[0],
	         choices[1]);
	free(s);
	return -1;
}

static bool printable_word(const char *s, size_t min, size_t max)
{
	size_t n = strlen(s);

	if (n < min || n > max)
		return false;
	for (; *s; s++)
		if (*s <= ' ' || *s > '~')
			return false;
	return true;
}

static bool valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > MAX_LOCK_NAME)
		return false;
	for (; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return false;
	return true;
}

/* A file the agent will read later: checked now so that check-config catches a missing
 * secret before a rollout does. Its contents are never read here. */
static int get_file(struct ctx *c, yaml_node_t *n, const char *field, char **ret)
{
	char *s, qb[QBUF];
	int r = get_string(c, n, field, &s);

	if (r <= 0)
		return r;
	if (access(s, R_OK) < 0) {
		error_at(c, n, field, "cannot read %s: %s", Q(qb, s), strerror(errno));
		free(s);
		return -1;
	}
	*ret = s;
	return 1;
}

/* "0660", "660" or an unquoted 0660: YAML 1.1 would read the last as octal and YAML 1.2 as
 * decimal 660, so the text is taken as octal digits either way, which is what was meant. */
static int get_mode(struct ctx *c, yaml_node_t *n, const char *field, unsigned *ret)
{
	char *s, qb[QBUF];
	unsigned v = 0;
	size_t len;
	int r = get_string(c, n, field, &s);

	if (r <= 0)
		return r;
	len = strlen(s);
	if (len < 1 || len > 4 || strspn(s, "01234567") != len) {
		error_at(c, n, field, "%s is not an octal file mode like \"0660\"", Q(qb, s));
		r = -1;
		goto out;
	}
	for (size_t i = 0; i < len; i++)
		v = v * 8 + (unsigned)(s[i] - '0');
	if (v > 0777) {
		error_at(c, n, field, "%s is above 0777", Q(qb, s));
		r = -1;
		goto out;
	}
	*ret = v;
out:
	free(s);
	return r;
}

/* A whole number from min to max, written in decimal (a YAML int, or a string after ${VAR}
 * expansion): 1 with *ret set, 0 when absent, -1 after reporting. what names the kind of value
 * in the message ("a uid"), or is NULL for a plain range message. */
static int get_number(struct ctx *c, yaml_node_t *n, const char *field, uint64_t min,
                      uint64_t max, const char *what, uint64_t *ret)
{
	char *s, qb[QBUF], kb[QBUF];
	uint64_t v = 0;
	size_t len;
	int r = 1;

	if (!n)
		return 0;
	if (n->type != YAML_SCALAR_NODE) {
		error_at(c, n, field, "expected a number, found %s", kind(kb, sizeof(kb), n));
		return -1;
	}
	s = expand(c, n, field);
	if (!s)
		return -1;
	len = strlen(s);
	/* At most 19 digits cannot overflow 64 bits; anything longer is out of range anyway. */
	if (len < 1 || strspn(s, "0123456789") != len) {
		error_at(c, n, field, "%s is not a whole number", Q(qb, s));
		r = -1;
		goto out;
	}
	for (size_t i = 0; i < len && i < 20; i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	if (len > 19 || v < min || v > max) {
		if (what)
			error_at(c, n, field, "%s is not %s (%" PRIu64 " to %" PRIu64 ")", Q(qb, s),
			         what, min, max);
		else
			error_at(c, n, field, "must be between %" PRIu64 " and %" PRIu64 ", got %s",
			         min, max, Q(qb, s));
		r = -1;
		goto out;
	}
	*ret = v;
out:
	free(s);
	return r;
}

static int dup_str(struct ctx *c, const char *s, char **ret)
{
	char *d = strdup(s);

	if (!d) {
		c->oom = true;
		return -1;
	}
	*ret = d;
	return 0;
}

/* ---- backends ---- */

/* The index of a backend field spelled as in the file, or B_N (never set) if there is none. */
static size_t backend_key(const char *name)
{
	size_t k = 0;

	while (k < B_N && strcmp(backend_keys[k], name) != 0)
		k++;
	return k;
}

static void parse_backend(struct ctx *c, yaml_node_t *n, size_t i, struct lk_config *cfg)
{
	static const char *const types[] = { "redis", "etcd" };
	/* Fields that only one type has, with the type that has them. */
	static const struct { int field; enum lk_backend_type type; } owned[] = {
		{ B_ADDRESS, LK_BACKEND_REDIS }, { B_ENDPOINTS, LK_BACKEND_ETCD },
		{ B_USERNAME, LK_BACKEND_ETCD }, { B_CA_FILE, LK_BACKEND_ETCD },
		{ B_CERT_FILE, LK_BACKEND_ETCD }, { B_KEY_FILE, LK_BACKEND_ETCD },
	};
	struct lk_config_backend *b = &cfg->backends[i];
	char path[PATH_MAX_LEN], field[PATH_MAX_LEN], qb[QBUF], kb[QBUF];
	struct fields f;
	size_t type;
	bool typed;

	snprintf(path, sizeof(path), "backends[%zu]", i);
	scan_mapping(c, n, path, backend_keys, B_N, &f);
	if (!f.ok)
		return;

	join(field, path, "name");
	if (!f.val[B_NAME]) {
		error_at(c, n, path, "missing required field \"name\"");
	} else if (get_string(c, f.val[B_NAME], field, &b->name) > 0) {
		if (!valid_name(b->name)) {
			error_at(c, f.val[B_NAME], field,
			         "%s is not a valid backend name ([A-Za-z0-9._-]{1,128})", Q(qb, b->name));
		} else {
			for (size_t j = 0; j < i; j++) {
				if (cfg->backends[j].name && strcmp(cfg->backends[j].name, b->name) == 0) {
					error_at(c, f.val[B_NAME], field,
					         "backend name %s is already used by backends[%zu]",
					         Q(qb, b->name), j);
					break;
				}
			}
		}
	}

	join(field, path, "type");
	typed = false;
	if (!f.val[B_TYPE])
		error_at(c, n, path, "missing required field \"type\"");
	else if (get_choice(c, f.val[B_TYPE], field, "backend type", types, 2, &type) > 0)
		typed = true;
	b->type = typed ? (enum lk_backend_type)type : LK_BACKEND_REDIS;

	b->timeout_ms = b->type == LK_BACKEND_ETCD ? LK_BACKEND_ETCD_DEFAULT_TIMEOUT_MS
	                                           : LK_BACKEND_REDIS_DEFAULT_TIMEOUT_MS;
	join(field, path, "timeout");
	get_duration(c, f.val[B_TIMEOUT], field, 1, &b->timeout_ms);
	join(field, path, "password_file");
	get_file(c, f.val[B_PASSWORD_FILE], field, &b->password_file);

	/* Without a known type there is no telling which of the remaining fields belong. */
	if (!typed)
		return;
	for (size_t k = 0; k < sizeof(owned) / sizeof(owned[0]); k++) {
		if (owned[k].type == b->type || !f.key[owned[k].field])
			continue;
		join(field, path, backend_keys[owned[k].field]);
		error_at(c, f.key[owned[k].field], field, "not a field of %s backend",
		         b->type == LK_BACKEND_REDIS ? "a redis" : "an etcd");
	}

	if (b->type == LK_BACKEND_REDIS) {
		join(field, path, "address");
		if (get_string(c, f.val[B_ADDRESS], field, &b->address) > 0 &&
		    !lk_backend_valid_address(b->address, false))
			error_at(c, f.val[B_ADDRESS], field,
			         "%s is not host:port, [v6]:port or unix:/path", Q(qb, b->address));
		if (!b->address)
			dup_str(c, LK_BACKEND_REDIS_DEFAULT_ADDRESS, &b->address);
		return;
	}

	yaml_node_t *eps = f.val[B_ENDPOINTS];
	join(field, path, "endpoints");
	if (!eps) {
		b->endpoints = calloc(1, sizeof(*b->endpoints));
		if (!b->endpoints || dup_str(c, LK_BACKEND_ETCD_DEFAULT_ENDPOINT, &b->endpoints[0]) < 0)
			c->oom = true;
		else
			b->n_endpoints = 1;
	} else if (eps->type != YAML_SEQUENCE_NODE) {
		error_at(c, eps, field, "expected a list, found %s", kind(kb, sizeof(kb), eps));
	} else {
		size_t count = (size_t)(eps->data.sequence.items.top - eps->data.sequence.items.start);

		if (count == 0)
			error_at(c, eps, field, "at least one endpoint is required");
		if (count > LK_CONFIG_MAX_ENDPOINTS) {
			error_at(c, eps, field, "too many endpoints (at most %d)",
			         LK_CONFIG_MAX_ENDPOINTS);
			count = LK_CONFIG_MAX_ENDPOINTS;
		}
		b->endpoints = calloc(count ? count : 1, sizeof(*b->endpoints));
		if (!b->endpoints)
			c->oom = true;
		for (size_t k = 0; k < count && b->endpoints; k++) {
			yaml_node_t *item = node_at(c, eps->data.sequence.items.start[k]);
			char ifield[PATH_MAX_LEN + 24];
			char **ep = &b->endpoints[b->n_endpoints];
			size_t eplen;

			snprintf(ifield, sizeof(ifield), "%s[%zu]", field, k);
			if (get_string(c, item, ifield, ep) <= 0)
				continue;
			b->n_endpoints++;
			if (lk_backend_endpoint_len(*ep, &eplen) < 0)
				error_at(c, item, ifield, "%s is not an http:// or https:// URL",
				         Q(qb, *ep));
		}
	}

	join(field, path, "username");
	if (get_string(c, f.val[B_USERNAME], field, &b->username) > 0) {
		if (!printable_word(b->username, 1, MAX_IDENTITY))
			error_at(c, f.val[B_USERNAME], field,
			         "%s must be 1 to %d printable ASCII characters without spaces",
			         Q(qb, b->username), MAX_IDENTITY);
	}
	join(field, path, "ca_file");
	get_file(c, f.val[B_CA_FILE], field, &b->ca_file);
	join(field, path, "cert_file");
	get_file(c, f.val[B_CERT_FILE], field, &b->cert_file);
	join(field, path, "key_file");
	get_file(c, f.val[B_KEY_FILE], field, &b->key_file);
	/* Settings that need another one, by presence in the file (a file that cannot be read is
	 * reported as such, not also as missing). */
	for (size_t k = 0; k < LK_BACKEND_ETCD_N_REQUIRES; k++) {
		const struct lk_backend_requires *rq = &lk_backend_etcd_requires[k];
		size_t have = backend_key(rq->field), need = backend_key(rq->needs);

		if (f.val[have] && !f.val[need]) {
			join(field, path, rq->field);
			error_at(c, f.val[have], field, "%s", rq->msg);
		}
	}
}

/* ---- locks ---- */

static void check_timing(struct ctx *c, const char *path, const struct fields *f,
                         const struct lk_config_lock *l)
{
	char field[PATH_MAX_LEN], a[32], b[32];

	/* Compare after defaults, but point at a value the user wrote; a defaulted side is
	 * named as such so that the message explains where the number comes from. */
	if (l->renew_interval_ms >= l->renew_deadline_ms) {
		lk_duration_format(l->renew_interval_ms, a, sizeof(a));
		lk_duration_format(l->renew_deadline_ms, b, sizeof(b));
		if (f->val[L_RENEW_INTERVAL]) {
			join(field, path, "renew_interval");
			error_at(c, f->val[L_RENEW_INTERVAL], field,
			         "must be shorter than renew_deadline (%s%s), got %s", b,
			         f->val[L_RENEW_DEADLINE] ? "" : ", the default 2*ttl/3", a);
		} else {
			join(field, path, "renew_deadline");
			error_at(c, f->val[L_RENEW_DEADLINE], field,
			         "must be longer than renew_interval (%s, the default ttl/3), got %s", a,
			         b);
		}
	}
	if (l->renew_deadline_ms >= l->ttl_ms) {
		/* The default 2*ttl/3 is always shorter, so renew_deadline was given. */
		lk_duration_format(l->renew_deadline_ms, a, sizeof(a));
		lk_duration_format(l->ttl_ms, b, sizeof(b));
		join(field, path, "renew_deadline");
		error_at(c, f->val[L_RENEW_DEADLINE], field, "must be shorter than ttl (%s%s), got %s",
		         b, f->val[L_TTL] ? "" : ", the default", a);
	}
}

static void parse_lock(struct ctx *c, yaml_node_t *n, size_t i, struct lk_config *cfg,
                       int64_t shutdown_ms)
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
	char path[PATH_MAX_LEN], field[PATH_MAX_LEN], qb[QBUF], *s;
	bool backend_ok = false, ttl_ok, timing_ok;
	struct fields f;
	size_t choice;

	snprintf(path, sizeof(path), "locks[%zu]", i);
	scan_mapping(c, n, path, lock_keys, L_N, &f);
	if (!f.ok)
		return;

	join(field, path, "name");
	if (!f.val[L_NAME]) {
		error_at(c, n, path, "missing required field \"name\"");
	} else if (get_string(c, f.val[L_NAME], field, &l->name) > 0) {
		if (!valid_name(l->name)) {
			error_at(c, f.val[L_NAME], field,
			         "%s is not a valid lock name ([A-Za-z0-9._-]{1,128})", Q(qb, l->name));
		} else {
			for (size_t j = 0; j < i; j++) {
				if (cfg->locks[j].name && strcmp(cfg->locks[j].name, l->name) == 0) {
					error_at(c, f.val[L_NAME], field,
					         "lock name %s is already used by locks[%zu]",
					         Q(qb, l->name), j);
					break;
				}
			}
		}
	}

	join(field, path, "backend");
	if (get_string(c, f.val[L_BACKEND], field, &s) > 0) {
		size_t j;

		for (j = 0; j < cfg->n_backends; j++)
			if (cfg->backends[j].name && strcmp(cfg->backends[j].name, s) == 0)
				break;
		if (j < cfg->n_backends) {
			l->backend = j;
			backend_ok = true;
		} else if (cfg->n_backends > 0) {
			/* With no usable backends list, that one error says it all. */
			error_at(c, f.val[L_BACKEND], field, "unknown backend %s", Q(qb, s));
		}
		free(s);
	} else if (!f.val[L_BACKEND] && cfg->n_backends == 1) {
		l->backend = 0;
		backend_ok = true;
	} else if (!f.val[L_BACKEND] && cfg->n_backends > 1) {
		error_at(c, n, path,
		         "missing required field \"backend\" (there is more than one backend)");
	}

	join(field, path, "key");
	if (get_string(c, f.val[L_KEY], field, &l->key) > 0 &&
	    !printable_word(l->key, 1, LK_BACKEND_KEY_MAX))
		error_at(c, f.val[L_KEY], field,
		         "%s must be 1 to %d printable ASCII characters without spaces", Q(qb, l->key),
		         LK_BACKEND_KEY_MAX);
	if (!l->key && l->name && asprintf(&l->key, "leasekeeper/%s", l->name) < 0) {
		l->key = NULL;
		c->oom = true;
	}

	l->ttl_ms = 10000;
	join(field, path, "ttl");
	ttl_ok = get_duration(c, f.val[L_TTL], field, MIN_TTL_MS, &l->ttl_ms) >= 0;
	timing_ok = ttl_ok;
	l->renew_interval_ms = l->ttl_ms / 3;
	l->renew_deadline_ms = 2 * l->ttl_ms / 3;
	l->retry_interval_ms = 1000;
	l->stepdown_timeout_ms = 5000;
	l->release_timeout_ms = 3000;
	for (size_t k = 0; k < sizeof(durations) / sizeof(durations[0]); k++) {
		int field_id = durations[k].field;

		join(field, path, lock_keys[field_id]);
		if (get_duration(c, f.val[field_id], field, 1,
		                 (int64_t *)(void *)((char *)l + durations[k].off)) < 0 &&
		    (field_id == L_RENEW_INTERVAL || field_id == L_RENEW_DEADLINE))
			timing_ok = false;
	}
	/* Relations between fields are checked only when each of them is valid on its own,
	 * so that one mistake is reported once. */
	if (timing_ok)
		check_timing(c, path, &f, l);

	join(field, path, "campaign");
	l->campaign = LK_CAMPAIGN_WHEN_APP_CONNECTED;
	if (get_choice(c, f.val[L_CAMPAIGN], field, "campaign mode", campaigns, 2, &choice) > 0)
		l->campaign = (enum lk_campaign_mode)choice;

	if (backend_ok && cfg->backends[l->backend].type == LK_BACKEND_ETCD &&
	    ttl_ok && l->ttl_ms < ETCD_MIN_TTL_MS) {
		join(field, path, "ttl");
		warn_at(c, f.val[L_TTL], field,
		        "etcd grants no lease shorter than about 2s; the granted TTL will be used");
	}
	if (shutdown_ms > 0 && l->stepdown_timeout_ms + l->release_timeout_ms > shutdown_ms) {
		char a[32], b[32], d[32];

		warn_at(c, n, path,
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
static void parse_allowed_uids(struct ctx *c, yaml_node_t *list, struct lk_config *cfg)
{
	char kb[QBUF], field[PATH_MAX_LEN];
	size_t count;
	uint32_t *uids;

	if (!list)
		return;
	if (list->type != YAML_SEQUENCE_NODE) {
		error_at(c, list, "allowed_uids", "expected a list of uids, found %s",
		         kind(kb, sizeof(kb), list));
		return;
	}
	count = (size_t)(list->data.sequence.items.top - list->data.sequence.items.start);
	if (count == 0) {
		error_at(c, list, "allowed_uids",
		         "must list at least one uid (leave the field out to allow any peer)");
		return;
	}
	if (count > LK_CONFIG_MAX_UIDS) {
		error_at(c, list, "allowed_uids", "too many uids (at most %d)", LK_CONFIG_MAX_UIDS);
		return;
	}
	uids = calloc(count, sizeof(*uids));
	if (!uids) {
		c->oom = true;
		return;
	}
	for (size_t i = 0; i < count; i++) {
		yaml_node_t *item = node_at(c, list->data.sequence.items.start[i]);
		uint64_t v;

		snprintf(field, sizeof(field), "allowed_uids[%zu]", i);
		/* (uid_t)-1 is "no uid" to the kernel's interfaces, so it is not a valid entry. */
		if (is_null(item))
			error_at(c, item, field, "expected a uid, found null");
		else if (get_number(c, item, field, 0, UINT32_MAX - 1, "a uid", &v) > 0)
			uids[i] = (uint32_t)v;
	}
	cfg->allowed_uids = uids;
	cfg->n_allowed_uids = count;
}

/* The default identity: the pod name Kubernetes puts in $HOSTNAME, else the host's name. */
static void default_identity(struct ctx *c, yaml_node_t *root, struct lk_config *cfg)
{
	const char *h = getenv("HOSTNAME");
	char host[256], qb[QBUF];

	if (!h || !*h) {
		if (gethostname(host, sizeof(host)) < 0) {
			error_at(c, root, "identity",
			         "not set, and the host name is unknown: %s", strerror(errno));
			return;
		}
		host[sizeof(host) - 1] = '\0';
		h = host;
	}
	if (!printable_word(h, 1, MAX_IDENTITY))
		error_at(c, root, "identity",
		         "not set, and the host name %s is not a valid identity (1 to %d printable "
		         "ASCII characters without spaces)", Q(qb, h), MAX_IDENTITY);
	else
		dup_str(c, h, &cfg->identity);
}

/* A list of items at the top level: the item count (capped), or 0 after reporting. */
static size_t list_items(struct ctx *c, yaml_node_t *root, yaml_node_t *list, const char *field,
                         const char *what, size_t max)
{
	char kb[QBUF];
	size_t count;

	if (list && list->type != YAML_SEQUENCE_NODE) {
		error_at(c, list, field, "expected a list, found %s", kind(kb, sizeof(kb), list));
		return 0;
	}
	count = list ? (size_t)(list->data.sequence.items.top - list->data.sequence.items.start) : 0;
	if (count == 0) {
		error_at(c, list ? list : root, field, "at least one %s is required", what);
		return 0;
	}
	if (count > max) {
		error_at(c, list, field, "too many %ss (at most %zu)", what, max);
		count = max;
	}
	return count;
}

static void parse_root(struct ctx *c, yaml_node_t *root, struct lk_config *cfg)
{
	static const char *const formats[] = { "json", "text" };
	char qb[QBUF], kb[QBUF];
	struct fields f;
	size_t n, choice;
	bool shutdown_ok;

	if (root->type != YAML_MAPPING_NODE) {
		error_at(c, root, "", "expected a mapping at the top level, found %s",
		         kind(kb, sizeof(kb), root));
		return;
	}
	scan_mapping(c, root, "", top_keys, T_N, &f);

	if (get_string(c, f.val[T_IDENTITY], "identity", &cfg->identity) > 0) {
		if (!printable_word(cfg->identity, 1, MAX_IDENTITY))
			error_at(c, f.val[T_IDENTITY], "identity",
			         "%s must be 1 to %d printable ASCII characters without spaces",
			         Q(qb, cfg->identity), MAX_IDENTITY);
	} else if (!f.val[T_IDENTITY]) {
		default_identity(c, root, cfg);
	}

	if (get_string(c, f.val[T_SOCKET], "socket", &cfg->socket_path) > 0) {
		if (!*cfg->socket_path)
			error_at(c, f.val[T_SOCKET], "socket", "must not be empty");
		else if (strlen(cfg->socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			error_at(c, f.val[T_SOCKET], "socket",
			         "is too long for a Unix socket path (at most %zu bytes)",
			         sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	} else if (!cfg->socket_path) {
		dup_str(c, "/run/leasekeeper/agent.sock", &cfg->socket_path);
	}

	cfg->socket_mode = 0660;
	get_mode(c, f.val[T_SOCKET_MODE], "socket_mode", &cfg->socket_mode);

	/* On by default, on loopback, as in the README's configuration example: "" is how to turn it
	 * off. */
	if (get_string(c, f.val[T_HTTP_LISTEN], "http_listen", &cfg->http_listen) <= 0) {
		if (!cfg->http_listen)
			dup_str(c, LK_CONFIG_DEFAULT_HTTP_LISTEN, &cfg->http_listen);
	} else {
		if (!*cfg->http_listen) {
			free(cfg->http_listen);
			cfg->http_listen = NULL;
		} else if (!lk_backend_valid_address(cfg->http_listen, true)) {
			error_at(c, f.val[T_HTTP_LISTEN], "http_listen",
			         "%s is not host:port, e.g. \"127.0.0.1:9440\"", Q(qb, cfg->http_listen));
		}
	}

	cfg->log_format = LK_LOG_TEXT;
	if (get_choice(c, f.val[T_LOG_FORMAT], "log_format", "log format", formats, 2, &choice) > 0)
		cfg->log_format = choice == 0 ? LK_LOG_JSON : LK_LOG_TEXT;

	cfg->shutdown_timeout_ms = 25000;
	shutdown_ok = get_duration(c, f.val[T_SHUTDOWN_TIMEOUT], "shutdown_timeout", 1,
	                           &cfg->shutdown_timeout_ms) >= 0;

	get_file(c, f.val[T_AUTH_KEY_FILE], "auth_key_file", &cfg->auth_key_file);

	parse_allowed_uids(c, f.val[T_ALLOWED_UIDS], cfg);
	{
		uint64_t v = LK_CONFIG_DEFAULT_MAX_CLIENTS;

		get_number(c, f.val[T_MAX_CLIENTS], "max_clients", LK_CONFIG_MIN_MAX_CLIENTS,
		           LK_CONFIG_MAX_MAX_CLIENTS, NULL, &v);
		cfg->max_clients = (size_t)v;
	}
	cfg->client_idle_timeout_ms = LK_CONFIG_DEFAULT_IDLE_MS;
	get_duration(c, f.val[T_CLIENT_IDLE_TIMEOUT], "client_idle_timeout", LK_CONFIG_MIN_IDLE_MS,
	             &cfg->client_idle_timeout_ms);

	n = list_items(c, root, f.val[T_BACKENDS], "backends", "backend", LK_CONFIG_MAX_BACKENDS);
	if (n) {
		cfg->backends = calloc(n, sizeof(*cfg->backends));
		if (!cfg->backends) {
			c->oom = true;
			return;
		}
		cfg->n_backends = n;
		for (size_t i = 0; i < n; i++)
			parse_backend(c, node_at(c, f.val[T_BACKENDS]->data.sequence.items.start[i]), i,
			              cfg);
	}

	n = list_items(c, root, f.val[T_LOCKS], "locks", "lock", LK_CONFIG_MAX_LOCKS);
	if (n) {
		cfg->locks = calloc(n, sizeof(*cfg->locks));
		if (!cfg->locks) {
			c->oom = true;
			return;
		}
		cfg->n_locks = n;
		for (size_t i = 0; i < n; i++)
			parse_lock(c, node_at(c, f.val[T_LOCKS]->data.sequence.items.start[i]), i, cfg,
			           shutdown_ok ? cfg->shutdown_timeout_ms : 0);
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
		for (size_t k = 0; k < b->n_endpoints; k++)
			free(b->endpoints[k]);
		free(b->endpoints);
		free(b->username);
		free(b->ca_file);
		free(b->cert_file);
		free(b->key_file);
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

/* A reader error (bad UTF-8, a control character) has only a byte offset: turn it into the
 * same 1-based line and character column that libyaml's marks give. */
static yaml_mark_t offset_mark(const char *text, size_t len, size_t offset)
{
	yaml_mark_t m = { 0 };

	for (size_t i = 0; i < offset && i < len; i++) {
		if (text[i] == '\n') {
			m.line++;
			m.column = 0;
		} else if (((unsigned char)text[i] & 0xc0) != 0x80) {
			m.column++;
		}
	}
	return m;
}

static int yaml_error(struct ctx *c, yaml_parser_t *parser, const char *text, size_t len)
{
	yaml_node_t at = { 0 };

	if (parser->error == YAML_MEMORY_ERROR) {
		c->oom = true;
		return -ENOMEM;
	}
	at.start_mark = parser->error == YAML_READER_ERROR
	                ? offset_mark(text, len, parser->problem_offset) : parser->problem_mark;
	/* The context says where the unfinished construct began, which matters when the problem
	 * is only noticed much later (an unclosed quote found at the end of the file). */
	if (parser->context && parser->error != YAML_READER_ERROR)
		error_at(c, &at, "yaml", "%s (%s at %zu:%zu)", parser->problem, parser->context,
		         (size_t)parser->context_mark.line + 1, (size_t)parser->context_mark.column + 1);
	else
		error_at(c, &at, "yaml", "%s", parser->problem ? parser->problem : "cannot parse");
	return -EINVAL;
}

/* ---- loading: libyaml events to a node tree, within the input caps ---- */

/* libyaml's own yaml_parser_load() has no limits: 100k nested "{" take it half a minute (its
 * scanner rescans every open flow level for each token), and it searches anchors linearly.
 * This loader builds the same yaml_document_t from the event stream and stops at the first
 * event past a cap, so the scanner never gets far: a rejected file costs milliseconds. */

struct anchor {
	char *name;
	int node;
	yaml_mark_t mark;
};

struct loader {
	yaml_parser_t *parser;
	bool started, ended;
	struct anchor anchors[LK_CONFIG_MAX_ANCHORS];
	size_t n_anchors, n_aliases, n_nodes;
};

/* A frame per open list or mapping; key is the mapping's pending key node, 0 when none. */
struct frame {
	int node, key;
};

static void loader_forget_anchors(struct loader *l)
{
	for (size_t i = 0; i < l->n_anchors; i++)
		free(l->anchors[i].name);
	l->n_anchors = 0;
	l->n_aliases = 0;
	l->n_nodes = 0;
}

__attribute__((format(printf, 3, 4)))
static void error_at_mark(struct ctx *c, yaml_mark_t mark, const char *fmt, ...)
{
	yaml_node_t at = { .start_mark = mark };
	va_list ap;

	va_start(ap, fmt);
	vreport(c, false, &at, "yaml", fmt, ap);
	va_end(ap);
}

/* Register a new node's anchor: 0, or -1 after reporting. */
static int loader_anchor(struct ctx *c, struct loader *l, const yaml_char_t *name, int node,
                         yaml_mark_t mark)
{
	char qb[QBUF];

	if (!name)
		return 0;
	for (size_t i = 0; i < l->n_anchors; i++) {
		if (strcmp(l->anchors[i].name, (const char *)name) == 0) {
			error_at_mark(c, mark, "found duplicate anchor %s (first at %zu:%zu)",
			              Q(qb, (const char *)name), (size_t)l->anchors[i].mark.line + 1,
			              (size_t)l->anchors[i].mark.column + 1);
			return -1;
		}
	}
	if (l->n_anchors == LK_CONFIG_MAX_ANCHORS) {
		error_at_mark(c, mark, "too many anchors (at most %d)", LK_CONFIG_MAX_ANCHORS);
		return -1;
	}
	l->anchors[l->n_anchors].name = strdup((const char *)name);
	if (!l->anchors[l->n_anchors].name) {
		c->oom = true;
		return -1;
	}
	l->anchors[l->n_anchors].node = node;
	l->anchors[l->n_anchors++].mark = mark;
	return 0;
}

/* Put a finished (or just opened) node where it belongs: the root, a list item, a mapping's
 * key or value. 0, or -1 on a memory error. */
static int loader_attach(yaml_document_t *doc, struct frame *stack, size_t depth, int node)
{
	struct frame *f;

	if (depth == 0)
		return 0; /* the root: the document's first node */
	f = &stack[depth - 1];
	if (yaml_document_get_node(doc, f->node)->type == YAML_SEQUENCE_NODE)
		return yaml_document_append_sequence_item(doc, f->node, node) ? 0 : -1;
	if (!f->key) {
		f->key = node;
		return 0;
	}
	if (!yaml_document_append_mapping_pair(doc, f->node, f->key, node))
		return -1;
	f->key = 0;
	return 0;
}

/* As in libyaml's loader: no tag, or the non-specific "!", means the default tag. */
static yaml_char_t *tag_of(yaml_char_t *tag)
{
	return tag && strcmp((const char *)tag, "!") != 0 ? tag : NULL;
}

/* The next document of the stream into *doc: 1, 0 at the end of the stream (*doc is then an
 * empty document), or a negative errno after reporting (*doc untouched). */
static int load_document(struct ctx *c, struct loader *l, const char *text, size_t len,
                         yaml_document_t *doc)
{
	struct frame stack[LK_CONFIG_MAX_DEPTH];
	size_t depth = 0;
	bool have_doc = false, done = false;
	yaml_event_t ev;
	int r = -EINVAL;

	if (!l->started) {
		if (!yaml_parser_parse(l->parser, &ev))
			return yaml_error(c, l->parser, text, len);
		l->started = true;
		yaml_event_delete(&ev);
	}
	if (!yaml_document_initialize(doc, NULL, NULL, NULL, 1, 1)) {
		c->oom = true;
		return -ENOMEM;
	}
	have_doc = true;
	if (l->ended)
		return 0;
	if (!yaml_parser_parse(l->parser, &ev)) {
		r = yaml_error(c, l->parser, text, len);
		goto fail;
	}
	if (ev.type == YAML_STREAM_END_EVENT) {
		l->ended = true;
		yaml_event_delete(&ev);
		return 0;
	}
	yaml_event_delete(&ev); /* DOCUMENT_START: the parser allows nothing else here */
	loader_forget_anchors(l);
	while (!done) {
		yaml_node_t *node;
		int id = 0;

		if (!yaml_parser_parse(l->parser, &ev)) {
			r = yaml_error(c, l->parser, text, len);
			goto fail;
		}
		switch (ev.type) {
		case YAML_SCALAR_EVENT:
			id = yaml_document_add_scalar(doc, tag_of(ev.data.scalar.tag),
			                              ev.data.scalar.value, (int)ev.data.scalar.length,
			                              ev.data.scalar.style);
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (depth == LK_CONFIG_MAX_DEPTH) {
				error_at_mark(c, ev.start_mark, "nested too deeply (more than %d levels of "
				              "lists and mappings)", LK_CONFIG_MAX_DEPTH);
				goto fail_event;
			}
			if (ev.type == YAML_SEQUENCE_START_EVENT)
				id = yaml_document_add_sequence(doc, tag_of(ev.data.sequence_start.tag),
				                                ev.data.sequence_start.style);
			else
				id = yaml_document_add_mapping(doc, tag_of(ev.data.mapping_start.tag),
				                               ev.data.mapping_start.style);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			/* The parser pairs every end with its start. */
			yaml_document_get_node(doc, stack[--depth].node)->end_mark = ev.end_mark;
			yaml_event_delete(&ev);
			continue;
		case YAML_ALIAS_EVENT:
			if (++l->n_aliases > LK_CONFIG_MAX_ALIASES) {
				error_at_mark(c, ev.start_mark, "too many aliases (at most %d)",
				              LK_CONFIG_MAX_ALIASES);
				goto fail_event;
			}
			for (size_t i = 0; i < l->n_anchors; i++)
				if (strcmp(l->anchors[i].name, (const char *)ev.data.alias.anchor) == 0)
					id = l->anchors[i].node;
			if (!id) {
				error_at_mark(c, ev.start_mark, "found undefined alias");
				goto fail_event;
			}
			if (loader_attach(doc, stack, depth, id) < 0)
				goto oom_event;
			yaml_event_delete(&ev);
			continue;
		default: /* DOCUMENT_END */
			done = true;
			yaml_event_delete(&ev);
			continue;
		}
		if (!id)
			goto oom_event;
		if (++l->n_nodes > LK_CONFIG_MAX_NODES) {
			error_at_mark(c, ev.start_mark, "the document is too large (more than %d values)",
			              LK_CONFIG_MAX_NODES);
			goto fail_event;
		}
		node = yaml_document_get_node(doc, id);
		node->start_mark = ev.start_mark;
		node->end_mark = ev.end_mark;
		if (loader_anchor(c, l, ev.type == YAML_SCALAR_EVENT ? ev.data.scalar.anchor :
		                  ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor :
		                  ev.data.mapping_start.anchor, id, ev.start_mark) < 0)
			goto fail_event;
		if (loader_attach(doc, stack, depth, id) < 0)
			goto oom_event;
		if (ev.type != YAML_SCALAR_EVENT)
			stack[depth++] = (struct frame){ .node = id };
		yaml_event_delete(&ev);
	}
	return 1;
oom_event:
	c->oom = true;
	r = -ENOMEM;
fail_event:
	yaml_event_delete(&ev);
fail:
	if (have_doc)
		yaml_document_delete(doc);
	return r;
}

int lk_config_parse(const char *name, const char *text, size_t len, struct lk_config **ret,
                    struct lk_config_diags *diags)
{
	struct ctx c = { .name = name ? name : "config" };
	struct loader ld = { 0 };
	yaml_document_t doc, extra;
	yaml_parser_t parser;
	struct lk_config *cfg = NULL;
	bool have_doc = false, have_parser = false;
	yaml_node_t *root;
	int r = -EINVAL;

	/* Checked before parsing: the whole text is at hand, and a first byte past the cap is
	 * pointed at like any other problem (lk_config_load reads no more than that). */
	if (len > LK_CONFIG_MAX_BYTES) {
		error_at_mark(&c, offset_mark(text, len, LK_CONFIG_MAX_BYTES),
		              "the file is too large (more than %d bytes)", LK_CONFIG_MAX_BYTES);
		r = -EFBIG;
		goto fail;
	}
	if (!yaml_parser_initialize(&parser)) {
		r = -ENOMEM;
		goto fail;
	}
	have_parser = true;
	yaml_parser_set_input_string(&parser, (const unsigned char *)(text ? text : ""), len);
	ld.parser = &parser;
	r = load_document(&c, &ld, text, len, &doc);
	if (r < 0)
		goto fail;
	r = -EINVAL;
	have_doc = true;
	c.doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (!root) {
		error_at(&c, NULL, "", "the file is empty; expected a mapping of settings");
		goto fail;
	}
	/* A second document would be silently ignored; a stray "---" is more likely a mistake. */
	r = load_document(&c, &ld, text, len, &extra);
	if (r < 0)
		goto fail;
	r = -EINVAL;
	if (yaml_document_get_root_node(&extra))
		error_at(&c, yaml_document_get_root_node(&extra), "yaml",
		         "only one document is allowed");
	yaml_document_delete(&extra);

	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		r = -ENOMEM;
		goto fail;
	}
	parse_root(&c, root, cfg);
	if (c.oom) {
		r = -ENOMEM;
		goto fail;
	}
	if (c.errors.n == 0)
		r = 0;
fail:
	if (c.oom && r == -EINVAL)
		r = -ENOMEM;
	if (pending_flush(&c.errors, &diags->errors, &diags->n_errors) < 0 ||
	    pending_flush(&c.warnings, &diags->warnings, &diags->n_warnings) < 0)
		r = -ENOMEM;
	pending_clear(&c.errors);
	pending_clear(&c.warnings);
	if (have_doc)
		yaml_document_delete(&doc);
	if (have_parser)
		yaml_parser_delete(&parser);
	loader_forget_anchors(&ld);
	if (r < 0) {
		lk_config_free(cfg);
		return r;
	}
	*ret = cfg;
	return 0;
}

int lk_config_load(const char *path, struct lk_config **ret, struct lk_config_diags *diags)
{
	char *text = NULL, msg[128];
	size_t len = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		goto fail;
	}
	/* Read one byte past the cap, so that a file of exactly the cap is accepted and a larger
	 * one is detected without trusting st_size (which a pipe or /proc file does not have). */
	text = malloc(LK_CONFIG_MAX_BYTES + 1);
	if (!text) {
		r = -ENOMEM;
		goto fail;
	}
	while (len < LK_CONFIG_MAX_BYTES + 1) {
		ssize_t n = read(fd, text + len, LK_CONFIG_MAX_BYTES + 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	fd = -1;
	r = lk_config_parse(path, text, len, ret, diags);
	free(text);
	return r;
fail:
	snprintf(msg, sizeof(msg), "cannot read: %s", strerror(-r));
	diag_file(diags, path, msg);
	if (fd >= 0)
		close(fd);
	free(text);
	return r;
}

/* ${VAR} expansion in the agent's configuration values (docs/configuration.md, "Environment
 * variables"). */
#include "agent/config_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
char *lk_config_expand(struct lk_config_ctx *c, const yaml_node_t *n, const char *field)
{
	const char *v = lk_config_scalar(n);
	size_t len = n->data.scalar.length;
	struct buf b = { 0 };
	char qb[QBUF], qb2[QBUF];

	if (memchr(v, '\0', len)) {
		lk_config_error_at(c, n, field, "contains a NUL character");
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
			lk_config_error_at(c, n, field, "unterminated \"${\" in %s (write $$ for a literal $)",
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
			lk_config_error_at(c, n, field, "empty variable name in %s", Q(qb, v));
			goto fail;
		}
		if (!valid_var_name(name, name_len)) {
			lk_config_error_at(c, n, field, "invalid variable name %s in %s",
			                   lk_config_quote(qb2, sizeof(qb2), name, name_len), Q(qb, v));
			goto fail;
		}
		{
			char var[256];

			if (name_len >= sizeof(var)) {
				lk_config_error_at(c, n, field, "variable name %s is too long",
				                   lk_config_quote(qb2, sizeof(qb2), name, name_len));
				goto fail;
			}
			memcpy(var, name, name_len);
			var[name_len] = '\0';
			val = getenv(var);
			if (dflt && (!val || !*val)) {
				val = NULL;
			} else if (!val) {
				lk_config_error_at(c, n, field, "environment variable %s is not set", Q(qb2, var));
				goto fail;
			}
		}
		if (val ? buf_add(&b, val, strlen(val)) < 0 : buf_add(&b, dflt, dflt_len) < 0)
			goto oom;
		if (b.len > LK_CONFIG_MAX_SCALAR_BYTES) {
			lk_config_error_at(c, n, field, "is longer than %d bytes after expansion",
			                   LK_CONFIG_MAX_SCALAR_BYTES);
			goto fail;
		}
		i = (size_t)(close - v);
	}
	/* Kept for the agent's life, one per lock name: sized to fit, not to the buffer's growth. */
	char *fit = realloc(b.p, b.len + 1);
	return fit ? fit : b.p;
oom:
	c->oom = true;
fail:
	free(b.p);
	return NULL;
}

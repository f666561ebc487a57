/* The agent's configuration file, typed values: strings, durations, choices, names, files,
 * modes and numbers, each checked and reported with its place (see config.c for the schema). */
#include "agent/config_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/duration.h"

/* A string field: 1 with *ret a new string, 0 when absent, -1 after reporting. */
int lk_config_get_string(struct lk_config_ctx *c, yaml_node_t *n, const char *field, char **ret)
{
	char *s, kb[QBUF];

	if (!n)
		return 0;
	if (n->type != YAML_SCALAR_NODE) {
		lk_config_error_at(c, n, field, "expected a string, found %s", lk_config_kind(kb, sizeof(kb), n));
		return -1;
	}
	s = lk_config_expand(c, n, field);
	if (!s)
		return -1;
	*ret = s;
	return 1;
}

/* A duration field of at least min_ms (and no field may be 0): 1 with *ret set, 0 when absent,
 * -1 after reporting. */
int lk_config_get_duration(struct lk_config_ctx *c, yaml_node_t *n, const char *field,
                           int64_t min_ms, int64_t *ret)
{
	const char *err;
	char *s, qb[QBUF], min[32];
	int64_t ms;
	int r = lk_config_get_string(c, n, field, &s);

	if (r <= 0)
		return r;
	if (lk_duration_parse(s, &ms, &err) < 0) {
		lk_config_error_at(c, n, field, "%s %s", Q(qb, s), err);
		r = -1;
	} else if (ms < min_ms) {
		lk_config_error_at(c, n, field, "must be at least %s, got %s",
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
int lk_config_get_choice(struct lk_config_ctx *c, yaml_node_t *n, const char *field,
                         const char *what, const char *const *choices, size_t n_choices,
                         size_t *ret)
{
	char *s, qb[QBUF];
	int r = lk_config_get_string(c, n, field, &s);

	if (r <= 0)
		return r;
	for (size_t i = 0; i < n_choices; i++) {
		if (strcmp(s, choices[i]) == 0) {
			free(s);
			*ret = i;
			return 1;
		}
	}
	lk_config_error_at(c, n, field, "unknown %s %s; expected %s or %s", what, Q(qb, s), choices[0],
	                   choices[1]);
	free(s);
	return -1;
}

bool lk_config_printable_word(const char *s, size_t min, size_t max)
{
	size_t n = strlen(s);

	if (n < min || n > max)
		return false;
	for (; *s; s++)
		if (*s <= ' ' || *s > '~')
			return false;
	return true;
}

bool lk_config_valid_name(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > LK_CONFIG_MAX_LOCK_NAME)
		return false;
	for (; *s; s++)
		if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
		      (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' || *s == '-'))
			return false;
	return true;
}

/* A file the agent will read later: checked now so that check-config catches a missing
 * secret before a rollout does. Its contents are never read here. */
int lk_config_get_file(struct lk_config_ctx *c, yaml_node_t *n, const char *field, char **ret)
{
	char *s, qb[QBUF];
	int r = lk_config_get_string(c, n, field, &s);

	if (r <= 0)
		return r;
	if (access(s, R_OK) < 0) {
		lk_config_error_at(c, n, field, "cannot read %s: %s", Q(qb, s), strerror(errno));
		free(s);
		return -1;
	}
	*ret = s;
	return 1;
}

/* "0660", "660" or an unquoted 0660: YAML 1.1 would read the last as octal and YAML 1.2 as
 * decimal 660, so the text is taken as octal digits either way, which is what was meant. */
int lk_config_get_mode(struct lk_config_ctx *c, yaml_node_t *n, const char *field, unsigned *ret)
{
	char *s, qb[QBUF];
	unsigned v = 0;
	size_t len;
	int r = lk_config_get_string(c, n, field, &s);

	if (r <= 0)
		return r;
	len = strlen(s);
	if (len < 1 || len > 4 || strspn(s, "01234567") != len) {
		lk_config_error_at(c, n, field, "%s is not an octal file mode like \"0660\"", Q(qb, s));
		r = -1;
		goto out;
	}
	for (size_t i = 0; i < len; i++)
		v = v * 8 + (unsigned)(s[i] - '0');
	if (v > 0777) {
		lk_config_error_at(c, n, field, "%s is above 0777", Q(qb, s));
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
int lk_config_get_number(struct lk_config_ctx *c, yaml_node_t *n, const char *field, uint64_t min,
                         uint64_t max, const char *what, uint64_t *ret)
{
	char *s, qb[QBUF], kb[QBUF];
	uint64_t v = 0;
	size_t len;
	int r = 1;

	if (!n)
		return 0;
	if (n->type != YAML_SCALAR_NODE) {
		lk_config_error_at(c, n, field, "expected a number, found %s", lk_config_kind(kb, sizeof(kb), n));
		return -1;
	}
	s = lk_config_expand(c, n, field);
	if (!s)
		return -1;
	len = strlen(s);
	/* At most 19 digits cannot overflow 64 bits; anything longer is out of range anyway. */
	if (len < 1 || strspn(s, "0123456789") != len) {
		lk_config_error_at(c, n, field, "%s is not a whole number", Q(qb, s));
		r = -1;
		goto out;
	}
	for (size_t i = 0; i < len && i < 20; i++)
		v = v * 10 + (uint64_t)(s[i] - '0');
	if (len > 19 || v < min || v > max) {
		if (what)
			lk_config_error_at(c, n, field, "%s is not %s (%" PRIu64 " to %" PRIu64 ")", Q(qb, s),
			                   what, min, max);
		else
			lk_config_error_at(c, n, field, "must be between %" PRIu64 " and %" PRIu64 ", got %s",
			                   min, max, Q(qb, s));
		r = -1;
		goto out;
	}
	*ret = v;
out:
	free(s);
	return r;
}

int lk_config_dup_str(struct lk_config_ctx *c, const char *s, char **ret)
{
	char *d = strdup(s);

	if (!d) {
		c->oom = true;
		return -1;
	}
	*ret = d;
	return 0;
}

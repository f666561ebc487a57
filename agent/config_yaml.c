/* The agent's configuration file, the YAML side: text or a file to a libyaml node tree within
 * the input caps (LK_CONFIG_MAX_*), node access, and the diagnostics, collected while the schema
 * (config.c) walks the tree and shown sorted in file order as "FILE:LINE:COL: FIELD: MESSAGE". */
#include "agent/config_int.h"
#include "proto/file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- diagnostics ---- */

static void pending_clear(struct lk_config_pending_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].text);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static void vreport(struct lk_config_ctx *c, bool warning, const yaml_node_t *at, const char *field,
                    const char *fmt, va_list ap)
{
	struct lk_config_pending_list *l = warning ? &c->warnings : &c->errors;
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
		struct lk_config_pending *v = realloc(l->v, cap * sizeof(*v));

		if (!v) {
			free(text);
			goto oom;
		}
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = (struct lk_config_pending){ .text = text, .line = line, .col = col,
	                                           .seq = c->seq++ };
	return;
oom:
	c->oom = true;
}

void lk_config_error_at(struct lk_config_ctx *c, const yaml_node_t *at, const char *field,
                        const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(c, false, at, field, fmt, ap);
	va_end(ap);
}

void lk_config_warn_at(struct lk_config_ctx *c, const yaml_node_t *at, const char *field,
                       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vreport(c, true, at, field, fmt, ap);
	va_end(ap);
}

static int pending_cmp(const void *a, const void *b)
{
	const struct lk_config_pending *x = a, *y = b;

	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	if (x->col != y->col)
		return x->col < y->col ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Move the sorted pending lines to the end of *arr; on failure they stay pending (and are
 * freed with the context). */
static int pending_flush(struct lk_config_pending_list *l, char ***arr, size_t *n)
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
const char *lk_config_quote(char *buf, size_t cap, const char *s, size_t len)
{
	size_t o = 0, shown = 0;

	buf[o++] = '"';
	for (size_t i = 0; i < len && o + 8 < cap; i++, shown++) {
		unsigned char ch = (unsigned char)s[i];

		if (shown == LK_CONFIG_QUOTE_MAX) {
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

/* ---- node access ---- */

yaml_node_t *lk_config_node_at(struct lk_config_ctx *c, int index)
{
	return yaml_document_get_node(c->doc, index);
}

const char *lk_config_scalar(const yaml_node_t *n)
{
	return (const char *)n->data.scalar.value;
}

/* YAML's null: an empty plain value ("key:"), "~" or "null". A field given as null is treated
 * as absent, like Kubernetes does, so "http_listen:" means the default rather than an error. */
bool lk_config_is_null(const yaml_node_t *n)
{
	static const char *const nulls[] = { "", "~", "null", "Null", "NULL" };

	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		if (strcmp(lk_config_scalar(n), nulls[i]) == 0)
			return true;
	return false;
}

/* What a node is, for "expected X, found Y": a scalar is shown as its (quoted) text, which
 * says more than the word "scalar" would. */
const char *lk_config_kind(char *buf, size_t cap, const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_MAPPING_NODE: return "a mapping";
	case YAML_SEQUENCE_NODE: return "a list";
	default:
		if (lk_config_is_null(n))
			return "null";
		return lk_config_quote(buf, cap, lk_config_scalar(n), n->data.scalar.length);
	}
}

/* buf[LK_CONFIG_PATH_MAX_LEN] = path.key; paths are built from known field names and capped
 * indexes, so they always fit, and a cut would only shorten a message. */
void lk_config_join(char *buf, const char *path, const char *key)
{
	size_t p = strnlen(path, LK_CONFIG_PATH_MAX_LEN - 1), k;

	memcpy(buf, path, p);
	if (p && p < LK_CONFIG_PATH_MAX_LEN - 1)
		buf[p++] = '.';
	k = strnlen(key, LK_CONFIG_PATH_MAX_LEN - 1 - p);
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
void lk_config_scan_mapping(struct lk_config_ctx *c, yaml_node_t *map, const char *path,
                            const char *const *keys, size_t n_keys, struct lk_config_fields *f)
{
	char kb[QBUF];

	memset(f, 0, sizeof(*f));
	if (map->type != YAML_MAPPING_NODE) {
		lk_config_error_at(c, map, path, "expected a mapping, found %s",
		                   lk_config_kind(kb, sizeof(kb), map));
		return;
	}
	f->ok = true;
	for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = lk_config_node_at(c, p->key), *v = lk_config_node_at(c, p->value);
		char qb[QBUF], field[LK_CONFIG_PATH_MAX_LEN];
		size_t i;

		if (k->type != YAML_SCALAR_NODE) {
			lk_config_error_at(c, k, path, "expected a field name, found %s",
			                   lk_config_kind(kb, sizeof(kb), k));
			continue;
		}
		for (i = 0; i < n_keys; i++)
			if (strlen(keys[i]) == k->data.scalar.length && strcmp(lk_config_scalar(k), keys[i]) == 0)
				break;
		if (i == n_keys) {
			/* Name the field itself, as for every other error, when it is a plain word;
			 * anything stranger is quoted and escaped after the enclosing path. */
			if (plain_word(lk_config_scalar(k), k->data.scalar.length)) {
				lk_config_join(field, path, lk_config_scalar(k));
				lk_config_error_at(c, k, field, "unknown field");
			} else {
				lk_config_error_at(c, k, path, "unknown field %s",
				                   lk_config_quote(qb, sizeof(qb), lk_config_scalar(k), k->data.scalar.length));
			}
			continue;
		}
		lk_config_join(field, path, keys[i]);
		if (f->key[i]) {
			lk_config_error_at(c, k, field, "duplicate field; first given at line %zu",
			                   (size_t)f->key[i]->start_mark.line + 1);
			continue;
		}
		f->key[i] = k;
		f->val[i] = lk_config_is_null(v) ? NULL : v;
	}
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

static int yaml_error(struct lk_config_ctx *c, yaml_parser_t *parser, const char *text, size_t len)
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
		lk_config_error_at(c, &at, "yaml", "%s (%s at %zu:%zu)", parser->problem,
		                   parser->context, (size_t)parser->context_mark.line + 1,
		                   (size_t)parser->context_mark.column + 1);
	else
		lk_config_error_at(c, &at, "yaml", "%s", parser->problem ? parser->problem : "cannot parse");
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
static void error_at_mark(struct lk_config_ctx *c, yaml_mark_t mark, const char *fmt, ...)
{
	yaml_node_t at = { .start_mark = mark };
	va_list ap;

	va_start(ap, fmt);
	vreport(c, false, &at, "yaml", fmt, ap);
	va_end(ap);
}

/* Register a new node's anchor: 0, or -1 after reporting. */
static int loader_anchor(struct lk_config_ctx *c, struct loader *l, const yaml_char_t *name,
                         int node, yaml_mark_t mark)
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
static int load_document(struct lk_config_ctx *c, struct loader *l, const char *text, size_t len,
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
	struct lk_config_ctx c = { .name = name ? name : "config" };
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
		lk_config_error_at(&c, NULL, "", "the file is empty; expected a mapping of settings");
		goto fail;
	}
	/* A second document would be silently ignored; a stray "---" is more likely a mistake. */
	r = load_document(&c, &ld, text, len, &extra);
	if (r < 0)
		goto fail;
	r = -EINVAL;
	if (yaml_document_get_root_node(&extra))
		lk_config_error_at(&c, yaml_document_get_root_node(&extra), "yaml",
		                   "only one document is allowed");
	yaml_document_delete(&extra);

	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		r = -ENOMEM;
		goto fail;
	}
	lk_config_parse_root(&c, root, cfg);
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
	const char *what = "";
	char *text, msg[128];
	ssize_t got;
	int r;

	/* Read one byte past the cap, so that a file of exactly the cap is accepted and a larger
	 * one is detected without trusting st_size (which a pipe or /proc file does not have). */
	text = malloc(LK_CONFIG_MAX_BYTES + 1);
	if (!text) {
		r = -ENOMEM;
		goto fail;
	}
	got = lk_file_read_capped(path, text, LK_CONFIG_MAX_BYTES + 1, &what);
	if (got < 0) {
		r = (int)got;
		goto fail;
	}
	r = lk_config_parse(path, text, (size_t)got, ret, diags);
	free(text);
	return r;
fail:
	snprintf(msg, sizeof(msg), "cannot read: %s", strerror(-r));
	diag_file(diags, path, msg);
	free(text);
	return r;
}

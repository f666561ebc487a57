/* /healthz, /readyz, /leader/<lock> and /metrics over evhttp. Every answer is computed from the
 * agent's state at the time of the request; nothing here blocks. */
#include "agent/http.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/lock.h"
#include "agent/metrics.h"
#include "agent/status.h"
#include "locks/backend.h"

struct lk_http {
	struct evhttp *http;
	const struct lk_status *st;
};

static void reply(struct evhttp_request *req, int code, const char *reason,
                  const char *content_type, struct evbuffer *body)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
	evhttp_send_reply(req, code, reason, body);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason,
                       const char *text)
{
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	evbuffer_add_printf(b, "%s\n", text);
	reply(req, code, reason, "text/plain; charset=utf-8", b);
	evbuffer_free(b);
}

static void serve_leader(struct lk_http *h, struct evhttp_request *req, const char *name)
{
	int i = lk_status_find_lock(h->st, name);
	struct evbuffer *b;
	bool leads;
	json_t *o;
	char *s;

	if (i < 0) {
		reply_text(req, 404, "Not Found", "unknown lock");
		return;
	}
	lk_lock_catch_up(h->st->locks[i]);
	o = lk_status_leader_json(h->st->locks[i], &leads);
	s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(o);
	b = s ? evbuffer_new() : NULL;
	if (!b) {
		free(s);
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	evbuffer_add_printf(b, "%s\n", s);
	/* Only a leader that is not stepping down should receive leader traffic. */
	reply(req, leads ? 200 : 503, leads ? "OK" : "Not Leader", "application/json", b);
	evbuffer_free(b);
	free(s);
}

static void serve_metrics(struct lk_http *h, struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();

	if (!b) {
		evhttp_send_error(req, 500, "out of memory");
		return;
	}
	lk_status_catch_up(h->st);
	lk_metrics_render(h->st, b);
	reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b);
	evbuffer_free(b);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct lk_http *h = arg;
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	char why[256];

	if (!path)
		path = "/";
	/* What reports a tenure catches up first (I9): /metrics every lock, /leader/<lock> its
	 * own; probes report none, and must not cost a look at every lock of a large agent. */
	if (strcmp(path, "/healthz") == 0) {
		reply_text(req, 200, "OK", "ok");
	} else if (strcmp(path, "/readyz") == 0) {
		if (lk_status_ready(h->st, why, sizeof(why)))
			reply_text(req, 200, "OK", "ready");
		else
			reply_text(req, 503, "Service Unavailable", why);
	} else if (strncmp(path, "/leader/", 8) == 0) {
		serve_leader(h, req, path + 8);
	} else if (strcmp(path, "/metrics") == 0) {
		serve_metrics(h, req);
	} else {
		reply_text(req, 404, "Not Found", "not found: try /healthz, /readyz, /leader/<lock>, /metrics");
	}
}

int lk_http_new(struct event_base *base, const struct lk_status *st, const char *listen,
                struct lk_http **ret, char *err, size_t errlen)
{
	struct lk_http *h = calloc(1, sizeof(*h));
	char host[256];
	int port, rc = -ENOMEM;

	if (!h)
		goto fail;
	h->st = st;
	if (lk_parse_address(listen, host, sizeof(host), &port) < 0 || port == 0) {
		snprintf(err, errlen, "http_listen \"%s\" is not host:port", listen);
		rc = -EINVAL;
		goto fail;
	}
	h->http = evhttp_new(base);
	if (!h->http)
		goto fail;
	evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_timeout(h->http, LK_HTTP_TIMEOUT_S);
	evhttp_set_max_headers_size(h->http, LK_HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(h->http, 0);
	evhttp_set_gencb(h->http, on_request, h);
	if (!evhttp_bind_socket_with_handle(h->http, host, (ev_uint16_t)port)) {
		rc = errno ? -errno : -EADDRINUSE;
		snprintf(err, errlen, "cannot listen on %s: %s", listen, strerror(-rc));
		goto fail;
	}
	*ret = h;
	return 0;
fail:
	if (rc == -ENOMEM)
		snprintf(err, errlen, "out of memory");
	lk_http_free(h);
	return rc;
}

struct lk_http *lk_http_free(struct lk_http *h)
{
	if (!h)
		return NULL;
	if (h->http)
		evhttp_free(h->http);
	free(h);
	return NULL;
}

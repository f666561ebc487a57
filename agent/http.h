/* The HTTP endpoints on http_listen (docs/metrics.md, "Endpoints"), served by evhttp from the
 * agent's loop:
 * /healthz, /readyz, /leader/<lock>, /metrics. */
#ifndef LK_AGENT_HTTP_H
#define LK_AGENT_HTTP_H

#include <stddef.h>

struct event_base;
struct lk_http;
struct lk_status;

#define LK_HTTP_TIMEOUT_S       5     /* a request that has not arrived by then is dropped */
#define LK_HTTP_MAX_HEADERS     8192  /* bytes of request headers */

/* Listen on "host:port" ("[v6]:port" too), answering from st (borrowed: it must outlive the
 * server). Returns 0 and the server, or a negative errno with err set. */
int lk_http_new(struct event_base *base, const struct lk_status *st, const char *listen,
                struct lk_http **ret, char *err, size_t errlen);

/* Stop listening and free; accepts NULL; returns NULL. */
struct lk_http *lk_http_free(struct lk_http *h);

#endif

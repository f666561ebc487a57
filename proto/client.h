/* A small blocking client for the agent's socket, for the CLI and for apps written in C.
 *
 * One connection, one thread. Events that arrive while a request waits for its reply are kept
 * in order and handed out by lk_client_next_event(), so a caller never loses one. Every string
 * in a returned struct lk_server_msg borrows the client's buffers and stays valid until the
 * next call on the same client.
 *
 * I6: when lk_client_next_event() reports EOF (-EPIPE), the agent is gone and a leader must stop
 * leader work at once: its leadership can no longer be proven.
 *
 * I8: the client follows every tenure it hears of (LEADER, RENEWED, STEPDOWN, LOST...) and
 * keeps its deadline (until_mono_ms) itself, so that an app stops leading on time even while
 * its agent is frozen and says nothing: lk_client_leads() turns false at the deadline, and
 * lk_client_deadline_timeout() is the poll timeout that wakes an event loop for it.
 */
#ifndef LK_PROTO_CLIENT_H
#define LK_PROTO_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/codec.h"

#define LK_CLIENT_DEFAULT_SOCKET "/run/leasekeeper/agent.sock"
#define LK_CLIENT_MAX_QUEUED     1024 /* events kept while waiting for a reply */
#define LK_CLIENT_MAX_TENURES    64   /* locks whose deadlines one client follows */
/* A banner mono_ms further than this from our CLOCK_MONOTONIC means another clock. */
#define LK_CLIENT_CLOCK_SLACK_MS 1000

struct lk_client;

struct lk_client_opts {
	const char *socket_path;   /* NULL: $LEASEKEEPER_SOCKET, then LK_CLIENT_DEFAULT_SOCKET */
	const char *client_name;   /* sent as HELLO client=; NULL to omit */
	const char *auth_key_file; /* NULL: $LEASEKEEPER_AUTH_KEY_FILE, then none */
	int timeout_ms;            /* connect + banner + HELLO; <= 0 means 5000 */
};

/* The socket path opts would use: opts->socket_path, $LEASEKEEPER_SOCKET, or the default. */
const char *lk_client_socket_path(const char *explicit_path);

/* Connect, read the banner, send HELLO (with a MAC if the agent asks for one). Returns 0 and a
 * new client in *ret, or a negative errno with a message in err[errlen] (an ERR line from the
 * agent, such as too_many_clients or auth_failed, gives -ECONNREFUSED and its text). */
int lk_client_connect(const struct lk_client_opts *opts, struct lk_client **ret,
                      char *err, size_t errlen);

/* Send req and wait up to timeout_ms (< 0: forever) for its reply, queueing events meanwhile.
 * Returns 0 with the OK or ERR line in *reply, -ETIMEDOUT, -EPIPE on EOF, or -EPROTO for a line
 * that is not protocol. */
int lk_client_call(struct lk_client *c, const struct lk_request *req, int timeout_ms,
                   struct lk_server_msg *reply);

/* Return the next event (queued first, then from the socket) within timeout_ms (< 0: forever).
 * Returns 0, -ETIMEDOUT, -EPIPE on EOF, or -EPROTO. */
int lk_client_next_event(struct lk_client *c, int timeout_ms, struct lk_server_msg *ev);

/* The socket, for callers that poll several things; readable means call next_event. Events may
 * also already be queued: check lk_client_has_queued() before polling. */
int lk_client_fd(const struct lk_client *c);
int lk_client_has_queued(const struct lk_client *c);

/* True while this client was told LEADER (or RENEWED) for lock and that tenure's deadline has
 * not passed; false after STEPDOWN, LOST, RELEASED, STOP, EOF or the deadline. */
bool lk_client_leads(const struct lk_client *c, const char *lock);

/* The CLOCK_MONOTONIC ms at which the lock's tenure ends for this app, while it runs (leading,
 * or stepping down: work that is still winding down must be gone by then too); else 0. */
int64_t lk_client_until_mono_ms(const struct lk_client *c, const char *lock);

/* Milliseconds until the earliest deadline of a running tenure, for poll(2); -1 when none.
 * When it has passed, lk_client_leads() and lk_client_until_mono_ms() say so. */
int lk_client_deadline_timeout(const struct lk_client *c);

/* The agent's identity from its banner (borrowed, lives as long as the client). */
const char *lk_client_agent_id(const struct lk_client *c);

/* Close and free; accepts NULL; returns NULL. */
struct lk_client *lk_client_free(struct lk_client *c);

#endif

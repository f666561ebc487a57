/* The Unix socket server, the transport: accepts app connections into capped client slots,
 * keeps each one's buffers (output capped) and timers (HELLO, idle, close), and takes a stale
 * socket file over. What a client says and is told is its session's (session.h). Nothing one
 * client sends can stall the loop or reach another client. */
#ifndef LK_AGENT_SERVER_H
#define LK_AGENT_SERVER_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct json_t;
struct lk_server;
struct lk_session_env;

#define LK_CLIENT_OUTBUF_MAX    (256 * 1024) /* a client that reads nothing is cut off here */
/* ... plus this much per configured lock: WATCH * queues a state line for every lock at once
 * (a FOLLOWER line with a 128-byte name and a 256-byte holder is under 420 bytes), which a
 * 10,000-lock agent could not fit in the base cap even for a client that reads at once. */
#define LK_CLIENT_OUTBUF_PER_LOCK 512
#define LK_HELLO_TIMEOUT_MS     5000
#define LK_CLOSE_FLUSH_MS       1000
/* The listen queue: room for a burst of connections beyond the slots, so that they are
 * served (or told too_many_clients) instead of finding the queue full. The kernel caps it at
 * net.core.somaxconn. */
#define LK_SERVER_BACKLOG(max_clients) ((max_clients) * 4 < 64 ? 64 : (int)(max_clients) * 4)

/* Client slots (proto/PROTOCOL.md, "Client slots"). A connection is "idle" until it has sent
 * CAMPAIGN, WATCH or DRAIN (successfully) once; only idle connections are ever closed to make
 * room or for their idleness, so an app is never cut off by local processes that connect and
 * do nothing. */
struct lk_server_limits {
	size_t max_clients;           /* connections served at once, >= 1 */
	int64_t idle_timeout_ms;      /* after HELLO, for an idle connection; > 0 */
	const uint32_t *allowed_uids; /* peers (SO_PEERCRED) allowed; NULL: any. Copied */
	size_t n_allowed_uids;
};

/* Bind the socket at path with mode (replacing a stale socket file left by a dead agent, and
 * refusing if a live agent answers there) and start accepting; each client gets a session with
 * env. env is copied, its key too (NULL for auth=none, or 32 bytes); what env points at is
 * borrowed and must outlive the server. Returns 0 and the server, or a negative errno with err
 * set. */
int lk_server_new(struct event_base *base, const struct lk_session_env *env, const char *path,
                  unsigned mode, const struct lk_server_limits *limits,
                  struct lk_server **ret, char *err, size_t errlen);

/* Send a lock's event line to its campaign clients and watchers: the clients on the lock's own
 * list and the WATCH * list (kept from the sessions' io->want), never a walk of every client. */
void lk_server_emit_lock(struct lk_server *s, size_t lock_index, const char *line, size_t len);

/* Send a line to every client that said HELLO (STOP). */
void lk_server_broadcast(struct lk_server *s, const char *line, size_t len);

/* Send a line to every client that asked for the drain (DRAINED). */
void lk_server_to_drainers(struct lk_server *s, const char *line, size_t len);

/* Stop accepting, flush every client's output and close it; then call done(arg) (once, from the
 * loop, at the latest LK_CLOSE_FLUSH_MS later). */
void lk_server_close_all(struct lk_server *s, void (*done)(void *arg), void *arg);

/* Connected clients by kind, for metrics: campaigning on any lock, watching, other. */
void lk_server_count(const struct lk_server *s, size_t *campaign, size_t *watch, size_t *other);

/* STATUS's "clients" object: the caps (max_clients, client_idle_timeout_ms, hello_timeout_ms,
 * allowed_uids), the connections now, and counters of the connections the agent closed or
 * refused. A new reference, or NULL (out of memory, or s is NULL). */
struct json_t *lk_server_status_json(const struct lk_server *s);

/* Close everything and unlink the socket file (if it is still ours); accepts NULL. */
struct lk_server *lk_server_free(struct lk_server *s);

#endif

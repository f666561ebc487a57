/* One client's side of the protocol (proto/PROTOCOL.md): lines in, lines out. The banner, the
 * HELLO/auth handshake, the line cap, verb dispatch to the locks and the agent, and the replies.
 * The session does no I/O: its transport (server.c, or a test) hands it the bytes the peer sent
 * and is told, through struct lk_session_io, what to send and when to close. */
#ifndef LK_AGENT_SESSION_H
#define LK_AGENT_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct lk_session;
struct lk_status;

/* What every session needs from the agent. Borrowed: it must outlive the sessions. */
struct lk_session_env {
	const struct lk_status *status; /* the locks, identity, draining, STATUS */
	void *ctx;
	void (*drain)(void *ctx, const char *trigger); /* DRAIN: start or join the one drain */
	const uint8_t *key;             /* 32 bytes for auth=hmac, NULL for auth=none */
};

/* What a session needs from its transport. All hooks get the session's `conn` first; none may
 * free the session. */
struct lk_session_io {
	/* Queue one line ('\n' included) for the peer. A peer that reads too slowly may be cut
	 * off here: the transport then calls no more session input and sends nothing more. */
	void (*send)(void *conn, const char *line, size_t len);
	/* Read no more; close once what was sent is flushed. cut_off: the agent ends the
	 * connection for the client's fault (an over-long line), not at its request. */
	void (*close)(void *conn, bool cut_off);
	/* HELLO was accepted: the HELLO deadline is over and the idle clock starts. */
	void (*hello)(void *conn);
	/* CAMPAIGN, WATCH or DRAIN succeeded: the connection keeps its slot from now on. */
	void (*active)(void *conn);
	/* The session starts (on) or stops wanting the events of lock_index (LK_SESSION_ALL_LOCKS:
	 * of every lock, WATCH *), so that the transport can keep a list of clients per lock and
	 * send a lock's event to them alone, instead of asking every client on every event.
	 * Returns 0, or -ENOMEM (on: the request then fails); off never fails. May be NULL. */
	int (*want)(void *conn, size_t lock_index, bool on);
};

#define LK_SESSION_ALL_LOCKS ((size_t)-1)

enum lk_session_kind { LK_SESSION_CAMPAIGN, LK_SESSION_WATCH, LK_SESSION_OTHER };

/* A new session for conn (id names it in logs); sends the banner (with a fresh nonce) at once.
 * env and io are borrowed. Returns NULL on allocation failure, having sent nothing. */
struct lk_session *lk_session_new(const struct lk_session_env *env,
                                  const struct lk_session_io *io, void *conn, uint64_t id);

/* Take one complete line out of in and act on it. Returns true if a line was taken (call again),
 * false if in holds no complete line yet. Over LK_LINE_MAX bytes without a newline, the client
 * is told line_too_long and cut off. */
bool lk_session_read_line(struct lk_session *s, struct evbuffer *in);

/* The transport ends the session (EOF, an error, cut off, the agent closing). I6: a campaign
 * client that goes away has stepped down; one that was cut_off has not said so and may still be
 * working, so its tenure is left to expire instead of released. io->want(off) is called for
 * each lock it wanted first. Accepts NULL; returns NULL. */
struct lk_session *lk_session_free(struct lk_session *s, bool cut_off);

/* For the transport's broadcasts, slots and counts. */
bool lk_session_said_hello(const struct lk_session *s);
bool lk_session_wants_lock(const struct lk_session *s, size_t lock_index); /* O(log locks) */
bool lk_session_asked_to_drain(const struct lk_session *s); /* gets DRAINED */
enum lk_session_kind lk_session_kind(const struct lk_session *s); /* O(1) */
const char *lk_session_name(const struct lk_session *s); /* HELLO client=, or "-" */

#endif

/* The leasekeeper wire protocol, version 1 (proto/PROTOCOL.md), as a pure codec.
 *
 * Lines in, structs out; structs in, lines out. No file descriptors, no allocation: a parsed
 * message borrows the caller's line buffer (the parser splits it in place), and formatting
 * writes into a caller buffer. Both the agent (parse requests, format replies and events) and
 * the client library (the reverse) use this one file, so the two sides cannot drift apart.
 */
#ifndef LK_PROTO_CODEC_H
#define LK_PROTO_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LK_PROTO_VERSION   1
#define LK_LINE_MAX        4096 /* bytes in one line, the '\n' included */
#define LK_LOCK_NAME_MAX   128
#define LK_NONCE_HEX_LEN   64
#define LK_MAC_HEX_LEN     64
#define LK_MAX_WORDS       32   /* words in one line; more is a bad_request */

enum lk_verb {
	LK_VERB_HELLO,
	LK_VERB_CAMPAIGN,
	LK_VERB_WATCH,
	LK_VERB_ACK,
	LK_VERB_RESIGN,
	LK_VERB_STATUS,
	LK_VERB_DRAIN,
	LK_VERB_PING,
	LK_VERB_QUIT,
	LK_VERB__COUNT,
};

/* Error codes of proto/PROTOCOL.md. LK_ERR_NONE (0) means success wherever an lk_err is
 * returned. */
enum lk_err {
	LK_ERR_NONE = 0,
	LK_ERR_BAD_REQUEST,
	LK_ERR_UNKNOWN_VERB,
	LK_ERR_UNKNOWN_LOCK,
	LK_ERR_HELLO_REQUIRED,
	LK_ERR_AUTH_FAILED,
	LK_ERR_UNSUPPORTED_VERSION,
	LK_ERR_LINE_TOO_LONG,
	LK_ERR_BAD_TOKEN,
	LK_ERR_DRAINING,
	LK_ERR_TOO_MANY_CLIENTS,
	LK_ERR__COUNT,
};

enum lk_event_kind {
	LK_EV_LEADER,
	LK_EV_FOLLOWER,
	LK_EV_STEPDOWN,
	LK_EV_LOST,
	LK_EV_RELEASED,
	LK_EV_STOP,
	LK_EV_DRAINED,
	LK_EV_RENEWED,
	LK_EV__COUNT,
};

enum lk_lost_reason {
	LK_LOST_RENEW_DEADLINE,
	LK_LOST_TAKEN,
	LK_LOST_EXPIRED,
	LK_LOST_BACKEND_ERROR,
	LK_LOST__COUNT,
};

enum lk_outcome {
	LK_OUTCOME_RELEASED,
	LK_OUTCOME_ALREADY_GONE,
	LK_OUTCOME_EXPIRED,
	LK_OUTCOME_FAILED,
	LK_OUTCOME__COUNT,
};

/* A client request. String fields borrow the parsed line (or, when formatting, the caller). */
struct lk_request {
	enum lk_verb verb;
	unsigned version;        /* HELLO */
	const char *client;      /* HELLO client=, or NULL */
	const char *mac;         /* HELLO mac=, or NULL; checked by the agent, not the codec */
	const char *lock;        /* CAMPAIGN, WATCH ("*" allowed), ACK, RESIGN */
	const char *status_lock; /* STATUS lock=<lock>: that lock alone; or NULL */
	const char *after;       /* STATUS after=<lock>: the page after that lock; or NULL */
	uint64_t token;          /* ACK */
};

/* An unsolicited event. Which fields are meaningful depends on kind. */
struct lk_event {
	enum lk_event_kind kind;
	const char *lock;        /* LEADER FOLLOWER STEPDOWN LOST RELEASED */
	uint64_t token;          /* LEADER STEPDOWN LOST RELEASED */
	int64_t ttl_ms;          /* LEADER RENEWED */
	/* LEADER RENEWED: CLOCK_MONOTONIC ms at which the app must stop leading unless a RENEWED
	 * moves it (the deadline rule in PROTOCOL.md). Parsing gives 0 when an older agent left it
	 * out; formatting a LEADER or RENEWED requires it. */
	int64_t until_mono_ms;
	const char *holder;      /* FOLLOWER: identity, or "-" for nobody */
	int64_t deadline_ms;     /* STEPDOWN STOP */
	enum lk_lost_reason reason;   /* LOST */
	enum lk_outcome outcome;      /* RELEASED */
	unsigned released, expired, failed; /* DRAINED */
	int64_t elapsed_ms;      /* DRAINED */
};

/* Anything the agent sends: the banner, a reply, or an event. */
enum lk_server_msg_kind {
	LK_MSG_BANNER,
	LK_MSG_OK,
	LK_MSG_ERR,
	LK_MSG_EVENT,
};

struct lk_server_msg {
	enum lk_server_msg_kind kind;
	/* BANNER */
	unsigned version;
	const char *id;
	const char *nonce;       /* 64 hex digits */
	bool auth_hmac;
	int64_t mono_ms;         /* the agent's CLOCK_MONOTONIC in ms, 0 if an older agent omits it */
	/* OK: the verb it answers, and the rest of the line after "OK <VERB> " (may be "") */
	enum lk_verb ok_verb;
	const char *rest;
	/* ERR */
	enum lk_err err;
	const char *err_text;    /* may be "" */
	/* EVENT */
	struct lk_event ev;
};

/* Name of a verb, error code, event, reason or outcome as it appears on the wire. */
const char *lk_verb_name(enum lk_verb v);
/* The word after "OK" in the reply to v (PONG for PING, BYE for QUIT). */
const char *lk_ok_name(enum lk_verb v);
const char *lk_err_name(enum lk_err e);
const char *lk_event_name(enum lk_event_kind k);
const char *lk_lost_reason_name(enum lk_lost_reason r);
const char *lk_outcome_name(enum lk_outcome o);

/* True if s is a valid lock name: [A-Za-z0-9._-]{1,128}. */
bool lk_codec_lock_name_valid(const char *s);

/* Strip one trailing "\n" and an optional "\r" before it from line[0..*len); returns the new
 * length through *len. Lines without a '\n' are left alone. */
void lk_codec_chomp(const char *line, size_t *len);

/* Parse one request line (without its '\n'; a trailing '\r' is tolerated) of len bytes.
 * The buffer is modified in place and must hold len+1 bytes (a NUL is written at line[len]);
 * on success *ret borrows it. Returns LK_ERR_NONE, or the error code to send back with
 * *ret_text set to a static human explanation. Never fails on account of a lock being unknown:
 * that is the agent's business. */
enum lk_err lk_codec_parse_request(char *line, size_t len, struct lk_request *ret,
                                   const char **ret_text);

/* Parse one line sent by the agent, the same way. Returns 0, -ENOMSG for an event verb this
 * codec does not know (a newer agent's: clients skip it), or -EINVAL for a line that is not
 * valid protocol (a first word that is no verb, a missing or malformed attribute); unknown
 * attributes are ignored so that newer agents can add them. */
int lk_codec_parse_server_msg(char *line, size_t len, struct lk_server_msg *ret);

/* Formatting: write one complete line, '\n' included, NUL-terminated, into buf[cap].
 * Returns its length (without the NUL), or -ENOSPC if it does not fit, or -EINVAL for a
 * field that cannot be sent (a bad lock name, a word with a space in it). */
int lk_codec_format_request(char *buf, size_t cap, const struct lk_request *req);
int lk_codec_format_event(char *buf, size_t cap, const struct lk_event *ev);
int lk_codec_format_banner(char *buf, size_t cap, const char *id, const char *nonce_hex,
                           bool auth_hmac, int64_t mono_ms);
/* "OK <VERB>" followed by " rest" when rest is non-empty. */
int lk_codec_format_ok(char *buf, size_t cap, enum lk_verb verb, const char *rest);
/* "ERR <code> <text>"; text may be NULL or "". */
int lk_codec_format_err(char *buf, size_t cap, enum lk_err code, const char *text);

#endif

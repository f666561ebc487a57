/* A minimal leader-elected app in C, linking leasekeeper's client library.
 *
 * It campaigns for one lock and "works" (prints a line every 500 ms) only while it leads.
 * It shows the whole contract an app has to keep:
 *   LEADER    start leader work, fenced with the token
 *   STEPDOWN  stop leader work, then ACK the token (the agent releases only after that)
 *   LOST      stop leader work at once; no ACK
 *   STOP      the drain is over: exit
 *   EOF       the agent is gone: leadership can no longer be proven, stop at once (I6)
 *   deadline  no RENEWED came before the tenure's until_mono_ms: stop at once, even though the
 *             agent said nothing (it may be frozen); the client library keeps the time. Then,
 *             unless the agent said LOST or STEPDOWN for that tenure meanwhile, RESIGN and
 *             CAMPAIGN again: if this app was the one frozen (or the lines came late), its
 *             agent still holds the lock for nobody, and no other replica could lead
 *
 * usage: app [-s SOCKET] [-n NAME] LOCK
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "proto/client.h"

static const char *name = "app";

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
	struct timeval tv;
	struct tm tm;
	char ts[32];
	va_list ap;

	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
	printf("%s.%03d [%s] ", ts, (int)(tv.tv_usec / 1000), name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

/* The deadline ended tenure `token` and the agent said neither LOST nor STEPDOWN for it: hand
 * the lock back (the work has stopped: releasing is safe) and stay a candidate. Returns 0, or
 * the exit code if a STOP came meanwhile. */
static int hand_back(struct lk_client *c, const char *lock, uint64_t token)
{
	struct lk_server_msg m;
	int rc;

	say("RESIGN and CAMPAIGN %s: tenure %" PRIu64 " ended at its deadline without a word from "
	    "the agent", lock, token);
	rc = lk_client_call(c, &(struct lk_request){ .verb = LK_VERB_RESIGN, .lock = lock },
	                    5000, &m);
	if (rc == 0) {
		/* Events that came before the reply were sent before the agent read the RESIGN: a
		 * LEADER among them is a tenure the RESIGN gave up. */
		while (lk_client_has_queued(c) && lk_client_next_event(c, 0, &m) == 0) {
			if (m.ev.kind == LK_EV_LEADER)
				say("LEADER token=%" PRIu64 " from before our RESIGN: ignored", m.ev.token);
			else if (m.ev.kind == LK_EV_STEPDOWN)
				lk_client_call(c, &(struct lk_request){ .verb = LK_VERB_ACK, .lock = lock,
				                                       .token = m.ev.token }, 5000, &m);
			else if (m.ev.kind == LK_EV_STOP)
				return 0;
		}
	}
	/* A frozen agent answers neither in time (-ETIMEDOUT: the replies are skipped when they
	 * come): both run after its thaw, after its LOST. */
	rc = lk_client_call(c, &(struct lk_request){ .verb = LK_VERB_CAMPAIGN, .lock = lock },
	                    rc == -ETIMEDOUT ? 0 : 5000, &m);
	if (rc == 0 && m.kind != LK_MSG_OK)
		say("CAMPAIGN failed: %s", m.err_text);
	return -1;
}

int main(int argc, char **argv)
{
	const char *socket = NULL, *lock;
	struct lk_client *c = NULL;
	struct lk_server_msg m;
	uint64_t token = 0, resign = 0;
	unsigned work = 0;
	char err[512];
	int ch, rc;

	while ((ch = getopt(argc, argv, "s:n:")) != -1) {
		switch (ch) {
		case 's': socket = optarg; break;
		case 'n': name = optarg; break;
		default: goto usage;
		}
	}
	if (optind + 1 != argc)
		goto usage;
	lock = argv[optind];

	struct lk_client_opts opts = { .socket_path = socket, .client_name = name };
	if (lk_client_connect(&opts, &c, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", name, err);
		return 1;
	}
	rc = lk_client_call(c, &(struct lk_request){ .verb = LK_VERB_CAMPAIGN, .lock = lock },
	                    5000, &m);
	if (rc < 0 || m.kind != LK_MSG_OK) {
		fprintf(stderr, "%s: CAMPAIGN failed: %s\n", name, rc < 0 ? strerror(-rc) : m.err_text);
		lk_client_free(c);
		return 1;
	}
	say("campaigning for %s", lock);
	for (;;) {
		/* While leading, wake up every 500 ms to do a slice of work, and at the deadline. */
		int wait = token ? 500 : -1, until_deadline = lk_client_deadline_timeout(c);

		if (token && until_deadline >= 0 && until_deadline < wait)
			wait = until_deadline;
		if (resign)
			wait = 0; /* first what the agent said already: a LOST makes it moot */
		rc = lk_client_next_event(c, wait, &m);
		/* Not leading any more, and not because of what just arrived: the deadline passed
		 * without a RENEWED. The agent may be frozen; stop on our own (I8). */
		if (token && !lk_client_leads(c, lock) &&
		    (rc == -ETIMEDOUT || (rc == 0 && (m.ev.kind == LK_EV_RENEWED ||
		                                      m.ev.kind == LK_EV_FOLLOWER)))) {
			say("DEADLINE token=%" PRIu64 ": no RENEWED in time, stopped leader work at once",
			    token);
			resign = token;
			token = 0;
		}
		if (rc == -ETIMEDOUT && resign && !token) {
			uint64_t t = resign;
			resign = 0;
			rc = hand_back(c, lock, t);
			if (rc >= 0) {
				say("STOP: exiting");
				lk_client_free(c);
				return rc;
			}
			continue;
		}
		if (rc == -ETIMEDOUT) {
			if (token)
				say("leader (token %" PRIu64 "): doing work #%u", token, ++work);
			continue;
		}
		if (rc < 0) {
			if (token)
				say("agent gone: stopping leader work at once");
			else
				say("agent gone");
			lk_client_free(c);
			return 1;
		}
		switch (m.ev.kind) {
		case LK_EV_LEADER:
			if (resign && m.ev.token != resign)
				resign = 0; /* the agent has moved on */
			if (!lk_client_leads(c, lock) || m.ev.token == resign) {
				say("LEADER token=%" PRIu64 " came past its deadline: not starting work",
				    m.ev.token);
				resign = m.ev.token;
				break;
			}
			token = m.ev.token;
			say("LEADER token=%" PRIu64 " (lease proven for %" PRId64 " ms): starting work",
			    token, m.ev.ttl_ms);
			break;
		case LK_EV_RENEWED:
			break;
		case LK_EV_FOLLOWER:
			if (strcmp(m.ev.holder, "-") == 0)
				say("follower: nobody holds %s yet", lock);
			else
				say("follower: %s holds %s", m.ev.holder, lock);
			break;
		case LK_EV_STEPDOWN:
			say("STEPDOWN token=%" PRIu64 ": finishing work, then ACK", m.ev.token);
			token = 0;
			if (m.ev.token == resign)
				resign = 0; /* the ACK hands it back */
			rc = lk_client_call(c, &(struct lk_request){ .verb = LK_VERB_ACK, .lock = lock,
			                                            .token = m.ev.token }, 5000, &m);
			if (rc < 0 || m.kind != LK_MSG_OK)
				say("ACK failed");
			break;
		case LK_EV_LOST:
			say("LOST token=%" PRIu64 " (%s): stopped at once", m.ev.token,
			    lk_lost_reason_name(m.ev.reason));
			token = 0;
			if (m.ev.token == resign)
				resign = 0; /* the agent no longer holds it */
			break;
		case LK_EV_RELEASED:
			say("RELEASED token=%" PRIu64 " outcome=%s", m.ev.token,
			    lk_outcome_name(m.ev.outcome));
			break;
		case LK_EV_STOP:
			say("STOP: exiting");
			lk_client_free(c);
			return 0;
		default:
			break;
		}
	}
usage:
	fprintf(stderr, "usage: %s [-s SOCKET] [-n NAME] LOCK\n", argv[0]);
	return 2;
}

/* leasekeeper run: wrapper mode for apps that cannot speak the protocol (docs/cli.md, "run:
 * wrapper mode").
 *
 * It campaigns for one lock and runs CMD only while this replica leads, in its own process
 * group, with LEASEKEEPER_TOKEN and LEASEKEEPER_LOCK in its environment:
 *   LEADER    start CMD (again, after a LOST)
 *   STEPDOWN  SIGTERM to CMD's group, wait for it to exit (SIGKILL at the deadline), then ACK
 *   LOST      SIGKILL at once
 *   STOP      exit 0
 *   EOF       the agent is gone: SIGKILL at once (I6), exit 1
 *   deadline  (until_mono_ms passed without a RENEWED) SIGKILL at once; once CMD is reaped, and
 *             unless the agent said LOST or STEPDOWN for that tenure meanwhile, RESIGN then
 *             CAMPAIGN: run (or the app it stands for) was frozen or late, the agent may still
 *             hold the lock for nobody, and this hands it back while staying a candidate.
 * When CMD exits by itself, run exits with CMD's status; closing the connection tells the agent
 * this campaign client has stepped down, so the lock is handed over. SIGTERM/SIGINT to run are
 * forwarded to CMD, then run exits once CMD did. One thread, one poll loop; SIGCHLD and the
 * forwarded signals arrive through a signalfd, so there is no async-signal-safety to get wrong
 * and every child is reaped (no zombies).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "proto/client.h"
#include "proto/codec.h"

static const char usage_run[] =
	"usage: leasekeeper run [-s SOCKET] --lock NAME -- CMD [ARG...]\n"
	"\n"
	"Campaign for NAME and run CMD only while this replica leads it, with LEASEKEEPER_TOKEN\n"
	"(the fencing token) and LEASEKEEPER_LOCK in its environment. On STEPDOWN, CMD gets\n"
	"SIGTERM (SIGKILL at the deadline) and the stepdown is acknowledged once it exited; on\n"
	"LOST, when the agent goes away, or when the tenure's deadline passes without a RENEWED\n"
	"(a frozen agent or a frozen run), CMD is killed at once; after a deadline run then\n"
	"resigns and campaigns again, so that the lock is not held for nobody. When CMD exits\n"
	"by itself, run\n"
	"exits with its status and the lock is handed over. SIGTERM and SIGINT are forwarded.\n";

struct runner {
	struct lk_client *c;
	const char *lock;
	char **cmd;
	int sfd;
	pid_t child;            /* 0: none */
	uint64_t token;         /* tenure CMD runs for */
	uint64_t pending;       /* a LEADER that came before the killed CMD was reaped, or 0 */
	uint64_t stepdown;      /* tenure to ACK once CMD is gone, 0 if none */
	int64_t kill_at_ms;     /* SIGKILL deadline while stopping, 0 if none */
	bool forwarded;         /* run itself got SIGTERM/SIGINT */
	bool killed;            /* CMD was killed for a LOST: wait for the next LEADER */
	uint64_t resign;        /* tenure that ended at its deadline: hand it back, 0 if none */
	uint64_t ended;         /* the last tenure that ended at its deadline: never restarted */
	bool resigning;         /* between RESIGN and its reply: LEADERs are from before it */
	int status;             /* CMD's last wait status */
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void note(const char *fmt, ...)
{
	va_list ap;

	fputs("leasekeeper run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static void start_child(struct runner *r, const sigset_t *orig)
{
	char tok[32];
	pid_t pid;

	snprintf(tok, sizeof(tok), "%" PRIu64, r->token);
	pid = fork();
	if (pid < 0) {
		note("cannot fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		/* Its own process group, so that a stop reaches whatever CMD started too. */
		setpgid(0, 0);
		sigprocmask(SIG_SETMASK, orig, NULL);
		signal(SIGPIPE, SIG_DFL);
		/* run forwards SIGTERM and SIGINT: CMD must be able to take them even when run was
		 * started with them ignored (a background job of a shell ignores SIGINT, and an
		 * ignored signal cannot even be trapped by a shell CMD). */
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		setenv("LEASEKEEPER_TOKEN", tok, 1);
		setenv("LEASEKEEPER_LOCK", r->lock, 1);
		close(r->sfd);
		close(lk_client_fd(r->c));
		execvp(r->cmd[0], r->cmd);
		fprintf(stderr, "leasekeeper run: cannot run %s: %s\n", r->cmd[0], strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid); /* also here: no race with a signal sent before the child ran */
	r->child = pid;
	note("leader of %s with token %s: started %s (pid %d)", r->lock, tok, r->cmd[0], (int)pid);
}

static void signal_child(struct runner *r, int sig)
{
	if (r->child > 0)
		kill(-r->child, sig);
}

static void describe_status(int status, char *buf, size_t cap)
{
	if (WIFEXITED(status))
		snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
	else
		snprintf(buf, cap, "ended with wait status %d", status);
}

static int exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return LK_EXIT_FAILED;
}

static int send_ack(struct runner *r, uint64_t token)
{
	struct lk_server_msg m;
	int rc = lk_client_call(r->c, &(struct lk_request){ .verb = LK_VERB_ACK, .lock = r->lock,
	                                                   .token = token }, 5000, &m);

	if (rc < 0 || m.kind != LK_MSG_OK) {
		/* The agent's error code first: its text alone may be just the lock name. */
		note("ACK %s %" PRIu64 " failed: %s%s%s", r->lock, token,
		     rc < 0 ? strerror(-rc) : lk_err_name(m.err), rc < 0 ? "" : " ",
		     rc < 0 ? "" : m.err_text);
		return -1;
	}
	note("stepped down from %s (token %" PRIu64 ")", r->lock, token);
	return 0;
}

/* Reap whatever exited. Returns true if CMD (the current child) is gone. */
static bool reap(struct runner *r)
{
	bool gone = false;
	int status;
	pid_t pid;

	if (r->child > 0) {
		siginfo_t si = { 0 };

		/* CMD has exited, but what it started may live on in its process group (a job that
		 * ignores SIGTERM, a background job CMD left behind). We are about to ACK or to hand
		 * the lock over, so nothing of CMD may go on working: SIGKILL the whole group first.
		 * WNOWAIT leaves CMD unreaped for that moment, so its pid (the group's id) cannot
		 * have been reused. */
		if (waitid(P_PID, (id_t)r->child, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
		    si.si_pid == r->child)
			kill(-r->child, SIGKILL);
	}
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid != r->child)
			continue;
		char what[96];
		describe_status(status, what, sizeof(what));
		note("%s %s", r->cmd[0], what);
		r->status = status;
		r->child = 0;
		r->kill_at_ms = 0;
		gone = true;
	}
	return gone;
}

/* Returns -1 to keep going, or the exit code. */
static int on_event(struct runner *r, const struct lk_server_msg *m, const sigset_t *orig)
{
	const struct lk_event *ev = &m->ev;

	if (m->kind != LK_MSG_EVENT)
		return -1;
	switch (ev->kind) {
	case LK_EV_LEADER:
		if (r->forwarded)
			return -1;
		if (r->resign && ev->token != r->resign)
			r->resign = 0; /* the agent has moved on from that tenure */
		if (r->resigning || ev->token == r->ended) {
			/* Sent before the agent read our RESIGN (which gives it up), or the tenure
			 * that ended at its deadline: over for us, a late line cannot resume it. */
			note("LEADER %s token %" PRIu64 " is over for us: not starting %s", r->lock,
			     ev->token, r->cmd[0]);
			return -1;
		}
		if (!lk_client_leads(r->c, r->lock)) {
			note("LEADER %s token %" PRIu64 " came past its deadline: not starting %s",
			     r->lock, ev->token, r->cmd[0]);
			r->ended = ev->token;
			r->resign = ev->token;
			return -1;
		}
		if (r->child != 0) {
			/* The CMD killed for the last LOST is not reaped yet: start when it is. */
			r->pending = ev->token;
			return -1;
		}
		r->token = ev->token;
		start_child(r, orig);
		return -1;
	case LK_EV_STEPDOWN:
		if (ev->token == r->resign)
			r->resign = 0; /* the ACK hands it back */
		if (r->child == 0)
			return send_ack(r, ev->token) < 0 ? LK_EXIT_FAILED : -1;
		note("stepping down: SIGTERM to %s, SIGKILL in %" PRId64 " ms", r->cmd[0],
		     ev->deadline_ms);
		r->stepdown = ev->token;
		r->kill_at_ms = now_ms() + (ev->deadline_ms > 100 ? ev->deadline_ms - 100 : 0);
		signal_child(r, SIGTERM);
		return -1;
	case LK_EV_LOST:
		note("lost %s (%s): killing %s", r->lock, lk_lost_reason_name(ev->reason),
		     r->cmd[0]);
		r->killed = r->child > 0;
		signal_child(r, SIGKILL);
		r->stepdown = 0;
		r->pending = 0;
		if (ev->token == r->resign)
			r->resign = 0; /* the agent no longer holds it */
		return -1;
	case LK_EV_STOP:
		signal_child(r, SIGKILL);
		return LK_EXIT_OK;
	default:
		return -1;
	}
}

/* The tenure r->resign ended at its deadline and CMD is gone, but the agent said neither LOST
 * nor STEPDOWN for it: if run was frozen, or the agent's lines came late, the agent may well
 * still hold the lock and renew it for a CMD that no longer runs, and no replica can lead until
 * it loses it for another reason. RESIGN lets it release the lock (nothing runs: that is safe),
 * CAMPAIGN keeps this replica a candidate. If the agent is the one that is frozen, both wait in
 * the socket and run after its LOST: harmless. Returns -1 to keep going, or the exit code. */
static int hand_back(struct runner *r, const sigset_t *orig)
{
	struct lk_server_msg m;
	int rc, wait_ms = 2000;

	/* First what the agent has said already: a LOST or STEPDOWN makes this moot. */
	while (r->resign && lk_client_next_event(r->c, 0, &m) == 0) {
		rc = on_event(r, &m, orig);
		if (rc >= 0)
			return rc;
	}
	if (!r->resign || r->child != 0)
		return -1;
	note("deadline of %s (token %" PRIu64 ") passed with no word from the agent: RESIGN and "
	     "CAMPAIGN again, so that the lock is not held for nobody", r->lock, r->resign);
	r->resign = 0;
	r->resigning = true;
	rc = lk_client_call(r->c, &(struct lk_request){ .verb = LK_VERB_RESIGN, .lock = r->lock },
	                    wait_ms, &m);
	if (rc == 0) {
		if (m.kind != LK_MSG_OK)
			note("RESIGN %s failed: %s %s", r->lock, lk_err_name(m.err), m.err_text);
		/* Whatever came before the reply was sent before the agent read the RESIGN. */
		while (lk_client_has_queued(r->c) && lk_client_next_event(r->c, 0, &m) == 0) {
			rc = on_event(r, &m, orig);
			if (rc >= 0) {
				r->resigning = false;
				return rc;
			}
		}
	} else if (rc == -ETIMEDOUT) {
		/* The agent is frozen: its LOST comes first after the thaw, then it runs both. */
		wait_ms = 0;
	} else {
		r->resigning = false;
		return -1; /* the agent is gone: the next read says so */
	}
	r->resigning = false;
	rc = lk_client_call(r->c, &(struct lk_request){ .verb = LK_VERB_CAMPAIGN, .lock = r->lock },
	                    wait_ms, &m);
	if (rc == 0 && m.kind != LK_MSG_OK) /* draining: STOP follows */
		note("CAMPAIGN %s failed: %s %s", r->lock, lk_err_name(m.err), m.err_text);
	return -1;
}

static int run_loop(struct runner *r, const sigset_t *orig)
{
	struct lk_server_msg m;
	int rc;

	for (;;) {
		struct pollfd pfd[2] = {
			{ .fd = r->sfd, .events = POLLIN },
			{ .fd = lk_client_fd(r->c), .events = POLLIN },
		};
		int timeout = -1, until_deadline;

		/* I8: the agent may be frozen and say nothing; CMD must not outlive the tenure's
		 * deadline, with or without a LOST. */
		if (r->child > 0 && !r->killed && lk_client_until_mono_ms(r->c, r->lock) == 0) {
			note("deadline of %s passed without a RENEWED (is the agent frozen?): killing %s",
			     r->lock, r->cmd[0]);
			r->killed = true;
			r->resign = r->token;
			r->ended = r->token;
			signal_child(r, SIGKILL);
			r->stepdown = 0;
			r->kill_at_ms = 0;
		}
		if (r->resign && r->child == 0 && !r->forwarded) {
			rc = hand_back(r, orig);
			if (rc >= 0)
				return rc;
			continue;
		}
		until_deadline = r->child > 0 ? lk_client_deadline_timeout(r->c) : -1;
		if (until_deadline >= 0)
			timeout = until_deadline;
		if (r->kill_at_ms) {
			int64_t left = r->kill_at_ms - now_ms();
			if (left <= 0) {
				note("%s did not exit in time: SIGKILL", r->cmd[0]);
				signal_child(r, SIGKILL);
				r->kill_at_ms = 0;
			} else if (timeout < 0 || left < timeout) {
				timeout = (int)left;
			}
		}
		if (!lk_client_has_queued(r->c) && poll(pfd, 2, timeout) < 0 && errno != EINTR)
			return LK_EXIT_FAILED;
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(r->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (si.ssi_signo == SIGCHLD)
					continue;
				/* SIGTERM/SIGINT: pass it on; leave when CMD is gone. */
				r->forwarded = true;
				if (r->child == 0)
					return 128 + (int)si.ssi_signo;
				note("got signal %u: forwarding to %s", si.ssi_signo, r->cmd[0]);
				signal_child(r, (int)si.ssi_signo);
			}
			if (reap(r)) {
				if (r->stepdown) {
					uint64_t t = r->stepdown;
					r->stepdown = 0;
					if (send_ack(r, t) < 0)
						return LK_EXIT_FAILED;
				} else if (r->killed && r->forwarded) {
					/* Killed for a LOST after run itself was told to end (LEADERs
					 * are ignored from then on): nothing would ever start CMD
					 * again, so end now instead of idling until the agent stops. */
					return exit_code(r->status);
				} else if (r->killed) {
					r->killed = false;
					if (r->pending) {
						r->token = r->pending;
						r->pending = 0;
						start_child(r, orig);
					}
				} else {
					/* CMD finished by itself (or after a forwarded signal): its work is
					 * done, and so is ours. */
					return exit_code(r->status);
				}
			}
		}
		if ((pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) || lk_client_has_queued(r->c)) {
			rc = lk_client_next_event(r->c, 0, &m);
			if (rc == -ETIMEDOUT)
				continue;
			if (rc < 0) {
				note("the agent went away (%s): killing %s", strerror(-rc), r->cmd[0]);
				signal_child(r, SIGKILL);
				return LK_EXIT_FAILED;
			}
			rc = on_event(r, &m, orig);
			if (rc >= 0)
				return rc;
		}
	}
}

int lk_cli_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "lock", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct runner r = { .sfd = -1 };
	struct lk_client_opts co = { .client_name = "run" };
	struct lk_server_msg m;
	sigset_t mask, orig;
	char err[512];
	int ch, rc = LK_EXIT_NOT_ASKED;

	optind = 1;
	opterr = 0;
	/* '+': stop at the first non-option, so CMD's own options stay CMD's. ':': a missing
	 * value is told apart from an unknown option. */
	while ((ch = getopt_long(argc, argv, "+:s:l:h", opts, NULL)) != -1) {
		switch (ch) {
		case 's':
			if (!optarg[0])
				return lk_cli_usage_error("run", usage_run, "the socket path (-s) is empty");
			co.socket_path = optarg;
			break;
		case 'l': r.lock = optarg; break;
		case 'h': fputs(usage_run, stdout); return LK_EXIT_OK;
		default: return lk_cli_option_error("run", usage_run, ch, opts, argv);
		}
	}
	if (!r.lock)
		return lk_cli_usage_error("run", usage_run, "--lock NAME is required");
	if (!lk_codec_lock_name_valid(r.lock))
		return lk_cli_usage_error("run", usage_run, "--lock \"%s\" is not a lock name (1 to "
		                          "128 of A-Z a-z 0-9 . _ -)", r.lock);
	if (optind >= argc)
		return lk_cli_usage_error("run", usage_run, "CMD is required: the command to run "
		                          "while leader, after --");
	r.cmd = argv + optind;

	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, &orig);
	r.sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (r.sfd < 0) {
		note("signalfd: %s", strerror(errno));
		goto out;
	}
	if (lk_client_connect(&co, &r.c, err, sizeof(err)) < 0) {
		note("cannot talk to the agent at %s: %s", lk_client_socket_path(co.socket_path), err);
		goto out;
	}
	rc = lk_client_call(r.c, &(struct lk_request){ .verb = LK_VERB_CAMPAIGN, .lock = r.lock },
	                    10000, &m);
	if (rc < 0 || m.kind != LK_MSG_OK) {
		/* The agent's error line as it sent it: "ERR unknown_lock nosuch". */
		if (rc == 0)
			note("the agent refused CAMPAIGN %s: ERR %s%s%s", r.lock, lk_err_name(m.err),
			     m.err_text[0] ? " " : "", m.err_text);
		else
			note("no answer from the agent to CAMPAIGN %s: %s", r.lock,
			     rc == -EPIPE ? "it closed the connection" : strerror(-rc));
		rc = rc == -EPROTO ? LK_EXIT_FAILED : LK_EXIT_NOT_ASKED;
		goto out;
	}
	rc = run_loop(&r, &orig);
out:
	if (r.child > 0) {
		signal_child(&r, SIGKILL);
		waitpid(r.child, NULL, 0);
	}
	lk_client_free(r.c);
	if (r.sfd >= 0)
		close(r.sfd);
	return rc;
}

/* libFuzzer target: the client library's line handling (proto/client.c).
 *
 * The client has no in-memory seam: it frames lines from a socket it connects itself. So the
 * harness listens on a Unix socket of its own and plays the agent: the input's bytes are what
 * the agent says. A helper thread accepts and writes the agent's first bytes while the client
 * is inside lk_client_connect() (the only call that blocks); everything after it runs on the
 * fuzzer's thread, and every later call uses a timeout of 0 after the bytes for it have been
 * written, so a run is deterministic: AF_UNIX puts written bytes in the peer's receive queue
 * at once.
 *
 * Byte 0 of the input picks the mode; the rest is the script.
 *
 * Raw mode (bit 0 clear): the whole script is the agent's side of the conversation, banner
 * included, followed by EOF. After the handshake the client makes the calls bits 1 and 2 ask
 * for, then takes events until the stream ends. This is the mode for arbitrary bytes.
 *
 * Scripted mode (bit 0 set): the harness sends a valid banner itself, with the agent's
 * mono_ms set to our CLOCK_MONOTONIC (so that the deadline rule's shared-clock branch runs)
 * and auth=hmac if bit 3 is set (the client then loads a key file and sends a MAC). The
 * script is agent output interleaved with directive lines that start with "#!", which are
 * not sent; each one runs after the agent output before it has been written:
 *   #!call <request line>   lk_client_call() with the request as the codec parses it
 *   #!next                  lk_client_next_event()
 *   #!leads <lock>          lk_client_leads(), _until_mono_ms(), _deadline_timeout()
 *   #!eof                   the agent closes its side
 * The agent output before the first directive comes between the banner and the harness's own
 * "OK HELLO" (events before a reply are queued), which always starts a line of its own. In agent output, "until_mono_ms=+N" is
 * rewritten to our clock plus N ms, so that scripts can speak of deadlines in the future.
 *
 * Properties (abort() on failure):
 * - calls return only documented results: 0, -ETIMEDOUT, -EPIPE, -EPROTO (and -EINVAL or
 *   -ENOSPC for a request the codec cannot format); a call's reply is an OK for the verb
 *   asked or an ERR; next_event hands out events only;
 * - I6: once the stream ended or broke, the client leads nothing and has no deadline;
 * - I8: a lock is never "led" past its deadline: lk_client_until_mono_ms() is 0 or in the
 *   future, and lk_client_deadline_timeout() is -1 or within INT_MAX;
 * - no crash, leak or hang (a hang would be a wait that the timeouts of 0 should not allow).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "proto/client.h"
#include "proto/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "fuzz_client: %s:%d: property failed: %s\n", \
			        __FILE__, __LINE__, #cond);                          \
			abort();                                                     \
		}                                                                    \
	} while (0)

#define MAX_SCRIPT   16384
#define MAX_STEPS    256
/* More than the events any script can hold (an event line has at least 19 bytes). */
#define MAX_EVENTS   MAX_SCRIPT
#define NONCE        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define KEY_HEX      "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static char dir[64], sock_path[128], key_path[128];
static int listen_fd = -1;

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void cleanup(void)
{
	if (listen_fd >= 0)
		close(listen_fd);
	unlink(sock_path);
	unlink(key_path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	FILE *f;

	unsetenv("LEASEKEEPER_SOCKET");
	unsetenv("LEASEKEEPER_AUTH_KEY_FILE");
	snprintf(dir, sizeof(dir), "%s/lk-fuzz-client.XXXXXX",
	         getenv("TMPDIR") && strlen(getenv("TMPDIR")) < 32 ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		abort();
	snprintf(sock_path, sizeof(sock_path), "%s/agent.sock", dir);
	snprintf(key_path, sizeof(key_path), "%s/key", dir);
	atexit(cleanup);
	f = fopen(key_path, "w");
	if (!f || fputs(KEY_HEX "\n", f) < 0 || fclose(f) != 0)
		abort();
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(listen_fd, 16) < 0)
		abort();
	return 0;
}

/* ---- the agent's side ------------------------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const void *p, size_t n)
{
	if (n == 0)
		return;
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		if (!b->p)
			abort();
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

/* Agent output, with "until_mono_ms=+N" made absolute in scripted mode. */
static void add_output(struct buf *b, const char *p, size_t n, bool rewrite)
{
	static const char tag[] = "until_mono_ms=+";
	const size_t tlen = sizeof(tag) - 1;

	while (n > 0) {
		const char *hit = rewrite ? memmem(p, n, tag, tlen) : NULL;
		char num[32];
		int64_t add = 0;
		size_t d = 0;

		if (!hit) {
			buf_add(b, p, n);
			return;
		}
		buf_add(b, p, (size_t)(hit - p) + tlen - 1); /* up to the '=' */
		n -= (size_t)(hit - p) + tlen;
		p = hit + tlen;
		while (d < n && d < 9 && p[d] >= '0' && p[d] <= '9')
			add = add * 10 + (p[d++] - '0');
		snprintf(num, sizeof(num), "%lld", (long long)(mono_ms() + add));
		buf_add(b, num, strlen(num));
		p += d;
		n -= d;
	}
}

/* Write all of b to the agent's end, which is non-blocking; what does not fit is dropped
 * (the scripts are far smaller than a socket buffer, so this does not happen in practice). */
static void agent_write(int fd, const struct buf *b)
{
	size_t off = 0;

	while (off < b->len) {
		ssize_t n = send(fd, b->p + off, b->len - off, MSG_NOSIGNAL);

		if (n <= 0)
			return;
		off += (size_t)n;
	}
}

/* Read and drop what the client sent, so that its requests never fill the socket. */
static void agent_drain(int fd)
{
	char junk[4096];

	while (recv(fd, junk, sizeof(junk), MSG_DONTWAIT) > 0)
		;
}

struct helper {
	const struct buf *first; /* written as soon as the client connects */
	bool eof;                /* then close the agent's sending side */
	int fd;                  /* out: the agent's end */
};

static void *helper_main(void *arg)
{
	struct helper *h = arg;

	h->fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (h->fd < 0)
		return NULL;
	agent_write(h->fd, h->first);
	if (h->eof)
		shutdown(h->fd, SHUT_WR);
	return NULL;
}

/* ---- the client's side ------------------------------------------------------------------ */

static void check_state(struct lk_client *c, const char *lock)
{
	int64_t before = mono_ms(), until = lk_client_until_mono_ms(c, lock);
	int t = lk_client_deadline_timeout(c);

	/* The client's clock read happens after ours: a deadline it reports is after both. */
	CHECK(until == 0 || until > before);
	CHECK(!lk_client_leads(c, lock) || until > 0);
	CHECK(t >= -1);
	(void)lk_client_has_queued(c);
}

static bool result_ok(int r)
{
	return r == 0 || r == -ETIMEDOUT || r == -EPIPE || r == -EPROTO || r == -ENOMEM;
}

static void do_call(struct lk_client *c, const struct lk_request *req)
{
	struct lk_server_msg reply;
	int r = lk_client_call(c, req, 0, &reply);

	CHECK(result_ok(r) || r == -EINVAL || r == -ENOSPC);
	if (r == 0) {
		CHECK(reply.kind == LK_MSG_OK || reply.kind == LK_MSG_ERR);
		if (reply.kind == LK_MSG_OK)
			CHECK(reply.ok_verb == req->verb);
	}
}

static int do_next(struct lk_client *c)
{
	struct lk_server_msg ev;
	int r = lk_client_next_event(c, 0, &ev);

	CHECK(result_ok(r));
	if (r == 0) {
		CHECK(ev.kind == LK_MSG_EVENT);
		if (ev.ev.lock)
			check_state(c, ev.ev.lock);
	}
	return r;
}

/* Take events until the stream ends; then I6 holds for every lock the script named. */
static void finish(struct lk_client *c, int fd, const char *const *locks, size_t n_locks)
{
	int r = 0;

	shutdown(fd, SHUT_WR);
	for (int i = 0; i < MAX_EVENTS && (r == 0 || r == -ETIMEDOUT); i++) {
		agent_drain(fd);
		r = do_next(c);
	}
	CHECK(r == -EPIPE || r == -EPROTO || r == -ENOMEM);
	CHECK(lk_client_deadline_timeout(c) == -1);
	for (size_t i = 0; i < n_locks; i++)
		CHECK(!lk_client_leads(c, locks[i]) && lk_client_until_mono_ms(c, locks[i]) == 0);
}

static const char *const default_locks[] = {"x", "orders", "a"};

static void run_raw(const uint8_t flags, const char *script, size_t len)
{
	struct buf first = {0};
	struct helper h = {.first = &first, .eof = true, .fd = -1};
	struct lk_client_opts opts = {.socket_path = sock_path, .timeout_ms = 2000};
	struct lk_client *c = NULL;
	pthread_t th;
	char err[256];
	int r;

	buf_add(&first, script, len);
	if (pthread_create(&th, NULL, helper_main, &h) != 0)
		abort();
	r = lk_client_connect(&opts, &c, err, sizeof(err));
	pthread_join(th, NULL);
	CHECK(r == 0 ? c != NULL : strnlen(err, sizeof(err)) < sizeof(err));
	if (r == 0) {
		if (flags & 0x02)
			do_call(c, &(struct lk_request){.verb = LK_VERB_PING});
		if (flags & 0x04)
			do_call(c, &(struct lk_request){.verb = LK_VERB_CAMPAIGN, .lock = "x"});
		finish(c, h.fd, default_locks, 3);
	}
	lk_client_free(c);
	if (h.fd >= 0)
		close(h.fd);
	free(first.p);
}

struct step {
	size_t out_off, out_len;   /* agent output before the directive */
	const char *dir;           /* the directive, after "#!", NUL-terminated; NULL: none */
};

static void run_scripted(const uint8_t flags, char *script, size_t len)
{
	struct step steps[MAX_STEPS];
	size_t n_steps = 0, start = 0, i = 0;
	struct buf first = {0}, out = {0};
	struct helper h = {.first = &first, .eof = false, .fd = -1};
	struct lk_client_opts opts = {.socket_path = sock_path, .timeout_ms = 2000,
	                              .client_name = "fuzz",
	                              .auth_key_file = flags & 0x08 ? key_path : NULL};
	const char *locks[MAX_STEPS + 3];
	size_t n_locks = 0;
	struct lk_client *c = NULL;
	pthread_t th;
	char banner[LK_LINE_MAX + 1], err[256];
	int r, n;

	/* Cut the script at directive lines ("#!" at the start of a line). */
	while (i < len && n_steps < MAX_STEPS) {
		if ((i == 0 || script[i - 1] == '\n') && i + 1 < len && script[i] == '#' &&
		    script[i + 1] == '!') {
			char *nl = memchr(script + i, '\n', len - i);
			size_t end = nl ? (size_t)(nl - script) : len;

			steps[n_steps].out_off = start;
			steps[n_steps].out_len = i - start;
			/* script has room for a NUL at script[len]: see LLVMFuzzerTestOneInput. */
			script[end] = '\0';
			steps[n_steps].dir = script + i + 2;
			n_steps++;
			i = start = end + 1;
			continue;
		}
		i++;
	}
	if (n_steps < MAX_STEPS && start < len) {
		steps[n_steps].out_off = start;
		steps[n_steps].out_len = len - start;
		steps[n_steps].dir = NULL;
		n_steps++;
	}

	/* The handshake: our banner, the output before the first directive, our OK HELLO. */
	n = lk_codec_format_banner(banner, sizeof(banner), "fuzz-agent", NONCE, flags & 0x08,
	                           mono_ms());
	CHECK(n > 0);
	buf_add(&first, banner, (size_t)n);
	if (n_steps > 0)
		add_output(&first, script + steps[0].out_off, steps[0].out_len, true);
	/* On a line of its own, so that the handshake always ends at once: glued to a partial
	 * line it could make a line the client skips (an unknown event) and waits on. */
	if (first.len > 0 && first.p[first.len - 1] != '\n')
		buf_add(&first, "\n", 1);
	buf_add(&first, "OK HELLO\n", 9);

	if (pthread_create(&th, NULL, helper_main, &h) != 0)
		abort();
	r = lk_client_connect(&opts, &c, err, sizeof(err));
	pthread_join(th, NULL);
	if (r < 0 || h.fd < 0)
		goto out;

	for (size_t s = 0; s < n_steps; s++) {
		const char *d = steps[s].dir;

		if (s > 0) {
			out.len = 0;
			add_output(&out, script + steps[s].out_off, steps[s].out_len, true);
			agent_write(h.fd, &out);
		}
		agent_drain(h.fd);
		if (!d)
			continue;
		if (strncmp(d, "call ", 5) == 0) {
			/* The request as the codec parses it: the line is split in place, and the
			 * directive's own bytes hold the strings the request borrows. */
			struct lk_request req;
			char *line = (char *)d + 5;

			if (lk_codec_parse_request(line, strlen(line), &req, NULL) == LK_ERR_NONE)
				do_call(c, &req);
		} else if (strcmp(d, "next") == 0) {
			do_next(c);
		} else if (strncmp(d, "leads ", 6) == 0) {
			locks[n_locks++] = d + 6;
			check_state(c, d + 6);
		} else if (strcmp(d, "eof") == 0) {
			shutdown(h.fd, SHUT_WR);
		}
	}
	for (size_t k = 0; k < 3; k++)
		locks[n_locks++] = default_locks[k];
	finish(c, h.fd, locks, n_locks);
out:
	lk_client_free(c);
	if (h.fd >= 0)
		close(h.fd);
	free(first.p);
	free(out.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *script;

	if (size < 1 || size > MAX_SCRIPT)
		return 0;
	/* size - 1 bytes of script and room for a NUL after them. */
	script = malloc(size);
	if (!script)
		return 0;
	memcpy(script, data + 1, size - 1);
	script[size - 1] = '\0';
	if (data[0] & 0x01)
		run_scripted(data[0], script, size - 1);
	else
		run_raw(data[0], script, size - 1);
	free(script);
	return 0;
}

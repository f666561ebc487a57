/* Tests for proto/client against a fake agent.
 *
 * Each test listens on a Unix socket in a fresh temporary directory and forks a child that
 * accepts one connection and plays a script: send these bytes, expect exactly this line,
 * pause, close. The child checks what the client sent and exits non-zero on any surprise,
 * and every test waits for it, so both sides of the conversation are asserted.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/auth.h"
#include "proto/client.h"

/* Computed offline with Python 3 (see tests/check_auth.c):
 *   hmac.new(KEY, bytes.fromhex(NONCE), hashlib.sha512).hexdigest()[:64] */
#define KEY_RAW "leasekeeper-test-key-32-bytes!!!"
#define NONCE   "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define MAC     "ddd566d49d16ac64bc3ee2b7a09fc87bd955f4cf8457a5a4c3ccce35d4d197ff"

#define BANNER_NONE "LEASEKEEPER 1 id=node-a nonce=" NONCE " auth=none\n"
#define BANNER_HMAC "LEASEKEEPER 1 id=node-a nonce=" NONCE " auth=hmac\n"
#define HELLO_OK    "OK HELLO 1 agent=test id=node-a\n"

enum op {
	OP_END,
	OP_SEND,        /* write s */
	OP_EXPECT,      /* read one line, which must equal s */
	OP_EXPECT_PFX,  /* read one line, which must start with s */
	OP_SLEEP,       /* pause ms */
	OP_CLOSE,       /* close the connection and exit 0 */
	OP_WAIT_EOF,    /* read until the client closes, then exit 0 */
};

struct step {
	enum op op;
	const char *s;
	int ms;
};

#define HANDSHAKE {OP_SEND, BANNER_NONE, 0}, {OP_EXPECT, "HELLO 1 client=test", 0}, \
                  {OP_SEND, HELLO_OK, 0}

static char tmpdir[PATH_MAX];
static char sock_path[PATH_MAX + 32];
static int listen_fd = -1;
static pid_t agent_pid = -1;

static void setup(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	unsetenv("LEASEKEEPER_SOCKET");
	unsetenv("LEASEKEEPER_AUTH_KEY_FILE");
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/lk-check-client.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(sock_path, sizeof(sock_path), "%s/agent.sock", tmpdir);
	ck_assert_uint_lt(strlen(sock_path), sizeof(sa.sun_path));
	strcpy(sa.sun_path, sock_path);
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(listen_fd, 0);
	ck_assert_int_eq(bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(listen_fd, 8), 0);
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];

	if (agent_pid > 0) {
		kill(agent_pid, SIGKILL);
		waitpid(agent_pid, NULL, 0);
	}
	close(listen_fd);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* ---- the fake agent ----------------------------------------------------------------------- */

static void agent_die(const char *why, const char *detail)
{
	fprintf(stderr, "fake agent: %s%s%s\n", why, detail ? ": " : "", detail ? detail : "");
	_exit(1);
}

static void agent_read_line(int fd, char *buf, size_t cap)
{
	size_t n = 0;

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		char ch;
		ssize_t r;

		if (poll(&p, 1, 5000) != 1)
			agent_die("timed out waiting for a line", NULL);
		r = read(fd, &ch, 1);
		if (r != 1)
			agent_die("the client closed instead of sending a line", NULL);
		if (ch == '\n')
			break;
		if (n + 1 >= cap)
			agent_die("line too long", NULL);
		buf[n++] = ch;
	}
	buf[n] = '\0';
}

static void agent_run(const struct step *steps)
{
	char line[LK_LINE_MAX * 2];
	int fd;

	alarm(10); /* never outlive a test that failed without reaping us */
	fd = accept(listen_fd, NULL, NULL);
	if (fd < 0)
		agent_die("accept", strerror(errno));
	close(listen_fd);
	for (const struct step *s = steps; ; s++) {
		switch (s->op) {
		case OP_END:
		case OP_CLOSE:
			close(fd);
			_exit(0);
		case OP_SEND: {
			size_t len = strlen(s->s), off = 0;

			while (off < len) {
				ssize_t w = write(fd, s->s + off, len - off);

				if (w <= 0)
					agent_die("write", strerror(errno));
				off += (size_t)w;
			}
			break;
		}
		case OP_EXPECT:
			agent_read_line(fd, line, sizeof(line));
			if (strcmp(line, s->s) != 0) {
				fprintf(stderr, "fake agent: expected \"%s\", got \"%s\"\n", s->s, line);
				_exit(1);
			}
			break;
		case OP_EXPECT_PFX:
			agent_read_line(fd, line, sizeof(line));
			if (strncmp(line, s->s, strlen(s->s)) != 0) {
				fprintf(stderr, "fake agent: expected \"%s...\", got \"%s\"\n", s->s, line);
				_exit(1);
			}
			break;
		case OP_SLEEP:
			poll(NULL, 0, s->ms);
			break;
		case OP_WAIT_EOF: {
			struct pollfd p = {.fd = fd, .events = POLLIN};
			char ch;

			while (poll(&p, 1, 5000) == 1 && read(fd, &ch, 1) == 1)
				;
			close(fd);
			_exit(0);
		}
		}
	}
}

static void agent_start(const struct step *steps)
{
	agent_pid = fork();
	ck_assert_int_ge(agent_pid, 0);
	if (agent_pid == 0)
		agent_run(steps);
}

/* Reap the fake agent and require that its script ran to the end. */
static void agent_done(void)
{
	int status;

	ck_assert_int_eq(waitpid(agent_pid, &status, 0), agent_pid);
	agent_pid = -1;
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
	              "fake agent failed (status %d)", status);
}

static int connect_with(const char *key_file, int timeout_ms, struct lk_client **c,
                        char *err, size_t errlen)
{
	struct lk_client_opts o = {.socket_path = sock_path, .client_name = "test",
	                           .auth_key_file = key_file, .timeout_ms = timeout_ms};

	return lk_client_connect(&o, c, err, errlen);
}

static struct lk_client *connect_ok(void)
{
	struct lk_client *c = NULL;
	char err[512] = "";

	ck_assert_msg(connect_with(NULL, 2000, &c, err, sizeof(err)) == 0, "connect: %s", err);
	ck_assert_ptr_nonnull(c);
	return c;
}

static const char *write_key_file(const char *data)
{
	static char path[PATH_MAX + 16];
	FILE *f;

	snprintf(path, sizeof(path), "%s/key", tmpdir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(data, f);
	fclose(f);
	return path;
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const struct lk_request ping = {.verb = LK_VERB_PING};
static const struct lk_request status = {.verb = LK_VERB_STATUS};

/* ---- socket path -------------------------------------------------------------------------- */

START_TEST(socket_path_is_explicit_then_env_then_default)
{
	unsetenv("LEASEKEEPER_SOCKET");
	ck_assert_str_eq(lk_client_socket_path(NULL), "/run/leasekeeper/agent.sock");
	ck_assert_str_eq(lk_client_socket_path(""), "/run/leasekeeper/agent.sock");
	setenv("LEASEKEEPER_SOCKET", "/tmp/env.sock", 1);
	ck_assert_str_eq(lk_client_socket_path(NULL), "/tmp/env.sock");
	ck_assert_str_eq(lk_client_socket_path("/tmp/explicit.sock"), "/tmp/explicit.sock");
	setenv("LEASEKEEPER_SOCKET", "", 1);
	ck_assert_str_eq(lk_client_socket_path(NULL), "/run/leasekeeper/agent.sock");
}
END_TEST

START_TEST(connect_uses_socket_from_environment)
{
	static const struct step s[] = {HANDSHAKE, {OP_WAIT_EOF, NULL, 0}};
	struct lk_client_opts o = {.client_name = "test", .timeout_ms = 2000};
	struct lk_client *c = NULL;
	char err[512] = "";

	setenv("LEASEKEEPER_SOCKET", sock_path, 1);
	agent_start(s);
	ck_assert_msg(lk_client_connect(&o, &c, err, sizeof(err)) == 0, "%s", err);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(connect_to_missing_socket_names_the_path)
{
	struct lk_client_opts o = {.client_name = "test", .timeout_ms = 500};
	struct lk_client *c = (struct lk_client *)0x1;
	char path[PATH_MAX + 32], err[512] = "";

	snprintf(path, sizeof(path), "%s/nobody.sock", tmpdir);
	o.socket_path = path;
	ck_assert_int_eq(lk_client_connect(&o, &c, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_eq(c, (struct lk_client *)0x1);
	ck_assert_ptr_nonnull(strstr(err, path));
}
END_TEST

/* ---- handshake ---------------------------------------------------------------------------- */

START_TEST(handshake_without_auth)
{
	static const struct step s[] = {
		HANDSHAKE,
		{OP_EXPECT, "PING", 0}, {OP_SEND, "OK PONG\n", 0},
		{OP_EXPECT, "QUIT", 0}, {OP_SEND, "OK BYE\n", 0},
		{OP_CLOSE, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_str_eq(lk_client_agent_id(c), "node-a");
	ck_assert_int_ge(lk_client_fd(c), 0);
	ck_assert(!lk_client_has_queued(c));
	ck_assert_int_eq(lk_client_call(c, &ping, 2000, &m), 0);
	ck_assert_int_eq(m.kind, LK_MSG_OK);
	ck_assert_int_eq(m.ok_verb, LK_VERB_PING);
	ck_assert_int_eq(lk_client_call(c, &(struct lk_request){.verb = LK_VERB_QUIT}, 2000, &m), 0);
	ck_assert_int_eq(m.ok_verb, LK_VERB_QUIT);
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), -EPIPE);
	ck_assert_ptr_null(lk_client_free(c));
	ck_assert_ptr_null(lk_client_free(NULL));
	agent_done();
}
END_TEST

START_TEST(handshake_omits_client_name_when_not_given)
{
	static const struct step s[] = {
		{OP_SEND, BANNER_NONE, 0}, {OP_EXPECT, "HELLO 1", 0}, {OP_SEND, HELLO_OK, 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client_opts o = {.socket_path = sock_path};
	struct lk_client *c = NULL;
	char err[512] = "";

	agent_start(s);
	ck_assert_msg(lk_client_connect(&o, &c, err, sizeof(err)) == 0, "%s", err);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(handshake_with_hmac_from_opts)
{
	static const struct step s[] = {
		{OP_SEND, BANNER_HMAC, 0}, {OP_EXPECT, "HELLO 1 client=test mac=" MAC, 0},
		{OP_SEND, HELLO_OK, 0}, {OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c = NULL;
	char err[512] = "";

	agent_start(s);
	ck_assert_msg(connect_with(write_key_file(KEY_RAW), 2000, &c, err, sizeof(err)) == 0,
	              "%s", err);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(handshake_with_hmac_key_from_environment)
{
	static const struct step s[] = {
		{OP_SEND, BANNER_HMAC, 0}, {OP_EXPECT, "HELLO 1 client=test mac=" MAC, 0},
		{OP_SEND, HELLO_OK, 0}, {OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c = NULL;
	char err[512] = "";

	/* The key as hex, the other file format, to cover both through the client. */
	setenv("LEASEKEEPER_AUTH_KEY_FILE",
	       write_key_file("6c656173656b65657065722d746573742d6b65792d33322d627974657321212"
	                      "1\n"), 1);
	agent_start(s);
	ck_assert_msg(connect_with(NULL, 2000, &c, err, sizeof(err)) == 0, "%s", err);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(no_mac_is_sent_when_the_agent_does_not_ask)
{
	static const struct step s[] = {HANDSHAKE, {OP_WAIT_EOF, NULL, 0}};
	struct lk_client *c = NULL;
	char err[512] = "";

	agent_start(s);
	ck_assert_msg(connect_with(write_key_file(KEY_RAW), 2000, &c, err, sizeof(err)) == 0,
	              "%s", err);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(hmac_without_key_tries_and_explains_the_variable)
{
	static const struct step s[] = {
		{OP_SEND, BANNER_HMAC, 0}, {OP_EXPECT, "HELLO 1 client=test", 0},
		{OP_SEND, "ERR auth_failed missing mac\n", 0}, {OP_CLOSE, NULL, 0},
	};
	struct lk_client *c = (struct lk_client *)0x1;
	char err[512] = "";

	agent_start(s);
	ck_assert_int_eq(connect_with(NULL, 2000, &c, err, sizeof(err)), -ECONNREFUSED);
	ck_assert_ptr_eq(c, (struct lk_client *)0x1);
	ck_assert_msg(strstr(err, "LEASEKEEPER_AUTH_KEY_FILE"), "unhelpful message: %s", err);
	agent_done();
}
END_TEST

START_TEST(hmac_with_wrong_key_names_the_key_file)
{
	static const struct step s[] = {
		{OP_SEND, BANNER_HMAC, 0}, {OP_EXPECT_PFX, "HELLO 1 client=test mac=", 0},
		{OP_SEND, "ERR auth_failed wrong mac\n", 0}, {OP_CLOSE, NULL, 0},
	};
	struct lk_client *c = NULL;
	const char *path = write_key_file("another-key-of-exactly-32-bytes!");
	char err[512] = "";

	agent_start(s);
	ck_assert_int_eq(connect_with(path, 2000, &c, err, sizeof(err)), -ECONNREFUSED);
	ck_assert_msg(strstr(err, path), "message does not name the key file: %s", err);
	agent_done();
}
END_TEST

START_TEST(bad_key_file_fails_before_hello)
{
	static const struct step s[] = {{OP_SEND, BANNER_HMAC, 0}, {OP_WAIT_EOF, NULL, 0}};
	struct lk_client *c = NULL;
	const char *path = write_key_file("too short");
	char err[512] = "";

	agent_start(s);
	ck_assert_int_eq(connect_with(path, 2000, &c, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, path));
	agent_done();
}
END_TEST

START_TEST(err_banner_is_connection_refused_with_its_text)
{
	static const struct step s[] = {
		{OP_SEND, "ERR too_many_clients the agent serves 64 clients at most\r\n", 0},
		{OP_CLOSE, NULL, 0},
	};
	struct lk_client *c = NULL;
	char err[512] = "";

	agent_start(s);
	ck_assert_int_eq(connect_with(NULL, 2000, &c, err, sizeof(err)), -ECONNREFUSED);
	ck_assert_ptr_nonnull(strstr(err, "too_many_clients"));
	ck_assert_ptr_nonnull(strstr(err, "64 clients at most"));
	agent_done();
}
END_TEST

START_TEST(other_err_to_hello_is_connection_refused)
{
	static const struct step s[] = {
		{OP_SEND, BANNER_NONE, 0}, {OP_EXPECT, "HELLO 1 client=test", 0},
		{OP_SEND, "ERR unsupported_version speak 1\n", 0}, {OP_CLOSE, NULL, 0},
	};
	struct lk_client *c = NULL;
	char err[512] = "";

	agent_start(s);
	ck_assert_int_eq(connect_with(NULL, 2000, &c, err, sizeof(err)), -ECONNREFUSED);
	ck_assert_ptr_nonnull(strstr(err, "unsupported_version"));
	agent_done();
}
END_TEST

START_TEST(banner_of_another_version_is_refused)
{
	static const struct step s[] = {
		{OP_SEND, "LEASEKEEPER 2 id=node-a nonce=" NONCE " auth=none\n", 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c = NULL;
	char err[512] = "";

	agent_start(s);
	ck_assert_int_eq(connect_with(NULL, 2000, &c, err, sizeof(err)), -EPROTONOSUPPORT);
	agent_done();
}
END_TEST

START_TEST(garbage_instead_of_banner_is_eproto)
{
	static const struct step s[] = {
		{OP_SEND, "HTTP/1.1 400 Bad Request\n", 0}, {OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c = NULL;
	char err[512] = "";

	agent_start(s);
	ck_assert_int_eq(connect_with(NULL, 2000, &c, err, sizeof(err)), -EPROTO);
	agent_done();
}
END_TEST

START_TEST(silent_agent_times_out_the_connect)
{
	static const struct step s[] = {{OP_WAIT_EOF, NULL, 0}};
	struct lk_client *c = NULL;
	char err[512] = "";
	int64_t t0;

	agent_start(s);
	t0 = mono_ms();
	ck_assert_int_eq(connect_with(NULL, 150, &c, err, sizeof(err)), -ETIMEDOUT);
	ck_assert_int_ge(mono_ms() - t0, 140);
	ck_assert_int_lt(mono_ms() - t0, 2000);
	ck_assert_ptr_nonnull(strstr(err, "banner"));
	agent_done();
}
END_TEST

START_TEST(unanswered_hello_times_out_the_connect)
{
	static const struct step s[] = {
		{OP_SEND, BANNER_NONE, 0}, {OP_EXPECT, "HELLO 1 client=test", 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c = NULL;
	char err[512] = "";

	agent_start(s);
	ck_assert_int_eq(connect_with(NULL, 150, &c, err, sizeof(err)), -ETIMEDOUT);
	ck_assert_ptr_nonnull(strstr(err, "HELLO"));
	agent_done();
}
END_TEST

START_TEST(invalid_client_name_is_einval)
{
	static const struct step s[] = {{OP_SEND, BANNER_NONE, 0}, {OP_WAIT_EOF, NULL, 0}};
	struct lk_client_opts o = {.socket_path = sock_path, .client_name = "two words"};
	struct lk_client *c = NULL;
	char err[512] = "";

	agent_start(s);
	ck_assert_int_eq(lk_client_connect(&o, &c, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "client name"));
	agent_done();
}
END_TEST

/* ---- requests and events ------------------------------------------------------------------ */

START_TEST(events_before_a_reply_are_queued_and_returned_in_order)
{
	static const struct step s[] = {
		HANDSHAKE,
		{OP_EXPECT, "STATUS", 0},
		{OP_SEND, "LEADER a token=5 ttl_ms=1000\nFOLLOWER b holder=-\r\n"
		          "OK STATUS {\"locks\": [1, 2]}\nSTOP deadline_ms=10\n", 0},
		{OP_SLEEP, NULL, 100},
		{OP_SEND, "DRAINED released=1 expired=0 failed=0 elapsed_ms=9\n", 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_call(c, &status, 2000, &m), 0);
	ck_assert_int_eq(m.kind, LK_MSG_OK);
	ck_assert_int_eq(m.ok_verb, LK_VERB_STATUS);
	ck_assert_str_eq(m.rest, "{\"locks\": [1, 2]}");

	ck_assert(lk_client_has_queued(c));
	ck_assert_int_eq(lk_client_next_event(c, 0, &m), 0);
	ck_assert_int_eq(m.kind, LK_MSG_EVENT);
	ck_assert_int_eq(m.ev.kind, LK_EV_LEADER);
	ck_assert_str_eq(m.ev.lock, "a");
	ck_assert_uint_eq(m.ev.token, 5);
	ck_assert_int_eq(m.ev.ttl_ms, 1000);

	ck_assert(lk_client_has_queued(c));
	ck_assert_int_eq(lk_client_next_event(c, 0, &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_FOLLOWER);
	ck_assert_str_eq(m.ev.lock, "b");
	ck_assert_str_eq(m.ev.holder, "-");

	/* Read along with the reply but never queued: still reported as pending, since the
	 * socket will not poll readable for it. */
	ck_assert(lk_client_has_queued(c));
	ck_assert_int_eq(lk_client_next_event(c, 0, &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_STOP);
	ck_assert_int_eq(m.ev.deadline_ms, 10);

	ck_assert(!lk_client_has_queued(c));
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_DRAINED);
	ck_assert_uint_eq(m.ev.released, 1);
	ck_assert_int_eq(lk_client_next_event(c, 50, &m), -ETIMEDOUT);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(err_reply_is_returned_as_a_reply)
{
	static const struct step s[] = {
		HANDSHAKE,
		{OP_EXPECT, "CAMPAIGN nope", 0},
		{OP_SEND, "ERR unknown_lock no lock named nope\n", 0},
		{OP_EXPECT, "ACK a 7", 0}, {OP_SEND, "OK ACK a\n", 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_call(c, &(struct lk_request){.verb = LK_VERB_CAMPAIGN,
	                                                        .lock = "nope"}, 2000, &m), 0);
	ck_assert_int_eq(m.kind, LK_MSG_ERR);
	ck_assert_int_eq(m.err, LK_ERR_UNKNOWN_LOCK);
	ck_assert_str_eq(m.err_text, "no lock named nope");
	ck_assert_int_eq(lk_client_call(c, &(struct lk_request){.verb = LK_VERB_ACK, .lock = "a",
	                                                        .token = 7}, 2000, &m), 0);
	ck_assert_int_eq(m.kind, LK_MSG_OK);
	ck_assert_int_eq(m.ok_verb, LK_VERB_ACK);
	ck_assert_str_eq(m.rest, "a");
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(unsendable_request_is_einval_and_sends_nothing)
{
	static const struct step s[] = {
		HANDSHAKE, {OP_EXPECT, "PING", 0}, {OP_SEND, "OK PONG\n", 0}, {OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_call(c, &(struct lk_request){.verb = LK_VERB_CAMPAIGN,
	                                                        .lock = "a b"}, 2000, &m), -EINVAL);
	ck_assert_int_eq(lk_client_call(c, &ping, 2000, &m), 0);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(eof_is_epipe)
{
	static const struct step s[] = {HANDSHAKE, {OP_CLOSE, NULL, 0}};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), -EPIPE);
	/* Once gone, always gone. */
	ck_assert_int_eq(lk_client_next_event(c, 0, &m), -EPIPE);
	ck_assert_int_eq(lk_client_call(c, &ping, 2000, &m), -EPIPE);
	ck_assert(lk_client_has_queued(c));
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(eof_in_the_middle_of_a_line_is_epipe)
{
	static const struct step s[] = {HANDSHAKE, {OP_SEND, "LEADER a tok", 0}, {OP_CLOSE, NULL, 0}};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), -EPIPE);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(sending_to_a_closed_agent_is_epipe_not_sigpipe)
{
	static const struct step s[] = {HANDSHAKE, {OP_CLOSE, NULL, 0}};
	struct lk_client *c;
	struct lk_server_msg m;

	/* SIGPIPE keeps its default action: if the client let it fire, this test would die. */
	signal(SIGPIPE, SIG_DFL);
	agent_start(s);
	c = connect_ok();
	agent_done(); /* the agent's end is closed for sure from here on */
	ck_assert_int_eq(lk_client_call(c, &ping, 2000, &m), -EPIPE);
	lk_client_free(c);
}
END_TEST

START_TEST(events_queued_before_eof_are_still_delivered)
{
	static const struct step s[] = {
		HANDSHAKE, {OP_EXPECT, "PING", 0},
		{OP_SEND, "LOST a token=3 reason=taken\n", 0}, {OP_CLOSE, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_call(c, &ping, 2000, &m), -EPIPE);
	ck_assert_int_eq(lk_client_next_event(c, 0, &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_LOST);
	ck_assert_int_eq(m.ev.reason, LK_LOST_TAKEN);
	ck_assert_int_eq(lk_client_next_event(c, 0, &m), -EPIPE);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(call_times_out_and_its_late_reply_is_skipped)
{
	static const struct step s[] = {
		HANDSHAKE,
		{OP_EXPECT, "PING", 0},
		{OP_EXPECT, "STATUS", 0},
		{OP_SEND, "OK PONG\nOK STATUS late\n", 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;
	int64_t t0;

	agent_start(s);
	c = connect_ok();
	t0 = mono_ms();
	ck_assert_int_eq(lk_client_call(c, &ping, 150, &m), -ETIMEDOUT);
	ck_assert_int_ge(mono_ms() - t0, 140);
	ck_assert_int_lt(mono_ms() - t0, 2000);
	ck_assert_int_eq(lk_client_call(c, &status, 2000, &m), 0);
	ck_assert_int_eq(m.ok_verb, LK_VERB_STATUS);
	ck_assert_str_eq(m.rest, "late");
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(next_event_times_out)
{
	static const struct step s[] = {HANDSHAKE, {OP_WAIT_EOF, NULL, 0}};
	struct lk_client *c;
	struct lk_server_msg m;
	int64_t t0;

	agent_start(s);
	c = connect_ok();
	t0 = mono_ms();
	ck_assert_int_eq(lk_client_next_event(c, 120, &m), -ETIMEDOUT);
	ck_assert_int_ge(mono_ms() - t0, 110);
	ck_assert_int_eq(lk_client_next_event(c, 0, &m), -ETIMEDOUT);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(reply_for_another_verb_is_eproto)
{
	static const struct step s[] = {
		HANDSHAKE, {OP_EXPECT, "PING", 0}, {OP_SEND, "OK STATUS {}\n", 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_call(c, &ping, 2000, &m), -EPROTO);
	ck_assert_int_eq(lk_client_call(c, &ping, 2000, &m), -EPROTO);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(unsolicited_reply_or_garbage_is_eproto)
{
	static const struct step s[] = {HANDSHAKE, {OP_SEND, "OK PONG\n", 0}, {OP_WAIT_EOF, NULL, 0}};
	static const struct step s2[] = {HANDSHAKE, {OP_SEND, "LEADER a\n", 0},
	                                 {OP_WAIT_EOF, NULL, 0}};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), -EPROTO);
	lk_client_free(c);
	agent_done();

	agent_start(s2);
	c = connect_ok();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), -EPROTO);
	lk_client_free(c);
	agent_done();
}
END_TEST

/* Builds "OK STATUS " + padding + "\n", total bytes with the newline. */
static char *status_line(size_t total)
{
	static char buf[LK_LINE_MAX * 2];
	const char *p = "OK STATUS ";

	ck_assert_uint_lt(total, sizeof(buf));
	memcpy(buf, p, strlen(p));
	memset(buf + strlen(p), 'x', total - 1 - strlen(p));
	buf[total - 1] = '\n';
	buf[total] = '\0';
	return buf;
}

START_TEST(line_of_exactly_line_max_is_accepted)
{
	struct step s[] = {
		HANDSHAKE, {OP_EXPECT, "STATUS", 0}, {OP_SEND, status_line(LK_LINE_MAX), 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_call(c, &status, 2000, &m), 0);
	ck_assert_uint_eq(strlen(m.rest), LK_LINE_MAX - 1 - strlen("OK STATUS "));
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(line_one_byte_over_line_max_is_eproto)
{
	struct step s[] = {
		HANDSHAKE, {OP_EXPECT, "STATUS", 0}, {OP_SEND, status_line(LK_LINE_MAX + 1), 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_call(c, &status, 2000, &m), -EPROTO);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(endless_line_is_eproto)
{
	static char junk[5000 + 1];
	struct step s[] = {HANDSHAKE, {OP_SEND, junk, 0}, {OP_WAIT_EOF, NULL, 0}};
	struct lk_client *c;
	struct lk_server_msg m;

	memset(junk, 'A', sizeof(junk) - 1);
	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), -EPROTO);
	lk_client_free(c);
	agent_done();
}
END_TEST

/* n STOP events and then "OK PONG", in one string. */
static char *many_events(size_t n)
{
	static const char ev[] = "STOP deadline_ms=1\n";
	static char buf[(LK_CLIENT_MAX_QUEUED + 1) * (sizeof(ev) - 1) + sizeof("OK PONG\n")];
	size_t len = n * (sizeof(ev) - 1);

	ck_assert_uint_le(len + sizeof("OK PONG\n"), sizeof(buf));
	for (size_t i = 0; i < n; i++)
		memcpy(buf + i * (sizeof(ev) - 1), ev, sizeof(ev) - 1);
	memcpy(buf + len, "OK PONG\n", sizeof("OK PONG\n"));
	return buf;
}

START_TEST(queue_holds_max_queued_events)
{
	struct step s[] = {
		HANDSHAKE, {OP_EXPECT, "PING", 0}, {OP_SEND, many_events(LK_CLIENT_MAX_QUEUED), 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_call(c, &ping, 5000, &m), 0);
	for (int i = 0; i < LK_CLIENT_MAX_QUEUED; i++) {
		ck_assert(lk_client_has_queued(c));
		ck_assert_int_eq(lk_client_next_event(c, 0, &m), 0);
		ck_assert_int_eq(m.ev.kind, LK_EV_STOP);
	}
	ck_assert(!lk_client_has_queued(c));
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(queue_overflow_is_eproto)
{
	struct step s[] = {
		HANDSHAKE, {OP_EXPECT, "PING", 0},
		{OP_SEND, many_events(LK_CLIENT_MAX_QUEUED + 1), 0}, {OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_call(c, &ping, 5000, &m), -EPROTO);
	/* What was queued is still handed out, then the error. */
	for (int i = 0; i < LK_CLIENT_MAX_QUEUED; i++)
		ck_assert_int_eq(lk_client_next_event(c, 0, &m), 0);
	ck_assert_int_eq(lk_client_next_event(c, 0, &m), -EPROTO);
	lk_client_free(c);
	agent_done();
}
END_TEST

/* ---- the deadline rule (I8) ---------------------------------------------------------------- */

static char dl_banner[256], dl_leader[128], dl_renewed[128], dl_renewed_other[128];

/* A banner whose mono_ms is ours plus skew_ms, and LEADER / RENEWED lines whose deadlines are
 * our now plus the given offsets. */
static void deadline_lines(int64_t skew_ms, int64_t leader_in, int64_t renewed_in)
{
	int64_t now = mono_ms();

	snprintf(dl_banner, sizeof(dl_banner), "LEASEKEEPER 1 id=node-a nonce=" NONCE
	         " auth=none mono_ms=%lld\n", (long long)(now + skew_ms));
	snprintf(dl_leader, sizeof(dl_leader), "LEADER a token=5 ttl_ms=600 until_mono_ms=%lld\n",
	         (long long)(now + leader_in));
	snprintf(dl_renewed, sizeof(dl_renewed), "RENEWED a token=5 ttl_ms=600 until_mono_ms=%lld\n",
	         (long long)(now + renewed_in));
	snprintf(dl_renewed_other, sizeof(dl_renewed_other),
	         "RENEWED a token=4 ttl_ms=600 until_mono_ms=%lld\n", (long long)(now + 100000));
}

#define DL_HANDSHAKE {OP_SEND, dl_banner, 0}, {OP_EXPECT, "HELLO 1 client=test", 0}, \
                     {OP_SEND, HELLO_OK, 0}

START_TEST(leadership_ends_at_the_deadline_while_the_agent_is_silent)
{
	struct step s[] = {DL_HANDSHAKE, {OP_SEND, dl_leader, 0}, {OP_WAIT_EOF, NULL, 0}};
	struct lk_client *c;
	struct lk_server_msg m;
	int64_t until;
	int left;

	deadline_lines(0, 400, 0);
	agent_start(s);
	c = connect_ok();
	ck_assert(!lk_client_leads(c, "a"));
	ck_assert_int_eq(lk_client_deadline_timeout(c), -1);
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_LEADER);
	ck_assert(lk_client_leads(c, "a"));
	ck_assert(!lk_client_leads(c, "b"));
	until = lk_client_until_mono_ms(c, "a");
	ck_assert_int_eq(until, m.ev.until_mono_ms);
	left = lk_client_deadline_timeout(c);
	ck_assert_int_gt(left, 0);
	ck_assert_int_le(left, 400);
	/* The agent says nothing more: the poll timeout is the deadline, and then it is over. */
	ck_assert_int_eq(lk_client_next_event(c, left, &m), -ETIMEDOUT);
	while (mono_ms() < until)
		poll(NULL, 0, 1);
	ck_assert(!lk_client_leads(c, "a"));
	ck_assert_int_eq(lk_client_until_mono_ms(c, "a"), 0);
	ck_assert_int_eq(lk_client_deadline_timeout(c), -1);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(renewed_moves_the_deadline_of_its_own_tenure_only)
{
	struct step s[] = {
		DL_HANDSHAKE, {OP_SEND, dl_leader, 0}, {OP_SEND, dl_renewed_other, 0},
		{OP_SEND, dl_renewed, 0}, {OP_SEND, "LOST a token=5 reason=taken\n", 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;
	int64_t first;

	deadline_lines(0, 5000, 9000);
	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	first = lk_client_until_mono_ms(c, "a");
	/* Another tenure's RENEWED (a stale line) moves nothing. */
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_RENEWED);
	ck_assert_int_eq(lk_client_until_mono_ms(c, "a"), first);
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	ck_assert_int_eq(lk_client_until_mono_ms(c, "a"), m.ev.until_mono_ms);
	ck_assert_int_gt(lk_client_until_mono_ms(c, "a"), first);
	ck_assert(lk_client_leads(c, "a"));
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_LOST);
	ck_assert(!lk_client_leads(c, "a"));
	lk_client_free(c);
	agent_done();
}
END_TEST

/* A STEPDOWN that arrives while a request waits for its reply ends leader work at once, before
 * the app has taken it from the queue; the deadline keeps bounding what winds down. */
START_TEST(stepdown_queued_behind_a_reply_ends_leadership_on_arrival)
{
	struct step s[] = {
		DL_HANDSHAKE, {OP_SEND, dl_leader, 0}, {OP_EXPECT, "PING", 0},
		{OP_SEND, "STEPDOWN a token=5 deadline_ms=100\n", 0}, {OP_SEND, "OK PONG\n", 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	deadline_lines(0, 5000, 0);
	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	ck_assert(lk_client_leads(c, "a"));
	ck_assert_int_eq(lk_client_call(c, &ping, 2000, &m), 0);
	ck_assert(!lk_client_leads(c, "a"));
	/* The deadline still bounds the work that is winding down. */
	ck_assert_int_gt(lk_client_until_mono_ms(c, "a"), mono_ms());
	ck_assert_int_gt(lk_client_deadline_timeout(c), 0);
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_STEPDOWN);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(another_clock_counts_two_thirds_of_the_ttl_from_arrival)
{
	struct step s[] = {DL_HANDSHAKE, {OP_SEND, dl_leader, 0}, {OP_WAIT_EOF, NULL, 0}};
	struct lk_client *c;
	struct lk_server_msg m;
	int64_t before, after;

	/* The agent's clock is a minute ahead: its until_mono_ms means nothing here. */
	deadline_lines(60000, 60000 + 5000, 0);
	agent_start(s);
	c = connect_ok();
	before = mono_ms();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	after = mono_ms();
	ck_assert_int_ge(lk_client_until_mono_ms(c, "a"), before + 400);
	ck_assert_int_le(lk_client_until_mono_ms(c, "a"), after + 400);
	lk_client_free(c);
	agent_done();
}
END_TEST

/* Found by tests/fuzz/fuzz_client.c: ttl_ms * 2 overflowed for a ttl past INT64_MAX / 2, which
 * is undefined behaviour and in practice a deadline in the past. A huge ttl is the agent's
 * word: the deadline is far away, and the poll timeout saturates at INT_MAX. */
START_TEST(huge_ttl_from_another_clock_does_not_overflow_the_deadline)
{
	struct step s[] = {
		DL_HANDSHAKE, {OP_SEND, "LEADER a token=5 ttl_ms=9223372036854775807\n", 0},
		{OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;
	int64_t before;

	deadline_lines(60000, 0, 0);
	agent_start(s);
	c = connect_ok();
	before = mono_ms();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_LEADER);
	ck_assert(lk_client_leads(c, "a"));
	ck_assert_int_ge(lk_client_until_mono_ms(c, "a"), before + INT64_MAX / 3 * 2);
	ck_assert_int_eq(lk_client_deadline_timeout(c), INT_MAX);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(eof_ends_leadership)
{
	struct step s[] = {DL_HANDSHAKE, {OP_SEND, dl_leader, 0}, {OP_CLOSE, NULL, 0}};
	struct lk_client *c;
	struct lk_server_msg m;

	deadline_lines(0, 5000, 0);
	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), -EPIPE);
	ck_assert(!lk_client_leads(c, "a"));
	ck_assert_int_eq(lk_client_deadline_timeout(c), -1);
	lk_client_free(c);
	agent_done();
}
END_TEST

START_TEST(unknown_event_verbs_are_skipped)
{
	static const struct step s[] = {
		HANDSHAKE, {OP_SEND, "SOMEDAY a token=1 new=yes\n", 0},
		{OP_SEND, "FOLLOWER a holder=-\n", 0}, {OP_WAIT_EOF, NULL, 0},
	};
	struct lk_client *c;
	struct lk_server_msg m;

	agent_start(s);
	c = connect_ok();
	ck_assert_int_eq(lk_client_next_event(c, 2000, &m), 0);
	ck_assert_int_eq(m.ev.kind, LK_EV_FOLLOWER);
	lk_client_free(c);
	agent_done();
}
END_TEST

static Suite *client_suite(void)
{
	Suite *s = suite_create("client");
	TCase *t;

	t = tcase_create("connect");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 20);
	tcase_add_test(t, socket_path_is_explicit_then_env_then_default);
	tcase_add_test(t, connect_uses_socket_from_environment);
	tcase_add_test(t, connect_to_missing_socket_names_the_path);
	tcase_add_test(t, handshake_without_auth);
	tcase_add_test(t, handshake_omits_client_name_when_not_given);
	tcase_add_test(t, handshake_with_hmac_from_opts);
	tcase_add_test(t, handshake_with_hmac_key_from_environment);
	tcase_add_test(t, no_mac_is_sent_when_the_agent_does_not_ask);
	tcase_add_test(t, hmac_without_key_tries_and_explains_the_variable);
	tcase_add_test(t, hmac_with_wrong_key_names_the_key_file);
	tcase_add_test(t, bad_key_file_fails_before_hello);
	tcase_add_test(t, err_banner_is_connection_refused_with_its_text);
	tcase_add_test(t, other_err_to_hello_is_connection_refused);
	tcase_add_test(t, banner_of_another_version_is_refused);
	tcase_add_test(t, garbage_instead_of_banner_is_eproto);
	tcase_add_test(t, silent_agent_times_out_the_connect);
	tcase_add_test(t, unanswered_hello_times_out_the_connect);
	tcase_add_test(t, invalid_client_name_is_einval);
	suite_add_tcase(s, t);

	t = tcase_create("session");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 20);
	tcase_add_test(t, events_before_a_reply_are_queued_and_returned_in_order);
	tcase_add_test(t, err_reply_is_returned_as_a_reply);
	tcase_add_test(t, unsendable_request_is_einval_and_sends_nothing);
	tcase_add_test(t, eof_is_epipe);
	tcase_add_test(t, eof_in_the_middle_of_a_line_is_epipe);
	tcase_add_test(t, sending_to_a_closed_agent_is_epipe_not_sigpipe);
	tcase_add_test(t, events_queued_before_eof_are_still_delivered);
	tcase_add_test(t, call_times_out_and_its_late_reply_is_skipped);
	tcase_add_test(t, next_event_times_out);
	tcase_add_test(t, reply_for_another_verb_is_eproto);
	tcase_add_test(t, unsolicited_reply_or_garbage_is_eproto);
	tcase_add_test(t, line_of_exactly_line_max_is_accepted);
	tcase_add_test(t, line_one_byte_over_line_max_is_eproto);
	tcase_add_test(t, endless_line_is_eproto);
	tcase_add_test(t, queue_holds_max_queued_events);
	tcase_add_test(t, queue_overflow_is_eproto);
	suite_add_tcase(s, t);

	t = tcase_create("deadline");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_set_timeout(t, 20);
	tcase_add_test(t, leadership_ends_at_the_deadline_while_the_agent_is_silent);
	tcase_add_test(t, renewed_moves_the_deadline_of_its_own_tenure_only);
	tcase_add_test(t, stepdown_queued_behind_a_reply_ends_leadership_on_arrival);
	tcase_add_test(t, another_clock_counts_two_thirds_of_the_ttl_from_arrival);
	tcase_add_test(t, huge_ttl_from_another_clock_does_not_overflow_the_deadline);
	tcase_add_test(t, eof_ends_leadership);
	tcase_add_test(t, unknown_event_verbs_are_skipped);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(client_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

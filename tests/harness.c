/* Private servers for tests (see harness.h). Blocking and sleeping are fine here: this runs in
 * test processes only, never in the agent's loop. */
#include "tests/harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define LK_TEST_START_TRIES     5     /* fresh ports to try when one turns out to be taken */
#define LK_TEST_READY_MS        10000 /* a server that is not answering by then is broken */
#define LK_TEST_STOP_MS         5000  /* SIGTERM grace before SIGKILL */
#define LK_TEST_MAX_SERVERS     16    /* tracked for the atexit cleanup */
#define LK_TEST_CLIENT_TIMEOUT_MS 2000
#define LK_TEST_DIR_PARENT      "/tmp"
#define LK_TEST_DIR_PREFIX      "lk-test."  /* then "<owner pid>.XXXXXX" */

/* Servers this process started and has not stopped, for the atexit safety net. */
static struct {
	pid_t owner;                      /* the process that started it (Check forks) */
	pid_t pid;
	char dir[256];
} lk_test_running[LK_TEST_MAX_SERVERS];
static bool lk_test_atexit_set;

static void lk_test_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static long long lk_test_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void lk_test_rmdir(const char *dir)
{
	char path[600];
	struct dirent *de;
	DIR *d;

	if (!dir[0])
		return;
	d = opendir(dir);
	if (d) {
		while ((de = readdir(d))) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
			unlink(path);
		}
		closedir(d);
	}
	rmdir(dir);
}

/* Stop a process for good: SIGTERM (with SIGCONT, in case it is frozen), then SIGKILL. */
static void lk_test_kill(pid_t pid)
{
	long long until = lk_test_now_ms() + LK_TEST_STOP_MS;
	int status;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	kill(pid, SIGCONT);
	while (lk_test_now_ms() < until) {
		pid_t got = waitpid(pid, &status, WNOHANG);

		if (got == pid || (got < 0 && errno == ECHILD))
			return;
		lk_test_sleep_ms(10);
	}
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
}

static void lk_test_atexit(void)
{
	pid_t self = getpid();

	for (int i = 0; i < LK_TEST_MAX_SERVERS; i++) {
		if (lk_test_running[i].owner != self || !lk_test_running[i].pid)
			continue;
		lk_test_kill(lk_test_running[i].pid);
		lk_test_rmdir(lk_test_running[i].dir);
		lk_test_running[i].pid = 0;
	}
}

/* Check ends a failed test with _exit(), which skips both the teardown fixture and atexit():
 * the server still dies (PR_SET_PDEATHSIG) but its directory stays. Directories are named
 * after the process that made them, so any later start can sweep those whose owner is gone. */
static void lk_test_sweep_stale(void)
{
	char path[300];
	struct dirent *de;
	DIR *d = opendir(LK_TEST_DIR_PARENT);
	long pid;
	int n;

	if (!d)
		return;
	while ((de = readdir(d))) {
		n = 0;
		if (sscanf(de->d_name, LK_TEST_DIR_PREFIX "%ld.%*6c%n", &pid, &n) != 1 ||
		    n == 0 || de->d_name[n] != '\0' || pid <= 0)
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		snprintf(path, sizeof(path), "%s/%s", LK_TEST_DIR_PARENT, de->d_name);
		lk_test_rmdir(path);
	}
	closedir(d);
}

static void lk_test_track(const struct lk_test_server *s)
{
	if (!lk_test_atexit_set) {
		atexit(lk_test_atexit);
		lk_test_atexit_set = true;
	}
	for (int i = 0; i < LK_TEST_MAX_SERVERS; i++) {
		if (!lk_test_running[i].pid || lk_test_running[i].owner != getpid()) {
			lk_test_running[i].owner = getpid();
			lk_test_running[i].pid = s->pid;
			snprintf(lk_test_running[i].dir, sizeof(lk_test_running[i].dir), "%s", s->dir);
			return;
		}
	}
}

static void lk_test_untrack(pid_t pid)
{
	for (int i = 0; i < LK_TEST_MAX_SERVERS; i++)
		if (lk_test_running[i].pid == pid && lk_test_running[i].owner == getpid())
			lk_test_running[i].pid = 0;
}

/* A port nobody listens on right now: bind port 0 and give it back. Another process may take
 * it before the server binds it; the caller retries with a new one then. */
static int lk_test_free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd, port = -1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
		port = ntohs(sin.sin_port);
	close(fd);
	return port > 0 ? port : -EADDRNOTAVAIL;
}

static redisContext *lk_test_redis_connect(const struct lk_test_server *s)
{
	struct timeval tv = { LK_TEST_CLIENT_TIMEOUT_MS / 1000, (LK_TEST_CLIENT_TIMEOUT_MS % 1000) * 1000 };
	redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
	redisReply *rep;

	if (!c || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	if (s->password[0]) {
		rep = redisCommand(c, "AUTH %s", s->password);
		if (!rep || rep->type == REDIS_REPLY_ERROR) {
			if (rep)
				freeReplyObject(rep);
			redisFree(c);
			return NULL;
		}
		freeReplyObject(rep);
	}
	return c;
}

static bool lk_test_redis_pings(const struct lk_test_server *s)
{
	redisContext *c = lk_test_redis_connect(s);
	redisReply *rep;
	bool ok;

	if (!c)
		return false;
	rep = redisCommand(c, "PING");
	ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
	if (rep)
		freeReplyObject(rep);
	redisFree(c);
	return ok;
}

/* Fork and exec the server on s->port; wait until it answers. -EADDRINUSE if it died early
 * (most likely the port was taken meanwhile). */
static int lk_test_redis_spawn(struct lk_test_server *s)
{
	char port[16], logfile[300];
	const char *argv[32 + LK_TEST_MAX_ARGS];
	long long until;
	pid_t parent = getpid(), pid;
	int argc = 0, status;

	snprintf(port, sizeof(port), "%d", s->port);
	snprintf(logfile, sizeof(logfile), "%s/redis.log", s->dir);
	argv[argc++] = "redis-server";
	argv[argc++] = "--port";
	argv[argc++] = port;
	argv[argc++] = "--bind";
	argv[argc++] = "127.0.0.1";
	argv[argc++] = "--save";
	argv[argc++] = "";
	argv[argc++] = "--appendonly";
	argv[argc++] = "no";
	argv[argc++] = "--daemonize";
	argv[argc++] = "no";
	argv[argc++] = "--dir";
	argv[argc++] = s->dir;
	argv[argc++] = "--logfile";
	argv[argc++] = logfile;
	argv[argc++] = "--unixsocket";
	argv[argc++] = s->unix_path;
	argv[argc++] = "--unixsocketperm";
	argv[argc++] = "700";
	for (int i = 0; i < s->n_args; i++)
		argv[argc++] = s->args[i];
	argv[argc] = NULL;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);

		/* Die with the test process, however it ends. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (devnull >= 0) {
			dup2(devnull, 0);
			dup2(devnull, 1);
		}
		execvp("redis-server", (char *const *)argv);
		_exit(127);
	}
	s->pid = pid;
	lk_test_track(s);

	until = lk_test_now_ms() + LK_TEST_READY_MS;
	while (lk_test_now_ms() < until) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			lk_test_untrack(pid);
			s->pid = 0;
			return -EADDRINUSE;
		}
		if (lk_test_redis_pings(s))
			return 0;
		lk_test_sleep_ms(20);
	}
	lk_test_kill(pid);
	lk_test_untrack(pid);
	s->pid = 0;
	return -ETIMEDOUT;
}

static void lk_test_free_args(struct lk_test_server *s)
{
	for (int i = 0; i < s->n_args; i++)
		free(s->args[i]);
	s->n_args = 0;
}

int lk_test_redis_start(struct lk_test_server *s, const char *const *extra_args)
{
	int rc = -EADDRINUSE;

	memset(s, 0, sizeof(*s));
	s->kind = LK_TEST_SERVER_REDIS;
	lk_test_sweep_stale();
	snprintf(s->dir, sizeof(s->dir), LK_TEST_DIR_PARENT "/" LK_TEST_DIR_PREFIX "%ld.XXXXXX",
	         (long)getpid());
	if (!mkdtemp(s->dir)) {
		rc = -errno;
		s->dir[0] = '\0';
		return rc;
	}
	snprintf(s->unix_path, sizeof(s->unix_path), "%s/redis.sock", s->dir);
	for (int i = 0; extra_args && extra_args[i]; i++) {
		if (s->n_args == LK_TEST_MAX_ARGS) {
			rc = -E2BIG;
			goto fail;
		}
		s->args[s->n_args] = strdup(extra_args[i]);
		if (!s->args[s->n_args]) {
			rc = -ENOMEM;
			goto fail;
		}
		s->n_args++;
		if (strcmp(extra_args[i], "--requirepass") == 0 && extra_args[i + 1])
			snprintf(s->password, sizeof(s->password), "%s", extra_args[i + 1]);
	}

	for (int tries = 0; tries < LK_TEST_START_TRIES && rc == -EADDRINUSE; tries++) {
		s->port = lk_test_free_port();
		if (s->port < 0) {
			rc = s->port;
			goto fail;
		}
		rc = lk_test_redis_spawn(s);
	}
	if (rc < 0)
		goto fail;
	snprintf(s->address, sizeof(s->address), "127.0.0.1:%d", s->port);
	return 0;

fail:
	lk_test_server_stop(s);
	return rc;
}

void lk_test_server_stop(struct lk_test_server *s)
{
	if (!s)
		return;
	if (s->pid > 0) {
		lk_test_kill(s->pid);
		lk_test_untrack(s->pid);
		s->pid = 0;
	}
	lk_test_rmdir(s->dir);
	s->dir[0] = '\0';
	lk_test_free_args(s);
}

int lk_test_server_restart(struct lk_test_server *s)
{
	long long until = lk_test_now_ms() + LK_TEST_READY_MS;
	int rc;

	if (s->pid > 0) {
		lk_test_kill(s->pid);
		lk_test_untrack(s->pid);
		s->pid = 0;
	}
	/* Same port on purpose: clients reconnect to where they were. Redis binds with
	 * SO_REUSEADDR, so only a stranger taking the port in between can make this fail. */
	do {
		rc = lk_test_redis_spawn(s);
		if (rc != -EADDRINUSE)
			break;
		lk_test_sleep_ms(50);
	} while (lk_test_now_ms() < until);
	return rc;
}

int lk_test_server_sigstop(struct lk_test_server *s)
{
	return s->pid > 0 && kill(s->pid, SIGSTOP) == 0 ? 0 : -ESRCH;
}

int lk_test_server_sigcont(struct lk_test_server *s)
{
	return s->pid > 0 && kill(s->pid, SIGCONT) == 0 ? 0 : -ESRCH;
}

int lk_test_server_write_file(const struct lk_test_server *s, const char *name,
                              const char *content, char *path, size_t pathcap)
{
	size_t len = strlen(content);
	int fd, rc = 0;

	if ((size_t)snprintf(path, pathcap, "%s/%s", s->dir, name) >= pathcap)
		return -ENAMETOOLONG;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write(fd, content, len) != (ssize_t)len)
		rc = -EIO;
	close(fd);
	return rc;
}

static redisReply *lk_test_redis_vcommand(const struct lk_test_server *s, const char *fmt,
                                          va_list ap)
{
	redisContext *c = lk_test_redis_connect(s);
	redisReply *rep;

	if (!c)
		return NULL;
	rep = redisvCommand(c, fmt, ap);
	redisFree(c);
	return rep;
}

redisReply *lk_test_redis_command(const struct lk_test_server *s, const char *fmt, ...)
{
	redisReply *rep;
	va_list ap;

	va_start(ap, fmt);
	rep = lk_test_redis_vcommand(s, fmt, ap);
	va_end(ap);
	return rep;
}

bool lk_test_redis_ok(const struct lk_test_server *s, const char *fmt, ...)
{
	redisReply *rep;
	va_list ap;
	bool ok;

	va_start(ap, fmt);
	rep = lk_test_redis_vcommand(s, fmt, ap);
	va_end(ap);
	ok = rep && rep->type != REDIS_REPLY_ERROR;
	if (rep)
		freeReplyObject(rep);
	return ok;
}

char *lk_test_redis_get(const struct lk_test_server *s, const char *key)
{
	redisReply *rep = lk_test_redis_command(s, "GET %s", key);
	char *v = NULL;

	if (rep && rep->type == REDIS_REPLY_STRING)
		v = strndup(rep->str, rep->len);
	if (rep)
		freeReplyObject(rep);
	return v;
}

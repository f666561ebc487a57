/* Private servers for tests, and the backend test kit (see harness.h). Blocking and sleeping
 * are fine here: this runs in test processes only, never in the agent's loop. */
#include "tests/harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
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

#include <check.h>
#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>

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

static int lk_test_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)remove(path);
	return 0;
}

/* Remove a directory and everything under it (etcd's data directory has subdirectories). */
static void lk_test_rmdir(const char *dir)
{
	if (!dir[0])
		return;
	(void)nftw(dir, lk_test_rm_one, 16, FTW_DEPTH | FTW_PHYS);
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

static int lk_test_etcd_spawn(struct lk_test_server *s);
static int lk_test_etcd_wait(struct lk_test_server *s, long long until);

int lk_test_server_restart(struct lk_test_server *s)
{
	long long until = lk_test_now_ms() + LK_TEST_READY_MS;
	int rc;

	if (s->pid > 0) {
		lk_test_kill(s->pid);
		lk_test_untrack(s->pid);
		s->pid = 0;
	}
	/* Same port on purpose: clients reconnect to where they were. Both servers bind with
	 * SO_REUSEADDR, so only a stranger taking the port in between can make this fail. */
	do {
		if (s->kind == LK_TEST_SERVER_ETCD) {
			rc = lk_test_etcd_spawn(s);
			if (rc == 0)
				rc = lk_test_etcd_wait(s, until);
		} else {
			rc = lk_test_redis_spawn(s);
		}
		if (rc != -EADDRINUSE)
			break;
		lk_test_sleep_ms(50);
	} while (lk_test_now_ms() < until);
	return rc;
}

int lk_test_server_kill(struct lk_test_server *s)
{
	int status;

	if (s->pid <= 0)
		return -ESRCH;
	kill(s->pid, SIGKILL);
	while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
		;
	lk_test_untrack(s->pid);
	s->pid = 0;
	return 0;
}

/* Whether /proc says pid is stopped ("T" in its stat line, after the command's ")"). */
static bool lk_test_stopped(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] == 'T';
}

/* kill() only queues SIGSTOP: a server on another core may still answer a request sent right
 * after it returns. Frozen means stopped, so wait (a second at most) until it is. */
int lk_test_server_sigstop(struct lk_test_server *s)
{
	if (s->pid <= 0 || kill(s->pid, SIGSTOP) != 0)
		return -ESRCH;
	for (int i = 0; i < 1000 && !lk_test_stopped(s->pid); i++)
		usleep(1000);
	return 0;
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

/* ---- etcd ----------------------------------------------------------------------------- */

#define LK_TEST_ETCD_HTTP_TIMEOUT_MS 2000
#define LK_TEST_ETCD_MAX_BODY        (1024 * 1024)
#define LK_TEST_ETCD_MAX_ARGV        48
#define LK_TEST_PATH_MAX             400   /* a directory (256) and a file name */

struct lk_test_buf {
	char *data;
	size_t len;
};

static size_t lk_test_buf_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct lk_test_buf *b = arg;
	size_t n = size * nmemb;
	char *p;

	if (b->len + n > LK_TEST_ETCD_MAX_BODY)
		return 0;
	p = realloc(b->data, b->len + n + 1);
	if (!p)
		return 0;
	memcpy(p + b->len, data, n);
	b->data = p;
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* One blocking HTTP request to the member: GET when json is NULL, else POST. */
static char *lk_test_http(const struct lk_test_server *s, const char *path, const char *json,
                          const char *token, long *http)
{
	char url[400], ca[LK_TEST_PATH_MAX], cert[LK_TEST_PATH_MAX], key[LK_TEST_PATH_MAX], auth[700];
	struct lk_test_buf b = { NULL, 0 };
	struct curl_slist *h = NULL;
	CURLcode res;
	CURL *c = curl_easy_init();

	if (!c)
		return NULL;
	snprintf(url, sizeof(url), "%s%s", s->address, path);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)LK_TEST_ETCD_HTTP_TIMEOUT_MS);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, lk_test_buf_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	if (s->tls) {
		lk_test_server_path(s, "ca.pem", ca, sizeof(ca));
		lk_test_server_path(s, "client.pem", cert, sizeof(cert));
		lk_test_server_path(s, "client-key.pem", key, sizeof(key));
		curl_easy_setopt(c, CURLOPT_CAINFO, ca);
		curl_easy_setopt(c, CURLOPT_SSLCERT, cert);
		curl_easy_setopt(c, CURLOPT_SSLKEY, key);
	}
	if (json) {
		h = curl_slist_append(h, "Content-Type: application/json");
		if (token) {
			snprintf(auth, sizeof(auth), "Authorization: %s", token);
			h = curl_slist_append(h, auth);
		}
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
	}
	res = curl_easy_perform(c);
	if (http)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, http);
	curl_slist_free_all(h);
	curl_easy_cleanup(c);
	if (res != CURLE_OK) {
		free(b.data);
		return NULL;
	}
	return b.data ? b.data : strdup("");
}

static bool lk_test_etcd_healthy(const struct lk_test_server *s)
{
	char *body = lk_test_http(s, "/health", NULL, NULL, NULL);
	bool ok = body && strstr(body, "\"health\":\"true\"");

	free(body);
	return ok;
}

char *lk_test_etcd_post(const struct lk_test_server *s, const char *path, const char *json,
                        long *http)
{
	json_t *req, *rep = NULL;
	char *body, *auth, *token = NULL;

	if (s->password[0]) {
		req = json_pack("{s:s, s:s}", "name", "root", "password", s->password);
		auth = req ? json_dumps(req, JSON_COMPACT) : NULL;
		json_decref(req);
		body = auth ? lk_test_http(s, "/v3/auth/authenticate", auth, NULL, NULL) : NULL;
		free(auth);
		if (body)
			rep = json_loads(body, 0, NULL);
		free(body);
		if (json_is_string(json_object_get(rep, "token")))
			token = strdup(json_string_value(json_object_get(rep, "token")));
		json_decref(rep);
		if (!token)
			return NULL;
	}
	body = lk_test_http(s, path, json, token, http);
	free(token);
	return body;
}

/* Run argv; its stdout into out[cap] (if out), its stderr appended to the server's log. */
static int lk_test_run(const struct lk_test_server *s, const char *const *argv, char *out,
                       size_t cap)
{
	char logfile[LK_TEST_PATH_MAX];
	pid_t parent = getpid(), pid;
	size_t n = 0;
	int fds[2], status;
	ssize_t got;

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	snprintf(logfile, sizeof(logfile), "%s/commands.log", s->dir);
	pid = fork();
	if (pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -errno;
	}
	if (pid == 0) {
		int log = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0600);
		int devnull = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(fds[1], 1);
		if (log >= 0)
			dup2(log, 2);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fds[1]);
	for (;;) {
		char sink[4096];
		char *dst = out && n + 1 < cap ? out + n : sink;
		size_t room = out && n + 1 < cap ? cap - 1 - n : sizeof(sink);

		got = read(fds[0], dst, room);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		if (dst != sink)
			n += (size_t)got;
	}
	close(fds[0]);
	if (out && cap)
		out[n] = '\0';
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -ECHILD;
}

int lk_test_server_path(const struct lk_test_server *s, const char *name, char *path,
                        size_t pathcap)
{
	if ((size_t)snprintf(path, pathcap, "%s/%s", s->dir, name) >= pathcap)
		return -ENAMETOOLONG;
	return 0;
}

/* A key and a certificate: self-signed as a CA when ca is NULL, else signed by ca (the base
 * name of a CA made before) with the given extensions. */
static int lk_test_make_cert(const struct lk_test_server *s, const char *name, const char *cn,
                             const char *ca, const char *ext)
{
	char key[LK_TEST_PATH_MAX], crt[LK_TEST_PATH_MAX], csr[LK_TEST_PATH_MAX], extfile[LK_TEST_PATH_MAX], ca_crt[LK_TEST_PATH_MAX], ca_key[LK_TEST_PATH_MAX], serial[LK_TEST_PATH_MAX];
	char subj[128], fname[64];
	int rc;

	snprintf(fname, sizeof(fname), "%s-key.pem", name);
	lk_test_server_path(s, fname, key, sizeof(key));
	snprintf(fname, sizeof(fname), "%s.pem", name);
	lk_test_server_path(s, fname, crt, sizeof(crt));
	snprintf(subj, sizeof(subj), "/CN=%s", cn);
	if (!ca) {
		const char *const argv[] = {
			"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
			"ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", crt,
			"-days", "2", "-subj", subj,
			"-addext", "basicConstraints=critical,CA:TRUE",
			"-addext", "keyUsage=critical,keyCertSign,cRLSign", NULL,
		};

		return lk_test_run(s, argv, NULL, 0) == 0 ? 0 : -EIO;
	}

	snprintf(fname, sizeof(fname), "%s.csr", name);
	lk_test_server_path(s, fname, csr, sizeof(csr));
	snprintf(fname, sizeof(fname), "%s.ext", name);
	rc = lk_test_server_write_file(s, fname, ext, extfile, sizeof(extfile));
	if (rc < 0)
		return rc;
	snprintf(fname, sizeof(fname), "%s.pem", ca);
	lk_test_server_path(s, fname, ca_crt, sizeof(ca_crt));
	snprintf(fname, sizeof(fname), "%s-key.pem", ca);
	lk_test_server_path(s, fname, ca_key, sizeof(ca_key));
	snprintf(fname, sizeof(fname), "%s.srl", ca);
	lk_test_server_path(s, fname, serial, sizeof(serial));
	{
		const char *const req[] = {
			"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
			"-nodes", "-keyout", key, "-out", csr, "-subj", subj, NULL,
		};
		const char *const sign[] = {
			"openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key,
			"-CAserial", serial, "-CAcreateserial", "-out", crt, "-days", "2",
			"-extfile", extfile, NULL,
		};

		if (lk_test_run(s, req, NULL, 0) != 0 || lk_test_run(s, sign, NULL, 0) != 0)
			return -EIO;
	}
	return 0;
}

static int lk_test_make_certs(const struct lk_test_server *s)
{
	static const char server_ext[] = "subjectAltName=IP:127.0.0.1\n"
	                                 "extendedKeyUsage=serverAuth,clientAuth\n"
	                                 "basicConstraints=CA:FALSE\n";
	static const char client_ext[] = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n";
	int rc;

	if ((rc = lk_test_make_cert(s, "ca", "lk-test-ca", NULL, NULL)) < 0 ||
	    (rc = lk_test_make_cert(s, "server", "127.0.0.1", "ca", server_ext)) < 0 ||
	    (rc = lk_test_make_cert(s, "client", "lk-test-client", "ca", client_ext)) < 0 ||
	    (rc = lk_test_make_cert(s, "other-ca", "lk-test-other-ca", NULL, NULL)) < 0 ||
	    (rc = lk_test_make_cert(s, "other-client", "lk-test-client", "other-ca",
	                            client_ext)) < 0)
		return rc;
	return 0;
}

/* Fork and exec etcd for s; does not wait for it (a cluster's members need each other). */
static int lk_test_etcd_spawn(struct lk_test_server *s)
{
	char data[LK_TEST_PATH_MAX], client[64], peer[64], logfile[LK_TEST_PATH_MAX], cert[LK_TEST_PATH_MAX], key[LK_TEST_PATH_MAX], ca[LK_TEST_PATH_MAX];
	const char *argv[LK_TEST_ETCD_MAX_ARGV + LK_TEST_MAX_ARGS];
	pid_t parent = getpid(), pid;
	int argc = 0;

	lk_test_server_path(s, "data", data, sizeof(data));
	lk_test_server_path(s, "etcd.log", logfile, sizeof(logfile));
	snprintf(client, sizeof(client), "%s://127.0.0.1:%d", s->tls ? "https" : "http", s->port);
	snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", s->peer_port);
	argv[argc++] = "etcd";
	argv[argc++] = "--name";
	argv[argc++] = s->name;
	argv[argc++] = "--data-dir";
	argv[argc++] = data;
	argv[argc++] = "--listen-client-urls";
	argv[argc++] = client;
	argv[argc++] = "--advertise-client-urls";
	argv[argc++] = client;
	argv[argc++] = "--listen-peer-urls";
	argv[argc++] = peer;
	argv[argc++] = "--initial-advertise-peer-urls";
	argv[argc++] = peer;
	argv[argc++] = "--initial-cluster";
	argv[argc++] = s->cluster;
	argv[argc++] = "--initial-cluster-state";
	argv[argc++] = "new";
	argv[argc++] = "--initial-cluster-token";
	argv[argc++] = "lk-test";
	/* etcd's defaults, spelled out: the minimum lease TTL (~1.5 election timeouts, so 2s)
	 * is part of what the tests check. */
	argv[argc++] = "--heartbeat-interval";
	argv[argc++] = "100";
	argv[argc++] = "--election-timeout";
	argv[argc++] = "1000";
	argv[argc++] = "--logger";
	argv[argc++] = "zap";
	argv[argc++] = "--log-outputs";
	argv[argc++] = "stderr";
	if (s->tls) {
		lk_test_server_path(s, "server.pem", cert, sizeof(cert));
		lk_test_server_path(s, "server-key.pem", key, sizeof(key));
		lk_test_server_path(s, "ca.pem", ca, sizeof(ca));
		argv[argc++] = "--cert-file";
		argv[argc++] = cert;
		argv[argc++] = "--key-file";
		argv[argc++] = key;
		argv[argc++] = "--trusted-ca-file";
		argv[argc++] = ca;
		argv[argc++] = "--client-cert-auth";
	}
	for (int i = 0; i < s->n_args; i++)
		argv[argc++] = s->args[i];
	argv[argc] = NULL;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);
		int log = open(logfile, O_WRONLY | O_CREAT | O_APPEND, 0600);

		/* Die with the test process, however it ends. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (devnull >= 0)
			dup2(devnull, 0);
		if (log >= 0) {
			dup2(log, 1);
			dup2(log, 2);
		}
		execvp("etcd", (char *const *)argv);
		_exit(127);
	}
	s->pid = pid;
	lk_test_track(s);
	return 0;
}

/* Wait until the member reports healthy. -EADDRINUSE if it died (most likely a port was
 * taken meanwhile). */
static int lk_test_etcd_wait(struct lk_test_server *s, long long until)
{
	int status;

	while (lk_test_now_ms() < until) {
		if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
			lk_test_untrack(s->pid);
			s->pid = 0;
			return -EADDRINUSE;
		}
		if (lk_test_etcd_healthy(s))
			return 0;
		lk_test_sleep_ms(20);
	}
	return -ETIMEDOUT;
}

/* Directory and name for a member; ports come later. */
static int lk_test_etcd_init(struct lk_test_server *s, int index, bool tls)
{
	int rc;

	memset(s, 0, sizeof(*s));
	s->kind = LK_TEST_SERVER_ETCD;
	s->tls = tls;
	snprintf(s->name, sizeof(s->name), "n%d", index);
	snprintf(s->dir, sizeof(s->dir), LK_TEST_DIR_PARENT "/" LK_TEST_DIR_PREFIX "%ld.XXXXXX",
	         (long)getpid());
	if (!mkdtemp(s->dir)) {
		rc = -errno;
		s->dir[0] = '\0';
		return rc;
	}
	return 0;
}

/* Two distinct free ports for the member. */
static int lk_test_etcd_ports(struct lk_test_server *s)
{
	s->port = lk_test_free_port();
	do {
		s->peer_port = lk_test_free_port();
	} while (s->peer_port == s->port && s->peer_port > 0);
	if (s->port < 0)
		return s->port;
	if (s->peer_port < 0)
		return s->peer_port;
	snprintf(s->address, sizeof(s->address), "%s://127.0.0.1:%d", s->tls ? "https" : "http",
	         s->port);
	return 0;
}

int lk_test_etcd_start(struct lk_test_server *s, unsigned flags)
{
	int rc = -EADDRINUSE;

	lk_test_sweep_stale();
	rc = lk_test_etcd_init(s, 0, flags & LK_TEST_ETCD_TLS);
	if (rc < 0)
		return rc;
	if (s->tls && (rc = lk_test_make_certs(s)) < 0)
		goto fail;
	rc = -EADDRINUSE;
	for (int tries = 0; tries < LK_TEST_START_TRIES && rc == -EADDRINUSE; tries++) {
		if ((rc = lk_test_etcd_ports(s)) < 0)
			goto fail;
		snprintf(s->cluster, sizeof(s->cluster), "%s=http://127.0.0.1:%d", s->name,
		         s->peer_port);
		rc = lk_test_etcd_spawn(s);
		if (rc == 0)
			rc = lk_test_etcd_wait(s, lk_test_now_ms() + LK_TEST_READY_MS);
		if (rc == -EADDRINUSE) {
			char data[LK_TEST_PATH_MAX];

			/* A half-made data directory would pin the old ports. */
			lk_test_server_path(s, "data", data, sizeof(data));
			lk_test_rmdir(data);
		}
	}
	if (rc < 0)
		goto fail;
	return 0;

fail:
	lk_test_server_stop(s);
	return rc;
}

void lk_test_etcd_cluster_stop(struct lk_test_etcd_cluster *c)
{
	if (!c)
		return;
	for (int i = 0; i < LK_TEST_ETCD_MEMBERS; i++)
		if (c->members[i].kind == LK_TEST_SERVER_ETCD)
			lk_test_server_stop(&c->members[i]);
}

int lk_test_etcd_cluster_start(struct lk_test_etcd_cluster *c)
{
	char cluster[1024];
	long long until;
	size_t n;
	int rc = -EADDRINUSE;

	lk_test_sweep_stale();
	for (int tries = 0; tries < LK_TEST_START_TRIES && rc == -EADDRINUSE; tries++) {
		memset(c, 0, sizeof(*c));
		n = 0;
		cluster[0] = '\0';
		for (int i = 0; i < LK_TEST_ETCD_MEMBERS; i++) {
			struct lk_test_server *m = &c->members[i];

			if ((rc = lk_test_etcd_init(m, i, false)) < 0 || (rc = lk_test_etcd_ports(m)) < 0)
				goto fail;
			n += (size_t)snprintf(cluster + n, sizeof(cluster) - n, "%s%s=http://127.0.0.1:%d",
			                      i ? "," : "", m->name, m->peer_port);
		}
		for (int i = 0; i < LK_TEST_ETCD_MEMBERS; i++) {
			snprintf(c->members[i].cluster, sizeof(c->members[i].cluster), "%s", cluster);
			if ((rc = lk_test_etcd_spawn(&c->members[i])) < 0)
				goto fail;
		}
		until = lk_test_now_ms() + LK_TEST_READY_MS;
		for (int i = 0; i < LK_TEST_ETCD_MEMBERS && rc == 0; i++)
			rc = lk_test_etcd_wait(&c->members[i], until);
		if (rc == 0)
			return 0;
		lk_test_etcd_cluster_stop(c);
	}
fail:
	lk_test_etcd_cluster_stop(c);
	return rc;
}

int lk_test_etcdctl(const struct lk_test_server *s, char *out, size_t cap, ...)
{
	char endpoints[400], ca[LK_TEST_PATH_MAX + 16], cert[LK_TEST_PATH_MAX + 16], key[LK_TEST_PATH_MAX + 16], user[200];
	const char *argv[LK_TEST_ETCD_MAX_ARGV];
	const char *arg;
	int argc = 0;
	va_list ap;

	snprintf(endpoints, sizeof(endpoints), "--endpoints=%s", s->address);
	argv[argc++] = "etcdctl";
	argv[argc++] = endpoints;
	argv[argc++] = "--dial-timeout=2s";
	argv[argc++] = "--command-timeout=5s";
	if (s->tls) {
		snprintf(ca, sizeof(ca), "--cacert=%s/ca.pem", s->dir);
		snprintf(cert, sizeof(cert), "--cert=%s/client.pem", s->dir);
		snprintf(key, sizeof(key), "--key=%s/client-key.pem", s->dir);
		argv[argc++] = ca;
		argv[argc++] = cert;
		argv[argc++] = key;
	}
	if (s->password[0]) {
		snprintf(user, sizeof(user), "--user=root:%s", s->password);
		argv[argc++] = user;
	}
	va_start(ap, cap);
	while ((arg = va_arg(ap, const char *)) && argc < LK_TEST_ETCD_MAX_ARGV - 1)
		argv[argc++] = arg;
	va_end(ap);
	argv[argc] = NULL;
	return lk_test_run(s, argv, out, cap);
}

int lk_test_etcd_enable_auth(struct lk_test_server *s, const char *root_password)
{
	char user[200], out[1024];

	snprintf(user, sizeof(user), "root:%s", root_password);
	s->password[0] = '\0';
	if (lk_test_etcdctl(s, out, sizeof(out), "user", "add", user, NULL) != 0 ||
	    lk_test_etcdctl(s, out, sizeof(out), "role", "add", "root", NULL) != 0 ||
	    lk_test_etcdctl(s, out, sizeof(out), "user", "grant-role", "root", "root", NULL) != 0 ||
	    lk_test_etcdctl(s, out, sizeof(out), "auth", "enable", NULL) != 0)
		return -EIO;
	snprintf(s->password, sizeof(s->password), "%s", root_password);
	return 0;
}

/* ---- backend test kit ------------------------------------------------------------------ */

/* What lk_test_kit_setup() bound: the test's own variables, by address. */
static struct {
	struct event_base **base;
	struct lk_backend **be;
	struct lk_test_log *log;
} lk_test_kit;

void lk_test_kit_setup(struct event_base **base, struct lk_backend **be, struct lk_test_log *log)
{
	memset(log, 0, sizeof(*log));
	*base = event_base_new();
	ck_assert_ptr_nonnull(*base);
	lk_test_kit.base = base;
	lk_test_kit.be = be;
	lk_test_kit.log = log;
}

void lk_test_kit_teardown(void)
{
	if (lk_test_kit.be)
		*lk_test_kit.be = lk_backend_free(*lk_test_kit.be);
	if (lk_test_kit.base && *lk_test_kit.base) {
		/* Let anything the backend left for the loop run: the test is that nothing crashes
		 * or calls back. */
		lk_test_run_for(50);
		event_base_free(*lk_test_kit.base);
		*lk_test_kit.base = NULL;
	}
}

struct lk_backend *lk_test_backend(void)
{
	return *lk_test_kit.be;
}

const struct lk_test_log *lk_test_logs(void)
{
	return lk_test_kit.log;
}

void lk_test_free_backend(void)
{
	*lk_test_kit.be = lk_backend_free(*lk_test_kit.be);
}

static void lk_test_on_log(void *arg, struct lk_backend *b, enum lk_backend_log_level level,
                           const char *msg)
{
	static const char *const names[] = { "debug", "info", "warn", "error" };
	struct lk_test_log *log = arg;
	int n;

	if (level == LK_BLOG_WARN)
		log->warns++;
	if (getenv("LK_TEST_VERBOSE"))
		fprintf(stderr, "[%s] %s: %s\n", names[level], b->name, msg);
	/* len advances by whole lines only, so it never runs past the buffer once it is full. */
	n = snprintf(log->text + log->len, sizeof(log->text) - log->len, "%s %s\n", names[level],
	             msg);
	if (n > 0 && (size_t)n < sizeof(log->text) - log->len)
		log->len += (size_t)n;
}

struct lk_backend_hooks lk_test_hooks(void)
{
	struct lk_backend_hooks hooks = { .log = lk_test_on_log, .arg = lk_test_kit.log };

	return hooks;
}

void lk_test_on_reply(void *arg, const struct lk_reply *rep)
{
	struct lk_test_reply *g = arg;

	g->n++;
	g->status = rep->status;
	g->token = rep->token;
	g->sent_ns = rep->sent_ns;
	g->ttl_ms = rep->ttl_ms;
	g->at_ns = lk_mono_ns();
	g->has_holder = rep->holder != NULL;
	snprintf(g->holder, sizeof(g->holder), "%s", rep->holder ? rep->holder : "");
	g->free_in_ms = rep->free_in_ms;
	g->after = rep->after;
	g->gap_ns = rep->gap_ns;
	snprintf(g->err, sizeof(g->err), "%s", rep->err ? rep->err : "");
	if (g->free_backend)
		*lk_test_kit.be = lk_backend_free(*lk_test_kit.be);
}

void lk_test_on_notify(void *arg, enum lk_backend_notice what)
{
	struct lk_test_notified *nt = arg;

	if (!nt)
		return;
	if (what == LK_NOTICE_RECONNECTED)
		nt->reconnected++;
	else
		nt->n++;
}

void lk_test_on_notify_free_backend(void *arg, enum lk_backend_notice what)
{
	lk_test_on_notify(arg, what);
	if (what == LK_NOTICE_MAYBE_FREE)
		*lk_test_kit.be = lk_backend_free(*lk_test_kit.be);
}

static bool lk_test_replied(const void *reply)
{
	return ((const struct lk_test_reply *)reply)->n > 0;
}

static bool lk_test_was_notified(const void *notified)
{
	return ((const struct lk_test_notified *)notified)->n > 0;
}

bool lk_test_ready(const void *unused)
{
	struct lk_backend *be = *lk_test_kit.be;

	return be && be->ops->ready(be);
}

static void lk_test_on_deadline(evutil_socket_t fd, short what, void *arg)
{
	*(bool *)arg = true;
}

bool lk_test_run_until(bool (*cond)(const void *), const void *arg, int ms)
{
	bool expired = false;
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct event *ev = evtimer_new(*lk_test_kit.base, lk_test_on_deadline, &expired);

	ck_assert_ptr_nonnull(ev);
	evtimer_add(ev, &tv);
	while (!(cond && cond(arg)) && !expired)
		event_base_loop(*lk_test_kit.base, EVLOOP_ONCE);
	event_free(ev);
	return cond && cond(arg);
}

void lk_test_run_for(int ms)
{
	lk_test_run_until(NULL, NULL, ms);
}

bool lk_test_ready_within(int ms)
{
	return lk_test_run_until(lk_test_ready, NULL, ms);
}

bool lk_test_notified_within(const struct lk_test_notified *nt, int ms)
{
	return lk_test_run_until(lk_test_was_notified, nt, ms);
}

void lk_test_wait_reply(struct lk_test_reply *g)
{
	ck_assert_msg(lk_test_run_until(lk_test_replied, g, LK_TEST_WAIT_MS),
	              "no reply within %dms:\n%s", LK_TEST_WAIT_MS, lk_test_kit.log->text);
}

struct lk_backend_key *lk_test_key_new(const char *identity, struct lk_test_notified *nt)
{
	struct lk_backend *be = *lk_test_kit.be;
	struct lk_backend_key *k = be->ops->key_new(be, LK_TEST_KEY, identity, lk_test_on_notify,
	                                            nt);

	ck_assert_ptr_nonnull(k);
	return k;
}

/* The rest of a request helper, once the call returned rc: accepted, not answered from inside
 * the call (locks/backend.h forbids that), answered in time. */
static void lk_test_await(int rc, struct lk_test_reply *g)
{
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(g->n, 0);
	lk_test_wait_reply(g);
}

struct lk_test_reply lk_test_acquire(struct lk_backend_key *k, int64_t ttl_ms)
{
	struct lk_backend *be = *lk_test_kit.be;
	struct lk_test_reply g = { 0 };

	lk_test_await(be->ops->acquire(k, ttl_ms, lk_test_on_reply, &g), &g);
	return g;
}

struct lk_test_reply lk_test_renew(struct lk_backend_key *k, uint64_t token, int64_t ttl_ms)
{
	struct lk_backend *be = *lk_test_kit.be;
	struct lk_test_reply g = { 0 };

	lk_test_await(be->ops->renew(k, token, ttl_ms, lk_test_on_reply, &g), &g);
	return g;
}

struct lk_test_reply lk_test_release(struct lk_backend_key *k, uint64_t token)
{
	struct lk_backend *be = *lk_test_kit.be;
	struct lk_test_reply g = { 0 };

	lk_test_await(be->ops->release(k, token, lk_test_on_reply, &g), &g);
	return g;
}

uint64_t lk_test_acquire_ok(struct lk_backend_key *k, int64_t ttl_ms)
{
	struct lk_test_reply g = lk_test_acquire(k, ttl_ms);

	ck_assert_msg(g.status == LK_REPLY_OK, "acquire: status %d err %s", g.status, g.err);
	ck_assert_uint_gt(g.token, 0);
	return g.token;
}

struct lk_test_reply lk_test_acquire_answered(struct lk_backend_key *k, int64_t ttl_ms)
{
	struct lk_backend *be;
	struct lk_test_reply g = { 0 };

	for (int i = 0; i < 100; i++) {
		memset(&g, 0, sizeof(g));
		be = *lk_test_kit.be;
		if (be->ops->acquire(k, ttl_ms, lk_test_on_reply, &g) == 0) {
			lk_test_wait_reply(&g);
			if (g.status != LK_REPLY_ERROR)
				return g;
		}
		lk_test_run_for(100);
	}
	ck_abort_msg("acquire kept failing: %s\n%s", g.err, lk_test_kit.log->text);
	return g;
}

pid_t lk_test_fork_listener(int *port, int *lfd)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	pid_t pid;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(fd, 8), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid > 0) {
		close(fd);
		return pid;
	}
	/* A fake server must not outlive a test that hangs or dies without killing it. */
	alarm(30);
	*lfd = fd;
	return 0;
}

int lk_test_run_suite(struct Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	/* A test that dies on a broken pipe should fail, not take the runner with it. */
	signal(SIGPIPE, SIG_IGN);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

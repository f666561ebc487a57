/* Helpers for tests that need real servers: start a private server (redis-server, or etcd as a
 * single member or a 3-member cluster) on free loopback ports in its own temporary directory,
 * freeze and thaw it, restart it, kill it, stop it, and look inside it with a small synchronous
 * client.
 *
 * Servers are always stopped. lk_test_server_stop() in a teardown fixture is the normal way,
 * and an atexit() handler catches a plain exit(). But Check ends a failed test with _exit(),
 * which runs neither, and kills a test that times out; so a server also dies with the process
 * that started it (PR_SET_PDEATHSIG), and each directory is named after its owner process so
 * that the next start removes directories whose owner is gone.
 *
 * The second half is the backend test kit that check_redis and check_etcd share: capturing what
 * a backend reports, driving the libevent loop until that happens, and the request helpers.
 */
#ifndef LK_TESTS_HARNESS_H
#define LK_TESTS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#include "locks/backend.h"

struct Suite;

#define LK_TEST_MAX_ARGS 16

#define LK_TEST_ETCD_MEMBERS 3

enum lk_test_server_kind { LK_TEST_SERVER_REDIS, LK_TEST_SERVER_ETCD };

/* lk_test_etcd_start() flags. */
#define LK_TEST_ETCD_TLS 1u  /* https client URL with client certificate auth (see below) */

struct lk_test_server {
	enum lk_test_server_kind kind;
	pid_t pid;                      /* 0 while not running */
	int port;                       /* etcd: the client port */
	char dir[256];                  /* private directory: logs, sockets, files for the test */
	char unix_path[300];            /* redis: its unix socket */
	char address[320];              /* redis: "127.0.0.1:<port>"; etcd: its client URL */
	char password[128];             /* redis: from "--requirepass X"; etcd: root's, once auth
	                                   is enabled; for the inspection client */
	char *args[LK_TEST_MAX_ARGS];   /* extra server arguments, owned */
	int n_args;
	/* etcd */
	int peer_port;
	char name[16];                  /* member name: n0, n1, ... */
	char cluster[1024];             /* --initial-cluster */
	bool tls;
};

/* Three etcd members on loopback; members[i].address are the endpoints. */
struct lk_test_etcd_cluster {
	struct lk_test_server members[LK_TEST_ETCD_MEMBERS];
};

/* Start redis-server with `--save "" --appendonly no` plus extra_args (a NULL-terminated list,
 * or NULL), wait until it answers PING. Returns 0 or a negative errno; on failure s is left
 * stopped and cleaned up. */
int lk_test_redis_start(struct lk_test_server *s, const char *const *extra_args);

/* Start a single-member etcd (`--name n0`, data in the server's directory) on free client
 * and peer ports and wait until /health says true. With LK_TEST_ETCD_TLS the harness first
 * makes, with `openssl` in the directory: ca.pem, server.pem/server-key.pem (IP SAN
 * 127.0.0.1), client.pem/client-key.pem signed by that CA, and other-ca.pem,
 * other-client.pem/other-client-key.pem from a second, unrelated CA; etcd then serves https
 * only and requires a client certificate from ca.pem. Returns 0 or a negative errno; on
 * failure s is left stopped and cleaned up. */
int lk_test_etcd_start(struct lk_test_server *s, unsigned flags);

/* Start three members that form one cluster; wait until every one is healthy. Returns 0 or a
 * negative errno; on failure everything is stopped. */
int lk_test_etcd_cluster_start(struct lk_test_etcd_cluster *c);
void lk_test_etcd_cluster_stop(struct lk_test_etcd_cluster *c);

/* Create user root with the given password, grant it the root role, enable auth. From then on
 * the inspection helpers authenticate as root. Returns 0 or a negative errno. */
int lk_test_etcd_enable_auth(struct lk_test_server *s, const char *root_password);

/* The full path of a file in the server's directory (a TLS file named above, say). */
int lk_test_server_path(const struct lk_test_server *s, const char *name, char *path,
                        size_t pathcap);

/* Stop the process (SIGTERM, then SIGKILL), reap it, remove the directory, free the arguments.
 * Accepts a server that was never started or is already stopped. */
void lk_test_server_stop(struct lk_test_server *s);

/* SIGKILL the process and reap it, keeping its directory (etcd: its data), so that
 * lk_test_server_restart() can bring it back. */
int lk_test_server_kill(struct lk_test_server *s);

/* Stop the process only and start it again on the same port with the same arguments. Redis
 * comes back empty (no persistence); etcd keeps its data. Returns 0 or a negative errno. */
int lk_test_server_restart(struct lk_test_server *s);

/* Freeze and thaw the server process. */
int lk_test_server_sigstop(struct lk_test_server *s);
int lk_test_server_sigcont(struct lk_test_server *s);

/* Write a file in the server's directory; the full path goes to path[pathcap]. */
int lk_test_server_write_file(const struct lk_test_server *s, const char *name,
                              const char *content, char *path, size_t pathcap);

/* Run one command on a fresh synchronous connection (authenticated if the server has a
 * password). Returns the reply for freeReplyObject(), or NULL if the server could not be
 * reached. */
redisReply *lk_test_redis_command(const struct lk_test_server *s, const char *fmt, ...);

/* GET key: a malloc'd copy of the value, or NULL if there is none (or on errors). */
char *lk_test_redis_get(const struct lk_test_server *s, const char *key);

/* Run a command and return whether it replied without an error. */
bool lk_test_redis_ok(const struct lk_test_server *s, const char *fmt, ...);

/* POST json to path (e.g. "/v3/kv/range") on etcd's gateway, synchronously, with the client
 * certificate when TLS is on and as root when auth is on. Returns the malloc'd body (whatever
 * the HTTP status), or NULL if etcd could not be reached. *http gets the status if non-NULL. */
char *lk_test_etcd_post(const struct lk_test_server *s, const char *path, const char *json,
                        long *http);

/* Run `etcdctl --endpoints=<s> [TLS and auth flags] ARGS...` (a NULL-terminated list) with its
 * standard output in out[cap] (NUL-terminated, cut if longer). Returns its exit status, or a
 * negative errno if it could not run. */
int lk_test_etcdctl(const struct lk_test_server *s, char *out, size_t cap, ...)
	__attribute__((sentinel));

/* ---- backend test kit ------------------------------------------------------------------ */

/* One test runs at a time in its own process (Check forks), so the kit works on the one loop,
 * backend and log that lk_test_kit_setup() binds. The backend is the test's own variable, bound
 * by address: tests and hooks free and replace it, and the kit must see what is there now. */

#define LK_TEST_KEY      "lk/test"  /* the key lk_test_key_new() registers */
#define LK_TEST_WAIT_MS  5000       /* generous: a callback that takes this long is a failure */
#define LK_TEST_READY_MS 10000      /* backends back off up to 5s between reconnects or probes */

/* Everything the backend reported through its log hook, and how many warnings. */
struct lk_test_log {
	char text[65536];
	size_t len;
	int warns;
};

/* One reply, copied: the backend's strings are only borrowed for the callback. */
struct lk_test_reply {
	int n;                          /* callbacks so far; more than one is a bug to catch */
	enum lk_reply_status status;
	uint64_t token;
	int64_t sent_ns, ttl_ms;
	int64_t at_ns;                  /* lk_mono_ns() when the callback ran */
	bool has_holder;
	char holder[300];
	int64_t free_in_ms;
	enum lk_reply_after after;      /* acquire OK: what came before */
	int64_t gap_ns;                 /* ... and since the release, -1 if unknown */
	char err[600];
	bool free_backend;              /* free the bound backend from inside the callback */
};

/* Notices a key's notify hook got: n counts LK_NOTICE_MAYBE_FREE, reconnected
 * LK_NOTICE_RECONNECTED. */
struct lk_test_notified {
	int n;
	int reconnected;
};

/* Create the loop into *base, clear *log and bind all three (be is the test's backend
 * variable, NULL until the test makes one). */
void lk_test_kit_setup(struct event_base **base, struct lk_backend **be, struct lk_test_log *log);

/* Free the backend, run the loop for a moment (whatever the backend left for it must neither
 * crash nor call back), free the loop; *be and *base end up NULL. Accepts an unbound kit. */
void lk_test_kit_teardown(void);

/* The bound backend (NULL if there is none), and its log. */
struct lk_backend *lk_test_backend(void);
const struct lk_test_log *lk_test_logs(void);

/* Free the bound backend; the test's variable ends up NULL. */
void lk_test_free_backend(void);

/* Hooks whose log goes to the bound lk_test_log (and to stderr with LK_TEST_VERBOSE set). */
struct lk_backend_hooks lk_test_hooks(void);

/* Reply callback: arg is a struct lk_test_reply. */
void lk_test_on_reply(void *arg, const struct lk_reply *rep);

/* Notify hooks: arg is a struct lk_test_notified. The second also frees the bound backend on a
 * MAYBE_FREE notice. */
void lk_test_on_notify(void *arg, enum lk_backend_notice what);
void lk_test_on_notify_free_backend(void *arg, enum lk_backend_notice what);

/* Run the loop until cond(arg) holds or ms pass; true if it held. cond NULL: just run ms. */
bool lk_test_run_until(bool (*cond)(const void *), const void *arg, int ms);
void lk_test_run_for(int ms);

/* A condition for lk_test_run_until(): the bound backend exists and is ready (arg unused). */
bool lk_test_ready(const void *unused);

/* lk_test_run_until() for the usual conditions; true if it held in time. */
bool lk_test_ready_within(int ms);
bool lk_test_notified_within(const struct lk_test_notified *nt, int ms);

/* Fail the test unless the reply arrives within LK_TEST_WAIT_MS. */
void lk_test_wait_reply(struct lk_test_reply *g);

/* Register identity on LK_TEST_KEY with the bound backend; nt (may be NULL) counts notices. */
struct lk_backend_key *lk_test_key_new(const char *identity, struct lk_test_notified *nt);

/* Send a request and wait for its reply, failing the test if the call is refused, if the
 * callback runs inside the call (locks/backend.h forbids it) or if no reply comes. */
struct lk_test_reply lk_test_acquire(struct lk_backend_key *k, int64_t ttl_ms);
struct lk_test_reply lk_test_renew(struct lk_backend_key *k, uint64_t token, int64_t ttl_ms);
struct lk_test_reply lk_test_release(struct lk_backend_key *k, uint64_t token);

/* Acquire and fail the test unless it is OK with a token; returns the token. */
uint64_t lk_test_acquire_ok(struct lk_backend_key *k, int64_t ttl_ms);

/* Acquire until the answer is not ERROR (fails the test after about 10 s): after a restart
 * the backend may first have to notice that the old connection broke, refusing or failing
 * requests meanwhile, then reconnect. */
struct lk_test_reply lk_test_acquire_answered(struct lk_backend_key *k, int64_t ttl_ms);

/* A loopback TCP listener on a free port for a fake server, in a child of its own: returns
 * the child's pid in the parent (with *port set, the socket closed there) and 0 in the child
 * (with the socket in *lfd). The child lives 30s at most, whatever the test does. */
pid_t lk_test_fork_listener(int *port, int *lfd);

/* main() of a backend test: run the suite, exit status says whether everything passed. */
int lk_test_run_suite(struct Suite *s);

#endif

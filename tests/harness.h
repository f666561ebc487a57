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
 */
#ifndef LK_TESTS_HARNESS_H
#define LK_TESTS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

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

#endif

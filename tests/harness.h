/* Helpers for tests that need real servers: start a private server on a free loopback port in
 * its own temporary directory, freeze and thaw it, restart it, stop it, and look inside it with
 * a small synchronous client.
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

enum lk_test_server_kind { LK_TEST_SERVER_REDIS };

struct lk_test_server {
	enum lk_test_server_kind kind;
	pid_t pid;                      /* 0 while not running */
	int port;
	char dir[256];                  /* private directory: logs, sockets, files for the test */
	char unix_path[300];            /* redis: its unix socket */
	char address[320];              /* what a backend config wants: "127.0.0.1:<port>" */
	char password[128];             /* from "--requirepass X", for the inspection client */
	char *args[LK_TEST_MAX_ARGS];   /* extra server arguments, owned */
	int n_args;
};

/* Start redis-server with `--save "" --appendonly no` plus extra_args (a NULL-terminated list,
 * or NULL), wait until it answers PING. Returns 0 or a negative errno; on failure s is left
 * stopped and cleaned up. */
int lk_test_redis_start(struct lk_test_server *s, const char *const *extra_args);

/* Stop the process (SIGTERM, then SIGKILL), reap it, remove the directory, free the arguments.
 * Accepts a server that was never started or is already stopped. */
void lk_test_server_stop(struct lk_test_server *s);

/* Stop the process only and start it again on the same port with the same arguments. Redis
 * comes back empty (no persistence). Returns 0 or a negative errno. */
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

#endif

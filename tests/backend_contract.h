/* The contract of locks/backend.h as tests: every check that holds for any backend, run through
 * the vtable against a real server. A backend's test file describes its backend in a struct
 * lk_contract (how to make one, how to read and change what its server stores, the few things
 * the contract leaves to the backend) and adds the "contract" test case to its suite; what only
 * that backend does stays in its own file.
 *
 * backend_contract.c is #included by each check_<backend>.c (the Makefile links every locks/
 * object and the harness into them, nothing else), so it relies only on this header and the
 * harness. */
#ifndef LK_TESTS_BACKEND_CONTRACT_H
#define LK_TESTS_BACKEND_CONTRACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tests/harness.h"

struct Suite;

/* What the server stores under LK_TEST_KEY. */
struct lk_contract_stored {
	bool found;
	char holder[300];   /* the identity the value names */
	uint64_t token;     /* the tenure's fencing token, as the backend derives it */
	int64_t lease;      /* what keeps the key alive apart from the key (etcd's lease), or 0 */
};

struct lk_contract {
	struct lk_test_server *srv;   /* the server setup() starts */
	void (*setup)(void);          /* kit and server, for the test case's fixture */
	void (*teardown)(void);
	const char *scheme;           /* what goes before host:port in an address: "", "http://" */
	int64_t timeout_ms;           /* the backend timeout of an ordinary test */

	/* What the contract leaves to the backend. */
	bool refuses_while_down;      /* requests fail with -ENOTCONN while not connected (Redis),
	                                 rather than being answered ERROR */
	bool watch_notifies_on_start; /* a new watch notifies (etcd: it may have missed deletions) */
	bool gives_back_freed_tenure; /* an acquire whose key was freed meanwhile releases what it
	                                 got (etcd); otherwise it stays until it expires */
	int max_outage_warns;         /* warnings for one outage (Redis: one per connection) */
	const char *restart_log;      /* logged when a server restart breaks what a follower uses */

	/* Make the bound backend (not waiting for it): 0 or a negative errno with err set. */
	int (*make)(const char *address, int64_t timeout_ms, char *err, size_t errlen);
	struct lk_contract_stored (*stored)(void);
	/* The key's remaining validity in ms: -1 if nothing expires it, -2 if there is no key. */
	int64_t (*ttl_left_ms)(void);
	/* Whether a lease from lk_contract_stored still exists (NULL: the backend has none). */
	bool (*lease_alive)(int64_t lease);
	/* Another client writes the key for holder, with nothing that expires it. */
	void (*put)(const char *holder);
	void (*del)(void);
	/* The key's tenure ends as at its expiry (etcd: the lease is revoked). */
	void (*expire)(void);
	/* The server loses everything it stored and comes back (Redis: a restart, etcd: its data
	 * directory wiped); loss_why is in holdoff_until()'s why, loss_log in the log. */
	void (*lose_data)(void);
	const char *loss_why, *loss_log;
	/* Optional: more checks of a fresh tenure of 10 s, and of a renewal, for what the backend
	 * stores beside the key. */
	void (*acquired)(const struct lk_test_reply *g);
	void (*renewed)(struct lk_backend_key *k, uint64_t token);

	/* Authentication (the test case "contract-auth" runs if setup_auth is set). The server
	 * setup_auth starts takes the password "s3cret-pw" (etcd: for user root); make_auth
	 * makes a backend that reads its password from password_file. */
	void (*setup_auth)(void);
	int (*make_auth)(const char *password_file, char *err, size_t errlen);
	const char *wrong_password_msg[2];  /* in the log (and the error of a reply) */
	const char *no_password_msg;        /* the server's word for "you did not log in" */
};

/* Add the test case "contract" for c (borrowed: it must outlive the suite's run). */
void lk_contract_add(struct Suite *s, const struct lk_contract *c);

/* On the bound backend, ready: a tenure of "alpha" is acquired (as the server stores it),
 * renewed and released, and the release wakes "beta", which watches. For the tests of a
 * backend's transport options (TLS, a unix socket...), once lk_contract_add() has run. */
void lk_contract_round_trip(void);

#endif

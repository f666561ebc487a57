/* The etcd backend against real etcd processes (one per test, or a 3-member cluster): the
 * backend contract (tests/backend_contract.c) through the adapter below, then what only etcd
 * does: tokens as a fence base + create_revision (also across a wiped cluster), the hold-off
 * after a wipe or an end without a release (the <key>:state marker), own orphans, per-request
 * timeouts on a slow link, the granted TTL, watch streams and their resumption, endpoint
 * failover, TLS client certificates, auth tokens, a garbage HTTP server. etcdctl is the
 * independent witness of what is stored. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <jansson.h>
#include <sodium.h>

#include "locks/backend.h"
#include "locks/etcd_json.h"
#include "tests/backend_contract.h"
#include "tests/harness.h"

/* The shared suite, compiled here: the Makefile links only locks/ and the harness. */
#include "tests/backend_contract.c"

#define KEY LK_TEST_KEY

static struct lk_test_server srv;
static struct lk_test_etcd_cluster cluster;
static struct event_base *base;
static struct lk_backend *be;
static struct lk_test_log logs;

/* ---- backends and keys ----------------------------------------------------------------- */

struct opts {
	const char *endpoints[LK_TEST_ETCD_MEMBERS];
	int64_t timeout_ms;
	const char *username, *password_file, *ca_file, *cert_file, *key_file;
};

static int make_backend(const struct opts *o, char *err, size_t errlen)
{
	struct lk_config_backend cfg = {
		.name = (char *)"coord",
		.type = LK_BACKEND_ETCD,
		.endpoints = (char **)o->endpoints,
		.timeout_ms = o->timeout_ms ? o->timeout_ms : 1000,
		.username = (char *)o->username,
		.password_file = (char *)o->password_file,
		.ca_file = (char *)o->ca_file,
		.cert_file = (char *)o->cert_file,
		.key_file = (char *)o->key_file,
	};
	struct lk_backend_hooks hooks = lk_test_hooks();

	while (cfg.n_endpoints < LK_TEST_ETCD_MEMBERS && o->endpoints[cfg.n_endpoints])
		cfg.n_endpoints++;
	return lk_backend_new(base, &cfg, &hooks, &be, err, errlen);
}

static void start_backend_opts(const struct opts *o)
{
	char err[256];

	ck_assert_msg(make_backend(o, err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(lk_test_ready_within(LK_TEST_READY_MS), "backend never became ready:\n%s",
	              logs.text);
}

static void start_backend(const char *endpoint, int64_t timeout_ms)
{
	struct opts o = { .endpoints = { endpoint }, .timeout_ms = timeout_ms };

	start_backend_opts(&o);
}

/* ---- what etcd holds, seen through etcdctl and the gateway ----------------------------- */

/* etcdctl prints the header's uint64 IDs as JSON numbers, which may not fit jansson's int64:
 * blank them out (they do not matter here). */
static void blank_ids(char *json)
{
	static const char *const fields[] = { "\"cluster_id\":", "\"member_id\":" };

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		for (char *p = json; (p = strstr(p, fields[i])); ) {
			p += strlen(fields[i]);
			while (*p >= '0' && *p <= '9')
				*p++ = ' ';
			p[-1] = '0';
		}
	}
}

/* `etcdctl get -w json --prefix KEY`: the holder, i.e. the oldest candidate key "KEY/<lease>"
 * (its name, create_revision, lease, value; 0/NULL: no candidate), the token a tenure of it
 * has (the base in "KEY:fence" + create_revision), the candidates and the release marker. */
struct stored {
	char name[300];
	int64_t create_revision;
	int64_t lease;
	char value[300];
	int64_t fence;      /* 0: no fence key */
	uint64_t token;     /* fence + create_revision; 0 without a key */
	int candidates;
	char state[64];     /* "KEY:state" */
	bool legacy;        /* "KEY" itself exists */
};

static void b64_text(const char *v64, char *out, size_t cap)
{
	size_t len = 0;

	out[0] = '\0';
	if (!v64)
		return;
	ck_assert_int_eq(sodium_base642bin((unsigned char *)out, cap - 1, v64, strlen(v64), NULL,
	                                   &len, NULL, sodium_base64_VARIANT_ORIGINAL), 0);
	out[len] = '\0';
}

static struct stored etcd_get(const struct lk_test_server *s, const char *key)
{
	static char out[65536];
	char name[300], fence[64], fkey[300], tkey[300], pkey[300];
	struct stored st = { 0 };
	json_t *root, *kv;
	size_t i;
	int rc;

	snprintf(fkey, sizeof(fkey), "%s:fence", key);
	snprintf(tkey, sizeof(tkey), "%s:state", key);
	snprintf(pkey, sizeof(pkey), "%s/", key);
	rc = lk_test_etcdctl(s, out, sizeof(out), "get", "-w", "json", "--prefix", key, NULL);
	ck_assert_msg(rc == 0, "etcdctl get: %d", rc);
	blank_ids(out);
	root = json_loads(out, 0, NULL);
	ck_assert_ptr_nonnull(root);
	json_array_foreach(json_object_get(root, "kvs"), i, kv) {
		/* etcdctl's JSON has plain numbers; keys and values are base64. */
		int64_t rev = json_integer_value(json_object_get(kv, "create_revision"));

		b64_text(json_string_value(json_object_get(kv, "key")), name, sizeof(name));
		if (strcmp(name, fkey) == 0) {
			b64_text(json_string_value(json_object_get(kv, "value")), fence, sizeof(fence));
			st.fence = strtoll(fence, NULL, 10);
		} else if (strcmp(name, tkey) == 0) {
			b64_text(json_string_value(json_object_get(kv, "value")), st.state,
			         sizeof(st.state));
		} else if (strcmp(name, key) == 0) {
			st.legacy = true;
		} else if (strncmp(name, pkey, strlen(pkey)) == 0) {
			st.candidates++;
			if (st.create_revision && rev > st.create_revision)
				continue;
			snprintf(st.name, sizeof(st.name), "%s", name);
			st.create_revision = rev;
			st.lease = json_integer_value(json_object_get(kv, "lease"));
			b64_text(json_string_value(json_object_get(kv, "value")), st.value,
			         sizeof(st.value));
		}
	}
	json_decref(root);
	if (st.create_revision)
		st.token = (uint64_t)(st.fence + st.create_revision);
	return st;
}

static void etcdctl_ok(const struct lk_test_server *s, const char *a, const char *b,
                       const char *c)
{
	char out[4096];

	ck_assert_int_eq(lk_test_etcdctl(s, out, sizeof(out), a, b, c, NULL), 0);
}

/* POST to the gateway; the "field" of the answer as an integer (strings or numbers). */
static int64_t etcd_post_int(const char *path, const char *json, const char *field)
{
	char *body = lk_test_etcd_post(&srv, path, json, NULL);
	json_t *root, *v;
	int64_t n = 0;

	ck_assert_ptr_nonnull(body);
	root = json_loads(body, 0, NULL);
	free(body);
	ck_assert_ptr_nonnull(root);
	v = json_object_get(root, field);
	if (json_is_string(v))
		n = strtoll(json_string_value(v), NULL, 10);
	else if (json_is_integer(v))
		n = json_integer_value(v);
	json_decref(root);
	return n;
}

/* A lease's TTL as etcd reports it: "TTL" left (-1 once gone) or "grantedTTL". */
static int64_t lease_field(int64_t lease, const char *field)
{
	char json[64];

	snprintf(json, sizeof(json), "{\"ID\":\"%" PRId64 "\"}", lease);
	return etcd_post_int("/v3/lease/timetolive", json, field);
}

static void lease_revoke(int64_t lease)
{
	char json[64], *body;

	snprintf(json, sizeof(json), "{\"ID\":\"%" PRId64 "\"}", lease);
	body = lk_test_etcd_post(&srv, "/v3/lease/revoke", json, NULL);
	ck_assert_ptr_nonnull(body);
	free(body);
}

/* ---- fixtures -------------------------------------------------------------------------- */

static void setup_loop(void)
{
	lk_test_kit_setup(&base, &be, &logs);
}

static void teardown_loop(void)
{
	lk_test_kit_teardown();
	lk_test_server_stop(&srv);
	lk_test_etcd_cluster_stop(&cluster);
}

static void setup_etcd(void)
{
	setup_loop();
	ck_assert_int_eq(lk_test_etcd_start(&srv, 0), 0);
}

static void setup_etcd_auth(void)
{
	setup_loop();
	ck_assert_int_eq(lk_test_etcd_start(&srv, 0), 0);
	ck_assert_int_eq(lk_test_etcd_enable_auth(&srv, "s3cret-pw"), 0);
}

/* Kill etcd, delete its data dir and start it again on the same ports: a new, empty cluster
 * whose revisions start again at 1 (its cluster id is the same: same name, peers and token). */
static void wipe_etcd(struct lk_test_server *s)
{
	char data[512], cmd[600];

	ck_assert_int_eq(lk_test_server_kill(s), 0);
	ck_assert_int_eq(lk_test_server_path(s, "data", data, sizeof(data)), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", data);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(lk_test_server_restart(s), 0);
}

/* ---- the contract suite's view of etcd ------------------------------------------------- */

static int contract_make(const char *address, int64_t timeout_ms, char *err, size_t errlen)
{
	struct opts o = { .endpoints = { address }, .timeout_ms = timeout_ms };

	return make_backend(&o, err, errlen);
}

static struct lk_contract_stored contract_stored(void)
{
	struct stored st = etcd_get(&srv, KEY);
	struct lk_contract_stored c = { .found = st.create_revision != 0, .token = st.token,
	                                .lease = st.lease };

	snprintf(c.holder, sizeof(c.holder), "%s", st.value);
	return c;
}

static int64_t contract_ttl_left_ms(void)
{
	struct stored st = etcd_get(&srv, KEY);

	if (!st.create_revision)
		return -2;
	return st.lease ? lease_field(st.lease, "TTL") * 1000 : -1;
}

/* A plain put over the holder's key (it loses its lease and keeps its create_revision), or,
 * with no candidate, a candidate key of a foreign holder without a lease. */
static void contract_put(const char *holder)
{
	struct stored st = etcd_get(&srv, KEY);

	/* A foreign candidate comes with a token base, as one of ours would. */
	if (!st.fence)
		etcdctl_ok(&srv, "put", KEY ":fence", "1000");
	etcdctl_ok(&srv, "put", st.create_revision ? st.name : KEY "/00000000000000ff0000",
	           holder);
}

static void contract_del(void)
{
	char out[4096];

	ck_assert_int_eq(lk_test_etcdctl(&srv, out, sizeof(out), "del", "--prefix", KEY "/",
	                                 NULL), 0);
}

/* As at expiry: the lease ends and etcd deletes the key. */
static void contract_expire(void)
{
	lease_revoke(etcd_get(&srv, KEY).lease);
}

static void contract_lose_data(void)
{
	wipe_etcd(&srv);
}

static void contract_acquired(const struct lk_test_reply *g)
{
	struct stored st = etcd_get(&srv, KEY);

	/* The token is the fence key's base (the wall clock in µs when it was seeded) plus the
	 * key's create_revision; the key is on a lease of the ttl asked for. */
	ck_assert_int_gt(st.fence, 1600000000000000LL);
	ck_assert_uint_eq(g->token, (uint64_t)st.fence + (uint64_t)st.create_revision);
	ck_assert_int_gt(st.lease, 0);
	ck_assert_int_eq(lease_field(st.lease, "grantedTTL"), 10);
}

static int contract_make_auth(const char *password_file, char *err, size_t errlen)
{
	struct opts o = { .endpoints = { srv.address }, .username = "root",
	                  .password_file = password_file, .timeout_ms = 500 };

	return make_backend(&o, err, errlen);
}

static const struct lk_contract etcd_contract = {
	.srv = &srv,
	.setup = setup_etcd,
	.teardown = teardown_loop,
	.scheme = "http://",
	.timeout_ms = 1000,
	.watch_notifies_on_start = true,
	.gives_back_freed_tenure = true,
	.max_outage_warns = 1,
	.restart_log = "watch on " KEY " broken",
	.make = contract_make,
	.stored = contract_stored,
	.ttl_left_ms = contract_ttl_left_ms,
	/* No lease check: the lease is shared by every key of the agent and outlives tenures. */
	.put = contract_put,
	.del = contract_del,
	.expire = contract_expire,
	.lose_data = contract_lose_data,
	.loss_why = "revision went back",
	.loss_log = "revision went back",
	.acquired = contract_acquired,
	.setup_auth = setup_etcd_auth,
	.make_auth = contract_make_auth,
	.wrong_password_msg = { "authentication as root failed", "invalid user ID or password" },
	.no_password_msg = "user name is empty",
};

/* ---- the lock protocol ----------------------------------------------------------------- */

/* Raft proposals etcd has committed: every write (a lease grant or revoke, a txn) is one, a
 * linearizable read is none. */
static long long proposals(void)
{
	char *m = lk_test_etcd_post(&srv, "/metrics", "{}", NULL);
	const char *p = m ? strstr(m, "\netcd_server_proposals_committed_total ") : NULL;
	long long n = p ? atoll(p + strlen("\netcd_server_proposals_committed_total ")) : -1;

	free(m);
	ck_assert_int_ge(n, 0);
	return n;
}

/* A counter from etcd's /metrics (0 when absent). */
static long long etcd_metric(const char *name)
{
	char *m = lk_test_etcd_post(&srv, "/metrics", "{}", NULL), want[128];
	const char *p;
	long long n;

	ck_assert_ptr_nonnull(m);
	snprintf(want, sizeof(want), "\n%s ", name);
	p = strstr(m, want);
	n = p ? atoll(p + strlen(want)) : 0;
	free(m);
	return n;
}

/* A follower retries every retry_interval: once its candidate key is queued, that must cost
 * etcd no write (a lease grant, a txn, a revoke), only a read. */
START_TEST(test_held_key_costs_a_follower_no_write)
{
	struct lk_backend_key *a, *b;
	struct lk_test_reply g;
	long long before;

	start_backend(srv.address, 1000);
	a = lk_test_key_new("alpha", NULL);
	b = lk_test_key_new("beta", NULL);
	lk_test_acquire_ok(a, 10000);
	/* Queuing up is one write: the candidate key. */
	before = proposals();
	ck_assert_int_eq(lk_test_acquire(b, 10000).status, LK_REPLY_HELD);
	ck_assert_int_eq(proposals(), before + 1);
	ck_assert_int_eq(etcd_get(&srv, KEY).candidates, 2);
	before = proposals();
	for (int i = 0; i < 5; i++) {
		g = lk_test_acquire(b, 10000);
		ck_assert_int_eq(g.status, LK_REPLY_HELD);
	}
	lk_test_run_for(300); /* a revoke sent after the reply would land by now */
	ck_assert_int_eq(proposals(), before);
}
END_TEST

START_TEST(test_granted_ttl_is_what_etcd_granted)
{
	struct lk_backend_key *k;
	struct stored st;
	struct lk_test_reply g, r;

	start_backend(srv.address, 1000);
	k = lk_test_key_new("alpha", NULL);
	/* etcd's minimum lease is ~1.5 election timeouts (2s here): it grants more than asked. */
	g = lk_test_acquire(k, 1000);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	st = etcd_get(&srv, KEY);
	ck_assert_int_ge(g.ttl_ms, 2000);
	ck_assert_int_eq(g.ttl_ms, lease_field(st.lease, "grantedTTL") * 1000);
	/* A keepalive restores the TTL the lease was granted with, whatever the renewal asks
	 * for: the reply says what etcd gave, not what was asked. */
	r = lk_test_renew(k, g.token, 10000);
	ck_assert_int_eq(r.status, LK_REPLY_OK);
	ck_assert_int_eq(r.ttl_ms, g.ttl_ms);
	ck_assert_int_eq(lk_test_release(k, g.token).status, LK_REPLY_OK);

	/* Fractions of a second round up: 2500ms asks etcd for 3s, which is above its minimum
	 * and so granted as asked (rounding down would ask for, and get, 2s). */
	g = lk_test_acquire(k, 2500);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	st = etcd_get(&srv, KEY);
	ck_assert_uint_eq(g.token, st.token);
	ck_assert_int_eq(lease_field(st.lease, "grantedTTL"), 3);
	ck_assert_int_eq(g.ttl_ms, 3000);
	r = lk_test_renew(k, g.token, 2500);
	ck_assert_int_eq(r.status, LK_REPLY_OK);
	ck_assert_int_eq(r.ttl_ms, 3000);
}
END_TEST

START_TEST(test_ttl_rounds_up_to_whole_seconds)
{
	struct lk_backend_key *k;
	struct lk_test_reply g;

	start_backend(srv.address, 1000);
	k = lk_test_key_new("alpha", NULL);
	g = lk_test_acquire(k, 4001);
	ck_assert_int_eq(g.status, LK_REPLY_OK);
	ck_assert_int_eq(g.ttl_ms, 5000);
}
END_TEST

/* ---- watches --------------------------------------------------------------------------- */

START_TEST(test_expiry_and_external_delete_notify)
{
	struct lk_backend_key *leader, *follower;
	struct lk_test_notified nt = { 0 };

	start_backend(srv.address, 1000);
	leader = lk_test_key_new("alpha", NULL);
	follower = lk_test_key_new("beta", &nt);
	be->ops->watch(follower, true);
	ck_assert(lk_test_notified_within(&nt, LK_TEST_WAIT_MS));
	lk_test_acquire_ok(leader, 10000);
	lk_test_run_for(100);
	nt.n = 0;
	/* The lease ends (as at expiry): etcd deletes the key, the watch sees a DELETE. */
	lease_revoke(etcd_get(&srv, KEY).lease);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_WAIT_MS), "no notify on lease end");
	/* A PUT does not notify, nor does a change outside the candidates (the release marker,
	 * the fence key, another lock whose key starts with ours). */
	nt.n = 0;
	etcdctl_ok(&srv, "put", KEY "/gamma", "gamma");
	etcdctl_ok(&srv, "put", KEY "2/x", "x");
	etcdctl_ok(&srv, "del", KEY "2/x", NULL);
	etcdctl_ok(&srv, "del", KEY ":fence", NULL);
	lk_test_run_for(300);
	ck_assert_int_eq(nt.n, 0);
	etcdctl_ok(&srv, "del", KEY "/gamma", NULL);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_WAIT_MS), "no notify on delete");
}
END_TEST

START_TEST(test_frozen_watch_notifies_after_thaw)
{
	const int64_t timeout = 500;
	char alias[64];
	struct opts o = { .endpoints = { srv.address, alias }, .timeout_ms = timeout };
	struct lk_backend_key *leader, *follower;
	struct lk_test_notified nt = { 0 };
	struct lk_test_reply g;
	size_t frozen_at, deleted_at;
	uint64_t tok;

	/* Two names for the one member. With a single endpoint a frozen etcd does not break a
	 * watch stream (there is nowhere else to go, and the kernel keeps the connection
	 * alive); with two, the backend fails over and the stream really breaks and resumes. */
	snprintf(alias, sizeof(alias), "http://localhost:%d", srv.port);
	start_backend_opts(&o);
	leader = lk_test_key_new("alpha", NULL);
	follower = lk_test_key_new("beta", &nt);
	tok = lk_test_acquire_ok(leader, 30000);
	be->ops->watch(follower, true);
	ck_assert(lk_test_notified_within(&nt, LK_TEST_WAIT_MS));
	lk_test_run_for(100);

	/* Frozen for several timeouts while the loop runs: the leader's renewal times out, the
	 * backend fails over to the other name (frozen too), and the watch that moved there is
	 * never confirmed, so the stream counts as broken. Nothing is deleted meanwhile. */
	nt.n = 0;
	frozen_at = logs.len;
	ck_assert_int_eq(lk_test_server_sigstop(&srv), 0);
	g = lk_test_renew(leader, tok, 30000);
	ck_assert_msg(g.status == LK_REPLY_ERROR, "renew while frozen: %d %s", g.status, g.err);
	lk_test_run_for(3 * timeout);
	ck_assert(!be->ops->ready(be));
	ck_assert_msg(strstr(logs.text + frozen_at, "watch on " KEY " broken"),
	              "the freeze did not break the watch:\n%s", logs.text);
	ck_assert_int_eq(nt.n, 0);

	/* After the thaw the watch resumes; its confirmation is a notice of its own (deletions
	 * may have been missed while there was no stream). */
	ck_assert_int_eq(lk_test_server_sigcont(&srv), 0);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_READY_MS),
	              "watch not resumed after the thaw:\n%s", logs.text);
	ck_assert(lk_test_ready_within(LK_TEST_READY_MS));
	lk_test_run_for(200);

	/* Another client deletes the key: the resumed stream reports it. The notice must not
	 * come from yet another resume, whose confirmation would notify too. */
	nt.n = 0;
	deleted_at = logs.len;
	etcdctl_ok(&srv, "del", etcd_get(&srv, KEY).name, NULL);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_WAIT_MS),
	              "resumed watch missed the delete:\n%s", logs.text);
	ck_assert_msg(!strstr(logs.text + deleted_at, "broken"), "%s", logs.text + deleted_at);
}
END_TEST

/* ---- configurations -------------------------------------------------------------------- */

START_TEST(test_bad_configs_fail_new)
{
	struct opts o = { .endpoints = { "127.0.0.1:2379" } };
	char err[256] = "";

	ck_assert_int_eq(make_backend(&o, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(be);
	ck_assert_ptr_nonnull(strstr(err, "invalid endpoint"));

	o.endpoints[0] = "http://user:pw@127.0.0.1:2379";
	ck_assert_int_eq(make_backend(&o, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(strstr(err, "pw@"));
	o.endpoints[0] = "http://127.0.0.1:2379/v3";
	ck_assert_int_eq(make_backend(&o, err, sizeof(err)), -EINVAL);

	o.endpoints[0] = "http://127.0.0.1:2379/";
	o.username = "root";
	o.password_file = "/nonexistent/lk-pw";
	ck_assert_int_eq(make_backend(&o, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_null(be);
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent/lk-pw"));

	o.password_file = NULL;
	ck_assert_int_eq(make_backend(&o, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "password_file"));
	o.username = NULL;
	o.cert_file = "/tmp/cert.pem";
	ck_assert_int_eq(make_backend(&o, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_null(be);
}
END_TEST

/* ---- a 3-member cluster ---------------------------------------------------------------- */

static void setup_cluster(void)
{
	setup_loop();
	ck_assert_int_eq(lk_test_etcd_cluster_start(&cluster), 0);
}

/* Whether member i is the raft leader right now (its status names itself as leader). */
static bool is_raft_leader(int i)
{
	char *body = lk_test_etcd_post(&cluster.members[i], "/v3/maintenance/status", "{}", NULL);
	json_t *root = body ? json_loads(body, JSON_DECODE_ANY, NULL) : NULL;
	const char *leader = json_string_value(json_object_get(root, "leader"));
	const char *self = json_string_value(json_object_get(json_object_get(root, "header"),
	                                                     "member_id"));
	bool yes = leader && self && strcmp(leader, self) == 0;

	json_decref(root);
	free(body);
	return yes;
}

/* Endpoints in an order whose first member is (or is not) the raft leader; returns the index
 * of that first member. */
static int order_endpoints(struct opts *o, bool leader_first)
{
	int first = -1;

	for (int i = 0; i < LK_TEST_ETCD_MEMBERS && first < 0; i++)
		if (is_raft_leader(i) == leader_first)
			first = i;
	ck_assert_int_ge(first, 0);
	for (int i = 0; i < LK_TEST_ETCD_MEMBERS; i++)
		o->endpoints[i] = cluster.members[(first + i) % LK_TEST_ETCD_MEMBERS].address;
	return first;
}

/* Renew until n answers in a row are OK; ERROR is allowed in between (at most tries in all);
 * returns how many ERRORs there were. */
static int renew_until_ok(struct lk_backend_key *k, uint64_t tok, int n, int tries)
{
	int ok = 0, errors = 0;
	struct lk_test_reply g;

	for (int i = 0; i < tries && ok < n; i++) {
		g = lk_test_renew(k, tok, 10000);
		if (g.status == LK_REPLY_OK) {
			ok++;
		} else {
			ck_assert_msg(g.status == LK_REPLY_ERROR, "renew: %d %s", g.status, g.err);
			ok = 0;
			errors++;
		}
	}
	ck_assert_msg(ok == n, "renewals did not recover:\n%s", logs.text);
	return errors;
}

START_TEST(test_cluster_failover_keeps_renewing)
{
	struct opts o = { .timeout_ms = 500 };
	struct lk_backend_key *k, *f;
	struct lk_test_notified nt = { 0 };
	uint64_t tok;
	int first;

	/* The first endpoint is a raft follower: losing it costs the cluster nothing, so only
	 * the backend's failover is under test. */
	first = order_endpoints(&o, false);
	start_backend_opts(&o);
	k = lk_test_key_new("alpha", NULL);
	f = lk_test_key_new("beta", &nt);
	tok = lk_test_acquire_ok(k, 10000);
	be->ops->watch(f, true);
	ck_assert(lk_test_notified_within(&nt, LK_TEST_WAIT_MS));
	ck_assert_int_eq(lk_test_renew(k, tok, 10000).status, LK_REPLY_OK);

	/* The member behind the first endpoint dies while we lead. A renewal on a pooled
	 * connection to it may fail once; the connect that follows is refused and moves on. */
	ck_assert_int_eq(lk_test_server_kill(&cluster.members[first]), 0);
	ck_assert_int_le(renew_until_ok(k, tok, 3, 6), 1);
	ck_assert_msg(strstr(logs.text, "switching to"), "%s", logs.text);

	/* The watch moved too: a release still wakes the follower. */
	lk_test_run_for(300);
	nt.n = 0;
	ck_assert_int_eq(lk_test_release(k, tok).status, LK_REPLY_OK);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_WAIT_MS), "no notify after failover:\n%s",
	              logs.text);
	ck_assert_int_eq(lk_test_acquire(f, 10000).status, LK_REPLY_OK);
}
END_TEST

START_TEST(test_cluster_leader_loss_recovers)
{
	struct opts o = { .timeout_ms = 500 };
	struct lk_backend_key *k;
	uint64_t tok;
	int first;

	/* Now the first endpoint is the raft leader: until the others elect a new one (about an
	 * election timeout) renewals may fail, then they work through another endpoint. */
	first = order_endpoints(&o, true);
	start_backend_opts(&o);
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 10000);
	ck_assert_int_eq(lk_test_server_kill(&cluster.members[first]), 0);
	renew_until_ok(k, tok, 3, 15);
	ck_assert_uint_eq(etcd_get(&cluster.members[(first + 1) % LK_TEST_ETCD_MEMBERS], KEY)
	                  .token, tok);
}
END_TEST

START_TEST(test_cluster_frozen_member_fails_over)
{
	struct opts o = { .timeout_ms = 300 };
	struct lk_backend_key *k;
	uint64_t tok;
	int first;

	/* A frozen member accepts connections and never answers: timeouts move us on. */
	first = order_endpoints(&o, false);
	start_backend_opts(&o);
	k = lk_test_key_new("alpha", NULL);
	tok = lk_test_acquire_ok(k, 10000);
	ck_assert_int_eq(lk_test_server_sigstop(&cluster.members[first]), 0);
	ck_assert_int_le(renew_until_ok(k, tok, 2, 6), 2);
	ck_assert_int_eq(lk_test_server_sigcont(&cluster.members[first]), 0);
}
END_TEST

/* ---- TLS ------------------------------------------------------------------------------- */

static void setup_etcd_tls(void)
{
	setup_loop();
	ck_assert_int_eq(lk_test_etcd_start(&srv, LK_TEST_ETCD_TLS), 0);
}

struct tls_files {
	char ca[400], cert[400], key[400];
};

static struct opts tls_opts(struct tls_files *f, const char *ca, const char *cert,
                            const char *key)
{
	struct opts o = { .endpoints = { srv.address }, .timeout_ms = 1000 };

	if (ca) {
		lk_test_server_path(&srv, ca, f->ca, sizeof(f->ca));
		o.ca_file = f->ca;
	}
	if (cert) {
		lk_test_server_path(&srv, cert, f->cert, sizeof(f->cert));
		lk_test_server_path(&srv, key, f->key, sizeof(f->key));
		o.cert_file = f->cert;
		o.key_file = f->key;
	}
	return o;
}

START_TEST(test_tls_right_certificates_work)
{
	struct tls_files f;
	struct opts o = tls_opts(&f, "ca.pem", "client.pem", "client-key.pem");

	ck_assert_ptr_nonnull(strstr(srv.address, "https://"));
	start_backend_opts(&o);
	lk_contract_round_trip();
}
END_TEST

static void tls_fails(const struct opts *o, const char *want)
{
	char err[256];
	struct lk_test_reply g;

	ck_assert_msg(make_backend(o, err, sizeof(err)) == 0, "%s", err);
	g = lk_test_acquire(lk_test_key_new("alpha", NULL), 10000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_msg(strstr(g.err, want), "want \"%s\" in: %s", want, g.err);
	lk_test_run_for(300);
	ck_assert(!be->ops->ready(be));
	ck_assert_int_eq(etcd_get(&srv, KEY).create_revision, 0);
	be = lk_backend_free(be);
}

START_TEST(test_tls_wrong_ca_errors)
{
	struct tls_files f;
	struct opts o = tls_opts(&f, "other-ca.pem", "client.pem", "client-key.pem");

	tls_fails(&o, "certificate");
}
END_TEST

START_TEST(test_tls_missing_or_wrong_client_certificate_errors)
{
	struct tls_files f;
	struct opts o = tls_opts(&f, "ca.pem", NULL, NULL);

	/* etcd refuses after the handshake looks complete to us (TLS 1.3), so what curl reports
	 * varies with timing; the backend names the likely cause. */
	tls_fails(&o, "client certificate");
	o = tls_opts(&f, "ca.pem", "other-client.pem", "other-client-key.pem");
	tls_fails(&o, "client certificate");
}
END_TEST

START_TEST(test_tls_plain_http_to_https_errors)
{
	struct opts o = { .endpoints = { NULL }, .timeout_ms = 500 };
	char addr[64], err[256], want[128];
	struct lk_test_reply g;

	snprintf(addr, sizeof(addr), "http://127.0.0.1:%d", srv.port);
	o.endpoints[0] = addr;
	ck_assert_msg(make_backend(&o, err, sizeof(err)) == 0, "%s", err);
	g = lk_test_acquire(lk_test_key_new("alpha", NULL), 10000);
	/* etcd drops the connection without an HTTP answer: a transport failure, which the
	 * contract makes ERROR (retryable), not a refusal by the server (FATAL). */
	ck_assert_msg(g.status == LK_REPLY_ERROR, "%d %s", g.status, g.err);
	snprintf(want, sizeof(want), "lease grant failed: %s: ", addr);
	ck_assert_msg(strstr(g.err, want), "want \"%s\" in: %s", want, g.err);
	/* The hint about client certificates is for https endpoints only. */
	ck_assert_msg(!strstr(g.err, "client certificate"), "%s", g.err);
	lk_test_run_for(300);
	ck_assert(!be->ops->ready(be));
}
END_TEST

/* ---- auth ------------------------------------------------------------------------------ */

START_TEST(test_auth_token_lost_on_restart_reauthenticates)
{
	struct opts o = { .endpoints = { srv.address }, .username = "root" };
	struct lk_backend_key *k, *f;
	struct lk_test_notified nt = { 0 };
	uint64_t tok;
	struct lk_test_reply g;
	char path[400];

	ck_assert_int_eq(lk_test_server_write_file(&srv, "pw", "s3cret-pw", path, sizeof(path)), 0);
	o.password_file = path;
	start_backend_opts(&o);
	k = lk_test_key_new("alpha", NULL);
	f = lk_test_key_new("beta", &nt);
	tok = lk_test_acquire_ok(k, 30000);
	be->ops->watch(f, true);
	ck_assert(lk_test_notified_within(&nt, LK_TEST_WAIT_MS));
	/* Simple tokens live in etcd's memory: after a restart ours is invalid, for requests
	 * and for the resumed watch alike. */
	nt.n = 0;
	ck_assert_int_eq(lk_test_server_restart(&srv), 0);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_READY_MS), "watch not resumed:\n%s", logs.text);
	g = lk_test_renew(k, tok, 30000);
	ck_assert_msg(g.status == LK_REPLY_OK, "renew after restart: %d %s\n%s", g.status, g.err,
	              logs.text);
	lk_test_run_for(200);
	nt.n = 0;
	ck_assert_int_eq(lk_test_release(k, tok).status, LK_REPLY_OK);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_WAIT_MS), "resumed watch missed the release");
}
END_TEST

/* ---- a server that answers garbage ----------------------------------------------------- */

enum fake_mode {
	FAKE_REPLY,      /* send `reply` to every request on the connection */
	FAKE_CLOSE,      /* send `reply`, then close the connection */
	FAKE_TRICKLE,    /* send `reply`, then a byte every 50ms, forever */
	FAKE_FLOOD,      /* send `reply`, then bytes as fast as possible, forever */
};

/* Read one HTTP request (headers and Content-Length body) from fd into buf[cap]. */
static bool fake_read_request(int fd, char *buf, size_t cap)
{
	char *end, *cl;
	size_t n = 0, want;
	ssize_t got;

	for (;;) {
		got = read(fd, buf + n, cap - 1 - n);
		if (got <= 0)
			return false;
		n += (size_t)got;
		buf[n] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (!end)
			continue;
		cl = strcasestr(buf, "Content-Length:");
		want = (size_t)(end + 4 - buf) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
		if (n >= want)
			return true;
	}
}

static pid_t fake_server(int *port, enum fake_mode mode, const char *reply)
{
	int lfd = -1;
	pid_t pid = lk_test_fork_listener(port, &lfd);

	if (pid > 0)
		return pid;
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			_exit(0);
		if (fork() == 0) {
			static char flood[65536], req[16384];
			struct timespec ts = { 0, 50 * 1000000 };

			memset(flood, 'x', sizeof(flood));
			while (fake_read_request(fd, req, sizeof(req))) {
				if (write(fd, reply, strlen(reply)) < 0)
					break;
				if (mode == FAKE_CLOSE)
					break;
				while (mode == FAKE_TRICKLE && write(fd, " ", 1) == 1)
					nanosleep(&ts, NULL);
				while (mode == FAKE_FLOOD && write(fd, flood, sizeof(flood)) > 0)
					;
				if (mode != FAKE_REPLY)
					break;
			}
			_exit(0);
		}
		close(fd);
	}
}

static pid_t fake_pid, fake_pid2;

static void teardown_fake(void)
{
	teardown_loop();
	if (fake_pid > 0) {
		kill(fake_pid, SIGKILL);
		waitpid(fake_pid, NULL, 0);
		fake_pid = 0;
	}
	if (fake_pid2 > 0) {
		kill(fake_pid2, SIGKILL);
		waitpid(fake_pid2, NULL, 0);
		fake_pid2 = 0;
	}
}

/* A backend on a fake server; its probe may fail, so no waiting for ready. */
static struct lk_backend_key *fake_backend(enum fake_mode mode, const char *reply,
                                           int64_t timeout_ms)
{
	static char addr[64];
	struct opts o = { .endpoints = { addr }, .timeout_ms = timeout_ms };
	char err[256];
	int port;

	fake_pid = fake_server(&port, mode, reply);
	snprintf(addr, sizeof(addr), "http://127.0.0.1:%d", port);
	ck_assert_msg(make_backend(&o, err, sizeof(err)) == 0, "%s", err);
	return lk_test_key_new("alpha", NULL);
}

/* A complete 200 response around body. */
static const char *http_ok(const char *body)
{
	static char buf[4096];

	snprintf(buf, sizeof(buf),
	         "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
	         strlen(body), body);
	return buf;
}

START_TEST(test_garbage_invalid_json_is_fatal)
{
	struct lk_backend_key *k = fake_backend(FAKE_REPLY, http_ok("not json!"), 1000);
	struct lk_test_reply g;

	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_FATAL);
	ck_assert_msg(strstr(g.err, "bad response to lease grant from http://127.0.0.1:") &&
	              strstr(g.err, ": invalid JSON at line 1"), "%s", g.err);
	ck_assert(!be->ops->ready(be));
}
END_TEST

START_TEST(test_garbage_wrong_types_are_fatal)
{
	/* One body for every request: a lease grant, then a look txn whose first range is
	 * wrong. */
	struct lk_backend_key *k = fake_backend(FAKE_REPLY,
	                                        http_ok("{\"header\":{\"revision\":\"3\"},"
	                                                "\"ID\":\"5\",\"TTL\":\"10\","
	                                                "\"succeeded\":true,\"responses\":["
	                                                "{\"response_range\":{\"kvs\":\"nope\"}},"
	                                                "{\"response_range\":{}},"
	                                                "{\"response_range\":{}},"
	                                                "{\"response_range\":{}},"
	                                                "{\"response_range\":{}},"
	                                                "{\"response_range\":{}}]}"), 1000);
	struct lk_test_reply g;

	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_FATAL);
	ck_assert_msg(strstr(g.err, "\"kvs\""), "%s", g.err);
	g = lk_test_renew(k, 5, 10000); /* unknown tenure: answered without asking */
	ck_assert_int_eq(g.status, LK_REPLY_GONE);
}
END_TEST

START_TEST(test_garbage_range_without_header_is_fatal)
{
	struct lk_backend_key *k = fake_backend(FAKE_REPLY,
	                                        http_ok("{\"ID\":\"5\",\"TTL\":\"5\"}"), 1000);
	struct lk_test_reply g;

	/* A range answer without a header is not taken for "found nothing". */
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_FATAL);
	ck_assert_msg(strstr(g.err, "without a header"), "%s", g.err);
	/* A token this key never held maps to no create_revision: nothing of ours to delete,
	 * answered without asking. */
	g = lk_test_release(k, 5);
	ck_assert_int_eq(g.status, LK_REPLY_GONE);
}
END_TEST

START_TEST(test_garbage_truncated_body_is_error)
{
	struct lk_backend_key *k = fake_backend(FAKE_CLOSE,
	                                        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
	                                        "{\"ID\":\"1\"", 1000);
	struct lk_test_reply g;

	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_msg(strstr(g.err, "lease grant failed"), "%s", g.err);
}
END_TEST

START_TEST(test_garbage_http_500_with_error_body_is_error)
{
	static const char body[] = "{\"error\":\"boom\",\"code\":13,\"message\":\"etcdserver: boom\"}";
	char reply[512];
	struct lk_backend_key *k;
	struct lk_test_reply g;

	snprintf(reply, sizeof(reply),
	         "HTTP/1.1 500 Internal Server Error\r\nContent-Length: %zu\r\n\r\n%s",
	         strlen(body), body);
	k = fake_backend(FAKE_REPLY, reply, 1000);
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_msg(strstr(g.err, "HTTP 500: etcdserver: boom"), "%s", g.err);
}
END_TEST

START_TEST(test_garbage_http_400_is_fatal)
{
	static const char body[] = "{\"error\":\"bad\",\"code\":3,\"message\":\"bad\\nrequest\"}";
	char reply[512];
	struct lk_backend_key *k;
	struct lk_test_reply g;

	snprintf(reply, sizeof(reply), "HTTP/1.1 400 Bad Request\r\nContent-Length: %zu\r\n\r\n%s",
	         strlen(body), body);
	k = fake_backend(FAKE_REPLY, reply, 1000);
	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_FATAL);
	/* Server text is shown printable only. */
	ck_assert_msg(strstr(g.err, "HTTP 400: bad?request"), "%s", g.err);
}
END_TEST

START_TEST(test_garbage_slow_endless_response_times_out)
{
	struct lk_backend_key *k = fake_backend(FAKE_TRICKLE,
	                                        "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n{",
	                                        300);
	int64_t sent = lk_mono_ns();
	struct lk_test_reply g;

	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_msg(strstr(g.err, "timed out after 300ms"), "%s", g.err);
	ck_assert_int_lt((g.at_ns - sent) / 1000000, 900);
}
END_TEST

START_TEST(test_garbage_huge_response_is_capped)
{
	struct lk_backend_key *k = fake_backend(FAKE_FLOOD,
	                                        "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n",
	                                        5000);
	struct lk_test_reply g;

	g = lk_test_acquire(k, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_FATAL);
	ck_assert_msg(strstr(g.err, "response larger than"), "%s", g.err);
}
END_TEST

/* A fake etcd for watch streams, and what its processes share with the test. */
struct fake_watch_state {
	int watches;       /* watch requests so far */
	int send_delete;   /* set by the test: a resumed stream may report a DELETE now */
};

static struct fake_watch_state *fake_watch;

#define FAKE_WATCH_HEAD    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
#define FAKE_WATCH_CREATED "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n"

static bool fake_write(int fd, const char *s)
{
	return write(fd, s, strlen(s)) == (ssize_t)strlen(s);
}

/* One connection to the watch fake. The first watch stream is confirmed and then sends a
 * line that makes no sense; every later one is confirmed, waits for the test's word (or for
 * the client to hang up), reports a DELETE of KEY and stays open. Other requests (the
 * probe) get a status with a leader. */
static void fake_watch_conn(int fd)
{
	static const char garbage[] =
		"{\"result\":{\"events\":[{\"type\":\"DELETE\",\"kv\":{\"key\":\"%%%\"}}]}}\n";
	static const char deleted[] =
		"{\"result\":{\"header\":{\"revision\":\"6\"},\"events\":[{\"type\":\"DELETE\","
		"\"kv\":{\"key\":\"bGsvdGVzdC94\",\"mod_revision\":\"6\"}}]}}\n";
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char req[16384];

	while (fake_read_request(fd, req, sizeof(req))) {
		if (strncmp(req, "POST /v3/watch ", 15) != 0) {
			if (!fake_write(fd, http_ok("{\"header\":{\"revision\":\"5\"},\"leader\":\"1\"}")))
				return;
			continue;
		}
		if (__atomic_add_fetch(&fake_watch->watches, 1, __ATOMIC_SEQ_CST) == 1) {
			/* The garbage arrives with the confirmation, or right after it. */
			(void)fake_write(fd, FAKE_WATCH_HEAD FAKE_WATCH_CREATED);
			(void)fake_write(fd, garbage);
			return;
		}
		if (!fake_write(fd, FAKE_WATCH_HEAD FAKE_WATCH_CREATED))
			return;
		/* A client that hangs up makes the socket readable (EOF): stop then. */
		for (int i = 0; i < 1000 && !__atomic_load_n(&fake_watch->send_delete, __ATOMIC_SEQ_CST);
		     i++)
			if (poll(&pfd, 1, 20) != 0)
				return;
		if (fake_write(fd, deleted))
			(void)poll(&pfd, 1, 20000);
		return;
	}
}

static pid_t fake_watch_server(int *port)
{
	int lfd = -1;
	pid_t pid;

	fake_watch = mmap(NULL, sizeof(*fake_watch), PROT_READ | PROT_WRITE,
	                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert(fake_watch != MAP_FAILED);
	memset(fake_watch, 0, sizeof(*fake_watch));
	pid = lk_test_fork_listener(port, &lfd);
	if (pid > 0)
		return pid;
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			_exit(0);
		if (fork() == 0) {
			close(lfd);
			fake_watch_conn(fd);
			_exit(0);
		}
		close(fd);
	}
}

static bool log_has(const void *text)
{
	return strstr(logs.text, text) != NULL;
}

START_TEST(test_garbage_watch_stream_is_survived)
{
	char addr[64], err[256];
	struct opts o = { .endpoints = { addr }, .timeout_ms = 500 };
	struct lk_test_notified nt = { 0 };
	struct lk_backend_key *f;
	int port;

	fake_pid = fake_watch_server(&port);
	snprintf(addr, sizeof(addr), "http://127.0.0.1:%d", port);
	ck_assert_msg(make_backend(&o, err, sizeof(err)) == 0, "%s", err);
	f = lk_test_key_new("beta", &nt);
	be->ops->watch(f, true);

	/* The first stream is confirmed (a notice), then says something that makes no sense:
	 * the stream is given up, with a message. */
	ck_assert(lk_test_notified_within(&nt, LK_TEST_WAIT_MS));
	ck_assert_msg(lk_test_run_until(log_has, "bad watch response", LK_TEST_WAIT_MS), "%s",
	              logs.text);
	ck_assert_msg(strstr(logs.text, "watch on " KEY " broken"), "%s", logs.text);

	/* It is re-established: a second watch request, confirmed (a notice of its own). */
	nt.n = 0;
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_READY_MS),
	              "watch not resumed after the garbage:\n%s", logs.text);
	ck_assert_int_eq(__atomic_load_n(&fake_watch->watches, __ATOMIC_SEQ_CST), 2);

	/* The resumed stream is quiet until something is deleted, and then wakes the follower. */
	nt.n = 0;
	lk_test_run_for(200);
	ck_assert_int_eq(nt.n, 0);
	__atomic_store_n(&fake_watch->send_delete, 1, __ATOMIC_SEQ_CST);
	ck_assert_msg(lk_test_notified_within(&nt, LK_TEST_WAIT_MS),
	              "the resumed watch missed a DELETE:\n%s", logs.text);
	ck_assert_int_eq(__atomic_load_n(&fake_watch->watches, __ATOMIC_SEQ_CST), 2);
	be->ops->watch(f, false);
	lk_test_run_for(100);
}
END_TEST

START_TEST(test_watch_no_leader_fails_over)
{
	/* What a member that lost its leader sends on a watch created with "hasleader". */
	static const char reply[] =
		"HTTP/1.1 200 OK\r\n\r\n{\"result\":{\"created\":true}}\n"
		"{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\","
		"\"http_status\":\"Service Unavailable\"}}\n";
	char a1[64], a2[64], err[256];
	struct opts o = { .endpoints = { a1, a2 }, .timeout_ms = 500 };
	struct lk_test_notified nt = { 0 };
	struct lk_backend_key *f;
	int p1, p2;

	fake_pid = fake_server(&p1, FAKE_CLOSE, reply);
	fake_pid2 = fake_server(&p2, FAKE_CLOSE, reply);
	snprintf(a1, sizeof(a1), "http://127.0.0.1:%d", p1);
	snprintf(a2, sizeof(a2), "http://127.0.0.1:%d", p2);
	ck_assert_msg(make_backend(&o, err, sizeof(err)) == 0, "%s", err);
	f = be->ops->key_new(be, KEY, "beta", lk_test_on_notify, &nt);
	ck_assert_ptr_nonnull(f);
	be->ops->watch(f, true);
	ck_assert(lk_test_notified_within(&nt, LK_TEST_WAIT_MS));
	lk_test_run_for(300);
	ck_assert_msg(strstr(logs.text, "watch failed: etcdserver: no leader"), "%s", logs.text);
	ck_assert_msg(strstr(logs.text, "switching to"), "%s", logs.text);
}
END_TEST

/* ---- a wiped cluster, own orphans, a slow link ------------------------------------------ */

START_TEST(test_fence_seeded_from_the_clock_once)
{
	struct lk_backend_key *a, *b;
	struct timespec now;
	struct stored st;
	int64_t wall_us, fence;
	uint64_t t1, t2;

	start_backend(srv.address, 1000);
	a = lk_test_key_new("alpha", NULL);
	b = lk_test_key_new("beta", NULL);
	ck_assert_int_eq(etcd_get(&srv, KEY).fence, 0);
	clock_gettime(CLOCK_REALTIME, &now);
	wall_us = (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
	t1 = lk_test_acquire_ok(a, 10000);
	st = etcd_get(&srv, KEY);
	fence = st.fence;
	/* Seeded by that very acquire, from the wall clock in microseconds. */
	ck_assert_int_ge(fence, wall_us - 1000000);
	ck_assert_int_le(fence, wall_us + 60000000);
	ck_assert_uint_eq(t1, st.token);
	ck_assert_int_eq(lk_test_release(a, t1).status, LK_REPLY_OK);
	/* Kept, not re-seeded: the next token differs by the revisions in between. */
	t2 = lk_test_acquire_ok(b, 10000);
	st = etcd_get(&srv, KEY);
	ck_assert_int_eq(st.fence, fence);
	ck_assert_uint_eq(t2, (uint64_t)fence + (uint64_t)st.create_revision);
	ck_assert_uint_gt(t2, t1);
	ck_assert_uint_lt(t2 - t1, 10);
	/* The fence key sits beside the lock key, not under it. */
	ck_assert_int_eq(lk_test_release(b, t2).status, LK_REPLY_OK);
	ck_assert_int_eq(etcd_get(&srv, KEY).fence, fence);
}
END_TEST

START_TEST(test_tokens_increase_across_a_wipe_with_holdoff)
{
	struct lk_test_notified ntb = { 0 };
	struct lk_backend_key *a, *b;
	struct lk_test_reply g;
	char why[256] = "";
	int64_t before, until, fence;
	uint64_t t1, t2, t3;

	start_backend(srv.address, 1000);
	a = lk_test_key_new("alpha", NULL);
	b = lk_test_key_new("beta", &ntb);
	be->ops->watch(b, true);
	ck_assert(lk_test_notified_within(&ntb, LK_TEST_WAIT_MS));
	t1 = lk_test_acquire_ok(a, 3000);
	ck_assert_int_eq(lk_test_release(a, t1).status, LK_REPLY_OK);
	t2 = lk_test_acquire_ok(a, 3000);
	fence = etcd_get(&srv, KEY).fence;
	ck_assert_int_eq(be->ops->holdoff_until(a, 3000, why, sizeof(why)), 0);

	/* Wiped during the tenure: the renewal finds no lease, the next acquire finds the
	 * revision gone back, and from then on new tenures hold off for one ttl. */
	wipe_etcd(&srv);
	g = lk_test_renew(a, t2, 3000);
	if (g.status == LK_REPLY_ERROR) /* an old pooled connection */
		g = lk_test_renew(a, t2, 3000);
	ck_assert_int_eq(g.status, LK_REPLY_GONE);
	before = lk_mono_ns();
	g = lk_test_acquire(a, 3000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_msg(strstr(g.err, "revision went back"), "%s", g.err);
	until = be->ops->holdoff_until(a, 3000, why, sizeof(why));
	ck_assert_int_gt(until, before);

	/* The new cluster has no fence key: seeded again from the clock, far above. */
	t3 = lk_test_acquire_answered(a, 3000).token;
	ck_assert_uint_gt(t3, t2);
	ck_assert_int_gt(etcd_get(&srv, KEY).fence, fence);
	ck_assert_int_lt(etcd_get(&srv, KEY).create_revision, 10);
	printf("tokens across a wipe: %" PRIu64 " %" PRIu64 " | %" PRIu64 "; hold-off %" PRId64
	       "ms\n", t1, t2, t3, (until - before) / 1000000);
	/* The follower's watch follows the new cluster from its start, not from the old
	 * cluster's revisions (which the new one has not reached): it hears the release. */
	lk_test_run_for(300);
	ntb.n = 0;
	ck_assert_int_eq(lk_test_release(a, t3).status, LK_REPLY_OK);
	ck_assert_msg(lk_test_notified_within(&ntb, LK_TEST_WAIT_MS),
	              "the watch missed a delete on the new cluster:\n%s", logs.text);
}
END_TEST

/* Rebuilt with another cluster token: another cluster id. An idle backend learns it from its
 * reachability probe, a busy one from any answer; either way new tenures hold off. */
START_TEST(test_another_cluster_id_holds_off)
{
	struct lk_test_notified nt = { 0 };
	struct lk_backend_key *a;
	char why[256] = "";
	uint64_t t1, t2;

	start_backend(srv.address, 1000);
	a = lk_test_key_new("alpha", &nt);
	t1 = lk_test_acquire_ok(a, 3000);
	ck_assert_int_lt(srv.n_args, LK_TEST_MAX_ARGS);
	srv.args[srv.n_args] = strdup("--initial-cluster-token=lk-test-rebuilt");
	ck_assert_ptr_nonnull(srv.args[srv.n_args]);
	srv.n_args++;
	wipe_etcd(&srv);
	for (int i = 0; i < 20 && be->ops->holdoff_until(a, 3000, why, sizeof(why)) == 0; i++) {
		(void)lk_test_renew(a, t1, 3000);
		lk_test_run_for(100);
	}
	ck_assert_msg(strstr(why, "cluster id changed"), "%s\n%s", why, logs.text);
	ck_assert_int_gt(be->ops->holdoff_until(a, 3000, why, sizeof(why)), lk_mono_ns());
	ck_assert_msg(nt.reconnected > 0, "no RECONNECTED notice");
	t2 = lk_test_acquire_answered(a, 3000).token;
	ck_assert_uint_gt(t2, t1);
}
END_TEST

/* A TCP proxy in front of etcd that understands just enough HTTP/1.1: each request and each
 * answer waits `delay_ms` (one way), the answers to the first `drop_txns` writing txns are
 * swallowed (etcd applied them; the client times out) and lease revokes are refused
 * (connection closed) while `drop_revokes` is set. Watch streams (chunked) are relayed as they
 * come. */
struct proxy_ctl {
	int delay_ms;
	int drop_txns;
	int drop_revokes;
	int requests;
};

static struct proxy_ctl *pctl;

static void proxy_sleep(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	while (ms > 0 && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static bool proxy_write(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);

		if (w <= 0)
			return false;
		buf += w;
		n -= (size_t)w;
	}
	return true;
}

/* Relay both ways until either side closes. */
static void proxy_relay(int a, int b)
{
	char buf[16384];
	struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };

	while (poll(p, 2, -1) > 0) {
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (!p[i].revents)
				continue;
			n = read(p[i].fd, buf, sizeof(buf));
			if (n <= 0 || !proxy_write(p[1 - i].fd, buf, (size_t)n))
				return;
		}
	}
}

static void proxy_conn(int cfd, int upstream)
{
	static char req[65536], resp[1 << 20];
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int ufd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_port = htons((uint16_t)upstream);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(ufd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		return;
	while (fake_read_request(cfd, req, sizeof(req))) {
		size_t n = 0, want = 0, reqlen;
		char *end, *cl;
		bool txn = strncmp(req, "POST /v3/kv/txn ", 16) == 0;
		bool watch = strncmp(req, "POST /v3/watch ", 15) == 0;

		__atomic_add_fetch(&pctl->requests, 1, __ATOMIC_SEQ_CST);
		end = strstr(req, "\r\n\r\n");
		cl = strcasestr(req, "Content-Length:");
		reqlen = (size_t)(end + 4 - req) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
		/* Only writing txns: an acquire's first look is a read-only txn (no compare). */
		txn = txn && memmem(end + 4, reqlen - (size_t)(end + 4 - req), "\"compare\"", 9);
		if (strncmp(req, "POST /v3/lease/revoke ", 22) == 0 &&
		    __atomic_load_n(&pctl->drop_revokes, __ATOMIC_SEQ_CST))
			return;
		proxy_sleep(__atomic_load_n(&pctl->delay_ms, __ATOMIC_SEQ_CST));
		if (!proxy_write(ufd, req, reqlen))
			return;
		for (;;) {
			ssize_t got = read(ufd, resp + n, sizeof(resp) - 1 - n);

			if (got <= 0)
				return;
			n += (size_t)got;
			resp[n] = '\0';
			end = strstr(resp, "\r\n\r\n");
			if (!end)
				continue;
			/* A watch is an endless stream; a keepalive is a stream too (one result per
			 * request body), but ends with the request. */
			if (strcasestr(resp, "Transfer-Encoding: chunked") && watch) {
				if (proxy_write(cfd, resp, n))
					proxy_relay(cfd, ufd);
				return;
			}
			if (strcasestr(resp, "Transfer-Encoding: chunked")) {
				char *last = strstr(end, "\r\n0\r\n\r\n");

				if (!last)
					continue;
				want = (size_t)(last + 7 - resp);
				break;
			}
			cl = strcasestr(resp, "Content-Length:");
			want = (size_t)(end + 4 - resp) + (cl ? strtoul(cl + 15, NULL, 10) : 0);
			if (n >= want)
				break;
		}
		if (txn && __atomic_load_n(&pctl->drop_txns, __ATOMIC_SEQ_CST) > 0) {
			__atomic_sub_fetch(&pctl->drop_txns, 1, __ATOMIC_SEQ_CST);
			/* Applied, never answered: hold the connection until the client gives up. */
			while (read(cfd, req, sizeof(req)) > 0)
				;
			return;
		}
		proxy_sleep(__atomic_load_n(&pctl->delay_ms, __ATOMIC_SEQ_CST));
		if (!proxy_write(cfd, resp, want))
			return;
	}
}

static pid_t proxy_start(int upstream, int *port)
{
	int lfd = -1;
	pid_t pid;

	pctl = mmap(NULL, sizeof(*pctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert(pctl != MAP_FAILED);
	memset(pctl, 0, sizeof(*pctl));
	pid = lk_test_fork_listener(port, &lfd);
	if (pid > 0)
		return pid;
	signal(SIGPIPE, SIG_IGN);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			_exit(0);
		if (fork() == 0) {
			alarm(30);
			close(lfd);
			proxy_conn(fd, upstream);
			_exit(0);
		}
		close(fd);
	}
}

static pid_t proxy_pid;

static void teardown_proxy(void)
{
	teardown_loop();
	if (proxy_pid > 0) {
		kill(proxy_pid, SIGKILL);
		waitpid(proxy_pid, NULL, 0);
		proxy_pid = 0;
	}
}

START_TEST(test_own_orphan_is_adopted_not_waited_for)
{
	struct lk_backend_key *a;
	struct lk_test_reply g;
	struct stored st;
	char addr[64];
	int port;
	int64_t orphan_rev;

	proxy_pid = proxy_start(srv.port, &port);
	snprintf(addr, sizeof(addr), "http://127.0.0.1:%d", port);
	start_backend(addr, 500);
	a = lk_test_key_new("alpha", NULL);

	/* The candidate txn goes through but its answer is lost: our key is queued, and we
	 * never heard of it. */
	__atomic_store_n(&pctl->drop_txns, 1, __ATOMIC_SEQ_CST);
	g = lk_test_acquire(a, 30000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	lk_test_run_for(200);
	st = etcd_get(&srv, KEY);
	ck_assert_str_eq(st.value, "alpha");
	orphan_rev = st.create_revision;
	ck_assert_int_gt(orphan_rev, 0);

	/* The next acquire names the same key (our lease, our key's number), finds it, and
	 * leads with it: not HELD by ourselves, no 30s wait, no second key. */
	__atomic_store_n(&pctl->drop_txns, 0, __ATOMIC_SEQ_CST);
	g = lk_test_acquire(a, 30000);
	ck_assert_msg(g.status == LK_REPLY_OK, "status %d %s holder %s\n%s", g.status, g.err,
	              g.holder, logs.text);
	st = etcd_get(&srv, KEY);
	ck_assert_int_eq(st.create_revision, orphan_rev);
	ck_assert_int_eq(st.candidates, 1);
	ck_assert_uint_eq(g.token, st.token);
}
END_TEST

/* A candidate of another agent: a key under KEY/ on a lease of its own (ttl_s), queued as an
 * agent queues (the seq key rewritten with it). Returns its lease. */
static int64_t foreign_candidate(const char *name, const char *holder, int64_t ttl_s)
{
	char json[64], lease_hex[32], opt[64];

	snprintf(json, sizeof(json), "{\"TTL\":\"%" PRId64 "\"}", ttl_s);
	int64_t lease = etcd_post_int("/v3/lease/grant", json, "ID");

	ck_assert_int_gt(lease, 0);
	snprintf(lease_hex, sizeof(lease_hex), "%" PRIx64, (uint64_t)lease);
	snprintf(opt, sizeof(opt), "--lease=%s", lease_hex);
	ck_assert_int_eq(lk_test_etcdctl(&srv, (char[4096]){ 0 }, 4096, "put", opt, name, holder,
	                                 NULL), 0);
	etcdctl_ok(&srv, "put", KEY ":seq", "");
	if (!etcd_get(&srv, KEY).fence)
		etcdctl_ok(&srv, "put", KEY ":fence", "1000");
	return lease;
}

/* The foreign candidate releases as an agent does: one txn deletes its key and writes the
 * marker "released <its create_revision>". */
static void foreign_release(const char *name, int64_t lease)
{
	char *body, *answer;
	struct stored st = etcd_get(&srv, KEY);

	ck_assert_str_eq(st.name, name);
	ck_assert_int_eq(lk_etcd_json_txn_release(name, strlen(name), KEY ":state",
	                                          strlen(KEY ":state"), st.create_revision, lease,
	                                          &body), 0);
	answer = lk_test_etcd_post(&srv, "/v3/kv/txn", body, NULL);
	ck_assert_ptr_nonnull(answer);
	ck_assert_msg(strstr(answer, "\"succeeded\":true"), "%s", answer);
	free(answer);
	free(body);
}

/* The election's guard against an end without a release. A candidate whose only older key was
 * released (the marker names that key) leads at once; one whose older key vanished otherwise
 * (its lease revoked, as an etcd whose frozen leader wakes up revokes it while its holder
 * still renews) waits one ttl from the look that first found it oldest, and holdoff_until()
 * says why. */
START_TEST(test_unreleased_end_holds_off_one_ttl)
{
	struct lk_backend_key *b;
	struct lk_test_reply g;
	int64_t t0, until, lease;
	uint64_t tok;
	char why[512] = "";

	start_backend(srv.address, 1000);
	b = lk_test_key_new("beta", NULL);

	/* Released: the next in line leads at once, with no write of its own. */
	lease = foreign_candidate(KEY "/f1", "alpha", 30);
	g = lk_test_acquire(b, 2000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert_str_eq(g.holder, "alpha");
	foreign_release(KEY "/f1", lease);
	t0 = lk_mono_ns();
	tok = lk_test_acquire_ok(b, 2000);
	ck_assert_int_lt(lk_mono_ns() - t0, 1000000000LL);
	ck_assert_int_eq(be->ops->holdoff_until(b, 2000, why, sizeof(why)), 0);
	ck_assert_int_eq(lk_test_release(b, tok).status, LK_REPLY_OK);
	ck_assert_str_ne(etcd_get(&srv, KEY).state, "");

	/* Revoked: the next in line waits one ttl. */
	lease = foreign_candidate(KEY "/f2", "gamma", 30);
	g = lk_test_acquire(b, 2000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert_str_eq(g.holder, "gamma");
	lease_revoke(lease);
	t0 = lk_mono_ns();
	g = lk_test_acquire(b, 2000);
	ck_assert_msg(g.status == LK_REPLY_HELD, "%d %s", g.status, g.err);
	ck_assert_str_eq(g.holder, "");
	until = be->ops->holdoff_until(b, 2000, why, sizeof(why));
	ck_assert_int_ge(until, t0 + 2000000000LL);
	ck_assert_int_le(until, lk_mono_ns() + 2000000000LL);
	ck_assert_msg(strstr(why, "ended without a release"), "%s", why);
	/* Asked again during the wait: still HELD, and the wait does not start over. */
	lk_test_run_for(300);
	ck_assert_int_eq(lk_test_acquire(b, 2000).status, LK_REPLY_HELD);
	ck_assert_int_eq(be->ops->holdoff_until(b, 2000, NULL, 0), until);
	lk_test_run_for((int)((until - lk_mono_ns()) / 1000000) + 20);
	ck_assert_int_eq(be->ops->holdoff_until(b, 2000, NULL, 0), 0);
	tok = lk_test_acquire_ok(b, 2000);
	printf("unreleased end: the next tenure began %.0f ms after the key was found gone "
	       "(ttl 2000 ms)\n", (double)(lk_mono_ns() - t0) / 1e6);
	ck_assert_int_ge(lk_mono_ns() - t0, 2000000000LL);
	ck_assert_uint_eq(tok, etcd_get(&srv, KEY).token);
	ck_assert_int_eq(lk_test_release(b, tok).status, LK_REPLY_OK);

	/* A new candidate that finds nobody older, after a tenure that ended unreleased (the
	 * candidate before it arrived after the last release): it waits too. */
	lease = foreign_candidate(KEY "/f3", "delta", 30);
	lease_revoke(lease);
	t0 = lk_mono_ns();
	g = lk_test_acquire(b, 2000);
	ck_assert_msg(g.status == LK_REPLY_HELD, "%d %s", g.status, g.err);
	ck_assert_int_ge(be->ops->holdoff_until(b, 2000, NULL, 0), t0 + 2000000000LL);
}
END_TEST

/* FIFO: candidates lead in the order they queued, and FOLLOWER's holder is the oldest's. */
START_TEST(test_candidates_lead_in_queue_order)
{
	struct lk_backend_key *k[3];
	struct lk_test_reply g;
	const char *names[3] = { "first", "second", "third" };
	uint64_t tok[3];

	start_backend(srv.address, 1000);
	for (int i = 0; i < 3; i++)
		k[i] = lk_test_key_new(names[i], NULL);
	tok[0] = lk_test_acquire_ok(k[0], 10000);
	/* Queued as third before second. */
	g = lk_test_acquire(k[2], 10000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert_str_eq(g.holder, "first");
	g = lk_test_acquire(k[1], 10000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert_str_eq(g.holder, "first");
	ck_assert_int_eq(etcd_get(&srv, KEY).candidates, 3);
	ck_assert_int_eq(lk_test_release(k[0], tok[0]).status, LK_REPLY_OK);
	/* The second to queue (k[2]) leads; k[1] is behind it. */
	g = lk_test_acquire(k[1], 10000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert_str_eq(g.holder, "third");
	tok[2] = lk_test_acquire_ok(k[2], 10000);
	ck_assert_uint_gt(tok[2], tok[0]);
	ck_assert_int_eq(lk_test_release(k[2], tok[2]).status, LK_REPLY_OK);
	tok[1] = lk_test_acquire_ok(k[1], 10000);
	ck_assert_uint_gt(tok[1], tok[2]);
	/* A candidate that stops campaigning leaves the queue: its key goes. */
	g = lk_test_acquire(k[0], 10000);
	ck_assert_int_eq(g.status, LK_REPLY_HELD);
	ck_assert_int_eq(etcd_get(&srv, KEY).candidates, 2);
	be->ops->watch(k[0], true);
	be->ops->watch(k[0], false);
	lk_test_run_for(300);
	ck_assert_int_eq(etcd_get(&srv, KEY).candidates, 1);
}
END_TEST

/* A handoff costs the successor no write: the release is the last write before it leads. */
START_TEST(test_handoff_costs_the_successor_no_write)
{
	struct lk_backend_key *a, *b;
	long long before;
	uint64_t tok;

	start_backend(srv.address, 1000);
	a = lk_test_key_new("alpha", NULL);
	b = lk_test_key_new("beta", NULL);
	tok = lk_test_acquire_ok(a, 10000);
	ck_assert_int_eq(lk_test_acquire(b, 10000).status, LK_REPLY_HELD);
	ck_assert_int_eq(lk_test_release(a, tok).status, LK_REPLY_OK);
	before = proposals();
	ck_assert_uint_gt(lk_test_acquire_ok(b, 10000), tok);
	lk_test_run_for(100);
	ck_assert_int_eq(proposals(), before);
}
END_TEST

/* The successor whose watch saw its only older candidate released leads from that event
 * alone: no look, no request to etcd at all (as concurrency.Election's waiter). Anything it
 * cannot be sure of (here: the fence key changed) makes it look first. */
START_TEST(test_watched_release_leads_without_asking_etcd)
{
	struct lk_test_notified nt = { 0 };
	struct lk_backend_key *a, *b;
	long long reads, writes;
	uint64_t tok, tb;

	start_backend(srv.address, 1000);
	a = lk_test_key_new("alpha", NULL);
	b = lk_test_key_new("beta", &nt);
	tok = lk_test_acquire_ok(a, 10000);
	ck_assert_int_eq(lk_test_acquire(b, 10000).status, LK_REPLY_HELD);
	be->ops->watch(b, true);
	ck_assert(lk_test_notified_within(&nt, LK_TEST_WAIT_MS));
	lk_test_run_for(100);
	nt.n = 0;
	ck_assert_int_eq(lk_test_release(a, tok).status, LK_REPLY_OK);
	ck_assert(lk_test_notified_within(&nt, LK_TEST_WAIT_MS));
	reads = etcd_metric("etcd_mvcc_range_total") + etcd_metric("etcd_mvcc_txn_total");
	writes = proposals();
	tb = lk_test_acquire_ok(b, 10000);
	ck_assert_int_eq(etcd_metric("etcd_mvcc_range_total") + etcd_metric("etcd_mvcc_txn_total"),
	                 reads);
	ck_assert_int_eq(proposals(), writes);
	ck_assert_uint_gt(tb, tok);
	ck_assert_uint_eq(tb, etcd_get(&srv, KEY).token);
	/* The renewal proves it the usual way. */
	ck_assert_int_eq(lk_test_renew(b, tb, 10000).status, LK_REPLY_OK);

	/* The fence key changes while a waits behind b: a looks before it leads. */
	ck_assert_int_eq(lk_test_acquire(a, 10000).status, LK_REPLY_HELD);
	be->ops->watch(a, true);
	lk_test_run_for(200);
	etcdctl_ok(&srv, "put", KEY ":fence", "2000000000000000");
	lk_test_run_for(200);
	ck_assert_int_eq(lk_test_release(b, tb).status, LK_REPLY_OK);
	lk_test_run_for(200);
	reads = etcd_metric("etcd_mvcc_range_total") + etcd_metric("etcd_mvcc_txn_total");
	tok = lk_test_acquire_ok(a, 10000);
	ck_assert_uint_eq(tok, 2000000000000000ULL + (uint64_t)etcd_get(&srv, KEY).create_revision);
	ck_assert_int_gt(etcd_metric("etcd_mvcc_range_total") + etcd_metric("etcd_mvcc_txn_total"),
	                 reads);
}
END_TEST

/* Renewals that leave in one turn of the loop share one keepalive and read their keys in
 * shared txns of up to 64 keys: 100 renewals cost 2 txns, not 100. A key that is not plainly
 * ours in that answer still gets its own look, which tells TAKEN from GONE. */
START_TEST(test_renewals_share_keepalives_and_txns)
{
	enum { N = 100 };
	struct lk_backend_key *k[N];
	struct lk_test_reply g[N];
	uint64_t tok[N];
	long long txns;
	char name[32];

	memset(g, 0, sizeof(g));
	start_backend(srv.address, 1000);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "lk/batch/%03d", i);
		k[i] = be->ops->key_new(be, name, "alpha", lk_test_on_notify, NULL);
		ck_assert_ptr_nonnull(k[i]);
		tok[i] = lk_test_acquire_ok(k[i], 10000);
	}
	lk_test_run_for(100); /* past the keepalive sharing window */
	txns = etcd_metric("etcd_mvcc_txn_total");
	for (int i = 0; i < N; i++)
		ck_assert_int_eq(be->ops->renew(k[i], tok[i], 10000, lk_test_on_reply, &g[i]), 0);
	for (int i = 0; i < N; i++) {
		lk_test_wait_reply(&g[i]);
		ck_assert_msg(g[i].status == LK_REPLY_OK, "%d: %d %s", i, g[i].status, g[i].err);
	}
	ck_assert_int_eq(etcd_metric("etcd_mvcc_txn_total") - txns, 2);
	/* Every renewal was proven by the one keepalive: the same send time. */
	for (int i = 1; i < N; i++)
		ck_assert_int_eq(g[i].sent_ns, g[0].sent_ns);

	/* One key taken among many: its renewal alone says TAKEN, with the holder. */
	etcdctl_ok(&srv, "put", etcd_get(&srv, "lk/batch/007").name, "intruder");
	for (int i = 0; i < N; i++) {
		memset(&g[i], 0, sizeof(g[i]));
		ck_assert_int_eq(be->ops->renew(k[i], tok[i], 10000, lk_test_on_reply, &g[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		lk_test_wait_reply(&g[i]);
		ck_assert_int_eq(g[i].status, i == 7 ? LK_REPLY_TAKEN : LK_REPLY_OK);
	}
	ck_assert_str_eq(g[7].holder, "intruder");
}
END_TEST

/* Every key of the backend shares one lease per ttl: keepalives do not grow with locks. */
START_TEST(test_keys_share_one_lease)
{
	struct lk_backend_key *k[5];
	char name[32];
	int64_t lease = 0;

	start_backend(srv.address, 1000);
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "lk/share/%d", i);
		k[i] = be->ops->key_new(be, name, "alpha", lk_test_on_notify, NULL);
		ck_assert_ptr_nonnull(k[i]);
		lk_test_acquire_ok(k[i], 10000);
		if (i == 0)
			lease = etcd_get(&srv, name).lease;
		ck_assert_int_eq(etcd_get(&srv, name).lease, lease);
	}
	ck_assert_int_gt(lease, 0);
}
END_TEST

/* Many acquires in flight at once: their answers come back in any order, each with the
 * revision of its own moment. None of that is a cluster going back in time (I10): no hold-off,
 * no "went back" warning, every lock held. */
START_TEST(test_concurrent_answers_out_of_order_are_no_restore)
{
	enum { N = 40 };
	struct lk_backend_key *k[N];
	struct lk_test_reply g[N];
	char name[32], why[512] = "";
	int held = 0;

	memset(g, 0, sizeof(g));
	start_backend(srv.address, 1000);
	for (int i = 0; i < N; i++) {
		snprintf(name, sizeof(name), "lk/many/%02d", i);
		k[i] = be->ops->key_new(be, name, "alpha", lk_test_on_notify, NULL);
		ck_assert_ptr_nonnull(k[i]);
	}
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++) {
			memset(&g[i], 0, sizeof(g[i]));
			ck_assert_int_eq(be->ops->acquire(k[i], 10000, lk_test_on_reply, &g[i]), 0);
		}
		for (int i = 0; i < N; i++)
			lk_test_wait_reply(&g[i]);
		for (int i = 0; i < N; i++) {
			held += g[i].status == LK_REPLY_OK;
			ck_assert_int_eq(be->ops->holdoff_until(k[i], 10000, why, sizeof(why)), 0);
		}
		/* Release them all at once too, so that the next round starts from new revisions. */
		for (int i = 0; i < N; i++) {
			uint64_t tok = g[i].token;

			memset(&g[i], 0, sizeof(g[i]));
			ck_assert_int_eq(be->ops->release(k[i], tok, lk_test_on_reply, &g[i]), 0);
		}
		for (int i = 0; i < N; i++)
			lk_test_wait_reply(&g[i]);
	}
	ck_assert_int_eq(held, 3 * N);
	ck_assert_msg(!strstr(logs.text, "went back"), "%s", logs.text);
}
END_TEST

/* An acquire whose key was freed meanwhile gives its tenure back as a release would: the
 * marker names it, so the next replica need not wait. */
START_TEST(test_given_back_tenure_is_released)
{
	struct lk_backend_key *k, *k2;
	struct lk_test_reply g = { 0 };
	char why[512] = "";

	start_backend(srv.address, 1000);
	k = lk_test_key_new("alpha", NULL);
	k2 = lk_test_key_new("beta", NULL);
	ck_assert_int_eq(be->ops->acquire(k, 10000, lk_test_on_reply, &g), 0);
	be->ops->key_free(k);
	lk_test_run_for(500);
	ck_assert_int_eq(g.n, 0);
	ck_assert_int_eq(etcd_get(&srv, KEY).candidates, 0);
	ck_assert_msg(strncmp(etcd_get(&srv, KEY).state, "released ", 9) == 0, "%s",
	              etcd_get(&srv, KEY).state);
	ck_assert_int_gt(lk_test_acquire_ok(k2, 10000), 0);
	ck_assert_int_eq(be->ops->holdoff_until(k2, 10000, why, sizeof(why)), 0);
}
END_TEST

/* 400ms one way on every request and answer: an acquire (grant, txn) takes 1.6s, a renewal
 * (keepalive, look) 1.6s, each request 0.8s. With one timeout shared by a chain
 * this never worked; with a timeout per request it does. */
START_TEST(test_slow_link_each_request_has_its_own_timeout)
{
	struct lk_backend_key *a;
	struct lk_test_reply g;
	char addr[64];
	int port;
	int64_t t0;

	proxy_pid = proxy_start(srv.port, &port);
	snprintf(addr, sizeof(addr), "http://127.0.0.1:%d", port);
	start_backend(addr, 1000);
	a = lk_test_key_new("alpha", NULL);
	__atomic_store_n(&pctl->delay_ms, 200, __ATOMIC_SEQ_CST);
	t0 = lk_mono_ns();
	g = lk_test_acquire(a, 10000);
	ck_assert_msg(g.status == LK_REPLY_OK, "%d %s", g.status, g.err);
	ck_assert_int_ge(g.at_ns - t0, 2 * 400 * 1000000LL);
	printf("acquire at 400ms round trip, timeout 1s: %" PRId64 "ms\n", (g.at_ns - t0) / 1000000);
	t0 = lk_mono_ns();
	g = lk_test_renew(a, g.token, 10000);
	ck_assert_msg(g.status == LK_REPLY_OK, "%d %s", g.status, g.err);
	ck_assert_int_ge(g.at_ns - t0, 2 * 400 * 1000000LL);
	/* A round trip longer than the timeout still fails, and within about one timeout. */
	__atomic_store_n(&pctl->delay_ms, 600, __ATOMIC_SEQ_CST);
	t0 = lk_mono_ns();
	g = lk_test_renew(a, g.token, 10000);
	ck_assert_int_eq(g.status, LK_REPLY_ERROR);
	ck_assert_int_lt(g.at_ns - t0, 2000 * 1000000LL);
}
END_TEST

static Suite *etcd_suite(void)
{
	Suite *s = suite_create("etcd");
	TCase *tc;

	lk_contract_add(s, &etcd_contract);

	tc = tcase_create("protocol");
	tcase_add_checked_fixture(tc, setup_etcd, teardown_loop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_held_key_costs_a_follower_no_write);
	tcase_add_test(tc, test_granted_ttl_is_what_etcd_granted);
	tcase_add_test(tc, test_ttl_rounds_up_to_whole_seconds);
	tcase_add_test(tc, test_expiry_and_external_delete_notify);
	tcase_add_test(tc, test_frozen_watch_notifies_after_thaw);
	suite_add_tcase(s, tc);

	tc = tcase_create("loss");
	tcase_add_checked_fixture(tc, setup_etcd, teardown_proxy);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_fence_seeded_from_the_clock_once);
	tcase_add_test(tc, test_tokens_increase_across_a_wipe_with_holdoff);
	tcase_add_test(tc, test_another_cluster_id_holds_off);
	tcase_add_test(tc, test_own_orphan_is_adopted_not_waited_for);
	tcase_add_test(tc, test_unreleased_end_holds_off_one_ttl);
	tcase_add_test(tc, test_concurrent_answers_out_of_order_are_no_restore);
	tcase_add_test(tc, test_given_back_tenure_is_released);
	tcase_add_test(tc, test_candidates_lead_in_queue_order);
	tcase_add_test(tc, test_handoff_costs_the_successor_no_write);
	tcase_add_test(tc, test_keys_share_one_lease);
	tcase_add_test(tc, test_renewals_share_keepalives_and_txns);
	tcase_add_test(tc, test_watched_release_leads_without_asking_etcd);
	tcase_add_test(tc, test_slow_link_each_request_has_its_own_timeout);
	suite_add_tcase(s, tc);

	tc = tcase_create("cluster");
	tcase_add_checked_fixture(tc, setup_cluster, teardown_loop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_cluster_failover_keeps_renewing);
	tcase_add_test(tc, test_cluster_leader_loss_recovers);
	tcase_add_test(tc, test_cluster_frozen_member_fails_over);
	suite_add_tcase(s, tc);

	tc = tcase_create("tls");
	tcase_add_checked_fixture(tc, setup_etcd_tls, teardown_loop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_tls_right_certificates_work);
	tcase_add_test(tc, test_tls_wrong_ca_errors);
	tcase_add_test(tc, test_tls_missing_or_wrong_client_certificate_errors);
	tcase_add_test(tc, test_tls_plain_http_to_https_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("auth");
	tcase_add_checked_fixture(tc, setup_etcd_auth, teardown_loop);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_auth_token_lost_on_restart_reauthenticates);
	suite_add_tcase(s, tc);

	tc = tcase_create("offline");
	tcase_add_checked_fixture(tc, setup_loop, teardown_fake);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_bad_configs_fail_new);
	tcase_add_test(tc, test_garbage_invalid_json_is_fatal);
	tcase_add_test(tc, test_garbage_wrong_types_are_fatal);
	tcase_add_test(tc, test_garbage_range_without_header_is_fatal);
	tcase_add_test(tc, test_garbage_truncated_body_is_error);
	tcase_add_test(tc, test_garbage_http_500_with_error_body_is_error);
	tcase_add_test(tc, test_garbage_http_400_is_fatal);
	tcase_add_test(tc, test_garbage_slow_endless_response_times_out);
	tcase_add_test(tc, test_garbage_huge_response_is_capped);
	tcase_add_test(tc, test_garbage_watch_stream_is_survived);
	tcase_add_test(tc, test_watch_no_leader_fails_over);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return lk_test_run_suite(etcd_suite());
}

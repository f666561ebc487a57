/* lk_config_parse and lk_config_load: the configuration example, defaults, ${VAR}
 * expansion, and every
 * error and warning with its exact "FILE:LINE:COL: FIELD: MESSAGE" text. */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/config.h"
#include "locks/backend.h"

#define NAME "config.yaml"

/* One redis backend in lines 1-3, so that a lock's fields start on line 5. */
#define ONE_BACKEND "backends:\n  - name: main\n    type: redis\n"

static char tmpdir[64];
static const char *const tmp_files[] = { "key", "password", "ca.pem", "cert.pem", "key.pem" };

static void write_file(const char *dir, const char *name, const char *content, size_t len)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, content, len), (ssize_t)len);
	close(fd);
}

/* Every test runs in its own process (CK_FORK), so the environment set here is private. */
static void setup(void)
{
	strcpy(tmpdir, "/tmp/check_config.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	for (size_t i = 0; i < sizeof(tmp_files) / sizeof(tmp_files[0]); i++)
		write_file(tmpdir, tmp_files[i], "x", 1);
	setenv("LK_TEST_DIR", tmpdir, 1);
	setenv("POD_NAME", "pod-7", 1);
	setenv("HOSTNAME", "host-1", 1);
	setenv("LK_EMPTY", "", 1);
	unsetenv("LK_UNSET");
}

static void teardown(void)
{
	char path[256];

	for (size_t i = 0; i < sizeof(tmp_files) / sizeof(tmp_files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmpdir, tmp_files[i]);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/big.yaml", tmpdir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/ok.yaml", tmpdir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/huge.yaml", tmpdir);
	unlink(path);
	rmdir(tmpdir);
}

static int parse(const char *yaml, struct lk_config **cfg, struct lk_config_diags *d)
{
	memset(d, 0, sizeof(*d));
	return lk_config_parse(NAME, yaml, strlen(yaml), cfg, d);
}

static char *join_diags(char **v, size_t n)
{
	static char buf[16384];
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && o < sizeof(buf); i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "\n    %s", v[i]);
	return buf;
}

static struct lk_config *parse_ok(const char *yaml)
{
	struct lk_config_diags d;
	struct lk_config *cfg = NULL;
	int r = parse(yaml, &cfg, &d);

	ck_assert_msg(r == 0, "parse failed (%d):%s", r, join_diags(d.errors, d.n_errors));
	ck_assert_ptr_nonnull(cfg);
	ck_assert_msg(d.n_warnings == 0, "unexpected warnings:%s",
	              join_diags(d.warnings, d.n_warnings));
	lk_config_diags_clear(&d);
	return cfg;
}

static void check_lines(const char *what, char **got, size_t n_got, const char *const *want,
                        size_t n_want)
{
	char wanted[8192];
	size_t o = 0;

	wanted[0] = '\0';
	for (size_t i = 0; i < n_want; i++)
		o += (size_t)snprintf(wanted + o, sizeof(wanted) - o, "\n    %s", want[i]);
	ck_assert_msg(n_got == n_want, "expected %zu %s:%s\ngot %zu:%s", n_want, what, wanted,
	              n_got, join_diags(got, n_got));
	for (size_t i = 0; i < n_want; i++)
		ck_assert_msg(strcmp(got[i], want[i]) == 0, "%s[%zu]:\n  want %s\n  got  %s", what, i,
		              want[i], got[i]);
}

/* Parse yaml and require exactly these errors, in this order, and no config. */
static void expect_errors(const char *yaml, const char *const *want, size_t n)
{
	struct lk_config *sentinel = (struct lk_config *)&n, *cfg = sentinel;
	struct lk_config_diags d;
	int r = parse(yaml, &cfg, &d);

	ck_assert_msg(r == -EINVAL, "expected -EINVAL, got %d", r);
	ck_assert_msg(cfg == sentinel, "the out-parameter was written on failure");
	check_lines("errors", d.errors, d.n_errors, want, n);
	lk_config_diags_clear(&d);
}

#define LIST(...) (const char *const[]){ __VA_ARGS__ }, \
	sizeof((const char *const[]){ __VA_ARGS__ }) / sizeof(const char *)
#define EXPECT_ERRORS(yaml, ...) expect_errors((yaml), LIST(__VA_ARGS__))

/* Parse yaml, require success with exactly these warnings, and return the config. */
static struct lk_config *expect_warnings(const char *yaml, const char *const *want, size_t n)
{
	struct lk_config *cfg = NULL;
	struct lk_config_diags d;
	int r = parse(yaml, &cfg, &d);

	ck_assert_msg(r == 0, "parse failed (%d):%s", r, join_diags(d.errors, d.n_errors));
	check_lines("warnings", d.warnings, d.n_warnings, want, n);
	lk_config_diags_clear(&d);
	return cfg;
}

#define EXPECT_WARNINGS(yaml, ...) expect_warnings((yaml), LIST(__VA_ARGS__))

/* the configuration example, with the referenced secret files in a temporary directory. */
static const char spec_example[] =
	"identity: ${POD_NAME}            # ${VAR} expands from the environment; default $HOSTNAME\n"
	"socket: /run/leasekeeper/agent.sock\n"
	"socket_mode: \"0660\"\n"
	"http_listen: \"127.0.0.1:9440\"    # metrics and health; \"\" disables\n"
	"log_format: json                 # json | text\n"
	"shutdown_timeout: 25s\n"
	"auth_key_file: ${LK_TEST_DIR}/key   # optional: 32 raw bytes or 64 hex chars\n"
	"backends:\n"
	"  - name: main\n"
	"    type: redis                  # redis | etcd\n"
	"    address: \"127.0.0.1:6379\"\n"
	"    password_file: ${LK_TEST_DIR}/password   # optional\n"
	"    timeout: 500ms\n"
	"  - name: coord\n"
	"    type: etcd\n"
	"    endpoints: [\"http://127.0.0.1:2379\"]             # https with ca_file/cert_file/key_file\n"
	"    timeout: 1s\n"
	"locks:\n"
	"  - name: scheduler\n"
	"    backend: main\n"
	"    key: myapp/scheduler         # default leasekeeper/<name>\n"
	"    ttl: 10s\n"
	"    renew_interval: 3s           # default ttl/3\n"
	"    renew_deadline: 6s           # default 2*ttl/3\n"
	"    retry_interval: 1s           # follower retry, besides release notifications\n"
	"    stepdown_timeout: 5s\n"
	"    release_timeout: 3s\n"
	"    campaign: when_app_connected # or always\n";

static char *tmp_path(const char *name)
{
	static char buf[4][256];
	static int next;
	char *p = buf[next++ % 4];

	snprintf(p, 256, "%s/%s", tmpdir, name);
	return p;
}

START_TEST(test_spec_example_parses_to_its_values)
{
	struct lk_config *cfg = parse_ok(spec_example);

	ck_assert_str_eq(cfg->identity, "pod-7");
	ck_assert_str_eq(cfg->socket_path, "/run/leasekeeper/agent.sock");
	ck_assert_uint_eq(cfg->socket_mode, 0660);
	ck_assert_str_eq(cfg->http_listen, "127.0.0.1:9440");
	ck_assert_int_eq(cfg->log_format, LK_LOG_JSON);
	ck_assert_int_eq(cfg->shutdown_timeout_ms, 25000);
	ck_assert_str_eq(cfg->auth_key_file, tmp_path("key"));

	ck_assert_uint_eq(cfg->n_backends, 2);
	struct lk_config_backend *b = &cfg->backends[0];
	ck_assert_str_eq(b->name, "main");
	ck_assert_int_eq(b->type, LK_BACKEND_REDIS);
	ck_assert_str_eq(b->address, "127.0.0.1:6379");
	ck_assert_str_eq(b->password_file, tmp_path("password"));
	ck_assert_int_eq(b->timeout_ms, 500);
	ck_assert_uint_eq(b->n_endpoints, 0);
	ck_assert_ptr_null(b->username);
	ck_assert_ptr_null(b->ca_file);
	b = &cfg->backends[1];
	ck_assert_str_eq(b->name, "coord");
	ck_assert_int_eq(b->type, LK_BACKEND_ETCD);
	ck_assert_ptr_null(b->address);
	ck_assert_uint_eq(b->n_endpoints, 1);
	ck_assert_str_eq(b->endpoints[0], "http://127.0.0.1:2379");
	ck_assert_int_eq(b->timeout_ms, 1000);
	ck_assert_ptr_null(b->password_file);
	ck_assert_ptr_null(b->username);
	ck_assert_ptr_null(b->ca_file);
	ck_assert_ptr_null(b->cert_file);
	ck_assert_ptr_null(b->key_file);

	ck_assert_uint_eq(cfg->n_locks, 1);
	struct lk_config_lock *l = &cfg->locks[0];
	ck_assert_str_eq(l->name, "scheduler");
	ck_assert_uint_eq(l->backend, 0);
	ck_assert_str_eq(l->key, "myapp/scheduler");
	ck_assert_int_eq(l->ttl_ms, 10000);
	ck_assert_int_eq(l->renew_interval_ms, 3000);
	ck_assert_int_eq(l->renew_deadline_ms, 6000);
	ck_assert_int_eq(l->retry_interval_ms, 1000);
	ck_assert_int_eq(l->stepdown_timeout_ms, 5000);
	ck_assert_int_eq(l->release_timeout_ms, 3000);
	ck_assert_int_eq(l->campaign, LK_CAMPAIGN_WHEN_APP_CONNECTED);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_defaults_fill_everything_left_out)
{
	struct lk_config *cfg = parse_ok(ONE_BACKEND "locks:\n  - name: a\n");

	ck_assert_str_eq(cfg->identity, "host-1");
	ck_assert_str_eq(cfg->socket_path, "/run/leasekeeper/agent.sock");
	ck_assert_uint_eq(cfg->socket_mode, 0660);
	ck_assert_str_eq(cfg->http_listen, "127.0.0.1:9440");
	ck_assert_int_eq(cfg->log_format, LK_LOG_TEXT);
	ck_assert_int_eq(cfg->shutdown_timeout_ms, 25000);
	ck_assert_ptr_null(cfg->auth_key_file);
	ck_assert_uint_eq(cfg->n_backends, 1);
	ck_assert_str_eq(cfg->backends[0].address, "127.0.0.1:6379");
	ck_assert_int_eq(cfg->backends[0].timeout_ms, 500);
	ck_assert_ptr_null(cfg->backends[0].password_file);

	struct lk_config_lock *l = &cfg->locks[0];
	ck_assert_uint_eq(l->backend, 0); /* the only backend needs no naming */
	ck_assert_str_eq(l->key, "leasekeeper/a");
	ck_assert_int_eq(l->ttl_ms, 10000);
	ck_assert_int_eq(l->renew_interval_ms, 3333);
	ck_assert_int_eq(l->renew_deadline_ms, 6666);
	ck_assert_int_eq(l->retry_interval_ms, 1000);
	ck_assert_int_eq(l->stepdown_timeout_ms, 5000);
	ck_assert_int_eq(l->release_timeout_ms, 3000);
	ck_assert_int_eq(l->campaign, LK_CAMPAIGN_WHEN_APP_CONNECTED);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_renew_defaults_follow_ttl)
{
	struct lk_config *cfg = parse_ok(ONE_BACKEND "locks:\n  - name: a\n    ttl: 30s\n");

	ck_assert_int_eq(cfg->locks[0].renew_interval_ms, 10000);
	ck_assert_int_eq(cfg->locks[0].renew_deadline_ms, 20000);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_etcd_defaults)
{
	struct lk_config *cfg = parse_ok("backends:\n  - name: e\n    type: etcd\n"
	                                 "locks:\n  - name: a\n    campaign: always\n");

	ck_assert_int_eq(cfg->backends[0].type, LK_BACKEND_ETCD);
	ck_assert_uint_eq(cfg->backends[0].n_endpoints, 1);
	ck_assert_str_eq(cfg->backends[0].endpoints[0], "http://127.0.0.1:2379");
	ck_assert_int_eq(cfg->backends[0].timeout_ms, 1000);
	ck_assert_ptr_null(cfg->backends[0].address);
	ck_assert_int_eq(cfg->locks[0].campaign, LK_CAMPAIGN_ALWAYS);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_identity_falls_back_to_gethostname)
{
	char host[256] = { 0 };

	unsetenv("HOSTNAME");
	ck_assert_int_eq(gethostname(host, sizeof(host) - 1), 0);
	struct lk_config *cfg = parse_ok(ONE_BACKEND "locks:\n  - name: a\n");
	ck_assert_str_eq(cfg->identity, host);
	lk_config_free(cfg);

	/* An empty $HOSTNAME is as good as none. */
	setenv("HOSTNAME", "", 1);
	cfg = parse_ok(ONE_BACKEND "locks:\n  - name: a\n");
	ck_assert_str_eq(cfg->identity, host);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_invalid_default_identity_is_an_error)
{
	setenv("HOSTNAME", "bad host", 1);
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n",
	              NAME ":1:1: identity: not set, and the host name \"bad host\" is not a valid "
	              "identity (1 to 253 printable ASCII characters without spaces)");
}
END_TEST

START_TEST(test_null_values_mean_absent)
{
	struct lk_config *cfg = parse_ok("identity:\nhttp_listen: ~\nlog_format: null\n"
	                                 "auth_key_file:\n" ONE_BACKEND "    address:\n"
	                                 "locks:\n  - name: a\n    ttl:\n    key: ~\n");

	ck_assert_str_eq(cfg->identity, "host-1");
	ck_assert_str_eq(cfg->http_listen, "127.0.0.1:9440");
	ck_assert_int_eq(cfg->log_format, LK_LOG_TEXT);
	ck_assert_ptr_null(cfg->auth_key_file);
	ck_assert_str_eq(cfg->backends[0].address, "127.0.0.1:6379");
	ck_assert_int_eq(cfg->locks[0].ttl_ms, 10000);
	ck_assert_str_eq(cfg->locks[0].key, "leasekeeper/a");
	lk_config_free(cfg);

	/* Quoted, the same words are strings. */
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: \"null\"\n",
	              NAME ":6:10: locks[0].ttl: \"null\" is not a duration");
}
END_TEST

START_TEST(test_values_of_every_accepted_form)
{
	struct lk_config *cfg = parse_ok(
		"identity: a.b-c_D:1\nsocket: ./agent.sock\nsocket_mode: 600\n"
		"http_listen: \"[::1]:9440\"\nlog_format: text\nshutdown_timeout: 1m30s\n"
		"backends:\n"
		"  - {name: r1, type: redis, address: \"[::1]:6380\", timeout: 1.5s}\n"
		"  - {name: r2, type: redis, address: \"unix:/run/redis.sock\"}\n"
		"  - name: e1\n    type: etcd\n"
		"    endpoints: [\"https://a:2379\", \"http://b:2379\"]\n"
		"    username: root\n    password_file: ${LK_TEST_DIR}/password\n"
		"    ca_file: ${LK_TEST_DIR}/ca.pem\n    cert_file: ${LK_TEST_DIR}/cert.pem\n"
		"    key_file: ${LK_TEST_DIR}/key.pem\n"
		"locks:\n"
		"  - {name: a, backend: r2, ttl: 100ms, renew_interval: 10ms, renew_deadline: 99ms}\n"
		"  - {name: b, backend: e1, ttl: 1h, retry_interval: 250ms, stepdown_timeout: 20s,\n"
		"     release_timeout: 10s}\n");

	ck_assert_str_eq(cfg->identity, "a.b-c_D:1");
	ck_assert_str_eq(cfg->socket_path, "./agent.sock");
	ck_assert_uint_eq(cfg->socket_mode, 0600);
	ck_assert_str_eq(cfg->http_listen, "[::1]:9440");
	ck_assert_int_eq(cfg->shutdown_timeout_ms, 90000);
	ck_assert_str_eq(cfg->backends[0].address, "[::1]:6380");
	ck_assert_int_eq(cfg->backends[0].timeout_ms, 1500);
	ck_assert_str_eq(cfg->backends[1].address, "unix:/run/redis.sock");
	struct lk_config_backend *e = &cfg->backends[2];
	ck_assert_uint_eq(e->n_endpoints, 2);
	ck_assert_str_eq(e->endpoints[0], "https://a:2379");
	ck_assert_str_eq(e->endpoints[1], "http://b:2379");
	ck_assert_str_eq(e->username, "root");
	ck_assert_str_eq(e->password_file, tmp_path("password"));
	ck_assert_str_eq(e->ca_file, tmp_path("ca.pem"));
	ck_assert_str_eq(e->cert_file, tmp_path("cert.pem"));
	ck_assert_str_eq(e->key_file, tmp_path("key.pem"));
	ck_assert_uint_eq(cfg->locks[0].backend, 1);
	ck_assert_int_eq(cfg->locks[0].ttl_ms, 100);
	ck_assert_int_eq(cfg->locks[0].renew_interval_ms, 10);
	ck_assert_int_eq(cfg->locks[0].renew_deadline_ms, 99);
	ck_assert_uint_eq(cfg->locks[1].backend, 2);
	ck_assert_int_eq(cfg->locks[1].ttl_ms, 3600000);
	ck_assert_int_eq(cfg->locks[1].retry_interval_ms, 250);
	ck_assert_int_eq(cfg->locks[1].stepdown_timeout_ms, 20000);
	ck_assert_int_eq(cfg->locks[1].release_timeout_ms, 10000);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_socket_mode_forms)
{
	static const struct { const char *text; unsigned mode; } ok[] = {
		{ "\"0660\"", 0660 }, { "\"660\"", 0660 }, { "0660", 0660 }, { "\"0600\"", 0600 },
		{ "'0777'", 0777 }, { "\"0\"", 0 }, { "0640", 0640 },
	};
	char yaml[256];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(yaml, sizeof(yaml), "socket_mode: %s\n" ONE_BACKEND "locks: [{name: a}]\n",
		         ok[i].text);
		struct lk_config *cfg = parse_ok(yaml);
		ck_assert_msg(cfg->socket_mode == ok[i].mode, "%s gave %o", ok[i].text,
		              cfg->socket_mode);
		lk_config_free(cfg);
	}
	EXPECT_ERRORS("socket_mode: \"1777\"\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:14: socket_mode: \"1777\" is above 0777");
	EXPECT_ERRORS("socket_mode: 0999\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:14: socket_mode: \"0999\" is not an octal file mode like \"0660\"");
	EXPECT_ERRORS("socket_mode: rw-rw----\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:14: socket_mode: \"rw-rw----\" is not an octal file mode like \"0660\"");
	EXPECT_ERRORS("socket_mode: \"00660\"\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:14: socket_mode: \"00660\" is not an octal file mode like \"0660\"");
	EXPECT_ERRORS("socket_mode: \"\"\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:14: socket_mode: \"\" is not an octal file mode like \"0660\"");
}
END_TEST

START_TEST(test_http_listen_empty_disables)
{
	struct lk_config *cfg = parse_ok("http_listen: \"\"\n" ONE_BACKEND "locks: [{name: a}]\n");

	ck_assert_ptr_null(cfg->http_listen);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_http_listen_must_be_host_port)
{
	static const char *const bad[] = {
		"\":9440\"", "localhost", "\"127.0.0.1:\"", "\"127.0.0.1:0\"", "\"127.0.0.1:65536\"",
		"\"::1:9440\"", "\"[::1]9440\"", "\"a b:80\"", "\"host:http\"", "\"[]:80\"",
	};
	char yaml[256], want[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *v = bad[i][0] == '"' ? bad[i] : NULL;
		char quoted[64];

		if (!v) {
			snprintf(quoted, sizeof(quoted), "\"%s\"", bad[i]);
			v = quoted;
		}
		snprintf(yaml, sizeof(yaml), "http_listen: %s\n" ONE_BACKEND "locks: [{name: a}]\n",
		         bad[i]);
		snprintf(want, sizeof(want),
		         NAME ":1:14: http_listen: %s is not host:port, e.g. \"127.0.0.1:9440\"", v);
		EXPECT_ERRORS(yaml, want);
	}
}
END_TEST

START_TEST(test_env_expansion)
{
	setenv("LK_NAME", "sched", 1);
	setenv("LK_SECS", "15", 1);
	struct lk_config *cfg = parse_ok(
		"identity: ${POD_NAME}.${LK_UNSET:-ns}\n"
		"socket: /run/$x/${LK_EMPTY:-dflt}/$$HOME/a$\n"
		"http_listen: ${LK_UNSET:-}\n"
		ONE_BACKEND
		"locks:\n"
		"  - name: ${LK_NAME}\n"
		"    ttl: ${LK_SECS}s\n"
		"    key: \"${LK_EMPTY}k${LK_UNSET:-a:-b}\"\n");

	ck_assert_str_eq(cfg->identity, "pod-7.ns");
	/* A lone $ stays; ${X:-d} also replaces an empty X; $$ is one $. */
	ck_assert_str_eq(cfg->socket_path, "/run/$x/dflt/$HOME/a$");
	ck_assert_ptr_null(cfg->http_listen);
	ck_assert_str_eq(cfg->locks[0].name, "sched");
	ck_assert_str_eq(cfg->locks[0].key, "ka:-b");
	ck_assert_int_eq(cfg->locks[0].ttl_ms, 15000);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_env_expansion_in_list_items)
{
	setenv("LK_ETCD", "http://etcd-0:2379", 1);
	struct lk_config *cfg = parse_ok("backends:\n  - name: e\n    type: etcd\n"
	                                 "    endpoints: [\"${LK_ETCD}\"]\nlocks: [{name: a}]\n");

	ck_assert_str_eq(cfg->backends[0].endpoints[0], "http://etcd-0:2379");
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_env_expansion_errors)
{
	EXPECT_ERRORS("identity: ${LK_UNSET}\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: environment variable \"LK_UNSET\" is not set");
	EXPECT_ERRORS("identity: abc${POD_NAME\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: unterminated \"${\" in \"abc${POD_NAME\" "
	              "(write $$ for a literal $)");
	EXPECT_ERRORS("identity: x${\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: unterminated \"${\" in \"x${\" (write $$ for a literal $)");
	EXPECT_ERRORS("identity: a${}b\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: empty variable name in \"a${}b\"");
	EXPECT_ERRORS("identity: ${:-x}\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: empty variable name in \"${:-x}\"");
	EXPECT_ERRORS("identity: ${A B}\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: invalid variable name \"A B\" in \"${A B}\"");
	EXPECT_ERRORS("identity: ${1X}\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: invalid variable name \"1X\" in \"${1X}\"");
	EXPECT_ERRORS("identity: ${X-y}\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: invalid variable name \"X-y\" in \"${X-y}\"");
	/* Expansion happens before interpretation: an empty value is then a bad duration. */
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: ${LK_EMPTY}\n",
	              NAME ":6:10: locks[0].ttl: \"\" is not a duration");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: \"a\\0b\"\n",
	              NAME ":6:10: locks[0].ttl: contains a NUL character");
}
END_TEST

START_TEST(test_yaml_syntax_errors)
{
	EXPECT_ERRORS("locks: [1\n",
	              NAME ":2:1: yaml: did not find expected ',' or ']' "
	              "(while parsing a flow sequence at 1:8)");
	EXPECT_ERRORS("identity: \"abc\n",
	              NAME ":2:1: yaml: found unexpected end of stream "
	              "(while scanning a quoted scalar at 1:11)");
	EXPECT_ERRORS("identity: x\n  bad: indent\n",
	              NAME ":2:6: yaml: mapping values are not allowed in this context");
	EXPECT_ERRORS("identity: *nope\n", NAME ":1:11: yaml: found undefined alias");
	/* Reader errors have only an offset, turned into the same line:column. */
	EXPECT_ERRORS("identity: x\nsocket: a\x01\n",
	              NAME ":2:10: yaml: control characters are not allowed");
	EXPECT_ERRORS("identity: \xff\n", NAME ":1:11: yaml: invalid leading UTF-8 octet");
}
END_TEST

START_TEST(test_empty_or_not_a_mapping)
{
	EXPECT_ERRORS("", NAME ":1:1: the file is empty; expected a mapping of settings");
	EXPECT_ERRORS("# nothing\n\n", NAME ":1:1: the file is empty; expected a mapping of settings");
	EXPECT_ERRORS("- a\n- b\n", NAME ":1:1: expected a mapping at the top level, found a list");
	EXPECT_ERRORS("hello\n", NAME ":1:1: expected a mapping at the top level, found \"hello\"");
}
END_TEST

START_TEST(test_second_document_rejected)
{
	EXPECT_ERRORS(ONE_BACKEND "locks: [{name: a}]\n---\nidentity: x\n",
	              NAME ":6:1: yaml: only one document is allowed");
}
END_TEST

START_TEST(test_unknown_fields)
{
	EXPECT_ERRORS("identiy: x\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:1: identiy: unknown field");
	EXPECT_ERRORS(ONE_BACKEND "    adress: x\nlocks: [{name: a}]\n",
	              NAME ":4:5: backends[0].adress: unknown field");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    tll: 5s\n",
	              NAME ":6:5: locks[0].tll: unknown field");
	/* A key that is not a string cannot be a field name. */
	EXPECT_ERRORS(ONE_BACKEND "locks: [{name: a}]\n? [x]\n: 1\n",
	              NAME ":5:3: expected a field name, found a list");
	/* Keys are names, not values: no ${VAR} expansion there. */
	EXPECT_ERRORS(ONE_BACKEND "locks: [{name: a}]\n${LK_EMPTY}identity: x\n",
	              NAME ":5:1: unknown field \"${LK_EMPTY}identity\"");
}
END_TEST

START_TEST(test_duplicate_keys)
{
	EXPECT_ERRORS("identity: a\n" ONE_BACKEND "identity: b\nlocks: [{name: a}]\n",
	              NAME ":5:1: identity: duplicate field; first given at line 1");
	EXPECT_ERRORS(ONE_BACKEND "    type: etcd\nlocks: [{name: a}]\n",
	              NAME ":4:5: backends[0].type: duplicate field; first given at line 3");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: 5s\n    ttl: 6s\n",
	              NAME ":7:5: locks[0].ttl: duplicate field; first given at line 6");
	/* Even a null repetition is a repetition. */
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    key: x\n    key:\n",
	              NAME ":7:5: locks[0].key: duplicate field; first given at line 6");
}
END_TEST

START_TEST(test_wrong_node_kinds)
{
	EXPECT_ERRORS("identity: [a]\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: expected a string, found a list");
	EXPECT_ERRORS("identity: {a: b}\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: expected a string, found a mapping");
	EXPECT_ERRORS("backends: main\nlocks: [{name: a}]\n",
	              NAME ":1:11: backends: expected a list, found \"main\"");
	EXPECT_ERRORS("backends: {name: main}\nlocks: [{name: a}]\n",
	              NAME ":1:11: backends: expected a list, found a mapping");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - a\n",
	              NAME ":5:5: locks[0]: expected a mapping, found \"a\"");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  -\n", NAME ":5:4: locks[0]: expected a mapping, found null");
	EXPECT_ERRORS("backends:\n  - name: e\n    type: etcd\n    endpoints: http://x:2379\n"
	              "locks: [{name: a}]\n",
	              NAME ":4:16: backends[0].endpoints: expected a list, found \"http://x:2379\"");
	EXPECT_ERRORS("backends:\n  - name: e\n    type: etcd\n    endpoints: [[http://x:2379]]\n"
	              "locks: [{name: a}]\n",
	              NAME ":4:17: backends[0].endpoints[0]: expected a string, found a list");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: {s: 1}\n",
	              NAME ":6:10: locks[0].ttl: expected a string, found a mapping");
}
END_TEST

START_TEST(test_missing_required_fields)
{
	EXPECT_ERRORS("identity: x\n", NAME ":1:1: backends: at least one backend is required",
	              NAME ":1:1: locks: at least one lock is required");
	EXPECT_ERRORS("backends: []\nlocks: []\n",
	              NAME ":1:11: backends: at least one backend is required",
	              NAME ":2:8: locks: at least one lock is required");
	EXPECT_ERRORS("backends:\n  - type: redis\nlocks: [{name: a}]\n",
	              NAME ":2:5: backends[0]: missing required field \"name\"");
	EXPECT_ERRORS("backends:\n  - name: main\nlocks: [{name: a}]\n",
	              NAME ":2:5: backends[0]: missing required field \"type\"");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - ttl: 5s\n",
	              NAME ":5:5: locks[0]: missing required field \"name\"");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - {}\n",
	              NAME ":5:5: locks[0]: missing required field \"name\"");
	/* Without any backend, a lock's reference to one is not reported on top. */
	EXPECT_ERRORS("backends: []\nlocks: [{name: a, backend: main}]\n",
	              NAME ":1:11: backends: at least one backend is required");
	/* A null name is an absent name. */
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name:\n",
	              NAME ":5:5: locks[0]: missing required field \"name\"");
}
END_TEST

START_TEST(test_backend_reference)
{
	static const char two[] = "backends:\n  - {name: main, type: redis}\n"
	                          "  - {name: coord, type: etcd}\n";

	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    backend: foo\n",
	              NAME ":6:14: locks[0].backend: unknown backend \"foo\"");
	/* Optional only while it cannot be ambiguous. */
	char yaml[256];
	snprintf(yaml, sizeof(yaml), "%slocks:\n  - name: a\n", two);
	EXPECT_ERRORS(yaml, NAME ":5:5: locks[0]: missing required field \"backend\" "
	                    "(there is more than one backend)");

	snprintf(yaml, sizeof(yaml), "%slocks:\n  - {name: a, backend: coord}\n", two);
	struct lk_config *cfg = parse_ok(yaml);
	ck_assert_uint_eq(cfg->locks[0].backend, 1);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_backend_type_and_foreign_fields)
{
	EXPECT_ERRORS("backends:\n  - name: m\n    type: mysql\nlocks: [{name: a}]\n",
	              NAME ":3:11: backends[0].type: unknown backend type \"mysql\"; "
	              "expected redis or etcd");
	EXPECT_ERRORS("backends:\n  - name: m\n    type: etcd\n    address: \"x:1\"\n"
	              "    sentinels: [\"x:1\"]\n    master_name: m\n    db: 1\n"
	              "    min_replicas_acked: 1\nlocks: [{name: a}]\n",
	              NAME ":4:5: backends[0].address: not a field of an etcd backend",
	              NAME ":5:5: backends[0].sentinels: not a field of an etcd backend",
	              NAME ":6:5: backends[0].master_name: not a field of an etcd backend",
	              NAME ":7:5: backends[0].db: not a field of an etcd backend",
	              NAME ":8:5: backends[0].min_replicas_acked: not a field of an etcd backend");
	EXPECT_ERRORS(ONE_BACKEND "    endpoints: [http://x:1]\n    username: u\n"
	              "    ca_file: /x\n    cert_file: /x\n    key_file: /x\nlocks: [{name: a}]\n",
	              NAME ":4:5: backends[0].endpoints: not a field of a redis backend",
	              NAME ":5:15: backends[0].username: requires password_file",
	              NAME ":6:5: backends[0].ca_file: requires tls: true (or a rediss:// address)",
	              NAME ":7:5: backends[0].cert_file: requires tls: true (or a rediss:// "
	              "address)",
	              NAME ":8:5: backends[0].key_file: requires tls: true (or a rediss:// address)");
	EXPECT_ERRORS("backends:\n  - name: m\n    type: etcd\n    tls: true\n"
	              "    server_name: r.test\nlocks: [{name: a}]\n",
	              NAME ":4:5: backends[0].tls: not a field of an etcd backend",
	              NAME ":5:5: backends[0].server_name: not a field of an etcd backend");
}
END_TEST

START_TEST(test_backend_values)
{
	EXPECT_ERRORS(ONE_BACKEND "    address: localhost\nlocks: [{name: a}]\n",
	              NAME ":4:14: backends[0].address: \"localhost\" is not host:port, [v6]:port, "
	              "unix:/path or rediss://host:port");
	EXPECT_ERRORS(ONE_BACKEND "    address: \"unix:\"\nlocks: [{name: a}]\n",
	              NAME ":4:14: backends[0].address: \"unix:\" is not host:port, [v6]:port, "
	              "unix:/path or rediss://host:port");
	EXPECT_ERRORS(ONE_BACKEND "    timeout: 0s\nlocks: [{name: a}]\n",
	              NAME ":4:14: backends[0].timeout: must be at least 1ms, got \"0s\"");
	EXPECT_ERRORS(ONE_BACKEND "    timeout: 500\nlocks: [{name: a}]\n",
	              NAME ":4:14: backends[0].timeout: \"500\" has no unit");
	EXPECT_ERRORS("backends:\n  - name: bad/name\n    type: redis\nlocks: [{name: a}]\n",
	              NAME ":2:11: backends[0].name: \"bad/name\" is not a valid backend name "
	              "([A-Za-z0-9._-]{1,128})");
	EXPECT_ERRORS("backends:\n  - {name: m, type: redis}\n  - {name: m, type: etcd}\n"
	              "locks: [{name: a, backend: m}]\n",
	              NAME ":3:12: backends[1].name: backend name \"m\" is already used by backends[0]");
}
END_TEST

START_TEST(test_etcd_endpoints)
{
	EXPECT_ERRORS("backends:\n  - name: e\n    type: etcd\n    endpoints: []\nlocks: [{name: a}]\n",
	              NAME ":4:16: backends[0].endpoints: at least one endpoint is required");
	EXPECT_ERRORS("backends:\n  - name: e\n    type: etcd\n"
	              "    endpoints: [\"127.0.0.1:2379\", \"http://\", \"ftp://x\", \"https:///x\"]\n"
	              "locks: [{name: a}]\n",
	              NAME ":4:17: backends[0].endpoints[0]: \"127.0.0.1:2379\" is not an http:// or "
	              "https:// URL",
	              NAME ":4:35: backends[0].endpoints[1]: \"http://\" is not an http:// or "
	              "https:// URL",
	              NAME ":4:46: backends[0].endpoints[2]: \"ftp://x\" is not an http:// or "
	              "https:// URL",
	              NAME ":4:57: backends[0].endpoints[3]: \"https:///x\" is not an http:// or "
	              "https:// URL");

	char yaml[1024];
	size_t o = (size_t)snprintf(yaml, sizeof(yaml),
	                            "backends:\n  - name: e\n    type: etcd\n    endpoints:\n");
	for (int i = 0; i <= LK_CONFIG_MAX_ENDPOINTS; i++)
		o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "      - http://e%d:2379\n", i);
	snprintf(yaml + o, sizeof(yaml) - o, "locks: [{name: a}]\n");
	EXPECT_ERRORS(yaml, NAME ":5:7: backends[0].endpoints: too many endpoints (at most 16)");
}
END_TEST

START_TEST(test_etcd_credentials)
{
	EXPECT_ERRORS("backends:\n  - name: e\n    type: etcd\n    username: root\n"
	              "locks: [{name: a}]\n",
	              NAME ":4:15: backends[0].username: requires password_file");
	EXPECT_ERRORS("backends:\n  - name: e\n    type: etcd\n"
	              "    password_file: ${LK_TEST_DIR}/password\nlocks: [{name: a}]\n",
	              NAME ":4:20: backends[0].password_file: requires username on an etcd backend");
	EXPECT_ERRORS("backends:\n  - name: e\n    type: etcd\n    cert_file: ${LK_TEST_DIR}/cert.pem\n"
	              "locks: [{name: a}]\n",
	              NAME ":4:16: backends[0].cert_file: requires key_file");
	EXPECT_ERRORS("backends:\n  - name: e\n    type: etcd\n    key_file: ${LK_TEST_DIR}/key.pem\n"
	              "locks: [{name: a}]\n",
	              NAME ":4:15: backends[0].key_file: requires cert_file");
	EXPECT_ERRORS("backends:\n  - name: e\n    type: etcd\n    username: \"a b\"\n"
	              "    password_file: ${LK_TEST_DIR}/password\nlocks: [{name: a}]\n",
	              NAME ":4:15: backends[0].username: \"a b\" must be 1 to 253 printable ASCII "
	              "characters without spaces");
}
END_TEST

START_TEST(test_referenced_files_must_be_readable)
{
	EXPECT_ERRORS("auth_key_file: /nonexistent/key\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:16: auth_key_file: cannot read \"/nonexistent/key\": "
	              "No such file or directory");
	/* The message carries the expanded path and the system's reason. */
	char want[256];
	snprintf(want, sizeof(want),
	         NAME ":4:20: backends[0].password_file: cannot read \"%s/key/x\": %s", tmpdir,
	         strerror(ENOTDIR));
	EXPECT_ERRORS(ONE_BACKEND "    password_file: ${LK_TEST_DIR}/key/x\nlocks: [{name: a}]\n",
	              want);
}
END_TEST

START_TEST(test_etcd_files_must_be_readable)
{
	char yaml[512], want[3][256];

	snprintf(yaml, sizeof(yaml),
	         "backends:\n  - name: e\n    type: etcd\n    ca_file: /no/ca\n"
	         "    cert_file: /no/cert\n    key_file: /no/key\nlocks: [{name: a}]\n");
	snprintf(want[0], sizeof(want[0]),
	         NAME ":4:14: backends[0].ca_file: cannot read \"/no/ca\": %s", strerror(ENOENT));
	snprintf(want[1], sizeof(want[1]),
	         NAME ":5:16: backends[0].cert_file: cannot read \"/no/cert\": %s", strerror(ENOENT));
	snprintf(want[2], sizeof(want[2]),
	         NAME ":6:15: backends[0].key_file: cannot read \"/no/key\": %s", strerror(ENOENT));
	EXPECT_ERRORS(yaml, want[0], want[1], want[2]);
}
END_TEST

START_TEST(test_top_level_values)
{
	EXPECT_ERRORS("log_format: xml\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:13: log_format: unknown log format \"xml\"; expected json or text");
	EXPECT_ERRORS("shutdown_timeout: 0\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:19: shutdown_timeout: must be at least 1ms, got \"0\"");
	EXPECT_ERRORS("shutdown_timeout: -5s\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:19: shutdown_timeout: \"-5s\" is negative");
	EXPECT_ERRORS("socket: \"\"\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:9: socket: must not be empty");

	char yaml[512], path[120];
	memset(path, 'p', sizeof(path));
	path[0] = '/';
	path[108] = '\0';
	snprintf(yaml, sizeof(yaml), "socket: %s\n" ONE_BACKEND "locks: [{name: a}]\n", path);
	EXPECT_ERRORS(yaml, NAME ":1:9: socket: is too long for a Unix socket path (at most 107 bytes)");
	path[107] = '\0';
	snprintf(yaml, sizeof(yaml), "socket: %s\n" ONE_BACKEND "locks: [{name: a}]\n", path);
	lk_config_free(parse_ok(yaml));
}
END_TEST

START_TEST(test_identity_rules)
{
	char yaml[1024], id[300];

	EXPECT_ERRORS("identity: \"a b\"\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: \"a b\" must be 1 to 253 printable ASCII characters "
	              "without spaces");
	EXPECT_ERRORS("identity: \"\"\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: \"\" must be 1 to 253 printable ASCII characters "
	              "without spaces");
	EXPECT_ERRORS("identity: \"caf\xc3\xa9\"\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: \"caf\xc3\xa9\" must be 1 to 253 printable ASCII "
	              "characters without spaces");
	EXPECT_ERRORS("identity: \"a\\tb\"\n" ONE_BACKEND "locks: [{name: a}]\n",
	              NAME ":1:11: identity: \"a\\x09b\" must be 1 to 253 printable ASCII "
	              "characters without spaces");

	memset(id, 'i', 253);
	id[253] = '\0';
	snprintf(yaml, sizeof(yaml), "identity: %s\n" ONE_BACKEND "locks: [{name: a}]\n", id);
	struct lk_config *cfg = parse_ok(yaml);
	ck_assert_uint_eq(strlen(cfg->identity), 253);
	lk_config_free(cfg);

	/* One more is too long, and the message shows only the start of it. */
	strcat(id, "i");
	snprintf(yaml, sizeof(yaml), "identity: %s\n" ONE_BACKEND "locks: [{name: a}]\n", id);
	struct lk_config_diags d;
	ck_assert_int_eq(parse(yaml, &cfg, &d), -EINVAL);
	ck_assert_uint_eq(d.n_errors, 1);
	ck_assert_ptr_nonnull(strstr(d.errors[0], "iiii...\" must be 1 to 253 printable"));
	ck_assert_uint_lt(strlen(d.errors[0]), 220);
	lk_config_diags_clear(&d);
}
END_TEST

START_TEST(test_lock_names)
{
	char yaml[512], name[200];

	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a/b\n",
	              NAME ":5:11: locks[0].name: \"a/b\" is not a valid lock name "
	              "([A-Za-z0-9._-]{1,128})");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: \"\"\n",
	              NAME ":5:11: locks[0].name: \"\" is not a valid lock name ([A-Za-z0-9._-]{1,128})");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n  - name: b\n  - name: a\n",
	              NAME ":7:11: locks[2].name: lock name \"a\" is already used by locks[0]");

	memset(name, 'n', 128);
	name[128] = '\0';
	snprintf(yaml, sizeof(yaml), ONE_BACKEND "locks:\n  - name: %s\n", name);
	lk_config_free(parse_ok(yaml));
	strcat(name, "n");
	snprintf(yaml, sizeof(yaml), ONE_BACKEND "locks:\n  - name: %s\n", name);
	struct lk_config *cfg;
	struct lk_config_diags d;
	ck_assert_int_eq(parse(yaml, &cfg, &d), -EINVAL);
	ck_assert_uint_eq(d.n_errors, 1);
	ck_assert_ptr_nonnull(strstr(d.errors[0], "is not a valid lock name"));
	lk_config_diags_clear(&d);
}
END_TEST

START_TEST(test_lock_key)
{
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    key: \"\"\n",
	              NAME ":6:10: locks[0].key: \"\" must be 1 to 1003 printable ASCII characters "
	              "without spaces");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    key: \"my key\"\n",
	              NAME ":6:10: locks[0].key: \"my key\" must be 1 to 1003 printable ASCII "
	              "characters without spaces");
}
END_TEST

/* "<key>:fence" must fit etcd's 1024-byte keys: a key the agent could not hold is refused by
 * check-config already. */
START_TEST(test_lock_key_leaves_room_for_its_fence_key)
{
	char key[1020], yaml[1200];
	struct lk_config *cfg;
	struct lk_config_diags d;

	memset(key, 'k', sizeof(key));
	key[LK_BACKEND_KEY_MAX] = '\0';
	snprintf(yaml, sizeof(yaml), ONE_BACKEND "locks:\n  - name: a\n    key: %s\n", key);
	ck_assert_int_eq(parse(yaml, &cfg, &d), 0);
	lk_config_free(cfg);
	lk_config_diags_clear(&d);
	key[LK_BACKEND_KEY_MAX] = 'k';
	key[LK_BACKEND_KEY_MAX + 1] = '\0';
	snprintf(yaml, sizeof(yaml), ONE_BACKEND "locks:\n  - name: a\n    key: %s\n", key);
	ck_assert_int_eq(parse(yaml, &cfg, &d), -EINVAL);
	ck_assert_uint_eq(d.n_errors, 1);
	ck_assert_ptr_nonnull(strstr(d.errors[0], "must be 1 to 1003 printable"));
	lk_config_diags_clear(&d);
}
END_TEST

START_TEST(test_lock_durations)
{
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: 10\n",
	              NAME ":6:10: locks[0].ttl: \"10\" has no unit");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: 10x\n",
	              NAME ":6:10: locks[0].ttl: \"10x\" has an unknown unit");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: soon\n",
	              NAME ":6:10: locks[0].ttl: \"soon\" is not a duration");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: -10s\n",
	              NAME ":6:10: locks[0].ttl: \"-10s\" is negative");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: 9000h\n",
	              NAME ":6:10: locks[0].ttl: \"9000h\" is too large (the maximum is 8760h)");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: 99ms\n",
	              NAME ":6:10: locks[0].ttl: must be at least 100ms, got \"99ms\"");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: 0\n",
	              NAME ":6:10: locks[0].ttl: must be at least 100ms, got \"0\"");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n"
	              "    renew_interval: 0s\n    renew_deadline: 500us\n    retry_interval: 0ms\n"
	              "    stepdown_timeout: 0h\n    release_timeout: 0\n",
	              NAME ":6:21: locks[0].renew_interval: must be at least 1ms, got \"0s\"",
	              NAME ":7:21: locks[0].renew_deadline: must be at least 1ms, got \"500us\"",
	              NAME ":8:21: locks[0].retry_interval: must be at least 1ms, got \"0ms\"",
	              NAME ":9:23: locks[0].stepdown_timeout: must be at least 1ms, got \"0h\"",
	              NAME ":10:22: locks[0].release_timeout: must be at least 1ms, got \"0\"");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    campaign: sometimes\n",
	              NAME ":6:15: locks[0].campaign: unknown campaign mode \"sometimes\"; "
	              "expected when_app_connected or always");
}
END_TEST

START_TEST(test_timing_relations)
{
	/* Both given: point at renew_interval. */
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    renew_interval: 5s\n"
	              "    renew_deadline: 4s\n",
	              NAME ":6:21: locks[0].renew_interval: must be shorter than renew_deadline "
	              "(4s), got 5s");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    renew_interval: 4s\n"
	              "    renew_deadline: 4s\n",
	              NAME ":6:21: locks[0].renew_interval: must be shorter than renew_deadline "
	              "(4s), got 4s");
	/* renew_interval against the default renew_deadline. */
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    renew_interval: 7s\n",
	              NAME ":6:21: locks[0].renew_interval: must be shorter than renew_deadline "
	              "(6.666s, the default 2*ttl/3), got 7s");
	/* renew_deadline against the default renew_interval. */
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: 30s\n    renew_deadline: 5s\n",
	              NAME ":7:21: locks[0].renew_deadline: must be longer than renew_interval "
	              "(10s, the default ttl/3), got 5s");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: 6s\n    renew_interval: 1s\n"
	              "    renew_deadline: 6s\n",
	              NAME ":8:21: locks[0].renew_deadline: must be shorter than ttl (6s), got 6s");
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    renew_interval: 1s\n"
	              "    renew_deadline: 11s\n",
	              NAME ":7:21: locks[0].renew_deadline: must be shorter than ttl (10s, the "
	              "default), got 11s");
	/* A bad ttl is reported once, not again as a broken relation. */
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: a\n    ttl: 1\n    renew_deadline: 20s\n",
	              NAME ":6:10: locks[0].ttl: \"1\" has no unit");
}
END_TEST

START_TEST(test_multiple_errors_reported_together_in_file_order)
{
	EXPECT_ERRORS("identity: \"a b\"\n"
	              "log_format: xml\n"
	              "bogus: 1\n"
	              "backends:\n"
	              "  - name: main\n"
	              "    type: redis\n"
	              "    address: localhost\n"
	              "locks:\n"
	              "  - name: a\n"
	              "    ttl: \"10\"\n"
	              "    tll: 5s\n"
	              "  - name: a\n"
	              "    backend: nope\n",
	              NAME ":1:11: identity: \"a b\" must be 1 to 253 printable ASCII characters "
	              "without spaces",
	              NAME ":2:13: log_format: unknown log format \"xml\"; expected json or text",
	              NAME ":3:1: bogus: unknown field",
	              NAME ":7:14: backends[0].address: \"localhost\" is not host:port, [v6]:port, "
	              "unix:/path or rediss://host:port",
	              NAME ":10:10: locks[0].ttl: \"10\" has no unit",
	              NAME ":11:5: locks[0].tll: unknown field",
	              NAME ":12:11: locks[1].name: lock name \"a\" is already used by locks[0]",
	              NAME ":13:14: locks[1].backend: unknown backend \"nope\"");
}
END_TEST

START_TEST(test_error_count_is_capped)
{
	size_t cap = 64 + 200 * 16;
	char *yaml = malloc(cap);
	size_t o = (size_t)snprintf(yaml, cap, ONE_BACKEND "locks: [{name: a}]\n");
	struct lk_config *cfg = NULL;
	struct lk_config_diags d;

	for (int i = 0; i < 200; i++)
		o += (size_t)snprintf(yaml + o, cap - o, "bogus%d: 1\n", i);
	ck_assert_int_eq(parse(yaml, &cfg, &d), -EINVAL);
	ck_assert_uint_eq(d.n_errors, LK_CONFIG_MAX_DIAGS);
	ck_assert_str_eq(d.errors[0], NAME ":5:1: bogus0: unknown field");
	ck_assert_str_eq(d.errors[98], NAME ":103:1: bogus98: unknown field");
	ck_assert_str_eq(d.errors[99], NAME ": too many errors; stopped after 99");
	lk_config_diags_clear(&d);
	free(yaml);
}
END_TEST

START_TEST(test_list_caps)
{
	char *yaml = malloc(1024 * 1024), want[128];
	size_t o = 0;

	o += (size_t)sprintf(yaml + o, "backends:\n");
	for (int i = 0; i <= LK_CONFIG_MAX_BACKENDS; i++)
		o += (size_t)sprintf(yaml + o, "  - {name: b%d, type: redis}\n", i);
	o += (size_t)sprintf(yaml + o, "locks:\n");
	for (int i = 0; i <= LK_CONFIG_MAX_LOCKS; i++)
		o += (size_t)sprintf(yaml + o, "  - {name: l%d, backend: b0}\n", i);
	snprintf(want, sizeof(want), NAME ":68:3: locks: too many locks (at most %d)",
	         LK_CONFIG_MAX_LOCKS);
	EXPECT_ERRORS(yaml, NAME ":2:3: backends: too many backends (at most 64)", want);
	free(yaml);
}
END_TEST

START_TEST(test_etcd_short_ttl_warns)
{
	struct lk_config *cfg = EXPECT_WARNINGS(
		"backends:\n  - {name: e, type: etcd}\n  - {name: r, type: redis}\n"
		"locks:\n"
		"  - name: a\n    backend: e\n    ttl: 1500ms\n"
		"  - name: b\n    backend: r\n    ttl: 1500ms\n"
		"  - name: c\n    backend: e\n    ttl: 2s\n",
		NAME ":7:10: warning: locks[0].ttl: etcd grants no lease shorter than about 2s; "
		"the granted TTL will be used");

	ck_assert_int_eq(cfg->locks[0].ttl_ms, 1500);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_drain_longer_than_shutdown_warns)
{
	lk_config_free(EXPECT_WARNINGS(
		"shutdown_timeout: 8s\n" ONE_BACKEND
		"locks:\n"
		"  - name: a\n"
		"  - name: b\n    stepdown_timeout: 6s\n",
		NAME ":7:5: warning: locks[1]: stepdown_timeout (6s) + release_timeout (3s) is longer "
		"than shutdown_timeout (8s); a drain may be cut short"));
}
END_TEST

START_TEST(test_warnings_come_with_errors)
{
	struct lk_config *sentinel = (struct lk_config *)&sentinel, *cfg = sentinel;
	struct lk_config_diags d;

	ck_assert_int_eq(parse("identity: \"\"\nbackends: [{name: e, type: etcd}]\n"
	                       "locks: [{name: a, ttl: 1s}]\n", &cfg, &d), -EINVAL);
	ck_assert_ptr_eq(cfg, sentinel);
	ck_assert_uint_eq(d.n_errors, 1);
	ck_assert_uint_eq(d.n_warnings, 1);
	ck_assert_str_eq(d.warnings[0], NAME ":3:24: warning: locks[0].ttl: etcd grants no lease "
	                 "shorter than about 2s; the granted TTL will be used");
	lk_config_diags_clear(&d);
}
END_TEST

START_TEST(test_aliases_and_cycles_are_harmless)
{
	struct lk_config *cfg = parse_ok("backends:\n  - &b {name: main, type: redis}\n"
	                                 "locks:\n  - &l {name: a, ttl: 3s}\n  - {name: b, ttl: 3s}\n");

	ck_assert_int_eq(cfg->locks[0].ttl_ms, 3000);
	lk_config_free(cfg);
	/* libyaml lets an alias refer to its own ancestor; the walk must not follow it forever. */
	EXPECT_ERRORS("backends: &a [*a]\nlocks: [{name: a}]\n",
	              NAME ":1:11: backends[0]: expected a mapping, found a list");
}
END_TEST

START_TEST(test_messages_escape_control_characters)
{
	EXPECT_ERRORS(ONE_BACKEND "locks:\n  - name: \"a\\e[31m\\\"b\"\n",
	              NAME ":5:11: locks[0].name: \"a\\x1b[31m\\\"b\" is not a valid lock name "
	              "([A-Za-z0-9._-]{1,128})");
}
END_TEST

START_TEST(test_parse_rejects_oversized_text)
{
	struct lk_config *cfg = NULL;
	struct lk_config_diags d = { 0 };
	size_t len = LK_CONFIG_MAX_BYTES + 1;
	char *text = malloc(len);

	memset(text, '#', len);
	ck_assert_int_eq(lk_config_parse("big.yaml", text, len, &cfg, &d), -EFBIG);
	ck_assert_ptr_null(cfg);
	check_lines("errors", d.errors, d.n_errors,
	            LIST("big.yaml:1:1048577: yaml: the file is too large (more than 1048576 bytes)"));
	lk_config_diags_clear(&d);
	free(text);
}
END_TEST

START_TEST(test_load_missing_file)
{
	struct lk_config *cfg = NULL;
	struct lk_config_diags d = { 0 };
	char want[256];

	ck_assert_int_eq(lk_config_load("/nonexistent/leasekeeper.yaml", &cfg, &d), -ENOENT);
	ck_assert_ptr_null(cfg);
	snprintf(want, sizeof(want), "/nonexistent/leasekeeper.yaml: cannot read: %s",
	         strerror(ENOENT));
	check_lines("errors", d.errors, d.n_errors, LIST(want));
	lk_config_diags_clear(&d);

	ck_assert_int_eq(lk_config_load(tmpdir, &cfg, &d), -EISDIR);
	ck_assert_uint_eq(d.n_errors, 1);
	lk_config_diags_clear(&d);
}
END_TEST

START_TEST(test_load_too_large_file)
{
	struct lk_config *cfg = NULL;
	struct lk_config_diags d = { 0 };
	size_t len = LK_CONFIG_MAX_BYTES + 1;
	char *text = malloc(len), want[256];

	/* Valid YAML all along (a comment), so that only the size can be the problem. */
	memset(text, '#', len);
	write_file(tmpdir, "big.yaml", text, len);
	ck_assert_int_eq(lk_config_load(tmp_path("big.yaml"), &cfg, &d), -EFBIG);
	ck_assert_ptr_null(cfg);
	snprintf(want, sizeof(want), "%s:1:1048577: yaml: the file is too large (more than "
	         "1048576 bytes)", tmp_path("big.yaml"));
	check_lines("errors", d.errors, d.n_errors, LIST(want));
	lk_config_diags_clear(&d);

	/* Exactly the cap is still accepted (and then fails only for being empty). */
	write_file(tmpdir, "big.yaml", text, len - 1);
	ck_assert_int_eq(lk_config_load(tmp_path("big.yaml"), &cfg, &d), -EINVAL);
	snprintf(want, sizeof(want), "%s:1:1: the file is empty; expected a mapping of settings",
	         tmp_path("big.yaml"));
	check_lines("errors", d.errors, d.n_errors, LIST(want));
	lk_config_diags_clear(&d);
	free(text);
}
END_TEST

START_TEST(test_load_reads_and_names_the_file)
{
	struct lk_config *cfg = NULL;
	struct lk_config_diags d = { 0 };
	static const char ok[] = ONE_BACKEND "locks: [{name: a}]\n";
	char want[256];

	write_file(tmpdir, "ok.yaml", ok, strlen(ok));
	ck_assert_int_eq(lk_config_load(tmp_path("ok.yaml"), &cfg, &d), 0);
	ck_assert_ptr_nonnull(cfg);
	ck_assert_str_eq(cfg->locks[0].name, "a");
	ck_assert_uint_eq(d.n_errors, 0);
	cfg = lk_config_free(cfg);
	ck_assert_ptr_null(cfg);

	write_file(tmpdir, "ok.yaml", "locks: 1\n", 9);
	ck_assert_int_eq(lk_config_load(tmp_path("ok.yaml"), &cfg, &d), -EINVAL);
	snprintf(want, sizeof(want), "%s:1:1: backends: at least one backend is required",
	         tmp_path("ok.yaml"));
	ck_assert_uint_eq(d.n_errors, 2);
	ck_assert_str_eq(d.errors[0], want);
	lk_config_diags_clear(&d);
}
END_TEST

START_TEST(test_free_and_clear_accept_empty)
{
	struct lk_config_diags d = { 0 };

	ck_assert_ptr_null(lk_config_free(NULL));
	lk_config_diags_clear(&d);
	lk_config_diags_clear(NULL);
	ck_assert_str_eq(lk_backend_type_name(LK_BACKEND_REDIS), "redis");
	ck_assert_str_eq(lk_backend_type_name(LK_BACKEND_ETCD), "etcd");
}
END_TEST

/* ---- client slots and peers ---- */

START_TEST(test_client_slot_defaults)
{
	struct lk_config *cfg = parse_ok(ONE_BACKEND "locks: [{name: a}]\n");

	ck_assert_uint_eq(cfg->max_clients, 128);
	ck_assert_int_eq(cfg->client_idle_timeout_ms, 10000);
	ck_assert_ptr_null(cfg->allowed_uids);
	ck_assert_uint_eq(cfg->n_allowed_uids, 0);
	lk_config_free(cfg);
	/* null means absent, as for every field */
	cfg = parse_ok("allowed_uids:\nmax_clients: ~\nclient_idle_timeout:\n"
	               ONE_BACKEND "locks: [{name: a}]\n");
	ck_assert_uint_eq(cfg->max_clients, 128);
	ck_assert_ptr_null(cfg->allowed_uids);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_client_slot_values)
{
	struct lk_config *cfg;

	setenv("LK_UID", "1001", 1);
	cfg = parse_ok("max_clients: 2\nclient_idle_timeout: 1s\n"
	               "allowed_uids: [0, 1000, \"${LK_UID}\", 4294967294]\n"
	               ONE_BACKEND "locks: [{name: a}]\n");
	ck_assert_uint_eq(cfg->max_clients, 2);
	ck_assert_int_eq(cfg->client_idle_timeout_ms, 1000);
	ck_assert_uint_eq(cfg->n_allowed_uids, 4);
	ck_assert_uint_eq(cfg->allowed_uids[0], 0);
	ck_assert_uint_eq(cfg->allowed_uids[1], 1000);
	ck_assert_uint_eq(cfg->allowed_uids[2], 1001);
	ck_assert_uint_eq(cfg->allowed_uids[3], 4294967294u);
	lk_config_free(cfg);
	cfg = parse_ok("max_clients: \"32768\"\nclient_idle_timeout: 1m30s\n"
	               "allowed_uids:\n  - 65534\n" ONE_BACKEND "locks: [{name: a}]\n");
	ck_assert_uint_eq(cfg->max_clients, 32768);
	ck_assert_int_eq(cfg->client_idle_timeout_ms, 90000);
	ck_assert_uint_eq(cfg->n_allowed_uids, 1);
	ck_assert_uint_eq(cfg->allowed_uids[0], 65534);
	lk_config_free(cfg);
}
END_TEST

#define LOCKS_A ONE_BACKEND "locks: [{name: a}]\n"

START_TEST(test_max_clients_errors)
{
	EXPECT_ERRORS("max_clients: 1\n" LOCKS_A,
	              NAME ":1:14: max_clients: must be between 2 and 32768, got \"1\"");
	EXPECT_ERRORS("max_clients: 32769\n" LOCKS_A,
	              NAME ":1:14: max_clients: must be between 2 and 32768, got \"32769\"");
	EXPECT_ERRORS("max_clients: 99999999999999999999999\n" LOCKS_A,
	              NAME ":1:14: max_clients: must be between 2 and 32768, got "
	              "\"99999999999999999999999\"");
	EXPECT_ERRORS("max_clients: -5\n" LOCKS_A,
	              NAME ":1:14: max_clients: \"-5\" is not a whole number");
	EXPECT_ERRORS("max_clients: 12.5\n" LOCKS_A,
	              NAME ":1:14: max_clients: \"12.5\" is not a whole number");
	EXPECT_ERRORS("max_clients: lots\n" LOCKS_A,
	              NAME ":1:14: max_clients: \"lots\" is not a whole number");
	EXPECT_ERRORS("max_clients: [8]\n" LOCKS_A,
	              NAME ":1:14: max_clients: expected a number, found a list");
	EXPECT_ERRORS("max_clients: ${LK_UNSET}\n" LOCKS_A,
	              NAME ":1:14: max_clients: environment variable \"LK_UNSET\" is not set");
}
END_TEST

START_TEST(test_client_idle_timeout_errors)
{
	EXPECT_ERRORS("client_idle_timeout: 500ms\n" LOCKS_A,
	              NAME ":1:22: client_idle_timeout: must be at least 1s, got \"500ms\"");
	EXPECT_ERRORS("client_idle_timeout: 10\n" LOCKS_A,
	              NAME ":1:22: client_idle_timeout: \"10\" has no unit");
	EXPECT_ERRORS("client_idle_timeout: {s: 1}\n" LOCKS_A,
	              NAME ":1:22: client_idle_timeout: expected a string, found a mapping");
}
END_TEST

START_TEST(test_allowed_uids_errors)
{
	EXPECT_ERRORS("allowed_uids: 1000\n" LOCKS_A,
	              NAME ":1:15: allowed_uids: expected a list of uids, found \"1000\"");
	EXPECT_ERRORS("allowed_uids: []\n" LOCKS_A,
	              NAME ":1:15: allowed_uids: must list at least one uid (leave the field out "
	              "to allow any peer)");
	EXPECT_ERRORS("allowed_uids:\n  - 1000\n  - -1\n  - root\n  - 4294967295\n  - {a: 1}\n"
	              "  - ~\n" LOCKS_A,
	              NAME ":3:5: allowed_uids[1]: \"-1\" is not a whole number",
	              NAME ":4:5: allowed_uids[2]: \"root\" is not a whole number",
	              NAME ":5:5: allowed_uids[3]: \"4294967295\" is not a uid (0 to 4294967294)",
	              NAME ":6:5: allowed_uids[4]: expected a number, found a mapping",
	              NAME ":7:5: allowed_uids[5]: expected a uid, found null");

	char yaml[1024];
	size_t o = (size_t)snprintf(yaml, sizeof(yaml), "allowed_uids: [");
	for (int i = 0; i <= LK_CONFIG_MAX_UIDS; i++)
		o += (size_t)snprintf(yaml + o, sizeof(yaml) - o, "%s%d", i ? ", " : "", i);
	snprintf(yaml + o, sizeof(yaml) - o, "]\n" LOCKS_A);
	EXPECT_ERRORS(yaml, NAME ":1:15: allowed_uids: too many uids (at most 32)");
}
END_TEST

/* ---- input caps: every file is rejected quickly, whatever its shape ---- */

/* The time this process has run, not the wall clock: the bounds below are about the parser's
 * work (the regression they guard against took 34 s), and must not fail because the machine
 * is busy with other tests. Bounds are generous for sanitizer builds, which run ~3x slower. */
#define CPU_BOUND_S(s) ((s) * 3)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Parse text, require exactly one error, want, and return the seconds it took. */
static double expect_error_timed(const char *what, const char *text, size_t len,
                                 const char *want, int want_rc)
{
	struct lk_config *cfg = NULL;
	struct lk_config_diags d = { 0 };
	double t0 = now_s(), dt;
	int r = lk_config_parse(NAME, text, len, &cfg, &d);

	dt = now_s() - t0;
	fprintf(stderr, "  %-46s %8zu bytes rejected in %.4f s\n", what, len, dt);
	ck_assert_msg(r == want_rc, "%s: expected %d, got %d", what, want_rc, r);
	ck_assert_ptr_null(cfg);
	check_lines("errors", d.errors, d.n_errors, &want, 1);
	lk_config_diags_clear(&d);
	return dt;
}

static char *repeat(const char *head, const char *unit, size_t n, const char *tail, size_t *len)
{
	size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
	char *s = malloc(hl + ul * n + tl + 1);

	ck_assert_ptr_nonnull(s);
	memcpy(s, head, hl);
	for (size_t i = 0; i < n; i++)
		memcpy(s + hl + i * ul, unit, ul);
	memcpy(s + hl + ul * n, tail, tl + 1);
	*len = hl + ul * n + tl;
	return s;
}

START_TEST(test_deep_nesting_is_rejected_fast)
{
	/* libyaml's own loader took 17-35 s for the first of these (its scanner is quadratic in
	 * the flow depth); the limit stops the parse at the 65th level. */
	static const struct { const char *what, *head, *unit, *want; } cases[] = {
		{ "100k nested {", "", "{",
		  NAME ":1:65: yaml: nested too deeply (more than 64 levels of lists and mappings)" },
		{ "100k nested [", "", "[",
		  NAME ":1:65: yaml: nested too deeply (more than 64 levels of lists and mappings)" },
		{ "100k nested {a: under a field", "locks: ", "{a: ",
		  NAME ":1:260: yaml: nested too deeply (more than 64 levels of lists and mappings)" },
		{ "100k nested block lists", "", "- ",
		  NAME ":1:129: yaml: nested too deeply (more than 64 levels of lists and mappings)" },
	};
	double worst = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len;
		char *text = repeat(cases[i].head, cases[i].unit, 100000, "", &len);
		double dt = expect_error_timed(cases[i].what, text, len, cases[i].want, -EINVAL);

		worst = dt > worst ? dt : worst;
		free(text);
	}
	{
		/* Block mappings nested by indentation, as deep as a megabyte allows. */
		char *text = malloc(LK_CONFIG_MAX_BYTES), *want = NAME ":65:65: yaml: nested too "
		             "deeply (more than 64 levels of lists and mappings)";
		size_t o = 0;
		double dt;

		for (int i = 0; o + (size_t)i + 4 < LK_CONFIG_MAX_BYTES; i++)
			o += (size_t)sprintf(text + o, "%*sk:\n", i, "");
		dt = expect_error_timed("nested by indentation", text, o, want, -EINVAL);
		worst = dt > worst ? dt : worst;
		free(text);
	}
	/* Under a second is the contract, with room for a sanitizer build. */
	ck_assert_msg(worst < CPU_BOUND_S(0.1), "slowest rejection took %.3f s", worst);
}
END_TEST

START_TEST(test_depth_limit_boundary)
{
	size_t len;
	/* The root mapping and 63 lists: 64 levels, accepted by the parser (the value is then
	 * the wrong kind for identity). One more list is refused at its "[". */
	char *ok = repeat("identity: ", "[", 63, "", &len);
	char *yaml = malloc(len + 200);

	snprintf(yaml, len + 200, "%s", ok);
	for (int i = 0; i < 63; i++)
		strcat(yaml, "]");
	strcat(yaml, "\n" LOCKS_A);
	EXPECT_ERRORS(yaml, NAME ":1:11: identity: expected a string, found a list");
	free(ok);
	ok = repeat("identity: ", "[", 64, "", &len);
	snprintf(yaml, len + 200, "%s", ok);
	EXPECT_ERRORS(yaml, NAME ":1:74: yaml: nested too deeply (more than 64 levels of lists "
	              "and mappings)");
	free(ok);
	free(yaml);
}
END_TEST

/* The most locks an agent takes, each with a few fields, fit in the file's caps and load in
 * well under a second; a duplicate name among them is still found (by a hash of the names, not
 * by comparing every lock with every earlier one). */
START_TEST(test_max_locks_fit_the_caps_and_load_quickly)
{
	size_t cap = (size_t)LK_CONFIG_MAX_LOCKS * 64 + 256, o = 0, len;
	char *text = malloc(cap), want[160];
	struct lk_config *cfg = NULL;
	struct lk_config_diags d = { 0 };
	double t0, dt;
	int n = LK_CONFIG_MAX_LOCKS;

	ck_assert_ptr_nonnull(text);
	o += (size_t)snprintf(text + o, cap - o, "backends: [{name: b, type: redis}]\nlocks:\n");
	for (int i = 0; i < n; i++)
		o += (size_t)snprintf(text + o, cap - o,
		                      "  - {name: lock-%05d, backend: b, ttl: 10s, campaign: always}\n",
		                      i);
	ck_assert_uint_le(o, LK_CONFIG_MAX_BYTES);
	t0 = now_s();
	ck_assert_int_eq(lk_config_parse(NAME, text, o, &cfg, &d), 0);
	dt = now_s() - t0;
	fprintf(stderr, "  %-46s %8zu bytes loaded in %.4f s\n", "the most locks", o, dt);
	ck_assert_msg(dt < CPU_BOUND_S(1.0), "took %.3f s", dt);
	ck_assert_uint_eq(cfg->n_locks, (size_t)n);
	ck_assert_str_eq(cfg->locks[n - 1].name, "lock-16383");
	lk_config_free(cfg);
	lk_config_diags_clear(&d);

	/* The last lock takes the name of the sixth. */
	len = o;
	o = len - strlen("  - {name: lock-16383, backend: b, ttl: 10s, campaign: always}\n");
	o += (size_t)snprintf(text + o, cap - o,
	                      "  - {name: lock-00005, backend: b, ttl: 10s, campaign: always}\n");
	snprintf(want, sizeof(want), NAME ":%d:12: locks[%d].name: lock name \"lock-00005\" is "
	         "already used by locks[5]", n + 2, n - 1);
	dt = expect_error_timed("the most locks, one name twice", text, o, want, -EINVAL);
	ck_assert_msg(dt < CPU_BOUND_S(1.0), "took %.3f s", dt);
	free(text);
}
END_TEST

START_TEST(test_value_count_and_anchor_caps)
{
	size_t len;
	char *text, want[160];
	double dt;

	/* LK_CONFIG_MAX_NODES + 1 values: the root mapping, "locks" and the list count too. */
	text = repeat("locks: [", "a,", LK_CONFIG_MAX_NODES, "a]\n", &len);
	snprintf(want, sizeof(want), NAME ":1:%d: yaml: the document is too large (more than "
	         "%d values)", 8 + 2 * (LK_CONFIG_MAX_NODES - 3) + 1, LK_CONFIG_MAX_NODES);
	dt = expect_error_timed("200001 values", text, len, want, -EINVAL);
	ck_assert_msg(dt < CPU_BOUND_S(1.0), "took %.3f s", dt);
	free(text);

	text = repeat("locks: [", "&a a, ", 2, "]\n", &len);
	expect_error_timed("a duplicate anchor", text, len,
	                   NAME ":1:15: yaml: found duplicate anchor \"a\" (first at 1:9)", -EINVAL);
	free(text);

	{
		char *big = malloc(64 * 1024);
		size_t o = (size_t)sprintf(big, "locks: [");

		for (int i = 0; i <= LK_CONFIG_MAX_ANCHORS; i++)
			o += (size_t)sprintf(big + o, "&a%d x,", i);
		sprintf(big + o, "]\n");
		snprintf(want, sizeof(want), NAME ":1:%zu: yaml: too many anchors (at most 256)",
		         (size_t)(8 + 6 * 10 + 7 * 90 + 8 * 156 + 1));
		expect_error_timed("257 anchors", big, strlen(big), want, -EINVAL);
		free(big);
	}

	text = repeat("locks: [&a x, ", "*a, ", LK_CONFIG_MAX_ALIASES + 1, "]\n", &len);
	snprintf(want, sizeof(want), NAME ":1:%d: yaml: too many aliases (at most 4096)",
	         14 + 4 * LK_CONFIG_MAX_ALIASES + 1);
	dt = expect_error_timed("4097 aliases", text, len, want, -EINVAL);
	ck_assert_msg(dt < CPU_BOUND_S(1.0), "took %.3f s", dt);
	free(text);
}
END_TEST

START_TEST(test_worst_files_within_the_caps_are_fast)
{
	/* Shapes that stay inside every cap but are as expensive as a megabyte can make them:
	 * all of them must still be answered (with some error) in well under a second. */
	static const struct { const char *what, *head, *unit; size_t n; } cases[] = {
		{ "60 levels deep, then 100k scalars", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
		  "[[[[[[[[[[[[[[[[", "a,", 99000 },
		{ "one 1 MiB plain scalar", "identity: ", "x", 1000000 },
		{ "one 1 MiB quoted scalar", "identity: \"", "\\t", 500000 },
		{ "100k flow keys", "{", "k: v, ", 49000 },
		{ "1 MiB of comments", "", "#\n", 500000 },
	};
	double worst = 0;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct lk_config *cfg = NULL;
		struct lk_config_diags d = { 0 };
		size_t len;
		char *text = repeat(cases[i].head, cases[i].unit, cases[i].n, "", &len);
		double t0 = now_s(), dt;
		int r = lk_config_parse(NAME, text, len, &cfg, &d);

		dt = now_s() - t0;
		fprintf(stderr, "  %-46s %8zu bytes answered in %.4f s (%s)\n", cases[i].what, len,
		        dt, d.n_errors ? d.errors[0] : "no error");
		ck_assert_int_eq(r, -EINVAL);
		ck_assert_uint_ge(d.n_errors, 1);
		lk_config_diags_clear(&d);
		free(text);
		worst = dt > worst ? dt : worst;
	}
	ck_assert_msg(worst < CPU_BOUND_S(1.0), "slowest answer took %.3f s", worst);
}
END_TEST

START_TEST(test_load_huge_file_is_rejected_fast)
{
	struct lk_config *cfg = NULL;
	struct lk_config_diags d = { 0 };
	char want[256];
	double t0, dt;
	int fd;

	/* 8 GiB, sparse: the loader reads one byte past the cap and stops. */
	fd = open(tmp_path("huge.yaml"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)8 << 30), 0);
	close(fd);
	t0 = now_s();
	ck_assert_int_eq(lk_config_load(tmp_path("huge.yaml"), &cfg, &d), -EFBIG);
	dt = now_s() - t0;
	fprintf(stderr, "  %-46s rejected in %.4f s\n", "an 8 GiB file", dt);
	ck_assert_ptr_null(cfg);
	/* All NUL bytes: one line, and the column counts characters. */
	snprintf(want, sizeof(want), "%s:1:1048577: yaml: the file is too large (more than "
	         "1048576 bytes)", tmp_path("huge.yaml"));
	check_lines("errors", d.errors, d.n_errors, LIST(want));
	lk_config_diags_clear(&d);
	ck_assert_msg(dt < CPU_BOUND_S(0.5), "took %.3f s", dt);
}
END_TEST

/* ---- check-config accepts exactly what the agent accepts ---- */

/* What the agent does with a backend entry at start-up: create it (the connection is made
 * later, from the loop, so no server is needed). 0 or a negative errno. */
static int agent_accepts(const struct lk_config_backend *b)
{
	struct event_base *base = event_base_new();
	struct lk_backend *be = NULL;
	char err[512];
	int r;

	ck_assert_ptr_nonnull(base);
	r = lk_backend_new(base, b, NULL, &be, err, sizeof(err));
	lk_backend_free(be);
	event_base_free(base);
	return r;
}

/* Whether check-config takes this backend entry (the lines after "type:"). */
static bool config_accepts(const char *type, const char *lines, struct lk_config **ret)
{
	char yaml[2048];
	struct lk_config_diags d;
	struct lk_config *cfg = NULL;
	int r;

	snprintf(yaml, sizeof(yaml), "backends:\n  - name: b\n    type: %s\n%slocks: [{name: a}]\n",
	         type, lines);
	r = parse(yaml, &cfg, &d);
	lk_config_diags_clear(&d);
	*ret = cfg;
	return r == 0;
}

/* Give check-config and the agent each value as a redis address or an etcd endpoint, and
 * require the same verdict from both: accepted (good) or refused. */
static void expect_same_verdict(enum lk_backend_type type, const char *const *v, size_t n,
                                bool good)
{
	const char *tname = lk_backend_type_name(type);
	char lines[512];
	struct lk_config *cfg;

	for (size_t i = 0; i < n; i++) {
		char *eps[] = { (char *)v[i] };
		struct lk_config_backend b = { .name = "b", .type = type, .timeout_ms = 500 };

		if (type == LK_BACKEND_REDIS) {
			snprintf(lines, sizeof(lines), "    address: \"%s\"\n", v[i]);
			b.address = (char *)v[i];
		} else {
			snprintf(lines, sizeof(lines), "    endpoints: [\"%s\"]\n", v[i]);
			b.endpoints = eps;
			b.n_endpoints = 1;
		}
		ck_assert_msg(config_accepts(tname, lines, &cfg) == good, "check-config %s %s",
		              good ? "refused" : "took", v[i]);
		ck_assert_msg((agent_accepts(good ? &cfg->backends[0] : &b) == 0) == good,
		              "the agent %s %s", good ? "refused" : "took", v[i]);
		lk_config_free(cfg);
	}
}

#define VERDICTS(type, good, ...) expect_same_verdict((type), LIST(__VA_ARGS__), (good))

START_TEST(test_check_config_refuses_the_redis_addresses_the_agent_refuses)
{
	static char long_host[300];

	memset(long_host, 'h', 256);
	strcpy(long_host + 256, ":6379");
	VERDICTS(LK_BACKEND_REDIS, false, "a@b:6379", "[zz]:6379", "localhost", "host:0",
	         "host:65536", "host:+80", "::1:6379", "[::1]", "[::1]6379", "[]:6379",
	         "[fe80::1%]:6379", "unix:", "a b:1", "a/b:1", long_host);
	VERDICTS(LK_BACKEND_REDIS, true, "127.0.0.1:6379", "redis.svc.cluster.local:6379",
	         "my_host-1:1", "[::1]:65535", "[fe80::1%eth0]:6379", "unix:/run/redis.sock");
}
END_TEST

START_TEST(test_check_config_refuses_the_etcd_settings_the_agent_refuses)
{
	char lines[512];
	struct lk_config *cfg;

	VERDICTS(LK_BACKEND_ETCD, false, "http://a@b:2379", "http://x:2379/v3", "http://x?y",
	         "http://x#y", "ftp://x:2379", "http://", "https:///", "x:2379");
	VERDICTS(LK_BACKEND_ETCD, true, "http://127.0.0.1:2379", "https://etcd.svc:2379/",
	         "http://[::1]:2379");

	/* Settings that need another: refused by both, whichever is missing. */
	for (size_t i = 0; i < LK_BACKEND_ETCD_N_REQUIRES; i++) {
		const struct lk_backend_requires *rq = &lk_backend_etcd_requires[i];
		char *eps[] = { "http://127.0.0.1:2379" };
		struct lk_config_backend b = { .name = "b", .type = LK_BACKEND_ETCD,
		                               .timeout_ms = 1000, .endpoints = eps,
		                               .n_endpoints = 1 };
		const char *file = strcmp(rq->field, "username") == 0 ? "root" : tmp_path("password");

		*(char **)((char *)&b + rq->field_off) = (char *)file;
		snprintf(lines, sizeof(lines), "    %s: \"%s\"\n", rq->field, file);
		ck_assert_msg(!config_accepts("etcd", lines, &cfg), "check-config took %s alone",
		              rq->field);
		ck_assert_msg(agent_accepts(&b) == -EINVAL, "the agent took %s alone", rq->field);
	}
}
END_TEST

START_TEST(test_check_config_refuses_the_http_listen_the_agent_refuses)
{
	static const char *const bad[] = { "a@b:9440", "[zz]:9440", "unix:/run/x.sock" };
	char yaml[256];
	struct lk_config_diags d;
	struct lk_config *cfg = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(yaml, sizeof(yaml), "http_listen: \"%s\"\n" ONE_BACKEND
		         "locks: [{name: a}]\n", bad[i]);
		ck_assert_msg(parse(yaml, &cfg, &d) == -EINVAL, "check-config took %s", bad[i]);
		lk_config_diags_clear(&d);
		ck_assert(!lk_backend_valid_address(bad[i], true));
	}
	cfg = parse_ok("http_listen: \"[::1]:9440\"\n" ONE_BACKEND "locks: [{name: a}]\n");
	lk_config_free(cfg);
}
END_TEST


/* ---- Redis: ACL user, database, Sentinel ---- */

START_TEST(test_redis_acl_user_db_and_sentinels_parse)
{
	struct lk_config *cfg = parse_ok(
		"backends:\n"
		"  - name: acl\n    type: redis\n    address: \"10.0.0.1:6379\"\n"
		"    username: lk-agent\n    password_file: ${LK_TEST_DIR}/password\n    db: 15\n"
		"    min_replicas_acked: 2\n"
		"  - name: ha\n    type: redis\n"
		"    sentinels: [\"s1:26379\", \"[::1]:26380\", \"10.0.0.3:26379\"]\n"
		"    master_name: mymaster\n"
		"    sentinel_username: watcher\n"
		"    sentinel_password_file: ${LK_TEST_DIR}/password\n"
		"  - {name: plain, type: redis}\n"
		"locks:\n  - {name: a, backend: acl}\n  - {name: b, backend: ha}\n"
		"  - {name: c, backend: plain}\n");
	struct lk_config_backend *b = &cfg->backends[0];

	ck_assert_str_eq(b->username, "lk-agent");
	ck_assert_str_eq(b->password_file, tmp_path("password"));
	ck_assert_uint_eq(b->db, 15);
	ck_assert_uint_eq(b->min_replicas_acked, 2);
	ck_assert_uint_eq(b->n_sentinels, 0);
	ck_assert_ptr_null(b->master_name);
	b = &cfg->backends[1];
	/* No default address next to sentinels: the sentinels tell it. */
	ck_assert_ptr_null(b->address);
	ck_assert_uint_eq(b->n_sentinels, 3);
	ck_assert_str_eq(b->sentinels[0], "s1:26379");
	ck_assert_str_eq(b->sentinels[1], "[::1]:26380");
	ck_assert_str_eq(b->sentinels[2], "10.0.0.3:26379");
	ck_assert_str_eq(b->master_name, "mymaster");
	ck_assert_str_eq(b->sentinel_username, "watcher");
	ck_assert_str_eq(b->sentinel_password_file, tmp_path("password"));
	ck_assert_uint_eq(b->db, 0);
	ck_assert_ptr_null(b->username);
	b = &cfg->backends[2];
	ck_assert_str_eq(b->address, LK_BACKEND_REDIS_DEFAULT_ADDRESS);
	ck_assert_uint_eq(b->db, 0);
	ck_assert_uint_eq(b->min_replicas_acked, 0);
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_redis_acl_user_db_and_sentinel_errors)
{
	EXPECT_ERRORS(ONE_BACKEND "    db: 16\nlocks: [{name: a}]\n",
	              NAME ":4:9: backends[0].db: must be between 0 and 15, got \"16\"");
	EXPECT_ERRORS(ONE_BACKEND "    min_replicas_acked: 65\nlocks: [{name: a}]\n",
	              NAME ":4:25: backends[0].min_replicas_acked: must be between 0 and 64, got "
	              "\"65\"");
	EXPECT_ERRORS(ONE_BACKEND "    db: -1\nlocks: [{name: a}]\n",
	              NAME ":4:9: backends[0].db: \"-1\" is not a whole number");
	EXPECT_ERRORS(ONE_BACKEND "    username: lk\nlocks: [{name: a}]\n",
	              NAME ":4:15: backends[0].username: requires password_file");
	EXPECT_ERRORS(ONE_BACKEND "    username: \"a b\"\n    password_file: ${LK_TEST_DIR}/password\n"
	              "locks: [{name: a}]\n",
	              NAME ":4:15: backends[0].username: \"a b\" must be 1 to 253 printable ASCII "
	              "characters without spaces");
	EXPECT_ERRORS(ONE_BACKEND "    address: \"r:6379\"\n    sentinels: [\"s:26379\"]\n"
	              "    master_name: m\nlocks: [{name: a}]\n",
	              NAME ":4:14: backends[0].address: cannot be used with sentinels (the "
	              "sentinels tell the master's address)");
	EXPECT_ERRORS(ONE_BACKEND "    sentinels: [\"s:26379\", \"unix:/s.sock\", \"s\"]\n"
	              "locks: [{name: a}]\n",
	              NAME ":4:16: backends[0].sentinels: requires master_name",
	              NAME ":4:28: backends[0].sentinels[1]: \"unix:/s.sock\" is not host:port or "
	              "[v6]:port",
	              NAME ":4:44: backends[0].sentinels[2]: \"s\" is not host:port or [v6]:port");
	EXPECT_ERRORS(ONE_BACKEND "    sentinels: []\n    master_name: m\nlocks: [{name: a}]\n",
	              NAME ":4:16: backends[0].sentinels: at least one sentinel is required");
	EXPECT_ERRORS(ONE_BACKEND "    sentinels: s:26379\n    master_name: m\nlocks: [{name: a}]\n",
	              NAME ":4:16: backends[0].sentinels: expected a list, found \"s:26379\"");
	EXPECT_ERRORS(ONE_BACKEND "    master_name: m\nlocks: [{name: a}]\n",
	              NAME ":4:18: backends[0].master_name: requires sentinels");
	EXPECT_ERRORS(ONE_BACKEND "    sentinels: [\"s:26379\"]\n    master_name: \"m n\"\n"
	              "locks: [{name: a}]\n",
	              NAME ":5:18: backends[0].master_name: \"m n\" must be 1 to 128 printable "
	              "ASCII characters without spaces");
	EXPECT_ERRORS(ONE_BACKEND "    sentinel_password_file: ${LK_TEST_DIR}/password\n"
	              "    sentinel_username: w\nlocks: [{name: a}]\n",
	              NAME ":4:29: backends[0].sentinel_password_file: requires sentinels");
	EXPECT_ERRORS(ONE_BACKEND "    sentinels: [\"s:26379\"]\n    master_name: m\n"
	              "    sentinel_username: w\nlocks: [{name: a}]\n",
	              NAME ":6:24: backends[0].sentinel_username: requires sentinel_password_file");
	EXPECT_ERRORS(ONE_BACKEND "    sentinels: [\"s:26379\"]\n    master_name: m\n"
	              "    sentinel_password_file: /nonexistent/lk-pw\nlocks: [{name: a}]\n",
	              NAME ":6:29: backends[0].sentinel_password_file: cannot read "
	              "\"/nonexistent/lk-pw\": No such file or directory");
}
END_TEST

/* ---- Redis: TLS ---- */

START_TEST(test_redis_tls_parse)
{
	struct lk_config *cfg = parse_ok(
		"backends:\n"
		"  - name: managed\n    type: redis\n    address: \"rediss://redis.example:6380\"\n"
		"    ca_file: ${LK_TEST_DIR}/ca.pem\n    cert_file: ${LK_TEST_DIR}/cert.pem\n"
		"    key_file: ${LK_TEST_DIR}/key.pem\n    server_name: r.internal\n"
		"  - {name: flag, type: redis, address: \"10.0.0.1:6380\", tls: true}\n"
		"  - {name: plain, type: redis, address: \"redis://10.0.0.2:6379\", tls: false}\n"
		"locks:\n  - {name: a, backend: managed}\n  - {name: b, backend: flag}\n"
		"  - {name: c, backend: plain}\n");
	struct lk_config_backend *b = &cfg->backends[0];

	ck_assert_str_eq(b->address, "rediss://redis.example:6380");
	ck_assert(!b->tls);
	ck_assert(lk_backend_redis_tls(b));
	ck_assert_str_eq(b->ca_file, tmp_path("ca.pem"));
	ck_assert_str_eq(b->cert_file, tmp_path("cert.pem"));
	ck_assert_str_eq(b->key_file, tmp_path("key.pem"));
	ck_assert_str_eq(b->server_name, "r.internal");
	ck_assert(cfg->backends[1].tls && lk_backend_redis_tls(&cfg->backends[1]));
	ck_assert_ptr_null(cfg->backends[1].ca_file);
	ck_assert(!lk_backend_redis_tls(&cfg->backends[2]));
	lk_config_free(cfg);
}
END_TEST

START_TEST(test_redis_tls_errors)
{
	EXPECT_ERRORS(ONE_BACKEND "    server_name: r.test\n    ca_file: /x\nlocks: [{name: a}]\n",
	              NAME ":4:5: backends[0].server_name: requires tls: true (or a rediss:// "
	              "address)",
	              NAME ":5:5: backends[0].ca_file: requires tls: true (or a rediss:// address)");
	EXPECT_ERRORS(ONE_BACKEND "    address: \"rediss://unix:/r.sock\"\nlocks: [{name: a}]\n",
	              NAME ":4:14: backends[0].address: \"rediss://unix:/r.sock\" is a unix socket, "
	              "and Redis serves TLS on its tls-port only");
	EXPECT_ERRORS(ONE_BACKEND "    address: \"unix:/r.sock\"\n    tls: true\nlocks: [{name: a}]\n",
	              NAME ":4:14: backends[0].address: \"unix:/r.sock\" is a unix socket, and Redis "
	              "serves TLS on its tls-port only");
	EXPECT_ERRORS(ONE_BACKEND "    address: \"rediss://u:pw@r:6380\"\nlocks: [{name: a}]\n",
	              NAME ":4:14: backends[0].address: \"rediss://u:pw@r:6380\" has credentials: "
	              "they belong in username and password_file");
	EXPECT_ERRORS(ONE_BACKEND "    address: \"rediss://r:6380/0\"\nlocks: [{name: a}]\n",
	              NAME ":4:14: backends[0].address: \"rediss://r:6380/0\" is not host:port, "
	              "[v6]:port, unix:/path or rediss://host:port");
	EXPECT_ERRORS(ONE_BACKEND "    address: \"rediss://r:6380\"\n    tls: false\n"
	              "locks: [{name: a}]\n",
	              NAME ":5:10: backends[0].tls: false contradicts the rediss:// address");
	EXPECT_ERRORS(ONE_BACKEND "    tls: maybe\nlocks: [{name: a}]\n",
	              NAME ":4:10: backends[0].tls: unknown boolean \"maybe\"; expected false or "
	              "true");
	EXPECT_ERRORS(ONE_BACKEND "    tls: true\n    cert_file: ${LK_TEST_DIR}/cert.pem\n"
	              "    server_name: \"a b\"\nlocks: [{name: a}]\n",
	              NAME ":5:16: backends[0].cert_file: requires key_file",
	              NAME ":6:18: backends[0].server_name: \"a b\" is not a DNS name");
	EXPECT_ERRORS(ONE_BACKEND "    tls: true\n    key_file: ${LK_TEST_DIR}/key.pem\n"
	              "locks: [{name: a}]\n",
	              NAME ":5:15: backends[0].key_file: requires cert_file");
}
END_TEST

/* Hand-made entries that break each Redis rule: the agent refuses them as check-config does
 * (the rules are written once, in locks/redis_rules.c). */
START_TEST(test_check_config_refuses_the_redis_settings_the_agent_refuses)
{
	static const char *const lines[] = {
		"    db: 16\n",
		"    username: lk\n",
		"    address: \"r:6379\"\n    sentinels: [\"s:26379\"]\n    master_name: m\n",
		"    sentinels: [\"s:26379\"]\n",
		"    master_name: m\n",
		"    sentinels: [\"unix:/s.sock\"]\n    master_name: m\n",
		"    sentinels: [\"s:26379\"]\n    master_name: \"m n\"\n",
		"    sentinels: [\"s:26379\"]\n    master_name: m\n    sentinel_username: w\n",
		"    min_replicas_acked: 65\n",
		"    server_name: r.test\n",
		"    address: \"rediss://unix:/r.sock\"\n",
		"    tls: true\n    cert_file: ${LK_TEST_DIR}/cert.pem\n",
		"    address: \"rediss://u:p@r:1\"\n",
		"    ca_file: ${LK_TEST_DIR}/ca.pem\n",
		"    address: \"unix:/r.sock\"\n    tls: true\n",
	};
	char *ok[] = { "s:26379" }, *unix_s[] = { "unix:/s.sock" };
	struct lk_config_backend bad[] = {
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .db = 16 },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .username = "lk" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .address = "r:6379",
		  .sentinels = ok, .n_sentinels = 1, .master_name = "m" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .sentinels = ok,
		  .n_sentinels = 1 },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .master_name = "m" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .sentinels = unix_s,
		  .n_sentinels = 1, .master_name = "m" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .sentinels = ok,
		  .n_sentinels = 1, .master_name = "m n" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .sentinels = ok,
		  .n_sentinels = 1, .master_name = "m", .sentinel_username = "w" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .min_replicas_acked = 65 },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .server_name = "r.test" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500,
		  .address = "rediss://unix:/r.sock" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .tls = true,
		  .cert_file = "/c.pem" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500,
		  .address = "rediss://u:p@r:1" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .ca_file = "/ca.pem" },
		{ .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500, .address = "unix:/r.sock",
		  .tls = true },
	};
	struct lk_config_backend good = { .name = "b", .type = LK_BACKEND_REDIS, .timeout_ms = 500,
	                                  .sentinels = ok, .n_sentinels = 1, .master_name = "m",
	                                  .db = 15 };
	struct lk_config *cfg;

	_Static_assert(sizeof(lines) / sizeof(lines[0]) == sizeof(bad) / sizeof(bad[0]),
	               "one hand-made entry per config text");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(!config_accepts("redis", lines[i], &cfg), "check-config took %s",
		              lines[i]);
		ck_assert_msg(agent_accepts(&bad[i]) == -EINVAL, "the agent took %s", lines[i]);
	}
	ck_assert_msg(config_accepts("redis", "    sentinels: [\"s:26379\"]\n    master_name: m\n"
	                             "    db: 15\n", &cfg), "check-config refused a good entry");
	ck_assert_int_eq(agent_accepts(&cfg->backends[0]), 0);
	lk_config_free(cfg);
	ck_assert_int_eq(agent_accepts(&good), 0);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("valid");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_spec_example_parses_to_its_values);
	tcase_add_test(tc, test_defaults_fill_everything_left_out);
	tcase_add_test(tc, test_renew_defaults_follow_ttl);
	tcase_add_test(tc, test_etcd_defaults);
	tcase_add_test(tc, test_identity_falls_back_to_gethostname);
	tcase_add_test(tc, test_null_values_mean_absent);
	tcase_add_test(tc, test_values_of_every_accepted_form);
	tcase_add_test(tc, test_socket_mode_forms);
	tcase_add_test(tc, test_http_listen_empty_disables);
	tcase_add_test(tc, test_env_expansion);
	tcase_add_test(tc, test_env_expansion_in_list_items);
	tcase_add_test(tc, test_aliases_and_cycles_are_harmless);
	tcase_add_test(tc, test_free_and_clear_accept_empty);
	tcase_add_test(tc, test_check_config_refuses_the_redis_addresses_the_agent_refuses);
	tcase_add_test(tc, test_check_config_refuses_the_etcd_settings_the_agent_refuses);
	tcase_add_test(tc, test_check_config_refuses_the_http_listen_the_agent_refuses);
	tcase_add_test(tc, test_check_config_refuses_the_redis_settings_the_agent_refuses);
	tcase_add_test(tc, test_redis_acl_user_db_and_sentinels_parse);
	tcase_add_test(tc, test_redis_tls_parse);
	tcase_add_test(tc, test_client_slot_defaults);
	tcase_add_test(tc, test_client_slot_values);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_invalid_default_identity_is_an_error);
	tcase_add_test(tc, test_http_listen_must_be_host_port);
	tcase_add_test(tc, test_env_expansion_errors);
	tcase_add_test(tc, test_yaml_syntax_errors);
	tcase_add_test(tc, test_empty_or_not_a_mapping);
	tcase_add_test(tc, test_second_document_rejected);
	tcase_add_test(tc, test_unknown_fields);
	tcase_add_test(tc, test_duplicate_keys);
	tcase_add_test(tc, test_wrong_node_kinds);
	tcase_add_test(tc, test_missing_required_fields);
	tcase_add_test(tc, test_backend_reference);
	tcase_add_test(tc, test_backend_type_and_foreign_fields);
	tcase_add_test(tc, test_backend_values);
	tcase_add_test(tc, test_etcd_endpoints);
	tcase_add_test(tc, test_etcd_credentials);
	tcase_add_test(tc, test_redis_acl_user_db_and_sentinel_errors);
	tcase_add_test(tc, test_redis_tls_errors);
	tcase_add_test(tc, test_referenced_files_must_be_readable);
	tcase_add_test(tc, test_etcd_files_must_be_readable);
	tcase_add_test(tc, test_top_level_values);
	tcase_add_test(tc, test_identity_rules);
	tcase_add_test(tc, test_lock_names);
	tcase_add_test(tc, test_lock_key);
	tcase_add_test(tc, test_lock_key_leaves_room_for_its_fence_key);
	tcase_add_test(tc, test_lock_durations);
	tcase_add_test(tc, test_timing_relations);
	tcase_add_test(tc, test_multiple_errors_reported_together_in_file_order);
	tcase_add_test(tc, test_error_count_is_capped);
	tcase_add_test(tc, test_list_caps);
	tcase_add_test(tc, test_messages_escape_control_characters);
	tcase_add_test(tc, test_max_clients_errors);
	tcase_add_test(tc, test_client_idle_timeout_errors);
	tcase_add_test(tc, test_allowed_uids_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("input caps");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_deep_nesting_is_rejected_fast);
	tcase_add_test(tc, test_depth_limit_boundary);
	tcase_add_test(tc, test_max_locks_fit_the_caps_and_load_quickly);
	tcase_add_test(tc, test_value_count_and_anchor_caps);
	tcase_add_test(tc, test_worst_files_within_the_caps_are_fast);
	suite_add_tcase(s, tc);

	tc = tcase_create("warnings");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_etcd_short_ttl_warns);
	tcase_add_test(tc, test_drain_longer_than_shutdown_warns);
	tcase_add_test(tc, test_warnings_come_with_errors);
	suite_add_tcase(s, tc);

	tc = tcase_create("load");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_parse_rejects_oversized_text);
	tcase_add_test(tc, test_load_missing_file);
	tcase_add_test(tc, test_load_too_large_file);
	tcase_add_test(tc, test_load_reads_and_names_the_file);
	tcase_add_test(tc, test_load_huge_file_is_rejected_fast);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

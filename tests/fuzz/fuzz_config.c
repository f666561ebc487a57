/* libFuzzer target: the YAML config loader (agent/config.c).
 *
 * The input is the text of a config file, handed to lk_config_parse(), the in-memory entry
 * point that lk_config_load() calls after reading the file (so no temporary file is needed).
 *
 * Properties (abort() on failure):
 * - the result is exactly one of: 0 with a config and no errors, or a negative errno with no
 *   config and at least one error; every diagnostic starts with the name given, then ':';
 * - an accepted config holds what config.h promises: every lock names an existing backend, has
 *   a valid name (unique) and renew_interval < renew_deadline < ttl; caps on backends, locks,
 *   endpoints, uids and clients are kept; every etcd backend has an endpoint;
 * - it never crashes, leaks or hangs: libFuzzer's -timeout (tests/fuzz/fuzz.mk sets it low for
 *   this target) catches an input that takes long, which the loader's caps promise none does.
 *
 * ${VAR} expansion reads the environment: a few variables are set once so that expansion
 * succeeds for inputs that use them (the dictionary-free fuzzer finds "${" quickly).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/config.h"
#include "proto/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define NAME "fuzz.yaml"

#define CHECK(cond)                                                                  \
	do {                                                                         \
		if (!(cond)) {                                                       \
			fprintf(stderr, "fuzz_config: %s:%d: property failed: %s\n", \
			        __FILE__, __LINE__, #cond);                          \
			abort();                                                     \
		}                                                                    \
	} while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	setenv("HOSTNAME", "fuzz-host", 1);
	setenv("POD_NAME", "pod-7", 1);
	setenv("A", "a", 1);
	setenv("EMPTY", "", 1);
	setenv("LONG", "0123456789012345678901234567890123456789012345678901234567890123456789", 1);
	return 0;
}

static void check_diags(const struct lk_config_diags *d)
{
	for (size_t i = 0; i < d->n_errors; i++)
		CHECK(d->errors[i] && strncmp(d->errors[i], NAME ":", strlen(NAME ":")) == 0);
	for (size_t i = 0; i < d->n_warnings; i++)
		CHECK(d->warnings[i] && strncmp(d->warnings[i], NAME ":", strlen(NAME ":")) == 0);
	CHECK(d->n_errors <= LK_CONFIG_MAX_DIAGS + 1);
}

static void check_config(const struct lk_config *cfg)
{
	CHECK(cfg->identity && cfg->identity[0]);
	CHECK(cfg->socket_path && cfg->socket_path[0]);
	CHECK(!cfg->http_listen || cfg->http_listen[0]);
	CHECK(cfg->shutdown_timeout_ms > 0);
	CHECK(cfg->max_clients >= LK_CONFIG_MIN_MAX_CLIENTS &&
	      cfg->max_clients <= LK_CONFIG_MAX_MAX_CLIENTS);
	CHECK(cfg->client_idle_timeout_ms >= LK_CONFIG_MIN_IDLE_MS);
	CHECK((cfg->allowed_uids == NULL) == (cfg->n_allowed_uids == 0));
	CHECK(cfg->n_allowed_uids <= LK_CONFIG_MAX_UIDS);

	CHECK(cfg->n_backends >= 1 && cfg->n_backends <= LK_CONFIG_MAX_BACKENDS);
	for (size_t i = 0; i < cfg->n_backends; i++) {
		const struct lk_config_backend *b = &cfg->backends[i];

		CHECK(b->name && b->name[0]);
		CHECK(b->timeout_ms > 0);
		CHECK(b->type == LK_BACKEND_REDIS || b->type == LK_BACKEND_ETCD);
		if (b->type == LK_BACKEND_REDIS)
			CHECK(b->address && b->address[0]);
		else
			CHECK(b->n_endpoints >= 1 && b->n_endpoints <= LK_CONFIG_MAX_ENDPOINTS &&
			      b->endpoints);
		for (size_t j = 0; j < b->n_endpoints; j++)
			CHECK(b->endpoints[j] && b->endpoints[j][0]);
		CHECK(!b->username || b->password_file);
		CHECK(!b->cert_file == !b->key_file);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(cfg->backends[j].name, b->name) != 0);
	}

	CHECK(cfg->n_locks <= LK_CONFIG_MAX_LOCKS);
	for (size_t i = 0; i < cfg->n_locks; i++) {
		const struct lk_config_lock *l = &cfg->locks[i];

		CHECK(lk_codec_lock_name_valid(l->name));
		CHECK(l->backend < cfg->n_backends);
		CHECK(l->key && l->key[0]);
		CHECK(l->ttl_ms > 0);
		CHECK(l->renew_interval_ms > 0);
		CHECK(l->renew_interval_ms < l->renew_deadline_ms);
		CHECK(l->renew_deadline_ms < l->ttl_ms);
		CHECK(l->retry_interval_ms > 0);
		CHECK(l->stepdown_timeout_ms >= 0 && l->release_timeout_ms >= 0);
		CHECK(l->campaign == LK_CAMPAIGN_WHEN_APP_CONNECTED || l->campaign == LK_CAMPAIGN_ALWAYS);
		for (size_t j = 0; j < i; j++)
			CHECK(strcmp(cfg->locks[j].name, l->name) != 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lk_config_diags diags = {0};
	struct lk_config *cfg = NULL;
	char *text;
	int r;

	/* An exact-size copy without a NUL: the loader is given a length and must not read past
	 * it (ASan sees it if it does). */
	text = malloc(size ? size : 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	r = lk_config_parse(NAME, text, size, &cfg, &diags);
	check_diags(&diags);
	if (r == 0) {
		CHECK(cfg != NULL);
		CHECK(diags.n_errors == 0);
		check_config(cfg);
	} else {
		CHECK(r < 0);
		CHECK(cfg == NULL);
		CHECK(diags.n_errors >= 1);
	}
	lk_config_free(cfg);
	lk_config_diags_clear(&diags);
	free(text);
	return 0;
}

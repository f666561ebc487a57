/* TLS for the Redis backend's connections (`tls: true` or a rediss:// address).
 *
 * hiredis's own redisCreateSSLContext() checks the server's chain but never its name: any
 * certificate a trusted CA signed for any host would do. So the agent keeps its own OpenSSL
 * context and hands hiredis, per connection, an SSL object that already knows which name (or
 * IP address) the certificate must carry: server_name if set, else the host of the address the
 * connection dials (for Sentinel, the master the sentinels named, or the sentinel itself).
 *
 * The handshake runs inside hiredis's non-blocking reads and writes, behind the first command;
 * a failure breaks the connection like any other I/O error, with OpenSSL's reason, and a
 * stalled handshake is caught by the attempt's deadline. */
#include "locks/redis_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis_ssl.h>
#ifdef redisInitiateSSL
/* hiredict's hiredis shims rename the functions without declaring them (gcc stays silent, as
 * the call comes from a system header's macro; clang does not). */
#include <hiredict/hiredict_ssl.h>
#endif
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct lk_redis_tls {
	SSL_CTX *ctx;
	char *server_name;               /* NULL: check the dialled host */
};

/* OpenSSL's newest queued reason, after `what`; the queue is left empty for the next call. */
static void tls_error(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_peek_last_error();
	char reason[256];

	if (e) {
		ERR_error_string_n(e, reason, sizeof(reason));
		snprintf(err, errlen, "%s: %s", what, reason);
	} else {
		snprintf(err, errlen, "%s", what);
	}
	ERR_clear_error();
}

int lk_redis_tls_new(struct lk_redis *r, const struct lk_config_backend *cfg,
                     char *err, size_t errlen)
{
	struct lk_redis_tls *t;
	char what[LK_REDIS_MAX_LOG_LEN];

	t = calloc(1, sizeof(*t));
	if (!t || (cfg->server_name && !(t->server_name = strdup(cfg->server_name)))) {
		free(t);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r->tls = t;
	/* What hiredis itself would set up once, before any of its SSL calls. */
	(void)redisInitOpenSSL();
	ERR_clear_error();
	t->ctx = SSL_CTX_new(TLS_client_method());
	if (!t->ctx) {
		tls_error(err, errlen, "cannot set up TLS");
		return -ENOMEM;
	}
	/* Redis has spoken TLS 1.2 and 1.3 since 6.0; older versions are broken. */
	SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
	/* An idle connection (the subscriber, mostly) then holds no 34 KiB buffers. */
	SSL_CTX_set_mode(t->ctx, SSL_MODE_RELEASE_BUFFERS);
	if (cfg->ca_file ? SSL_CTX_load_verify_locations(t->ctx, cfg->ca_file, NULL) != 1 :
	                   SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
		snprintf(what, sizeof(what), "cannot load the CA certificates of %s",
		         cfg->ca_file ? cfg->ca_file : "the system");
		tls_error(err, errlen, what);
		return -EINVAL;
	}
	if (cfg->cert_file && SSL_CTX_use_certificate_chain_file(t->ctx, cfg->cert_file) != 1) {
		snprintf(what, sizeof(what), "cannot load cert_file %s", cfg->cert_file);
		tls_error(err, errlen, what);
		return -EINVAL;
	}
	if (cfg->key_file &&
	    (SSL_CTX_use_PrivateKey_file(t->ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
	     SSL_CTX_check_private_key(t->ctx) != 1)) {
		snprintf(what, sizeof(what), "cannot use key_file %s with cert_file", cfg->key_file);
		tls_error(err, errlen, what);
		return -EINVAL;
	}
	return 0;
}

void lk_redis_tls_free(struct lk_redis *r)
{
	if (!r->tls)
		return;
	SSL_CTX_free(r->tls->ctx);
	free(r->tls->server_name);
	free(r->tls);
	r->tls = NULL;
}

/* Why the TLS session ssl failed, if OpenSSL knows: a refused certificate, or the queued
 * reason of a failed handshake (or of the server's alert after it, when it wants a client
 * certificate), which hiredis reports as a bare I/O error. */
static bool tls_reason(const SSL *ssl, char *buf, size_t cap)
{
	long v = SSL_get_verify_result(ssl);
	unsigned long e;

	if (v != X509_V_OK) {
		snprintf(buf, cap, "TLS: the server's certificate was refused: %s",
		         X509_verify_cert_error_string(v));
		ERR_clear_error();
		return true;
	}
	e = ERR_peek_last_error();
	if (!e)
		return false;
	snprintf(buf, cap, "TLS: %s", ERR_reason_error_string(e) ? ERR_reason_error_string(e) :
	                              "handshake failed");
	ERR_clear_error();
	return true;
}

int lk_redis_tls_start(struct lk_redis_conn *conn, redisAsyncContext *ac,
                       char *why, size_t cap)
{
	struct lk_redis_tls *t = conn->r->tls;
	const char *name = t->server_name ? t->server_name : conn->addr.host;
	SSL *ssl;
	int ok;

	conn->ssl = NULL;
	conn->ssl_ac = NULL;
	ERR_clear_error();
	ssl = SSL_new(t->ctx);
	if (!ssl) {
		tls_error(why, cap, "cannot start TLS");
		return -ENOMEM;
	}
	if (!t->server_name && conn->addr.numeric) {
		/* An IP literal is matched against the certificate's IP addresses, and is never
		 * sent as SNI (RFC 6066 allows names only). */
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1;
	} else {
		ok = SSL_set_tlsext_host_name(ssl, name) == 1 && SSL_set1_host(ssl, name) == 1;
	}
	if (!ok) {
		snprintf(why, cap, "cannot check the server's certificate for \"%.*s\"",
		         LK_REDIS_MAX_SHOWN_LEN, name);
		SSL_free(ssl);
		ERR_clear_error();
		return -EINVAL;
	}
	/* On success hiredis owns ssl and frees it with the context; on failure it does not. On
	 * loopback the whole handshake may already run in here. */
	if (redisInitiateSSL(&ac->c, ssl) != REDIS_OK) {
		if (!tls_reason(ssl, why, cap))
			lk_redis_errstr(ac, why, cap, "cannot start TLS");
		SSL_free(ssl);
		ERR_clear_error();
		return -EIO;
	}
	conn->ssl = ssl;
	conn->ssl_ac = ac;
	return 0;
}

bool lk_redis_tls_pending(const struct lk_redis_conn *conn, const redisAsyncContext *ac)
{
	return conn->r->tls && ac && conn->ssl && conn->ssl_ac == ac &&
	       !SSL_is_init_finished(conn->ssl);
}

bool lk_redis_tls_errstr(const struct lk_redis_conn *conn, const redisAsyncContext *ac,
                         char *buf, size_t cap)
{
	return conn->r->tls && conn->ssl && conn->ssl_ac == ac && tls_reason(conn->ssl, buf, cap);
}

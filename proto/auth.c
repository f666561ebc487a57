/* The socket's HMAC handshake with libsodium: see auth.h.
 *
 * Key material passes through stack buffers only, and each is wiped with sodium_memzero before
 * the function returns, on every path. Error messages describe a key file's shape (its size,
 * that it is not hex) and never its bytes, because they end up in logs.
 */
#include "proto/auth.h"
#include "proto/err.h"
#include "proto/file.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define HEX_LEN (LK_AUTH_KEY_BYTES * 2)

/* crypto_auth is HMAC-SHA-512-256: its key and tag sizes are the ones the protocol fixes. */
_Static_assert(crypto_auth_KEYBYTES == LK_AUTH_KEY_BYTES, "crypto_auth key size");
_Static_assert(crypto_auth_BYTES == LK_AUTH_KEY_BYTES, "crypto_auth tag size");
_Static_assert(LK_AUTH_NONCE_BYTES * 2 == 64, "the banner's nonce is 64 hex digits");

int lk_auth_init(void)
{
	/* 0 means initialised now, 1 already initialised: both are fine. */
	return sodium_init() < 0 ? -EIO : 0;
}

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Decode exactly 2*n hex digits (either case) into out[n]; false for anything else. */
static bool hex_exact(const char *hex, size_t hexlen, uint8_t *out, size_t n)
{
	size_t got = 0;
	const char *end = NULL;

	if (hexlen != n * 2)
		return false;
	for (size_t i = 0; i < hexlen; i++) {
		char c = hex[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return false;
	}
	return sodium_hex2bin(out, n, hex, hexlen, NULL, &got, &end) == 0 && got == n &&
	       end == hex + hexlen;
}

int lk_auth_load_key(const char *path, uint8_t key[LK_AUTH_KEY_BYTES], char *err, size_t errlen)
{
	/* One byte more than the cap, so that a file at the cap is told apart from a bigger one. */
	uint8_t buf[LK_AUTH_KEY_FILE_MAX + 1];
	uint8_t k[LK_AUTH_KEY_BYTES];
	size_t len, start, end;
	const char *what = "";
	ssize_t got;
	int r;

	got = lk_file_read_capped(path, buf, sizeof(buf), &what);
	if (got < 0) {
		r = (int)got;
		lk_set_err(err, errlen, "auth key file %s: cannot %s: %s", path, what, strerror(-r));
		goto fail;
	}
	len = (size_t)got;

	if (len > LK_AUTH_KEY_FILE_MAX) {
		r = -EFBIG;
		lk_set_err(err, errlen, "auth key file %s: larger than %d bytes; expected %d raw bytes "
		           "or %d hex digits", path, LK_AUTH_KEY_FILE_MAX, LK_AUTH_KEY_BYTES, HEX_LEN);
		goto fail;
	}
	if (len == 0) {
		r = -EINVAL;
		lk_set_err(err, errlen, "auth key file %s: is empty; expected %d raw bytes or %d hex "
		           "digits", path, LK_AUTH_KEY_BYTES, HEX_LEN);
		goto fail;
	}
	/* Exactly 32 bytes is a raw key, whatever they look like: 32 hex digits would only be
	 * half a hex key, so there is nothing to confuse it with. */
	if (len == LK_AUTH_KEY_BYTES) {
		memcpy(k, buf, LK_AUTH_KEY_BYTES);
	} else {
		start = 0;
		end = len;
		while (start < end && is_space(buf[start]))
			start++;
		while (end > start && is_space(buf[end - 1]))
			end--;
		if (end - start != HEX_LEN) {
			r = -EINVAL;
			lk_set_err(err, errlen, "auth key file %s: holds %zu bytes (%zu without surrounding "
			           "whitespace); expected %d raw bytes or %d hex digits", path, len,
			           end - start, LK_AUTH_KEY_BYTES, HEX_LEN);
			goto fail;
		}
		if (!hex_exact((const char *)buf + start, HEX_LEN, k, sizeof(k))) {
			r = -EINVAL;
			lk_set_err(err, errlen, "auth key file %s: %d characters long but not all hex "
			           "digits", path, HEX_LEN);
			goto fail;
		}
	}
	memcpy(key, k, LK_AUTH_KEY_BYTES);
	r = 0;
fail:
	sodium_memzero(buf, sizeof(buf));
	sodium_memzero(k, sizeof(k));
	return r;
}

void lk_auth_new_nonce(char hex[LK_AUTH_NONCE_BYTES * 2 + 1])
{
	uint8_t nonce[LK_AUTH_NONCE_BYTES];

	randombytes_buf(nonce, sizeof(nonce));
	sodium_bin2hex(hex, LK_AUTH_NONCE_BYTES * 2 + 1, nonce, sizeof(nonce));
}

static bool nonce_decode(const char *nonce_hex, uint8_t nonce[LK_AUTH_NONCE_BYTES])
{
	return nonce_hex &&
	       hex_exact(nonce_hex, strnlen(nonce_hex, LK_AUTH_NONCE_BYTES * 2 + 1), nonce,
	                 LK_AUTH_NONCE_BYTES);
}

int lk_auth_mac_hex(const uint8_t key[LK_AUTH_KEY_BYTES], const char *nonce_hex,
                    char out_hex[LK_AUTH_KEY_BYTES * 2 + 1])
{
	uint8_t nonce[LK_AUTH_NONCE_BYTES], mac[crypto_auth_BYTES];

	if (!nonce_decode(nonce_hex, nonce))
		return -EINVAL;
	crypto_auth(mac, nonce, sizeof(nonce), key);
	sodium_bin2hex(out_hex, LK_AUTH_KEY_BYTES * 2 + 1, mac, sizeof(mac));
	sodium_memzero(mac, sizeof(mac));
	return 0;
}

bool lk_auth_verify(const uint8_t key[LK_AUTH_KEY_BYTES], const char *nonce_hex,
                    const char *mac_hex)
{
	uint8_t nonce[LK_AUTH_NONCE_BYTES], mac[crypto_auth_BYTES];

	/* The shape check is not constant time, but the shape of what a client sent is no
	 * secret; the comparison with the expected MAC, which is, is crypto_auth_verify's. */
	if (!mac_hex || !hex_exact(mac_hex, strnlen(mac_hex, HEX_LEN + 1), mac, sizeof(mac)))
		return false;
	if (!nonce_decode(nonce_hex, nonce))
		return false;
	return crypto_auth_verify(mac, nonce, sizeof(nonce), key) == 0;
}

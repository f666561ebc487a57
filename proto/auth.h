/* The socket's HMAC handshake (proto/PROTOCOL.md): nonces, MACs and key files, with libsodium.
 *
 * mac = crypto_auth (HMAC-SHA-512-256) of the 32 raw nonce bytes under a 32-byte key, sent as
 * 64 lowercase hex digits. Shared by the agent (verify) and the client library (compute).
 */
#ifndef LK_PROTO_AUTH_H
#define LK_PROTO_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LK_AUTH_KEY_BYTES    32
#define LK_AUTH_NONCE_BYTES  32
#define LK_AUTH_KEY_FILE_MAX 4096 /* a key file larger than this is not a key file */

/* Initialise libsodium; call once before anything below. Returns 0 or -EIO. */
int lk_auth_init(void);

/* Read a key file holding 32 raw bytes, or 64 hex digits with optional surrounding whitespace.
 * Writes key only on success. Returns 0, or a negative errno with a message in err[errlen]
 * that names the path but never the key's content. */
int lk_auth_load_key(const char *path, uint8_t key[LK_AUTH_KEY_BYTES], char *err, size_t errlen);

/* Fill hex[65] with a fresh random nonce: 64 lowercase hex digits and a NUL. */
void lk_auth_new_nonce(char hex[LK_AUTH_NONCE_BYTES * 2 + 1]);

/* Compute the MAC of a 64-hex nonce into out_hex[65]. Returns 0, or -EINVAL for a bad nonce. */
int lk_auth_mac_hex(const uint8_t key[LK_AUTH_KEY_BYTES], const char *nonce_hex,
                    char out_hex[LK_AUTH_KEY_BYTES * 2 + 1]);

/* True only if mac_hex is 64 hex digits and the MAC of nonce_hex under key (constant time). */
bool lk_auth_verify(const uint8_t key[LK_AUTH_KEY_BYTES], const char *nonce_hex,
                    const char *mac_hex);

#endif

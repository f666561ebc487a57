/* Tests for proto/auth: the MAC is HMAC-SHA-512 truncated to 32 bytes, verification is strict,
 * and key files are read in both formats and refused in every other shape. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/auth.h"

/* Expected values computed offline, independently of libsodium, with Python 3:
 *   import hmac, hashlib
 *   hmac.new(key, nonce, hashlib.sha512).hexdigest()[:64]
 * Vector 1: key = bytes(range(32)), nonce = bytes(range(0xa0, 0xc0)).
 * Vector 2: key = b"leasekeeper-test-key-32-bytes!!!", nonce = bytes.fromhex(NONCE2). */
#define KEY1_HEX   "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define NONCE1     "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
#define MAC1       "40c4db0d0d86bb73904a55353a73208ae38fe39f47de85c451ff97855ead9816"
#define KEY2_RAW   "leasekeeper-test-key-32-bytes!!!"
#define NONCE2     "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define MAC2       "ddd566d49d16ac64bc3ee2b7a09fc87bd955f4cf8457a5a4c3ccce35d4d197ff"

static uint8_t key1[LK_AUTH_KEY_BYTES];
static char tmpdir[PATH_MAX];

static void setup(void)
{
	ck_assert_int_eq(lk_auth_init(), 0);
	for (int i = 0; i < LK_AUTH_KEY_BYTES; i++)
		key1[i] = (uint8_t)i;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/lk-check-auth.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* Write len bytes to a file in the test's directory and return its path (static). */
static const char *key_file(const void *data, size_t len)
{
	static char path[PATH_MAX + 16];
	int fd;

	snprintf(path, sizeof(path), "%s/key", tmpdir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
	close(fd);
	return path;
}

static const char *key_file_s(const char *s)
{
	return key_file(s, strlen(s));
}

/* Loading must fail with want, leave the key alone, and explain itself naming the path. */
static void load_fails(const char *path, int want, const char *must_mention)
{
	uint8_t key[LK_AUTH_KEY_BYTES];
	char err[512] = "";

	memset(key, 0xee, sizeof(key));
	ck_assert_int_eq(lk_auth_load_key(path, key, err, sizeof(err)), want);
	for (size_t i = 0; i < sizeof(key); i++)
		ck_assert_uint_eq(key[i], 0xee);
	ck_assert_msg(strstr(err, path), "message \"%s\" does not name the path", err);
	if (must_mention)
		ck_assert_msg(strstr(err, must_mention), "message \"%s\" lacks \"%s\"", err,
		              must_mention);
}

START_TEST(mac_is_hmac_sha512_truncated_to_32_bytes)
{
	char out[LK_AUTH_KEY_BYTES * 2 + 1];

	ck_assert_int_eq(lk_auth_mac_hex(key1, NONCE1, out), 0);
	ck_assert_str_eq(out, MAC1);
	ck_assert_int_eq(lk_auth_mac_hex((const uint8_t *)KEY2_RAW, NONCE2, out), 0);
	ck_assert_str_eq(out, MAC2);
}
END_TEST

START_TEST(mac_accepts_upper_case_nonce)
{
	char out[LK_AUTH_KEY_BYTES * 2 + 1];

	ck_assert_int_eq(lk_auth_mac_hex(key1,
	                 "A0A1A2A3A4A5A6A7A8A9AAABACADAEAFB0B1B2B3B4B5B6B7B8B9BABBBCBDBEBF", out), 0);
	ck_assert_str_eq(out, MAC1);
}
END_TEST

START_TEST(mac_of_bad_nonce_is_einval)
{
	static const char *const bad[] = {
		NULL, "", "a0a1", NONCE1 "00", NONCE1 "0",
		"g0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
		"a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbe f",
	};
	char out[LK_AUTH_KEY_BYTES * 2 + 1];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(out, 'X', sizeof(out));
		ck_assert_int_eq(lk_auth_mac_hex(key1, bad[i], out), -EINVAL);
		ck_assert_int_eq(out[0], 'X');
	}
}
END_TEST

START_TEST(verify_accepts_the_right_mac)
{
	ck_assert(lk_auth_verify(key1, NONCE1, MAC1));
	ck_assert(lk_auth_verify((const uint8_t *)KEY2_RAW, NONCE2, MAC2));
	ck_assert(lk_auth_verify(key1, NONCE1,
	                         "40C4DB0D0D86BB73904A55353A73208AE38FE39F47DE85C451FF97855EAD9816"));
}
END_TEST

START_TEST(verify_rejects_wrong_short_long_and_non_hex_macs)
{
	static const char *const bad[] = {
		/* last digit changed */
		"40c4db0d0d86bb73904a55353a73208ae38fe39f47de85c451ff97855ead9817",
		/* first digit changed */
		"50c4db0d0d86bb73904a55353a73208ae38fe39f47de85c451ff97855ead9816",
		/* short by one digit, and by a whole byte */
		"40c4db0d0d86bb73904a55353a73208ae38fe39f47de85c451ff97855ead981",
		"40c4db0d0d86bb73904a55353a73208ae38fe39f47de85c451ff97855ead98",
		/* long by one digit, and by a byte */
		MAC1 "0", MAC1 "00",
		/* non-hex */
		"40c4db0d0d86bb73904a55353a73208ae38fe39f47de85c451ff97855ead981g",
		"40c4db0d0d86bb73904a55353a73208ae38fe39f47de85c451ff97855ead98 6",
		"", NULL,
		/* the other vector's MAC */
		MAC2,
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(!lk_auth_verify(key1, NONCE1, bad[i]), "mac %zu accepted", i);
}
END_TEST

START_TEST(verify_rejects_wrong_key_and_bad_nonce)
{
	uint8_t other[LK_AUTH_KEY_BYTES];

	memcpy(other, key1, sizeof(other));
	other[31] ^= 1;
	ck_assert(!lk_auth_verify(other, NONCE1, MAC1));
	ck_assert(!lk_auth_verify(key1, NONCE2, MAC1));
	ck_assert(!lk_auth_verify(key1, NULL, MAC1));
	ck_assert(!lk_auth_verify(key1, "a0a1", MAC1));
}
END_TEST

START_TEST(nonces_are_64_lower_case_hex_and_fresh)
{
	char a[LK_AUTH_NONCE_BYTES * 2 + 1], b[LK_AUTH_NONCE_BYTES * 2 + 1];

	memset(a, 'X', sizeof(a));
	lk_auth_new_nonce(a);
	lk_auth_new_nonce(b);
	ck_assert_uint_eq(strlen(a), 64);
	ck_assert_uint_eq(strspn(a, "0123456789abcdef"), 64);
	ck_assert_str_ne(a, b);
}
END_TEST

START_TEST(load_raw_32_bytes)
{
	uint8_t key[LK_AUTH_KEY_BYTES];
	/* Raw means raw: a newline or a NUL among the 32 bytes is key material. */
	uint8_t raw[LK_AUTH_KEY_BYTES];
	char err[256];

	for (int i = 0; i < LK_AUTH_KEY_BYTES; i++)
		raw[i] = (uint8_t)(i * 7);
	raw[3] = '\n';
	raw[31] = ' ';
	ck_assert_int_eq(lk_auth_load_key(key_file(raw, sizeof(raw)), key, err, sizeof(err)), 0);
	ck_assert_mem_eq(key, raw, sizeof(raw));

	ck_assert_int_eq(lk_auth_load_key(key_file_s(KEY2_RAW), key, NULL, 0), 0);
	ck_assert_mem_eq(key, KEY2_RAW, LK_AUTH_KEY_BYTES);
}
END_TEST

START_TEST(load_hex_with_and_without_whitespace)
{
	static const char *const variants[] = {
		KEY1_HEX, KEY1_HEX "\n", KEY1_HEX "\r\n", "  \t" KEY1_HEX "\n\n\n",
		"\n000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F ",
	};

	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		uint8_t key[LK_AUTH_KEY_BYTES];
		char err[256] = "";

		memset(key, 0xee, sizeof(key));
		ck_assert_msg(lk_auth_load_key(key_file_s(variants[i]), key, err, sizeof(err)) == 0,
		              "variant %zu: %s", i, err);
		ck_assert_mem_eq(key, key1, sizeof(key));
	}
}
END_TEST

START_TEST(load_hex_padded_to_the_size_cap)
{
	static char data[LK_AUTH_KEY_FILE_MAX + 1];
	uint8_t key[LK_AUTH_KEY_BYTES];

	memset(data, '\n', LK_AUTH_KEY_FILE_MAX);
	memcpy(data, KEY1_HEX, 64);
	ck_assert_int_eq(lk_auth_load_key(key_file(data, LK_AUTH_KEY_FILE_MAX), key, NULL, 0), 0);
	ck_assert_mem_eq(key, key1, sizeof(key));
	load_fails(key_file(data, LK_AUTH_KEY_FILE_MAX + 1), -EFBIG, "4096");
}
END_TEST

START_TEST(load_refuses_31_and_33_bytes)
{
	load_fails(key_file(KEY2_RAW, 31), -EINVAL, "31");
	load_fails(key_file_s(KEY2_RAW "\n"), -EINVAL, "33");
}
END_TEST

START_TEST(load_refuses_bad_hex)
{
	load_fails(key_file_s("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1g\n"),
	           -EINVAL, "hex");
	load_fails(key_file_s(KEY1_HEX "00\n"), -EINVAL, "66");
	load_fails(key_file_s("00010203040506070809 a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
	           -EINVAL, "hex");
	load_fails(key_file_s(KEY1_HEX "\nx"), -EINVAL, NULL);
}
END_TEST

START_TEST(load_refuses_missing_empty_and_directory)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof(path), "%s/no-such-key", tmpdir);
	load_fails(path, -ENOENT, "No such file");
	load_fails(key_file("", 0), -EINVAL, "empty");
	load_fails(key_file_s("\n\n  \n"), -EINVAL, NULL);
	load_fails(tmpdir, -EISDIR, NULL);
}
END_TEST

START_TEST(load_errors_never_show_key_bytes)
{
	/* 64 characters that are almost hex: the message must not echo any of them. */
	const char *secret = "SECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECRETSECR";
	uint8_t key[LK_AUTH_KEY_BYTES];
	char err[1024] = "";

	ck_assert_uint_eq(strlen(secret), 64);
	ck_assert_int_lt(lk_auth_load_key(key_file_s(secret), key, err, sizeof(err)), 0);
	ck_assert_ptr_null(strstr(err, "SECR"));
	ck_assert_int_lt(lk_auth_load_key(key_file_s("SECRET-33-BYTES-OF-KEY-MATERIAL!!"), key, err,
	                                  sizeof(err)), 0);
	ck_assert_ptr_null(strstr(err, "SECR"));
	ck_assert_ptr_null(strstr(err, "MATERIAL"));
}
END_TEST

START_TEST(load_truncates_long_messages_safely)
{
	uint8_t key[LK_AUTH_KEY_BYTES];
	char err[8];

	memset(err, 'X', sizeof(err));
	ck_assert_int_eq(lk_auth_load_key(key_file("", 0), key, err, sizeof(err)), -EINVAL);
	ck_assert_uint_eq(strlen(err), sizeof(err) - 1);
	ck_assert_int_eq(lk_auth_load_key(key_file("", 0), key, NULL, 0), -EINVAL);
}
END_TEST

static Suite *auth_suite(void)
{
	Suite *s = suite_create("auth");
	TCase *t;

	t = tcase_create("mac");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, mac_is_hmac_sha512_truncated_to_32_bytes);
	tcase_add_test(t, mac_accepts_upper_case_nonce);
	tcase_add_test(t, mac_of_bad_nonce_is_einval);
	tcase_add_test(t, verify_accepts_the_right_mac);
	tcase_add_test(t, verify_rejects_wrong_short_long_and_non_hex_macs);
	tcase_add_test(t, verify_rejects_wrong_key_and_bad_nonce);
	tcase_add_test(t, nonces_are_64_lower_case_hex_and_fresh);
	suite_add_tcase(s, t);

	t = tcase_create("key_file");
	tcase_add_checked_fixture(t, setup, teardown);
	tcase_add_test(t, load_raw_32_bytes);
	tcase_add_test(t, load_hex_with_and_without_whitespace);
	tcase_add_test(t, load_hex_padded_to_the_size_cap);
	tcase_add_test(t, load_refuses_31_and_33_bytes);
	tcase_add_test(t, load_refuses_bad_hex);
	tcase_add_test(t, load_refuses_missing_empty_and_directory);
	tcase_add_test(t, load_errors_never_show_key_bytes);
	tcase_add_test(t, load_truncates_long_messages_safely);
	suite_add_tcase(s, t);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(auth_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* lk_duration_parse and lk_duration_format: every accepted form and every error message. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/duration.h"

static void expect_ms(const char *s, int64_t want)
{
	const char *err = NULL;
	int64_t ms = -12345;
	int r = lk_duration_parse(s, &ms, &err);

	ck_assert_msg(r == 0, "\"%s\": expected %lld ms, got error \"%s\"", s, (long long)want,
	              err ? err : "(none)");
	ck_assert_msg(ms == want, "\"%s\": expected %lld ms, got %lld", s, (long long)want,
	              (long long)ms);
}

static void expect_err(const char *s, const char *want)
{
	const char *err = NULL;
	int64_t ms = -12345;
	int r = lk_duration_parse(s, &ms, &err);

	ck_assert_msg(r == -EINVAL, "\"%s\": expected -EINVAL, got %d (ms %lld)", s, r,
	              (long long)ms);
	ck_assert_ptr_nonnull(err);
	ck_assert_str_eq(err, want);
	ck_assert_msg(ms == -12345, "\"%s\": out-parameter written on failure", s);
}

START_TEST(test_single_units)
{
	expect_ms("250ms", 250);
	expect_ms("10s", 10000);
	expect_ms("2m", 120000);
	expect_ms("3h", 3 * 3600000);
	expect_ms("5000000ns", 5);
	expect_ms("7000us", 7);
	expect_ms("7000\xc2\xb5s", 7); /* U+00B5 MICRO SIGN */
	expect_ms("7000\xce\xbcs", 7); /* U+03BC GREEK SMALL LETTER MU */
}
END_TEST

START_TEST(test_zero_needs_no_unit)
{
	expect_ms("0", 0);
	expect_ms("0s", 0);
	expect_ms("0ms", 0);
	expect_ms("+0", 0);
	expect_ms("-0", 0);
	expect_ms("-0s", 0);
}
END_TEST

START_TEST(test_combined_units)
{
	expect_ms("1m30s", 90000);
	expect_ms("1h30m", 5400000);
	expect_ms("1h2m3s4ms", 3723004);
	/* Go allows the units in any order and repeated; so do we. */
	expect_ms("1s1s", 2000);
	expect_ms("500ms1s", 1500);
	expect_ms("+10s", 10000);
}
END_TEST

START_TEST(test_fractions)
{
	expect_ms("1.5h", 5400000);
	expect_ms("1.5s", 1500);
	expect_ms(".5s", 500);
	expect_ms("5.s", 5000);
	expect_ms("0.001s", 1);
	expect_ms("2.5ms", 2);
	expect_ms("1.25m", 75000);
	expect_ms("1.1s", 1100);
	/* Exact arithmetic: 0.3 has no binary representation, and a float would give 299ms. */
	expect_ms("0.3s", 300);
	expect_ms("0.000001h", 3);
	/* Many digits are fine and truncate, not round. */
	expect_ms("0.99999999999999999999s", 999);
	expect_ms("1.0000000000000000000000001s", 1000);
}
END_TEST

START_TEST(test_sub_millisecond_truncates)
{
	expect_ms("500us", 0);
	expect_ms("999999ns", 0);
	expect_ms("1999us", 1);
	expect_ms("1ms999us", 1);
	expect_ms("1ms1000us", 2);
}
END_TEST

START_TEST(test_maximum)
{
	expect_ms("8760h", LK_DURATION_MAX_MS);
	expect_ms("525600m", LK_DURATION_MAX_MS);
	expect_ms("8759h59m59.999s", LK_DURATION_MAX_MS - 1);
	/* The remainder below a millisecond is truncated, so this still fits. */
	expect_ms("8760h999us", LK_DURATION_MAX_MS);
	expect_err("8760h1ms", "is too large (the maximum is 8760h)");
	expect_err("8761h", "is too large (the maximum is 8760h)");
	expect_err("8760.001h", "is too large (the maximum is 8760h)");
	expect_err("99999999999999999999999999s", "is too large (the maximum is 8760h)");
	expect_err("18446744073709551616ns", "is too large (the maximum is 8760h)");
	expect_err("5000h5000h", "is too large (the maximum is 8760h)");
}
END_TEST

START_TEST(test_no_unit)
{
	expect_err("10", "has no unit");
	expect_err("1.5", "has no unit");
	expect_err("1m30", "has no unit");
	expect_err("00", "has no unit");
	expect_err("1.5.5s", "has no unit");
}
END_TEST

START_TEST(test_unknown_unit)
{
	expect_err("10x", "has an unknown unit");
	expect_err("10sec", "has an unknown unit");
	expect_err("10S", "has an unknown unit");
	expect_err("1d", "has an unknown unit");
	expect_err("10s ", "has an unknown unit");
	expect_err("10 s", "has an unknown unit");
	/* Like Go, the unit runs up to the next digit, so this is unit "h-". */
	expect_err("1h-5m", "has an unknown unit");
}
END_TEST

START_TEST(test_not_a_duration)
{
	expect_err("", "is not a duration");
	expect_err("-", "is not a duration");
	expect_err("+", "is not a duration");
	expect_err("s", "is not a duration");
	expect_err(".", "is not a duration");
	expect_err(".s", "is not a duration");
	expect_err("abc", "is not a duration");
	expect_err(" 10s", "is not a duration");
	expect_err("--5s", "is not a duration");
	expect_err(NULL, "is not a duration");
}
END_TEST

START_TEST(test_negative)
{
	expect_err("-5s", "is negative");
	expect_err("-1ms", "is negative");
	/* Even a negative that truncates to 0 ms was meant as negative. */
	expect_err("-1ns", "is negative");
}
END_TEST

START_TEST(test_error_message_may_be_null)
{
	int64_t ms = 7;

	ck_assert_int_eq(lk_duration_parse("10", &ms, NULL), -EINVAL);
	ck_assert_int_eq(ms, 7);
}
END_TEST

static void expect_format(int64_t ms, const char *want)
{
	char buf[64];

	memset(buf, 'x', sizeof(buf));
	ck_assert_str_eq(lk_duration_format(ms, buf, sizeof(buf)), want);
}

START_TEST(test_format_shortest)
{
	expect_format(0, "0s");
	expect_format(1, "1ms");
	expect_format(250, "250ms");
	expect_format(1000, "1s");
	expect_format(1500, "1.5s");
	expect_format(1001, "1s1ms");
	expect_format(1250, "1.25s");
	expect_format(10000, "10s");
	expect_format(60000, "1m");
	expect_format(90000, "1m30s");
	expect_format(60250, "1m250ms");
	expect_format(3600000, "1h");
	expect_format(5400000, "1h30m");
	expect_format(3601500, "1h1.5s");
	expect_format(LK_DURATION_MAX_MS, "8760h");
	expect_format(-1500, "-1.5s");
}
END_TEST

START_TEST(test_format_round_trips)
{
	static const int64_t samples[] = {
		1, 9, 10, 99, 100, 333, 999, 1000, 1001, 1010, 1100, 6666, 59999, 60000, 60001,
		3599999, 3600000, 3600001, 86400000, 123456789, LK_DURATION_MAX_MS,
	};
	char buf[64];

	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		int64_t back = -1;

		lk_duration_format(samples[i], buf, sizeof(buf));
		ck_assert_int_eq(lk_duration_parse(buf, &back, NULL), 0);
		ck_assert_msg(back == samples[i], "%lld -> \"%s\" -> %lld", (long long)samples[i],
		              buf, (long long)back);
	}
}
END_TEST

START_TEST(test_format_truncates_to_capacity)
{
	char buf[4];

	ck_assert_str_eq(lk_duration_format(5400000, buf, sizeof(buf)), "1h3");
	ck_assert_str_eq(lk_duration_format(90000, buf, 1), "");
	/* A zero capacity writes nothing at all. */
	buf[0] = 'z';
	lk_duration_format(90000, buf, 0);
	ck_assert_int_eq(buf[0], 'z');
}
END_TEST

static Suite *duration_suite(void)
{
	Suite *s = suite_create("duration");
	TCase *tc = tcase_create("parse");

	tcase_add_test(tc, test_single_units);
	tcase_add_test(tc, test_zero_needs_no_unit);
	tcase_add_test(tc, test_combined_units);
	tcase_add_test(tc, test_fractions);
	tcase_add_test(tc, test_sub_millisecond_truncates);
	tcase_add_test(tc, test_maximum);
	tcase_add_test(tc, test_no_unit);
	tcase_add_test(tc, test_unknown_unit);
	tcase_add_test(tc, test_not_a_duration);
	tcase_add_test(tc, test_negative);
	tcase_add_test(tc, test_error_message_may_be_null);
	suite_add_tcase(s, tc);

	tc = tcase_create("format");
	tcase_add_test(tc, test_format_shortest);
	tcase_add_test(tc, test_format_round_trips);
	tcase_add_test(tc, test_format_truncates_to_capacity);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(duration_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

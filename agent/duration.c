/* Go/Kubernetes-style durations: a sequence of decimal numbers, each with an optional fraction
 * and a unit ("1h30m", "1.5s", "250ms"), parsed exactly in integer nanoseconds and then
 * truncated to whole milliseconds. */
#include "agent/duration.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define NS_PER_MS ((uint64_t)1000000)

/* The largest nanosecond count that still truncates to at most LK_DURATION_MAX_MS. Keeping the
 * running total under it also keeps every intermediate product far from uint64 overflow. */
#define LIMIT_NS (((uint64_t)LK_DURATION_MAX_MS + 1) * NS_PER_MS - 1)

struct unit {
	const char *name;
	uint64_t ns;
};

/* Both micro signs are accepted, as Go does: U+00B5 (MICRO SIGN) and U+03BC (GREEK MU). */
static const struct unit units[] = {
	{ "ns", 1 },
	{ "us", 1000 },
	{ "\xc2\xb5s", 1000 },
	{ "\xce\xbcs", 1000 },
	{ "ms", NS_PER_MS },
	{ "s", 1000 * NS_PER_MS },
	{ "m", 60 * 1000 * NS_PER_MS },
	{ "h", 60 * 60 * 1000 * NS_PER_MS },
};

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static const struct unit *find_unit(const char *s, size_t len)
{
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (strlen(units[i].name) == len && memcmp(units[i].name, s, len) == 0)
			return &units[i];
	return NULL;
}

/* floor(0.DIGITS * unit_ns), exactly: long multiplication from the last digit backwards, where
 * each step is floor((d * u + carry) / 10). Nested floors of this shape compose, so the result
 * is the exact floor however many digits there are, and no step exceeds 10 * u. */
static uint64_t fraction_ns(const char *digits, const char *end, uint64_t unit_ns)
{
	uint64_t carry = 0;

	for (const char *p = end; p > digits; p--)
		carry = ((uint64_t)(p[-1] - '0') * unit_ns + carry) / 10;
	return carry;
}

int lk_duration_parse(const char *s, int64_t *ret_ms, const char **ret_err)
{
	const char *err = "is not a duration";
	const char *p = s;
	uint64_t total = 0;
	bool neg = false;

	if (!p)
		goto fail;
	if (*p == '-' || *p == '+')
		neg = *p++ == '-';
	if (*p == '\0')
		goto fail;
	if (strcmp(p, "0") == 0)
		goto done;

	while (*p) {
		const char *int_start = p, *frac_start = NULL, *frac_end = NULL, *unit_start;
		const struct unit *u;
		bool too_large = false;
		uint64_t v = 0;

		for (; is_digit(*p); p++) {
			/* Keep scanning after an overflow: a missing or unknown unit on this number
			 * is the more useful message, so "too large" waits until the unit is read. */
			if (v > LIMIT_NS)
				too_large = true;
			else
				v = v * 10 + (uint64_t)(*p - '0');
		}
		if (*p == '.') {
			frac_start = ++p;
			while (is_digit(*p))
				p++;
			frac_end = p;
		}
		if (p == int_start || (frac_start && p == frac_start && frac_start - 1 == int_start)) {
			err = "is not a duration";
			goto fail;
		}
		/* Like Go, the unit is everything up to the next number. */
		unit_start = p;
		while (*p && *p != '.' && !is_digit(*p))
			p++;
		if (p == unit_start) {
			err = "has no unit";
			goto fail;
		}
		u = find_unit(unit_start, (size_t)(p - unit_start));
		if (!u) {
			err = "has an unknown unit";
			goto fail;
		}
		if (too_large || v > (LIMIT_NS - total) / u->ns)
			goto too_large;
		total += v * u->ns;
		if (frac_start) {
			total += fraction_ns(frac_start, frac_end, u->ns);
			if (total > LIMIT_NS)
				goto too_large;
		}
	}
	if (neg && total != 0) {
		err = "is negative";
		goto fail;
	}
done:
	*ret_ms = (int64_t)(total / NS_PER_MS);
	return 0;

too_large:
	err = "is too large (the maximum is 8760h)";
fail:
	if (ret_err)
		*ret_err = err;
	return -EINVAL;
}

/* Append s to buf[cap] at *len, truncating but always NUL-terminating. */
static void put(char *buf, size_t cap, size_t *len, const char *s)
{
	size_t n = strlen(s);

	if (*len + 1 >= cap)
		return;
	if (n > cap - 1 - *len)
		n = cap - 1 - *len;
	memcpy(buf + *len, s, n);
	*len += n;
	buf[*len] = '\0';
}

/* The part of a duration under a minute, in its shortest Go form: "1.5s" or "1s1ms",
 * whichever is shorter (the decimal one on a tie), and "250ms" below a second. */
static void format_seconds(char *out, size_t cap, int64_t rem_ms)
{
	int64_t sec = rem_ms / 1000, ms = rem_ms % 1000;
	char dec[32], split[32];
	size_t n;

	if (rem_ms == 0) {
		out[0] = '\0';
	} else if (ms == 0) {
		snprintf(out, cap, "%" PRId64 "s", sec);
	} else if (sec == 0) {
		snprintf(out, cap, "%" PRId64 "ms", ms);
	} else {
		snprintf(dec, sizeof(dec), "%" PRId64 ".%03d", sec, (int)ms);
		for (n = strlen(dec); dec[n - 1] == '0'; n--)
			dec[n - 1] = '\0';
		strcat(dec, "s");
		snprintf(split, sizeof(split), "%" PRId64 "s%" PRId64 "ms", sec, ms);
		snprintf(out, cap, "%s", strlen(split) < strlen(dec) ? split : dec);
	}
}

char *lk_duration_format(int64_t ms, char *buf, size_t cap)
{
	uint64_t mag = ms < 0 ? (uint64_t)0 - (uint64_t)ms : (uint64_t)ms;
	char part[32];
	size_t len = 0;

	if (cap == 0)
		return buf;
	buf[0] = '\0';
	if (ms == 0) {
		put(buf, cap, &len, "0s");
		return buf;
	}
	if (ms < 0)
		put(buf, cap, &len, "-");
	if (mag >= 3600000) {
		snprintf(part, sizeof(part), "%" PRIu64 "h", mag / 3600000);
		put(buf, cap, &len, part);
	}
	if (mag % 3600000 >= 60000) {
		snprintf(part, sizeof(part), "%" PRIu64 "m", mag % 3600000 / 60000);
		put(buf, cap, &len, part);
	}
	format_seconds(part, sizeof(part), (int64_t)(mag % 60000));
	put(buf, cap, &len, part);
	return buf;
}

/* Go/Kubernetes-style durations ("250ms", "10s", "1m30s", "1.5h") in whole milliseconds. */
#ifndef LK_AGENT_DURATION_H
#define LK_AGENT_DURATION_H

#include <stddef.h>
#include <stdint.h>

#define LK_DURATION_MAX_MS ((int64_t)1000 * 60 * 60 * 24 * 365) /* a year is plenty */

/* Parse s into *ret_ms (written only on success). Units: ns us µs ms s m h; numbers may have a
 * fraction; "0" alone needs no unit; negative values and results above LK_DURATION_MAX_MS are
 * errors; sub-millisecond remainders are truncated. Returns 0, or -EINVAL with *ret_err set to a
 * static message such as "has no unit" or "has an unknown unit". */
int lk_duration_parse(const char *s, int64_t *ret_ms, const char **ret_err);

/* Write ms as the shortest Go-style string ("1m30s", "250ms", "0s") into buf[cap]; returns buf. */
char *lk_duration_format(int64_t ms, char *buf, size_t cap);

#endif

/* The error-message convention of every library-side function (proto/, locks/): a caller
 * passes err[errlen] for a message, or NULL/0 for none; the function fills it on failure.
 * Header-only for the same reason as proto/file.h: any layer may use it without a link
 * dependency. */
#ifndef LK_PROTO_ERR_H
#define LK_PROTO_ERR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static inline void lk_set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Format a message into err[errlen]; nothing when the caller wants none. */
static inline void lk_set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

#endif

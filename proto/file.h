/* Reading a small file whole, up to a cap: an auth key (proto/auth.c), a backend password
 * (locks/backend_util.c), the agent's config (agent/config_yaml.c). Written once.
 *
 * It is a header-only helper on purpose: proto/ is the bottom layer (it includes nothing of the
 * project), so both the client library and the backends in locks/ may use it, and being inline
 * it adds no link dependency (a backend's unit test links locks/ alone, and the static client
 * links proto/ alone).
 */
#ifndef LK_PROTO_FILE_H
#define LK_PROTO_FILE_H

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/types.h>
#include <unistd.h>

/* Read at most cap bytes of the file at path into buf. Returns how many were read (cap means
 * "cap or more": pass one byte more than the largest size allowed, to tell a file at the limit
 * from a bigger one), or a negative errno; *what is set to "open" or "read" on failure, for the
 * message. A caller that read a secret wipes buf (sodium_memzero) whatever the result. */
static inline ssize_t lk_file_read_capped(const char *path, void *buf, size_t cap,
                                          const char **what)
{
	size_t len = 0;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		*what = "open";
		return -errno;
	}
	while (len < cap) {
		ssize_t n = read(fd, (char *)buf + len, cap - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			*what = "read";
			close(fd);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	return (ssize_t)len;
}

#endif

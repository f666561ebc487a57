/* The agent's Unix socket file: created with no window of wider access than its mode, taken
 * over from a crashed agent, never from a live one, and removed only while it is still ours;
 * and the descriptors its clients will need. */
#ifndef LK_AGENT_SOCKFILE_H
#define LK_AGENT_SOCKFILE_H

#include <stddef.h>
#include <sys/types.h>

/* Which file an agent created, so that it never removes a successor's. */
struct lk_sockfile {
	dev_t dev;
	ino_t ino;
};

/* Bind a non-blocking SOCK_STREAM socket at path with permissions mode; a stale socket file
 * (nothing accepts on it) is replaced, a live one or a non-socket refused. Returns the fd and
 * fills *ours, or a negative errno with a message in err[errlen]. */
int lk_sockfile_bind(const char *path, unsigned mode, struct lk_sockfile *ours, char *err,
                     size_t errlen);

/* Unlink path if it is still the file *ours describes. */
void lk_sockfile_remove(const char *path, const struct lk_sockfile *ours);

/* Each client needs a descriptor: raise the soft RLIMIT_NOFILE to what max_clients (plus a
 * margin) needs if the hard limit allows, and log a warning if it does not (accepts then fail
 * before the slots are full). */
void lk_sockfile_fd_limit(size_t max_clients);

#endif

/* The agent's Unix socket file (see sockfile.h). */
#include "agent/sockfile.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/log.h"

#define FD_MARGIN 64 /* descriptors besides the clients: backends, HTTP, logs */

/* Another agent is alive at path if something accepts a connection there. */
static bool socket_is_live(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool live;

	if (fd < 0)
		return false;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	live = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return live;
}

int lk_sockfile_bind(const char *path, unsigned mode, struct lk_sockfile *ours, char *err,
                     size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd = -1, rc;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "socket path %s is too long", path);
		return -ENAMETOOLONG;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "%s exists and is not a socket", path);
			return -EEXIST;
		}
		if (socket_is_live(path)) {
			snprintf(err, errlen, "another agent is listening on %s", path);
			return -EADDRINUSE;
		}
		/* A crashed agent left its socket file behind: take the path over. */
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* Create the file with no access, then open it up to mode: no window with wider access. */
	old = umask(0777);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc < 0 || chmod(path, mode) < 0 || stat(path, &st) < 0)
		goto fail;
	ours->dev = st.st_dev;
	ours->ino = st.st_ino;
	return fd;
fail:
	rc = -errno;
	snprintf(err, errlen, "cannot listen on %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return rc;
}

void lk_sockfile_remove(const char *path, const struct lk_sockfile *ours)
{
	struct stat st;

	/* A successor may have taken the path over since: its file is not ours to remove. */
	if (stat(path, &st) == 0 && st.st_dev == ours->dev && st.st_ino == ours->ino)
		unlink(path);
}

void lk_sockfile_fd_limit(size_t max_clients)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)max_clients + FD_MARGIN;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		LK_LOG(LK_WARN, "the file descriptor limit is lower than max_clients needs",
		       LKF_U64("max_clients", max_clients) LKF_U64("need", need)
		       LKF_U64("hard_limit", rl.rlim_max));
		need = rl.rlim_max;
	}
	rl.rlim_cur = need;
	setrlimit(RLIMIT_NOFILE, &rl);
}

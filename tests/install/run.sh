#!/bin/sh
# `make install DESTDIR=...` gives a usable client library: a small C program finds it with
# pkg-config alone, builds, links and runs (it connects to no agent, and says so). Run by
# `make install-check` (part of `make test`); BUILD and MAKE come from the Makefile.
set -eu
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
${MAKE:-make} --no-print-directory BUILD="${BUILD:-build}" install DESTDIR="$stage" \
	PREFIX=/usr/local >/dev/null
for f in usr/local/bin/leasekeeper usr/local/lib/libleasekeeper.a \
	usr/local/include/leasekeeper/proto/client.h usr/local/lib/pkgconfig/leasekeeper.pc; do
	[ -f "$stage/$f" ] || { echo "install-check: $f was not installed" >&2; exit 1; }
done
cat > "$stage/app.c" <<'C'
#include <stdio.h>
#include "proto/client.h"
int main(void)
{
	struct lk_client_opts o = { .socket_path = "/nonexistent/agent.sock", .timeout_ms = 100 };
	struct lk_client *c;
	char err[256];
	int rc = lk_client_connect(&o, &c, err, sizeof(err));

	printf("lk_client_connect: %d (%s)\n", rc, rc < 0 ? err : "connected");
	return rc < 0 ? 0 : 1;
}
C
# pkg-config looks in the staged tree; its paths say /usr/local, so point them at the stage.
flags=$(PKG_CONFIG_PATH="$stage/usr/local/lib/pkgconfig" \
	pkg-config --define-variable=prefix="$stage/usr/local" \
	--define-variable=libdir="$stage/usr/local/lib" \
	--define-variable=includedir="$stage/usr/local/include" --cflags --libs leasekeeper)
echo "install-check: cc app.c $flags"
cc -std=c11 -Wall -Wextra -Werror -o "$stage/app" "$stage/app.c" $flags
"$stage/app"
${MAKE:-make} --no-print-directory BUILD="${BUILD:-build}" uninstall DESTDIR="$stage" \
	PREFIX=/usr/local >/dev/null
left=$(find "$stage/usr" -type f | wc -l)
[ "$left" -eq 0 ] || { echo "install-check: uninstall left $left files" >&2; exit 1; }
echo "install-check: ok (installed, built an app with pkg-config, uninstalled)"

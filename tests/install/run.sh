#!/bin/sh
# What an operator installs, checked as installed (tests/install/README.md):
# - `make install DESTDIR=...`: every file in place; a small C program finds the client library
#   with pkg-config alone, builds, links and runs (it connects to no agent, and says so); the
#   man page renders without warnings; the bash completion completes; `make uninstall` leaves
#   nothing;
# - the man page, CHANGELOG.md and debian/changelog name the version agent/agent.h has;
# - the Debian package (deb.sh): built, lintian clean, installed and checked.
# Run by `make install-check` (part of `make test`); BUILD, MAKE and VERSION come from the
# Makefile. LK_SKIP_DEB=1 leaves the package out.
set -eu
. tests/install/lib.sh
VERSION=${VERSION:?VERSION is set by the Makefile}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
${MAKE:-make} --no-print-directory BUILD="${BUILD:-build}" install DESTDIR="$stage" \
	PREFIX=/usr/local >/dev/null
for f in usr/local/bin/leasekeeper usr/local/lib/libleasekeeper.a \
	usr/local/include/leasekeeper/proto/client.h usr/local/lib/pkgconfig/leasekeeper.pc \
	usr/local/share/man/man1/leasekeeper.1 \
	usr/local/share/bash-completion/completions/leasekeeper; do
	[ -f "$stage/$f" ] || fail "$f was not installed"
done
check_version "$stage/usr/local/bin/leasekeeper"
# pkg-config looks in the staged tree; its paths say /usr/local, so point them at the stage.
PKG_CONFIG_PATH="$stage/usr/local/lib/pkgconfig"
export PKG_CONFIG_PATH
check_pkg_config "$stage" --define-variable=prefix="$stage/usr/local" \
	--define-variable=libdir="$stage/usr/local/lib" \
	--define-variable=includedir="$stage/usr/local/include"
unset PKG_CONFIG_PATH
check_man "$stage/usr/local/share/man/man1/leasekeeper.1"
warn=$(groff -wall -man -Tutf8 -z man/leasekeeper.1 2>&1) || fail "groff failed: $warn"
[ -z "$warn" ] || fail "groff -wall man/leasekeeper.1: $warn"
bash tests/install/completion.sh "$stage/usr/local/share/bash-completion/completions/leasekeeper" \
	"$stage/usr/local/bin/leasekeeper"
${MAKE:-make} --no-print-directory BUILD="${BUILD:-build}" uninstall DESTDIR="$stage" \
	PREFIX=/usr/local >/dev/null
left=$(find "$stage/usr" -type f | wc -l)
[ "$left" -eq 0 ] || fail "uninstall left $left files"
echo "install-check: make install ok (installed, built an app with pkg-config, man page," \
	"completion, uninstalled)"

# One version everywhere it is written down.
head -n 5 man/leasekeeper.1 | grep -q "^\.TH LEASEKEEPER 1 .* \"leasekeeper $VERSION\"" ||
	fail "man/leasekeeper.1's .TH line does not say leasekeeper $VERSION"
grep -q "^## \[$VERSION\]" CHANGELOG.md || fail "CHANGELOG.md has no \"## [$VERSION]\" section"
v=$(dpkg-parsechangelog -l debian/changelog -SVersion)
[ "$v" = "$VERSION" ] || fail "debian/changelog is at $v, agent/agent.h at $VERSION"

[ "${LK_SKIP_DEB:-}" = 1 ] || sh tests/install/deb.sh

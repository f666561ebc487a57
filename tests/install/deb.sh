#!/bin/sh
# The Debian package: `make deb` builds it (dpkg-buildpackage on a copy of the tree, lintian
# clean), then it is installed and what it installed is checked: the binary runs and has this
# tree's version, the man page renders without warnings and `man` finds it, an app builds with
# pkg-config alone, bash-completion loads the completion, and removing the package leaves none
# of its files.
#
# How it is installed (LK_DEB_INSTALL):
#   system   `dpkg -i`, the checks on /usr, then `dpkg --purge` (also when a check fails).
#            Chosen by default when run as root and neither the package nor any file it ships
#            is on the machine already, so that nothing of the machine's own is overwritten or
#            removed (and dpkg keeps man pages and docs); two runs at once take turns (flock).
#   extract  `dpkg -x` into a temporary directory, the same checks there. The default
#            otherwise (not root, a leasekeeper package or file already installed).
# Run by tests/install/run.sh; BUILD, MAKE and VERSION come from the Makefile.
set -eu
. tests/install/lib.sh
BUILD=${BUILD:-build}
for t in dpkg-buildpackage dh lintian man pkg-config flock; do
	command -v "$t" >/dev/null 2>&1 ||
		fail "$t is missing: make deps (or apt-get install debhelper dpkg-dev lintian man-db)"
done
${MAKE:-make} --no-print-directory BUILD="$BUILD" deb
deb=$(ls "$BUILD"/deb/leasekeeper_"$VERSION"_*.deb)
[ -f "$deb" ] || fail "make deb made no leasekeeper_${VERSION}_*.deb"
work=$(mktemp -d)
installed=
cleanup()
{
	if [ -n "$installed" ]; then
		dpkg --purge leasekeeper >/dev/null || echo "install-check: dpkg --purge failed" >&2
	fi
	rm -rf "$work"
}
trap cleanup EXIT

mode=${LK_DEB_INSTALL:-}
if [ -z "$mode" ]; then
	mode=system
	[ "$(id -u)" = 0 ] || mode=extract
	dpkg-query -W leasekeeper >/dev/null 2>&1 && mode=extract
	# A minimal image's dpkg may be told to leave man pages and docs out.
	grep -qs '^path-exclude=/usr/share/\(man\|doc\)' /etc/dpkg/dpkg.cfg.d/* && mode=extract
	for f in $(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }'); do
		[ -e "$f" ] && mode=extract
	done
fi

check_files()
{
	root=$1
	check_version "$root/usr/bin/leasekeeper"
	check_man "$root/usr/share/man/man1/leasekeeper.1.gz"
	for f in usr/include/leasekeeper/proto/client.h usr/share/doc/leasekeeper/copyright \
		usr/share/bash-completion/completions/leasekeeper; do
		[ -f "$root/$f" ] || fail "the package has no /$f"
	done
}

case $mode in
system)
	# One package install at a time on this machine; dpkg's own lock may be held by an apt-get
	# of someone else's for a while.
	lockdir=/run/lock
	[ -d "$lockdir" ] || lockdir=/tmp
	exec 9>"$lockdir/leasekeeper-install-check.lock"
	flock -w 300 9 || fail "another install check holds the lock"
	tries=0
	until dpkg -i "$deb" >"$work/dpkg.log" 2>&1; do
		tries=$((tries + 1))
		grep -q 'lock' "$work/dpkg.log" && [ "$tries" -lt 60 ] || {
			cat "$work/dpkg.log" >&2
			fail "dpkg -i $deb failed"
		}
		sleep 2
	done
	installed=1
	echo "install-check: dpkg -i $deb"
	check_files ""
	[ "$(man -w leasekeeper)" = /usr/share/man/man1/leasekeeper.1.gz ] ||
		fail "man -w leasekeeper finds $(man -w leasekeeper 2>&1), not the package's page"
	check_pkg_config "$work"
	# The loader returns 124 once it has loaded something (else it sets a minimal completion).
	bash -c '. /usr/share/bash-completion/bash_completion; _completion_loader leasekeeper;
		complete -p leasekeeper' | grep -q -- '-F _leasekeeper' ||
		fail "bash-completion does not load the package's completion"
	bash tests/install/completion.sh /usr/share/bash-completion/completions/leasekeeper \
		/usr/bin/leasekeeper >/dev/null
	dpkg --purge leasekeeper >/dev/null
	installed=
	for f in /usr/bin/leasekeeper /usr/share/man/man1/leasekeeper.1.gz /usr/include/leasekeeper; do
		[ ! -e "$f" ] || fail "$f is still there after dpkg --purge"
	done
	echo "install-check: deb ok (dpkg -i, checked /usr, dpkg --purge)"
	;;
extract)
	dpkg -x "$deb" "$work/root"
	check_files "$work/root"
	pc=$(ls "$work"/root/usr/lib/*/pkgconfig/leasekeeper.pc)
	libdir=$(dirname "$(dirname "$pc")")
	PKG_CONFIG_PATH="$(dirname "$pc")"
	export PKG_CONFIG_PATH
	check_pkg_config "$work" --define-variable=prefix="$work/root/usr" --define-variable=libdir="$libdir" \
		--define-variable=includedir="$work/root/usr/include"
	bash tests/install/completion.sh "$work/root/usr/share/bash-completion/completions/leasekeeper" \
		"$work/root/usr/bin/leasekeeper" >/dev/null
	echo "install-check: deb ok (dpkg -x into a temporary directory, checked there)"
	;;
*)
	fail "LK_DEB_INSTALL=$mode: system or extract"
	;;
esac

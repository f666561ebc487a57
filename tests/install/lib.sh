# Checks shared by run.sh (a staged `make install`) and deb.sh (the Debian package): each takes
# the installed file and what the install put around it. Sourced; POSIX sh.

fail()
{
	echo "install-check: $*" >&2
	exit 1
}

# The man page renders with no warning from groff (what lintian's manpage check runs), and
# says what it is.
check_man()
{
	page=$1
	warn=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 \
		>/dev/null) || fail "man -l $page failed: $warn"
	[ -z "$warn" ] || fail "man --warnings -l $page: $warn"
	LC_ALL=C.UTF-8 MANWIDTH=80 man -P cat -l "$page" 2>/dev/null |
		grep -Eq 'leasekeeper +- +hold +leader +locks' || fail "man -l $page renders no NAME line"
}

# The binary runs and is the version this tree builds.
check_version()
{
	out=$("$1" --version) || fail "$1 --version failed"
	[ "$out" = "leasekeeper $VERSION (protocol 1)" ] ||
		fail "$1 --version says \"$out\", expected leasekeeper $VERSION"
}

# An app builds against the client library with the flags pkg-config gives (any arguments go to
# pkg-config first), links and runs.
check_pkg_config()
{
	dir=$1
	shift
	flags=$(pkg-config "$@" --cflags --libs leasekeeper) || fail "pkg-config leasekeeper failed"
	echo "install-check: cc app.c $flags"
	# shellcheck disable=SC2086 # the flags are words
	cc -std=c11 -Wall -Wextra -Werror -o "$dir/app" tests/install/app.c $flags ||
		fail "app.c did not build with pkg-config's flags"
	"$dir/app" || fail "app built with pkg-config's flags did not run"
}

#!/bin/sh
# Make bookworm-backports available to apt, from the mirror the machine already uses for
# bookworm, unless some apt source already lists it. Backports are never installed unless a
# package is asked for with `-t bookworm-backports`, so this changes nothing else.
#
# The one package taken from there is libhiredict-shims-dev: hiredis 1.x (TLS) for Debian 12.
set -eu

dir=/etc/apt/sources.list.d
if grep -rqs 'bookworm-backports' /etc/apt/sources.list "$dir"; then
	exit 0
fi

# The first URI of a source for the plain bookworm suite: deb822 (.sources) or one-line style.
mirror=$(awk '
	/^URIs:/ { uri = $2 }
	/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm" && uri != "") { print uri; exit } }
	/^$/ { uri = "" }' "$dir"/*.sources 2>/dev/null | head -n 1)
if [ -z "$mirror" ]; then
	mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
		/etc/apt/sources.list "$dir"/*.list 2>/dev/null | head -n 1)
fi
mirror=${mirror:-http://deb.debian.org/debian}

echo "adding bookworm-backports from $mirror to $dir/bookworm-backports.sources"
cat > "$dir/bookworm-backports.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES

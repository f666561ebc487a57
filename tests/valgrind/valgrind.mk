# valgrind memcheck over one integration scenario per backend (tests/valgrind/README.md).
# Included from the top Makefile.
#
#   make valgrind                          build build/vg/leasekeeper (no sanitizers), run all
#   make valgrind VALGRIND_ARGS="-k redis" only some (-k redis / -k etcd / -k tls), -v: names
#
# Fails unless every agent's memcheck log shows 0 errors and 0 bytes definitely or indirectly
# lost and every agent exited 0. Suppressions: tests/valgrind/leasekeeper.supp.

VG_BUILD      ?= build/vg
VALGRIND_ARGS ?=

# `make deps` installs valgrind too.
DEB_PKGS += valgrind

.PHONY: valgrind valgrind-build

valgrind-build:
	$(MAKE) BUILD=$(VG_BUILD) SAN= $(VG_BUILD)/leasekeeper

valgrind: deps valgrind-build
	LK_BIN=$(abspath $(VG_BUILD))/leasekeeper $(PYTHON) tests/valgrind/run.py $(VALGRIND_ARGS)

# leasekeeper: one binary, a client library, and the tests.
#
# `make demo` and `make test` are all a newcomer needs on a fresh Debian machine (as root):
# both depend on `make deps`, which installs only what is missing.

CC      ?= cc
BUILD   ?= build
SAN     ?=
PYTHON  ?= python3

# Where `make install` puts things (DESTDIR for staging, as packagers expect).
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
PCDIR   ?= $(LIBDIR)/pkgconfig
MANDIR  ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
VERSION := $(shell sed -n 's/^\#define LK_VERSION "\(.*\)"/\1/p' agent/agent.h)

PKGS    := hiredis hiredis_ssl openssl libevent libevent_extra jansson yaml-0.1 libsodium libcurl
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wno-unused-parameter
CFLAGS  ?= -O2 -g
# Expanded when a recipe runs, not when make starts: `make test` installs missing packages
# (deps) before anything compiles. A missing -dev package stops the build at `pkgs-ok` with
# pkg-config's own message instead of a compile error about a header later.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CPPFLAGS) $(CFLAGS) $(SANFLAGS) -I. $(PKG_CFLAGS)
LDLIBS  = $(LDFLAGS) $(PKG_LIBS) -lm
ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif

# Every .c file of a layer is part of it: a new file needs no edit here.
PROTO_SRC := $(sort $(wildcard proto/*.c))
LOCKS_SRC := $(sort $(wildcard locks/*.c))
AGENT_SRC := $(sort $(wildcard agent/*.c))
# cli/: the command dispatch (main.c) and the client commands, the top layer.
MAIN_SRC  := cli/main.c
CLI_SRC   := $(filter-out $(MAIN_SRC),$(sort $(wildcard cli/*.c)))

PROTO_OBJ := $(PROTO_SRC:%.c=$(BUILD)/%.o)
LOCKS_OBJ := $(LOCKS_SRC:%.c=$(BUILD)/%.o)
AGENT_OBJ := $(AGENT_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ  := $(MAIN_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/%.o)

CLIENT_LIB := $(BUILD)/libleasekeeper.a
CORE_LIB   := $(BUILD)/libleasekeeper-core.a
BIN        := $(BUILD)/leasekeeper

# Every tests/check_*.c is a unit test.
UNIT_TESTS := $(sort $(patsubst tests/%.c,%,$(wildcard tests/check_*.c)))
UNIT_BINS  := $(UNIT_TESTS:%=$(BUILD)/tests/%)

# Debian packages needed to build, test and run the demo. Node.js (for validating deploy/
# offline) comes from Debian only when no node is installed at all.
DEB_PKGS := build-essential pkg-config libevent-dev libcurl4-openssl-dev libssl-dev \
            libsodium-dev check libjansson-dev libyaml-dev redis-server redis-sentinel python3 \
            procps prometheus etcd-server etcd-client openssl golang-go
# hiredis 1.x (TLS) for Debian 12 is hiredict's hiredis shims, from bookworm-backports only
# (tools/backports.sh adds that suite); it replaces Debian's hiredis 0.14 (libhiredis-dev).
BACKPORTS_PKGS := libhiredict-shims-dev
BENCH_PKGS := python3-redis gnuplot-nox
DEB_PKGS += $(BENCH_PKGS)
# `make deb` and the install check: the package build, lintian, man page rendering, completion.
PACKAGING_PKGS := debhelper dpkg-dev lintian man-db groff-base bash-completion
DEB_PKGS += $(PACKAGING_PKGS)

.PHONY: all deps test check test-asan unit integration demo clean bench fuzz fuzz-smoke \
        install uninstall install-check pkgs-ok checksrc deb

all: leasekeeper $(BUILD)/leasekeeper-static $(BUILD)/examples/app

# The binary lives at the top of the tree so that `./leasekeeper` just works after `make`.
leasekeeper: $(BIN)
	cp $(BIN) $@

$(BIN): $(MAIN_OBJ) $(CLI_OBJ) $(CORE_LIB) $(CLIENT_LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

# The client commands alone, linked statically: what an app container runs from the shared
# volume (`leasekeeper drain` in a preStop hook) whatever its image has installed.
STATIC_SRC := $(MAIN_SRC) $(CLI_SRC) agent/duration.c $(PROTO_SRC)
$(BUILD)/leasekeeper-static: $(STATIC_SRC) $(wildcard */*.h)
	$(CC) $(ALL_CFLAGS) -DLK_CLIENT_ONLY -static -o $@ $(STATIC_SRC) \
		$(shell pkg-config --static --libs libsodium jansson)

$(CLIENT_LIB): $(PROTO_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(CORE_LIB): $(AGENT_OBJ) $(LOCKS_OBJ)
	@rm -f $@
	ar rcs $@ $^

# -MMD: each object depends on the headers it includes, as the compiler saw them.
$(BUILD)/%.o: %.c | pkgs-ok
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# Each unit test links only the modules it exercises, so a module can be tested on its own (a
# test without a T_ line links every module but main.o). The wildcards follow a module split
# into several files (config.c, config_*.c).
CODEC_OBJ        := $(patsubst %.c,%.o,$(wildcard proto/codec*.c))
T_check_codec    := $(CODEC_OBJ)
T_check_auth     := proto/auth.o $(CODEC_OBJ)
T_check_duration := agent/duration.o
T_check_config   := $(patsubst %.c,%.o,$(wildcard agent/config*.c)) agent/duration.o \
                    $(LOCKS_SRC:.c=.o)
T_check_lock     := $(patsubst %.c,%.o,$(wildcard agent/lock*.c)) agent/log.o $(CODEC_OBJ)
T_check_redis    := $(LOCKS_SRC:.c=.o) tests/harness.o
T_check_etcd_json := $(patsubst %.c,%.o,$(wildcard locks/etcd_json*.c))
T_check_etcd     := $(LOCKS_SRC:.c=.o) tests/harness.o
T_check_client   := proto/client.o proto/auth.o $(CODEC_OBJ)
T_ALL            := $(AGENT_SRC:.c=.o) $(LOCKS_SRC:.c=.o) $(PROTO_SRC:.c=.o) tests/harness.o

.SECONDARY:
.SECONDEXPANSION:
$(BUILD)/tests/%: tests/%.c $$(addprefix $(BUILD)/,$$(or $$(T_$$*),$$(T_ALL))) $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags check) -o $@ $< \
		$(addprefix $(BUILD)/,$(or $(T_$*),$(T_ALL))) $(LDLIBS) $(shell pkg-config --libs check)

# The backend contract suite is #included by the two backend tests.
$(BUILD)/tests/check_redis $(BUILD)/tests/check_etcd: tests/backend_contract.c

$(BUILD)/examples/app: examples/app.c $(CLIENT_LIB) proto/client.h proto/codec.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(CLIENT_LIB) $(LDLIBS)

# The house rules a machine can check (tools/checksrc.py --help), and the checker's own tests.
checksrc:
	$(PYTHON) tools/checksrc.py
	$(PYTHON) tests/checksrc_test.py

pkgs-ok:
	@pkg-config --exists --print-errors $(PKGS) || \
		{ echo "missing libraries: run \`make deps\` (Debian) or install: $(PKGS)"; exit 1; }

deps:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi
	@missing=""; for p in $(BACKPORTS_PKGS); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing from bookworm-backports:$$missing"; \
		sh tools/backports.sh && apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends -t bookworm-backports $$missing; \
	fi

unit: $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done
	@echo "== clients/python"; $(PYTHON) -m unittest discover -s clients/python/tests -t clients/python
	@if [ -f clients/go/go.mod ] && command -v go >/dev/null 2>&1; then \
		echo "== clients/go"; cd clients/go && GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local \
		GOCACHE=$(abspath $(BUILD))/gocache go test ./...; fi

integration: $(BIN) $(BUILD)/examples/app
	LK_BIN=$(abspath $(BIN)) $(PYTHON) tests/integration/run.py

# `make test` runs everything twice, a normal build, then under ASan + UBSan; then replays the
# fuzz corpora and fuzzes each target for 10 s (a fixed seed, so a run can be repeated), and
# runs one scenario per backend under valgrind memcheck, and a short chaos run (every fault
# kind twice on each backend, about 2 minutes: tests/chaos/README.md).
test: deps
	$(MAKE) checksrc unit integration install-check
	$(MAKE) test-asan
	$(MAKE) fuzz-smoke FUZZ_FLAGS=-seed=1
	$(MAKE) valgrind
	$(MAKE) chaos-smoke

# The same as `make test` without `make deps`: for machines that have what it needs already.
check:
	$(MAKE) checksrc unit integration install-check
	$(MAKE) test-asan
	$(MAKE) fuzz-smoke FUZZ_FLAGS=-seed=1
	$(MAKE) valgrind
	$(MAKE) chaos-smoke

test-asan: deps
	$(MAKE) BUILD=build/asan SAN=1 CFLAGS="-O1 -g" unit integration

BACKEND ?= redis
demo: deps all
	BACKEND=$(BACKEND) ./examples/demo.sh

# leasekeeper next to etcdctl elect and redis-py's Lock, on the same private servers; writes
# bench/results.json and bench/handoff.svg (about 20 minutes on 2 cores; BENCH_ARGS=--quick: 20
# handoffs and 10 s windows instead of 200 and 60 s).
bench: deps all
	LK_BIN=$(abspath $(BIN)) $(PYTHON) tests/bench.py $(BENCH_ARGS)

# The agent and CLI binary, and the C client library for apps: libleasekeeper.a, its headers
# (under include/leasekeeper/, included as "proto/client.h") and leasekeeper.pc, so that
# `pkg-config --cflags --libs leasekeeper` is all an app's build needs; the man page
# leasekeeper(1) and the bash completion (which bash-completion finds under /usr/local/share
# as well as /usr/share).
CLIENT_HDRS := proto/client.h proto/codec.h proto/auth.h
install: $(BIN) $(CLIENT_LIB)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR)/leasekeeper/proto \
		$(DESTDIR)$(PCDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR)
	install -m 755 $(BIN) $(DESTDIR)$(BINDIR)/leasekeeper
	install -m 644 man/leasekeeper.1 $(DESTDIR)$(MANDIR)/man1/leasekeeper.1
	install -m 644 completion/leasekeeper.bash $(DESTDIR)$(BASHCOMPDIR)/leasekeeper
	install -m 644 $(CLIENT_LIB) $(DESTDIR)$(LIBDIR)/libleasekeeper.a
	install -m 644 $(CLIENT_HDRS) $(DESTDIR)$(INCDIR)/leasekeeper/proto/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' leasekeeper.pc.in > $(DESTDIR)$(PCDIR)/leasekeeper.pc
	chmod 644 $(DESTDIR)$(PCDIR)/leasekeeper.pc

# A staged `make install`, then the Debian package (`make deb`) installed and checked
# (tests/install/README.md).
install-check: $(BIN) $(CLIENT_LIB)
	BUILD=$(BUILD) MAKE="$(MAKE)" VERSION=$(VERSION) sh tests/install/run.sh

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/leasekeeper $(DESTDIR)$(LIBDIR)/libleasekeeper.a \
	      $(DESTDIR)$(PCDIR)/leasekeeper.pc $(DESTDIR)$(MANDIR)/man1/leasekeeper.1 \
	      $(DESTDIR)$(BASHCOMPDIR)/leasekeeper
	rm -rf $(DESTDIR)$(INCDIR)/leasekeeper

# The Debian package (debian/): dpkg-buildpackage -us -uc -b on a copy of the tree in a
# temporary directory, so that none of its by-products lands in the tree, then lintian, which
# must find no error or warning (info tags are shown). Out: $(DEB_DIR)/leasekeeper_<version>_<arch>.deb (and the -dbgsym package,
# .buildinfo, .changes, build.log).
DEB_DIR := $(BUILD)/deb
deb:
	@set -e; \
	v=$$(dpkg-parsechangelog -l debian/changelog -SVersion); \
	[ "$$v" = "$(VERSION)" ] || { echo "make deb: debian/changelog is at $$v but agent/agent.h" \
		"says $(VERSION): add a debian/changelog entry" >&2; exit 1; }; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; src="$$tmp/leasekeeper-$(VERSION)"; \
	mkdir "$$src" && rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR); \
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		git ls-files -z --cached --others --exclude-standard | \
		tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$$src"; \
	else tar --exclude=./build --exclude=./.git -cf - . | tar -xf - -C "$$src"; fi; \
	echo "make deb: dpkg-buildpackage -us -uc -b in $$src (log: $(DEB_DIR)/build.log)"; \
	(cd "$$src" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u BUILD -u SAN -u DESTDIR -u PREFIX \
		dpkg-buildpackage -us -uc -b -j$$(nproc)) >$(DEB_DIR)/build.log 2>&1 || \
		{ tail -n 40 $(DEB_DIR)/build.log >&2; exit 1; }; \
	cp "$$tmp"/*.deb "$$tmp"/*.buildinfo "$$tmp"/*.changes $(DEB_DIR)/; \
	echo "make deb: lintian"; \
	lintian --fail-on error,warning --info $(DEB_DIR)/*.changes; \
	ls $(DEB_DIR)/*.deb

clean:
	rm -rf build leasekeeper

include tests/fuzz/fuzz.mk
include tests/valgrind/valgrind.mk
include tests/chaos/chaos.mk
include tests/soak/soak.mk

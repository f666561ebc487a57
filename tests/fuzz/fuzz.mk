# libFuzzer targets (tests/fuzz/README.md). Included from the top Makefile.
#
#   make fuzz FUZZ_SECONDS=N   build every target, fuzz each for N s (default 60) in turn
#   make fuzz-smoke            replay every committed corpus, then fuzz each target for 10 s
#   make fuzz-build            only build the targets
#
# The project's sources are compiled straight into each target with clang and the fuzzer,
# address and undefined-behaviour sanitizers: nothing here uses the gcc-built objects. A run
# starts from a temporary copy of the committed corpus, so new inputs never land in the tree;
# a crash, leak, timeout or out-of-memory makes the run fail and prints the reproducer's path.

FUZZ_CC      ?= clang
# `make deps` installs clang and its libFuzzer runtime too.
DEB_PKGS += clang libclang-rt-14-dev
FUZZ_BUILD   ?= build/fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 10
# Per-input limits: an input slower than FUZZ_TIMEOUT seconds is a hang, and counts as a crash.
FUZZ_TIMEOUT ?= 10
FUZZ_RSS_MB  ?= 2048
FUZZ_FLAGS   ?=

FUZZ_TARGETS := codec config etcd_json redis_reply client
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/fuzz_%)

FUZZ_SAN    := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
               -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -O1 -g $(FUZZ_SAN) -I. \
               $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
FUZZ_LDLIBS  = $(LDLIBS) -lpthread

# What each target compiles besides its own file (wildcards follow a module split into several
# files). fuzz_redis_reply #includes locks/redis.c and redis_conn.c to reach their static reply
# mapping (see its header comment); the other locks/ files resolve the rest of their references.
FUZZ_SRC_codec       := $(wildcard proto/codec*.c)
FUZZ_SRC_config      := $(wildcard agent/config*.c) agent/duration.c $(FUZZ_SRC_codec) $(LOCKS_SRC)
FUZZ_SRC_etcd_json   := $(wildcard locks/etcd_json*.c)
FUZZ_SRC_redis_reply := $(filter-out locks/redis.c locks/redis_conn.c,$(LOCKS_SRC))
FUZZ_DEP_redis_reply := locks/redis.c locks/redis_conn.c
FUZZ_SRC_client      := proto/client.c proto/auth.c $(FUZZ_SRC_codec)

# Extra libFuzzer options per target (later options win over the common ones). The config
# loader promises that no file costs much to reject: a second is already far too long.
FUZZ_OPT_codec  := -dict=tests/fuzz/dict/proto.dict
FUZZ_OPT_client := -max_len=16384 -dict=tests/fuzz/dict/proto.dict
FUZZ_OPT_config := -timeout=2 -dict=tests/fuzz/dict/config.dict
FUZZ_OPT_etcd_json := -dict=tests/fuzz/dict/etcd_json.dict
# Shell: the options of target $$t into $$opt.
FUZZ_OPT_SH = opt=; case $$t in codec) opt="$(FUZZ_OPT_codec)";; client) opt="$(FUZZ_OPT_client)";; \
              config) opt="$(FUZZ_OPT_config)";; etcd_json) opt="$(FUZZ_OPT_etcd_json)";; esac

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-replay

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $$(FUZZ_SRC_$$*) $$(FUZZ_DEP_$$*) $(wildcard */*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_SRC_$*) $(FUZZ_LDLIBS)

# One target for $(1) seconds on a temporary copy of its corpus. libFuzzer exits non-zero on a
# crash and writes the input under $(FUZZ_BUILD)/artifacts/<target>/; the path is printed again
# at the end, where it is easy to find.
define fuzz_run
	@set -e; for t in $(FUZZ_TARGETS); do \
		work=$$(mktemp -d "$${TMPDIR:-/tmp}/lk-fuzz-$$t.XXXXXX"); \
		art=$(FUZZ_BUILD)/artifacts/$$t; rm -rf "$$art"; mkdir -p "$$art"; \
		cp -R tests/fuzz/corpus/$$t/. "$$work/"; \
		$(FUZZ_OPT_SH); \
		echo "== fuzz_$$t: $(1) s from $$(ls "$$work" | wc -l) corpus inputs"; \
		rc=0; $(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(1) -timeout=$(FUZZ_TIMEOUT) \
			-rss_limit_mb=$(FUZZ_RSS_MB) -print_final_stats=1 $$opt $(FUZZ_FLAGS) \
			-artifact_prefix="$$art/" "$$work" || rc=$$?; \
		rm -rf "$$work"; \
		if [ $$rc -ne 0 ]; then \
			for f in "$$art"/*; do [ -e "$$f" ] && echo "fuzz_$$t FAILED (exit $$rc): reproducer $$f" \
				"(replay: $(FUZZ_BUILD)/fuzz_$$t $$f)"; done; \
			echo "fuzz_$$t FAILED (exit $$rc)"; exit $$rc; \
		fi; \
	done
endef

fuzz: $(FUZZ_BINS)
	$(call fuzz_run,$(FUZZ_SECONDS))

# Every committed input, run once each: a regression fails here before any fuzzing starts.
fuzz-replay: $(FUZZ_BINS)
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== fuzz_$$t: replaying tests/fuzz/corpus/$$t"; \
		log=$$(mktemp); $(FUZZ_OPT_SH); \
		if ! $(FUZZ_BUILD)/fuzz_$$t -timeout=$(FUZZ_TIMEOUT) -rss_limit_mb=$(FUZZ_RSS_MB) $$opt \
			tests/fuzz/corpus/$$t/* >"$$log" 2>&1; then \
			grep -v '^Running: ' "$$log" | tail -40; \
			bad=$$(grep '^Running: ' "$$log" | tail -1 | cut -d' ' -f2); \
			echo "fuzz_$$t FAILED: committed input $$bad (replay: $(FUZZ_BUILD)/fuzz_$$t $$bad)"; \
			rm -f "$$log"; exit 1; \
		fi; \
		grep -c '^Executed ' "$$log" | sed 's/^/   inputs replayed: /'; rm -f "$$log"; \
	done

fuzz-smoke: fuzz-replay
	$(call fuzz_run,$(FUZZ_SMOKE_SECONDS))

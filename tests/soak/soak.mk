# The soak (tests/soak/README.md). Included from the top Makefile; not part of `make test`.
#
#   make soak SOAK_SECONDS=600     rolling restarts and client churn on Redis and etcd (in
#                                  parallel) for SOAK_SECONDS; the long-lived agents' RSS
#                                  growth after the warm-up must stay under SOAK_LIMIT_KIB
#
# The agent is the normal build, in its own directory (SOAK_BUILD) so that other builds are
# left alone. SOAK_BACKENDS=redis,etcd picks backends; SOAK_ARGS passes more (e.g. --serial,
# --keep, --out DIR, --warmup S, --interval S, --seed N).

.PHONY: soak soak-build

SOAK_BUILD     ?= build/soak
SOAK_SECONDS   ?= 600
SOAK_BACKENDS  ?= redis,etcd
SOAK_LIMIT_KIB ?= 512
SOAK_ARGS      ?=

soak-build:
	$(MAKE) BUILD=$(SOAK_BUILD) SAN= $(SOAK_BUILD)/leasekeeper

soak: deps soak-build
	LK_BIN=$(abspath $(SOAK_BUILD)/leasekeeper) $(PYTHON) tests/soak/run.py \
	    --seconds $(SOAK_SECONDS) --backends $(SOAK_BACKENDS) --limit-kib $(SOAK_LIMIT_KIB) \
	    $(SOAK_ARGS)

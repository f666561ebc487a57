# The chaos suite (tests/chaos/README.md). Included from the top Makefile.
#
#   make chaos CHAOS_SECONDS=N CHAOS_SEED=S   each backend (Redis, etcd, 3-member etcd) N s
#                                             (default 300) of random faults, in parallel
#   make chaos-smoke                          every fault kind CHAOS_EACH times (default 2) on
#                                             each backend: about 2 minutes on 2 cores (a
#                                             budget of 135 s per backend stops it early)
#   make chaos-check                          the history checker's self-test
#
# The agent is built in its own directory (CHAOS_BUILD) so that other builds are left alone.
# CHAOS_BACKENDS=redis,etcd,etcd3 picks backends; CHAOS_OUT=DIR keeps the run dirs there
# (otherwise they are removed after a clean run and kept after a violation).

.PHONY: chaos chaos-smoke chaos-build chaos-check

CHAOS_BUILD    ?= build/chaos
# `make deps` installs ip(8) for the network namespaces too.
DEB_PKGS += iproute2
CHAOS_SECONDS  ?= 300
CHAOS_SEED     ?=
CHAOS_EACH     ?= 2
CHAOS_BACKENDS ?= redis,etcd,etcd3
CHAOS_OUT      ?=
CHAOS_FAULTS   ?=

CHAOS_ARGS = --backends $(CHAOS_BACKENDS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) \
             $(if $(CHAOS_OUT),--out $(CHAOS_OUT)) $(if $(CHAOS_FAULTS),--faults $(CHAOS_FAULTS))

chaos-build:
	$(MAKE) BUILD=$(CHAOS_BUILD) SAN= $(CHAOS_BUILD)/leasekeeper

chaos: deps chaos-build
	LK_BIN=$(abspath $(CHAOS_BUILD)/leasekeeper) $(PYTHON) tests/chaos/runner.py \
	    --seconds $(CHAOS_SECONDS) $(CHAOS_ARGS)

chaos-smoke: deps chaos-build chaos-check
	LK_BIN=$(abspath $(CHAOS_BUILD)/leasekeeper) $(PYTHON) tests/chaos/runner.py \
	    --smoke --each $(CHAOS_EACH) $(CHAOS_ARGS)

chaos-check:
	$(PYTHON) tests/chaos/test_checker.py

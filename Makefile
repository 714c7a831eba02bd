# api-proxy: one hand-written Makefile.
#   make            build bin/api-proxy, bin/api-poller, bin/api-proxy-admin (build packages only)
#   make unit       build the unit tests (needs cmocka, a test package)
#   make test       build both, then run every test (unit + integration)
#   make sanitize   build both with ASan+UBSan into bin-san/ and run the same tests
#   make bench      benchmark against nginx (not part of make test)
#   make fuzz       build the libFuzzer targets with clang (build-fuzz/) and run each
#                   for FUZZ_SECONDS (default 60); not part of `make` (needs clang)

CC      ?= cc
PKGS    := libevent hiredis libcurl libcjson libcrypto
BUILD   ?= build
BIN     ?= bin
OPT     ?= -O2
SAN     ?=

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))

CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) -g $(SAN) -Wall -Wextra -Werror \
           -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-missing-field-initializers \
           -Iinclude -Iproxy $(PKG_CFLAGS) -MMD -MP
LDFLAGS += $(SAN)
LDLIBS  += $(PKG_LIBS) -lm -pthread

COMMON_SRC := $(wildcard common/*.c)
PROXY_SRC  := $(filter-out proxy/main.c proxy/admin_main.c,$(wildcard proxy/*.c))
POLLER_SRC := $(filter-out poller/main.c,$(wildcard poller/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
# The admin console's static files, built into the proxy (tools/embed.c).
UI_FILES   := $(sort $(wildcard ui/*))
GEN        := $(BUILD)/gen
# What replicas report as their version (GET /health, /admin/fleet); `make AP_VERSION=...` sets it.
AP_VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo unknown)

obj = $(patsubst %.c,$(BUILD)/%.o,$(1))

# `make V=1` shows the full commands.
ifeq ($(V),1)
Q :=
else
Q := @
endif

LIBAP := $(BUILD)/libap.a
LIBPX := $(BUILD)/libpx.a
LIBPL := $(BUILD)/libpl.a

PROGS := $(BIN)/api-proxy $(BIN)/api-proxy-admin $(if $(wildcard poller/main.c),$(BIN)/api-poller)
UNITS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

.PHONY: all test unit sanitize bench clean run deps analyze FORCE fuzz fuzz-build fuzzers
# The default build needs only the build packages: a user running scripts/run.sh on a
# fresh machine has no cmocka. The unit tests come with `make unit`, `make test`, `make sanitize`.
all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(LIBAP): $(call obj,$(COMMON_SRC)) $(GEN)/ap_version.o
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^
# Tools that run on the build machine while building: plain flags, no sanitizers.
$(BUILD)/tools/embed: tools/embed.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) -std=c11 -O2 -Wall -Wextra -Werror $(shell pkg-config --cflags libcrypto) -o $@ $< \
	    $(shell pkg-config --libs libcrypto)
# The list itself is a prerequisite, so removing a file rebuilds too.
$(GEN)/ui_files.list: FORCE
	@mkdir -p $(dir $@)
	@echo '$(UI_FILES)' >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
$(GEN)/px_ui_assets.c: $(BUILD)/tools/embed $(UI_FILES) $(GEN)/ui_files.list
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  EMBED   $(words $(UI_FILES)) files of ui/")
	$(Q)$(BUILD)/tools/embed $@ $(UI_FILES)
# Rewritten only when the version changes, so a new commit rebuilds one small object.
$(GEN)/ap_version.c: FORCE
	@mkdir -p $(dir $@)
	@printf '#include "ap_version.h"\nconst char ap_version[] = "%s";\n' '$(AP_VERSION)' >$@.tmp
	@cmp -s $@.tmp $@ && rm -f $@.tmp || mv $@.tmp $@
$(GEN)/%.o: $(GEN)/%.c
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -Iproxy -c -o $@ $<
FORCE:

$(LIBPX): $(call obj,$(PROXY_SRC)) $(GEN)/px_ui_assets.o
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^
$(LIBPL): $(call obj,$(POLLER_SRC))
	@mkdir -p $(dir $@)
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(BIN)/api-proxy: $(call obj,proxy/main.c) $(LIBPX) $(LIBAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/api-poller: $(call obj,poller/main.c) $(LIBPL) $(LIBAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(BIN)/api-proxy-admin: $(call obj,proxy/admin_main.c) $(LIBAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests link the daemons' own objects (not their main), as twemproxy does.
$(BUILD)/tests/%: $(call obj,tests/unit/%.c) $(LIBPX) $(LIBPL) $(LIBAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

unit: $(UNITS)

test: all unit
	tests/run_tests.sh --bin $(BIN) --build $(BUILD)

sanitize:
	$(MAKE) BUILD=build-san BIN=bin-san OPT=-O1 \
	    SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" all unit
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    tests/run_tests.sh --bin bin-san --build build-san

$(BUILD)/bench_conv: $(call obj,tests/bench/bench_conv.c) $(LIBAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The concurrency row's load tool (upstream and client); libevent only, built for the bench alone.
$(BUILD)/trickle: $(call obj,tests/bench/trickle.c)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(shell pkg-config --libs libevent)

bench: all $(BUILD)/bench_conv $(BUILD)/trickle
	scripts/bench.sh

# Static analysis, run by the test command: cppcheck, gcc's -fanalyzer on every
# source, and the call graph of the proxy's objects (no cycle between files).
# px_request.c and px_conn.c are analyzed without the two checks that cannot follow
# their deferred frees (a reference count, and a connection kept while busy or held:
# fields the analyzer forgets across every call into libevent or libc), and no file with the
# leak check, which cannot follow ownership handed to tsearch() or to arrays of
# owned pointers; ASan, LeakSanitizer and valgrind cover those at run time.
ANALYZE_SRC := $(COMMON_SRC) $(wildcard proxy/*.c) $(wildcard poller/*.c)
ANALYZE_CFLAGS := -std=c11 -D_GNU_SOURCE -O1 -fanalyzer -Wno-analyzer-malloc-leak -Werror -Iinclude -Iproxy -Ipoller $(PKG_CFLAGS)
analyze: all
	@echo "  CPPCHECK"
	$(Q)cppcheck -q --std=c11 --enable=warning,performance,portability --inline-suppr --error-exitcode=1 \
	    -Iinclude -Iproxy -Ipoller $(shell pkg-config --cflags-only-I libcjson hiredis) -D_GNU_SOURCE \
	    --suppress=missingIncludeSystem --suppress=missingInclude common proxy poller
	@echo "  ANALYZE $(words $(ANALYZE_SRC)) files (gcc -fanalyzer)"
	$(Q)for f in $(ANALYZE_SRC); do \
	    extra=; case $$f in proxy/px_request.c|proxy/px_conn.c) \
	        extra="-Wno-analyzer-use-after-free -Wno-analyzer-use-of-uninitialized-value";; esac; \
	    $(CC) $(ANALYZE_CFLAGS) $$extra -c -o /dev/null $$f || exit 1; \
	done
	$(Q)scripts/callgraph.py $(call obj,$(PROXY_SRC) proxy/main.c)

run: all
	scripts/run.sh

# Fuzzing: one libFuzzer target per reader of untrusted bytes (tests/fuzz/README.md).
# The targets link libap built by clang with ASan+UBSan and coverage (fuzzer-no-link).
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZERS      := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))

$(BUILD)/fuzz/%: $(call obj,tests/fuzz/%.c) $(LIBAP)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

fuzzers: $(FUZZERS)

fuzz-build:
	$(MAKE) CC=clang BUILD=$(FUZZ_BUILD) OPT="-O1" SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" fuzzers

fuzz: fuzz-build
	scripts/fuzz.sh --bin $(FUZZ_BUILD)/fuzz --seconds $(FUZZ_SECONDS)

clean:
	rm -rf build build-san build-fuzz bin bin-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

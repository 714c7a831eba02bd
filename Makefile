# api-proxy: one hand-written Makefile.
#   make            build bin/api-proxy, bin/api-poller, bin/api-proxy-admin (build packages only)
#   make unit       build the unit tests (needs cmocka, a test package)
#   make test       build both, then run every test (unit + integration)
#   make sanitize   build both with ASan+UBSan into bin-san/ and run the same tests
#   make bench      benchmark against nginx (not part of make test)

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
           -Iinclude $(PKG_CFLAGS) -MMD -MP
LDFLAGS += $(SAN)
LDLIBS  += $(PKG_LIBS) -lm -pthread

COMMON_SRC := $(wildcard common/*.c)
PROXY_SRC  := $(filter-out proxy/main.c proxy/admin_main.c,$(wildcard proxy/*.c))
POLLER_SRC := $(filter-out poller/main.c,$(wildcard poller/*.c))
UNIT_SRC   := $(wildcard tests/unit/test_*.c)

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

.PHONY: all test unit sanitize bench clean run deps
# The default build needs only the build packages: a user running scripts/run.sh on a
# fresh machine has no cmocka. The unit tests come with `make unit`, `make test`, `make sanitize`.
all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(LIBAP): $(call obj,$(COMMON_SRC))
	@mkdir -p $(dir $@)
	$(Q)$(AR) rcs $@ $^
$(LIBPX): $(call obj,$(PROXY_SRC))
	@mkdir -p $(dir $@)
	$(Q)$(AR) rcs $@ $^
$(LIBPL): $(call obj,$(POLLER_SRC))
	@mkdir -p $(dir $@)
	$(Q)$(AR) rcs $@ $^

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

bench: all $(BUILD)/bench_conv
	scripts/bench.sh

run: all
	scripts/run.sh

clean:
	rm -rf build build-san bin bin-san

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

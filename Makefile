# v4flash - one non-recursive Makefile.
#
#   make                      CPU build -> ./v4flash
#   make CUDA=1 [CUDA_ARCH=sm_90]   CPU + CUDA backend
#   make cuda-check [CUDA_ARCH=..]  compile the CUDA sources only (no GPU needed)
#   make CUDA=1 test-cuda     CUDA kernels vs the CPU reference (needs a GPU)
#   make CUDA=1 bench-cuda    copy and matvec bandwidth (needs a GPU)
#   make test                 build and run the unit/e2e tests
#   make SAN=address,undefined test   sanitizer build of everything
#   make DEBUG=1              -O0, V4F_DEBUG asserts
#   make fuzz                 libFuzzer targets (clang) in build/fuzz/
#   make fuzz-run FUZZ_TIME=60  run every fuzz target on its corpus
#   make demo                 synthesize the tiny model, run a prompt end to end
#   make check-deps           enforce the one-way module dependencies
#   make clean
#
# Objects go to build/<config>/ with auto-generated dependencies (-MMD -MP).
# Files named *_avx2.c / *_avx512.c get their ISA flags; everything else is
# built for the baseline x86-64 ISA and the right kernels are picked at run
# time from cpuid.

CC      ?= cc
NVCC    ?= nvcc
CUDA_ARCH ?= sm_90
WERROR  ?= 1

comma := ,
CONFIG := release
OPT    := -O2
ifeq ($(DEBUG),1)
  CONFIG := debug
  OPT    := -O0 -DV4F_DEBUG
endif
ifneq ($(SAN),)
  CONFIG := san-$(subst $(comma),-,$(SAN))
  OPT    := -O1 -fno-omit-frame-pointer -fsanitize=$(SAN) -fno-sanitize-recover=all -DV4F_SANITIZE
  SANLD  := -fsanitize=$(SAN)
endif
ifeq ($(CUDA),1)
  CONFIG := $(CONFIG)-cuda
endif

B ?= build/$(CONFIG)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wvla \
        -Wno-unused-parameter
ifeq ($(WERROR),1)
  WARN += -Werror
endif

CPPFLAGS := -Iinclude -Isrc -D_GNU_SOURCE
CFLAGS   := -std=c11 -g $(OPT) $(WARN) -pthread -fno-math-errno
LDFLAGS  := -pthread $(SANLD)
LDLIBS   := -lm

# Optional libraries (never needed for the engine core; see README).
# PCRE2 gives the tokenizer exact Unicode regexes; without it the built-in
# Unicode tables are used.
ifneq ($(NO_PCRE2),1)
  HAVE_PCRE2 := $(shell pkg-config --exists libpcre2-8 2>/dev/null && echo 1)
endif
ifeq ($(HAVE_PCRE2),1)
  CPPFLAGS += -DV4F_HAVE_PCRE2 $(shell pkg-config --cflags libpcre2-8)
  LDLIBS   += $(shell pkg-config --libs libpcre2-8)
endif

# libedit gives `chat` line editing and history; without it chat reads
# plain lines (pipes and scripts work either way).
ifneq ($(NO_LIBEDIT),1)
  HAVE_LIBEDIT := $(shell pkg-config --exists libedit 2>/dev/null && echo 1)
endif
ifeq ($(HAVE_LIBEDIT),1)
  CPPFLAGS += -DV4F_HAVE_LIBEDIT
  LDLIBS   += $(shell pkg-config --libs libedit)
endif

# libmicrohttpd is the HTTP server of `serve`; without it serve says how to
# get it (the engine core never needs it).
ifneq ($(NO_MHD),1)
  HAVE_MHD := $(shell pkg-config --exists libmicrohttpd 2>/dev/null && echo 1)
endif
ifeq ($(HAVE_MHD),1)
  CPPFLAGS += -DV4F_HAVE_MHD $(shell pkg-config --cflags libmicrohttpd)
  LDLIBS   += $(shell pkg-config --libs libmicrohttpd)
endif

ISA_AVX2   := -mavx2 -mfma -mf16c
ISA_AVX512 := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c

# ---- sources ------------------------------------------------------------
LIB_SRC  := $(shell find src -name '*.c' | sort)
CLI_SRC  := $(sort $(wildcard tools/*.c))
TEST_SRC := tests/run_tests.c $(sort $(wildcard tests/unit/*.c))
CU_SRC   := $(sort $(wildcard src/backend/cuda/*.cu))

ifeq ($(CUDA),1)
  CUDA_HOME ?= /usr/local/cuda
  CPPFLAGS += -DV4F_CUDA
  LDLIBS   += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++
  LIB_OBJ_CU := $(CU_SRC:%.cu=$(B)/%.o)
else
  LIB_OBJ_CU :=
endif

LIB_OBJ  := $(LIB_SRC:%.c=$(B)/%.o) $(LIB_OBJ_CU)
CLI_OBJ  := $(CLI_SRC:%.c=$(B)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(B)/%.o)
DEPS     := $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(TEST_OBJ:.o=.d)

LIB  := $(B)/libv4flash.a
BIN  := $(B)/v4flash
TBIN := $(B)/v4flash_tests

.PHONY: all test clean fuzz fuzz-run fuzz-replay demo check-deps cuda-check format test-cuda bench-cuda
all: v4flash

# ./v4flash is always the binary of the configuration just built (a sanitizer
# or CUDA build must not leave its copy behind for the next plain `make`).
.PHONY: v4flash
v4flash: $(BIN)
	cp $(BIN) $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

$(TBIN): $(TEST_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(TEST_OBJ) $(LIB) $(LDLIBS)

$(B)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(ISA_AVX2) -MMD -MP -c $< -o $@

$(B)/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(ISA_AVX512) -MMD -MP -c $< -o $@

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

NVFLAGS := -std=c++17 -O3 -lineinfo -arch=$(CUDA_ARCH) -Iinclude -Isrc \
           -Xcompiler -Wall,-Wextra,-Wno-unused-parameter
ifeq ($(WERROR),1)
  NVFLAGS += -Werror all-warnings
endif
ifeq ($(KTRACE),1) # profiling build: kernel start trace (cuda_common.cuh)
  NVFLAGS += -DV4F_KTRACE
endif
$(B)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -DV4F_CUDA -MMD -MP -c $< -o $@

# Compile-only check of the CUDA sources for every supported architecture.
cuda-check:
	@for a in sm_80 sm_89 sm_90 sm_120; do for f in $(CU_SRC); do echo "$$a $$f"; done; done | \
	  xargs -P $$(nproc) -n 2 sh -c 'echo "nvcc $$0 $$1"; \
	    $(NVCC) $$(echo "$(NVFLAGS)" | sed "s/-arch=$(CUDA_ARCH)/-arch=$$0/") -DV4F_CUDA -c $$1 -o /dev/null'

test: $(TBIN) v4flash
	V4F_BIN=$(BIN) ./$(TBIN) $(TEST_ARGS)

# ---- CUDA conformance test and bandwidth benchmark (CUDA=1, need a GPU) ----
CUDA_TEST_UTIL := $(B)/tests/cuda/cuda_test_util.o
DEPS += $(CUDA_TEST_UTIL:.o=.d)
CUDA_TEST := $(B)/tests/cuda/test_cuda_quant
DEPS += $(CUDA_TEST).d
$(CUDA_TEST): $(CUDA_TEST).o $(CUDA_TEST_UTIL) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $< $(CUDA_TEST_UTIL) $(LIB) $(LDLIBS)
CUDA_OPS_TEST := $(B)/tests/cuda/test_cuda_ops
DEPS += $(CUDA_OPS_TEST).d
$(CUDA_OPS_TEST): $(CUDA_OPS_TEST).o $(CUDA_TEST_UTIL) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $< $(CUDA_TEST_UTIL) $(LIB) $(LDLIBS)
CUDA_GEMM_TEST := $(B)/tests/cuda/test_cuda_gemm
DEPS += $(CUDA_GEMM_TEST).d
$(CUDA_GEMM_TEST).o: CPPFLAGS += -I$(CUDA_HOME)/include
$(CUDA_GEMM_TEST): $(CUDA_GEMM_TEST).o $(CUDA_TEST_UTIL) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $< $(CUDA_TEST_UTIL) $(LIB) $(LDLIBS)
CUDA_MODEL_TEST := $(B)/tests/cuda/test_cuda_model
DEPS += $(CUDA_MODEL_TEST).d
$(CUDA_MODEL_TEST): $(CUDA_MODEL_TEST).o $(B)/tests/unit/golden_cmp.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $< $(B)/tests/unit/golden_cmp.o $(LIB) $(LDLIBS)
ifeq ($(CUDA),1)
test-cuda: $(CUDA_TEST) $(CUDA_OPS_TEST) $(CUDA_GEMM_TEST) $(CUDA_MODEL_TEST)
	./$(CUDA_TEST)
	./$(CUDA_OPS_TEST)
	./$(CUDA_GEMM_TEST)
	./$(CUDA_MODEL_TEST)
bench-cuda: $(CUDA_TEST)
	./$(CUDA_TEST) --bench
else
test-cuda bench-cuda:
	@echo "$@ needs the CUDA build: make CUDA=1 $@"; exit 1
endif

# ---- fuzzing (clang + libFuzzer) ----------------------------------------
# The library is built once by a sub-make with clang and the fuzzer's
# coverage instrumentation (per-ISA files keep their flags); each target in
# tests/fuzz/fuzz_*.c links against it with the libFuzzer main.
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SAN := fuzzer-no-link,address,undefined
FUZZ_LIBDIR := build/fuzz/lib
FUZZ_LIB := $(FUZZ_LIBDIR)/libv4flash.a
FUZZ_TIME ?= 60
FUZZ_CFLAGS := -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
               $(CPPFLAGS) -Wall -Wextra -Wno-unused-parameter

fuzz: $(FUZZ_BIN)
.PHONY: fuzz-lib
fuzz-lib:
	$(MAKE) --no-print-directory CC=clang SAN=$(FUZZ_SAN) B=$(FUZZ_LIBDIR) $(FUZZ_LIB)
build/fuzz/%: tests/fuzz/%.c fuzz-lib
	@mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_LIB) $(LDLIBS) -pthread

fuzz-run: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do \
	  n=$$(basename $$f); d=tests/fuzz/corpus/$${n#fuzz_}; mkdir -p $$d; \
	  echo "== $$n ($(FUZZ_TIME)s, corpus $$d)"; \
	  $$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 $$d; \
	done

# Replay every checked-in corpus input once (CI regression check).
fuzz-replay: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do \
	  n=$$(basename $$f); d=tests/fuzz/corpus/$${n#fuzz_}; \
	  if [ -d $$d ]; then echo "== replay $$n ($$(ls $$d | wc -l) inputs)"; $$f -runs=0 $$d; fi; \
	done

# ---- demo -----------------------------------------------------------------
DEMO_MODEL := build/demo/tiny-demo.gguf
demo: v4flash
	@mkdir -p build/demo
	@test -f $(DEMO_MODEL) || ./v4flash synth $(DEMO_MODEL) --preset tiny --seed 1
	./v4flash run -m $(DEMO_MODEL) -p "Hello from the demo" -n 32 --temp 0

# ---- hygiene --------------------------------------------------------------
check-deps:
	@sh tools/check_deps.sh

format:
	clang-format -i $$(find src tools tests include -name '*.[ch]' -o -name '*.cu' -o -name '*.cuh')

clean:
	rm -rf build v4flash

-include $(DEPS)

# bitdistill.c — build and test.
#   make train        the CPU trainer (OpenMP when the compiler has it)
#   make convert      Hugging Face / llama2.c import and export
#   make tokenize     ./tokenize TOKENIZER "text": token ids as JSON
#   make test         every test program and test script; ends with "N passed, M failed"
#   make bench        the matmul against OpenBLAS sgemm, the CPU training step (tokens/s, GFLOP/s)
#   make train_cu     the GPU build (needs nvcc; multi-GPU through NCCL when nccl.h is found;
#                     --attention cudnn when cuDNN and cudnn-frontend are found)
#   make cudnn-frontend  download cudnn-frontend's headers into build/cudnn-frontend (pip)

CC ?= cc
# -march=native where the compiler takes it, a portable -O3 otherwise.
NATIVE := $(shell $(CC) -march=native -x c -c -o /dev/null /dev/null 2>/dev/null && echo -march=native)
OPENMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c -o /dev/null - 2>/dev/null && echo -fopenmp)
CFLAGS ?= -O3 $(NATIVE) -Wall -Wextra -Wno-unused-function -Wno-unused-parameter
CFLAGS += $(OPENMP)
LDLIBS = -lm $(OPENMP)
NVCC ?= nvcc

# the host code that is not the method lives in lib/ (see README's reading order)
HEADERS = $(wildcard *.h lib/*.h)
LIB_C = $(wildcard lib/*.c)
# test_gradcheck.c sits beside train.c; the other test programs are tests/test_*.c, built into build/
TEST_PROGRAMS = test_gradcheck $(patsubst tests/%.c,build/%,$(wildcard tests/test_*.c)) build/test_gemm_avx2
TEST_SCRIPTS = $(sort $(wildcard tests/*.sh))

all: train convert tokenize $(TEST_PROGRAMS)

train: train.c tokenizer.c $(LIB_C) $(HEADERS)
	$(CC) $(CFLAGS) -o $@ train.c $(LDLIBS)

convert: convert.c tokenizer.c $(HEADERS)
	$(CC) $(CFLAGS) -o $@ convert.c $(LDLIBS)

tokenize: tokenizer.c $(HEADERS)
	$(CC) $(CFLAGS) -DTOKENIZER_MAIN -o $@ tokenizer.c $(LDLIBS)

test_gradcheck: test_gradcheck.c train.c tokenizer.c $(LIB_C) $(HEADERS)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

build/test_%: tests/test_%.c train.c convert.c tokenizer.c $(LIB_C) $(HEADERS)
	@mkdir -p build
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# lib/gemm.h's test once more with its AVX2 kernel (the AVX-512 one switched off)
build/test_gemm_avx2: tests/test_gemm.c $(HEADERS)
	@mkdir -p build
	$(CC) $(CFLAGS) -mno-avx512f -o $@ $< $(LDLIBS)

test: train convert tokenize $(TEST_PROGRAMS)
	@./dev/run_tests.sh $(addprefix ./,$(TEST_PROGRAMS)) $(TEST_SCRIPTS)

bench: train
	./dev/bench_cpu.sh

# The GPU build: train.cu (C++/CUDA, its kernels in cuda/*.cuh, its own host code around the model in
# cuda/*.cu) with train.c's host code compiled as C (train_cu_host.c).
# An explicit architecture, so that it builds where no GPU is (CI): sm_90 machine code for
# Hopper (H100, H200) plus compute_90 PTX that newer GPUs' drivers compile at start.
CUDA_ARCH ?= -gencode=arch=compute_90,code=sm_90 -gencode=arch=compute_90,code=compute_90
NVCCFLAGS ?= -O3 -std=c++17 $(CUDA_ARCH)
CU_LDLIBS = -lcublasLt $(if $(OPENMP),-Xcompiler -fopenmp) -lm
CU_DEPS = train.cu $(wildcard cuda/*.cuh cuda/*.cu) $(HEADERS) build/train_cu_host.o
# NCCL, for data parallelism over several GPUs (cuda/data_parallel.cuh, cuda/zero1.cu), when nccl.h is in NCCL_HOME/include,
# CUDA's include folder, /usr/local/include or else Python's nvidia-nccl wheel (PyTorch's, as on the GPU
# machine); NCCL=0 builds without it (then WORLD_SIZE > 1 is refused).
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(realpath $(shell command -v $(NVCC) 2>/dev/null))))
nccl_inc = $(firstword $(foreach d,$(if $(NCCL_HOME),$(NCCL_HOME)/include) $(CUDA_HOME)/include /usr/local/include,$(if $(wildcard $(d)/nccl.h),$(d))))
NCCL_INC := $(nccl_inc)
ifeq ($(NCCL_INC)$(NCCL),)
NCCL_HOME := $(shell python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null)
NCCL_INC := $(nccl_inc)
endif
NCCL ?= $(if $(NCCL_INC),1,0)
ifeq ($(NCCL),1)
NVCCFLAGS += -DUSE_NCCL -I$(NCCL_INC)
# (pip's nvidia-nccl wheels ship libnccl.so.2 alone, without the libnccl.so that -lnccl looks for)
NCCL_LIB = $(if $(NCCL_HOME),$(if $(wildcard $(NCCL_HOME)/lib/libnccl.so),-lnccl,-l:libnccl.so.2),-lnccl)
CU_LDLIBS += $(if $(NCCL_HOME),-L$(NCCL_HOME)/lib -Xlinker -rpath=$(NCCL_HOME)/lib) $(NCCL_LIB)
endif

# cuDNN's fused attention (--attention cudnn, cuda/cudnn_attention.cuh) when cuDNN's include/cudnn.h
# and lib/ (or lib64/) libcudnn.so* are in CUDNN_HOME, in CUDA_HOME or else in Python's nvidia-cudnn
# wheel (PyTorch's, as on the GPU machine), and the header-only cudnn-frontend's cudnn_frontend.h is
# in CUDNN_FRONTEND/include (make cudnn-frontend puts it in build/cudnn-frontend); CUDNN=0 builds
# without it (then --attention cudnn is refused).
CUDNN_FRONTEND ?= build/cudnn-frontend
CUDNN_FRONTEND_VERSION ?= 1.32.0
cudnn_libdir = $(firstword $(foreach l,lib lib64,$(if $(wildcard $(1)/$(l)/libcudnn.so*),$(1)/$(l))))
cudnn_home = $(firstword $(foreach d,$(CUDNN_HOME) $(CUDA_HOME),$(if $(and $(wildcard $(d)/include/cudnn.h),$(call cudnn_libdir,$(d))),$(d))))
ifneq ($(CUDNN),0)
CUDNN_AT := $(cudnn_home)
ifeq ($(CUDNN_AT),)
CUDNN_HOME := $(shell python3 -c 'import nvidia.cudnn as n; print(list(n.__path__)[0])' 2>/dev/null)
CUDNN_AT := $(cudnn_home)
endif
endif
CUDNN ?= $(if $(and $(CUDNN_AT),$(wildcard $(CUDNN_FRONTEND)/include/cudnn_frontend.h)),1,0)
ifeq ($(CUDNN),1)
CUDNN_LIBDIR := $(call cudnn_libdir,$(CUDNN_AT))
# (first, so that this cudnn.h is read before any other in NCCL's or CUDA's include folder)
NVCCFLAGS := -DUSE_CUDNN -I$(CUDNN_AT)/include -I$(CUDNN_FRONTEND)/include $(NVCCFLAGS)
# (pip's nvidia-cudnn wheels ship libcudnn.so.9 alone, without the libcudnn.so that -lcudnn looks for;
# cudnn-frontend also calls CUDA's NVRTC, for an engine of its own)
CU_LDLIBS += -L$(CUDNN_LIBDIR) -Xlinker -rpath=$(CUDNN_LIBDIR) $(if $(wildcard $(CUDNN_LIBDIR)/libcudnn.so),-lcudnn,-l:libcudnn.so.9) -lnvrtc
endif

# cudnn-frontend is headers only, shipped in PyPI's nvidia-cudnn-frontend wheel (include/ beside its
# Python module): downloaded here, so that build/cudnn-frontend can be carried to a machine without
# a network.
cudnn-frontend:
	rm -rf build/cudnn-frontend build/cudnn-frontend-wheel
	mkdir -p build/cudnn-frontend-wheel
	python3 -m pip download --no-deps -d build/cudnn-frontend-wheel nvidia-cudnn-frontend==$(CUDNN_FRONTEND_VERSION)
	unzip -q build/cudnn-frontend-wheel/nvidia_cudnn_frontend-*.whl 'include/*' -d build/cudnn-frontend
	rm -rf build/cudnn-frontend-wheel
	@echo "cudnn-frontend $(CUDNN_FRONTEND_VERSION) in build/cudnn-frontend/include"

build/train_cu_host.o: train.c tokenizer.c $(LIB_C) $(HEADERS)
	@mkdir -p build
	$(CC) $(CFLAGS) -c -o $@ lib/train_cu_host.c

train_cu: $(CU_DEPS)
	$(NVCC) $(NVCCFLAGS) -o $@ train.cu build/train_cu_host.o $(CU_LDLIBS)

build/cuda_parity: tests/cuda_parity.cu $(CU_DEPS)
	$(NVCC) $(NVCCFLAGS) -o $@ tests/cuda_parity.cu build/train_cu_host.o $(CU_LDLIBS)

# The products of a train_cu step timed alone through cuda/matmul.cuh (doc/performance.md)
build/bench_gemm_cu: dev/bench_gemm_cu.cu cuda/common.cuh cuda/matmul.cuh
	@mkdir -p build
	$(NVCC) $(NVCCFLAGS) -o $@ dev/bench_gemm_cu.cu -lcublasLt

# train_cu without NCCL, whatever this machine has (tests/cuda_build.sh checks that it refuses WORLD_SIZE > 1)
build/train_cu_nonccl: $(CU_DEPS)
	$(NVCC) $(filter-out -DUSE_NCCL -I$(NCCL_INC),$(NVCCFLAGS)) -o $@ train.cu build/train_cu_host.o \
	    $(filter-out -lnccl -l:libnccl.so.2,$(CU_LDLIBS))

# On a machine with a GPU: train_cu against train (dev/test_cu.sh); ends "N passed, M failed".
test_cu: train train_cu build/cuda_parity
	@./dev/test_cu.sh

# On a machine with several GPUs: W processes against one (dev/test_multigpu.sh), and the scaling table.
test_multigpu: train train_cu
	@./dev/test_multigpu.sh

clean:
	rm -f train convert tokenize train_cu $(TEST_PROGRAMS)

.PHONY: all test bench clean test_cu test_multigpu cudnn-frontend

# Robustness (doc/robustness.md):
#   make test-asan    the test programs and the quick CLI scripts built with AddressSanitizer
#                     and UndefinedBehaviorSanitizer (any report is fatal), in build/asan/
SAN_FLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all

test-asan:
	@SAN_FLAGS="$(SAN_FLAGS)" ./dev/test_asan.sh

.PHONY: test-asan

# Fuzzing (fuzz/):
#   make fuzz-NAME    one libFuzzer target (fuzz/fuzz_NAME.c) for its budget: 1M runs or 10 min
#   make fuzz-all     every target, one after the other
FUZZ_CC ?= clang
FUZZ_TARGETS = $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_DEPS = $(wildcard fuzz/*.h) $(HEADERS) $(wildcard *.c lib/*.c)

build/fuzz/make_seeds: fuzz/make_seeds.c $(FUZZ_DEPS)
	@mkdir -p build/fuzz
	$(CC) -O1 -w -o $@ $< -lm

build/fuzz/%: fuzz/fuzz_%.c $(FUZZ_DEPS)
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(SAN_FLAGS) -fsanitize=fuzzer -DFUZZING -w -o $@ $< -lm

# the same targets without libFuzzer: fuzz/replay.c feeds them files (tests/fuzz_regressions.sh)
build/fuzz-replay/%: fuzz/fuzz_%.c fuzz/replay.c $(FUZZ_DEPS)
	@mkdir -p build/fuzz-replay
	$(CC) -O1 -g $(REPLAY_FLAGS) -DFUZZING -w -o $@ $< fuzz/replay.c -lm

fuzz-%: build/fuzz/% build/fuzz/make_seeds
	@./fuzz/run.sh $*

fuzz-all: $(addprefix build/fuzz/,$(FUZZ_TARGETS)) build/fuzz/make_seeds
	@for t in $(FUZZ_TARGETS); do ./fuzz/run.sh $$t || exit 1; done

.PHONY: fuzz-all

# bitdistill.c — build and test.
#   make train        the CPU trainer (OpenMP when the compiler has it)
#   make convert      Hugging Face / llama2.c import and export
#   make tokenize     ./tokenize TOKENIZER "text": token ids as JSON
#   make test         every test program and test script; ends with "N passed, M failed"
#   make bench        CPU training-step throughput (tokens/s, GFLOP/s)
#   make train_cu     the GPU build (needs nvcc)

CC ?= cc
# -march=native where the compiler takes it, a portable -O3 otherwise.
NATIVE := $(shell $(CC) -march=native -x c -c -o /dev/null /dev/null 2>/dev/null && echo -march=native)
OPENMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c -o /dev/null - 2>/dev/null && echo -fopenmp)
CFLAGS ?= -O3 $(NATIVE) -Wall -Wextra -Wno-unused-function -Wno-unused-parameter
CFLAGS += $(OPENMP)
LDLIBS = -lm $(OPENMP)
NVCC ?= nvcc

HEADERS = $(wildcard *.h)
TEST_PROGRAMS = $(patsubst %.c,%,$(wildcard test_*.c))
TEST_SCRIPTS = $(sort $(wildcard tests/*.sh))

all: train convert tokenize $(TEST_PROGRAMS)

train: train.c tokenizer.c eval.c data.c $(HEADERS)
	$(CC) $(CFLAGS) -o $@ train.c $(LDLIBS)

convert: convert.c tokenizer.c $(HEADERS)
	$(CC) $(CFLAGS) -o $@ convert.c $(LDLIBS)

tokenize: tokenizer.c $(HEADERS)
	$(CC) $(CFLAGS) -DTOKENIZER_MAIN -o $@ tokenizer.c $(LDLIBS)

test_%: test_%.c $(HEADERS) $(wildcard train.c convert.c tokenizer.c eval.c data.c)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

test: train convert tokenize $(TEST_PROGRAMS)
	@./dev/run_tests.sh $(addprefix ./,$(TEST_PROGRAMS)) $(TEST_SCRIPTS)

bench: train
	./dev/bench_cpu.sh

train_cu: train.cu $(HEADERS)
	$(NVCC) -O3 -arch=native -o $@ train.cu -lcublas -lcublasLt

clean:
	rm -f train convert tokenize train_cu $(TEST_PROGRAMS)

.PHONY: all test bench clean

#!/usr/bin/env bash
# CPU benchmark (make bench), three parts, each measured against a reference in the same run:
#   1. the matmul kernel (lib/gemm.h) against OpenBLAS's sgemm on the forward and both backward
#      products of bench-100m's and tinyllama-1.1b's linears over BATCH x SEQ tokens, back to
#      back, best of BENCH_REPEAT, with each ratio (dev/bench_gemm.c, built into build/).
#      OpenBLAS is Debian's libopenblas-dev, installed here with apt-get when missing and
#      possible (BENCH_INSTALL=0: never); without it, part 1 times our kernel alone.
#   2. full training steps (forward, backward, AdamW) of bench-100m, random weights and tokens:
#      tokens/s and GFLOP/s, and that as a fraction of OpenBLAS's GFLOP/s on the step's matmuls.
#   3. PyTorch CPU eager fp32, the same step (dev/bench_torch_cpu.py), where torch imports.
#   4. batch-1 decoding of bench-100m (data-free generation, one sequence at a time): each new
#      token reads every fp32 weight once, so its bytes a second against the machine's copy
#      bandwidth (dev/bench_copy.c, read + write) say how near the memory's limit it runs.
# Environment: BENCH_BATCH (4), BENCH_SEQ (256), BENCH_STEPS (2), BENCH_THREADS (all cores),
# BENCH_REPEAT (3), BENCH_SHAPES (all; small: bench-100m's alone).
set -euo pipefail
cd "$(dirname "$0")/.."
make -s train
batch=${BENCH_BATCH:-4} seq=${BENCH_SEQ:-256}
threads=${BENCH_THREADS:-$(nproc)}
echo "cores: $(nproc); threads: $threads; $(cc --version | head -1)"

has_cblas() { echo '#include <cblas.h>
int main(void){float a=1,b=1,c=0; cblas_sgemm(CblasRowMajor,CblasNoTrans,CblasNoTrans,1,1,1,1,&a,1,&b,1,0,&c,1); return c != 1;}' |
    cc -x c -o /dev/null - -lopenblas 2>/dev/null; }
if ! has_cblas && [ "${BENCH_INSTALL:-1}" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing libopenblas-dev (apt-get) for the comparison"
    apt-get install -y -q libopenblas-dev >/dev/null 2>&1 || echo "apt-get install libopenblas-dev failed"
fi
mkdir -p build
flags=(-O3 -Wall -Wno-unused-function -fopenmp)
cc -march=native -x c -c -o /dev/null /dev/null 2>/dev/null && flags+=(-march=native)
if has_cblas; then
    cc "${flags[@]}" -DHAVE_OPENBLAS -o build/bench_gemm dev/bench_gemm.c -lopenblas -lm
else
    echo "skipped OpenBLAS: no cblas.h / libopenblas (Debian: apt-get install libopenblas-dev)"
    cc "${flags[@]}" -o build/bench_gemm dev/bench_gemm.c -lm
fi

echo; echo "== 1. matmul kernel against OpenBLAS sgemm"
shapes=${BENCH_SHAPES:-all}
OMP_NUM_THREADS=$threads ./build/bench_gemm $((batch * seq)) "$shapes" | tee build/bench_gemm.out
blas=$(tail -n 1 build/bench_gemm.out | sed -n 's/.*"blas_gflops": \([0-9.]*\).*/\1/p')

echo; echo "== 2. bench-100m training step"
./train --init bench-100m --bench --micro-batch "$batch" --seq "$seq" --steps "${BENCH_STEPS:-2}" --threads "$threads" |
    tee build/bench_train.out
step=$(tail -n 1 build/bench_train.out | sed -n 's/.*"gflops": \([0-9.]*\).*/\1/p')
tps=$(tail -n 1 build/bench_train.out | sed -n 's/.*"tokens_per_s": \([0-9.]*\).*/\1/p')
if [ -n "$blas" ] && [ "$blas" != 0.00 ]; then
    awk -v s="$step" -v b="$blas" 'BEGIN { printf "step: %.1f GFLOP/s = %.2f of OpenBLAS sgemm'"'"'s %.1f GFLOP/s on the step'"'"'s matmul shapes\n", s, s / b, b }'
fi

echo; echo "== 3. PyTorch CPU eager, the same step"
if python3 -c 'import torch' 2>/dev/null; then
    python3 dev/bench_torch_cpu.py --batch "$batch" --seq "$seq" --steps "${BENCH_STEPS:-2}" --threads "$threads" |
        tee build/bench_torch.out
    ttps=$(tail -n 1 build/bench_torch.out | sed -n 's/.*"tokens_per_s": \([0-9.]*\).*/\1/p')
    awk -v a="$tps" -v t="$ttps" 'BEGIN { printf "train: %.0f tokens/s = %.2fx PyTorch CPU eager (%.0f tokens/s)\n", a, a / t, t }'
else
    echo "skipped: torch is not installed (pip install torch)"
fi

echo; echo "== 4. batch-1 decoding against the copy bandwidth"
cc "${flags[@]}" -o build/bench_copy dev/bench_copy.c
OMP_NUM_THREADS=$threads ./build/bench_copy | tee build/bench_copy.out
copy=$(tail -n 1 build/bench_copy.out | sed -n 's/.*"copy_gbs": \([0-9.]*\).*/\1/p')
gen=$(./train --init bench-100m --generate-data --n 2 --gen-batch 1 --max-new "${BENCH_NEW:-64}" --temperature 0 \
      -o build/bench_decode.jsonl --threads "$threads" | tail -n 1)
params=$(echo "$gen" | sed -n 's/.*"params": \([0-9]*\).*/\1/p')
dtps=$(echo "$gen" | sed -n 's/.*"tokens_per_s": \([0-9.]*\).*/\1/p')
awk -v t="$dtps" -v p="$params" -v c="$copy" 'BEGIN { g = t * p * 4 / 1e9
    printf "decode: %.1f new tokens/s x %.0f MB of fp32 weights = %.1f GB/s read, %.2f of the copy bandwidth (%.1f GB/s)\n", t, p * 4 / 1e6, g, g / c, c }'

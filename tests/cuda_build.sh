#!/usr/bin/env bash
# The GPU build in CI: `make train_cu` must compile wherever nvcc is (no GPU needed: the
# Makefile names the architecture), and without a GPU train_cu must say so and exit 1. Built both
# ways when this machine has NCCL (with it, and build/train_cu_nonccl without): the launcher's
# variables are checked before the GPU, and a build without NCCL refuses WORLD_SIZE > 1; a build
# without cuDNN refuses --attention cudnn.
# GPU runs are `make test_cu` (dev/test_cu.sh) on a machine with a GPU; they are skipped here.
set -u
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)}
if [ -z "$NVCC" ]; then echo "skipped: no nvcc (CUDA toolkit) on this machine"; exit 0; fi
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }
start=$(date +%s)
if make -s train_cu NVCC="$NVCC" > /tmp/cuda_build.$$ 2>&1; then ok "make train_cu with $NVCC ($(( $(date +%s) - start )) s)"
else cat /tmp/cuda_build.$$; bad "make train_cu"; fi
rm -f /tmp/cuda_build.$$
[ -x ./train_cu ] || { echo "1 failed"; exit 1; }
# expect_exit1 NAME PATTERN VAR=VALUE... -- CMD...: exit 1 with one stderr line "error: ...PATTERN"
expect_exit1() {
    local name=$1 pattern=$2 out rc; shift 2
    out=$(env "$@" 2>&1 > /dev/null); rc=$?
    [ $rc -eq 1 ] && [ "$(wc -l <<< "$out")" -eq 1 ] && grep -q "^error: .*$pattern" <<< "$out" && ok "$name: $out" || bad "$name: rc $rc, '$out'"
}
expect_exit1 "RANK outside WORLD_SIZE" "RANK=3: expected an integer from 0 to 1" RANK=3 WORLD_SIZE=2 ./train_cu --init tiny
expect_exit1 "RANK without WORLD_SIZE" "RANK is set but WORLD_SIZE is not" RANK=0 ./train_cu --init tiny
if grep -q -- "-DUSE_NCCL" <(make -s -n train_cu -B NVCC="$NVCC" 2>/dev/null); then
    start=$(date +%s)
    if make -s build/train_cu_nonccl NVCC="$NVCC" > /tmp/cuda_build.$$ 2>&1; then ok "make build/train_cu_nonccl (NCCL left out, $(( $(date +%s) - start )) s)"
    else cat /tmp/cuda_build.$$; bad "make build/train_cu_nonccl"; fi
    rm -f /tmp/cuda_build.$$
    expect_exit1 "without NCCL, WORLD_SIZE=2" "built without NCCL" RANK=0 WORLD_SIZE=2 build/train_cu_nonccl --init tiny
else
    echo "skipped: the build without NCCL is the only one (no nccl.h here)"
    expect_exit1 "without NCCL, WORLD_SIZE=2" "built without NCCL" RANK=0 WORLD_SIZE=2 ./train_cu --init tiny
fi
make -s build/bench_gemm_cu NVCC="$NVCC" > /dev/null 2>&1 && ok "make build/bench_gemm_cu (dev/bench_gemm_cu.cu)" || bad "make build/bench_gemm_cu"
./train_cu --help | grep -q -- "--matmul fp32|tf32" && ./train_cu --help | grep -q -- "--train-tokens" \
    && ok "train_cu --help lists train's flags and --matmul" || bad "train_cu --help"
# train_cu's own flags, however often repeated (the last value counts), are taken before any GPU
many=(); for i in $(seq 12); do many+=(--recompute --matmul bf16 --loss-chunk "$i" --layered-wq); done
out=$(./train_cu "${many[@]}" --help 2>&1); rc=$?
[ $rc -eq 0 ] && grep -q -- "--matmul fp32|tf32" <<< "$out" && ok "train_cu's own flags repeated 12 times each: taken" \
    || bad "train_cu's own flags repeated: rc $rc, '$(tail -n 1 <<< "$out")'"
# cuDNN's attention is in the build where make finds cuDNN and cudnn-frontend (doc/gpu.md); a
# build without it refuses --attention cudnn before looking for a GPU
if ./train_cu --attention cudnn --help > /dev/null 2>&1; then
    ok "train_cu built with cuDNN's attention (--attention cudnn)"
else
    expect_exit1 "without cuDNN, --attention cudnn" "built without cuDNN" ./train_cu --attention cudnn --init tiny
fi
if command -v nvidia-smi > /dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; then
    echo "skipped: GPU runs (a GPU is present: run make test_cu)"
else
    out=$(./train_cu --init tiny --steps 1 2>&1); rc=$?
    [ $rc -eq 1 ] && grep -q "^error: no CUDA GPU is available" <<< "$out" && ok "no GPU: exit 1 with '$out'" || bad "no GPU: rc $rc, '$out'"
    echo "skipped: GPU runs (no GPU here; make test_cu on a GPU machine)"
fi
[ "$fails" -eq 0 ]

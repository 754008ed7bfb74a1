#!/usr/bin/env bash
# dev/bench_cuda.sh — the GPU benchmark of issue 6 (not a test), on a machine with a GPU:
# train_cu on the tinyllama-1.1b random shape, INT-Asym 2-bit group 128 on the seven linears of
# every layer, its full-precision self as teacher, CAKLD, AdamW, batch 8 x 1024 tokens; then the
# PyTorch + transformers reference of the same step (dev/bench_torch.py, eager and torch.compile)
# unless BENCH_TORCH=0; MATMUL=tf32|fp32 picks train_cu's --matmul (unset: its default, bf16),
# ATTENTION=fused|flash its --attention (unset: its default, gemm); TORCH_MODES=eager|compile|eager,compile.
# Prints tokens/s, MFU (FLOPs/token = 8N + 16 L T d, N the matmul parameters with the LM head;
# 989 TFLOP/s dense bf16 peak) and peak GPU memory of each.
#
# Measured on one H200 (nvidia-h200), 2026-12-01, STEPS=5, steady-state steps:
#   train_cu (the default --matmul bf16: bf16 operands, fp32 accumulation, fp32 master weights,
#   activations and AdamW; the teacher in bf16 alone; TF32 --attention gemm)
#                                  22,218 tok/s   MFU 20.2%   peak 59,911 MiB (cudaMemGetInfo)
#     (plan: teacher 2,098 MiB instead of 4,196; bf16 weight copies 1,973 MiB and activation casts
#     588 MiB added, so the peak is not lower yet: the fp32 quantized weights, their gradients and
#     the fp32 activations, 28.6 GiB, are what to cut next)
#     TRAIN_CU_PROFILE=1, seconds summed over 3 steps: matmul 0.508, attention 0.621, quantize
#     0.027, loss 0.019, optimizer 0.041, norms+elementwise 0.147 (1.168 in all): attention next
#   train_cu --matmul tf32 (fp32 weights and activations, TF32 cuBLAS matmuls, --attention gemm)
#                                  18,310 tok/s   MFU 16.7%   peak 59,449 MiB (18,240 in an earlier run)
#   train_cu --matmul tf32 --attention fused
#                                   5,490 tok/s   MFU  5.0%   peak 56,377 MiB
#   PyTorch eager (bf16 autocast, sdpa attention, fused AdamW)
#                                  29,386 tok/s (30,563 in an earlier run)   peak 42.4 GiB allocated, 44.5 reserved
#   torch.compile                  not measured yet (cut by the session's device-time limit)
# A TRAIN_CU_PROFILE=1 run of the fused path: attention 1.21 s, matmuls 0.31 s, everything else
# 0.08 s per step; so the next steps are bf16 matmuls and a tensor-core attention kernel.
set -u
cd "$(dirname "$0")/.."
STEPS=${STEPS:-6}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
make -s train_cu || exit 1
awk 'BEGIN { srand(1); for (i = 0; i < 200000; i++) print int(rand() * 32000) }' > "$tmp/r.ids"
./train_cu --init tinyllama-1.1b -q int -b 2 -g 128 --loss cakld --gamma-batches 1 --train-tokens "$tmp/r.ids" \
    --steps "$STEPS" --batch 8 --micro-batch 8 --seq 1024 --lr 1e-5 ${MATMUL:+--matmul $MATMUL} ${ATTENTION:+--attention $ATTENTION} | tee "$tmp/cu.out" || exit 1
# steady state: the mean tok/s of the steps after the first
tps=$(sed -n 's/^step .* | \([0-9]*\) tok\/s .*/\1/p' "$tmp/cu.out" | tail -n +2 | awk '{ s += $1; n++ } END { printf "%.0f", s / n }')
peak=$(sed -n 's/^GPU memory: peak \([0-9.]*\) MiB.*/\1/p' "$tmp/cu.out")
# tinyllama-1.1b: D 2048, F 5632, L 22, H 32 x 64, KV 4 x 64, V 32000, untied
mfu=$(awk -v t="$tps" 'BEGIN { D = 2048; F = 5632; L = 22; V = 32000; T = 1024;
    N = L * (D * 2048 + 2 * D * 256 + 2048 * D + 3 * D * F) + V * D; f = 8 * N + 16 * L * T * D;
    printf "%.1f%% (%.2f GFLOP/token)", 100 * t * f / 989e12, f / 1e9 }')
echo "train_cu: ${tps} tokens/s, MFU ${mfu}, peak GPU memory ${peak} MiB"
if [ "${BENCH_TORCH:-1}" != 0 ]; then
    PYTHONUNBUFFERED=1 python3 dev/bench_torch.py --steps "$STEPS" --modes "${TORCH_MODES:-eager,compile}" || echo "bench_torch.py failed"
fi

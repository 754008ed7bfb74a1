#!/usr/bin/env bash
# dev/bench_cuda.sh — the GPU benchmark (not a test), on a machine with a GPU:
# train_cu on the tinyllama-1.1b random shape, INT-Asym 2-bit group 128 on the seven linears of
# every layer, its full-precision self as teacher, CAKLD, AdamW, batch 8 x 1024 tokens; then the
# PyTorch + transformers reference of the same step (dev/bench_torch.py, eager and torch.compile)
# unless BENCH_TORCH=0; MATMUL=tf32|fp32 picks train_cu's --matmul (unset: its default, bf16),
# ATTENTION=fused|gemm|flash|cudnn its --attention (unset: its default under bf16, cudnn in a
# train_cu built with cuDNN, doc/gpu.md, else flash);
# TORCH_MODES (eager,compile,eager-ckpt) the reference's modes, eager-ckpt being eager with
# gradient checkpointing, as BitDistiller trains; STE=plain|bitdistiller the quantizer's backward
# of both (unset: train_cu's default, bitdistiller). Each reference's tokens/s is printed with
# train_cu's ratio to it.
# MICRO=4|2|1 splits the batch of 8 into micro-batches of that many sequences (gradient
# accumulation: the same step in less activation memory); LAYERED=1 adds --layered-wq (W^ one
# layer at a time: the same step in less memory); RECOMPUTE=1 adds --recompute (mid, gate and up
# remade in the backward: the same step in less memory, three more matmuls a layer).
# Then (unless BENCH_GEMM=0) the step's products timed alone (dev/bench_gemm_cu.cu: its last line).
# Then (unless BENCH_GEN=0) teacher data generation: train_cu --generate-data on the bench-100m
# shape (random weights, bf16), 32 prompts x 64 new tokens, greedy, one batch, against Hugging
# Face generate on the same shape and prompts (dev/bench_generate.py).
# Prints tokens/s, MFU (FLOPs/token = 8N + 16 L T d, N the matmul parameters with the LM head;
# 989 TFLOP/s dense bf16 peak) and peak GPU memory of each. STEPS (6) training steps, the mean
# tokens/s of the steps after the first. The latest figures: doc/performance.md.
set -u
cd "$(dirname "$0")/.."
STEPS=${STEPS:-6}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
make -s train_cu || exit 1
awk 'BEGIN { srand(1); for (i = 0; i < 200000; i++) print int(rand() * 32000) }' > "$tmp/r.ids"
./train_cu --init tinyllama-1.1b -q int -b 2 -g 128 --loss cakld --gamma-batches 1 --train-tokens "$tmp/r.ids" \
    --steps "$STEPS" --batch 8 --micro-batch "${MICRO:-8}" --seq 1024 --lr 1e-5 ${MATMUL:+--matmul $MATMUL} ${ATTENTION:+--attention $ATTENTION} ${STE:+--ste $STE} $([ "${LAYERED:-0}" = 1 ] && echo --layered-wq) $([ "${RECOMPUTE:-0}" = 1 ] && echo --recompute) | tee "$tmp/cu.out" || exit 1
# steady state: the mean tok/s of the steps after the first
tps=$(sed -n 's/^step .* | \([0-9]*\) tok\/s .*/\1/p' "$tmp/cu.out" | tail -n +2 | awk '{ s += $1; n++ } END { printf "%.0f", s / n }')
peak=$(sed -n 's/^GPU memory: peak \([0-9.]*\) MiB.*/\1/p' "$tmp/cu.out")
# tinyllama-1.1b: D 2048, F 5632, L 22, H 32 x 64, KV 4 x 64, V 32000, untied
mfu=$(awk -v t="$tps" 'BEGIN { D = 2048; F = 5632; L = 22; V = 32000; T = 1024;
    N = L * (D * 2048 + 2 * D * 256 + 2048 * D + 3 * D * F) + V * D; f = 8 * N + 16 * L * T * D;
    printf "%.1f%% (%.2f GFLOP/token)", 100 * t * f / 989e12, f / 1e9 }')
echo "train_cu: ${tps} tokens/s, MFU ${mfu}, peak GPU memory ${peak} MiB"
# where the products' share of the step goes: each kind timed alone (dev/bench_gemm_cu.cu)
if [ "${BENCH_GEMM:-1}" != 0 ]; then
    make -s build/bench_gemm_cu && ./build/bench_gemm_cu | tail -n 1 || echo "bench_gemm_cu failed"
fi
if [ "${BENCH_TORCH:-1}" != 0 ]; then
    PYTHONUNBUFFERED=1 python3 dev/bench_torch.py --steps "$STEPS" --modes "${TORCH_MODES:-eager,compile,eager-ckpt}" \
        --ste "${STE:-bitdistiller}" | tee "$tmp/torch.out" || echo "bench_torch.py failed"
    sed -n 's/^torch \([a-z-]*\): \([0-9]*\) tokens\/s.*/\1 \2/p' "$tmp/torch.out" | while read -r mode t; do
        awk -v c="$tps" -v t="$t" -v m="$mode" 'BEGIN { printf "train_cu / torch %s: %.3f\n", m, c / t }'
    done
fi
if [ "${BENCH_GEN:-1}" != 0 ]; then
    ./run.sh tokenizer "$tmp/byte.tokenizer" || exit 1
    awk 'BEGIN { srand(3); for (i = 0; i < 32; i++) { s = ""; n = 3 + int(rand() * 6)
        for (w = 0; w < n; w++) { s = s (w ? " " : ""); k = 2 + int(rand() * 7); for (c = 0; c < k; c++) s = s sprintf("%c", 97 + int(rand() * 26)) }
        print s } }' > "$tmp/prompts.txt"
    gen=$(./train_cu --matmul bf16 --init bench-100m --seed 2 --tokenizer "$tmp/byte.tokenizer" --generate-data \
        --prompts "text:$tmp/prompts.txt" --n 32 --max-new 64 --gen-batch 32 --temperature 0 -o "$tmp/gen.jsonl" | tail -n 1)
    echo "train_cu --generate-data: $(echo "$gen" | sed 's/.*"new_tokens": \([0-9]*\).*"tokens_per_s": \([0-9.]*\).*/\1 new tokens, \2 new tokens\/s/')"
    python3 dev/bench_generate.py "$tmp/prompts.txt" --max-new 64 || echo "bench_generate.py failed"
fi

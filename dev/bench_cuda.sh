#!/usr/bin/env bash
# dev/bench_cuda.sh — the GPU benchmark of issue 6 (not a test), on a machine with a GPU:
# train_cu on the tinyllama-1.1b random shape, INT-Asym 2-bit group 128 on the seven linears of
# every layer, its full-precision self as teacher, CAKLD, AdamW, batch 8 x 1024 tokens; then the
# PyTorch + transformers reference of the same step (dev/bench_torch.py, eager and torch.compile)
# unless BENCH_TORCH=0; MATMUL=tf32|fp32 picks train_cu's --matmul (unset: its default, bf16),
# ATTENTION=fused|gemm|flash its --attention (unset: its default, flash under bf16);
# TORCH_MODES=eager|compile|eager,compile the reference's modes.
# MICRO=4|2|1 splits the batch of 8 into micro-batches of that many sequences (gradient
# accumulation: the same step in less activation memory); LAYERED=1 adds --layered-wq (W^ one
# layer at a time: the same step in 1.8 GiB less).
# Then (unless BENCH_GEN=0) teacher data generation: train_cu --generate-data on the bench-100m
# shape (random weights, bf16), 32 prompts x 64 new tokens, greedy, one batch, against Hugging
# Face generate on the same shape and prompts (dev/bench_generate.py).
# Prints tokens/s, MFU (FLOPs/token = 8N + 16 L T d, N the matmul parameters with the LM head;
# 989 TFLOP/s dense bf16 peak) and peak GPU memory of each.
#
# Measured on one H200 (nvidia-h200), 2026-12-02 (fifth session), in one run (STEPS=5,
# steady-state steps 2-5; MICRO=4 a minute after it, the same build):
#   train_cu, the defaults         52,264 tok/s   MFU 47.6%   peak 32,579 MiB (cudaMemGetInfo)
#   train_cu, MICRO=4              50,010 tok/s   MFU 45.6%   peak 27,661 MiB
#   torch.compile (per layer)      55,109 tok/s   29.6 GiB allocated, 30.7 reserved
#   PyTorch eager                  30,434 tok/s   42.4 GiB allocated, 44.5 reserved
#   generation: train_cu 4,852 new tokens/s, HF generate 3,161
# Runs of one build differ by a few percent (the same build: 52,118 and 52,264; 53,058 and 52,350
# in the sixth session, when --layered-wq ran at 51,824 and 51,708 and 30,815 MiB in the second
# run, and with MICRO=4 at 47,990 and 25,897 MiB).
# The fourth session: 50,784 tok/s, MICRO=4 48,166 (torch.compile 55,585, eager 30,569 in its
# run; generation 5,077 against HF's 2,650).
# The third session: 49,150 tok/s, MICRO=4 45,315 (torch.compile 55,254, eager 25,642 in its
# run; generation 5,194 against HF's 1,477).
# The second session: 46,646 tok/s (torch.compile 55,323 and eager 29,740 in its run), and
# 46,868-47,507 for its final build.
# The plan of the default run: activations 9,770 MiB, AdamW m, v 8,393, parameters 4,196,
# gradients 4,196, the bf16 teacher 2,098, bf16 weights 1,973, codes 924.
# The first session of 2026-12-02: 38,302 tok/s at 32,783 MiB (torch.compile 53,755 in its run);
# earlier 35,364 at 37,687 MiB (fp32 gate, up, O), 24,029 at 38,983 (PyTorch eager 30,570 then);
# 2026-12-01: 22,218 tok/s at 59,911 MiB.
set -u
cd "$(dirname "$0")/.."
STEPS=${STEPS:-6}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
make -s train_cu || exit 1
awk 'BEGIN { srand(1); for (i = 0; i < 200000; i++) print int(rand() * 32000) }' > "$tmp/r.ids"
./train_cu --init tinyllama-1.1b -q int -b 2 -g 128 --loss cakld --gamma-batches 1 --train-tokens "$tmp/r.ids" \
    --steps "$STEPS" --batch 8 --micro-batch "${MICRO:-8}" --seq 1024 --lr 1e-5 ${MATMUL:+--matmul $MATMUL} ${ATTENTION:+--attention $ATTENTION} $([ "${LAYERED:-0}" = 1 ] && echo --layered-wq) | tee "$tmp/cu.out" || exit 1
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

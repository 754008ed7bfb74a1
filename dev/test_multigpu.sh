#!/usr/bin/env bash
# dev/test_multigpu.sh — `make test_multigpu`, on a machine with 2 or more GPUs: train_cu's data
# parallelism (cuda/zero1.cu) across W processes, one per GPU, started as torchrun starts
# them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; launch() below), against one
# process with the same global batch:
#  1. loss curves of W = 2 (4, 8 where present) against the plain one-GPU run: fp32 pretraining
#     and 2-bit QAT distillation at fp32 tolerances (only the order of the gradient sums differs),
#     --matmul bf16 at bf16's; every rank's result line equal to rank 0's (tokens/s aside);
#  2. ZeRO-1 checkpoints across W: stop after 4 steps at W = 2, resume at W = 2 and at W = 1;
#  3. faults: micro-batches not a multiple of W; a rank that never starts (rank 0 times out with
#     one line, no hang);
#  4. the scaling table: tokens/s of the tinyllama-1.1b bench shape (dev/bench_cuda.sh's step,
#     8 x 1024 tokens a GPU) on 1, 2, 4, 8 GPUs, with the efficiency against W x one GPU.
# Ends with "N passed, M failed"; exit 1 on a failure. BENCH=0 skips the table.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0 passes=0
. dev/test_lib.sh

n_gpus=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU")
if [ "$n_gpus" -lt 2 ]; then echo "skipped: $n_gpus GPU(s) here, data parallelism needs 2 or more"; echo "0 passed, 0 failed"; exit 0; fi
ldd ./train_cu | grep -q libnccl || { echo "skipped: train_cu was built without NCCL"; echo "0 passed, 0 failed"; exit 0; }
export NCCL_NVLS_ENABLE=0  # NVLink multicast stays off on shared machines
Ws=(2); [ "$n_gpus" -ge 4 ] && Ws+=(4); [ "$n_gpus" -ge 8 ] && Ws+=(8)
echo "$n_gpus GPUs; comparing W = ${Ws[*]} against one process"

# launch W PREFIX ARGS...: W processes of ./train_cu ARGS, rank r on GPU r, as torchrun starts
# them; rank r's stdout in PREFIX.rR, stderr in PREFIX.errR. Fails when any rank fails.
launch() {
    local W=$1 prefix=$2 port=$((29500 + RANDOM % 5000)) pids=() r rc=0; shift 2
    for ((r = 0; r < W; r++)); do
        RANK=$r WORLD_SIZE=$W LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port TRAIN_CU_PRINT_ALL_RANKS=1 \
            ./train_cu "$@" > "$prefix.r$r" 2> "$prefix.err$r" &
        pids+=($!)
    done
    for r in "${!pids[@]}"; do wait "${pids[$r]}" || { rc=1; echo "  rank $r: $(tail -n 1 "$prefix.err$r")"; }; done
    return $rc
}
# the result line without tokens/s (which each rank times itself)
result() { tail -n 1 "$1" | sed 's/"tokens_per_s": [0-9.]*//'; }

test_teacher "$tmp" || { bad "the test teacher (./train)"; summary; exit 1; }
T="$tmp/c/train.ids"

# 1. loss curves: W processes against one, global batch 8 = 8 micro-batches of 1
curve() {
    local id=$1 name=$2 tol=$3; shift 3
    ./train_cu "$@" --log "$tmp/$id.w1.jsonl" > "$tmp/$id.w1" || { bad "$name: one process"; return; }
    jlosses "$tmp/$id.w1.jsonl" > "$tmp/$id.l1"
    for W in "${Ws[@]}"; do
        launch "$W" "$tmp/$id.w$W" "$@" --log "$tmp/$id.w$W.jsonl" || { bad "$name: W=$W failed"; continue; }
        jlosses "$tmp/$id.w$W.jsonl" > "$tmp/$id.l$W"
        echo "  $name, W=$W: loss per step, 1 GPU | $W GPUs:"
        paste "$tmp/$id.l1" "$tmp/$id.l$W" | awk '{ printf "    %2d: %s | %s\n", NR, $1, $2 }'
        local e same=1 r
        e=$(maxrel "$tmp/$id.l$W" "$tmp/$id.l1")
        [ "$(wc -l < "$tmp/$id.l$W")" -eq "$(wc -l < "$tmp/$id.l1")" ] && within "$e" "$tol" \
            && ok "$name, W=$W: max relative difference of the loss curves $e (tolerance $tol)" || bad "$name, W=$W: loss curves differ by $e"
        for ((r = 1; r < W; r++)); do [ "$(result "$tmp/$id.w$W.r$r")" = "$(result "$tmp/$id.w$W.r0")" ] || same=0; done
        [ "$same" -eq 1 ] && ok "$name, W=$W: every rank's result line is rank 0's" || bad "$name, W=$W: the ranks' result lines differ"
    done
}
curve pre "fp32 pretraining (cosine, weight decay, clipping)" 1e-4 --init tiny --seed 3 --train-tokens "$T" --steps 10 \
    --batch 8 --micro-batch 1 --seq 128 --lr 3e-3 --schedule cosine --warmup 2 --weight-decay 0.01 --grad-clip 0.5 --matmul fp32
curve qat "2-bit QAT distillation, cakld, lr 1e-5" 1e-3 -m "$tmp/teacher.bin" -q int -b 2 -g 64 --loss cakld \
    --train-tokens "$T" --steps 10 --batch 8 --micro-batch 1 --seq 128 --lr 1e-5 --weight-decay 0.01 --matmul fp32
curve bf "2-bit QAT distillation, --matmul bf16, lr 1e-5" 1e-2 -m "$tmp/teacher.bin" -q int -b 2 -g 64 --loss cakld \
    --train-tokens "$T" --steps 10 --batch 8 --micro-batch 1 --seq 128 --lr 1e-5

# 2. ZeRO-1 checkpoints across world sizes
a=(-m "$tmp/teacher.bin" -q int -b 2 -g 64 --train-tokens "$T" --steps 8 --batch 8 --micro-batch 2 --seq 64 --lr 1e-3 --matmul fp32)
launch 2 "$tmp/z1" "${a[@]}" -o "$tmp/z1.bin" && launch 2 "$tmp/z2" "${a[@]}" -o "$tmp/z2.bin" --stop-after 4 \
    && launch 2 "$tmp/z3" "${a[@]}" -o "$tmp/z3.bin" --resume "$tmp/z2.bin.ckpt" \
    && ./train_cu "${a[@]}" -o "$tmp/z4.bin" --resume "$tmp/z2.bin.ckpt" > "$tmp/z4.r0" || bad "the checkpoint runs"
l1=$(field final_loss < "$tmp/z1.r0"); l3=$(field final_loss < "$tmp/z3.r0"); l4=$(field final_loss < "$tmp/z4.r0")
e=$(rel "$l3" "$l1")
within "$e" 1e-4 && ok "W=2: --stop-after 4, --resume to 8 at W=2: final loss $l3 vs straight $l1 (relative $e)" || bad "W=2 resume: $l3 vs $l1"
e=$(rel "$l4" "$l1")
within "$e" 1e-3 && ok "a W=2 checkpoint resumed by one process: final loss $l4 vs $l1 (relative $e)" || bad "W=2 ckpt at W=1: $l4 vs $l1"

# 3. faults
launch 2 "$tmp/f1" "${a[@]}" --batch 6 --micro-batch 2 > /dev/null
grep -q "^error: .*3 micro-batches a step, not a multiple of the 2 processes" "$tmp/f1.err0" \
    && ok "accum 3 on 2 GPUs: $(cat "$tmp/f1.err0")" || bad "accum not a multiple of W: '$(cat "$tmp/f1.err0")'"
start=$(date +%s)
port=$((35000 + RANDOM % 5000))
out=$(RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 MASTER_PORT=$port TRAIN_CU_RENDEZVOUS_TIMEOUT=5 timeout 60 ./train_cu "${a[@]}" 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] && grep -q "^error: rendezvous: 1 of 2 ranks reached rank 0" <<< "$out" \
    && ok "rank 1 never starts: rank 0 exits 1 after $(( $(date +%s) - start )) s: '$out'" || bad "missing rank: rc $rc, '$out'"

# 4. scaling: dev/bench_cuda.sh's step with 8 x 1024 tokens a GPU (global batch 8 W)
if [ "${BENCH:-1}" != 0 ]; then
    awk 'BEGIN { srand(1); for (i = 0; i < 200000; i++) print int(rand() * 32000) }' > "$tmp/r.ids"
    echo "  scaling, tinyllama-1.1b shape, 2-bit INT g128 QAT, CAKLD, bf16, 8 x 1024 tokens a GPU (mean of steps 2-6):"
    printf '    %4s  %12s  %12s  %10s\n' GPUs tokens/s "per GPU" efficiency
    tps1=
    for W in 1 "${Ws[@]}"; do
        b=(--init tinyllama-1.1b -q int -b 2 -g 128 --loss cakld --gamma-batches 1 --train-tokens "$tmp/r.ids" --steps 6
           --batch $((8 * W)) --micro-batch 8 --seq 1024 --lr 1e-5)
        if [ "$W" = 1 ]; then ./train_cu "${b[@]}" > "$tmp/s1.r0" || { bad "bench, 1 GPU"; continue; }
        else launch "$W" "$tmp/s$W" "${b[@]}" || { bad "bench, $W GPUs"; continue; }; fi
        tps=$(sed -n 's/^step .* | \([0-9]*\) tok\/s .*/\1/p' "$tmp/s$W.r0" | tail -n +2 | awk '{ s += $1; n++ } END { printf "%.0f", s / n }')
        [ -z "$tps1" ] && tps1=$tps
        awk -v W="$W" -v t="$tps" -v t1="$tps1" 'BEGIN { printf "    %4d  %12.0f  %12.0f  %9.1f%%\n", W, t, t / W, 100 * t / (W * t1) }'
    done
fi

summary

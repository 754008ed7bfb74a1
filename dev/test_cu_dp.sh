#!/usr/bin/env bash
# dev/test_cu_dp.sh — part of `make test_cu` (dev/test_cu.sh runs it), on a machine with a GPU:
# data parallelism (cuda/zero1.cu) with one process. WORLD_SIZE=1 RANK=0 takes the whole
# multi-GPU path (the rendezvous, NCCL, micro-batches dealt to ranks, gradients reduce-scattered,
# AdamW on the rank's ZeRO-1 shard, parameters all-gathered, checkpoints gathered and resumed)
# and must give the plain run's losses, -o bytes and checkpoint bytes: bit for bit wherever the
# plain run repeats itself bit for bit (its float atomics may not; then within 1e-5). Runs on the
# tiny teacher of dev/test_lib.sh. Ends with "N passed, M failed"; exit 1 on a failure.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0 passes=0
. dev/test_lib.sh
test_teacher "$tmp" || { bad "the test teacher (./train)"; summary; exit 1; }

dp1() { RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$((29500 + RANDOM % 1000)) ./train_cu "$@"; }
if ! ldd ./train_cu | grep -q libnccl; then
    echo "skipped: train_cu was built without NCCL"
else
    for cfg in "pre|fp32 pretraining, cosine, weight decay, clipping, 4 micro-batches|--init tiny --seed 3 --schedule cosine --warmup 2 --weight-decay 0.01 --grad-clip 0.5 --lr 3e-3" \
               "qat|2-bit QAT distillation from -t, cakld (gamma measured), 4 micro-batches|-m $tmp/teacher.bin -q int -b 2 -g 64 -t $tmp/teacher.bin --loss cakld --lr 1e-3 --weight-decay 0.01"; do
        IFS='|' read -r id name extra <<< "$cfg"
        a6=($extra --train-tokens "$tmp/c/train.ids" --steps 8 --batch 8 --micro-batch 2 --seq 64 --matmul fp32)
        ./train_cu "${a6[@]}" -o "$tmp/$id.p1.bin" --log "$tmp/$id.p1.jsonl" > "$tmp/$id.p1.out" || bad "$name: plain run"
        ./train_cu "${a6[@]}" -o "$tmp/$id.p2.bin" > /dev/null || bad "$name: plain run again"
        dp1 "${a6[@]}" -o "$tmp/$id.d1.bin" --log "$tmp/$id.d1.jsonl" > "$tmp/$id.d1.out" || bad "$name: WORLD_SIZE=1 run"
        [ -n "${OUT:-}" ] && cp "$tmp/$id.p1.out" "$tmp/$id.d1.out" "$OUT/"
        grep -q "^data parallel: 1 process (torchrun's variables)" "$tmp/$id.d1.out" && grep -q "^ZeRO-1: rank 0 of 1" "$tmp/$id.d1.out" \
            && ok "$name: WORLD_SIZE=1 ran through NCCL: $(grep '^data parallel' "$tmp/$id.d1.out")" || bad "$name: no 'data parallel' line"
        jlosses "$tmp/$id.p1.jsonl" > "$tmp/l1"; jlosses "$tmp/$id.d1.jsonl" > "$tmp/l2"
        echo "  $name: loss per step, plain | WORLD_SIZE=1:"
        paste "$tmp/l1" "$tmp/l2" | awk '{ printf "    %2d: %s | %s\n", NR, $1, $2 }'
        e=$(maxrel "$tmp/l2" "$tmp/l1")
        if cmp -s "$tmp/$id.p1.bin" "$tmp/$id.p2.bin" && cmp -s "$tmp/$id.p1.bin.ckpt" "$tmp/$id.p2.bin.ckpt"; then
            cmp -s "$tmp/$id.p1.bin" "$tmp/$id.d1.bin" && cmp -s "$tmp/$id.p1.bin.ckpt" "$tmp/$id.d1.bin.ckpt" \
                && cmp -s "$tmp/l1" "$tmp/l2" \
                && ok "$name: -o and the checkpoint (weights, AdamW m, v) bit for bit the plain run's; loss curves identical" \
                || bad "$name: the plain run repeats bit for bit but WORLD_SIZE=1 differs (-o: $(cmp "$tmp/$id.p1.bin" "$tmp/$id.d1.bin" | head -c 80); losses $e)"
        else
            echo "  (the plain run itself differs between two runs in its last bits: float atomics)"
            within "$e" 1e-5 && ok "$name: loss curves within $e of the plain run's (tolerance 1e-5; not bit for bit since the plain run is not)" \
                || bad "$name: loss curves differ by $e"
        fi
        gp=$(field gamma < "$tmp/$id.p1.out"); gd=$(field gamma < "$tmp/$id.d1.out")
        [ "$id" = pre ] || { [ "$gp" = "$gd" ] && ok "$name: gamma $gd, the plain run's" || bad "$name: gamma $gp vs $gd"; }
    done
    # ZeRO-1 checkpoints: stop after 4, resume to 8 (the moments gathered, written, scattered again)
    a7=(-m "$tmp/teacher.bin" -q int -b 2 -g 64 --train-tokens "$tmp/c/train.ids" --steps 8 --batch 8 --micro-batch 2 --seq 64 --lr 1e-3 --matmul fp32)
    l1=$(dp1 "${a7[@]}" -o "$tmp/z1.bin" | field final_loss)
    dp1 "${a7[@]}" -o "$tmp/z2.bin" --stop-after 4 > /dev/null
    cp "$tmp/z2.bin.ckpt" "$tmp/z4.ckpt"  # the step-4 checkpoint (the resumed run writes over z2.bin.ckpt)
    l2=$(dp1 "${a7[@]}" -o "$tmp/z2.bin" --resume "$tmp/z2.bin.ckpt" | field final_loss)
    e=$(rel "$l2" "$l1")
    within "$e" 1e-4 && ok "WORLD_SIZE=1: --stop-after 4 then --resume to 8: final loss $l2 vs straight $l1 (relative $e)" || bad "ZeRO resume $l2 vs $l1"
    l3=$(./train_cu "${a7[@]}" -o "$tmp/z3.bin" --resume "$tmp/z4.ckpt" | field final_loss)
    e=$(rel "$l3" "$l1")
    within "$e" 1e-4 && ok "a ZeRO-1 checkpoint resumed by a plain run: final loss $l3 vs $l1 (relative $e)" || bad "ZeRO ckpt, plain resume: $l3 vs $l1"
fi

summary

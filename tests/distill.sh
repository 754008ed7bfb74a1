#!/usr/bin/env bash
# Distillation (QAT with a teacher) through the command line, on a small teacher trained here:
#  - self-distillation with CAKLD: gamma measured in (0, 1], the loss falls, the 2-bit student
#    beats round-to-nearest; every loss of loss.h runs and stays finite;
#  - resume: N steps straight == k steps, stop (--stop-after), --resume to N, bit for bit, model
#    and checkpoint (kill -9 at random moments, full disks and more: tests/faults.sh);
#  - bad input: a teacher with another vocabulary, a checkpoint of another model or batch, a NaN
#    loss (stops with a clear line, the last checkpoint intact).
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
. dev/test_lib.sh

test_teacher "$tmp" || bad "teacher training"
head -n 6400 "$tmp/c/valid.ids" > "$tmp/v.ids"
ev() { ./train -m "$1" --eval-ppl "$tmp/v.ids" -T 128 --eval-batch 8 "${@:2}" | field ppl; }
rtn=$(ev "$tmp/teacher.bin" -q int -b 2 -g 64)

# self-distillation, CAKLD
./train -m "$tmp/teacher.bin" -q int -b 2 -g 64 --train-tokens "$tmp/c/train.ids" --steps 40 --batch 8 --micro-batch 4 \
    --seq 128 --lr 1e-3 --log "$tmp/kd.jsonl" -o "$tmp/kd.bin" > "$tmp/kd.out" || bad "distillation run"
g=$(field gamma < "$tmp/kd.out")
awk -v g="$g" 'BEGIN { exit !(g > 0 && g <= 1) }' && ok "gamma measured on real tokens: $g" || bad "gamma $g"
first=$(head -n 1 "$tmp/kd.jsonl" | field loss); last=$(tail -n 5 "$tmp/kd.jsonl" | awk -F'"loss": ' '{ split($2, a, ","); s += a[1] } END { print s / NR }')
awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < f / 3) }' && ok "distillation loss falls ($first -> mean of the last 5: $last)" || bad "loss $first -> $last"
kd=$(ev "$tmp/kd.bin")
awk -v k="$kd" -v r="$rtn" 'BEGIN { exit !(k < r) }' && ok "2-bit student ppl $kd < RTN $rtn" || bad "student $kd vs RTN $rtn"
grep -q '"gamma": ' "$tmp/kd.jsonl" && ok "the JSONL log records gamma" || bad "gamma not logged"
./train -m "$tmp/teacher.bin" -q int -b 2 -g 64 --train-tokens "$tmp/c/train.ids" --steps 1 --batch 2 --micro-batch 2 --seq 64 \
    --gamma 0.25 | grep -q 'gamma 0.2500 (given)' && ok "--gamma fixes gamma" || bad "--gamma"
for loss in ce fkl rkl cakld_ce wasserstein; do
    out=$(./train -m "$tmp/teacher.bin" -q ternary --train-tokens "$tmp/c/train.ids" --steps 3 --batch 2 --micro-batch 2 \
          --seq 64 --lr 1e-3 --loss "$loss" | tail -n 1)
    l=$(field final_loss <<< "$out")
    awk -v l="$l" 'BEGIN { exit !(l == l + 0 && l > 0 && l < 1e6) }' && ok "--loss $loss runs (loss $l)" || bad "--loss $loss: $out"
done

# resume, bit for bit
common=(-m "$tmp/teacher.bin" -q int -b 2 -g 64 --train-tokens "$tmp/c/train.ids" --steps 12 --batch 4 --micro-batch 2 --seq 64 --lr 1e-3 --save-every 1)
./train "${common[@]}" -o "$tmp/straight.bin" > /dev/null
./train "${common[@]}" -o "$tmp/part.bin" --stop-after 5 > /dev/null
./train "${common[@]}" -o "$tmp/resumed.bin" --resume "$tmp/part.bin.ckpt" > "$tmp/resumed.out"
grep -q 'resumed from .* at step 5' "$tmp/resumed.out" && cmp -s "$tmp/straight.bin" "$tmp/resumed.bin" && cmp -s "$tmp/straight.bin.ckpt" "$tmp/resumed.bin.ckpt" \
    && ok "12 steps straight == 5 steps, stop, resume to 12 (model and checkpoint bit-identical)" || bad "resume after --stop-after differs"
# bad input
./train --init tiny --vocab 300 -o "$tmp/big.bin" > /dev/null
expect_error "teacher vocabulary differs" "teacher's vocabulary (300) differs from the student's (256)" \
    ./train -m "$tmp/teacher.bin" -t "$tmp/big.bin" -q int -b 2 -g 64 --train-tokens "$tmp/c/train.ids" --steps 1
./train --init tiny --seed 5 -o "$tmp/other.bin" > /dev/null
expect_error "checkpoint of another quantizer" "a checkpoint of another model or quantizer" \
    ./train -m "$tmp/teacher.bin" -q int -b 3 -g 64 --train-tokens "$tmp/c/train.ids" --steps 12 --batch 4 --micro-batch 2 --seq 64 --resume "$tmp/part.bin.ckpt"
expect_error "checkpoint with another batch" "saved with --batch 4 --micro-batch 2 --seq 64" \
    ./train -m "$tmp/teacher.bin" -q int -b 2 -g 64 --train-tokens "$tmp/c/train.ids" --steps 12 --batch 8 --micro-batch 2 --seq 64 --resume "$tmp/part.bin.ckpt"
expect_error "not a checkpoint" "not a checkpoint" \
    ./train "${common[@]}" --resume "$tmp/teacher.bin"
cp "$tmp/part.bin.ckpt" "$tmp/nan.ckpt"
./train "${common[@]}" --ckpt "$tmp/nan.ckpt" --resume "$tmp/part.bin.ckpt" --inject-nan 8 > /dev/null 2> "$tmp/stderr"
rc=$?
[ $rc -eq 1 ] && grep -q "^error: step 8: the loss is nan; stopping; the checkpoint .*nan.ckpt of step 7 is intact" "$tmp/stderr" \
    && ok "a NaN loss stops the run: $(cat "$tmp/stderr")" || bad "NaN loss: exit $rc, $(cat "$tmp/stderr")"
./train "${common[@]}" --resume "$tmp/nan.ckpt" -o "$tmp/from_nan.bin" > "$tmp/from_nan.out" 2>&1 \
    && grep -q 'resumed from .* at step 7' "$tmp/from_nan.out" && cmp -s "$tmp/from_nan.bin" "$tmp/straight.bin" \
    && ok "the checkpoint of step 7 is intact: resuming from it reproduces the straight run" || bad "checkpoint after NaN: $(tail -n 2 "$tmp/from_nan.out")"
./train "${common[@]}" --resume "$tmp/part.bin.ckpt" --lr 1e30 --grad-clip 0 --ckpt "$tmp/div.ckpt" > /dev/null 2> "$tmp/stderr"
grep -q "^error: step [0-9]*: \(a weight became NaN or Inf\|the loss is\)" "$tmp/stderr" \
    && ok "a diverging run stops naming the step: $(cat "$tmp/stderr")" || bad "divergence: $(cat "$tmp/stderr")"

echo "distill: $fails failure(s)"
[ $fails -eq 0 ]

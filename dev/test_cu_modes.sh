#!/usr/bin/env bash
# dev/test_cu_modes.sh — part of `make test_cu` (dev/test_cu.sh runs it; it also runs alone, on a
# machine with a GPU): the modes of ./train that train_cu runs through train.c's own host code,
# against ./train, on the tests' tiny teacher (dev/test_lib.sh) and the demo's byte tokenizer:
#  - --data (JSONL examples written here from the demo corpus, all three line forms): loss curves
#    and the held-out eval_loss at every --eval-every (its last batch a partial one) within the
#    tolerances of dev/test_cu.sh, for distillation from -t, 2-bit QAT with --mask-prompt, plain
#    cross-entropy, and --matmul bf16; the "data:" lines, steps from --epochs, gamma, the JSON
#    keys; resume across an epoch boundary; and --train-tokens through the same Batches;
#  - --layered-wq: the same run as without it, bit for bit;
#  - --clip: the same clipped model as ./train, byte for byte (train.c's search, on the host);
#  - --export-packed and --histogram: the same bytes as ./train for the same model, given or
#    just trained on the GPU;
#  - --bench: ./train's JSON keys, and a measurement on the bench-100m shape.
# Prints each comparison with its error; ends with "N passed, M failed"; exit 1 on a failure.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0 passes=0
. dev/test_lib.sh
jcol() { sed -n "s/.*\"$2\": \([0-9.e+-]*\).*/\1/p" "$1"; }  # one key of every JSONL line that has it
keys() { tail -n 1 "$1" | grep -o '"[a-z_]*":' | tr -d '\n'; }
json_part() { tail -n 1 "$1" | grep -o "\"$2\": {[^}]*}"; }

# curve ID "WHAT" TOL ARGS...: ./train and ./train_cu --matmul fp32 (or $cu_matmul) on the same
# ARGS: the loss of every step and the held-out loss wherever logged (the JSONL logs, 6 digits)
curve() {
    local id=$1 name=$2 tol=$3; shift 3
    ./train "$@" --log "$tmp/$id.cpu.jsonl" > "$tmp/$id.cpu" || bad "$name: ./train failed"
    ./train_cu --matmul "${cu_matmul:-fp32}" "$@" --log "$tmp/$id.gpu.jsonl" > "$tmp/$id.gpu" || bad "$name: ./train_cu failed"
    [ -n "${OUT:-}" ] && cp "$tmp/$id.cpu" "$tmp/$id.gpu" "$OUT/"
    local what n1 n2 e
    for what in loss eval_loss; do
        jcol "$tmp/$id.cpu.jsonl" "$what" > "$tmp/l1"; jcol "$tmp/$id.gpu.jsonl" "$what" > "$tmp/l2"
        n1=$(wc -l < "$tmp/l1"); n2=$(wc -l < "$tmp/l2")
        [ "$what" = eval_loss ] && [ "$n1" -eq 0 ] && [ "$n2" -eq 0 ] && continue
        echo "  $name: $what, train | train_cu:"
        paste "$tmp/l1" "$tmp/l2" | awk '{ printf "    %2d: %s | %s\n", NR, $1, $2 }'
        [ "$n1" -gt 0 ] && [ "$n1" -eq "$n2" ] || { bad "$name: $what in $n1 vs $n2 log lines"; continue; }
        e=$(maxrel "$tmp/l2" "$tmp/l1")
        within "$e" "$tol" && ok "$name: $what ($n1 values), max relative difference $e (tolerance $tol)" \
            || bad "$name: $what differs by $e"
    done
}

echo "== --data, --clip, --export-packed, --histogram, --bench against ./train"
test_teacher "$tmp" || bad "teacher training (./train)"
./run.sh tokenizer "$tmp/teacher.bin.tokenizer"
tok=(--tokenizer "$tmp/teacher.bin.tokenizer")
# 110 examples -> 22 held out (the last eval batch of 4 holds 2) + 88 training: 11 steps of 8 per epoch
awk 'NR > 110 { exit }
     { i = index($0, " "); j = index(substr($0, i + 1), " "); p = substr($0, 1, i + j); r = substr($0, i + j + 1)
       if (NR % 3 == 0) printf "[[\"%s\", \"%s\"]]\n", p, r
       else if (NR % 3 == 1) printf "{\"prompt\": \"%s\", \"response\": \"%s\"}\n", p, r
       else printf "{\"text\": \"%s\"}\n", $0 }' "$tmp/c/corpus.txt" > "$tmp/d.jsonl"
data=(--data "$tmp/d.jsonl" --batch 8 --micro-batch 4 --seq 64)

curve dkd "--data: fp32 distillation from -t, cakld, 2 epochs, --eval-every 5" 1e-4 --init tiny --seed 4 "${tok[@]}" \
    -t "$tmp/teacher.bin" --loss cakld "${data[@]}" --epochs 2 --lr 1e-3 --eval-every 5
[ "$(grep '^data:' "$tmp/dkd.cpu")" = "$(grep '^data:' "$tmp/dkd.gpu")" ] && grep -q '^data: 2 epochs of 88 examples in batches of 8: 22 steps' "$tmp/dkd.gpu" \
    && ok "--data: train's data lines (110 -> 88 + 22 held out; 2 epochs = 22 steps)" || bad "data lines: $(grep '^data:' "$tmp/dkd.gpu" | tr '\n' ' ')"
[ "$(keys "$tmp/dkd.cpu")" = "$(keys "$tmp/dkd.gpu")" ] && ok "--data: the JSON result line has train's keys: $(keys "$tmp/dkd.gpu")" \
    || bad "--data JSON keys: $(keys "$tmp/dkd.cpu") vs $(keys "$tmp/dkd.gpu")"
gc=$(field gamma < "$tmp/dkd.cpu"); gg=$(field gamma < "$tmp/dkd.gpu"); e=$(rel "$gg" "$gc")
within "$e" 1e-5 && ok "--data: gamma measured on the examples: train $gc, train_cu $gg (relative $e)" || bad "--data gamma $gc vs $gg"
ec=$(field eval_loss < "$tmp/dkd.cpu"); eg=$(field eval_loss < "$tmp/dkd.gpu"); e=$(rel "$eg" "$ec")
within "$e" 1e-4 && ok "--data: eval_loss of the JSON line: train $ec, train_cu $eg (relative $e)" || bad "--data eval_loss $ec vs $eg"
curve dqat "--data: 2-bit QAT self-distillation, --mask-prompt, lr 1e-5" 1e-3 -m "$tmp/teacher.bin" -q int -b 2 -g 64 \
    "${data[@]}" --epochs 1 --lr 1e-5 --mask-prompt --eval-every 4
curve dce "--data: full-precision cross-entropy training (mean over tokens), the held-out loss at the end" 1e-4 \
    --init tiny --seed 5 "${tok[@]}" "${data[@]}" --epochs 1 --lr 3e-3
# bf16 against fp32: the first step's loss (equal weights: the forward's numerics alone) within
# 2.5e-2; then the curve within 5e-2. The rounding of the bf16 teacher's and student's activations
# and gradients (act_bf16, as autocast keeps them) moves AdamW's normalised updates, and a 2-bit
# student's codes flip on small differences, so the two runs part as training goes on. Over three
# runs on H200s with different inputs: the first step within 6.1e-3, the steps' losses within
# 2.2e-2, eval_loss after 11 steps within 4.2e-2; on an H100 with another machine's corpus (awk's
# rand differs between awks) the first step differed by 1.43e-2.
cu_matmul=bf16 curve dbf "--data: 2-bit QAT, --matmul bf16 (bf16 teacher), lr 1e-5" 5e-2 -m "$tmp/teacher.bin" -q int -b 2 -g 64 \
    "${data[@]}" --epochs 1 --lr 1e-5 --eval-every 5
e=$(rel "$(jcol "$tmp/dbf.gpu.jsonl" loss | head -n 1)" "$(jcol "$tmp/dbf.cpu.jsonl" loss | head -n 1)")
within "$e" 2.5e-2 && ok "--data: 2-bit QAT, --matmul bf16: the first step's loss (equal weights) within $e of fp32's" \
    || bad "--data bf16 QAT: the first step's loss differs by $e"
curve tok "--train-tokens through the same Batches: 2-bit QAT, lr 1e-5, 10 steps" 1e-3 -m "$tmp/teacher.bin" -q int -b 2 -g 64 \
    --train-tokens "$tmp/c/train.ids" --steps 10 --batch 8 --micro-batch 4 --seq 128 --lr 1e-5

# resume on --data across the epoch boundary (11 steps an epoch: stop after 8, resume to 14), at
# lr 1e-5 as the curves above: the GPU's sums in atomics differ in their last bits from run to
# run, and at lr 1e-3 a 2-bit student can turn that into another trajectory once a code flips
# (at lr 1e-3 the final losses can come 7% apart).
rs=(-m "$tmp/teacher.bin" -q int -b 2 -g 64 "${data[@]}" --steps 14 --lr 1e-5 --eval-every 7 --matmul fp32)
./train_cu "${rs[@]}" -o "$tmp/r1.bin" > "$tmp/r1.out"
./train_cu "${rs[@]}" -o "$tmp/r2.bin" --stop-after 8 > /dev/null
./train_cu "${rs[@]}" -o "$tmp/r2.bin" --resume "$tmp/r2.bin.ckpt" > "$tmp/r2.out"
l1=$(field final_loss < "$tmp/r1.out"); l2=$(field final_loss < "$tmp/r2.out"); e=$(rel "$l2" "$l1")
e1=$(field eval_loss < "$tmp/r1.out"); e2=$(field eval_loss < "$tmp/r2.out"); ee=$(rel "$e2" "$e1")
grep -q 'resumed from .* at step 8' "$tmp/r2.out" && within "$e" 1e-4 && within "$ee" 1e-4 \
    && ok "--data: --stop-after 8, --resume to 14 across the epoch boundary: final loss $l2 vs $l1 ($e), eval_loss $e2 vs $e1 ($ee)" \
    || bad "--data resume: loss $l2 vs $l1, eval_loss $e2 vs $e1"

# --layered-wq: W^ made one layer at a time from the codes (micro-batches of 4 in batches of 8, so
# each layer's W^ is remade four times a step), the same run bit for bit: -o, its checkpoint, and
# every step's loss and flip rate; under bf16 and fp32 matmuls, with a teacher (-t) and without
for mm in bf16 fp32; do
    lw=(-m "$tmp/teacher.bin" -q int -b 2 -g 64 "${data[@]}" --steps 4 --lr 1e-3 --matmul $mm)
    [ $mm = bf16 ] && lw+=(-t "$tmp/teacher.bin")
    ./train_cu "${lw[@]}" -o "$tmp/lw1.bin" --log "$tmp/lw1.jsonl" > "$tmp/lw1.out" || bad "--layered-wq $mm: the plain run failed"
    ./train_cu "${lw[@]}" --layered-wq -o "$tmp/lw2.bin" --log "$tmp/lw2.jsonl" > "$tmp/lw2.out" || bad "--layered-wq $mm: failed"
    for k in loss flip_rate; do jcol "$tmp/lw1.jsonl" $k; done > "$tmp/lw1.col"
    for k in loss flip_rate; do jcol "$tmp/lw2.jsonl" $k; done > "$tmp/lw2.col"
    cmp -s "$tmp/lw1.bin" "$tmp/lw2.bin" && cmp -s "$tmp/lw1.bin.ckpt" "$tmp/lw2.bin.ckpt" && cmp -s "$tmp/lw1.col" "$tmp/lw2.col" \
        && [ "$(wc -l < "$tmp/lw1.col")" -eq 8 ] && grep -q 'W^, one layer' "$tmp/lw2.out" && ! grep -q 'W^, one layer' "$tmp/lw1.out" \
        && ok "--layered-wq, --matmul $mm: -o, checkpoint, 4 steps' losses and flip rates identical to the plain run" \
        || bad "--layered-wq, --matmul $mm: differs from the plain run ($(cmp "$tmp/lw1.bin" "$tmp/lw2.bin" 2>&1 | head -n 1); $(paste -s -d ' ' "$tmp/lw2.col"))"
done

# --clip: train.c's clip_model on the host, so the same bytes
cl=(-m "$tmp/teacher.bin" --clip -q int -b 2 -g 64 --calib "$tmp/c/train.ids" --calib-seqs 4 --calib-len 128)
./train "${cl[@]}" -o "$tmp/clip1.bin" > "$tmp/clip1.out" || bad "--clip (./train)"
./train_cu "${cl[@]}" -o "$tmp/clip2.bin" > "$tmp/clip2.out" || bad "--clip (./train_cu)"
cmp -s "$tmp/clip1.bin" "$tmp/clip2.bin" && [ "$(json_part "$tmp/clip1.out" clip)" = "$(json_part "$tmp/clip2.out" clip)" ] \
    && grep -q '^clip: on the CPU' "$tmp/clip2.out" \
    && ok "--clip: the same clipped model as ./train ($(stat -c %s "$tmp/clip2.bin") bytes identical), $(json_part "$tmp/clip2.out" clip)" \
    || bad "--clip: models differ ($(cmp "$tmp/clip1.bin" "$tmp/clip2.bin" 2>&1 | head -n 1)) or JSON $(json_part "$tmp/clip2.out" clip)"

# --export-packed and --histogram of the same model: given (int, and sign with its learned
# scales), and right after a QAT run on the GPU (packed by train_cu, and by ./train from its -o)
for q in "int -b 2 -g 64" "sign" "nf3 -g 64"; do
    ./train -m "$tmp/teacher.bin" -q $q --export-packed "$tmp/p1.qbin" --histogram 1 --histogram-out "$tmp/h1" > "$tmp/p1.out" || bad "-q $q: ./train"
    ./train_cu -m "$tmp/teacher.bin" -q $q --export-packed "$tmp/p2.qbin" --histogram 1 --histogram-out "$tmp/h2" > "$tmp/p2.out" || bad "-q $q: ./train_cu"
    cmp -s "$tmp/p1.qbin" "$tmp/p2.qbin" && cmp -s "$tmp/h1.csv" "$tmp/h2.csv" && cmp -s "$tmp/h1.svg" "$tmp/h2.svg" \
        && [ "$(json_part "$tmp/p1.out" packed)" = "$(json_part "$tmp/p2.out" packed | sed 's/p2.qbin/p1.qbin/')" ] \
        && ok "-q $q: --export-packed ($(stat -c %s "$tmp/p2.qbin") bytes) and --histogram (CSV, SVG) identical to ./train's" \
        || bad "-q $q: packed or histogram files differ"
done
ex=(-m "$tmp/teacher.bin" -q int -b 2 -g 64 "${data[@]}" --steps 5 --lr 1e-3)
./train_cu "${ex[@]}" -o "$tmp/g.bin" --export-packed "$tmp/g.qbin" --histogram 0 --histogram-out "$tmp/hg" > "$tmp/g.out" \
    && ./train -m "$tmp/g.bin" --export-packed "$tmp/g2.qbin" --histogram 0 --histogram-out "$tmp/hg2" > /dev/null || bad "QAT + --export-packed"
cmp -s "$tmp/g.qbin" "$tmp/g2.qbin" && cmp -s "$tmp/hg.csv" "$tmp/hg2.csv" && [ -s "$tmp/g.bin.tokenizer" ] \
    && ok "after 5 QAT steps on the GPU: train_cu's --export-packed and --histogram equal ./train's of its -o model; the tokenizer beside -o" \
    || bad "after QAT: packed or histogram differ from ./train's of the same model"

# --bench
./train --init tiny --bench --steps 1 --micro-batch 4 --seq 128 > "$tmp/b1.out" || bad "--bench (./train)"
./train_cu --init tiny --bench --steps 3 --micro-batch 4 --seq 128 > "$tmp/b2.out" || bad "--bench (./train_cu)"
bk() { json_part "$1" bench | grep -o '"[a-z_]*":' | tr -d '\n'; }
tps=$(json_part "$tmp/b2.out" bench | sed 's/.*"tokens_per_s": \([0-9.]*\).*/\1/')
[ -n "$(bk "$tmp/b1.out")" ] && [ "$(bk "$tmp/b1.out")" = "$(bk "$tmp/b2.out")" ] && awk -v t="$tps" 'BEGIN { exit !(t > 0) }' \
    && ok "--bench: train's keys, $(json_part "$tmp/b2.out" bench)" || bad "--bench: $(tail -n 1 "$tmp/b2.out")"
for mm in bf16 tf32; do
    ./train_cu --matmul $mm --init bench-100m --bench --steps 5 --micro-batch 8 --seq 1024 > "$tmp/b.$mm.out" || bad "--bench bench-100m --matmul $mm"
    echo "  measured: $(grep '^bench:' "$tmp/b.$mm.out")"
done

echo
summary

#!/usr/bin/env bash
# `./train -m MODEL -b 2`: the pipeline's five stages on the tiny shape (a model without a
# tokenizer, so the teacher's data-free generation writes {"ids": [...]} lines and --data reads
# them), at small sizes. Checks: the default names and every stage's output; the held-out
# perplexity against --eval-ppl on the same tokens and agreement 1 against itself; a second run
# skips every stage and rewrites the same results.json; a QAT stage stopped by --stop-after
# resumes from its checkpoint to the bit-identical student of an uninterrupted run; ternary
# skips clipping; ids-only data errors. Then stories260K (../shared/data) when present.
# TRAIN=./train_cu runs the pipeline through the GPU build (and checks that train_cu's own flags
# reach every stage); STORIES=FILE names stories260K.bin.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
train=${TRAIN:-./train}
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }

./train --init tiny --seed 1 -o "$tmp/tiny.bin" > /dev/null || { echo "cannot make the tiny model"; exit 1; }
small=(--n 15 --max-new 20 --gen-batch 8 --epochs 1 --batch 4 --micro-batch 4 --lr 1e-3 --calib-seqs 4 --clip-tokens 64 --threads 1)

# 1. a fresh run with the default names
"$train" -m "$tmp/tiny.bin" -b 2 -g 32 "${small[@]}" > "$tmp/log1" 2>&1 || { tail -n 20 "$tmp/log1"; bad "the pipeline failed"; }
run=$tmp/tiny.int2-g32.run
for f in tiny.int2-g32.bin tiny.int2-g32.run/{generated.jsonl,calib.ids,clipped.bin,train.jsonl,loss.svg,results.json,eval_fp.json,eval_rtn.json,eval_clip.json,eval_qat.json}; do
    [ -s "$tmp/$f" ] || bad "missing output $f"
done
[ -s "$tmp/tiny.int2-g32.bin" ] && ok "default names: tiny.int2-g32.bin and tiny.int2-g32.run/ beside the model"
n=$(grep -c '^{"ids": \[[0-9]' "$run/generated.jsonl")
[ "$n" -eq 15 ] && ok "data-free generation: 15 {\"ids\"} lines (no tokenizer)" || bad "generated.jsonl has $n ids lines"
grep -q '^data: 12 training and 3 held-out examples' "$tmp/log1" && ok "QAT trains on the generated data (12 + 3 held out)" || bad "no QAT data line"
grep -q '^generate: data-free.*estimated at most' "$tmp/log1" && ok "generation prints its estimated time first" || bad "no estimate line"
grep -q '<polyline' "$run/loss.svg" && grep -q '</svg>' "$run/loss.svg" && ok "loss.svg holds the curve" || bad "loss.svg"
grep -q '^| QAT (CAKLD)' "$tmp/log1" && ok "the table is printed" || bad "no table"
json=$(tail -n 1 "$tmp/log1")
grep -q '^{"student": ".*tiny.int2-g32.bin", "run": .*"fp": {"ppl": [0-9.]*, "agree": 1.000000}, "rtn": {.*"clip": {.*"qat": {"ppl": [0-9.]*.*"flip_rate_final": [0-9.]*' <<< "$json" \
    && ok "final JSON line: $(cut -c1-90 <<< "${json#*\"fp\"}")..." || bad "final JSON: $json"

# 2. the held-out evaluation against --eval-ppl: the held-out fifth of a 5-example file is its
#    first example; one window of its length gives the same positions and targets
ids=$(head -n 1 "$run/generated.jsonl" | sed 's/.*\[\(.*\)\].*/\1/')
len=$(tr ',' '\n' <<< "$ids" | wc -l)
head -n 5 "$run/generated.jsonl" > "$tmp/five.jsonl"
tr ',' '\n' <<< "$ids" | tr -d ' ' > "$tmp/first.ids"
a=$(./train -m "$tmp/tiny.bin" -q int -b 2 -g 32 --eval-heldout "$tmp/five.jsonl" --seq "$len" | tail -n 1 | sed 's/.*"ppl": \([0-9.]*\).*/\1/')
b=$(./train -m "$tmp/tiny.bin" -q int -b 2 -g 32 --eval-ppl "$tmp/first.ids" -T "$len" | tail -n 1 | sed 's/.*"ppl": \([0-9.]*\).*/\1/')
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-4 * b) }' \
    && ok "held-out ppl $a = --eval-ppl's $b on the same $len tokens" || bad "held-out ppl $a, --eval-ppl $b"
ag=$(./train -m "$tmp/tiny.bin" -t "$tmp/tiny.bin" --eval-heldout "$run/generated.jsonl" | tail -n 1 | sed 's/.*"agree": \([0-9.]*\).*/\1/')
[ "$ag" = 1.000000 ] && ok "a model agrees with itself as teacher: $ag" || bad "self-agreement $ag"
rtn=$(sed 's/.*"agree": \([0-9.]*\).*/\1/' "$run/eval_rtn.json")
awk -v r="$rtn" 'BEGIN { exit !(r < 1) }' && ok "round-to-nearest agrees less: $rtn" || bad "RTN agreement $rtn"

# 3. a second run skips every stage and rewrites the same results
cp "$run/results.json" "$tmp/results1.json"
"$train" -m "$tmp/tiny.bin" -b 2 -g 32 "${small[@]}" > "$tmp/log2" 2>&1 || bad "the second run failed"
n=$(grep -c 'exists, skipped' "$tmp/log2")
[ "$n" -eq 8 ] && ok "a second run skips all 8 stage outputs" || bad "second run skipped $n: $(grep '^==' "$tmp/log2" | tr '\n' ' ')"
cmp -s "$run/results.json" "$tmp/results1.json" && ok "results.json is rewritten the same" || bad "results.json changed"

# 4. QAT stopped after step 2, then resumed: the student of an uninterrupted run, bit for bit
mkdir -p "$tmp/r" "$tmp/u"
more=(--n 25 --epochs 2)  # 20 training examples, 2 epochs, batches of 4: 10 steps
"$train" -m "$tmp/tiny.bin" -b 2 -g 32 "${small[@]}" "${more[@]}" --save-every 2 -o "$tmp/u/st.bin" > "$tmp/logu" 2>&1 || bad "the uninterrupted run failed"
"$train" -m "$tmp/tiny.bin" -b 2 -g 32 "${small[@]}" "${more[@]}" --save-every 2 --stop-after 3 -o "$tmp/r/st.bin" > "$tmp/logr1" 2>&1 || bad "the stopped run failed"
[ ! -e "$tmp/r/st.bin" ] && [ -s "$tmp/r/st.run/qat.ckpt" ] && ok "stopped after step 3: a checkpoint, no student yet" || bad "after --stop-after: $(ls "$tmp/r" "$tmp/r/st.run" | tr '\n' ' ')"
"$train" -m "$tmp/tiny.bin" -b 2 -g 32 "${small[@]}" "${more[@]}" --save-every 2 -o "$tmp/r/st.bin" > "$tmp/logr2" 2>&1 || bad "the resumed run failed"
grep -q '^resumed from .*qat.ckpt at step 3' "$tmp/logr2" && ok "the second run resumes QAT at step 3" || bad "no resume line: $(grep -m1 resum "$tmp/logr2")"
grep -q 'generated.jsonl exists, skipped' "$tmp/logr2" && ok "and skips the finished stages" || bad "stages rerun"
cmp -s "$tmp/r/st.bin" "$tmp/u/st.bin" && ok "the resumed student equals the uninterrupted one, bit for bit" || bad "the resumed student differs"

# 5. ternary: no clipping stage, its own default names
"$train" -m "$tmp/tiny.bin" -q ternary "${small[@]}" > "$tmp/logt" 2>&1 || { tail -n 20 "$tmp/logt"; bad "the ternary pipeline failed"; }
grep -q '^== 2/5 clipping: -q ternary has no per-group range to clip, skipped' "$tmp/logt" && [ -s "$tmp/tiny.ternary.bin" ] \
    && [ ! -e "$tmp/tiny.ternary.run/eval_clip.json" ] && ok "ternary: clipping skipped, tiny.ternary.bin" || bad "ternary run"

# 6. ids-only data: errors name the line
printf '{"ids": [1, 2, 300]}\n' > "$tmp/bad.jsonl"
"$train" -m "$tmp/tiny.bin" --data "$tmp/bad.jsonl" --steps 1 > /dev/null 2> "$tmp/err" && bad "an id beyond the vocabulary was accepted"
grep -q 'bad.jsonl:1: "ids" item 3 is not a token id in \[0, 256)' "$tmp/err" && ok "an id beyond the vocabulary: $(cat "$tmp/err")" || bad "error: $(cat "$tmp/err")"
printf '{"text": "hello"}\n' > "$tmp/text.jsonl"
"$train" -m "$tmp/tiny.bin" --data "$tmp/text.jsonl" --steps 1 > /dev/null 2> "$tmp/err" && bad "text without a tokenizer was accepted"
grep -q "text.jsonl:1: a text example needs the model's tokenizer" "$tmp/err" && ok "text data without a tokenizer is refused by line" || bad "error: $(cat "$tmp/err")"

# 7. through train_cu, its own flags (train.c's parser never sees them) reach every stage
if [ "$(basename "$train")" = train_cu ]; then
    mkdir "$tmp/g" && cp "$tmp/tiny.bin" "$tmp/g/"
    # given twice, a flag reaches the stages once, with its later value
    "$train" -m "$tmp/g/tiny.bin" -b 2 -g 32 "${small[@]}" --recompute --attention fused --loss-chunk 32 --recompute \
        --attention flash --loss-chunk 64 > "$tmp/logg" 2>&1 || { tail -n 20 "$tmp/logg"; bad "the pipeline with train_cu's flags failed"; }
    n=$(grep -c '^\$ ' "$tmp/logg"); k=$(grep '^\$ ' "$tmp/logg" | grep -c -- '--recompute --attention flash --loss-chunk 64')
    [ "$n" -ge 4 ] && [ "$k" -eq "$n" ] && ok "train_cu's --recompute --attention flash --loss-chunk 64 reach all $n stages" \
        || bad "train_cu's flags reach $k of $n stages"
fi

# 8. the real model, stories260K (llama2.c, no tokenizer), 2-bit per row, at a small size
S=${STORIES:-../shared/data/stories260K/stories260K.bin}
if [ -f "$S" ]; then
    ./convert --from-llama2c "$S" "$tmp/s.bin" > /dev/null
    "$train" -m "$tmp/s.bin" -b 2 -g -1 --n 20 --max-new 40 --gen-batch 10 --epochs 1 --batch 4 --micro-batch 4 --lr 1e-3 \
        --calib-seqs 4 --clip-tokens 64 --threads 1 > "$tmp/logs" 2>&1 || { tail -n 20 "$tmp/logs"; bad "stories260K pipeline failed"; }
    head -n 1 "$tmp/s.int2-row.run/generated.jsonl" | grep -q '^{"ids": \[1, ' && ok "stories260K: sequences start at BOS (id 1)" || bad "stories260K data"
    r=$(sed 's/.*"rtn": {"ppl": \([0-9.]*\).*/\1/' "$tmp/s.int2-row.run/results.json")
    q=$(sed 's/.*"qat": {"ppl": \([0-9.]*\).*/\1/' "$tmp/s.int2-row.run/results.json")
    awk -v r="$r" -v q="$q" 'BEGIN { exit !(q < r) }' && ok "stories260K 2-bit: QAT ppl $q < RTN's $r" || bad "stories260K: QAT $q, RTN $r"
else
    echo "  skipped: $S is absent (../shared/data)"
fi
[ $fails -eq 0 ]

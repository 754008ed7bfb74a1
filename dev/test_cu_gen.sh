#!/usr/bin/env bash
# dev/test_cu_gen.sh — part of `make test_cu` (dev/test_cu.sh runs it), on a machine with a GPU:
# train_cu's generation and zero-shot evaluation against ./train, on the tests' small teacher
# (dev/test_lib.sh) with the demo's byte-level tokenizer:
#  - --generate, greedy: the same text as ./train (--matmul fp32: the same logits up to
#    summation order, so the same argmax at every step); under bf16 a continuation of full length;
#  - --generate-data at temperature 0: the same JSONL bytes as ./train; sampled: a valid file of
#    the right count, ./train's RNG (lines equal to ./train's are counted, not required);
#  - --eval-qa on the five tasks' fixtures, and on the first 200 real PIQA items with the Llama-2
#    tokenizer where $SHARED_DATA (../shared/data) has them: ./train's per-task JSON exactly with
#    fp32 matmuls; with bf16 the accuracies close to fp32's;
#  - (not a test) generation tokens/s of ./train and ./train_cu on a random bench-100m model.
# Prints each comparison; ends with "N passed, M failed"; exit 1 on a failure.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
. dev/test_lib.sh
passes=0 fails=0
qa_json() { tail -n 1 | sed 's/.*\("qa": {.*}\)}$/\1/'; }

test_teacher "$tmp" || bad "the test teacher (./train)"
./run.sh tokenizer "$tmp/byte.tokenizer"
m=(-m "$tmp/teacher.bin" --tokenizer "$tmp/byte.tokenizer")

echo "== --generate"
for p in "Tim saw a" "The big dog"; do
    c=$(./train "${m[@]}" --generate "$p" -n 60 --temperature 0 | tail -n 1)
    g=$(./train_cu --matmul fp32 "${m[@]}" --generate "$p" -n 60 --temperature 0 | tail -n 1)
    [ -n "$c" ] && [ "$c" = "$g" ] && ok "greedy \"$p\", 60 tokens: train_cu's JSON line = train's: $g" || bad "greedy \"$p\": train $c, train_cu $g"
done
g=$(./train_cu --matmul bf16 "${m[@]}" --generate "Tim saw a" -n 60 --temperature 0 | tail -n 1)
grep -q '"new_tokens": 60}$' <<< "$g" && ok "greedy under --matmul bf16: $g" || bad "greedy bf16: $g"

echo "== --generate-data"
awk 'NR % 7 == 0 && n++ < 600 { print $1, $2, $3 }' "$tmp/c/corpus.txt" > "$tmp/prompts.txt"
gen=("${m[@]}" --generate-data --prompts "text:$tmp/prompts.txt" --n 48 --max-new 80 --gen-batch 16 --seed 5)
./train "${gen[@]}" --temperature 0 -o "$tmp/g0.cpu.jsonl" > "$tmp/g0.cpu" || bad "--generate-data (./train)"
./train_cu --matmul fp32 "${gen[@]}" --temperature 0 -o "$tmp/g0.gpu.jsonl" > "$tmp/g0.gpu" || bad "--generate-data (./train_cu)"
cmp -s "$tmp/g0.cpu.jsonl" "$tmp/g0.gpu.jsonl" && [ "$(wc -l < "$tmp/g0.gpu.jsonl")" -eq 48 ] \
    && ok "temperature 0: train_cu's JSONL = train's ($(wc -c < "$tmp/g0.gpu.jsonl") bytes, 48 lines)" \
    || bad "temperature 0: the JSONL files differ ($(cmp "$tmp/g0.cpu.jsonl" "$tmp/g0.gpu.jsonl" 2>&1 | head -n 1))"
keys() { tail -n 1 "$1" | grep -o '"[a-z_]*":' | tr -d '\n'; }
[ "$(keys "$tmp/g0.cpu")" = "$(keys "$tmp/g0.gpu")" ] && ok "the JSON result line has train's keys: $(keys "$tmp/g0.gpu")" \
    || bad "JSON keys: $(keys "$tmp/g0.cpu") vs $(keys "$tmp/g0.gpu")"
./train "${gen[@]}" --temperature 0.7 -o "$tmp/g7.cpu.jsonl" > /dev/null || bad "sampled --generate-data (./train)"
./train_cu --matmul fp32 "${gen[@]}" --temperature 0.7 -o "$tmp/g7.gpu.jsonl" > "$tmp/g7.gpu" || bad "sampled --generate-data (./train_cu)"
n=$(grep -c '^\[\["[A-Z][a-z]* [a-z]* [a-z]*", ".*"\]\]$' "$tmp/g7.gpu.jsonl"); same=$(paste -d '\n' "$tmp/g7.cpu.jsonl" "$tmp/g7.gpu.jsonl" | uniq -d | wc -l)
[ "$n" -eq 48 ] && grep -q '"new_tokens": 3840,' "$tmp/g7.gpu" \
    && ok "temperature 0.7: 48 [[prompt, response]] lines, 3840 new tokens; $same of 48 lines equal to train's" \
    || bad "temperature 0.7: $n valid lines; $(tail -n 1 "$tmp/g7.gpu")"
./train_cu --matmul bf16 "${gen[@]}" --temperature 0.7 -o "$tmp/g7.bf.jsonl" > /dev/null \
    && [ "$(grep -c '^\[\[".*", ".*"\]\]$' "$tmp/g7.bf.jsonl")" -eq 48 ] && ok "--matmul bf16, temperature 0.7: 48 lines" \
    || bad "--matmul bf16 --generate-data"

echo "== --eval-qa"
qa=("${m[@]}" --eval-qa piqa,hellaswag,winogrande,arc_easy,arc_challenge --data tests/fixtures/eval)
c=$(./train "${qa[@]}" --qa-no-bos | qa_json); g=$(./train_cu --matmul fp32 "${qa[@]}" --qa-no-bos | qa_json)
[ -n "$c" ] && [ "$c" = "$g" ] && ok "--qa-no-bos: train_cu's \"qa\" JSON = train's" || bad "--qa-no-bos: train $c, train_cu $g"
c=$(./train "${qa[@]}" | qa_json); g=$(./train_cu --matmul fp32 "${qa[@]}" | qa_json)
[ -n "$c" ] && [ "$c" = "$g" ] && ok "the five tasks' fixtures: train_cu's \"qa\" JSON = train's: $g" || bad "fixtures: train $c, train_cu $g"
accs() { grep -o '"acc[_a-z]*": [0-9.]*' | grep -v stderr | sed 's/.*: //'; }  # acc and acc_norm of each task
maxdiff() { paste <(accs <<< "$1") <(accs <<< "$2") | awk 'BEGIN { m = -1 } NF == 2 { d = $1 - $2; d = d < 0 ? -d : d; if (d > m) m = d } END { printf "%.4f", m }'; }
b=$(./train_cu --matmul bf16 "${qa[@]}" | qa_json)
e=$(awk -v a="$(sed 's/.*"avg": \([0-9.]*\).*/\1/' <<< "$b")" -v b="$(sed 's/.*"avg": \([0-9.]*\).*/\1/' <<< "$g")" \
    'BEGIN { if (a !~ /^[0-9]/ || b !~ /^[0-9]/) { print "nan"; exit } d = a - b; printf "%.4f", d < 0 ? -d : d }')
awk -v e="$e" 'BEGIN { exit !(e ~ /^[0-9]/ && e <= 0.15) }' && ok "fixtures --matmul bf16: average acc within $e of fp32's (at most 0.15; 19 items)" \
    || bad "fixtures bf16: $b vs $g"
# real PIQA through the real Llama-2 tokenizer (vocab 32,000), on a random tiny model of that
# vocabulary: the byte-level teacher's context (256) is too short for PIQA's longer solutions
SHARED=${SHARED_DATA:-../shared/data}
if [ -s "$SHARED/piqa/valid.jsonl" ] && [ -s "$SHARED/llama2-tokenizer/tokenizer.model" ]; then
    pq=(--init tiny --vocab 32000 --seed 3 --tokenizer "$SHARED/llama2-tokenizer/tokenizer.model" --eval-qa piqa --data "$SHARED" --limit 200)
    c=$(./train "${pq[@]}" | qa_json); g=$(./train_cu --matmul fp32 "${pq[@]}" | qa_json)
    [ -n "$c" ] && [ "$c" = "$g" ] && ok "real PIQA, 200 items, vocab 32000: train_cu's JSON = train's: $g" || bad "PIQA: train $c, train_cu $g"
    b=$(./train_cu --matmul bf16 "${pq[@]}" | qa_json)
    e=$(maxdiff "$b" "$g")
    awk -v e="$e" 'BEGIN { exit !(e >= 0 && e <= 0.1) }' && ok "real PIQA --matmul bf16: acc, acc_norm within $e of fp32's (at most 0.1): $b" \
        || bad "PIQA bf16: $b vs $g"
else
    echo "  skipped: real PIQA ($SHARED/piqa/valid.jsonl or $SHARED/llama2-tokenizer/tokenizer.model absent)"
fi

echo "== generation speed (not a test): bench-100m random weights, 32 prompts x 64 new tokens, greedy"
sp=(--init bench-100m --seed 2 --tokenizer "$tmp/byte.tokenizer" --generate-data --prompts "text:$tmp/prompts.txt" --n 32
    --max-new 64 --gen-batch 32 --temperature 0)
tc=$(./train "${sp[@]}" -o "$tmp/s.cpu.jsonl" | field tokens_per_s)
tg=$(./train_cu --matmul bf16 "${sp[@]}" -o "$tmp/s.gpu.jsonl" | field tokens_per_s)
tf=$(./train_cu --matmul fp32 "${sp[@]}" -o "$tmp/s.fp32.jsonl" | field tokens_per_s)
echo "  new tokens/s: train $tc | train_cu bf16 $tg | train_cu fp32 $tf"

echo
summary

#!/usr/bin/env bash
# The distillation run on JSONL data, as BitDistiller trains (--data), and the teacher's own
# generated data (--generate-data, --generate), through the command line, on a small teacher
# trained here with the demo's byte-level tokenizer:
#  - generation: a mix of prompt sources with counts, the same seed gives the same bytes, a
#    greedy --generate continues its text;
#  - QAT on the generated data: BitDistiller's split, steps from --epochs, the held-out loss
#    logged and falling, the 2-bit student beats round-to-nearest, --mask-prompt and
#    --gamma-include-pad change what they should;
#  - resume across an epoch boundary, bit for bit;
#  - bad input: each gives one line "error: ..." and exit status 1.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
. dev/test_lib.sh

test_teacher "$tmp" || bad "teacher training"
./run.sh tokenizer "$tmp/teacher.bin.tokenizer"
head -n 6400 "$tmp/c/valid.ids" > "$tmp/v.ids"
ev() { ./train -m "$1" --eval-ppl "$tmp/v.ids" -T 128 --eval-batch 8 "${@:2}" | field ppl; }

# generation
awk 'NR % 5 == 0 && n++ < 100 { print $1, $2, $3 }' "$tmp/c/corpus.txt" > "$tmp/p1.txt"
awk 'NR % 5 == 1 && n++ < 100 { print $1, $2 }' "$tmp/c/corpus.txt" > "$tmp/p2.txt"
gen=(-m "$tmp/teacher.bin" --generate-data --prompts "text:$tmp/p1.txt=40,text:$tmp/p2.txt" --n 80 --max-new 100 --gen-batch 16)
./train "${gen[@]}" -o "$tmp/gen.jsonl" > "$tmp/gen.out" || bad "--generate-data"
./train "${gen[@]}" -o "$tmp/gen2.jsonl" > /dev/null
./train "${gen[@]}" --seed 7 -o "$tmp/gen3.jsonl" > /dev/null
grep -q "prompts: text:$tmp/p1.txt: 40 of 100" "$tmp/gen.out" && grep -q "prompts: text:$tmp/p2.txt: 40 of 100" "$tmp/gen.out" \
    && [ "$(wc -l < "$tmp/gen.jsonl")" -eq 80 ] && ok "a mix of two sources: 40 explicit + 40 shared of --n 80, 80 lines" \
    || bad "mix: $(grep '^prompts' "$tmp/gen.out" | tr '\n' ' ') $(wc -l < "$tmp/gen.jsonl") lines"
cmp -s "$tmp/gen.jsonl" "$tmp/gen2.jsonl" && ! cmp -s "$tmp/gen.jsonl" "$tmp/gen3.jsonl" \
    && ok "the same seed gives the same bytes, another seed other text" || bad "generation is not a function of the seed"
grep -q '"new_tokens": 8000' "$tmp/gen.out" && ok "every response runs to --max-new (no EOS in a byte tokenizer)" || bad "$(tail -n 1 "$tmp/gen.out")"
g1=$(./train -m "$tmp/teacher.bin" --generate "Tim saw a" -n 40 --temperature 0 | tail -n 1)
g2=$(./train -m "$tmp/teacher.bin" --generate "Tim saw a" -n 40 --temperature 0 | tail -n 1)
[ "$g1" = "$g2" ] && grep -q '"generated": ".*", "new_tokens": 40' <<< "$g1" && ok "--generate, greedy: $g1" || bad "--generate: $g1 / $g2"

# QAT on the generated data
common=(-m "$tmp/teacher.bin" -q int -b 2 -g 64 --data "$tmp/gen.jsonl" --batch 8 --micro-batch 4 --seq 128 --lr 1e-3)
./train "${common[@]}" --epochs 3 --eval-every 5 --log "$tmp/kd.jsonl" -o "$tmp/kd.bin" > "$tmp/kd.out" || bad "QAT on --data"
grep -q '^data: 64 training and 16 held-out examples' "$tmp/kd.out" && grep -q '^data: 3 epochs of 64 examples in batches of 8: 24 steps' "$tmp/kd.out" \
    && ok "BitDistiller's split (80 -> 64 + 16) and 3 epochs = 24 steps" || bad "split/steps: $(grep '^data' "$tmp/kd.out" | tr '\n' ' ')"
e_first=$(grep -m 1 eval_loss "$tmp/kd.jsonl" | sed 's/.*"eval_loss": \([0-9.e+-]*\).*/\1/')
e_last=$(field eval_loss < "$tmp/kd.out")
n_eval=$(grep -c eval_loss "$tmp/kd.jsonl")
[ "$n_eval" -eq 5 ] && awk -v f="$e_first" -v l="$e_last" 'BEGIN { exit !(l < f) }' \
    && ok "held-out loss every 5 steps and at the end (5 times), falling: $e_first -> $e_last" || bad "eval loss: $n_eval times, $e_first -> $e_last"
rtn=$(ev "$tmp/teacher.bin" -q int -b 2 -g 64); kd=$(ev "$tmp/kd.bin")
awk -v k="$kd" -v r="$rtn" 'BEGIN { exit !(k < r) }' && ok "2-bit student on generated data: ppl $kd < RTN $rtn" || bad "student $kd vs RTN $rtn"
[ -s "$tmp/kd.bin.tokenizer" ] && ok "the tokenizer is written beside -o" || bad "no kd.bin.tokenizer"
one=(-m "$tmp/teacher.bin" -q int -b 2 -g 64 --data "$tmp/gen.jsonl" --batch 4 --micro-batch 4 --seq 128 --steps 1 --lr 0)
full=$(./train "${one[@]}" --gamma 0.5 | field final_loss); masked=$(./train "${one[@]}" --gamma 0.5 --mask-prompt | field final_loss)
awk -v m="$masked" -v f="$full" 'BEGIN { exit !(m < f && m > 0) }' && ok "--mask-prompt drops the prompt positions from the loss ($full -> $masked)" || bad "mask-prompt $f -> $m"
real=$(./train "${one[@]}" | field gamma); pad=$(./train "${one[@]}" --gamma-include-pad | field gamma)
awk -v r="$real" -v p="$pad" 'BEGIN { exit !(r > 0 && r <= 1 && p > 0 && p <= 1 && r != p) }' \
    && ok "gamma on real tokens $real, padding included $pad" || bad "gamma $real / $pad"

# BitNet b1.58 with 8-bit activations: the student file carries --act-bits, and beats ternary RTN
./train -m "$tmp/teacher.bin" -q ternary --act-bits 8 --data "$tmp/gen.jsonl" --epochs 2 --batch 8 --micro-batch 4 --seq 128 \
    --lr 1e-3 -o "$tmp/a8.bin" > "$tmp/a8.out" || bad "QAT with --act-bits 8"
a8=$(ev "$tmp/a8.bin"); t_rtn=$(ev "$tmp/teacher.bin" -q ternary); t_rtn8=$(ev "$tmp/teacher.bin" -q ternary --act-bits 8)
grep -q '^activations: the inputs of the 7 linears quantized to 8 bits' "$tmp/a8.out" \
    && [ "$(ev "$tmp/a8.bin" --act-bits 8)" = "$a8" ] && [ "$t_rtn8" != "$t_rtn" ] \
    && awk -v q="$a8" -v r="$t_rtn8" 'BEGIN { exit !(q < r) }' \
    && ok "ternary + 8-bit activations: RTN ppl $t_rtn8 (weights only $t_rtn) -> QAT $a8, the file keeps --act-bits" \
    || bad "act8: QAT $a8, RTN $t_rtn8 / $t_rtn"

# resume across an epoch boundary (64 examples = 16 steps of 4 per epoch; stop at 10, resume to 22)
rs=(-m "$tmp/teacher.bin" -q int -b 2 -g 64 --data "$tmp/gen.jsonl" --steps 22 --batch 4 --micro-batch 2 --seq 128 --lr 1e-3 --save-every 1)
./train "${rs[@]}" -o "$tmp/straight.bin" > /dev/null
./train "${rs[@]}" -o "$tmp/part.bin" --stop-after 10 > /dev/null
./train "${rs[@]}" -o "$tmp/resumed.bin" --resume "$tmp/part.bin.ckpt" > "$tmp/resumed.out"
grep -q 'resumed from .* at step 10' "$tmp/resumed.out" && cmp -s "$tmp/straight.bin" "$tmp/resumed.bin" \
    && cmp -s "$tmp/straight.bin.ckpt" "$tmp/resumed.bin.ckpt" \
    && ok "22 steps straight == 10, stop, resume to 22 across the epoch boundary (bit-identical)" || bad "resume on --data differs"

# bad input
printf '[["a", "b"]]\n{"prompt": "x"\n' > "$tmp/broken.jsonl"
printf '[["a", "b"]]\n{"prompt": "x"}\n' > "$tmp/nofield.jsonl"
: > "$tmp/empty.jsonl"
cp "$tmp/teacher.bin" "$tmp/notok.bin"
expect_error "a line that is not JSON" "broken.jsonl:2: not valid JSON" ./train "${common[@]/$tmp\/gen.jsonl/$tmp/broken.jsonl}"
expect_error "a missing field" "nofield.jsonl:2: has \"prompt\" but lacks \"response\"" ./train "${common[@]/$tmp\/gen.jsonl/$tmp/nofield.jsonl}"
expect_error "an empty data file" "empty.jsonl: empty file" ./train "${common[@]/$tmp\/gen.jsonl/$tmp/empty.jsonl}"
expect_error "JSONL without a tokenizer" "needs the model's tokenizer" ./train -m "$tmp/notok.bin" -q int -b 2 -g 64 --data "$tmp/gen.jsonl" --steps 1
expect_error "two data sources" "give one training data source" ./train "${common[@]}" --train-tokens "$tmp/v.ids"
expect_error "--mask-prompt without --data" "--mask-prompt needs --data" ./train -m "$tmp/teacher.bin" --train-tokens "$tmp/v.ids" --mask-prompt
expect_error "--eval-qa with a data file" "reads its task files from a folder" ./train -m "$tmp/teacher.bin" --eval-qa piqa --data "$tmp/gen.jsonl"
expect_error "--generate-data without -o" "--generate-data needs -o OUT.jsonl" ./train -m "$tmp/teacher.bin" --generate-data
expect_error "--prompts without --generate-data" "--prompts is for --generate-data" ./train -m "$tmp/teacher.bin" --prompts "text:$tmp/p1.txt" -o "$tmp/x.jsonl"
expect_error "an unknown prompt source" "unknown prompt source 'books'" ./train -m "$tmp/teacher.bin" --generate-data --prompts "books:$tmp/p1.txt" -o "$tmp/x.jsonl"
expect_error "--act-bits 4" "--act-bits: 0 or 8" ./train -m "$tmp/teacher.bin" -q ternary --act-bits 4
[ -e "$tmp/x.jsonl" ] && bad "a failed --generate-data left $tmp/x.jsonl" || ok "no output left by failed runs"
[ $fails -eq 0 ]

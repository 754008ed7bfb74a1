#!/usr/bin/env bash
# The README's first command: ./run.sh runs the built-in demo with no download. Here with fewer
# steps, prompts and epochs. Checked: the pretrained teacher beats the random model's held-out
# perplexity by far; the corpus is the one every machine makes; the teacher's generated data is
# well-formed JSONL; every row of the table is present; the 2-bit and ternary QAT students beat round-to-nearest of the same width.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }

OUT="$tmp/demo" DEMO_STEPS=150 DEMO_PROMPTS=160 DEMO_EPOCHS=3 ./run.sh > "$tmp/log" 2>&1 \
    || { cat "$tmp/log"; echo "FAIL: run.sh exited non-zero"; exit 1; }
json=$(tail -n 1 "$tmp/log")
echo "demo result: $json"
num() { sed "s/.*\"$1\": \([0-9.e+-]*\).*/\1/"; }          # the number after "KEY":
obj() { sed "s/.*\"$1\": {\([^}]*\)}.*/\1/" <<< "$json"; }  # the inside of "KEY": {...}
rp=$(num random <<< "$json") fp=$(num fp <<< "$json")
r2=$(obj rtn | num 2) q2=$(obj qat | num 2) rt=$(obj rtn | num ternary) qt=$(obj qat | num ternary)
# the corpus comes from run.sh's own generator, not awk's rand, so every machine makes this one
# (a change to its grammar changes the sum here too)
sum=$(md5sum < "$tmp/demo/train.ids" | cut -c1-32)
[ "$sum" = 6c0aaaf56af231216c26c0459def0893 ] && ok "the demo corpus is the same on every machine (train.ids md5 $sum)" \
    || bad "the demo corpus's train.ids has md5 $sum, not 6c0aaaf56af231216c26c0459def0893"
[ -s "$tmp/demo/teacher.bin" ] && ok "teacher.bin written" || bad "no teacher.bin"
awk -v r="$rp" -v f="$fp" 'BEGIN { exit !(r > 200 && f < r / 20) }' && ok "random ppl $rp -> teacher ppl $fp" || bad "random ppl $rp, teacher ppl $fp"
n=$(wc -l < "$tmp/demo/generated.jsonl")
[ "$n" -eq 160 ] && grep -c '^\[\["[A-Z][a-z]* [a-z]* [a-z]*", ".*"\]\]$' "$tmp/demo/generated.jsonl" | grep -qx 160 \
    && ok "the teacher wrote 160 [[prompt, response]] lines" || bad "generated.jsonl: $n lines: $(head -n 1 "$tmp/demo/generated.jsonl")"
grep -q '"eval_loss": ' "$tmp/demo/qat_2.jsonl" && ok "QAT logs the held-out loss" || bad "no eval_loss in qat_2.jsonl"
for row in 'random init' 'FP teacher' 'INT-Asym g64     | 3' 'INT-Asym g64     | 2' 'INT-Asym g64     | 1' 'ternary'; do
    grep -q "^| $row" "$tmp/log" || bad "table row '$row' missing"
done
awk -v q="$q2" -v r="$r2" 'BEGIN { exit !(q < r) }' && ok "2-bit: QAT ppl $q2 < RTN $r2" || bad "2-bit: QAT $q2 vs RTN $r2"
awk -v q="$qt" -v r="$rt" 'BEGIN { exit !(q < r) }' && ok "ternary: QAT ppl $qt < RTN $rt" || bad "ternary: QAT $qt vs RTN $rt"
[ $fails -eq 0 ] || { grep -v '^step' "$tmp/log" | tail -n 40; exit 1; }

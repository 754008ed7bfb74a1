#!/usr/bin/env bash
# Text files through the model's tokenizer:
#  - --eval-ppl on a text file equals --eval-ppl on the ids ./tokenize makes of it (with BOS);
#  - the tokenizer is found beside the model (MODEL.tokenizer), as ./convert leaves it;
#  - convert copies HF_DIR/tokenizer.json beside its output;
#  - a tokenizer larger than the model's vocabulary, and text without any tokenizer: clear errors.
# Uses the small Llama-3-style BPE of tests/fixtures/tokenizer (2,256 tokens).
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }
tokf=tests/fixtures/tokenizer/bpe_tokenizer.json
ppl() { tail -n 1 | sed 's/.*"ppl": \([0-9.e+-]*\).*"windows": \([0-9]*\).*/\1 \2/'; }

for i in $(seq 1 40); do echo "The quick brown fox $i jumps over the lazy dog; numbers 12 345 and café."; done > "$tmp/text.txt"
./train --init tiny --vocab 2304 -o "$tmp/m.bin" > /dev/null
a=$(./train -m "$tmp/m.bin" --tokenizer "$tokf" --eval-ppl "$tmp/text.txt" -T 32 | ppl)
./tokenize -f "$tmp/text.txt" "$tokf" | tr -d '[],' > "$tmp/text.ids"
b=$(./train -m "$tmp/m.bin" --eval-ppl "$tmp/text.ids" -T 32 | ppl)
[ -n "$a" ] && [ "$a" = "$b" ] && ok "text ppl = ppl of ./tokenize's ids (ppl, windows: $a)" || bad "text $a vs ids $b"
cp "$tokf" "$tmp/m.bin.tokenizer"
c=$(./train -m "$tmp/m.bin" --eval-ppl "$tmp/text.txt" -T 32 | ppl)
[ "$a" = "$c" ] && ok "MODEL.tokenizer beside the model is used" || bad "sibling tokenizer: $c"

# convert copies the folder's tokenizer.json beside its output
./convert --to-hf "$tmp/m.bin" "$tmp/hf" > /dev/null && cp "$tokf" "$tmp/hf/tokenizer.json"
./convert "$tmp/hf" "$tmp/n.bin" > "$tmp/conv.out" && cmp -s "$tmp/n.bin.tokenizer" "$tokf" \
    && ok "convert writes OUT.tokenizer from HF_DIR/tokenizer.json" || bad "convert tokenizer copy: $(cat "$tmp/conv.out")"

# errors
./train --init tiny -o "$tmp/small.bin" > /dev/null
./train -m "$tmp/small.bin" --tokenizer "$tokf" --eval-ppl "$tmp/text.txt" > /dev/null 2> "$tmp/err"
[ $? -eq 1 ] && grep -q "^error: .*bpe_tokenizer.json: the tokenizer has 2256 tokens, the model's vocabulary only 256" "$tmp/err" \
    && ok "tokenizer larger than the vocabulary: $(cat "$tmp/err")" || bad "vocab check: $(cat "$tmp/err")"
./train -m "$tmp/small.bin" --eval-ppl "$tmp/text.txt" > /dev/null 2> "$tmp/err"
[ $? -eq 1 ] && grep -q "^error: .*text.txt: a text file needs the model's tokenizer" "$tmp/err" \
    && ok "text without a tokenizer: $(cat "$tmp/err")" || bad "no tokenizer: $(cat "$tmp/err")"
mkdir -p "$tmp/hf2" && cp "$tmp/hf/config.json" "$tmp/hf/model.safetensors" "$tmp/hf2/" && printf '{"model": ' > "$tmp/hf2/tokenizer.json"
./convert "$tmp/hf2" "$tmp/o.bin" > /dev/null 2> "$tmp/err"
[ $? -eq 1 ] && [ ! -e "$tmp/o.bin" ] && [ ! -e "$tmp/o.bin.tokenizer" ] \
    && ok "a broken tokenizer.json stops convert before anything is written: $(cat "$tmp/err")" || bad "broken tokenizer: $(cat "$tmp/err")"

echo "text: $fails failure(s)"
[ $fails -eq 0 ]

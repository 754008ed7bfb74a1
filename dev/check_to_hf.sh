#!/usr/bin/env bash
# dev/check_to_hf.sh — on the GPU machine: build, export several models with ./convert --to-hf,
# and check with dev/check_to_hf.py that transformers loads each and agrees with train.c's
# perplexity (classic config.json; tied/untied; F32/BF16; Llama-3 RoPE scaling; head_dim != D/H;
# stories260K when ../shared/data is there).
set -eu
cd "$(dirname "$0")/.."
make -s convert train
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cc -O1 -o "$tmp/fx" dev/hf_fixture.c -lm
fails=0
check() {  # NAME BIN VOCAB T
    local name=$1 bin=$2 vocab=$3 T=$4
    ./convert --to-hf "$bin" "$tmp/$name.hf" > /dev/null
    seq 0 $((8 * T - 1)) | awk -v v="$vocab" '{ print ($1 * 7919 + int($1 / 3)) % v }' > "$tmp/$name.ids"
    local ppl
    ppl=$(./train -m "$bin" --eval-ppl "$tmp/$name.ids" -T "$T" | tail -n 1 | sed 's/.*"ppl": *\([0-9.e+-]*\).*/\1/')
    python3 dev/check_to_hf.py "$tmp/$name.hf" "$tmp/$name.ids" "$T" "$ppl" || fails=$((fails + 1))
}
./train --init tiny -o "$tmp/tiny.bin" > /dev/null
check tiny_f32_tied "$tmp/tiny.bin" 256 64
for v in "untied_llama3:--rope llama3" "bf16_tied_hd16:--dtype BF16 --tied 1 --head-dim 16" "v5_untied:--form v5 --seed 5"; do
    name=${v%%:*}; opts=${v#*:}
    "$tmp/fx" "$tmp/$name" $opts
    ./convert "$tmp/$name" "$tmp/$name.bin" > /dev/null
    check "$name" "$tmp/$name.bin" 72 32
done
stories=${STORIES:-../shared/data/stories260K/stories260K.bin}
if [ -f "$stories" ]; then
    ./convert --from-llama2c "$stories" "$tmp/s.bin" > /dev/null
    check stories260K "$tmp/s.bin" 512 128
fi
echo "check_to_hf: $fails failed"
[ $fails -eq 0 ]

#!/usr/bin/env bash
# ./convert --to-gguf: students of the tiny demo shape (2-bit INT-Asym g64 and ternary after a
# few QAT steps -> Q4_0, full precision -> F32, 4-bit -> Q5_0, sign -> Q4_1, nf4 -> Q8_0,
# --type f16), a ternary bf16 model with rows of 256 and Llama-3 RoPE scaling (-> TQ2_0, BF16,
# rope_freqs, untied output), and models with the Llama-2 and Llama-3 tokenizers are exported,
# read back with the `gguf` package (llama.cpp's reader and dequantizer) and compared by
# tests/check_gguf.py with --to-hf's dump of W^, config.json and the tokenizer files.
# Skips when python3 or the gguf package is missing.
set -u
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "skipped: no python3"; exit 0; }
python3 -c 'import gguf' 2>/dev/null || { echo "skipped: the gguf Python package is not installed (pip install gguf)"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }

# export M.bin, dump its W^ with --to-hf, compare; $2: the linear type the export must choose
check() {
    local m=$1 want=$2; shift 2
    ./convert --to-gguf "$tmp/$m.bin" "$tmp/$m.gguf" "$@" > "$tmp/$m.log" 2>&1 || { cat "$tmp/$m.log"; bad "$m: convert --to-gguf failed"; return; }
    grep -q "\"linear_type\": \"$want\"" "$tmp/$m.log" && ok "$m: linears exported as $want" \
        || { tail -n 3 "$tmp/$m.log"; bad "$m: linears not exported as $want"; }
    ./convert --to-hf "$tmp/$m.bin" "$tmp/$m.hf" > /dev/null || { bad "$m: --to-hf failed"; return; }
    local opt=()
    [ -f "$tmp/$m.bin.tokenizer" ] && opt=(--spm "$tmp/$m.bin.tokenizer")
    [ -n "${TIKTOKEN:-}" ] && opt=(--tiktoken "$TIKTOKEN")
    grep -q '"linear_exact": false' "$tmp/$m.log" && opt+=(--rounded)
    python3 tests/check_gguf.py "$tmp/$m.gguf" "$tmp/$m.hf" "${opt[@]}" > "$tmp/$m.check" 2>&1 \
        && ok "$m: $(grep -c '^  ok' "$tmp/$m.check") checks against W^, config.json and the vocabulary" \
        || { cat "$tmp/$m.check"; bad "$m: check_gguf.py"; }
    grep -E '^  ok    (attn_q|ffn_down) ' "$tmp/$m.check" | sed "s/^  ok  /    $m:/"
}

# the tiny demo shape: random, and 2-bit and ternary students after a few QAT steps
awk 'BEGIN { srand(7); for (i = 0; i < 4000; i++) printf "%d ", int(rand() * 256); print "" }' > "$tmp/train.ids"
./train --init tiny -o "$tmp/fp.bin" > /dev/null || bad "train --init tiny"
qat() { ./train -m "$tmp/fp.bin" "$@" --train-tokens "$tmp/train.ids" --steps 3 --seq 32 --batch 2 --micro-batch 2 --lr 1e-3 > /dev/null; }
qat -q int -b 2 -g 64 -o "$tmp/int2.bin" || bad "QAT int2"
qat -q ternary -o "$tmp/ternary.bin" || bad "QAT ternary"
check fp F32
check int2 Q4_0
check ternary Q4_0
# round-to-nearest students of the other quantizers: exact (int4), rounded into the nearest type
for spec in "int4:-q int -b 4 -g 32:Q5_0" "sign:-q sign:Q4_1" "nf4:-q nf4 -g 64:Q8_0"; do
    IFS=: read -r m args want <<< "$spec"
    ./train -m "$tmp/fp.bin" $args --clip-init "$tmp/fp.bin" -o "$tmp/$m.bin" > /dev/null || bad "train $args"
    check "$m" "$want"
done
cp "$tmp/int2.bin" "$tmp/int2f16.bin"
check int2f16 F16 --type f16

# ternary with 256-wide rows -> TQ2_0; bf16 storage; Llama-3 RoPE; untied LM head (model.h's format)
python3 tests/make_wide_model.py "$tmp/tq.bin" 1 256 128 0.02 0.02
check tq TQ2_0
grep -q 'rope_freqs.weight against the Llama-3 formula' "$tmp/tq.check" && ok "tq: rope_freqs checked" || bad "tq: no rope_freqs tensor"

# the Llama-2 tokenizer on a vocab-32000 model, found beside it as MODEL.tokenizer
spm=../shared/data/llama2-tokenizer/tokenizer.model
if [ -f "$spm" ]; then
    ./train --init tiny --vocab 32000 -q int -b 2 -g 64 -o "$tmp/spm.bin" > /dev/null || bad "train --init tiny --vocab 32000"
    cp "$spm" "$tmp/spm.bin.tokenizer"
    check spm Q4_0
    grep -q '"tokenizer": "llama"' "$tmp/spm.log" && ok "spm: SentencePiece vocabulary written" || bad "spm: tokenizer not written as llama"
else
    echo "skipped: $spm is absent (Llama-2 vocabulary check)"
fi
# the Llama-3 tokenizer (tiktoken ranks): a byte-level BPE vocabulary with merges
l3=../shared/data/llama3-tokenizer/tokenizer.model
if [ -f "$l3" ]; then
    ./train --init tiny --vocab 128256 -o "$tmp/l3.bin" > /dev/null || bad "train --init tiny --vocab 128256"
    TIKTOKEN=$l3 check l3 F32 --tokenizer "$l3"
    grep -q '"tokenizer": "gpt2"' "$tmp/l3.log" && ok "l3: byte-level BPE vocabulary written" || bad "l3: tokenizer not written as gpt2"
else
    echo "skipped: $l3 is absent (Llama-3 vocabulary check)"
fi

# a bad --type is refused before anything is written
./convert --to-gguf "$tmp/int2.bin" "$tmp/x.gguf" --type q3_k > "$tmp/err" 2>&1 && bad "--type q3_k accepted" \
    || { grep -q "q3_k" "$tmp/err" && [ ! -e "$tmp/x.gguf" ] && ok "--type q3_k refused: $(cat "$tmp/err")" || bad "--type q3_k: $(cat "$tmp/err")"; }
[ $fails -eq 0 ] || exit 1

#!/usr/bin/env bash
# convert: Hugging Face folders import to exactly the model they hold, and come back unchanged.
#
# dev/hf_fixture.c writes a tiny random Llama as a Hugging Face folder (its own safetensors
# writer, tensors in shuffled order, weights k/64 so F32, BF16 and F16 all hold them exactly)
# together with the .bin the import must produce, written by model.h's model_save. For every
# variant — both config.json forms, F32/BF16/F16, one file or 2-3 shards, tied or not, Llama-3
# RoPE scaling, an explicit head_dim, extra tensors to ignore — this checks:
#   1. ./convert DIR OUT.bin              == the expected .bin, byte for byte (default dtype)
#   2. ./convert DIR OUT.bin --dtype f32  == the expected fp32 .bin
#   3. ./convert --to-hf OUT.bin HF2, then ./convert HF2 BACK.bin: BACK.bin == OUT.bin
#   4. HF2's safetensors header length is a multiple of 8, and its dtype is OUT.bin's
# and that the two config.json forms of one model give the same .bin.
set -u
cd "$(dirname "$0")/.."
[ -x ./convert ] || { echo "FAIL: ./convert is not built (make convert)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -O1 -o "$tmp/fx" dev/hf_fixture.c -lm || { echo "FAIL: cannot build dev/hf_fixture.c"; exit 1; }
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }
same() { cmp -s "$1" "$2" && return 0; echo "        $(cmp "$1" "$2" 2>&1 | head -1)"; return 1; }
# header length (first 8 bytes, little-endian) of a safetensors file
st_hlen() { od -An -tu8 -N8 "$1" | tr -d ' '; }

roundtrip() {  # NAME FIXTURE-OPTIONS...
    local name=$1; shift
    local d="$tmp/$name"
    "$tmp/fx" "$d" "$@" --expect "$d.expect.bin" --expect-f32 "$d.expect32.bin" || { bad "$name: fixture"; return; }
    ./convert "$d" "$d.bin" > /dev/null && same "$d.bin" "$d.expect.bin" \
        && ok "$name: import == expected .bin" || bad "$name: import differs from the expected .bin"
    ./convert "$d" "$d.32.bin" --dtype f32 > /dev/null && same "$d.32.bin" "$d.expect32.bin" \
        && ok "$name: import --dtype f32 == expected fp32 .bin" || bad "$name: --dtype f32 import differs"
    ./convert --to-hf "$d.bin" "$d.hf" > /dev/null && ./convert "$d.hf" "$d.back.bin" > /dev/null \
        && same "$d.back.bin" "$d.bin" && ok "$name: .bin -> --to-hf -> .bin is byte-identical" \
        || bad "$name: --to-hf round trip differs"
    local h; h=$(st_hlen "$d.hf/model.safetensors")
    [ -n "$h" ] && [ $((h % 8)) -eq 0 ] && ok "$name: exported header is $h bytes (a multiple of 8)" \
        || bad "$name: exported header length $h is not a multiple of 8"
}

echo "round trips"
roundtrip f32_untied
roundtrip bf16_tied_llama3 --dtype BF16 --tied 1 --rope llama3 --extra
roundtrip f16_v5_3shards --form v5 --dtype F16 --shards 3 --rope llama3 --seed 2
roundtrip bf16_v5_2shards_hd16 --form v5 --dtype BF16 --shards 2 --tied 1 --head-dim 16 --extra --seed 3
roundtrip f32_v5_untied_extra --form v5 --extra --seed 4

echo "details"
# the two config.json forms describe one model
"$tmp/fx" "$tmp/c1" --rope llama3 --seed 9 > /dev/null && "$tmp/fx" "$tmp/c2" --form v5 --rope llama3 --seed 9 > /dev/null
./convert "$tmp/c1" "$tmp/c1.bin" > /dev/null && ./convert "$tmp/c2" "$tmp/c2.bin" > /dev/null && same "$tmp/c1.bin" "$tmp/c2.bin" \
    && ok "classic and transformers-5 config.json give the same .bin" || bad "the two config forms differ"
grep -q '"torch_dtype": "bfloat16"' "$tmp/bf16_tied_llama3.hf/config.json" && grep -q '"dtype":"BF16"' "$tmp/bf16_tied_llama3.hf/model.safetensors" \
    && ok "a bf16 .bin exports BF16 tensors and torch_dtype bfloat16" || bad "bf16 export dtype"
grep -q '"torch_dtype": "float32"' "$tmp/f32_untied.hf/config.json" && grep -q '"dtype":"F32"' "$tmp/f32_untied.hf/model.safetensors" \
    && ok "an f32 .bin exports F32 tensors and torch_dtype float32" || bad "f32 export dtype"
grep -q '"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64' \
    "$tmp/bf16_tied_llama3.hf/config.json" && grep -q '"rope_theta": 500000.0' "$tmp/bf16_tied_llama3.hf/config.json" \
    && ok "--to-hf writes the llama3 rope_scaling and rope_theta" || bad "--to-hf rope scaling"
grep -q '"rms_norm_eps": 1e-05' "$tmp/f32_untied.hf/config.json" && grep -q '"eos_token_id": 2,' "$tmp/f32_untied.hf/config.json" \
    && ok "--to-hf writes rms_norm_eps 1e-05 (shortest form) and the first eos id of a list" || bad "--to-hf eps / eos"
grep -q '"tie_word_embeddings": true' "$tmp/bf16_tied_llama3.hf/config.json" && ! grep -q 'lm_head' "$tmp/bf16_tied_llama3.hf/model.safetensors" \
    && ok "a tied model exports no lm_head.weight" || bad "tied export"
grep -q '"lm_head.weight"' "$tmp/f32_untied.hf/model.safetensors" && ok "an untied model exports lm_head.weight" || bad "untied export"
# --to-hf into an existing folder replaces its files, leaving no .tmp
./convert --to-hf "$tmp/f32_untied.bin" "$tmp/f32_untied.hf" > /dev/null && ! ls "$tmp/f32_untied.hf" | grep -q tmp \
    && [ "$(ls "$tmp/f32_untied.hf" | wc -l)" -eq 2 ] && ok "--to-hf into an existing folder: 2 files, no temp files" || bad "--to-hf overwrite"
# a real model, when the shared data is here: llama2.c -> .bin -> HF -> .bin
l2c=../shared/data/stories260K/stories260K.bin
if [ -f "$l2c" ]; then
    ./convert --from-llama2c "$l2c" "$tmp/s.bin" > /dev/null && ./convert --to-hf "$tmp/s.bin" "$tmp/s.hf" > /dev/null \
        && ./convert "$tmp/s.hf" "$tmp/s2.bin" > /dev/null && same "$tmp/s.bin" "$tmp/s2.bin" \
        && ok "stories260K: llama2.c -> .bin -> HF -> .bin is byte-identical" || bad "stories260K round trip"
else
    echo "  skipped: stories260K round trip ($l2c is absent)"
fi

echo "convert round trips: $fails failed"
[ $fails -eq 0 ]

#!/usr/bin/env bash
# convert: every bad input ends in exactly one stderr line "error: FILE: problem" naming the
# right file, exit status 1, and no output left behind (no OUT.bin, no OUT.bin.tmp, no OUT_DIR).
# Broken inputs come from dev/hf_fixture.c (C, built here) and from sed on its config.json.
set -u
cd "$(dirname "$0")/.."
[ -x ./convert ] || { echo "FAIL: ./convert is not built (make convert)"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -O1 -o "$tmp/fx" dev/hf_fixture.c -lm || { echo "FAIL: cannot build dev/hf_fixture.c"; exit 1; }
fails=0 n=0

# expect_error NAME PATTERN CMD...: PATTERN is a grep -E regex the one error line must match
expect_error() {
    local name=$1 pattern=$2; shift 2
    n=$((n + 1))
    rm -rf "$tmp/out.bin" "$tmp/out.bin.tmp" "$tmp/outdir"
    "$@" > "$tmp/stdout" 2> "$tmp/stderr"
    local rc=$? lines left
    lines=$(wc -l < "$tmp/stderr")
    left=$(ls -d "$tmp/out.bin" "$tmp/out.bin.tmp" "$tmp/outdir" 2> /dev/null)
    if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -qE "^error: .*$pattern" "$tmp/stderr" && [ -z "$left" ]; then
        printf '  ok    %-30s %s\n' "$name" "$(sed "s|$tmp/||g" "$tmp/stderr" | cut -c1-140)"
    else
        printf '  FAIL  %s: exit %d, %d stderr lines, left behind: [%s]\n        stderr: %s\n        wanted: error: ...%s\n' \
            "$name" $rc "$lines" "$left" "$(head -c 400 "$tmp/stderr")" "$pattern"
        fails=$((fails + 1))
    fi
}
fx() { "$tmp/fx" "$@" || { echo "FAIL: hf_fixture $*"; exit 1; }; }
cv() { ./convert "$1" "$tmp/out.bin"; }  # import a folder

# a valid folder first: the cases below differ from it in one thing each
fx "$tmp/good" --expect "$tmp/good.bin"
./convert "$tmp/good" "$tmp/check.bin" > /dev/null && cmp -s "$tmp/check.bin" "$tmp/good.bin" \
    || { echo "FAIL: the valid fixture does not convert (the cases below would prove nothing)"; exit 1; }
# variant NAME SED-EXPR: the valid folder with config.json edited by sed
variant() { rm -rf "$tmp/$1"; cp -r "$tmp/good" "$tmp/$1"; sed -i "$2" "$tmp/$1/config.json"; }

echo "Hugging Face folders: config.json"
expect_error "missing folder" "nope/config.json: cannot open" cv "$tmp/nope"
variant nocfg ''; rm "$tmp/nocfg/config.json"
expect_error "no config.json" "nocfg/config.json: cannot open" cv "$tmp/nocfg"
variant badjson 's/"hidden_size": 32,/"hidden_size": 32,,/'
expect_error "malformed config.json" "badjson/config.json: malformed JSON: line 4, column 21: expected a string key" cv "$tmp/badjson"
variant truncjson ''; head -c 60 "$tmp/good/config.json" > "$tmp/truncjson/config.json"
expect_error "truncated config.json" "truncjson/config.json: malformed JSON: line [0-9]+, column [0-9]+: unterminated string" cv "$tmp/truncjson"
variant array ''; echo '[1, 2]' > "$tmp/array/config.json"
expect_error "config.json not an object" "array/config.json: not a JSON object" cv "$tmp/array"
variant mistral 's/"model_type": "llama"/"model_type": "mistral"/'
expect_error "model_type mistral" 'mistral/config.json: model_type is "mistral", only "llama"' cv "$tmp/mistral"
variant notype '/"model_type"/d'
expect_error "no model_type" 'notype/config.json: model_type is "\(missing\)"' cv "$tmp/notype"
variant arch 's/LlamaForCausalLM/LlamaForSequenceClassification/'
expect_error "not a causal LM" "arch/config.json: architectures does not include LlamaForCausalLM" cv "$tmp/arch"
variant abias 's/"attention_bias": false/"attention_bias": true/'
expect_error "attention_bias true" "abias/config.json: attention_bias true is not supported" cv "$tmp/abias"
variant mbias 's/"mlp_bias": false/"mlp_bias": true/'
expect_error "mlp_bias true" "mbias/config.json: mlp_bias true is not supported" cv "$tmp/mbias"
variant gelu 's/"silu"/"gelu"/'
expect_error "hidden_act gelu" 'gelu/config.json: hidden_act "gelu"' cv "$tmp/gelu"
variant kv 's/"num_key_value_heads": 2/"num_key_value_heads": 3/'
expect_error "kv heads do not divide" "kv/config.json: n_kv_heads does not divide n_heads" cv "$tmp/kv"
variant hdiv 's/"num_attention_heads": 4/"num_attention_heads": 5/'
expect_error "heads do not divide dim" "hdiv/config.json: hidden_size 32 is not a multiple of num_attention_heads 5" cv "$tmp/hdiv"
variant zero 's/"num_hidden_layers": 2/"num_hidden_layers": 0/'
expect_error "zero layers" "zero/config.json: a size in the header is zero or negative" cv "$tmp/zero"
variant huge 's/"vocab_size": 72/"vocab_size": 1e12/'
expect_error "vocab_size out of int range" 'huge/config.json: "vocab_size" is 1000000000000, out of range' cv "$tmp/huge"
variant bigdim 's/"hidden_size": 32/"hidden_size": 3000000000/'
expect_error "hidden_size out of int range" 'bigdim/config.json: "hidden_size" is 3000000000, out of range' cv "$tmp/bigdim"
variant largedim 's/"hidden_size": 32/"hidden_size": 131072/'
expect_error "hidden_size implausible" 'largedim/config.json: .*implausibly large \(dim = 131072, at most 65536\)' cv "$tmp/largedim"
variant fracdim 's/"hidden_size": 32/"hidden_size": 32.5/'
expect_error "hidden_size a fraction" 'fracdim/config.json: "hidden_size" must be an integer' cv "$tmp/fracdim"
variant strdim 's/"hidden_size": 32/"hidden_size": "32"/'
expect_error "hidden_size a string" 'strdim/config.json: "hidden_size" must be an integer' cv "$tmp/strdim"
variant nodim '/"hidden_size"/d'
expect_error "hidden_size missing" 'nodim/config.json: missing "hidden_size"' cv "$tmp/nodim"
variant tie 's/"tie_word_embeddings": false/"tie_word_embeddings": "no"/'
expect_error "tie_word_embeddings a string" 'tie/config.json: "tie_word_embeddings" must be true or false' cv "$tmp/tie"
variant yarn 's/"rope_scaling": null/"rope_scaling": {"rope_type": "yarn", "factor": 4.0}/'
expect_error "rope type yarn" 'yarn/config.json: rope type "yarn" is not supported' cv "$tmp/yarn"
variant linear 's/"rope_scaling": null/"rope_scaling": {"type": "linear", "factor": 2.0}/'
expect_error "rope type linear (old key)" 'linear/config.json: rope type "linear" is not supported' cv "$tmp/linear"
variant l3bad 's/"rope_scaling": null/"rope_scaling": {"rope_type": "llama3", "factor": 8.0}/'
expect_error "llama3 without its factors" "l3bad/config.json: llama3 rope_scaling needs" cv "$tmp/l3bad"
variant eps 's/"rms_norm_eps": 1e-05/"rms_norm_eps": -1/'
expect_error "negative rms_norm_eps" "eps/config.json: rms_norm_eps must be positive" cv "$tmp/eps"
variant bos 's/"bos_token_id": 1/"bos_token_id": "<s>"/'
expect_error "bos_token_id a string" 'bos/config.json: "bos_token_id" must be a token id' cv "$tmp/bos"

echo "Hugging Face folders: shapes and tensors"
variant inter 's/"intermediate_size": 48/"intermediate_size": 40/'
expect_error "config implies other shapes" "inter/model.safetensors: tensor 'model.layers.0.mlp.gate_proj.weight' has shape \[48, 32\], config.json implies \[40, 32\]" cv "$tmp/inter"
fx "$tmp/transposed" --break transpose=model.layers.1.mlp.down_proj.weight
expect_error "a transposed down_proj" "transposed/model.safetensors: tensor 'model.layers.1.mlp.down_proj.weight' has shape \[48, 32\], config.json implies \[32, 48\]" cv "$tmp/transposed"
fx "$tmp/missing" --break drop=model.layers.1.self_attn.v_proj.weight
expect_error "missing tensor" "missing/model.safetensors: tensor 'model.layers.1.self_attn.v_proj.weight' not found" cv "$tmp/missing"
fx "$tmp/nohead" --break drop=lm_head.weight
expect_error "untied without lm_head" "nohead/model.safetensors: tensor 'lm_head.weight' not found" cv "$tmp/nohead"
fx "$tmp/inttensor" --break intdtype
expect_error "an integer weight" "inttensor/model.safetensors: tensor '.*' is I32, expected a float type" cv "$tmp/inttensor"
fx "$tmp/nan" --break nan
expect_error "a NaN weight" "nan/model.safetensors: tensor '.*' has a NaN or Inf at element [0-9]+" cv "$tmp/nan"
variant noweights ''; rm "$tmp/noweights/model.safetensors"
expect_error "no weights at all" "noweights: no model.safetensors or model.safetensors.index.json" cv "$tmp/noweights"

echo "Hugging Face folders: safetensors headers"
for kind in overlap oob hlen sizemismatch truncate hole trailing dup baddtype badheader notobject short; do
    fx "$tmp/st_$kind" --break $kind
done
expect_error "overlapping tensors" "st_overlap/model.safetensors: tensors '.*' and '.*' overlap" cv "$tmp/st_overlap"
expect_error "offsets out of bounds" "st_oob/model.safetensors: tensor '.*': data_offsets \[[0-9]+, [0-9]+\] outside the data" cv "$tmp/st_oob"
expect_error "header length > file" "st_hlen/model.safetensors: safetensors header length 1099511627776 does not fit the file" cv "$tmp/st_hlen"
expect_error "shape x dtype != bytes" "st_sizemismatch/model.safetensors: tensor '.*': [0-9]+ bytes for [0-9]+ elements of F32" cv "$tmp/st_sizemismatch"
expect_error "truncated data" "st_truncate/model.safetensors: tensor '.*': data_offsets .* outside the data" cv "$tmp/st_truncate"
expect_error "a hole in the data" "st_hole/model.safetensors: data bytes \[[0-9]+, [0-9]+\) belong to no tensor" cv "$tmp/st_hole"
expect_error "trailing bytes" "st_trailing/model.safetensors: 24 bytes after the last tensor" cv "$tmp/st_trailing"
expect_error "a name twice" "st_dup/model.safetensors: tensor '.*' appears twice" cv "$tmp/st_dup"
expect_error "unknown dtype" "st_baddtype/model.safetensors: tensor '.*': unsupported dtype F8_E4M3" cv "$tmp/st_baddtype"
expect_error "malformed header JSON" "st_badheader/model.safetensors: malformed safetensors header: line 1" cv "$tmp/st_badheader"
expect_error "header not an object" "st_notobject/model.safetensors: safetensors header is not a JSON object" cv "$tmp/st_notobject"
expect_error "5-byte file" "st_short/model.safetensors: truncated safetensors file" cv "$tmp/st_short"

echo "Hugging Face folders: sharded index"
fx "$tmp/ix_json" --shards 2 --break index-badjson
expect_error "malformed index" "ix_json/model.safetensors.index.json: malformed JSON" cv "$tmp/ix_json"
fx "$tmp/ix_missing" --shards 2 --break index-missing-shard
expect_error "index names a missing shard" "ix_missing/model-00099-of-00002.safetensors: cannot open" cv "$tmp/ix_missing"
fx "$tmp/ix_trav" --shards 2 --break index-traversal
expect_error "index points outside" "ix_trav/model.safetensors.index.json: weight_map entry for '.*' is not a plain file name" cv "$tmp/ix_trav"
fx "$tmp/ix_wrong" --shards 2 --break index-wrong-shard
expect_error "index names the wrong shard" "ix_wrong/model.safetensors.index.json: weight_map puts 'model.norm.weight' in model-0000[12]-of-00002.safetensors, which does not hold it" cv "$tmp/ix_wrong"
fx "$tmp/ix_shard" --shards 3 --break overlap
expect_error "a broken shard" "ix_shard/model-00001-of-00003.safetensors: tensors .* overlap" cv "$tmp/ix_shard"

echo "llama2.c checkpoints"
l2c() { ./convert --from-llama2c "$1" "$tmp/out.bin"; }
expect_error "missing file" "nope.l2c: cannot open" l2c "$tmp/nope.l2c"
printf 'abc' > "$tmp/short.l2c"
expect_error "shorter than the header" "short.l2c: truncated file \(no llama2.c header\)" l2c "$tmp/short.l2c"
"$tmp/fx" --llama2c "$tmp/ok.l2c" 16 24 2 4 2 32 8
./convert --from-llama2c "$tmp/ok.l2c" "$tmp/check.bin" > /dev/null || { echo "FAIL: the valid llama2.c fixture does not convert"; exit 1; }
"$tmp/fx" --llama2c "$tmp/cut.l2c" 16 24 2 4 2 32 8 --cut 4
expect_error "truncated weights" "cut.l2c: [0-9]+ bytes, but its header implies [0-9]+ \(dim 16" l2c "$tmp/cut.l2c"
"$tmp/fx" --llama2c "$tmp/long.l2c" 16 24 2 4 2 32 8 --add 4
expect_error "trailing bytes" "long.l2c: [0-9]+ bytes, but its header implies" l2c "$tmp/long.l2c"
"$tmp/fx" --llama2c "$tmp/nocls.l2c" 16 24 2 4 2 32 8 && "$tmp/fx" --llama2c "$tmp/cls.l2c" 16 24 2 4 2 -32 8 --cut 2048
expect_error "separate classifier missing" "cls.l2c: [0-9]+ bytes, but its header implies .*vocab 32\)" l2c "$tmp/cls.l2c"
"$tmp/fx" --llama2c "$tmp/kv.l2c" 16 24 2 4 3 32 8
expect_error "kv heads do not divide" "kv.l2c: n_kv_heads does not divide n_heads" l2c "$tmp/kv.l2c"
"$tmp/fx" --llama2c "$tmp/hd.l2c" 18 24 2 4 2 32 8
expect_error "heads do not divide dim" "hd.l2c: llama2.c header: dim 18 is not a multiple of n_heads 4" l2c "$tmp/hd.l2c"
"$tmp/fx" --llama2c "$tmp/neg.l2c" 16 24 -2 4 2 32 8
expect_error "negative layers" "neg.l2c: llama2.c header: n_layers = -2, must be positive" l2c "$tmp/neg.l2c"
"$tmp/fx" --llama2c "$tmp/big.l2c" 16 24 100000 4 2 32 8
expect_error "implausible layers" "big.l2c: a size in the header is implausibly large \(n_layers = 100000, at most 1024\)" l2c "$tmp/big.l2c"
"$tmp/fx" --llama2c "$tmp/intmin.l2c" 16 24 2 4 2 -2147483648 8
expect_error "vocab INT_MIN" "intmin.l2c: .*(zero or negative|must be positive)" l2c "$tmp/intmin.l2c"

echo "--to-hf"
hf() { ./convert --to-hf "$1" "$tmp/outdir"; }
expect_error "missing model" "nope.bin: cannot open" hf "$tmp/nope.bin"
expect_error "not a model file" "short.l2c: truncated file" hf "$tmp/short.l2c"
expect_error "a llama2.c file" "ok.l2c: not a bitdistill model file \(bad magic\)" hf "$tmp/ok.l2c"
head -c 2000 "$tmp/good.bin" > "$tmp/trunc.bin"
expect_error "truncated model" "trunc.bin: truncated file \([0-9]+ bytes, the header implies [0-9]+\)" hf "$tmp/trunc.bin"
cp "$tmp/good.bin" "$tmp/long.bin"; printf 'xxxx' >> "$tmp/long.bin"
expect_error "model with trailing bytes" "long.bin: 4 trailing bytes" hf "$tmp/long.bin"
expect_error "no parent folder" "outdir/sub: the folder .*outdir does not exist" ./convert --to-hf "$tmp/good.bin" "$tmp/outdir/sub"

echo "command line"
expect_error "one argument" "expected two paths, got 1" ./convert "$tmp/good"
expect_error "three arguments" "too many arguments" ./convert "$tmp/good" "$tmp/out.bin" extra
expect_error "unknown flag" "unknown flag '--fast'" ./convert "$tmp/good" "$tmp/out.bin" --fast
expect_error "bad --dtype" "--dtype: expected f32 or bf16, got 'f16'" ./convert "$tmp/good" "$tmp/out.bin" --dtype f16
expect_error "--dtype without a value" "--dtype: needs a value" ./convert "$tmp/good" "$tmp/out.bin" --dtype
expect_error "--dtype with --to-hf" "--dtype applies to Hugging Face imports only" ./convert --to-hf "$tmp/good.bin" "$tmp/outdir" --dtype f32
expect_error "--to-hf missing an argument" "expected two paths, got 1" ./convert --to-hf "$tmp/good.bin"

echo "convert bad input: $n cases, $fails failed"
[ $fails -eq 0 ]

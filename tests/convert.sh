#!/usr/bin/env bash
# convert: round trips and bad input.
#  - .bin -> HF -> .bin is byte-identical (fp32 and bf16); a sharded checkpoint, an F16 one and
#    the transformers >= 5 config form import to the same model;
#  - every bad input exits 1 with one line "error: FILE: problem" and leaves no output file.
# Variants of safetensors files are written by small stdlib-only Python (struct, json).
set -u
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "skipped: python3 is needed to build the test inputs"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }
expect_error() {  # NAME PATTERN CMD...
    local name=$1 pattern=$2; shift 2
    rm -f "$tmp/out.bin" "$tmp/out.bin.tmp"
    "$@" > /dev/null 2> "$tmp/stderr"
    local rc=$? lines; lines=$(wc -l < "$tmp/stderr")
    if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -q "^error: .*$pattern" "$tmp/stderr" && [ ! -e "$tmp/out.bin" ] && [ ! -e "$tmp/out.bin.tmp" ]; then
        ok "$name: $(cut -c1-150 "$tmp/stderr")"
    else
        bad "$name (exit $rc, stderr: $(head -c 300 "$tmp/stderr"))"
    fi
}
# st.py OP SRC DST [ARG]: rewrite a safetensors file (ops below)
cat > "$tmp/st.py" <<'PY'
import json, struct, sys
op, src, dst = sys.argv[1], sys.argv[2], sys.argv[3]
arg = sys.argv[4] if len(sys.argv) > 4 else None
raw = open(src, 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
hdr = json.loads(raw[8:8 + n]); data = raw[8 + n:]
meta = hdr.pop('__metadata__', None)
def write(path, hdr, data, hlen=None):
    h = json.dumps(hdr).encode(); h += b' ' * (-len(h) % 8)
    open(path, 'wb').write(struct.pack('<Q', hlen if hlen is not None else len(h)) + h + data)
def tensor(name):
    b, e = hdr[name]['data_offsets']; return data[b:e]
if op == 'f16':      # F32 -> F16
    out, new = b'', {}
    for k in sorted(hdr):
        v = hdr[k]; vals = struct.unpack('<%df' % ((v['data_offsets'][1] - v['data_offsets'][0]) // 4), tensor(k))
        blob = struct.pack('<%de' % len(vals), *vals)
        new[k] = {'dtype': 'F16', 'shape': v['shape'], 'data_offsets': [len(out), len(out) + len(blob)]}; out += blob
    write(dst, new, out)
elif op == 'shard':  # split into two files + index
    import os
    names = sorted(hdr); half = len(names) // 2; wm = {}
    for i, part in enumerate([names[:half], names[half:]]):
        out, new = b'', {}
        for k in part:
            blob = tensor(k); new[k] = dict(hdr[k], data_offsets=[len(out), len(out) + len(blob)]); out += blob
            wm[k] = 'model-%05d-of-00002.safetensors' % (i + 1)
        write(os.path.join(dst, 'model-%05d-of-00002.safetensors' % (i + 1)), new, out)
    json.dump({'metadata': {}, 'weight_map': wm}, open(os.path.join(dst, 'model.safetensors.index.json'), 'w'))
elif op == 'drop':   # remove one tensor
    del hdr[arg]; write(dst, hdr, data)
elif op == 'overlap':  # make the second tensor (by offset) start inside the first
    ks = sorted(hdr, key=lambda k: hdr[k]['data_offsets'][0]); a, b = ks[0], ks[1]
    size = hdr[b]['data_offsets'][1] - hdr[b]['data_offsets'][0]; hdr[b]['data_offsets'] = [0, size]; write(dst, hdr, data)
elif op == 'oob':    # an offset past the end of the data
    k = sorted(hdr)[0]; b, e = hdr[k]['data_offsets']; hdr[k]['data_offsets'] = [b + len(data), e + len(data)]; write(dst, hdr, data)
elif op == 'hlen':   # a header length larger than the file
    write(dst, hdr, data, hlen=1 << 40)
elif op == 'sizemismatch':  # shape no longer matches the byte range
    k = sorted(hdr)[0]; hdr[k]['shape'] = [s + 1 for s in hdr[k]['shape']]; write(dst, hdr, data)
elif op == 'truncate':
    open(dst, 'wb').write(raw[:len(raw) - 100])
PY
st() { python3 "$tmp/st.py" "$@"; }
# cfg.py SRC DST EXPR: edit config.json with a Python expression on `c`
cfg() { python3 -c "import json,sys; c=json.load(open(sys.argv[1])); $3; json.dump(c, open(sys.argv[2],'w'), indent=1)" "$1" "$2"; }

./train --init tiny -o "$tmp/a.bin" > /dev/null
./train --init tiny --dtype bf16 -o "$tmp/a16.bin" > /dev/null

# round trips
./convert --to-hf "$tmp/a.bin" "$tmp/hf" > /dev/null && ./convert "$tmp/hf" "$tmp/b.bin" --dtype f32 > /dev/null \
    && cmp -s "$tmp/a.bin" "$tmp/b.bin" && ok "fp32 .bin -> HF -> .bin is byte-identical" || bad "fp32 round trip"
./convert --to-hf "$tmp/a16.bin" "$tmp/hf16" > /dev/null && ./convert "$tmp/hf16" "$tmp/b16.bin" > /dev/null \
    && cmp -s "$tmp/a16.bin" "$tmp/b16.bin" && ok "bf16 .bin -> HF -> .bin is byte-identical (bf16 kept by default)" || bad "bf16 round trip"
grep -q '"torch_dtype": "bfloat16"' "$tmp/hf16/config.json" && ok "--to-hf writes torch_dtype bfloat16 for a bf16 model" || bad "torch_dtype"
mkdir -p "$tmp/sharded" && cp "$tmp/hf/config.json" "$tmp/sharded/" && st shard "$tmp/hf/model.safetensors" "$tmp/sharded" \
    && ./convert "$tmp/sharded" "$tmp/c.bin" --dtype f32 > /dev/null && cmp -s "$tmp/a.bin" "$tmp/c.bin" \
    && ok "sharded checkpoint (index + 2 shards) imports identically" || bad "sharded import"
mkdir -p "$tmp/f16" && cp "$tmp/hf/config.json" "$tmp/f16/" && st f16 "$tmp/hf/model.safetensors" "$tmp/f16/model.safetensors" \
    && ./convert "$tmp/f16" "$tmp/d.bin" --dtype f32 > /dev/null || bad "F16 import"
seq 0 599 | awk '{print ($1 * 37) % 256}' > "$tmp/x.ids"
pa=$(./train -m "$tmp/a.bin" --eval-ppl "$tmp/x.ids" -T 64 | tail -n 1 | sed 's/.*"ppl": \([0-9.]*\).*/\1/')
pd=$(./train -m "$tmp/d.bin" --eval-ppl "$tmp/x.ids" -T 64 | tail -n 1 | sed 's/.*"ppl": \([0-9.]*\).*/\1/')
awk -v a="$pa" -v d="$pd" 'BEGIN { r = (a - d) / a; exit !(r < 1e-4 && r > -1e-4) }' && ok "F16 checkpoint imports (ppl $pd vs $pa)" || bad "F16 ppl $pd vs $pa"
# Llama-3 RoPE scaling, classic form vs transformers >= 5 form
mkdir -p "$tmp/l3a" "$tmp/l3b" && cp "$tmp/hf/model.safetensors" "$tmp/l3a/" && cp "$tmp/hf/model.safetensors" "$tmp/l3b/"
cfg "$tmp/hf/config.json" "$tmp/l3a/config.json" "c['rope_theta']=500000.0; c['rope_scaling']={'rope_type':'llama3','factor':8.0,'low_freq_factor':1.0,'high_freq_factor':4.0,'original_max_position_embeddings':64}"
cfg "$tmp/hf/config.json" "$tmp/l3b/config.json" "c.pop('rope_theta'); c.pop('rope_scaling'); c.pop('torch_dtype'); c['dtype']='float32'; c['rope_parameters']={'rope_type':'llama3','rope_theta':500000.0,'factor':8.0,'low_freq_factor':1.0,'high_freq_factor':4.0,'original_max_position_embeddings':64}"
./convert "$tmp/l3a" "$tmp/l3a.bin" > /dev/null && ./convert "$tmp/l3b" "$tmp/l3b.bin" > /dev/null \
    && cmp -s "$tmp/l3a.bin" "$tmp/l3b.bin" && ! cmp -s "$tmp/l3a.bin" "$tmp/a.bin" \
    && ok "classic and transformers-5 config forms give the same model (llama3 rope)" || bad "config forms differ"
./convert --to-hf "$tmp/l3a.bin" "$tmp/l3c" > /dev/null && grep -q '"rope_type": "llama3"' "$tmp/l3c/config.json" \
    && ok "--to-hf keeps the llama3 rope scaling" || bad "--to-hf rope scaling"

# bad input: HF folders
mk() { rm -rf "$tmp/$1"; mkdir -p "$tmp/$1"; cp "$tmp/hf/config.json" "$tmp/hf/model.safetensors" "$tmp/$1/"; }
expect_error "missing folder" "nope/config.json: cannot open" ./convert "$tmp/nope" "$tmp/out.bin"
mk badjson; printf '{"model_type": "llama",' > "$tmp/badjson/config.json"
expect_error "malformed config.json" "badjson/config.json: malformed JSON: line 1" ./convert "$tmp/badjson" "$tmp/out.bin"
mk mistral; cfg "$tmp/hf/config.json" "$tmp/mistral/config.json" "c['model_type']='mistral'"
expect_error "not a Llama (model_type)" "mistral/config.json: model_type is \"mistral\"" ./convert "$tmp/mistral" "$tmp/out.bin"
mk arch; cfg "$tmp/hf/config.json" "$tmp/arch/config.json" "c['architectures']=['LlamaForSequenceClassification']"
expect_error "not a causal LM" "arch/config.json: architectures does not include LlamaForCausalLM" ./convert "$tmp/arch" "$tmp/out.bin"
mk bias; cfg "$tmp/hf/config.json" "$tmp/bias/config.json" "c['attention_bias']=True"
expect_error "attention bias" "bias/config.json: attention_bias" ./convert "$tmp/bias" "$tmp/out.bin"
mk heads; cfg "$tmp/hf/config.json" "$tmp/heads/config.json" "c['num_key_value_heads']=3"
expect_error "kv heads not dividing" "heads/config.json: n_kv_heads does not divide n_heads" ./convert "$tmp/heads" "$tmp/out.bin"
mk rope; cfg "$tmp/hf/config.json" "$tmp/rope/config.json" "c['rope_scaling']={'rope_type':'yarn','factor':4.0}"
expect_error "unsupported rope type" "rope/config.json: rope type \"yarn\"" ./convert "$tmp/rope" "$tmp/out.bin"
mk shape; cfg "$tmp/hf/config.json" "$tmp/shape/config.json" "c['intermediate_size']=180"
expect_error "shape mismatch" "tensor 'model.layers.0.mlp.gate_proj.weight' has shape \[192, 64\], config.json implies \[180, 64\]" ./convert "$tmp/shape" "$tmp/out.bin"
mk missing; st drop "$tmp/hf/model.safetensors" "$tmp/missing/model.safetensors" model.layers.2.self_attn.v_proj.weight
expect_error "missing tensor" "tensor 'model.layers.2.self_attn.v_proj.weight' not found" ./convert "$tmp/missing" "$tmp/out.bin"
mk untied; cfg "$tmp/hf/config.json" "$tmp/untied/config.json" "c['tie_word_embeddings']=False"
expect_error "untied config without lm_head" "tensor 'lm_head.weight' not found" ./convert "$tmp/untied" "$tmp/out.bin"
mk noweights; rm "$tmp/noweights/model.safetensors"
expect_error "no weights file" "noweights: no model.safetensors" ./convert "$tmp/noweights" "$tmp/out.bin"
for op in overlap oob hlen sizemismatch truncate; do
    mk "$op"; st "$op" "$tmp/hf/model.safetensors" "$tmp/$op/model.safetensors"
done
expect_error "overlapping tensors" "overlap/model.safetensors: tensors .* overlap" ./convert "$tmp/overlap" "$tmp/out.bin"
expect_error "offset out of bounds" "oob/model.safetensors: tensor .* outside the data" ./convert "$tmp/oob" "$tmp/out.bin"
expect_error "header length too large" "hlen/model.safetensors: safetensors header length" ./convert "$tmp/hlen" "$tmp/out.bin"
expect_error "shape vs byte range" "sizemismatch/model.safetensors: tensor .* bytes for" ./convert "$tmp/sizemismatch" "$tmp/out.bin"
expect_error "truncated safetensors" "truncate/model.safetensors: tensor .* outside the data" ./convert "$tmp/truncate" "$tmp/out.bin"
mkdir -p "$tmp/trav" && cp "$tmp/hf/config.json" "$tmp/trav/" && printf '{"weight_map": {"model.embed_tokens.weight": "../hf/model.safetensors"}}' > "$tmp/trav/model.safetensors.index.json"
expect_error "index escaping the folder" "weight_map entry .* is not a plain file name" ./convert "$tmp/trav" "$tmp/out.bin"
# bad input: llama2.c files and the command line
printf 'abc' > "$tmp/short.l2c"
expect_error "llama2.c truncated header" "short.l2c: truncated file" ./convert --from-llama2c "$tmp/short.l2c" "$tmp/out.bin"
python3 -c "import struct; open('$tmp/wrong.l2c','wb').write(struct.pack('<7i', 64, 172, 5, 8, 4, 512, 512) + bytes(4000))"
expect_error "llama2.c size vs header" "wrong.l2c: 4028 bytes, but its header implies" ./convert --from-llama2c "$tmp/wrong.l2c" "$tmp/out.bin"
python3 -c "import struct; open('$tmp/heads.l2c','wb').write(struct.pack('<7i', 64, 172, 5, 8, 3, 512, 512))"
expect_error "llama2.c heads not dividing" "heads.l2c: n_kv_heads does not divide n_heads" ./convert --from-llama2c "$tmp/heads.l2c" "$tmp/out.bin"
expect_error "bad arguments" "bad arguments" ./convert onlyone
expect_error "--to-hf of a non-model" "short.l2c: truncated file" ./convert --to-hf "$tmp/short.l2c" "$tmp/hfout"

echo "convert: $fails failure(s)"
[ $fails -eq 0 ]

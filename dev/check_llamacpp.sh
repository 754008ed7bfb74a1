#!/usr/bin/env bash
# Runs ./convert --to-gguf's files in llama.cpp itself and compares with ./train:
#   1. perplexity of llama.cpp equals ./train --eval-ppl on the same token file, for the
#      full-precision stories260K (llama2.c's trained 260K model), its 2-bit INT-Asym and ternary
#      round-to-nearest students, and a ternary bf16 model with 256-wide rows (TQ2_0, Llama-3
#      RoPE scaling through rope_freqs, untied LM head); the token file is sequences sampled
#      from the full-precision model by llama.cpp;
#   2. greedy generation of a Llama-2-vocabulary model agrees with ./train --generate, and
#      llama.cpp's tokenization of WikiText-2 text equals ./tokenize's for the Llama-2 and
#      Llama-3 tokenizers (SentencePiece and byte-level BPE vocabularies in the GGUF);
#   3. llama-bench tokens/s of the bench-100m shape: F16 export vs the 2-bit (Q4_0) and ternary
#      (TQ2_0) students' files.
# llama.cpp comes from llama-cpp-python's source package on PyPI (it vendors llama.cpp): built
# once with cmake into $LLAMA_CPP_CACHE (default ~/.cache/bitdistill-llamacpp; about 30 minutes
# on 2 cores), used through its Python bindings (dev/check_llamacpp.py) and llama-bench.
# Needs python3 with numpy; ../shared/data for stories260K and the tokenizers.
set -eu
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${LLAMA_CPP_CACHE:-$HOME/.cache/bitdistill-llamacpp}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
DATA=../shared/data
export THREADS=${THREADS:-1}  # llama.cpp threads; its workers spin, so on a busy machine 1 is fastest

# --- llama.cpp: download and build (once) -------------------------------------------------
SRC=$CACHE/llama_cpp_python-$VERSION
if [ ! -x "$SRC/vendor/llama.cpp/build/bin/llama-bench" ]; then
    mkdir -p "$CACHE"
    [ -d "$SRC" ] || (cd "$CACHE" && python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d . \
        && tar xzf "llama_cpp_python-$VERSION.tar.gz")
    (cd "$SRC/vendor/llama.cpp" && nice cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF > /dev/null \
        && nice cmake --build build -j"$(nproc)" --target llama llama-bench > "$CACHE/build.log")
fi
python3 -c 'import diskcache, jinja2, typing_extensions' 2>/dev/null || python3 -m pip install -q diskcache jinja2 typing_extensions
export LLAMA_CPP_LIB_PATH=$SRC/vendor/llama.cpp/build/bin PYTHONPATH=$SRC
BENCH=$LLAMA_CPP_LIB_PATH/llama-bench
LCPP="python3 $ROOT/dev/check_llamacpp.py"
make -s train convert tokenize

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
json() { tail -n 1 | python3 -c "import json, sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
results=()

# --- 1. perplexity ----------------------------------------------------------------------
T=256
./convert --from-llama2c $DATA/stories260K/stories260K.bin "$tmp/fp.bin" > /dev/null
./train -m "$tmp/fp.bin" -q int -b 2 -g -1 --clip-init "$tmp/fp.bin" -o "$tmp/int2.bin" > /dev/null
./train -m "$tmp/fp.bin" -q ternary --clip-init "$tmp/fp.bin" -o "$tmp/ternary.bin" > /dev/null
./convert --to-gguf "$tmp/fp.bin" "$tmp/fp.gguf" > /dev/null
$LCPP sample "$tmp/fp.gguf" $((8 * T)) 1 $T > "$tmp/stream.ids"
python3 tests/make_wide_model.py "$tmp/tq.bin" 2 512 256 0.05 0.1
echo "perplexity on $(wc -w < "$tmp/stream.ids") tokens sampled from stories260K by llama.cpp, windows of $T:"
printf '  %-9s %-6s %12s %12s %10s\n' model type "./train" llama.cpp "rel diff"
# int2f32 is the 2-bit student's W^ in F32: llama.cpp then multiplies in fp32 as ./train does,
# while for Q4_0 / TQ2_0 weights it quantizes the activations to 8 bits per block (Q8_0 / Q8_K)
cp "$tmp/int2.bin" "$tmp/int2f32.bin"
for m in fp int2 int2f32 ternary tq; do
    extra=(); [ $m = int2f32 ] && extra=(--type f32)
    ./convert --to-gguf "$tmp/$m.bin" "$tmp/$m.gguf" "${extra[@]}" > "$tmp/$m.log"
    ours=$(./train -m "$tmp/$m.bin" --eval-ppl "$tmp/stream.ids" -T $T | json ppl)
    theirs=$($LCPP ppl "$tmp/$m.gguf" "$tmp/stream.ids" $T | json ppl)
    ty=$(json linear_type < "$tmp/$m.log")
    rel=$(python3 -c "print(f'{abs($theirs - $ours) / $ours:.2e}')")
    printf '  %-9s %-6s %12.6f %12.6f %10s\n' $m "$ty" "$ours" "$theirs" "$rel"
    results+=("\"ppl_$m\": {\"type\": \"$ty\", \"train\": $ours, \"llama_cpp\": $theirs}")
done

# --- 2. greedy generation and tokenization ----------------------------------------------
SPM=$DATA/llama2-tokenizer/tokenizer.model
./train --init tiny --vocab 32000 --seed 5 -q int -b 2 -g 64 -o "$tmp/spm.bin" > /dev/null
cp "$SPM" "$tmp/spm.bin.tokenizer"
./convert --to-gguf "$tmp/spm.bin" "$tmp/spm.gguf" > /dev/null
ours=$(./train -m "$tmp/spm.bin" --generate "Once upon a time" --temperature 0 --max-new 24 | json generated)
theirs=$($LCPP greedy "$tmp/spm.gguf" 24 "Once upon a time" | json generated)
echo "greedy, 24 tokens after \"Once upon a time\" (random 2-bit model, Llama-2 vocabulary):"
echo "  ./train:   $ours"
echo "  llama.cpp: $theirs"
same=$([ "$ours" = "$theirs" ] && echo true || echo false)
results+=("\"greedy_equal\": $same")
head -c 4000 $DATA/wikitext-2/test.joined.txt > "$tmp/text.txt"
./train --init tiny --vocab 128256 -o "$tmp/l3.bin" > /dev/null
./convert --to-gguf "$tmp/l3.bin" "$tmp/l3.gguf" --tokenizer $DATA/llama3-tokenizer/tokenizer.model > /dev/null
for pair in "spm:$SPM" "l3:$DATA/llama3-tokenizer/tokenizer.model"; do
    m=${pair%%:*} tok=${pair#*:}
    a=$(./tokenize -f "$tmp/text.txt" "$tok" | tail -n 1 | tr -d ' ')
    b=$($LCPP tokenize "$tmp/$m.gguf" "$tmp/text.txt" | tail -n 1 | tr -d ' ')
    n=$(tr ',' '\n' <<< "$a" | wc -l)
    eq=$([ "$a" = "$b" ] && echo true || echo false)
    echo "tokenization of 4000 bytes of WikiText-2 ($m, $n ids): ./tokenize and llama.cpp equal: $eq"
    results+=("\"tokens_equal_$m\": $eq")
done

# --- 3. speed ----------------------------------------------------------------------------
./train --init bench-100m -q int -b 2 -g 64 -o "$tmp/b2.bin" > /dev/null
./train --init bench-100m -q ternary -o "$tmp/bt.bin" > /dev/null
./convert --to-gguf "$tmp/b2.bin" "$tmp/b_f16.gguf" --type f16 > /dev/null
./convert --to-gguf "$tmp/b2.bin" "$tmp/b_q4_0.gguf" > /dev/null
./convert --to-gguf "$tmp/bt.bin" "$tmp/b_tq2_0.gguf" > /dev/null
echo "llama-bench, bench-100m shape (100M parameters), $THREADS threads:"
$BENCH -m "$tmp/b_f16.gguf" -m "$tmp/b_q4_0.gguf" -m "$tmp/b_tq2_0.gguf" -p 64 -n 16 -t "$THREADS" -r 2 -o json > "$tmp/bench.json" 2> /dev/null
speeds=$(python3 - "$tmp/bench.json" <<'EOF'
import json, os, sys
out = []
for r in json.load(open(sys.argv[1])):
    name = os.path.basename(r["model_filename"])[2:-5]
    test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    print(f"  {name:6s} {r['model_size'] / 2**20:8.1f} MiB  {test:6s} {r['avg_ts']:9.1f} tokens/s", file=sys.stderr)
    out.append(f'"{name}_{test}": {r["avg_ts"]:.1f}')
print(", ".join(out))
EOF
)
results+=("\"tokens_per_s\": {$speeds}")
( IFS=,; echo "{${results[*]}}" )

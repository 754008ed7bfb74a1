#!/usr/bin/env bash
# train's command line and loaders on bad input: each case must exit 1 with one line
# "error: ..." naming the problem, and leave no output file behind. Also: the usage text,
# the final JSON line, and the perplexity window rule.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }

# expect_error NAME PATTERN CMD...: exit status 1, a one-line error matching PATTERN, no -o file
expect_error() {
    local name=$1 pattern=$2; shift 2
    "$@" > "$tmp/stdout" 2> "$tmp/stderr"
    local rc=$? lines; lines=$(wc -l < "$tmp/stderr")
    if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -q "^error: .*$pattern" "$tmp/stderr" && [ ! -e "$tmp/out.bin" ] && [ ! -e "$tmp/out.bin.tmp" ]; then
        ok "$name: $(cat "$tmp/stderr")"
    else
        bad "$name (exit $rc, stderr: $(head -c 300 "$tmp/stderr"))"
    fi
}

./train --init tiny -o "$tmp/m.bin" > "$tmp/init.out" || bad "--init tiny"
tail -n 1 "$tmp/init.out" | grep -q '^{"params": 213568' && ok "--init tiny prints its JSON line" || bad "--init JSON line"
./train --help | grep -q -- '--eval-ppl FILE' && ok "--help lists the flags" || bad "--help"
# a file name with a quote, a backslash and a tab: the JSON line escapes them (json_quote)
odd="$tmp/a \"b\" c\\d$(printf '\t')e.bin"
./train --init tiny -o "$odd" > "$tmp/odd.out" 2>&1 && [ -f "$odd" ] || bad "-o to a file name with quotes"
want='"out": "'"$tmp"'/a \"b\" c\\d\u0009e.bin"}'
tail -n 1 "$tmp/odd.out" | grep -qF "$want" && ok "a quote, backslash and tab in -o's name are escaped in the JSON line" \
    || bad "JSON line of an odd file name: $(tail -n 1 "$tmp/odd.out") (wanted ...$want)"

# bad command lines
expect_error "unknown flag" "unknown flag '--nope'" ./train --init tiny --nope 3
expect_error "missing value" "missing value" ./train --init tiny --steps
expect_error "bad integer" "expected an integer" ./train --init tiny --steps x -o "$tmp/out.bin"
expect_error "no model" "exactly one of" ./train --steps 3
expect_error "unknown shape" "unknown shape 'huge'" ./train --init huge
expect_error "batch not multiple" "multiple of --micro-batch" ./train --init tiny --batch 6 --micro-batch 4
expect_error "unknown --ste" "--ste: expected bitdistiller or plain" ./train --init tiny --ste straight

# bad model files
expect_error "missing file" "$tmp/none.bin: cannot open" ./train -m "$tmp/none.bin" -o "$tmp/out.bin"
printf 'hello' > "$tmp/short.bin"
expect_error "file shorter than header" "short.bin: truncated" ./train -m "$tmp/short.bin" -o "$tmp/out.bin"
head -c 1024 /dev/zero > "$tmp/zero.bin"
expect_error "wrong magic" "zero.bin: not a bitdistill model file" ./train -m "$tmp/zero.bin" -o "$tmp/out.bin"
head -c 5000 "$tmp/m.bin" > "$tmp/trunc.bin"
expect_error "truncated tensors" "trunc.bin: truncated file" ./train -m "$tmp/trunc.bin" -o "$tmp/out.bin"
{ cat "$tmp/m.bin"; printf 'xxxx'; } > "$tmp/long.bin"
expect_error "trailing bytes" "long.bin: 4 trailing bytes" ./train -m "$tmp/long.bin" -o "$tmp/out.bin"
# patch one header field (little-endian int32 at a byte offset)
patch_int() { cp "$tmp/m.bin" "$tmp/$1"; printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(( $3 & 255 )) $(( ($3 >> 8) & 255 )) $(( ($3 >> 16) & 255 )) $(( ($3 >> 24) & 255 )))" | dd of="$tmp/$1" bs=1 seek="$2" conv=notrunc status=none; }
patch_int version.bin 4 9
expect_error "wrong version" "version.bin: unsupported model file version" ./train -m "$tmp/version.bin"
patch_int heads.bin 24 3      # n_kv_heads = 3 does not divide n_heads = 8
expect_error "kv heads not dividing" "heads.bin: n_kv_heads does not divide n_heads" ./train -m "$tmp/heads.bin"
patch_int dim.bin 8 65        # dim 65: tensor sizes no longer match the file
expect_error "shape mismatch" "dim.bin: truncated file" ./train -m "$tmp/dim.bin"
patch_int neg.bin 16 -2
expect_error "negative layers" "neg.bin: a size in the header is zero or negative" ./train -m "$tmp/neg.bin"
# a NaN weight (bytes of fp32 NaN at the first tensor element)
cp "$tmp/m.bin" "$tmp/nan.bin"; printf '\x00\x00\xc0\x7f' | dd of="$tmp/nan.bin" bs=1 seek=1024 conv=notrunc status=none
expect_error "NaN weight" "nan.bin: weight 0 is NaN" ./train -m "$tmp/nan.bin"

# bad token files
printf '1 2 x 3\n' > "$tmp/bad.ids"
expect_error "non-numeric ids" "bad.ids: line 1: expected a token id" ./train -m "$tmp/m.bin" --eval-ppl "$tmp/bad.ids"
printf '1 2\n3 999\n' > "$tmp/range.ids"
expect_error "id out of vocabulary" "range.ids: line 2: token id 999 out of the model's vocabulary" ./train -m "$tmp/m.bin" --eval-ppl "$tmp/range.ids"
: > "$tmp/empty.ids"
expect_error "empty ids" "empty.ids: no token ids" ./train -m "$tmp/m.bin" --eval-ppl "$tmp/empty.ids"
printf '1 2 3\n' > "$tmp/few.ids"
expect_error "fewer tokens than a window" "few.ids: 3 tokens, fewer than one perplexity window" ./train -m "$tmp/m.bin" --eval-ppl "$tmp/few.ids" -T 8

# perplexity window rule: 10 windows of 16 tokens from 170 tokens (remainder 10 dropped);
# the same ppl whatever the batch of windows
seq 0 169 | awk '{print ($1 * 7) % 256}' > "$tmp/w.ids"
a=$(./train -m "$tmp/m.bin" --eval-ppl "$tmp/w.ids" -T 16 | tail -n 1)
b=$(./train -m "$tmp/m.bin" --eval-ppl "$tmp/w.ids" -T 16 --eval-batch 4 | tail -n 1)
grep -q '"windows": 10, "T": 16' <<< "$a" && ok "ppl uses floor(170/16) = 10 windows" || bad "window count: $a"
[ "$(sed 's/.*"ppl": \([0-9.]*\).*/\1/' <<< "$a")" = "$(sed 's/.*"ppl": \([0-9.]*\).*/\1/' <<< "$b")" ] \
    && ok "ppl independent of --eval-batch" || bad "batching changes ppl: $a vs $b"
# dropping the 10 remainder tokens must not change the result
head -n 160 "$tmp/w.ids" > "$tmp/w160.ids"
c=$(./train -m "$tmp/m.bin" --eval-ppl "$tmp/w160.ids" -T 16 | tail -n 1)
[ "$(sed 's/.*"ppl": \([0-9.]*\).*/\1/' <<< "$a")" = "$(sed 's/.*"ppl": \([0-9.]*\).*/\1/' <<< "$c")" ] \
    && ok "the remainder is dropped" || bad "remainder changes ppl: $a vs $c"

# training lowers the loss on a learnable stream and writes the model atomically
seq 0 3999 | awk '{print $1 % 17}' > "$tmp/cyc.ids"
./train -m "$tmp/m.bin" --train-tokens "$tmp/cyc.ids" --steps 30 --batch 4 --micro-batch 2 --seq 32 --lr 3e-3 -o "$tmp/t.bin" > "$tmp/train.out" 2>&1
first=$(grep '^step    1/' "$tmp/train.out" | sed 's/.*loss \([0-9.]*\).*/\1/')
last=$(tail -n 1 "$tmp/train.out" | sed 's/.*"final_loss": \([0-9.]*\).*/\1/')
awk -v f="$first" -v l="$last" 'BEGIN { exit !(l < f / 4) }' && ok "training lowers the loss ($first -> $last)" || bad "loss did not fall: $first -> $last"
[ -s "$tmp/t.bin" ] && [ ! -e "$tmp/t.bin.tmp" ] && ok "model written, no temp file left" || bad "output model"

echo "train_cli: $fails failure(s)"
[ $fails -eq 0 ]

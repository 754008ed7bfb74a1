#!/usr/bin/env bash
# Quantization through the command line, on a small teacher trained here on the demo corpus:
#  - round-to-nearest evaluation (-q/-b/-g with --eval-ppl) for every quantizer; more bits,
#    lower perplexity (int 4 <= int 3 <= int 2 < int 1);
#  - QAT: a 2-bit student trained from the teacher beats its RTN perplexity; the step log has
#    the flip-flop rate; the written student reloads with its quantization and the same ppl;
#  - bad flags and a second quantization of a quantized model: one clear line, exit 1.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
. dev/test_lib.sh
ppl() { tail -n 1 | sed 's/.*"ppl": \([0-9.e+-]*\).*/\1/'; }
expect_error() {
    local name=$1 pattern=$2; shift 2
    "$@" > /dev/null 2> "$tmp/stderr"
    local rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l < "$tmp/stderr")" -eq 1 ] && grep -q "^error: .*$pattern" "$tmp/stderr"; then
        ok "$name: $(cat "$tmp/stderr")"
    else bad "$name (exit $rc: $(cat "$tmp/stderr"))"; fi
}

test_teacher "$tmp" || bad "teacher training"
head -n 6400 "$tmp/c/valid.ids" > "$tmp/v.ids"
ev() { ./train -m "$1" --eval-ppl "$tmp/v.ids" -T 128 --eval-batch 8 "${@:2}" | ppl; }
fp=$(ev "$tmp/teacher.bin")
declare -A r
for spec in "int 4" "int 3" "int 2" "int 1" "nf3 3" "nf4 4" "sign 1" "onebit 1" "ternary 2"; do
    set -- $spec
    r[$1$2]=$(ev "$tmp/teacher.bin" -q "$1" -b "$2" -g 64)
done
printf '  RTN ppl: fp %s | int4 %s int3 %s int2 %s int1 %s | nf3 %s nf4 %s | sign %s onebit %s ternary %s\n' \
    "$fp" "${r[int4]}" "${r[int3]}" "${r[int2]}" "${r[int1]}" "${r[nf33]}" "${r[nf44]}" "${r[sign1]}" "${r[onebit1]}" "${r[ternary2]}"
awk -v f="$fp" -v a="${r[int4]}" -v b="${r[int3]}" -v c="${r[int2]}" -v d="${r[int1]}" \
    'BEGIN { exit !(f <= a * 1.01 && a <= b * 1.01 && b <= c * 1.01 && c < d) }' \
    && ok "RTN: fp <= int4 <= int3 <= int2 < int1" || bad "RTN ordering"
for k in nf33 nf44 sign1 onebit1 ternary2; do
    awk -v x="${r[$k]}" 'BEGIN { exit !(x > 1 && x < 1e6) }' && ok "RTN $k evaluates (ppl ${r[$k]})" || bad "RTN $k: ${r[$k]}"
done

# QAT at 2 bits, cross-entropy on the corpus, from the teacher's weights
./train -m "$tmp/teacher.bin" -q int -b 2 -g 64 --train-tokens "$tmp/c/train.ids" --steps 40 --batch 8 --micro-batch 8 \
    --seq 128 --lr 1e-3 --log "$tmp/qat.jsonl" -o "$tmp/s2.bin" > "$tmp/qat.out" || bad "QAT run"
grep -q '| flips [0-9.]*%' "$tmp/qat.out" && ok "step lines show the flip-flop rate" || bad "no flip rate in the log"
grep -q '"flip_rate": [0-9.]*, "flips_wq": [0-9]*.*"flip_rate_layer": \[[0-9.]*, [0-9.]*, [0-9.]*, [0-9.]*\]' "$tmp/qat.jsonl" \
    && ok "JSONL log has the flip rate in total, per tensor and per layer" || bad "JSONL flips"
# the total is the codes-weighted mean of the per-layer rates
tail -n 1 "$tmp/qat.jsonl" | sed 's/.*"flip_rate": \([0-9.]*\),.*"flip_rate_layer": \[\(.*\)\].*/\1 \2/; s/,//g' \
    | awk '{ s = 0; for (i = 2; i <= NF; i++) s += $i; d = s / (NF - 1) - $1; exit !(d < 1e-6 && d > -1e-6 && $1 > 0) }' \
    && ok "total flip rate = mean of the per-layer rates, and > 0" || bad "flip rates inconsistent: $(tail -n 1 "$tmp/qat.jsonl")"
q2=$(ev "$tmp/s2.bin")
awk -v q="$q2" -v r="${r[int2]}" 'BEGIN { exit !(q < r) }' && ok "QAT 2-bit ppl $q2 < RTN 2-bit ppl ${r[int2]}" || bad "QAT $q2 vs RTN ${r[int2]}"
./train -m "$tmp/s2.bin" --eval-ppl "$tmp/v.ids" -T 128 | grep -q '^quantization: int, 2 bits, group 64' \
    && ok "the student reloads as int 2-bit g64" || bad "student reload"
q2b=$(ev "$tmp/s2.bin")
[ "$q2" = "$q2b" ] && ok "reloaded student gives the same ppl" || bad "reload ppl $q2 vs $q2b"
# learned scales survive the file: a sign student written and read back evaluates identically
./train -m "$tmp/teacher.bin" -q sign --train-tokens "$tmp/c/train.ids" --steps 3 --batch 2 --micro-batch 2 --seq 64 \
    --lr 1e-3 -o "$tmp/sign.bin" --eval-ppl "$tmp/v.ids" -T 128 --eval-batch 8 > "$tmp/sign.out"
a=$(ppl < "$tmp/sign.out"); b=$(ev "$tmp/sign.bin")
[ "$a" = "$b" ] && ok "sign student (learned alpha, beta) round-trips through its file" || bad "sign reload $a vs $b"

# clipping search: lowers the layer-output error of 2-bit RTN, writes a full-precision model
./train -m "$tmp/teacher.bin" --clip --calib "$tmp/c/train.ids" --calib-seqs 8 --calib-len 128 -q int -b 2 -g 64 \
    -o "$tmp/clipped.bin" > "$tmp/clip.out" || bad "--clip run"
er=$(tail -n 1 "$tmp/clip.out" | sed 's/.*"err_rtn": \([0-9.e+-]*\).*/\1/')
ec=$(tail -n 1 "$tmp/clip.out" | sed 's/.*"err_clipped": \([0-9.e+-]*\).*/\1/')
awk -v r="$er" -v c="$ec" 'BEGIN { exit !(c < r) }' && ok "clipping lowers the output error ($er -> $ec)" || bad "clip error $er -> $ec"
grep -c '^clip: layer' "$tmp/clip.out" | grep -qx 4 && ok "clipping reports every layer" || bad "clip layer lines"
./train -m "$tmp/clipped.bin" --eval-ppl "$tmp/v.ids" -T 128 | grep -q '^quantization' && bad "clipped model should be full precision" || ok "the clipped model is full precision"
rc=$(ev "$tmp/clipped.bin" -q int -b 2 -g 64)
printf '  (2-bit RTN ppl: plain %s, clipped %s)\n' "${r[int2]}" "$rc"
expect_error "--clip with sign" "use -q int, nf3 or nf4" ./train -m "$tmp/teacher.bin" --clip --calib "$tmp/c/train.ids" -q sign -o "$tmp/x.bin"
expect_error "--clip without --calib" "--clip needs --calib" ./train -m "$tmp/teacher.bin" --clip -q int -b 2 -o "$tmp/x.bin"

# packed low-bit files: size, reload, bad files
./train -m "$tmp/s2.bin" --export-packed "$tmp/s2.qbin" > "$tmp/pack.out" || bad "--export-packed"
grep -q 'the linears take 2.500 bits per weight' "$tmp/pack.out" && ok "int2 g64 packs to 2.5 bits per linear weight" || bad "bits per weight: $(grep wrote "$tmp/pack.out")"
qp=$(ev "$tmp/s2.qbin")
awk -v a="$qp" -v b="$q2" 'BEGIN { d = (a - b) / b; exit !(d < 1e-3 && d > -1e-3) }' && ok "packed student ppl $qp = fake-quantized $q2 (fp16 scales)" || bad "packed ppl $qp vs $q2"
head -c 3000 "$tmp/s2.qbin" > "$tmp/trunc.qbin"
expect_error "truncated .qbin" "trunc.qbin: .* bytes, but its header implies" ./train -m "$tmp/trunc.qbin" --eval-ppl "$tmp/v.ids"
expect_error "packing a full-precision model" "--export-packed needs a quantized model" ./train -m "$tmp/teacher.bin" --export-packed "$tmp/x.qbin"
[ ! -e "$tmp/x.qbin" ] && [ ! -e "$tmp/x.qbin.tmp" ] && ok "no packed file left after the error" || bad "packed file left behind"

# a quantized student exported to Hugging Face carries W^: importing it back gives a
# full-precision model with exactly the student's perplexity
./convert --to-hf "$tmp/s2.bin" "$tmp/s2hf" > /dev/null && ./convert "$tmp/s2hf" "$tmp/s2back.bin" > /dev/null || bad "--to-hf of a student"
./convert --to-hf "$tmp/sign.bin" "$tmp/signhf" > /dev/null && ./convert "$tmp/signhf" "$tmp/signback.bin" > /dev/null || bad "--to-hf of a sign student"
qb=$(ev "$tmp/s2back.bin"); sb=$(ev "$tmp/signback.bin")
[ "$qb" = "$q2" ] && ok "--to-hf of the int2 student: same ppl in full precision ($qb)" || bad "--to-hf int2: $qb vs $q2"
[ "$sb" = "$b" ] && ok "--to-hf of the sign student (learned scales): same ppl ($sb)" || bad "--to-hf sign: $sb vs $b"

# histograms of one layer: CSV (64 bins per linear), SVG, code entropy at most the bit width
./train -m "$tmp/s2.bin" --histogram 1 --histogram-out "$tmp/h" > "$tmp/hist.out" || bad "--histogram"
[ "$(grep -c '^wq,' "$tmp/h.csv")" -eq 64 ] && grep -q '^<svg' "$tmp/h.svg" && ok "histogram CSV (64 bins) and SVG written" || bad "histogram files"
awk '/codes [0-9.]+ of 2 bits/ { for (i = 1; i <= NF; i++) if ($i == "codes") { e = $(i + 1); if (e > 2 || e < 1) bad = 1; n++ } }
     END { exit !(n == 7 && !bad) }' "$tmp/hist.out" && ok "7 code entropies in (1, 2] bits" || bad "code entropies: $(cat "$tmp/hist.out")"
expect_error "histogram layer out of range" "layer 9 out of range" ./train -m "$tmp/s2.bin" --histogram 9 --histogram-out "$tmp/h9"

expect_error "int at 5 bits" "int supports 1, 2, 3, 4 or 8 bits" ./train -m "$tmp/teacher.bin" -q int -b 5
expect_error "nf3 at 2 bits" "nf3 is a 3-bit quantizer" ./train -m "$tmp/teacher.bin" -q nf3 -b 2
expect_error "unknown quantizer" "unknown quantizer 'int9'" ./train -m "$tmp/teacher.bin" -q int9 -b 2
expect_error "group not dividing" "group size 48 does not divide the input dimension 64" ./train -m "$tmp/teacher.bin" -q int -b 2 -g 48
expect_error "group not dividing: the sizes that would" "that would work (dividing 64, 64 and 192): 1, 2, 4, 8, 16, 32, 64, or -1 (whole rows)" \
    ./train -m "$tmp/teacher.bin" -q int -b 2 -g 48
expect_error "quantizing a quantized model" "s2.bin: the model is already quantized" ./train -m "$tmp/s2.bin" -q int -b 3

echo "quant: $fails failure(s)"
[ $fails -eq 0 ]

#!/usr/bin/env bash
# A careless command line and a full disk, with the tiny shape: each case must exit 1 with one
# line "error: ..." naming the problem, before any work where the problem is in the command
# line, and nothing the user had may be lost or replaced:
#  - outputs that are not regular files (a FIFO, a folder) or lie in a missing folder, for every
#    program and every output flag; an existing -o file intact when the run fails;
#  - write errors: --log and stdout on /dev/full (a full disk for streams);
#  - --log with --resume: each step logged once, the same lines as an uninterrupted run;
#  - numeric flags: 0, negative, out of range, where the help says they must be positive;
#  - an unknown flag last on the line; the NaN stop naming its checkpoint and step; --data
#    with no token to train on; messages naming the group size and the dimension.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
. dev/test_lib.sh
# TRAIN=./train_cu runs the train cases on the GPU build (its command line is train.c's)
train=${TRAIN:-./train}

# expect_refused NAME PATTERN CMD...: exit 1, one line "error: ...PATTERN" (grep -E), no training
# step printed (refused before any work), within 60 s (a FIFO opened for writing would block)
expect_refused() {
    local name=$1 pattern=$2; shift 2
    timeout 60 "$@" > "$tmp/stdout" 2> "$tmp/stderr"
    local rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l < "$tmp/stderr")" -eq 1 ] && grep -qE "^error: .*$pattern" "$tmp/stderr" \
        && ! grep -q '^step ' "$tmp/stdout"; then
        ok "$name: $(sed "s|$tmp/||g" "$tmp/stderr")"
    else
        bad "$name (exit $rc, stderr: $(head -c 300 "$tmp/stderr"), $(grep -c '^step ' "$tmp/stdout") steps; wanted error: ...$pattern)"
    fi
}

$train --init tiny -o "$tmp/m.bin" > /dev/null || bad "--init tiny"
./run.sh tokenizer "$tmp/m.bin.tokenizer"
seq 0 2999 | awk '{print $1 % 17}' > "$tmp/c.ids"
for i in 1 2 3 4 5 6; do echo '{"text": "abc"}'; done > "$tmp/few.jsonl"
run=(-m "$tmp/m.bin" --train-tokens "$tmp/c.ids" --steps 2 --batch 2 --micro-batch 2 --seq 16 --threads 1)

echo "outputs that are not regular files, or in no folder"
mkfifo "$tmp/fifo" "$tmp/fifo.csv" "$tmp/fifo.bin.tmp"
mkdir "$tmp/dir"
expect_refused "-o a FIFO" "fifo: not a regular file" $train "${run[@]}" -o "$tmp/fifo"
[ -p "$tmp/fifo" ] && ok "the FIFO is still a FIFO" || bad "the FIFO was replaced"
expect_refused "-o a folder" "dir: a folder" $train "${run[@]}" -o "$tmp/dir"
expect_refused "-o in a missing folder" "nope/m.bin: the folder .*nope does not exist" $train "${run[@]}" -o "$tmp/nope/m.bin"
expect_refused "-o whose temp file is a FIFO" "fifo.bin.tmp: not a regular file" $train "${run[@]}" -o "$tmp/fifo.bin"
expect_refused "--ckpt a FIFO" "fifo: not a regular file" $train "${run[@]}" --ckpt "$tmp/fifo"
expect_refused "-o's checkpoint a folder" "x.bin.ckpt: a folder" \
    bash -c "mkdir -p '$tmp/x.bin.ckpt' && $train ${run[*]} -o '$tmp/x.bin'"
expect_refused "--log a folder" "dir: a folder" $train "${run[@]}" --log "$tmp/dir"
expect_refused "--log in a missing folder" "the folder .*nope does not exist" $train "${run[@]}" --log "$tmp/nope/log.jsonl"
expect_refused "--export-packed a FIFO" "fifo: not a regular file" $train "${run[@]}" -b 2 -g 64 --export-packed "$tmp/fifo"
expect_refused "--histogram-out onto a FIFO" "fifo.csv: not a regular file" $train "${run[@]}" -b 2 -g 64 --histogram 0 --histogram-out "$tmp/fifo"
expect_refused "--generate-data -o a FIFO" "fifo: not a regular file" \
    $train -m "$tmp/m.bin" --generate-data --prompts "text:$tmp/c.ids" --n 2 --max-new 2 -o "$tmp/fifo"
expect_refused "convert -o a FIFO" "fifo: not a regular file" ./convert --from-llama2c "$tmp/m.bin" "$tmp/fifo"
expect_refused "convert --to-hf into a file" "m.bin: not a folder" ./convert --to-hf "$tmp/m.bin" "$tmp/m.bin"
expect_refused "-o and --log on one path" "both -o and --log would be written there" $train "${run[@]}" -o "$tmp/same" --log "$tmp/same"
expect_refused "--export-packed onto -o's checkpoint" "both -o's checkpoint and --export-packed" \
    $train "${run[@]}" -b 2 -g 64 -o "$tmp/same" --export-packed "$tmp/same.ckpt"
cp "$tmp/m.bin" "$tmp/in.bin"
expect_refused "--generate-data -o onto -m" "in.bin: -o would replace the -m input" \
    $train -m "$tmp/in.bin" --generate-data --prompts "text:$tmp/c.ids" --n 2 --max-new 2 -o "$tmp/in.bin"
expect_refused "--log onto --train-tokens" "c.ids: --log would replace the --train-tokens input" $train "${run[@]}" --log "$tmp/c.ids"
expect_refused "--export-packed onto -m" "in.bin: --export-packed would replace the -m input" $train -m "$tmp/in.bin" -b 2 -g 64 --export-packed "$tmp/in.bin"
cmp -s "$tmp/m.bin" "$tmp/in.bin" && ok "the inputs are intact" || bad "an input was changed"
[ -p "$tmp/fifo" ] && [ -p "$tmp/fifo.csv" ] && [ -d "$tmp/dir" ] && ok "FIFOs and folders untouched" || bad "a FIFO or folder was replaced"
# a failed run leaves the existing -o file as it was
cp "$tmp/m.bin" "$tmp/keep.bin"
$train "${run[@]}" --inject-nan 2 -o "$tmp/keep.bin" > /dev/null 2>&1
cmp -s "$tmp/m.bin" "$tmp/keep.bin" && [ ! -e "$tmp/keep.bin.tmp" ] && ok "a run stopped by NaN leaves the existing -o file intact" \
    || bad "the existing -o file changed"

echo "a folder where a file is read"
expect_refused "-m a folder" "dir: a folder, not a file" $train -m "$tmp/dir"
expect_refused "--train-tokens a folder" "dir: a folder, not a file" $train -m "$tmp/m.bin" --train-tokens "$tmp/dir"
expect_refused "--resume a folder" "dir: a folder, not a file" $train "${run[@]}" --resume "$tmp/dir"
expect_refused "tokenize a folder" "dir: a folder, not a file" ./tokenize "$tmp/dir" "hello"
expect_refused "convert --from-llama2c a folder" "dir: a folder, not a file" ./convert --from-llama2c "$tmp/dir" "$tmp/out.bin"

echo "write errors"
if [ -w /dev/full ]; then
    expect_error "--log /dev/full" "/dev/full: write failed" $train "${run[@]}" --log /dev/full
    expect_error "train's stdout on /dev/full" "stdout: write failed" bash -c "$train -m '$tmp/m.bin' --eval-ppl '$tmp/c.ids' -T 16 > /dev/full"
    expect_error "train --help on /dev/full" "stdout: write failed" bash -c "$train --help > /dev/full"
    expect_error "tokenize's stdout on /dev/full" "stdout: write failed" bash -c "./tokenize '$tmp/m.bin.tokenizer' 'hello' > /dev/full"
    expect_error "tokenize --decode's stdout on /dev/full" "stdout: write failed" bash -c "./tokenize --decode '$tmp/m.bin.tokenizer' 104 105 > /dev/full"
    expect_error "convert's stdout on /dev/full" "stdout: write failed" bash -c "./convert --to-hf '$tmp/m.bin' '$tmp/hf' > /dev/full"
else
    echo "  skipped: /dev/full is not writable here (the write-error cases)"
fi

# a full disk under the log: write() fails with EFBIG past 2 KB (SIGXFSZ ignored, else it kills)
( trap '' XFSZ; ulimit -f 2; exec $train "${run[@]}" -b 2 -g 64 --steps 20 --log "$tmp/full.jsonl" ) > /dev/null 2> "$tmp/stderr"
rc=$?
[ $rc -eq 1 ] && grep -q "full.jsonl: write failed (File too large)" "$tmp/stderr" && [ "$(tail -c 2 "$tmp/full.jsonl")" = "}" ] \
    && [ "$(wc -l < "$tmp/full.jsonl")" -ge 1 ] \
    && ok "--log on a full disk: $(sed "s|$tmp/||g" "$tmp/stderr"); the log ends with its last whole line ($(wc -l < "$tmp/full.jsonl") lines)" \
    || bad "--log on a full disk: exit $rc, $(cat "$tmp/stderr"), log ends with '$(tail -c 20 "$tmp/full.jsonl")'"

echo "--log with --resume"
log_steps() { sed -n 's/^{"step": \([0-9]*\), "loss": \([0-9.]*\),.*/\1 \2/p' "$1"; }
lrun=(-m "$tmp/m.bin" -b 2 -g 64 --train-tokens "$tmp/c.ids" --steps 8 --batch 2 --micro-batch 2 --seq 16 --threads 1 --save-every 3)
$train "${lrun[@]}" --log "$tmp/straight.jsonl" > /dev/null || bad "the uninterrupted logged run"
# stopped by a NaN at step 6, after the checkpoint of step 3 and the log lines of steps 1..5
$train "${lrun[@]}" --log "$tmp/resumed.jsonl" --ckpt "$tmp/r.ckpt" --inject-nan 6 > /dev/null 2>&1
printf '{"step": 5, "loss": 1.0' >> "$tmp/resumed.jsonl"  # and a line torn by a kill
$train "${lrun[@]}" --log "$tmp/resumed.jsonl" --ckpt "$tmp/r.ckpt" --resume "$tmp/r.ckpt" > /dev/null || bad "the resumed run"
[ "$(log_steps "$tmp/resumed.jsonl" | cut -d' ' -f1 | tr '\n' ' ')" = "1 2 3 4 5 6 7 8 " ] \
    && ok "resumed from step 3 after a stop at step 6: steps 1..8 logged once each" \
    || bad "steps logged: $(log_steps "$tmp/resumed.jsonl" | cut -d' ' -f1 | tr '\n' ' ')"
[ "$(log_steps "$tmp/resumed.jsonl")" = "$(log_steps "$tmp/straight.jsonl")" ] && [ "$(wc -l < "$tmp/resumed.jsonl")" -eq 8 ] \
    && ok "the resumed log's steps and losses equal the uninterrupted run's, no torn line" \
    || bad "the resumed log differs from the uninterrupted one"

echo "numeric flags"
expect_refused "-b 0" "-b: bits must be" $train "${run[@]}" -b 0 -o "$tmp/out.bin"
[ ! -e "$tmp/out.bin" ] && ok "-b 0 wrote no model" || bad "-b 0 wrote a model"
expect_refused "-b -2" "-b: bits must be" $train "${run[@]}" -b -2
expect_refused "-b 5" "int supports 1, 2, 3, 4 or 8 bits" $train "${run[@]}" -b 5
expect_refused "--seq 0" "--seq must be positive" $train "${run[@]}" --seq 0
expect_refused "-T 0" "-T must be positive" $train -m "$tmp/m.bin" --eval-ppl "$tmp/c.ids" -T 0
expect_refused "--calib-len 0" "--calib-len must be positive" $train "${run[@]}" --calib-len 0
expect_refused "--histogram -2" "--histogram: layer -2" $train "${run[@]}" -b 2 -g 64 --histogram -2
expect_refused "--warmup -1" "--warmup must not be negative" $train "${run[@]}" --warmup -1
expect_refused "--min-lr -1" "--min-lr must not be negative" $train "${run[@]}" --min-lr -1
expect_refused "--weight-decay -0.1" "--weight-decay must not be negative" $train "${run[@]}" --weight-decay -0.1
expect_refused "--grad-clip -1" "--grad-clip must not be negative" $train "${run[@]}" --grad-clip -1
expect_refused "--seed -1" "--seed must not be negative" $train "${run[@]}" --seed -1
expect_refused "--threads 1000000" "--threads must be between 1 and 4096" $train "${run[@]}" --threads 1000000
expect_refused "--steps 99999999999" "expected an integer" $train "${run[@]}" --steps 99999999999
expect_refused "--steps 3x" "expected an integer" $train "${run[@]}" --steps 3x
expect_refused "--lr nan" "expected a number" $train "${run[@]}" --lr nan
expect_refused "--lr inf" "expected a number" $train "${run[@]}" --lr inf
expect_refused "--lr 1e99" "expected a number" $train "${run[@]}" --lr 1e99

expect_refused "--epochs beyond 2^31 steps" "more than 2\^31 - 1" \
    $train -m "$tmp/m.bin" --data "$tmp/few.jsonl" --epochs 2000000000 --batch 1 --micro-batch 1 --seq 16

echo "the command line's words"
# every flag --help lists with a value says "missing value" when it is given last
missing=0
for f in $($train --help | sed -n 's/^  \(-[-a-zA-Z]*\) [^ ].*/\1/p'); do
    $train -m "$tmp/m.bin" "$f" > /dev/null 2> "$tmp/stderr"
    grep -q "^error: $f: missing value" "$tmp/stderr" || { missing=$((missing + 1)); echo "    $f last: $(cat "$tmp/stderr")"; }
done
[ $missing -eq 0 ] && ok "each flag of --help that takes a value says 'missing value' when given last" || bad "$missing flags"
expect_refused "an unknown flag last" "unknown flag '--frobnicate'" $train -m "$tmp/m.bin" --frobnicate
expect_refused "a known flag last" "--steps: missing value" $train -m "$tmp/m.bin" --steps
expect_refused "tokenize -f last" "-f: missing value" ./tokenize -f
expect_refused "convert --to-hf and --from-llama2c" "one of --to-hf, --from-llama2c and --to-gguf" ./convert --to-hf --from-llama2c "$tmp/m.bin" "$tmp/o"
expect_refused "-g 7" "group size 7 does not divide .*64" $train "${run[@]}" -b 2 -g 7

echo "a NaN stop names its checkpoint"
expect_error "NaN, no checkpoint written" "step 2: the loss is nan; stopping; no checkpoint was written" $train "${run[@]}" --inject-nan 2
expect_error "NaN after a checkpoint" "step 5: the loss is nan; stopping; the checkpoint .*r2.ckpt of step 3 is intact" \
    $train "${lrun[@]}" --ckpt "$tmp/r2.ckpt" --inject-nan 5

echo "data with nothing to train on"
for i in 1 2 3 4 5 6; do echo '{"text": ""}'; done > "$tmp/empty.jsonl"
expect_refused "--data of empty examples" "empty.jsonl: the training examples hold no token to predict" \
    $train -m "$tmp/m.bin" -b 2 -g 64 --data "$tmp/empty.jsonl" --steps 2 --batch 2 --micro-batch 2 --seq 16

echo "hardening: $fails failure(s)"
[ $fails -eq 0 ]

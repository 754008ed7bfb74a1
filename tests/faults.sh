#!/usr/bin/env bash
# Fault injection on CPU with the tiny model (a 2-bit student of a random teacher; the numbers
# do not matter, the bits do):
#  - kill -9 at random moments, again and again, each time --resume from what is on disk: the
#    final model and checkpoint equal an uninterrupted run bit for bit, and every checkpoint
#    seen on disk (polled while the runs are killed, and after each kill) is exactly the one of
#    some step of the uninterrupted run: the old one or the new one, never a torn file;
#  - a full disk (ulimit -f with SIGXFSZ ignored, so write() fails with EFBIG) while writing a
#    checkpoint, the model (-o), the packed model (--export-packed) and a Hugging Face export:
#    exit 1 with one clear line, the previous file intact, no partial file left;
#  - checkpoints that must be refused: of another model, truncated, with NaN in the saved
#    state, with a flipped header byte.
# (NaN weights and losses during training, and checkpoints of another quantizer or batch, are
# tested in tests/distill.sh.)
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); bgpid=; pollpid=
trap 'kill -9 $bgpid $pollpid 2>/dev/null; rm -rf "$tmp"' EXIT
fails=0
. dev/test_lib.sh
sum() { cksum < "$1" | cut -d' ' -f1,2; }

# data (random bytes as tokens), a random teacher, the training command
awk 'BEGIN { srand(7); for (i = 0; i < 30000; i++) printf "%d%s", int(rand() * 256), i % 20 == 19 ? "\n" : " " }' > "$tmp/t.ids"
./train --init tiny --seed 1 -o "$tmp/teacher.bin" > /dev/null || bad "teacher"
N=16
common=(-m "$tmp/teacher.bin" -q int -b 2 -g 64 --train-tokens "$tmp/t.ids" --steps $N --batch 4 --micro-batch 2 --seq 64
        --lr 1e-3 --save-every 1 --threads 1)

# the uninterrupted run, and the checkpoint of every step (one step at a time, resuming)
./train "${common[@]}" -o "$tmp/straight.bin" > /dev/null || bad "straight run"
: > "$tmp/legit"
./train "${common[@]}" --ckpt "$tmp/chain.ckpt" --stop-after 1 > /dev/null && sum "$tmp/chain.ckpt" >> "$tmp/legit"
for k in $(seq 2 $N); do
    ./train "${common[@]}" --ckpt "$tmp/chain.ckpt" --resume "$tmp/chain.ckpt" --stop-after $k > /dev/null && sum "$tmp/chain.ckpt" >> "$tmp/legit"
done
[ "$(sort -u "$tmp/legit" | wc -l)" -eq $N ] && [ "$(tail -n 1 "$tmp/legit")" = "$(sum "$tmp/straight.bin.ckpt")" ] \
    && ok "$N one-step resumes give $N distinct checkpoints, the last one the uninterrupted run's" \
    || bad "checkpoints of the one-step chain ($(sort -u "$tmp/legit" | wc -l) distinct)"

# kill -9 at random moments; resume; repeat until the run completes
ckpt=$tmp/killed.bin.ckpt
poll() {  # every checkpoint on disk, as often as it can be read
    while :; do cat "$ckpt" > "$tmp/snap" 2>/dev/null && sum "$tmp/snap" >> "$tmp/seen"; sleep 0.01; done
}
: > "$tmp/seen"
poll & pollpid=$!
RANDOM=$$
kills=0 resumes=0 steps_at_kill=()
for attempt in 1 2 3 4 5 6 last; do  # six runs killed at a random moment, then one to the end
    resume=(); [ -f "$ckpt" ] && resume=(--resume "$ckpt") && resumes=$((resumes + 1))
    : > "$tmp/run.out"
    ./train "${common[@]}" "${resume[@]}" -o "$tmp/killed.bin" > "$tmp/run.out" 2>&1 &
    bgpid=$!
    if [ $attempt != last ]; then
        # the moment: after 0, 1 or 2 steps of this run, then 0 to 0.15 s into the next one
        k=$((RANDOM % 3))
        while kill -0 $bgpid 2>/dev/null && [ "$(grep -c '^step' "$tmp/run.out")" -lt $k ]; do sleep 0.005; done
        sleep "0.$(printf '%03d' $((RANDOM % 150)))"
        if kill -9 $bgpid 2>/dev/null; then
            wait $bgpid 2>/dev/null
            kills=$((kills + 1))
            steps_at_kill+=("$(grep -c '^step' "$tmp/run.out")")
            [ -f "$ckpt" ] && sum "$ckpt" >> "$tmp/seen"
            continue
        fi
    fi
    wait $bgpid; rc=$?; bgpid=
    [ $rc -eq 0 ] || bad "a resumed run failed: $(tail -n 1 "$tmp/run.out")"
    break
done
kill -9 $pollpid 2>/dev/null; wait $pollpid 2>/dev/null; pollpid=
[ $kills -ge 3 ] && ok "killed $kills times (after ${steps_at_kill[*]} logged steps), resumed $resumes times" \
    || bad "only $kills kills happened (the runs were too fast to interrupt)"
cmp -s "$tmp/killed.bin" "$tmp/straight.bin" && cmp -s "$ckpt" "$tmp/straight.bin.ckpt" \
    && ok "after the kills and resumes: model and checkpoint bit-identical to the uninterrupted run" \
    || bad "the killed-and-resumed run differs from the uninterrupted one"
n_seen=$(wc -l < "$tmp/seen"); n_distinct=$(sort -u "$tmp/seen" | wc -l)
torn=$(sort -u "$tmp/seen" | grep -v -x -F -f "$tmp/legit" | wc -l)
[ "$n_seen" -gt 10 ] && [ "$torn" -eq 0 ] \
    && ok "$n_seen reads of the checkpoint during the kills ($n_distinct distinct): each one a step's complete checkpoint" \
    || bad "$torn of $n_distinct checkpoints seen on disk are no step's checkpoint ($n_seen reads)"

# a full disk: write() fails with EFBIG past the limit (SIGXFSZ ignored, else it kills)
expect_full() {  # NAME FILE LIMIT_KB COMMAND...: fails with one line, FILE unchanged, no FILE.tmp
    local name=$1 file=$2 limit=$3; shift 3
    cp "$file" "$tmp/before"
    ( trap '' XFSZ; ulimit -f "$limit"; exec "$@" ) > /dev/null 2> "$tmp/stderr"
    local rc=$?
    if [ $rc -eq 1 ] && [ "$(wc -l < "$tmp/stderr")" -eq 1 ] && grep -q '^error: .*\(write\|close\) failed (File too large)' "$tmp/stderr" \
        && cmp -s "$file" "$tmp/before" && [ ! -e "$file.tmp" ]; then
        ok "full disk, $name: $(cat "$tmp/stderr"); the previous file intact, no .tmp left"
    else
        bad "full disk, $name: exit $rc, $(cat "$tmp/stderr"), file $(cmp -s "$file" "$tmp/before" && echo intact || echo CHANGED), tmp $([ -e "$file.tmp" ] && echo LEFT || echo none)"
    fi
}
cp "$tmp/straight.bin.ckpt" "$tmp/full.ckpt"
ck_kb=$(( $(wc -c < "$tmp/full.ckpt") / 1024 ))
expect_full "checkpoint" "$tmp/full.ckpt" $((ck_kb / 2)) \
    ./train "${common[@]}" --steps $((N + 2)) --resume "$tmp/full.ckpt" --ckpt "$tmp/full.ckpt"
cp "$tmp/straight.bin" "$tmp/full.bin"
expect_full "model (-o)" "$tmp/full.bin" 100 ./train -m "$tmp/straight.bin" -o "$tmp/full.bin"
./train -m "$tmp/straight.bin" --export-packed "$tmp/full.qbin" > /dev/null || bad "export-packed"
expect_full "packed model (--export-packed)" "$tmp/full.qbin" 20 ./train -m "$tmp/straight.bin" --export-packed "$tmp/full.qbin"
./train -m "$tmp/teacher.bin" -o "$tmp/fp.bin" > /dev/null
./convert --to-hf "$tmp/fp.bin" "$tmp/hf" > /dev/null || bad "convert --to-hf"
expect_full "Hugging Face export (convert --to-hf)" "$tmp/hf/model.safetensors" 100 ./convert --to-hf "$tmp/fp.bin" "$tmp/hf"
( trap '' XFSZ; ulimit -f 100; exec ./convert --to-hf "$tmp/fp.bin" "$tmp/hfnew" ) > /dev/null 2> "$tmp/stderr" && bad "--to-hf onto a full disk succeeded"
[ ! -e "$tmp/hfnew" ] && ok "full disk, --to-hf into a new folder: $(cat "$tmp/stderr"); the folder it made is gone" \
    || bad "full disk, --to-hf into a new folder left $(ls "$tmp/hfnew" | tr '\n' ' ')"

# checkpoints that must be refused
./train --init tiny --vocab 300 --seed 1 -o "$tmp/other.bin" > /dev/null
expect_error "checkpoint of another model (vocab 256 vs 300)" "a checkpoint of another model or quantizer" \
    ./train "${common[@]}" -m "$tmp/other.bin" --resume "$tmp/straight.bin.ckpt"
head -c -1 "$tmp/straight.bin.ckpt" > "$tmp/trunc.ckpt"
expect_error "truncated checkpoint" "bytes, expected" ./train "${common[@]}" --resume "$tmp/trunc.ckpt"
cp "$tmp/straight.bin.ckpt" "$tmp/nan.ckpt"  # the last float (AdamW v) becomes NaN
printf '\x00\x00\xc0\x7f' | dd of="$tmp/nan.ckpt" bs=1 seek=$(( $(wc -c < "$tmp/nan.ckpt") - 4 )) conv=notrunc 2>/dev/null
expect_error "NaN in a checkpoint" "NaN or Inf in the saved state" ./train "${common[@]}" --resume "$tmp/nan.ckpt"
cp "$tmp/straight.bin.ckpt" "$tmp/flip.ckpt"  # a byte of the header's dim
printf '\x41' | dd of="$tmp/flip.ckpt" bs=1 seek=16 conv=notrunc 2>/dev/null
expect_error "checkpoint with a changed header" "a checkpoint of another model or quantizer" ./train "${common[@]}" --resume "$tmp/flip.ckpt"
cp "$tmp/straight.bin.ckpt" "$tmp/step.ckpt"  # the saved step (after magic, version, 1024-byte header) becomes -5
printf '\xfb\xff\xff\xff\xff\xff\xff\xff' | dd of="$tmp/step.ckpt" bs=1 seek=1032 conv=notrunc 2>/dev/null
expect_error "checkpoint with a corrupt training state" "corrupt training state (step -5" ./train "${common[@]}" --resume "$tmp/step.ckpt"
expect_error "checkpoint beyond the run's steps" "beyond the run's 2 steps" ./train "${common[@]}" --steps 2 --resume "$tmp/straight.bin.ckpt"

echo "faults: $fails failure(s)"
[ $fails -eq 0 ]

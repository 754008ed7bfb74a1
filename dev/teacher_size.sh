#!/usr/bin/env bash
# Does a larger teacher make a better low-bit student? (BitDistiller, Du et al. 2024, found
# self-distillation at least as good as a larger teacher; the seed study asks again at small scale.)
#
#   dev/teacher_size.sh corpus DIR [TOKENIZER]   writes DIR/train.txt, DIR/valid.txt: the Python
#                                     standard library's source (every .py file under python3's
#                                     stdlib folder, sorted by path; every 20th file held out) and
#                                     DIR/tokenizer.model (Llama-2's, from ../shared/data)
#   dev/teacher_size.sh run DIR       on a GPU machine (./train_cu built): pretrains three teachers
#                                     of one tokenizer and growing size (study-10m, study-40m,
#                                     bench-100m: 11M, 42M, 100M parameters) on DIR/train.txt for the
#                                     same number of tokens, then distils the smallest into 2 bits
#                                     (INT-Asym g128, clipping search, CAKLD) from each of them,
#                                     itself included, on the same text; prints the perplexities on
#                                     DIR/valid.txt as a table and one JSON line
#
# Environment: STEPS (teacher steps, 1500), QAT_STEPS (each student's, 500), BATCH (32), SEQ (512),
# TRAIN (the trainer, ./train_cu; ./train runs the same on a CPU, for days at these sizes).
set -euo pipefail
cd "$(dirname "$0")/.."

corpus() {
    local dir=$1 tok=${2:-../shared/data/llama2-tokenizer/tokenizer.model}
    mkdir -p "$dir"
    local lib; lib=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
    find "$lib" -name '*.py' -not -path '*/site-packages/*' | LC_ALL=C sort > "$dir/files.txt"
    : > "$dir/train.txt.tmp"; : > "$dir/valid.txt.tmp"
    local i=0
    while IFS= read -r f; do
        if [ $((i % 20)) -eq 19 ]; then cat "$f" >> "$dir/valid.txt.tmp"; else cat "$f" >> "$dir/train.txt.tmp"; fi
        i=$((i + 1))
    done < "$dir/files.txt"
    mv "$dir/train.txt.tmp" "$dir/train.txt"; mv "$dir/valid.txt.tmp" "$dir/valid.txt"
    cp "$tok" "$dir/tokenizer.model"
    echo "corpus: $i files of $lib ($(python3 -V)); train $(wc -c < "$dir/train.txt") bytes, valid $(wc -c < "$dir/valid.txt") bytes"
}

run() {
    local dir=$1 train=${TRAIN:-./train_cu}
    local steps=${STEPS:-1500} qsteps=${QAT_STEPS:-500} batch=${BATCH:-32} seq=${SEQ:-512}
    local out=$dir/out tok=$dir/tokenizer.model
    mkdir -p "$out"
    # the training text tokenized once (BOS first, as the trainers tokenize a text file) for every run
    if [ ! -s "$dir/train.ids" ]; then
        make -s tokenize
        ./tokenize -f "$dir/train.txt" "$tok" | tr -d '[] ' | tr ',' '\n' > "$dir/train.ids.tmp"
        mv "$dir/train.ids.tmp" "$dir/train.ids"
        echo "tokenized $dir/train.txt: $(wc -l < "$dir/train.ids") tokens"
    fi
    local data=(--train-tokens "$dir/train.ids" --tokenizer "$tok" --batch "$batch" --micro-batch "$batch" --seq "$seq")
    ppl() { "$train" -m "$1" --tokenizer "$tok" --eval-ppl "$dir/valid.txt" -T "$seq" --eval-batch 16 "${@:2}" \
            | tail -n 1 | sed 's/.*"ppl": \([0-9.e+-]*\).*/\1/'; }
    local shapes=(study-10m study-40m bench-100m) lrs=(1e-3 8e-4 6e-4) min_lrs=(1e-5 8e-6 6e-6)
    declare -A tppl sppl
    for k in 0 1 2; do
        local s=${shapes[$k]}
        if [ ! -s "$out/teacher-$s.bin" ]; then
            echo "== teacher $s: $steps steps of $batch x $seq tokens"
            "$train" --init "$s" --seed 1 -o "$out/init-$s.bin" | tail -n 1
            "$train" -m "$out/init-$s.bin" "${data[@]}" --steps "$steps" --lr "${lrs[$k]}" --min-lr "${min_lrs[$k]}" \
                --schedule cosine --warmup 100 --weight-decay 0.1 --seed 2 --log "$out/teacher-$s.jsonl" \
                -o "$out/teacher-$s.bin" | awk 'NR % 200 == 1 || /^\{/'
        fi
        tppl[$s]=$(ppl "$out/teacher-$s.bin")
        echo "teacher $s: held-out ppl ${tppl[$s]}"
    done
    local st=$out/teacher-study-10m.bin q=(-b 2 -g 128 -q int)
    [ -s "$out/clipped.bin" ] || "$train" -m "$st" --tokenizer "$tok" --clip --calib "$dir/train.ids" "${q[@]}" \
        --calib-seqs 64 --calib-len "$seq" -o "$out/clipped.bin" | tail -n 1
    local rtn clip
    rtn=$(ppl "$st" "${q[@]}")
    clip=$(ppl "$out/clipped.bin" "${q[@]}")
    for s in "${shapes[@]}"; do
        if [ ! -s "$out/student-from-$s.bin" ]; then
            echo "== 2-bit study-10m student, teacher $s: $qsteps steps"
            "$train" -m "$st" --clip-init "$out/clipped.bin" "${q[@]}" -t "$out/teacher-$s.bin" "${data[@]}" \
                --steps "$qsteps" --lr 2e-4 --schedule cosine --warmup 20 --seed 3 --log "$out/student-from-$s.jsonl" \
                -o "$out/student-from-$s.bin" | awk 'NR % 100 == 1 || /^\{/'
        fi
        sppl[$s]=$(ppl "$out/student-from-$s.bin")
    done
    printf '\n| teacher | teacher ppl | 2-bit study-10m student ppl |\n|---|---|---|\n'
    for s in "${shapes[@]}"; do printf '| %s | %s | %s |\n' "$s" "${tppl[$s]}" "${sppl[$s]}"; done
    printf '| (none: round-to-nearest) | | %s |\n| (none: clipped round-to-nearest) | | %s |\n' "$rtn" "$clip"
    printf '{"teacher_ppl": {"study-10m": %s, "study-40m": %s, "bench-100m": %s}, ' "${tppl[study-10m]}" "${tppl[study-40m]}" "${tppl[bench-100m]}"
    printf '"student_ppl": {"study-10m": %s, "study-40m": %s, "bench-100m": %s}, "rtn": %s, "clipped_rtn": %s, ' \
        "${sppl[study-10m]}" "${sppl[study-40m]}" "${sppl[bench-100m]}" "$rtn" "$clip"
    printf '"steps": %d, "qat_steps": %d, "tokens_per_step": %d}\n' "$steps" "$qsteps" $((batch * seq))
}

case "${1:-}" in
    corpus) shift; corpus "$@" ;;
    run) shift; run "$@" ;;
    *) sed -n '2,19p' "$0"; exit 1 ;;
esac

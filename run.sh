#!/usr/bin/env bash
# run.sh — the bitdistill.c pipeline.
#
#   ./run.sh            the built-in demo: no download, a few minutes on 2 cores.
#                       Generates a small corpus, pretrains a `tiny` byte-level Llama on it (the
#                       teacher later issues quantize and distil), reports its perplexity next
#                       to the random model's, and writes out/demo/teacher.bin.
#   ./run.sh corpus DIR  only the demo corpus (DIR/train.ids, DIR/valid.ids).
#
# Environment: DEMO_STEPS (training steps, default 400), OUT (output folder, default out/demo).
set -euo pipefail
cd "$(dirname "$0")"

# A corpus with structure a small model can learn: sentences of a tiny stochastic grammar,
# seeded, so every run sees the same text. Tokens are bytes (vocab 256): DIR/train.ids (90%),
# DIR/valid.ids (10%), and the text in DIR/corpus.txt.
corpus() {
    local out=$1
    mkdir -p "$out"
    [ -s "$out/train.ids" ] && return 0
    echo "== generating the demo corpus"
    awk -v seed=7 -v n=6000 '
    function pick(list,   a, k) { k = split(list, a, " "); return a[int(rand() * k) + 1] }
    BEGIN {
        srand(seed)
        names = "Tim Lily Sam Mia Ben Zoe Max Amy"
        animals = "cat dog bird fish frog duck"
        adjs = "big small red happy sleepy little kind"
        places = "park garden house river forest school"
        verbs = "saw found liked helped followed"
        for (i = 0; i < n; i++) {
            who = pick(names); pet = pick(animals); adj = pick(adjs); where = pick(places)
            r = rand()
            if (r < 0.4)      s = who " " pick(verbs) " a " adj " " pet " in the " where "."
            else if (r < 0.7) s = "The " pet " was " adj ". " who " was " pick("glad sad happy") "."
            else              s = who " went to the " where " with the " pet ". They played all day."
            print s
        }
    }' > "$out/corpus.txt"
    # bytes -> decimal ids; the last tenth is held out for perplexity
    od -An -v -tu1 "$out/corpus.txt" | tr -s ' ' '\n' | sed '/^$/d' > "$out/all.ids"
    local n; n=$(wc -l < "$out/all.ids")
    head -n $((n * 9 / 10)) "$out/all.ids" > "$out/train.ids"
    tail -n $((n - n * 9 / 10)) "$out/all.ids" > "$out/valid.ids"
    rm "$out/all.ids"
    echo "corpus: $(wc -c < "$out/corpus.txt") bytes, $(wc -l < "$out/train.ids") train and $(wc -l < "$out/valid.ids") validation tokens"
}

demo() {
    local out=${OUT:-out/demo} steps=${DEMO_STEPS:-400}
    mkdir -p "$out"
    make -s train

    corpus "$out"

    # 2. The teacher: a tiny Llama pretrained with cross-entropy.
    echo "== pretraining the tiny teacher ($steps steps)"
    ./train --init tiny --seed 1 --train-tokens "$out/train.ids" --steps "$steps" --batch 8 \
        --micro-batch 8 --seq 128 --lr 3e-3 --min-lr 3e-4 --schedule cosine --warmup 20 \
        --log "$out/teacher.jsonl" -o "$out/teacher.bin" | tee "$out/teacher.log" | awk 'NR % 50 == 1 || /^\{/'

    # 3. Perplexity of the random model and of the teacher on held-out text.
    echo "== perplexity on held-out text (windows of 128 bytes)"
    local rand_json teacher_json
    rand_json=$(./train --init tiny --seed 1 --eval-ppl "$out/valid.ids" -T 128 --eval-batch 8 | tail -n 1)
    teacher_json=$(./train -m "$out/teacher.bin" --eval-ppl "$out/valid.ids" -T 128 --eval-batch 8 | tail -n 1)
    local rp tp
    rp=$(sed 's/.*"ppl": \([0-9.]*\).*/\1/' <<< "$rand_json")
    tp=$(sed 's/.*"ppl": \([0-9.]*\).*/\1/' <<< "$teacher_json")
    printf '\n| model            | ppl       |\n|------------------|-----------|\n'
    printf '| random init      | %9.3f |\n| FP teacher       | %9.3f |\n\n' "$rp" "$tp"
    echo "{\"random_ppl\": $rp, \"fp\": $tp, \"teacher\": \"$out/teacher.bin\"}"
}

case "${1:-demo}" in
    demo) demo ;;
    corpus) corpus "${2:?usage: ./run.sh corpus DIR}" ;;
    -h|--help) sed -n '2,12p' "$0" ;;
    *) echo "error: unknown command '$1' (try ./run.sh --help)" >&2; exit 1 ;;
esac

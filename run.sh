#!/usr/bin/env bash
# run.sh — the bitdistill.c pipeline.
#
#   ./run.sh            the built-in demo: no download, a few minutes on 2 cores.
#                       Generates a small corpus, pretrains a `tiny` byte-level Llama on it (the
#                       teacher), lets it generate the distillation data, then the method at 3,
#                       2, 1 bits and ternary: clipping search, QAT with CAKLD self-distillation
#                       on that data; prints the perplexity table of FP, round-to-nearest and
#                       QAT models and one JSON line with it.
#   ./run.sh corpus DIR  only the demo corpus (DIR/train.ids, DIR/valid.ids).
#   ./run.sh tokenizer FILE  only the demo's byte-level tokenizer (token id = byte value).
#   ./run.sh pipeline HF_DIR [BITS] [DATA_DIR]  the whole method on a downloaded model (below).
#   ./run.sh study [stories260K.bin]  every quantizer x every distillation loss on stories260K.
#
# Environment: DEMO_STEPS (teacher steps, default 400), DEMO_PROMPTS (generated examples, default
# 320), DEMO_EPOCHS (each student's epochs over them, default 4), OUT (output folder, default
# out/demo).
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
    # rnd(): Park and Miller's minimal standard generator, x = 16807 x mod (2^31 - 1), exact in
    # awk's doubles, so that every machine makes the same corpus; awk's own rand() is each awk's
    # (mawk, gawk and busybox draw different numbers after the same srand)
    awk -v x=7 -v n=6000 '
    function rnd() { x = (x * 16807) % 2147483647; return x / 2147483647 }
    function pick(list,   a, k) { k = split(list, a, " "); return a[int(rnd() * k) + 1] }
    BEGIN {
        names = "Tim Lily Sam Mia Ben Zoe Max Amy"
        animals = "cat dog bird fish frog duck"
        adjs = "big small red happy sleepy little kind"
        places = "park garden house river forest school"
        verbs = "saw found liked helped followed"
        for (i = 0; i < n; i++) {
            who = pick(names); pet = pick(animals); adj = pick(adjs); where = pick(places)
            r = rnd()
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

# The demo model's tokenizer: byte-level BPE (tokenizer.json, Llama-3's pre-tokenizer) with the
# 256 bytes as its vocabulary, token id = byte value, no merges and no BOS/EOS, so text and the
# byte ids of the corpus are the same tokens. Byte b is written as GPT-2's printable stand-in:
# itself for 33..126, 161..172, 174..255, else U+0100 + (its rank among the others).
demo_tokenizer() {
    awk 'BEGIN {
        printf "{\"version\": \"1.0\", \"normalizer\": null, \"added_tokens\": [],\n"
        printf "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": "
        printf "\"(?i:%cs|%ct|%cre|%cve|%cm|%cll|%cd)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"}, ", 39, 39, 39, 39, 39, 39, 39
        printf "\"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"use_regex\": false}]},\n"
        printf "\"decoder\": {\"type\": \"ByteLevel\"},\n\"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"merges\": [], \"vocab\": {"
        n = 0
        for (b = 0; b < 256; b++) {
            cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174 ? b : 256 + n++
            printf "%s\"\\u%04x\": %d", b ? ", " : "", cp, b
        }
        printf "}}}\n"
    }' > "$1"
}

demo() {
    local out=${OUT:-out/demo} steps=${DEMO_STEPS:-400}
    mkdir -p "$out"
    make -s train

    corpus "$out"

    # 2. The teacher: a tiny Llama pretrained with cross-entropy on the byte stream.
    echo "== pretraining the tiny teacher ($steps steps)"
    ./train --init tiny --seed 1 --train-tokens "$out/train.ids" --steps "$steps" --batch 8 \
        --micro-batch 8 --seq 128 --lr 3e-3 --min-lr 3e-4 --schedule cosine --warmup 20 \
        --log "$out/teacher.jsonl" -o "$out/teacher.bin" | tee "$out/teacher.log" | awk 'NR % 50 == 1 || /^\{/'
    demo_tokenizer "$out/teacher.bin.tokenizer"

    # 3. The teacher writes the students' training data (BitDistiller's self-generated data):
    #    it continues the first three words of sentences of the training text.
    echo "== the teacher generates the distillation data"
    awk 'NR % 7 == 0 && n++ < 600 { print $1, $2, $3 }' "$out/corpus.txt" > "$out/prompts.txt"
    ./train -m "$out/teacher.bin" --generate-data --prompts "text:$out/prompts.txt" --n "${DEMO_PROMPTS:-320}" \
        --max-new 120 --gen-batch 32 --temperature 0.7 --seed 3 -o "$out/generated.jsonl" | grep -E '^generate: wrote|^\{'
    head -n 2 "$out/generated.jsonl"

    # 4. The method, at 3, 2 and 1 bits (INT-Asym, groups of 64) and ternary: the clipping search
    #    initialises each student from the teacher, which then teaches it on its own data
    #    (self-distillation, CAKLD, gamma measured on the data). Round-to-nearest of the teacher
    #    is the baseline the papers compare against.
    local epochs=${DEMO_EPOCHS:-4}
    ev() { ./train -m "$1" --eval-ppl "$out/valid.ids" -T 128 --eval-batch 8 "${@:2}" | tail -n 1 | sed 's/.*"ppl": \([0-9.e+-]*\).*/\1/'; }
    local fp rp
    fp=$(ev "$out/teacher.bin")
    rp=$(./train --init tiny --seed 1 --eval-ppl "$out/valid.ids" -T 128 --eval-batch 8 | tail -n 1 | sed 's/.*"ppl": \([0-9.e+-]*\).*/\1/')
    declare -A rtn qat
    for name in 3 2 1 ternary; do
        local q=(-q int -b "$name" -g 64)
        [ "$name" = ternary ] && q=(-q ternary)
        rtn[$name]=$(ev "$out/teacher.bin" "${q[@]}")
        local init=()
        if [ "$name" != ternary ]; then  # ternary has no per-group range to clip
            echo "== clipping search for ${q[*]}"
            ./train -m "$out/teacher.bin" --clip --calib "$out/train.ids" --calib-seqs 16 --calib-len 128 "${q[@]}" \
                -o "$out/clipped_$name.bin" | grep -E '^clip: [0-9]+ groups'
            init=(--clip-init "$out/clipped_$name.bin")
        fi
        echo "== QAT with CAKLD self-distillation on the generated data, ${q[*]} ($epochs epochs)"
        ./train -m "$out/teacher.bin" "${init[@]}" "${q[@]}" --data "$out/generated.jsonl" --epochs "$epochs" \
            --batch 8 --micro-batch 8 --seq 128 --lr 1e-3 --eval-every 20 --log "$out/qat_$name.jsonl" \
            -o "$out/student_$name.bin" | awk '/^distillation|^data: [0-9]+ epochs|eval loss/'
        qat[$name]=$(ev "$out/student_$name.bin")
    done

    # 5. The table, as the papers print it: perplexity on held-out text (windows of 128 bytes).
    printf '\n| model            | bits    | ppl (RTN) | ppl (QAT) |\n|------------------|---------|-----------|-----------|\n'
    printf '| random init      | 16      | %9.3f |           |\n' "$rp"
    printf '| FP teacher       | 16      | %9.3f |           |\n' "$fp"
    for name in 3 2 1; do printf '| INT-Asym g64     | %-7s | %9.3f | %9.3f |\n' "$name" "${rtn[$name]}" "${qat[$name]}"; done
    printf '| ternary (b1.58)  | 1.58    | %9.3f | %9.3f |\n\n' "${rtn[ternary]}" "${qat[ternary]}"
    echo "{\"random\": $rp, \"fp\": $fp, \"rtn\": {\"3\": ${rtn[3]}, \"2\": ${rtn[2]}, \"1\": ${rtn[1]}, \"ternary\": ${rtn[ternary]}}, \"qat\": {\"3\": ${qat[3]}, \"2\": ${qat[2]}, \"1\": ${qat[1]}, \"ternary\": ${qat[ternary]}}}"
}

# The real pipeline on a downloaded Hugging Face Llama (TinyLlama-1.1B, for example), each
# step skipped when its output exists, so an interrupted run continues where it stopped:
#   convert -> clipping search -> the teacher generates data (WikiText-2 + Alpaca prompts)
#   -> QAT with CAKLD -> WikiText-2 perplexity and the five zero-shot tasks -> packed and HF export.
# It runs ./train_cu when that is built and a GPU answers (nvidia-smi -L), else ./train, and says which.
# DATA_DIR holds wikitext-2-raw/wiki.{train,test}.raw, alpaca_data_cleaned.json and the task
# folders --eval-qa reads (piqa/, hellaswag/, winogrande/, ARC-Easy/, ARC-Challenge/; see doc/evaluation.md).
# Environment (defaults are the papers' settings): OUT (out/NAME), GROUP (128), QUANT (int),
# LR (2e-5), EPOCHS (4), BATCH (16), MICRO_BATCH (4), SEQ (1024), N_WIKI (3000), N_ALPACA (5000),
# MAX_NEW (1024), GEN_BATCH (16), CALIB_SEQS (128), PPL_T (2048), TASKS (all five), LIMIT (all).
pipeline() {
    local hf=${1:?usage: ./run.sh pipeline HF_DIR [bits] [data dir]} bits=${2:-2} data=${3:-data}
    local out=${OUT:-out/$(basename "$hf")} g=${GROUP:-128} q=${QUANT:-int}
    local quant=(-q "$q" -b "$bits" -g "$g")
    mkdir -p "$out"
    make -s train convert
    # the GPU build where it is built and a GPU answers, else the CPU one
    local train=./train
    if [ -x ./train_cu ] && nvidia-smi -L > /dev/null 2>&1; then train=./train_cu; fi
    echo "== using $train"
    step() { if [ -s "$1" ]; then echo "== $2: $1 exists, skipped"; return 1; fi; echo "== $2"; }
    local model=$out/model.bin student=$out/student_${q}${bits}_g$g.bin
    if step "$model" "convert $hf"; then ./convert "$hf" "$model"; fi
    if step "$out/clipped_${q}${bits}_g$g.bin" "clipping search (${quant[*]})"; then
        "$train" -m "$model" --clip --calib "$data/wikitext-2-raw/wiki.train.raw" --calib-seqs "${CALIB_SEQS:-128}" \
            "${quant[@]}" -o "$out/clipped_${q}${bits}_g$g.bin"
    fi
    if step "$out/generated.jsonl" "the teacher generates its training data"; then
        "$train" -m "$model" --generate-data --max-new "${MAX_NEW:-1024}" --gen-batch "${GEN_BATCH:-16}" --temperature 0.7 \
            --prompts "wikitext:$data/wikitext-2-raw/wiki.train.raw=${N_WIKI:-3000},alpaca:$data/alpaca_data_cleaned.json=${N_ALPACA:-5000}" \
            -o "$out/generated.jsonl"
    fi
    if step "$student" "QAT with CAKLD self-distillation (${quant[*]})"; then
        "$train" -m "$model" --clip-init "$out/clipped_${q}${bits}_g$g.bin" "${quant[@]}" --data "$out/generated.jsonl" \
            --epochs "${EPOCHS:-4}" --lr "${LR:-2e-5}" --batch "${BATCH:-16}" --micro-batch "${MICRO_BATCH:-4}" \
            --seq "${SEQ:-1024}" --save-every 50 --log "$out/train.jsonl" -o "$student"
    fi
    local limit=(); [ -n "${LIMIT:-}" ] && limit=(--limit "$LIMIT")
    echo "== evaluation of the full-precision model and the student"
    for m in "$model" "$student"; do
        "$train" -m "$m" --eval-ppl "wikitext2:$data/wikitext-2-raw" -T "${PPL_T:-2048}" | tail -n 1 > "$m.ppl.json"
        "$train" -m "$m" --eval-qa "${TASKS:-piqa,hellaswag,winogrande,arc_easy,arc_challenge}" --data "$data" "${limit[@]}" \
            | tee "$m.qa.log" | tail -n 1 > "$m.qa.json"
        grep '^|' "$m.qa.log" || true
    done
    if step "${student%.bin}.qbin" "packed low-bit export"; then "$train" -m "$student" --export-packed "${student%.bin}.qbin" | tail -n 1; fi
    if step "$out/hf_student/config.json" "Hugging Face export"; then ./convert --to-hf "$student" "$out/hf_student"; fi
    local fp_ppl st_ppl
    fp_ppl=$(sed 's/.*"ppl": \([0-9.e+-]*\).*/\1/' "$model.ppl.json")
    st_ppl=$(sed 's/.*"ppl": \([0-9.e+-]*\).*/\1/' "$student.ppl.json")
    printf '\n| model | WikiText-2 ppl |\n|---|---|\n| FP | %s |\n| %s-bit %s g%s (QAT) | %s |\n\n' "$fp_ppl" "$bits" "$q" "$g" "$st_ppl"
    echo "{\"fp\": {\"ppl\": $fp_ppl, \"qa\": $(sed 's/.*"qa": \({.*}\)}$/\1/' "$model.qa.json")}, \"student\": {\"path\": \"$student\", \"ppl\": $st_ppl, \"qa\": $(sed 's/.*"qa": \({.*}\)}$/\1/' "$student.qa.json")}}"
}

# The study (doc/pipeline.md): on stories260K (llama2.c, no tokenizer; converted first), the
# pipeline (./train -m MODEL -q/-b/-g) for every quantizer and every distillation loss, all on one
# set of data-free teacher data: each run folder starts with a copy of generated.jsonl, and the
# runs of one quantizer share its clipped weights and its FP/RTN evaluations, so the pipeline
# skips those stages. Held-out perplexity (examples starting at BOS) per quantizer and loss, and
# the flip-flop rate of CAKLD's run (mean over training, and at the last step). The loss
# cakld_plain is CAKLD under the plain straight-through backward (--ste plain) instead of
# BitDistiller's, for the quantizers that have both (int, nf3; '-' for the others).
# Environment: OUT (out/study), STUDY_N (200 sequences), STUDY_MAX_NEW (128), STUDY_EPOCHS (1),
# STUDY_LR (1e-3), STUDY_LOSSES (all six and cakld_plain), STUDY_QUANTS (below), THREADS (1).
study() {
    local src=${1:-../shared/data/stories260K/stories260K.bin} out=${OUT:-out/study}
    [ -f "$src" ] || { echo "error: $src: no such file (give the llama2.c stories260K.bin)" >&2; exit 1; }
    local losses=${STUDY_LOSSES:-ce fkl rkl cakld cakld_ce wasserstein cakld_plain}
    # -g 4: the largest group dividing both input dimensions (64 and 172)
    local quants=${STUDY_QUANTS:-int:4:-1 int:3:-1 int:2:-1 int:4:4 int:3:4 int:2:4 nf3:3:-1 ternary:2:-1 sign:1:-1 onebit:1:-1}
    mkdir -p "$out"
    make -s train convert
    [ -s "$out/s.bin" ] || ./convert --from-llama2c "$src" "$out/s.bin" > /dev/null
    local sizes=(--n "${STUDY_N:-200}" --max-new "${STUDY_MAX_NEW:-128}" --epochs "${STUDY_EPOCHS:-1}" --batch 8 --micro-batch 8
                 --lr "${STUDY_LR:-1e-3}" --calib-seqs 32 --threads "${THREADS:-1}")
    if [ ! -s "$out/generated.jsonl" ]; then
        echo "== the teacher's data-free data"
        ./train -m "$out/s.bin" --generate-data "${sizes[@]:0:4}" --threads "${THREADS:-1}" -o "$out/generated.jsonl" | grep -E '^generate: (data-free|wrote)'
    fi
    local t0=$SECONDS rows=()
    for spec in $quants; do
        IFS=: read -r q b g <<< "$spec"
        local qf=(-q "$q" -b "$b" -g "$g") first="" line tag="$q$b.g$g" label="$q ${b}b g$g"
        if [ "$q" != int ] && [ "$q" != nf3 ]; then qf=(-q "$q"); tag=$q; label=$q; fi
        line="| $(printf '%-12s' "$label")"
        for loss in $losses; do
            local lf=(--loss "$loss") name=$out/s.$tag.$loss run=$out/s.$tag.$loss.run
            if [ "$loss" = cakld_plain ]; then
                if [ "$q" != int ] && [ "$q" != nf3 ]; then line="$line |         -"; continue; fi
                lf=(--loss cakld --ste plain)
            fi
            mkdir -p "$run"
            cp -n "$out/generated.jsonl" "$run/"
            if [ -n "$first" ]; then  # this quantizer's clipping and FP/RTN evaluations, done once
                for f in calib.ids clipped.bin eval_fp.json eval_rtn.json eval_clip.json; do
                    [ -e "$first/$f" ] && cp -n "$first/$f" "$run/"
                done
            fi
            echo "== ${qf[*]} ${lf[*]}"
            ./train -m "$out/s.bin" "${qf[@]}" "${lf[@]}" "${sizes[@]}" -o "$name.bin" > "$run.log" 2>&1 \
                || { tail -n 5 "$run.log"; echo "error: the run ${qf[*]} ${lf[*]} failed (log: $run.log)" >&2; exit 1; }
            local r; r=$(cat "$run/results.json")
            if [ -z "$first" ]; then
                first=$run
                line="$line | $(sed 's/.*"rtn": {"ppl": \([0-9.]*\).*/\1/' <<< "$r" | xargs printf '%9.2f')"
                if grep -q '"clip"' <<< "$r"; then line="$line | $(sed 's/.*"clip": {"ppl": \([0-9.]*\).*/\1/' <<< "$r" | xargs printf '%9.2f')"
                else line="$line |         -"; fi
                fp=$(sed 's/.*"fp": {"ppl": \([0-9.]*\).*/\1/' <<< "$r")
            fi
            line="$line | $(sed 's/.*"qat": {"ppl": \([0-9.]*\).*/\1/' <<< "$r" | xargs printf '%9.2f')"
            if [ "$loss" = cakld ]; then
                flips=$(sed 's/.*"flip_rate_final": \([0-9.]*\), "flip_rate_mean": \([0-9.]*\).*/\2 \1/' <<< "$r" | awk '{ printf "%.3f%% (%.3f%%)", 100 * $1, 100 * $2 }')
            fi
        done
        rows+=("$line | ${flips:--} |")
        flips=""
    done
    printf '\nstories260K, held-out perplexity of the teacher'"'"'s data-free text (FP teacher %s), %s s\n\n' "$fp" $((SECONDS - t0))
    printf '| quantizer    |       RTN | clip. RTN |'; for loss in $losses; do printf ' %9s |' "$loss"; done; printf ' flip-flops, cakld: mean (last) |\n'
    printf '|---|---|---|'; for loss in $losses; do printf -- '---|'; done; printf -- '---|\n'
    printf '%s\n' "${rows[@]}"
}

case "${1:-demo}" in
    demo) demo ;;
    corpus) corpus "${2:?usage: ./run.sh corpus DIR}" ;;
    tokenizer) demo_tokenizer "${2:?usage: ./run.sh tokenizer FILE}" ;;
    pipeline) shift; pipeline "$@" ;;
    study) shift; study "$@" ;;
    -h|--help) sed -n '2,17p' "$0" ;;
    *) echo "error: unknown command '$1' (try ./run.sh --help)" >&2; exit 1 ;;
esac

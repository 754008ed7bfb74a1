#!/usr/bin/env bash
# ./run.sh pipeline end to end on a real Hugging Face folder: the random Llama of the evaluation
# fixtures (tests/fixtures/eval/hf_model, vocab 32,000) with the real Llama-2 tokenizer, and a
# data folder laid out as doc/evaluation.md says, from small files in the original formats. Every step
# runs (convert, clip, generate, QAT, perplexity, the five tasks, packed and HF export), a
# second run skips every step whose output exists, and the final JSON line holds both models.
set -u
cd "$(dirname "$0")/.."
SPM=../shared/data/llama2-tokenizer/tokenizer.model
[ -f "$SPM" ] || { echo "skipped: $SPM is absent (../shared/data)"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }

mkdir -p "$tmp/hf" "$tmp/data/wikitext-2-raw"
cp tests/fixtures/eval/hf_model/* "$SPM" "$tmp/hf/"
cp tests/fixtures/data/wikitext.raw "$tmp/data/wikitext-2-raw/wiki.train.raw"
cp tests/fixtures/eval/wikitext-2-raw/wiki.test.raw "$tmp/data/wikitext-2-raw/"
cp tests/fixtures/data/alpaca.json "$tmp/data/alpaca_data_cleaned.json"
cp -r tests/fixtures/eval/{piqa,hellaswag,winogrande,ARC-Easy,ARC-Challenge} "$tmp/data/"
small=(OUT="$tmp/out" GROUP=8 N_WIKI=2 N_ALPACA=3 MAX_NEW=16 GEN_BATCH=4 CALIB_SEQS=4 EPOCHS=2 BATCH=2 MICRO_BATCH=2 SEQ=64 LR=1e-3 PPL_T=32)
env "${small[@]}" ./run.sh pipeline "$tmp/hf" 2 "$tmp/data" > "$tmp/log1" 2>&1 || { tail -n 30 "$tmp/log1"; bad "the pipeline failed"; }
json=$(tail -n 1 "$tmp/log1")
for f in model.bin model.bin.tokenizer clipped_int2_g8.bin generated.jsonl student_int2_g8.bin student_int2_g8.bin.tokenizer \
         student_int2_g8.qbin hf_student/config.json hf_student/model.safetensors; do
    [ -s "$tmp/out/$f" ] || bad "missing output $f"
done
[ "$(wc -l < "$tmp/out/generated.jsonl")" -eq 5 ] && ok "5 generated examples (2 WikiText + 3 Alpaca prompts)" || bad "generated.jsonl: $(wc -l < "$tmp/out/generated.jsonl") lines"
grep -q '^data: 4 training and 1 held-out examples' "$tmp/log1" && ok "QAT on the generated data (4 + 1 held out)" || bad "no QAT data line"
grep -q '^| piqa' "$tmp/log1" && grep -q '^| average' "$tmp/log1" && ok "the zero-shot table is printed" || bad "no QA table"
grep -q '^{"fp": {"ppl": [0-9.]*, "qa": {"piqa": {"acc": .*"student": {"path": ".*student_int2_g8.bin", "ppl": [0-9.]*, "qa": {"piqa"' <<< "$json" \
    && ok "final JSON: $(cut -c1-100 <<< "$json")..." || bad "final JSON: $json"
env "${small[@]}" ./run.sh pipeline "$tmp/hf" 2 "$tmp/data" > "$tmp/log2" 2>&1 || bad "the second run failed"
n=$(grep -c 'exists, skipped' "$tmp/log2")
[ "$n" -eq 6 ] && ok "a second run skips all 6 steps with outputs" || bad "second run skipped $n steps: $(grep '^==' "$tmp/log2" | tr '\n' ' ')"
[ $fails -eq 0 ]

#!/usr/bin/env bash
# Encode speed of tokenizer.c against the reference tokenizers, measured in the same run on the
# same text (a benchmark, not a test). Runs where the references are installed (the GPU
# machine: sentencepiece, tokenizers, tiktoken):
#
#   dev/bench_tokenizer.sh TEXT SPM_MODEL BPE_JSON BPE_TIKTOKEN
#
# Each side encodes TEXT as one string (no BOS), best of 5. SPM_MODEL is a SentencePiece
# tokenizer.model (Llama-2); BPE_JSON and BPE_TIKTOKEN the same byte-level BPE in tokenizer.json
# and tiktoken form (tests/fixtures/tokenizer/bpe_tokenizer.*). Prints a table and one JSON line.
set -euo pipefail
cd "$(dirname "$0")/.."
text=${1:?usage: dev/bench_tokenizer.sh TEXT SPM_MODEL BPE_JSON BPE_TIKTOKEN} spm=$2 bpe_json=$3 bpe_tt=$4
make -s tokenize
ours() { ./tokenize --no-bos --bench -f "$text" "$1" | sed 's/.*"mb_per_s": \([0-9.]*\).*/\1/'; }
c_spm=$(ours "$spm") c_json=$(ours "$bpe_json") c_tt=$(ours "$bpe_tt")
read -r py_spm py_json py_tt < <(python3 - "$text" "$spm" "$bpe_json" "$bpe_tt" <<'PY'
import sys, time
import sentencepiece, tokenizers, tiktoken
from tiktoken.load import load_tiktoken_bpe
text_path, spm_path, json_path, tt_path = sys.argv[1:]
text = open(text_path, encoding="utf-8").read()
mb = len(text.encode("utf-8")) / 1e6
pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")
sp = sentencepiece.SentencePieceProcessor(model_file=spm_path)
hf = tokenizers.Tokenizer.from_file(json_path)
ranks = load_tiktoken_bpe(tt_path)
enc = tiktoken.Encoding("bench", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
def best(fn):
    t = 1e30
    for _ in range(5):
        t0 = time.perf_counter(); fn(); t = min(t, time.perf_counter() - t0)
    return mb / t
print(f"{best(lambda: sp.encode(text)):.3f} {best(lambda: hf.encode(text, add_special_tokens=False)):.3f} "
      f"{best(lambda: enc.encode_ordinary(text)):.3f}")
PY
)
printf '\n| tokenizer (%s, %s bytes) | reference MB/s | tokenizer.c MB/s | ratio |\n|---|---|---|---|\n' "$(basename "$text")" "$(wc -c < "$text")"
row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$(awk -v a="$3" -v b="$2" 'BEGIN { printf "%.2f", a / b }')"; }
row "SentencePiece (sentencepiece)" "$py_spm" "$c_spm"
row "byte-level BPE (tokenizers)" "$py_json" "$c_json"
row "byte-level BPE (tiktoken)" "$py_tt" "$c_tt"
echo "{\"spm\": {\"ref\": $py_spm, \"ours\": $c_spm}, \"bpe_json\": {\"ref\": $py_json, \"ours\": $c_json}, \"tiktoken\": {\"ref\": $py_tt, \"ours\": $c_tt}}"

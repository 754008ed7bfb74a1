#!/usr/bin/env bash
# The README's first command: ./run.sh runs the built-in demo with no download. Here with
# fewer steps: the pretrained teacher must beat the random model's held-out perplexity by far.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
OUT="$tmp/demo" DEMO_STEPS=120 ./run.sh > "$tmp/log" 2>&1 || { cat "$tmp/log"; echo "FAIL: run.sh exited non-zero"; exit 1; }
json=$(tail -n 1 "$tmp/log")
echo "demo result: $json"
rp=$(sed 's/.*"random_ppl": \([0-9.]*\).*/\1/' <<< "$json")
fp=$(sed 's/.*"fp": \([0-9.]*\).*/\1/' <<< "$json")
[ -s "$tmp/demo/teacher.bin" ] || { echo "FAIL: no teacher.bin"; exit 1; }
awk -v r="$rp" -v f="$fp" 'BEGIN { exit !(r > 200 && f < r / 20) }' || { echo "FAIL: random ppl $rp, teacher ppl $fp"; exit 1; }
echo "ok: random ppl $rp -> teacher ppl $fp"

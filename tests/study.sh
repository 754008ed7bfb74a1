#!/usr/bin/env bash
# ./run.sh study, shortened: stories260K at 2 bits per row and ternary, losses ce, cakld and
# cakld under the plain straight-through backward (int only: '-' for ternary), on
# 30 data-free sequences. Checks the table's rows, that the runs of one quantizer share its
# clipping and FP/RTN evaluations (the pipeline skips them), and that QAT with CAKLD lands below
# round-to-nearest. Skipped without ../shared/data/stories260K.
set -u
cd "$(dirname "$0")/.."
S=../shared/data/stories260K/stories260K.bin
[ -f "$S" ] || { echo "skipped: $S is absent (../shared/data)"; exit 0; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }
OUT=$tmp STUDY_QUANTS="int:2:-1 ternary:2:-1" STUDY_LOSSES="ce cakld cakld_plain" STUDY_N=30 STUDY_MAX_NEW=32 ./run.sh study "$S" > "$tmp/log" 2>&1 \
    || { tail -n 20 "$tmp/log"; bad "./run.sh study failed"; }
grep '^|' "$tmp/log"
row=$(grep '^| int 2b g-1' "$tmp/log")
[ -n "$row" ] && grep -q '^| ternary ' "$tmp/log" && ok "a row for each quantizer" || bad "table rows"
n=$(grep -c 'exists, skipped' "$tmp/s.int2.g-1.cakld.run.log")
[ "$n" -eq 6 ] && ok "the second loss reuses the data, the clipping and the FP/RTN evaluations (6 stages skipped)" || bad "$n stages skipped"
read -r rtn qat <<< "$(awk -F'|' '{ print $3, $6 }' <<< "$row")"
awk -v r="$rtn" -v q="$qat" 'BEGIN { exit !(q < r) }' && ok "2-bit per row: CAKLD's QAT ppl $qat < RTN's $rtn" || bad "QAT $qat, RTN $rtn"
plain=$(awk -F'|' '{ print $7 }' <<< "$row" | tr -d ' ')
grep -q '^quantizer backward: plain straight-through' "$tmp/s.int2.g-1.cakld_plain.run.log" && awk -v p="$plain" -v r="$rtn" 'BEGIN { exit !(p > 0 && p < r) }' \
    && ok "cakld_plain: the plain straight-through run, QAT ppl $plain < RTN's $rtn" || bad "cakld_plain column: '$plain'"
[ "$(grep '^| ternary ' "$tmp/log" | awk -F'|' '{ print $7 }' | tr -d ' ')" = - ] && ok "cakld_plain: '-' for ternary (no --ste)" \
    || bad "ternary's cakld_plain cell: $(grep '^| ternary ' "$tmp/log")"
[ $fails -eq 0 ]

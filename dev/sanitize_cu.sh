#!/usr/bin/env bash
# compute-sanitizer on train_cu, on a machine with a GPU: a tiny model, 2-bit QAT with CAKLD for
# 2 steps, through memcheck with each attention path and with --loss wasserstein, and racecheck
# (shared-memory hazards) on the defaults and on the fused attention and the loss kernels.
# Prints each tool's summary; a run passes on "ERROR SUMMARY: 0 errors" (memcheck) or
# "RACECHECK SUMMARY: 0 hazards displayed (0 errors" (racecheck, which prints its own summary
# line). Ends with "N passed, M failed"; exit 1 on any error.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
make -s -j16 train train_cu || exit 1
./train --init tiny -o "$tmp/m.bin" > /dev/null
awk 'BEGIN { srand(2); for (i = 0; i < 4000; i++) print int(rand() * 256) }' > "$tmp/r.ids"
run=(./train_cu -m "$tmp/m.bin" -q int -b 2 -g 64 --train-tokens "$tmp/r.ids" --steps 2 --batch 2 --micro-batch 2 --seq 64 --gamma-batches 1)
fails=0
check() {
    local name=$1; shift
    "$@" > "$tmp/out" 2>&1
    local rc=$? summary
    summary=$(grep -m 1 -E '(ERROR|RACECHECK) SUMMARY' "$tmp/out")  # racecheck prints its own summary line
    if [ $rc -eq 0 ] && grep -qE 'ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards displayed \(0 errors' "$tmp/out"; then echo "  ok    $name: $summary"
    else echo "  FAIL  $name (exit $rc): ${summary:-$(tail -n 5 "$tmp/out")}"; fails=$((fails + 1)); fi
}
cs="compute-sanitizer --error-exitcode 1"
check "memcheck, the defaults (bf16, flash attention)" $cs --tool memcheck "${run[@]}"
check "memcheck, cuBLAS attention" $cs --tool memcheck "${run[@]}" --attention gemm
check "memcheck, fused attention" $cs --tool memcheck "${run[@]}" --attention fused
check "memcheck, --loss wasserstein" $cs --tool memcheck "${run[@]}" --loss wasserstein
check "racecheck, the defaults (flash kernels, RMSNorm, losses)" $cs --tool racecheck "${run[@]}"
check "racecheck, fused attention and losses" $cs --tool racecheck "${run[@]}" --attention fused
echo "$((6 - fails)) passed, $fails failed"
[ $fails -eq 0 ]

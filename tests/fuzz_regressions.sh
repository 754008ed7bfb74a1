#!/usr/bin/env bash
# Replays every fuzz target's inputs without libFuzzer (fuzz/replay.c): the seeds (made by
# build/fuzz/make_seeds and in fuzz/seeds/) and every input a fuzzer once crashed on
# (fuzz/regressions/NAME/, kept after the fix). Each must be accepted or rejected by die(),
# never crash. Under `make test-asan` the replayers carry the sanitizers too.
set -u
cd "$(dirname "$0")/.."
targets=$(ls fuzz/fuzz_*.c | sed 's|fuzz/fuzz_\(.*\)\.c|\1|')
bins=$(for t in $targets; do printf 'build/fuzz-replay/%s ' "$t"; done)
make -s -j2 --no-print-directory build/fuzz/make_seeds $bins REPLAY_FLAGS="${REPLAY_FLAGS:-}" || { echo "FAIL  build"; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
build/fuzz/make_seeds "$tmp" > /dev/null || { echo "FAIL  make_seeds"; exit 1; }
fails=0
for t in $targets; do
    dirs=()
    for d in "$tmp/$t" "fuzz/seeds/$t" "fuzz/regressions/$t"; do [ -d "$d" ] && dirs+=("$d"); done
    [ ${#dirs[@]} -eq 0 ] && { echo "  FAIL  $t: no inputs"; fails=$((fails + 1)); continue; }
    n_reg=$(ls "fuzz/regressions/$t" 2>/dev/null | wc -l)
    if out=$(build/fuzz-replay/$t "${dirs[@]}" 2>&1 > /dev/null); then
        printf '  ok    %-16s %3d seeds and %d regression inputs, none crashes\n' "$t" \
            $(( $(find "${dirs[@]}" -type f | wc -l) - n_reg )) "$n_reg"
    else
        echo "  FAIL  $t: $(tail -n 5 <<< "$out")"
        fails=$((fails + 1))
    fi
done
echo "fuzz regressions: $fails failure(s)"
[ $fails -eq 0 ]

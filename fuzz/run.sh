#!/usr/bin/env bash
# fuzz/run.sh NAME — runs the libFuzzer target build/fuzz/NAME (make fuzz-NAME builds it) for its
# budget: 1,000,000 executions or FUZZ_SECONDS (default 600), whichever comes first, one
# process (-jobs=1 -workers=1; the machine is shared). The corpus grows in build/fuzz/corpus/NAME,
# seeded from build/fuzz/make_seeds' files and fuzz/seeds/NAME. A crash leaves its input as
# build/fuzz/crash-NAME-*; copy it to fuzz/regressions/NAME/ once fixed, so that `make test`
# replays it. Ends with one line: target, executions, coverage (edges), features, corpus, time.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
runs=${FUZZ_RUNS:-1000000}
secs=${FUZZ_SECONDS:-600}
bin=build/fuzz/$name
[ -x "$bin" ] || { echo "error: $bin is not built (make fuzz-$name)" >&2; exit 1; }
# the generated seeds go into the target's own folder, so that two targets can run at once
work=build/fuzz/work-$name  # -jobs writes its job's log (fuzz-0.log) into the current folder
rm -rf "$work" && mkdir -p "$work"
build/fuzz/make_seeds "$work/seeds" > /dev/null
corpus=build/fuzz/corpus/$name
mkdir -p "$corpus"
seeds=()
[ -d "$work/seeds/$name" ] && seeds+=("$work/seeds/$name")
[ -d "fuzz/seeds/$name" ] && seeds+=("fuzz/seeds/$name")
[ -d "fuzz/regressions/$name" ] && seeds+=("fuzz/regressions/$name")
log=build/fuzz/$name.log
root=$PWD
start=$(date +%s)
set +e
dirs=("$root/$corpus")
for d in "${seeds[@]}"; do dirs+=("$root/$d"); done
cd "$work"
FUZZ_ROOT=$root ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$root/$bin" -jobs=1 -workers=1 -runs="$runs" \
    -max_total_time="$secs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -close_fd_mask=1 -print_final_stats=1 \
    -artifact_prefix="$root/build/fuzz/crash-$name-" "${dirs[@]}" > "$root/$log" 2>&1
rc=$?
set -e
cd "$root"
[ -f "$work/fuzz-0.log" ] && cat "$work/fuzz-0.log" >> "$log"
secs_used=$(( $(date +%s) - start ))
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n 1 || true)
last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<< "$last")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<< "$last")
corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<< "$last")
if [ $rc -ne 0 ]; then
    grep -E 'ERROR|SUMMARY|Test unit written|deadly signal|==[0-9]+==' "$log" | head -n 20 >&2
    echo "fuzz-$name: FAILED after ${secs_used}s (exit $rc); log: $log" >&2
    exit 1
fi
echo "fuzz-$name: ${execs:-?} executions, cov ${cov:-?} edges, ft ${ft:-?} features, corpus ${corp:-?}, ${secs_used}s, no crash"

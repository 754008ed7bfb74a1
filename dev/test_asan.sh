#!/usr/bin/env bash
# make test-asan: the test programs and the quick CLI scripts, built with AddressSanitizer and
# UndefinedBehaviorSanitizer (-fno-sanitize-recover=all: the first report ends the program)
# in build/asan/, a mirror of the repository (links to the sources, tests and fixtures) where
# the sanitized binaries live, so the normal ones are left alone and the scripts, which run
# ./train and friends, run the sanitized ones. Every report is also written to
# build/asan/reports/ (log_path), so one that a test expected to fail anyway (a child that
# should exit 1) still counts: the run passes only with zero report files.
# Leak checking is off: the programs free what they use while running, not everything at exit.
set -u
cd "$(dirname "$0")/.."
root=$PWD
dir=build/asan
SAN_FLAGS=${SAN_FLAGS:--O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all}
# the quick CLI scripts; the others train for minutes (their code is the same as the quick
# ones', and tests/faults.sh's and distill.sh's training loop is test_model's), or need nvcc
QUICK="tests/convert_bad_input.sh tests/convert_roundtrip.sh tests/fuzz_regressions.sh tests/text.sh
       tests/tokenizer_cli.sh tests/train_cli.sh tests/bitdistill_pipeline.sh tests/hardening.sh"

mkdir -p "$dir"
find "$dir" -maxdepth 1 -type l ! -exec test -e {} \; -delete  # links to removed files
for f in *.c *.h Makefile run.sh; do [ -e "$f" ] && ln -sfn "$root/$f" "$dir/$f"; done
for d in lib dev tests fuzz; do ln -sfn "$root/$d" "$dir/$d"; done
# the tests find the shared data at ../shared: from build/asan that is build/shared
if [ -d ../shared ]; then ln -sfn "$(cd ../shared && pwd)" build/shared; else rm -f build/shared; fi

openmp=$(echo 'int main(void){return 0;}' | ${CC:-cc} -fopenmp -x c -o /dev/null - 2>/dev/null && echo -fopenmp)
flags="$SAN_FLAGS $openmp -Wall -Wno-unused-function -Wno-unused-parameter"
programs="test_gradcheck $(cd "$dir" && ls tests/test_*.c | sed 's|^tests/|build/|; s/\.c$//')"
make -s -C "$dir" -j2 --no-print-directory CFLAGS="$flags" train convert tokenize $programs || exit 1

scripts=()
for s in $QUICK; do [ -f "$s" ] && scripts+=("$s"); done
rm -rf "$dir/reports" && mkdir -p "$dir/reports"
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$root/$dir/reports/asan:log_exe_name=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$root/$dir/reports/ubsan:log_exe_name=1"
export OMP_WAIT_POLICY=passive  # sanitized threads that spin on a busy machine only slow it down
export REPLAY_FLAGS="$SAN_FLAGS"  # tests/fuzz_regressions.sh: sanitized replayers too
(cd "$dir" && ./dev/run_tests.sh $(printf './%s ' $programs) "${scripts[@]}")
rc=$?
reports=$(ls "$dir/reports" | wc -l)
if [ "$reports" -gt 0 ]; then
    for r in "$dir"/reports/*; do echo "=== $r"; head -n 30 "$r"; done
    echo "test-asan: $reports sanitizer report(s) in $dir/reports"
    exit 1
fi
echo "test-asan: 0 sanitizer reports"
exit $rc

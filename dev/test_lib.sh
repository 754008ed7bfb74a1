# dev/test_lib.sh — sourced by the tests/*.sh scripts (it is not a test itself): the check
# helpers they share, and the small pretrained teacher three of them run on.
#   ok MSG / bad MSG            print a result line, counted in $passes / $fails
#   summary                     the GPU scripts' last line, "N passed, M failed"; false on a failure
#   add_counts FILE             adds the counts of FILE's last line (another script's summary)
#   field KEY                   the number after "KEY": in the last line of stdin (a JSON result)
#   losses OUT, jlosses LOG, maxrel A B, within E TOL, rel A B   comparisons of numbers (the GPU scripts)
#   expect_error NAME PATTERN CMD...   CMD must exit 1 with one stderr line "error: ...PATTERN"
#   test_teacher DIR            DIR/c (the demo corpus) and DIR/teacher.bin (below)
# The caller sets tmp (a scratch folder) and fails=0.

ok() { printf '  ok    %s\n' "$1"; passes=$((${passes:-0} + 1)); }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((${fails:-0} + 1)); }
summary() { echo "${passes:-0} passed, ${fails:-0} failed"; [ "${fails:-0}" -eq 0 ]; }
add_counts() {  # a script whose last line is not its summary (it printed nothing, or died) counts as one failure
    local p f
    read -r p f < <(tail -n 1 "$1" | awk '/^[0-9]+ passed, [0-9]+ failed$/ { print $1, $3 }')
    passes=$((${passes:-0} + ${p:-0})); fails=$((${fails:-0} + ${f:-1}))
}
field() { tail -n 1 | sed "s/.*\"$1\": \([0-9.e+-]*\).*/\1/"; }
# the GPU scripts' comparisons: the loss column of a program's step lines and of a JSONL log;
# max relative difference of two columns of numbers; E <= TOL (a number); relative difference of
# two numbers ("nan" if one is missing)
losses() { sed -n 's/^step .* | loss \([0-9.e+-]*\) | .*/\1/p' "$1"; }
jlosses() { sed -n 's/^{"step": [0-9]*, "loss": \([0-9.e+-]*\),.*/\1/p' "$1"; }
maxrel() { paste "$1" "$2" | awk 'BEGIN { m = 0; n = 0 } { n++; d = ($1 - $2) / ($2 == 0 ? 1 : $2); d = d < 0 ? -d : d; if (d > m) m = d }
                                  END { if (n == 0) print "nan"; else printf "%.3e", m }'; }
within() { awk -v e="$1" -v t="$2" 'BEGIN { exit !(e ~ /^[0-9]/ && e + 0 <= t + 0) }'; }
rel() { awk -v a="$1" -v b="$2" 'BEGIN { if (a !~ /^-?[0-9]/ || b !~ /^-?[0-9]/) { print "nan"; exit } d = (a - b) / (b == 0 ? 1 : b); printf "%.3e", d < 0 ? -d : d }'; }

expect_error() {
    local name=$1 pattern=$2; shift 2
    "$@" > /dev/null 2> "$tmp/stderr"
    local rc=$?
    [ $rc -eq 1 ] && [ "$(wc -l < "$tmp/stderr")" -eq 1 ] && grep -q "^error: .*$pattern" "$tmp/stderr" \
        && ok "$name: $(cat "$tmp/stderr")" || bad "$name (exit $rc: $(cat "$tmp/stderr"))"
}

# The teacher: a `tiny` Llama pretrained for 150 steps on the demo corpus. Training is
# deterministic, so it is made once per ./train binary (build/test-teacher/CKSUM, keyed by the
# binary's checksum, written to a temp folder and renamed) and copied to each script that asks.
test_teacher() {
    local dir=$1 cache tmpc
    cache=build/test-teacher/$(cksum < train | cut -d ' ' -f 1)
    if [ ! -s "$cache/teacher.bin" ]; then
        tmpc=$cache.tmp.$$
        rm -rf "$tmpc" && mkdir -p "$tmpc"
        ./run.sh corpus "$tmpc/c" > /dev/null && \
        ./train --init tiny --seed 1 --train-tokens "$tmpc/c/train.ids" --steps 150 --batch 8 --micro-batch 8 --seq 128 \
            --lr 3e-3 --schedule cosine --warmup 10 --min-lr 3e-4 -o "$tmpc/teacher.bin" > /dev/null \
            || { rm -rf "$tmpc"; return 1; }
        rm -rf "$cache" && mv "$tmpc" "$cache"
    fi
    cp -r "$cache/c" "$dir/c" && cp "$cache/teacher.bin" "$dir/teacher.bin"
}

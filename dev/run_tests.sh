#!/usr/bin/env bash
# Runs each test (a program or a script) given on the command line, shows its output,
# and ends with the line "N passed, M failed". Exit status 1 if any failed.
set -u
passed=0 failed=0 failures=()
for t in "$@"; do
    printf '\n=== %s\n' "$t"
    start=$(date +%s)
    if "$t"; then passed=$((passed + 1)); res=ok; else failed=$((failed + 1)); failures+=("$t"); res=FAILED; fi
    printf -- '--- %s: %s (%ss)\n' "$t" "$res" "$(( $(date +%s) - start ))"
done
echo
[ ${#failures[@]} -gt 0 ] && printf 'failed: %s\n' "${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

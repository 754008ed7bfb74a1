#!/usr/bin/env bash
# ./tokenize: ids as JSON, --decode, -f with arbitrary bytes, and bad input (every case must
# exit 1 with one line "error: ..."). Builds ./tokenize first if it is missing.
set -u
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { printf '  ok    %s\n' "$1"; }
bad() { printf '  FAIL  %s\n' "$1"; fails=$((fails + 1)); }
tok=./tokenize
if [ ! -x "$tok" ]; then
    tok=$tmp/tokenize
    ${CC:-cc} -O2 -DTOKENIZER_MAIN -o "$tok" tokenizer.c -lm || { echo "FAIL: cannot build tokenize"; exit 1; }
fi
F=tests/fixtures/tokenizer
L2=../shared/data/llama2-tokenizer

# expect_out NAME WANT CMD...: stdout equals WANT exactly
expect_out() {
    local name=$1 want=$2; shift 2
    local got; got=$("$@" 2>&1)
    [ "$got" = "$want" ] && ok "$name: $got" || bad "$name: got '$got', want '$want'"
}

# expect_error NAME PATTERN CMD...: exit status 1 and one stderr line "error: ...PATTERN"
expect_error() {
    local name=$1 pattern=$2; shift 2
    "$@" > "$tmp/stdout" 2> "$tmp/stderr"
    local rc=$? lines; lines=$(wc -l < "$tmp/stderr")
    if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && grep -q "^error: .*$pattern" "$tmp/stderr"; then
        ok "$name: $(cat "$tmp/stderr")"
    else
        bad "$name (exit $rc, stderr: $(head -c 300 "$tmp/stderr"))"
    fi
}

# ids from the references of dev/make_tokenizer_reference.py (tokenizers / tiktoken)
expect_out "json, BOS + ids" "[2000, 39, 331, 334, 673, 517]" $tok $F/bpe_tokenizer.json "Hello world"
expect_out "tiktoken file, --no-bos" "[39, 331, 334, 673, 517]" $tok --no-bos $F/bpe_tokenizer.tiktoken "Hello world"
expect_out "special token as plain text" "[27, 91, 1529, 1372, 62, 665, 357, 698, 83, 91, 29]" $tok --no-bos $F/bpe_tokenizer.json "<|begin_of_text|>"
expect_out "--special" "[2000, 2000]" $tok --special $F/bpe_tokenizer.json "<|begin_of_text|>"
expect_out "--decode" "Hello world" $tok --decode $F/bpe_tokenizer.json 39 331 334 673 517
# -f: any bytes (invalid UTF-8 too) survive encode + decode
printf 'caf\xc3\xa9 \xff\xfe bad\n\ttab' > "$tmp/text"
ids=$($tok --no-bos -f "$tmp/text" $F/bpe_tokenizer.json | tr -d '[],')
$tok --decode $F/bpe_tokenizer.json $ids | head -c -1 > "$tmp/back"
cmp -s "$tmp/text" "$tmp/back" && ok "-f round trip of invalid UTF-8 bytes" || bad "-f round trip"
if [ -e $L2/tokenizer.model ]; then
    expect_out "Llama-2 tokenizer.model" "[1, 15043, 3186]" $tok $L2/tokenizer.model "Hello world"
    expect_out "Llama-2 tokenizer.bin" "[1, 15043, 3186]" $tok $L2/tokenizer.bin "Hello world"
    expect_out "Llama-2 --decode" "Hello world" $tok --decode $L2/tokenizer.model 1 15043 3186
    head -c 300000 $L2/tokenizer.model > "$tmp/cut.model"
    expect_error "truncated tokenizer.model" "cut.model: corrupt SentencePiece model" $tok "$tmp/cut.model" x
else
    echo "  skipped: Llama-2 cases ($L2 absent)"
fi

# bad input
: > "$tmp/empty"
expect_error "empty file" "empty: empty tokenizer file" $tok "$tmp/empty" x
printf 'GIF89a garbage \x00\x01' > "$tmp/garbage"
expect_error "unknown kind" "garbage: unknown tokenizer file" $tok "$tmp/garbage" x
printf '\x0a\x05\x0a\x10abc' > "$tmp/bad.model"
expect_error "protobuf field past the end" "bad.model: corrupt SentencePiece model" $tok "$tmp/bad.model" x
head -c 5000 $F/bpe_tokenizer.json > "$tmp/cut.json"
expect_error "truncated tokenizer.json" "cut.json: line" $tok "$tmp/cut.json" x
printf 'QQ== 0\nQg== 5\n' > "$tmp/gap.tiktoken"
expect_error "tiktoken rank gap" "gap.tiktoken: line 2: rank 5" $tok "$tmp/gap.tiktoken" x
printf 'QQ== 0\nnot base64!! 1\n' > "$tmp/bad.tiktoken"
expect_error "tiktoken bad line" "bad.tiktoken: line 2" $tok "$tmp/bad.tiktoken" x
sed 's/"byte_fallback":false/"byte_fallback":true/' $F/bpe_tokenizer.json > "$tmp/spm.json"
expect_error "SentencePiece-style json" "spm.json: a SentencePiece-style tokenizer.json" $tok "$tmp/spm.json" x
sed 's/\\\\p{N}{1,3}/\\\\p{N}+/' $F/bpe_tokenizer.json > "$tmp/regex.json"
expect_error "other pre-tokenizer regex" "regex.json: the pre-tokenizer is not" $tok "$tmp/regex.json" x
expect_error "id out of range" "bad token id" $tok --decode $F/bpe_tokenizer.json 5 999999
expect_error "unknown flag" "unknown flag '--nope'" $tok --nope $F/bpe_tokenizer.json x
expect_error "missing file" "nofile: cannot open" $tok "$tmp/nofile" x
expect_error "no arguments" "usage" $tok

[ $fails -eq 0 ] && echo "tokenize CLI: all cases pass" || echo "tokenize CLI: $fails failed"
[ $fails -eq 0 ]

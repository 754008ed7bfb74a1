// test_json.c — json.h accepts exactly RFC 8259 JSON and decodes it right.
//
// Valid documents are checked value by value against hand-written expectations (escapes
// decoded to the UTF-8 bytes written out here by hand, e.g. U+1F600 = F0 9F 98 80). Invalid
// ones (truncated, bad escapes, lone surrogates, trailing garbage, too deep, bad UTF-8, ...)
// must be refused with the expected message at the expected line and column. Every input is
// parsed from a heap copy of exactly its length, with no terminating NUL, so a read past `len`
// is a real out-of-bounds read (visible under -fsanitize=address). Then every proper prefix of
// a document, and many random byte mutations of it, must parse or fail cleanly.
#include "../lib/json.h"
#include "../lib/util.h"

static int failures = 0, checks = 0;

static void check(int ok, const char *what) {
    checks++;
    if (!ok) { failures++; printf("  FAIL  %s\n", what); }
}

// Parses exactly len bytes from a buffer that holds nothing else.
static Json *parse_n(const char *text, size_t len, char *err, size_t errlen) {
    char *copy = malloc_or_die(len, "test copy");
    memcpy(copy, text, len);
    Json *j = json_parse(copy, len, err, errlen);
    free(copy);
    return j;
}

// Expects a parse error whose message contains `want` (e.g. "line 2, column 8: expected 'true'").
static void bad_n(const char *name, const char *text, size_t len, const char *want) {
    char err[256] = "";
    Json *j = parse_n(text, len, err, sizeof err);
    char what[512];
    snprintf(what, sizeof what, "%s: wanted an error containing \"%s\", got %s", name, want, j ? "success" : err);
    check(!j && strstr(err, want) != NULL, what);
    if (!j && strstr(err, want)) printf("  ok    refuses %-28s %s\n", name, err);
    json_free(j);
}

static void bad(const char *name, const char *text, const char *want) { bad_n(name, text, strlen(text), want); }

static Json *good(const char *name, const char *text) {
    char err[256] = "";
    Json *j = parse_n(text, strlen(text), err, sizeof err);
    char what[512];
    snprintf(what, sizeof what, "%s: should parse, got error %s", name, err);
    check(j != NULL, what);
    return j;
}

static int str_is(const Json *j, const char *bytes, size_t n) {
    return j && j->type == JSON_STRING && j->string_len == n && memcmp(j->string, bytes, n) == 0 && j->string[n] == 0;
}

static void test_valid(void) {
    // a config.json-like document
    Json *j = good("config", "{\n  \"hidden_size\": 2048, \"rms_norm_eps\": 1e-05, \"neg\": -0.5E+2,\n"
                             "  \"tie\": true, \"bias\": false, \"scaling\": null,\n"
                             "  \"archs\": [\"LlamaForCausalLM\"], \"empty_a\": [], \"empty_o\": {},\n"
                             "  \"nested\": {\"rope_type\": \"llama3\", \"factor\": 8.0}, \"zero\": -0\n}");
    if (j) {
        check(j->type == JSON_OBJECT && j->n == 11, "config: an object of 11 keys");
        check(json_get_number(j, "hidden_size", 0) == 2048, "hidden_size == 2048");
        check(json_get_number(j, "rms_norm_eps", 0) == 1e-5, "rms_norm_eps == 1e-5");
        check(json_get_number(j, "neg", 0) == -50, "-0.5E+2 == -50");
        check(json_get_bool(j, "tie", 0) == 1 && json_get_bool(j, "bias", 1) == 0, "true / false");
        check(json_get(j, "scaling") && json_get(j, "scaling")->type == JSON_NULL, "null");
        const Json *a = json_get(j, "archs");
        check(a && a->type == JSON_ARRAY && a->n == 1 && str_is(json_at(a, 0), "LlamaForCausalLM", 16), "array of one string");
        check(json_at(a, 1) == NULL && json_at(a, -1) == NULL, "json_at out of range is NULL");
        check(json_get(j, "empty_a")->n == 0 && json_get(j, "empty_o")->type == JSON_OBJECT && json_get(j, "empty_o")->n == 0, "empty containers");
        check(!strcmp(json_get_string(json_get(j, "nested"), "rope_type"), "llama3"), "nested string");
        check(json_get_number(json_get(j, "nested"), "factor", 0) == 8.0, "nested number");
        check(json_get(j, "absent") == NULL && json_get_number(j, "absent", 7) == 7, "absent key: NULL / default");
        check(json_get_string(j, "hidden_size") == NULL, "json_get_string of a number is NULL");
        check(json_get(a, "x") == NULL && json_get(NULL, "x") == NULL, "json_get of a non-object is NULL");
        json_free(j);
    }
    // every escape, decoded by hand
    j = good("escapes", "\"q\\\"b\\\\s\\/b\\bf\\fn\\nr\\rt\\t\"");
    check(str_is(j, "q\"b\\s/b\bf\fn\nr\rt\t", 16), "simple escapes decode to their bytes");
    json_free(j);
    j = good("\\u escapes", "\"\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"");
    check(str_is(j, "A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10), "\\u0041 \\u00e9 \\u20AC and the pair \\ud83d\\ude00 -> UTF-8");
    json_free(j);
    j = good("\\u0000", "\"a\\u0000b\"");
    check(str_is(j, "a\0b", 3), "\\u0000 gives a 0 byte inside, string_len 3");
    json_free(j);
    j = good("raw UTF-8", "[\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"]");
    check(j && str_is(json_at(j, 0), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14), "raw UTF-8 passes through");
    json_free(j);
    // scalars at the top level, whitespace, a byte order mark
    j = good("top-level number", " \t\r\n 42 \n");
    check(j && j->type == JSON_NUMBER && j->number == 42, "top-level 42 with whitespace");
    json_free(j);
    j = good("BOM", "\xef\xbb\xbf{\"a\": 1}");
    check(j && json_get_number(j, "a", 0) == 1, "a UTF-8 byte order mark is skipped");
    json_free(j);
    // a number with more digits than any fixed buffer
    char longnum[200] = "0.";
    for (int i = 0; i < 150; i++) strcat(longnum, "3");
    j = good("150-digit number", longnum);
    check(j && fabs(j->number - 1.0 / 3) < 1e-15, "0.333... (150 digits) parses as 1/3");
    json_free(j);
    // duplicate keys are kept; json_get returns the first
    j = good("duplicate keys", "{\"k\": 1, \"k\": 2}");
    check(j && j->n == 2 && json_get_number(j, "k", 0) == 1, "duplicate keys: both kept, json_get finds the first");
    json_free(j);
    // exactly JSON_MAX_DEPTH levels of nesting parse; one more does not (below)
    char deep[2 * JSON_MAX_DEPTH + 1];
    for (int i = 0; i < JSON_MAX_DEPTH; i++) { deep[i] = '['; deep[2 * JSON_MAX_DEPTH - 1 - i] = ']'; }
    deep[2 * JSON_MAX_DEPTH] = 0;
    j = good("max depth", deep);
    json_free(j);
    // an array of many items (growth of the item array)
    char *many = malloc_or_die(7 * 10000 + 3, "many");
    size_t len = 0;
    many[len++] = '[';
    for (int i = 0; i < 10000; i++) len += (size_t)sprintf(many + len, "%s%d", i ? "," : "", i);
    many[len++] = ']';
    many[len] = 0;
    j = good("10000 items", many);
    check(j && j->n == 10000 && j->items[9999].number == 9999, "array of 10000 numbers");
    json_free(j);
    free(many);
}

static void test_invalid(void) {
    bad("empty input", "", "line 1, column 1: unexpected end of input");
    bad("only whitespace", "  \n ", "line 2, column 2: unexpected end of input");
    bad("truncated object", "{", "line 1, column 2: expected a string key");
    bad("truncated after key", "{\"a\":", "line 1, column 6: unexpected end of input");
    bad("truncated after value", "{\"a\": 1", "line 1, column 8: expected ',' or '}'");
    bad("truncated array", "[1, 2", "expected ',' or ']'");
    bad("truncated string", "\"abc", "unterminated string");
    bad("truncated escape", "\"abc\\", "unterminated string");
    bad("truncated \\u", "\"\\u12\"", "truncated \\u escape");
    bad("truncated literal", "tru", "expected 'true'");
    bad_n("len cuts the text", "[1, 2]", 5, "expected ',' or ']'");
    bad("bad escape \\x", "\"a\\x\"", "line 1, column 4: bad escape \\x");
    bad("bad escape \\'", "\"\\'\"", "bad escape \\'");
    bad("escaped newline", "\"\\\n\"", "backslash followed by byte 0x0a");
    bad("bad hex", "\"\\u12G4\"", "bad hex digit");
    bad("lone high surrogate", "\"\\ud800\"", "lone surrogate");
    bad("lone low surrogate", "\"\\udc00\"", "lone surrogate");
    bad("high + non-low", "\"\\ud800\\u0041\"", "lone surrogate");
    bad("high + text", "\"\\ud83dx\"", "lone surrogate");
    bad("trailing garbage", "{} x", "line 1, column 4: trailing characters");
    bad("two values", "1 2", "trailing characters");
    bad("trailing comma array", "[1,]", "unexpected character ']'");
    bad("trailing comma object", "{\"a\":1,}", "expected a string key");
    bad("unquoted key", "{a: 1}", "expected a string key");
    bad("single quotes", "['a']", "unexpected character '''");
    bad("missing colon", "{\"a\" 1}", "expected ':'");
    bad("comment", "{} // c", "trailing characters");
    bad("leading zero", "01", "leading zero");
    bad("leading dot", ".5", "unexpected character '.'");
    bad("trailing dot", "1.", "bad number");
    bad("bare minus", "-", "bad number");
    bad("plus sign", "+1", "unexpected character '+'");
    bad("empty exponent", "1e", "bad number");
    bad("NaN", "NaN", "unexpected character 'N'");
    bad("Infinity", "[-Infinity]", "bad number");
    bad("raw newline in string", "\"a\nb\"", "control character 0x0a");
    bad("raw tab in string", "\"a\tb\"", "control character 0x09");
    bad("invalid byte 0xff", "\"\xff\"", "invalid UTF-8 byte 0xff");
    bad("overlong '/'", "\"\xc0\xaf\"", "invalid UTF-8 byte 0xc0");
    bad("UTF-8 surrogate", "\"\xed\xa0\x80\"", "invalid UTF-8 byte 0xed");
    bad("above U+10FFFF", "\"\xf4\x90\x80\x80\"", "invalid UTF-8 byte 0xf4");
    bad("truncated UTF-8", "\"\xe2\x82\"", "invalid UTF-8 byte 0xe2");
    bad("non-ASCII outside strings", "[\xc3\xa9]", "unexpected byte 0xc3");
    bad("error position", "{\n  \"a\": 1,\n  \"b\": tru\n}", "line 3, column 8: expected 'true'");
    // one level deeper than allowed, and a pathological depth that must not overflow the stack
    char deep[2 * JSON_MAX_DEPTH + 4];
    for (int i = 0; i <= JSON_MAX_DEPTH + 1; i++) deep[i] = '[';
    deep[JSON_MAX_DEPTH + 2] = 0;
    bad("depth 258", deep, "nesting deeper than");
    size_t n = 1000000;
    char *abyss = malloc_or_die(n, "deep");
    memset(abyss, '[', n);
    bad_n("depth 1000000", abyss, n, "nesting deeper than");
    free(abyss);
}

// Every proper prefix of an object is invalid; random mutations may be either, but must return
// cleanly (this is where a read past len or a bad free would show, under a sanitizer).
static void test_robustness(void) {
    const char *doc = "{\"architectures\": [\"LlamaForCausalLM\"], \"x\": {\"y\": [1, -2.5e-3, true, false, null]},"
                      " \"s\": \"\\u00e9\\ud83d\\ude00\\n\xc3\xa9\", \"n\": 0}";
    size_t len = strlen(doc);
    int prefix_ok = 1;
    for (size_t k = 0; k < len; k++) {
        char err[256];
        Json *j = parse_n(doc, k, err, sizeof err);
        if (j) { prefix_ok = 0; printf("  FAIL  prefix of %zu bytes parsed\n", k); }
        json_free(j);
    }
    check(prefix_ok, "every proper prefix of an object is refused");
    const char alphabet[] = "{}[]\",:\\u0123456789abcdefe+-. \n\xc3\xa9\xed\xff";
    uint32_t seed = 12345;
    int parsed = 0, refused = 0;
    char *buf = malloc_or_die(len, "mutation");
    for (int trial = 0; trial < 20000; trial++) {
        memcpy(buf, doc, len);
        for (int m = 0; m < 1 + trial % 4; m++) {
            seed = seed * 1664525u + 1013904223u;
            size_t at = (seed >> 8) % len;
            seed = seed * 1664525u + 1013904223u;
            buf[at] = alphabet[(seed >> 8) % (sizeof alphabet - 1)];
        }
        char err[256];
        Json *j = parse_n(buf, len - (size_t)(trial % 3), err, sizeof err);
        if (j) parsed++; else refused++;
        json_free(j);
    }
    free(buf);
    printf("  ok    %zu prefixes refused; 20000 random mutations: %d parsed, %d refused, none crashed\n", len, parsed, refused);
}

// json_quote (util.h), what the programs' result lines quote file names with: its output parses
// back to the input, quotes, backslashes and control bytes escaped; cut short, it stays a valid
// string, before a whole UTF-8 character.
static void quote_back(const char *name, const char *s, size_t n, const char *want) {
    char *q = malloc_or_die(n, "quote"), err[256], what[160];
    json_quote(q, n, s);
    Json *j = parse_n(q, strlen(q), err, sizeof err);
    snprintf(what, sizeof what, "json_quote %s: %s parses back to the expected text", name, q);
    check(j && j->type == JSON_STRING && !strcmp(j->string, want) && strlen(q) < n, what);
    json_free(j);
    free(q);
}
static void test_quote(void) {
    int f0 = failures;
    const char *path = "dir/a \"b\" c\\d\te\n\x01.bin";
    quote_back("of quotes, backslashes and control bytes", path, 256, path);
    char q[64];
    check(!strcmp(json_quote(q, sizeof q, "a\"b\\c\x1f"), "\"a\\\"b\\\\c\\u001f\""), "json_quote: the escapes as written");
    quote_back("plain, cut to 6 bytes", "abcdefgh", 6, "abc");
    quote_back("cut before a 2-byte character", "ab\xc3\xa9z", 5, "ab");
    quote_back("cut inside a 2-byte character", "ab\xc3\xa9z", 6, "ab");
    quote_back("cut after a 2-byte character", "ab\xc3\xa9z", 7, "ab\xc3\xa9");
    quote_back("cut inside an escape", "ab\"c", 5, "ab");
    quote_back("empty", "", 3, "");
    printf("  %s  json_quote: 8 cases\n", failures == f0 ? "ok  " : "FAIL");
}

int main(void) {
    printf("json.h: valid documents\n");
    test_valid();
    printf("json.h: invalid documents\n");
    test_invalid();
    printf("json.h: prefixes and mutations\n");
    test_robustness();
    printf("util.h: json_quote\n");
    test_quote();
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}

// json.h — a small, strict JSON reader (RFC 8259) for config.json, safetensors headers,
// tokenizer.json and data files.
//
// json_parse builds a tree; it never reads past `len`, limits nesting depth (JSON_MAX_DEPTH),
// and reports the first error as "line L, column C: what" (columns count bytes). Strict means:
// no comments, no trailing commas, no single quotes, no leading zeros or bare '.5', no NaN, raw
// text must be valid UTF-8, and control characters inside strings must be escaped. Strings are
// decoded to UTF-8 (\uXXXX escapes with surrogate pairs included) and NUL-terminated;
// string_len counts their bytes (a "\u0000" escape puts a 0 byte inside). Duplicate keys are
// kept; json_get returns the first.
//
//   char err[256];
//   Json *cfg = json_parse(text, len, err, sizeof err);
//   if (!cfg) die("%s: malformed JSON: %s", path, err);
//   int dim = (int)json_get_number(cfg, "hidden_size", 0);
//   json_free(cfg);
#ifndef JSON_H
#define JSON_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } JsonType;

typedef struct Json {
    JsonType type;
    double number;       // JSON_NUMBER, and JSON_BOOL as 0/1
    char *string;        // JSON_STRING: UTF-8, NUL-terminated
    size_t string_len;   // its length in bytes (may hold \0)
    int n;               // JSON_ARRAY / JSON_OBJECT: number of items
    struct Json *items;  // the elements of an array, or the values of an object
    char **keys;         // JSON_OBJECT: the keys
} Json;

#define JSON_MAX_DEPTH 256

typedef struct {
    const char *s, *end;  // the next byte to read, and one past the last
    char msg[160];        // the first error, without its position
    int failed;
} JsonParser;

// Records the first error only; json_parse adds its line and column.
static void json_fail(JsonParser *p, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg, sizeof p->msg, fmt, ap);
    va_end(ap);
}

static void json_free_items(Json *j) {
    if (j->type == JSON_STRING) free(j->string);
    if (j->type == JSON_ARRAY || j->type == JSON_OBJECT) {
        for (int i = 0; i < j->n; i++) {
            json_free_items(&j->items[i]);
            if (j->keys) free(j->keys[i]);
        }
        free(j->items);
        free(j->keys);
    }
}

static void json_free(Json *j) {
    if (!j) return;
    json_free_items(j);
    free(j);
}

static void json_ws(JsonParser *p) {
    while (p->s < p->end && (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r')) p->s++;
}

static int json_hex4(JsonParser *p, unsigned *out) {
    if (p->end - p->s < 4) { json_fail(p, "truncated \\u escape"); return 0; }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else { json_fail(p, "bad hex digit in \\u escape"); return 0; }
    }
    p->s += 4;
    *out = v;
    return 1;
}

static size_t json_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

// Length of the valid UTF-8 sequence at s (RFC 3629: no overlong forms, no surrogates, nothing
// above U+10FFFF), or 0 if the bytes there are not one.
static int json_utf8_valid(const unsigned char *s, const unsigned char *end) {
    unsigned c = s[0];
    int n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n <= 1 || end - s < n) return n == 1;
    unsigned lo = 0x80, hi = 0xbf;  // the allowed range of the second byte
    if (c == 0xe0) lo = 0xa0;       // overlong
    if (c == 0xed) hi = 0x9f;       // UTF-16 surrogates
    if (c == 0xf0) lo = 0x90;       // overlong
    if (c == 0xf4) hi = 0x8f;       // above U+10FFFF
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xbf) return 0;
    return n;
}

// Parses a string starting at the opening quote; the decoded text is never longer than the
// source (an escape is at least as long as what it stands for), so one allocation of the
// source length suffices.
static char *json_string(JsonParser *p, size_t *len) {
    p->s++;  // opening quote
    const char *q = p->s;
    while (q < p->end && *q != '"') q += (*q == '\\' && q + 1 < p->end) ? 2 : 1;
    if (q >= p->end) { json_fail(p, "unterminated string"); return NULL; }
    // from here on the closing quote at q bounds every read below
    char *out = (char *)malloc((size_t)(q - p->s) + 1), *o = out;
    if (!out) { json_fail(p, "out of memory"); return NULL; }
    while (*p->s != '"') {
        unsigned char c = (unsigned char)*p->s;
        if (c < 0x20) { json_fail(p, "control character 0x%02x in string (must be escaped)", c); free(out); return NULL; }
        if (c >= 0x80) {  // raw UTF-8: copied as is once validated
            int n = json_utf8_valid((const unsigned char *)p->s, (const unsigned char *)q);
            if (!n) { json_fail(p, "invalid UTF-8 byte 0x%02x in string", c); free(out); return NULL; }
            memcpy(o, p->s, (size_t)n);
            o += n;
            p->s += n;
            continue;
        }
        if (c != '\\') { *o++ = (char)c; p->s++; continue; }
        p->s++;
        unsigned char e = (unsigned char)*p->s++;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp;
            if (!json_hex4(p, &cp)) { free(out); return NULL; }
            if (cp >= 0xd800 && cp < 0xdc00) {  // high surrogate: a low one must follow
                unsigned lo;
                if (p->end - p->s < 2 || p->s[0] != '\\' || p->s[1] != 'u') { json_fail(p, "lone surrogate in \\u escape"); free(out); return NULL; }
                p->s += 2;
                if (!json_hex4(p, &lo)) { free(out); return NULL; }
                if (lo < 0xdc00 || lo > 0xdfff) { json_fail(p, "lone surrogate in \\u escape"); free(out); return NULL; }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                json_fail(p, "lone surrogate in \\u escape"); free(out); return NULL;
            }
            o += json_utf8(o, cp);
            break;
        }
        default:
            p->s--;  // point the error at the offending character
            if (e > 0x20 && e < 0x7f) json_fail(p, "bad escape \\%c", e);
            else json_fail(p, "bad escape: backslash followed by byte 0x%02x", e);
            free(out);
            return NULL;
        }
    }
    p->s++;  // closing quote
    *o = 0;
    *len = (size_t)(o - out);
    return out;
}

static int json_value(JsonParser *p, Json *j, int depth);

// Appends to a growing array of items (and keys).
static int json_push(JsonParser *p, Json *j, int *cap, char *key) {
    if (j->n == *cap) {
        *cap = *cap ? *cap * 2 : 8;
        Json *items = (Json *)realloc(j->items, (size_t)*cap * sizeof(Json));
        if (!items) { json_fail(p, "out of memory"); return 0; }
        j->items = items;
        if (j->type == JSON_OBJECT) {
            char **keys = (char **)realloc(j->keys, (size_t)*cap * sizeof(char *));
            if (!keys) { json_fail(p, "out of memory"); return 0; }
            j->keys = keys;
        }
    }
    memset(&j->items[j->n], 0, sizeof(Json));
    if (j->type == JSON_OBJECT) j->keys[j->n] = key;
    j->n++;
    return 1;
}

static int json_container(JsonParser *p, Json *j, int depth, char close) {
    int cap = 0;
    p->s++;
    json_ws(p);
    if (p->s < p->end && *p->s == close) { p->s++; return 1; }
    for (;;) {
        char *key = NULL;
        json_ws(p);
        if (j->type == JSON_OBJECT) {
            size_t kl;
            if (p->s >= p->end || *p->s != '"') { json_fail(p, "expected a string key"); return 0; }
            if (!(key = json_string(p, &kl))) return 0;
            json_ws(p);
            if (p->s >= p->end || *p->s != ':') { free(key); json_fail(p, "expected ':' after key"); return 0; }
            p->s++;
        }
        if (!json_push(p, j, &cap, key)) { free(key); return 0; }
        if (!json_value(p, &j->items[j->n - 1], depth + 1)) return 0;
        json_ws(p);
        if (p->s < p->end && *p->s == ',') { p->s++; continue; }
        if (p->s < p->end && *p->s == close) { p->s++; return 1; }
        json_fail(p, "expected ',' or '%c'", close);
        return 0;
    }
}

static int json_number(JsonParser *p, Json *j) {
    const char *q = p->s;
    if (q < p->end && *q == '-') q++;
    if (q >= p->end || *q < '0' || *q > '9') { json_fail(p, "bad number"); return 0; }
    if (*q == '0') {
        q++;
        if (q < p->end && *q >= '0' && *q <= '9') { json_fail(p, "bad number (leading zero)"); return 0; }
    } else while (q < p->end && *q >= '0' && *q <= '9') q++;
    if (q < p->end && *q == '.') {
        q++;
        if (q >= p->end || *q < '0' || *q > '9') { json_fail(p, "bad number"); return 0; }
        while (q < p->end && *q >= '0' && *q <= '9') q++;
    }
    if (q < p->end && (*q == 'e' || *q == 'E')) {
        q++;
        if (q < p->end && (*q == '+' || *q == '-')) q++;
        if (q >= p->end || *q < '0' || *q > '9') { json_fail(p, "bad number"); return 0; }
        while (q < p->end && *q >= '0' && *q <= '9') q++;
    }
    // strtod needs a terminated copy (the text need not be NUL-terminated); digits beyond
    // what a double holds are legal JSON, so long numbers get a heap copy
    char buf[64], *copy = buf;
    size_t n = (size_t)(q - p->s);
    if (n >= sizeof buf && !(copy = (char *)malloc(n + 1))) { json_fail(p, "out of memory"); return 0; }
    memcpy(copy, p->s, n);
    copy[n] = 0;
    j->type = JSON_NUMBER;
    j->number = strtod(copy, NULL);  // out of range: +-HUGE_VAL or 0, as strtod rounds
    if (copy != buf) free(copy);
    p->s = q;
    return 1;
}

static int json_literal(JsonParser *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, word, n) != 0) { json_fail(p, "expected '%s'", word); return 0; }
    p->s += n;
    return 1;
}

static int json_value(JsonParser *p, Json *j, int depth) {
    if (depth > JSON_MAX_DEPTH) { json_fail(p, "nesting deeper than %d", JSON_MAX_DEPTH); return 0; }
    json_ws(p);
    if (p->s >= p->end) { json_fail(p, "unexpected end of input"); return 0; }
    switch (*p->s) {
    case '{': j->type = JSON_OBJECT; return json_container(p, j, depth, '}');
    case '[': j->type = JSON_ARRAY; return json_container(p, j, depth, ']');
    case '"': j->type = JSON_STRING; return (j->string = json_string(p, &j->string_len)) != NULL;
    case 't': j->type = JSON_BOOL; j->number = 1; return json_literal(p, "true");
    case 'f': j->type = JSON_BOOL; j->number = 0; return json_literal(p, "false");
    case 'n': j->type = JSON_NULL; return json_literal(p, "null");
    default:
        if (*p->s == '-' || (*p->s >= '0' && *p->s <= '9')) return json_number(p, j);
        if (*p->s > 0x20 && *p->s < 0x7f) json_fail(p, "unexpected character '%c'", *p->s);
        else json_fail(p, "unexpected byte 0x%02x", (unsigned char)*p->s);
        return 0;
    }
}

// Parses text[0..len). Returns NULL on error, with "line L, column C: what" in err.
static Json *json_parse(const char *text, size_t len, char *err, size_t errlen) {
    JsonParser p = {text, text + len, "", 0};
    if (len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) p.s += 3;  // a UTF-8 byte order mark may be ignored (RFC 8259 8.1)
    Json *j = (Json *)calloc(1, sizeof(Json));
    if (!j) { if (errlen) snprintf(err, errlen, "out of memory"); return NULL; }
    if (json_value(&p, j, 0)) {
        json_ws(&p);
        if (p.s < p.end) json_fail(&p, "trailing characters after the JSON value");
    }
    if (p.failed) {
        int line = 1, col = 1;
        for (const char *c = text; c < p.s && c < p.end; c++) {
            if (*c == '\n') { line++; col = 1; } else col++;
        }
        if (errlen) snprintf(err, errlen, "line %d, column %d: %s", line, col, p.msg);
        json_free(j);
        return NULL;
    }
    return j;
}

static const Json *json_get(const Json *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

// Typed getters: the value if present and of that type, else the default.
static double json_get_number(const Json *obj, const char *key, double dflt) {
    const Json *v = json_get(obj, key);
    return v && (v->type == JSON_NUMBER || v->type == JSON_BOOL) ? v->number : dflt;
}

static const char *json_get_string(const Json *obj, const char *key) {
    const Json *v = json_get(obj, key);
    return v && v->type == JSON_STRING ? v->string : NULL;
}

static int json_get_bool(const Json *obj, const char *key, int dflt) {
    const Json *v = json_get(obj, key);
    return v && v->type == JSON_BOOL ? (int)v->number : dflt;
}

// The i-th element of an array (or value of an object), NULL when out of range.
static const Json *json_at(const Json *arr, int i) {
    if (!arr || (arr->type != JSON_ARRAY && arr->type != JSON_OBJECT) || i < 0 || i >= arr->n) return NULL;
    return &arr->items[i];
}

#endif

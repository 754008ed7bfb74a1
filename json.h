// json.h — a small, strict JSON reader (RFC 8259) for config.json, safetensors headers,
// tokenizer.json and data files.
//
// json_parse builds a tree; it never reads past `len`, limits nesting depth, and reports the
// first error as "line L, column C: what". Strings are decoded to UTF-8 (\uXXXX escapes with
// surrogate pairs included) and NUL-terminated; string_len counts their bytes.
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
    size_t string_len;
    int n;               // JSON_ARRAY / JSON_OBJECT: number of items
    struct Json *items;  // the elements of an array, or the values of an object
    char **keys;         // JSON_OBJECT: the keys
} Json;

#define JSON_MAX_DEPTH 256

typedef struct {
    const char *s, *end;
    char *err;
    size_t errlen;
    int failed;
} JsonParser;

// Records the first error only; json_parse adds its line and column.
static void json_fail(JsonParser *p, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err, p->errlen, fmt, ap);
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

// Parses a string starting at the opening quote; the decoded text is never longer than the
// source, so one allocation of the source length suffices.
static char *json_string(JsonParser *p, size_t *len) {
    p->s++;  // opening quote
    const char *q = p->s;
    while (q < p->end && *q != '"') q += (*q == '\\' && q + 1 < p->end) ? 2 : 1;
    if (q >= p->end) { json_fail(p, "unterminated string"); return NULL; }
    char *out = (char *)malloc((size_t)(q - p->s) + 1), *o = out;
    if (!out) { json_fail(p, "out of memory"); return NULL; }
    while (*p->s != '"') {
        unsigned char c = (unsigned char)*p->s;
        if (c < 0x20) { json_fail(p, "control character in string"); free(out); return NULL; }
        if (c != '\\') { *o++ = (char)c; p->s++; continue; }
        p->s++;
        char e = *p->s++;
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
        default: json_fail(p, "bad escape \\%c", e); free(out); return NULL;
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
    if (*q == '0') q++;
    else while (q < p->end && *q >= '0' && *q <= '9') q++;
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
    char buf[64];
    size_t n = (size_t)(q - p->s);
    if (n >= sizeof buf) { json_fail(p, "number too long"); return 0; }
    memcpy(buf, p->s, n);
    buf[n] = 0;
    j->type = JSON_NUMBER;
    j->number = strtod(buf, NULL);
    p->s = q;
    return 1;
}

static int json_literal(JsonParser *p, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(p->end - p->s) < n || memcmp(p->s, word, n) != 0) { json_fail(p, "unexpected character"); return 0; }
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
    default: return json_number(p, j);
    }
}

// Parses text[0..len). Returns NULL on error, with "line L, column C: what" in err.
static Json *json_parse(const char *text, size_t len, char *err, size_t errlen) {
    JsonParser p = {text, text + len, err, errlen, 0};
    Json *j = (Json *)calloc(1, sizeof(Json));
    if (!j) { snprintf(err, errlen, "out of memory"); return NULL; }
    if (json_value(&p, j, 0)) {
        json_ws(&p);
        if (p.s < p.end) json_fail(&p, "trailing characters after the JSON value");
    }
    if (p.failed) {
        int line = 1, col = 1;
        for (const char *c = text; c < p.s && c < p.end; c++) {
            if (*c == '\n') { line++; col = 1; } else col++;
        }
        char what[200];
        snprintf(what, sizeof what, "%s", err);
        snprintf(err, errlen, "line %d, column %d: %.200s", line, col, what);
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

#endif

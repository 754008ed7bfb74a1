// tokens.h — token streams from files: a `.ids` file is whitespace-separated decimal token ids
// (any number per line); any other file is UTF-8 text, tokenized once with BOS by the model's
// tokenizer. Pretraining samples windows of a stream (train.c, section 8); perplexity cuts it into
// windows (section 9); the clipping search calibrates on one.
#ifndef TOKENS_H
#define TOKENS_H

#include "../tokenizer.c"
#include "util.h"

typedef struct {
    int *ids;
    int64_t n;
} TokenStream;

static TokenStream load_ids(const char *path, int vocab_size) {
    size_t len;
    char *text = read_file_or_die(path, &len);
    TokenStream s = {NULL, 0};
    int64_t cap = 1024;
    s.ids = malloc_or_die((size_t)cap * sizeof(int), path);
    const char *p = text;
    int line = 1;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') line += *p++ == '\n';
        if (!*p) break;
        if (*p < '0' || *p > '9') die("%s: line %d: expected a token id, found '%c'", path, line, *p);
        long long v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p++ - '0');
            if (v > 1000000000LL) die("%s: line %d: token id too large", path, line);
        }
        if (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            die("%s: line %d: expected a token id, found '%c'", path, line, *p);
        if (v >= vocab_size) die("%s: line %d: token id %lld out of the model's vocabulary (%d)", path, line, v, vocab_size);
        if (s.n == cap) { cap *= 2; s.ids = realloc(s.ids, (size_t)cap * sizeof(int)); if (!s.ids) die("%s: out of memory", path); }
        s.ids[s.n++] = (int)v;
    }
    free(text);
    if (s.n == 0) die("%s: no token ids in the file", path);
    return s;
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// A token file: `.ids` as above, or any other file as UTF-8 text, tokenized once with BOS by
// the model's tokenizer (tok; NULL when the model has none).
static TokenStream load_tokens(const char *path, const Tokenizer *tok, int vocab_size) {
    if (has_suffix(path, ".ids")) return load_ids(path, vocab_size);
    if (!tok) die("%s: a text file needs the model's tokenizer (--tokenizer FILE, or MODEL.tokenizer beside the model); "
                  "token ids go in a .ids file", path);
    size_t len;
    char *text = read_file_or_die(path, &len);
    TokenStream s;
    int64_t cap = 3 * (int64_t)len + 2;
    if (cap > INT32_MAX) die("%s: too large to tokenize at once (%zu bytes)", path, len);
    s.ids = malloc_or_die((size_t)cap * sizeof(int), path);
    s.n = tokenizer_encode(tok, text, len, TOK_ADD_BOS, s.ids, (int)cap);
    free(text);
    for (int64_t i = 0; i < s.n; i++)
        if (s.ids[i] >= vocab_size) die("%s: the tokenizer made id %d, outside the model's vocabulary (%d)", path, s.ids[i], vocab_size);
    printf("tokenized %s: %zu bytes -> %lld tokens\n", path, len, (long long)s.n);
    return s;
}

#endif

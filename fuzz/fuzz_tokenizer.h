// fuzz/fuzz_tokenizer.h — the body of the two tokenizer targets: load the file, then encode a
// fixed text (ASCII, spaces, newlines, accents, CJK, an emoji, invalid UTF-8, a special token)
// with and without BOS and special tokens, and decode the ids back, so that whatever tables
// the loader built are used.
#include "fuzz.h"
#include "../tokenizer.c"

static const char FUZZ_TEXT[] = "Hello  world!\n\tI'm 42 caf\xc3\xa9s, \xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80 \xff\xfe <|begin_of_text|><s> ab";

static void fuzz_tokenizer(const char *name, const uint8_t *data, size_t size) {
    const char *path = fuzz_write(name, data, size);
    FUZZ_RUN(Tokenizer t; tokenizer_load(&t, path);
             int ids[4 * sizeof FUZZ_TEXT];
             for (int flags = 0; flags < 4; flags++) {
                 int n = tokenizer_encode(&t, FUZZ_TEXT, sizeof FUZZ_TEXT - 1, flags, ids, (int)(sizeof ids / sizeof ids[0]));
                 size_t len;
                 char *s = tokenizer_decode(&t, ids, n, &len);
                 free(s);
             }
             tokenizer_free(&t));
}

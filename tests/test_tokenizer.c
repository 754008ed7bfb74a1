// test_tokenizer.c — the tokenizers against hand-worked cases and the real libraries' ids.
//
//   1. Unicode classes: \p{L} \p{N} \s for every code point, against Oniguruma's (the regex
//      engine of Hugging Face tokenizers), recorded in tests/fixtures/tokenizer/unicode_check.txt.
//   2. The Llama-3 pre-tokenizer on hand-worked splits.
//   3. Hand-made vocabularies: a byte-level tokenizer.json and a SentencePiece protobuf built
//      here, whose merges are worked out by hand (rank order, score order, leftmost on ties,
//      byte fallback, ignore_merges, special tokens, the decoder's dummy-prefix rule).
//   4. A small Llama-3-style byte-level BPE trained with `tokenizers` (fixtures): our ids from
//      its tokenizer.json must equal tokenizers', from its tiktoken file tiktoken's; the regex
//      pieces must equal Oniguruma's; decode must equal tokenizers'; round trips exact.
//   5. The real Llama-2 tokenizer (../shared/data; skipped when absent), as tokenizer.model and
//      as llama2.c's tokenizer.bin: ids and decoded text identical to sentencepiece's on every
//      line of the corpus, and on every line of PIQA by hash.
// Reference files come from dev/make_tokenizer_reference.py (run on the GPU machine).
#include "../tokenizer.c"

#define FIX "tests/fixtures/tokenizer/"
static int failures = 0;

static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("  FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    failures++;
}

// "48656c6c6f" -> bytes ("-" is empty); returns the length.
static size_t unhex(const char *h, size_t n, char *out) {
    if (n == 1 && h[0] == '-') return 0;
    size_t m = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned v;
        if (sscanf(h + i, "%2x", &v) != 1) die("bad hex in fixture");
        out[m++] = (char)v;
    }
    return m;
}

static int parse_ids(const char *s, size_t n, int *ids) {  // "1 2 3" or "-"
    int k = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] == ' ' || s[i] == '-') { i++; continue; }
        ids[k++] = atoi(s + i);
        while (i < n && s[i] != ' ') i++;
    }
    return k;
}

// Splits a line at tabs into at most `max` fields (pointer + length).
static int fields(char *line, const char **f, size_t *len, int max) {
    int k = 0;
    char *p = line;
    while (k < max) {
        char *tab = strchr(p, '\t');
        f[k] = p;
        len[k] = tab ? (size_t)(tab - p) : strlen(p);
        k++;
        if (!tab) break;
        p = tab + 1;
    }
    return k;
}

static int same_ids(const int *a, int na, const int *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof(int)) == 0);
}

static void print_ids(const char *what, const int *ids, int n) {
    printf("    %s:", what);
    for (int i = 0; i < n && i < 24; i++) printf(" %d", ids[i]);
    printf(n > 24 ? " ... (%d)\n" : "\n", n);
}

static int valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

static uint64_t fnv1a64(const int *ids, int n) {
    uint64_t h = 14695981039346656037ull;
    for (int i = 0; i < n; i++) h = (h ^ (uint64_t)ids[i]) * 1099511628211ull;
    return h;
}

// Reads a fixture's lines (comments starting with '#' dropped); returns the count.
static int read_lines(const char *path, char ***lines) {
    size_t len;
    char *buf = read_file_or_die(path, &len);
    int n = 0, cap = 64;
    *lines = malloc_or_die((size_t)cap * sizeof(char *), "lines");
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        if (*p != '#') {
            if (n == cap) *lines = realloc(*lines, (size_t)(cap *= 2) * sizeof(char *));
            (*lines)[n++] = p;
        }
        if (!nl) break;
        p = nl + 1;
    }
    return n;
}

// ---------------------------------------------------------------------------------------
static void test_unicode_classes(void) {
    char **lines;
    int n = read_lines(FIX "unicode_check.txt", &lines);
    static unsigned char want[0x110000];  // bit 0: L, bit 1: N, bit 2: \s (Oniguruma)
    memset(want, 0, sizeof want);
    for (int i = 0; i < n; i++) {
        int bit = lines[i][0] == 'L' ? 1 : lines[i][0] == 'N' ? 2 : 4;
        char *p = strchr(strchr(lines[i], ' ') + 1, ' ');
        while (p && *p) {
            unsigned a, b;
            if (sscanf(p, " %x-%x", &a, &b) != 2) break;
            for (unsigned c = a; c <= b && c < 0x110000; c++) want[c] |= (unsigned char)bit;
            p = strchr(p + 1, ' ');
        }
    }
    int bad = 0, checked = 0;
    for (uint32_t c = 0; c < 0x110000; c++) {
        if (c >= 0xd800 && c < 0xe000) continue;
        int k = char_class(c), got = k == CH_LETTER ? 1 : k == CH_NUMBER ? 2 : k == CH_SPACE ? 4 : 0;
        checked++;
        if (got != want[c] && bad++ < 5) fail("U+%04X: class bits %d, Oniguruma %d", c, got, want[c]);
    }
    printf("unicode classes \\p{L} \\p{N} \\s vs Oniguruma: %d code points, %d differ\n", checked, bad);
}

// ---------------------------------------------------------------------------------------
static void test_pretokenizer(void) {
    // text, then its pieces separated by '|' (worked out from the regex by hand)
    static const char *cases[][2] = {
        {"Hello world", "Hello| world"},
        {"I'm here, you're THERE'S", "I|'m| here|,| you|'re| THERE|'S"},
        {"12345 678", "123|45| |678"},
        {"  x", " | x"},
        {"end  ", "end|  "},
        {"a  \n\n b", "a|  \n\n| b"},
        {"x!!\n\ny", "x|!!\n\n|y"},
        {" (hello) ...", " (|hello|)| ..."},
        {"a\tb", "a|\tb"},
        {"a \t b", "a| \t| b"},
        {"\xe6\x97\xa5\xe6\x9c\xac 1\xc2\xbd", "\xe6\x97\xa5\xe6\x9c\xac| |1\xc2\xbd"},
        {"x\xffy", "x|\xffy"},
        {"\r\n", "\r\n"},
    };
    int bad = 0, n = (int)(sizeof cases / sizeof cases[0]);
    for (int c = 0; c < n; c++) {
        const char *s = cases[c][0];
        size_t len = strlen(s), p = 0;
        char got[256] = "";
        size_t g = 0;
        while (p < len) {
            size_t e = llama3_piece_end(s, len, p);
            if (p) got[g++] = '|';
            memcpy(got + g, s + p, e - p);
            g += e - p;
            p = e;
        }
        got[g] = 0;
        if (strcmp(got, cases[c][1])) { fail("pre-tokenizer case %d: got \"%s\", want \"%s\"", c, got, cases[c][1]); bad++; }
    }
    printf("pre-tokenizer, hand-worked splits: %d cases, %d wrong\n", n, bad);
}

// ---------------------------------------------------------------------------------------
// A hand-made byte-level tokenizer.json: ids 0..255 are the bytes, then
//   256 "aa" (merge 0: a a), 257 "bc" (merge 1: b c), 258 "abc" (merge 2: a bc),
//   259 "aaa" (no merge makes it: only ignore_merges emits it), 260 "<|x|>" (added token).
static void write_hand_json(const char *path, int ignore_merges) {
    FILE *f = fopen_or_die(path, "wb");
    fprintf(f, "{\"normalizer\": null, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
               "[{\"type\": \"Split\", \"pattern\": {\"Regex\": \"");
    for (const char *p = LLAMA3_PATTERN; *p; p++) fprintf(f, *p == '\\' ? "\\\\" : "%c", *p);
    fprintf(f, "\"}, \"behavior\": \"Isolated\"}, {\"type\": \"ByteLevel\"}]},\n"
               "\"added_tokens\": [{\"id\": 260, \"content\": \"<|x|>\", \"special\": true}],\n"
               "\"model\": {\"type\": \"BPE\", \"ignore_merges\": %s, \"vocab\": {", ignore_merges ? "true" : "false");
    for (int b = 0; b < 256; b++) {  // the byte-level character of byte b (GPT-2's table)
        uint32_t cp = 0;
        for (uint32_t c = 0; c < 324; c++) if (byte_of_char(c) == b) cp = c;
        char u[8];
        int l = (int)json_utf8(u, cp);
        fputc('"', f);
        if (cp == '"' || cp == '\\') fputc('\\', f);
        fwrite(u, 1, (size_t)l, f);
        fprintf(f, "\": %d, ", b);
    }
    fprintf(f, "\"aa\": 256, \"bc\": 257, \"abc\": 258, \"aaa\": 259},\n"
               "\"merges\": [\"a a\", [\"b\", \"c\"], \"a bc\"]}}\n");
    fclose(f);
}

static void expect_ids(const Tokenizer *t, const char *what, const char *text, int flags, const int *want, int nwant) {
    int ids[256];
    int n = tokenizer_encode(t, text, strlen(text), flags, ids, 256);
    if (!same_ids(ids, n, want, nwant)) {
        fail("%s: \"%s\"", what, text);
        print_ids("got ", ids, n);
        print_ids("want", want, nwant);
    }
}

static void test_hand_bpe(void) {
    const char *path = "/tmp/test_tokenizer_hand.json";
    Tokenizer t;
    write_hand_json(path, 0);
    tokenizer_load(&t, path);
    int before = failures;
    // "aaaa": (a,a) is merge 0 at three places; leftmost first -> aa a a -> aa aa
    expect_ids(&t, "leftmost merge on a tie", "aaaa", 0, (int[]){256, 256}, 2);
    // "abc": (b,c) rank 1 first, then (a,bc) rank 2
    expect_ids(&t, "merge by rank", "abc", 0, (int[]){258}, 1);
    // "aaa" is a token, but without ignore_merges it comes from merges: aa a
    expect_ids(&t, "no ignore_merges", "aaa", 0, (int[]){256, 97}, 2);
    // pieces " abc" and "!": the space is its own byte
    expect_ids(&t, "pieces", " abc!", 0, (int[]){32, 258, 33}, 3);
    expect_ids(&t, "special token recognised", "a<|x|>b", TOK_SPECIAL, (int[]){97, 260, 98}, 3);
    expect_ids(&t, "special token as text", "<|x|>", 0, (int[]){60, 124, 120, 124, 62}, 5);
    int ids[3] = {258, 260, 10};
    size_t len;
    char *text = tokenizer_decode(&t, ids, 3, &len);
    if (len != 9 || memcmp(text, "abc<|x|>\n", 9)) fail("byte-level decode gave \"%s\"", text);
    free(text);
    tokenizer_free(&t);
    write_hand_json(path, 1);
    tokenizer_load(&t, path);
    expect_ids(&t, "ignore_merges: a whole piece that is a token", "aaa", 0, (int[]){259}, 1);
    tokenizer_free(&t);
    remove(path);
    printf("hand-made byte-level BPE (ranks, ties, ignore_merges, specials): %d wrong\n", failures - before);
}

// A hand-made SentencePiece model: protobuf bytes written field by field.
static void pb_put_varint(FILE *f, uint64_t v) {
    do { fputc((int)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)), f); v >>= 7; } while (v);
}

static void pb_put_piece(FILE *f, const char *piece, float score, int type) {
    size_t n = strlen(piece);
    size_t msg = 1 + 1 + n + 1 + 4 + 2;  // piece (n < 128), score, type
    fputc(0x0a, f), pb_put_varint(f, msg);
    fputc(0x0a, f), pb_put_varint(f, n), fwrite(piece, 1, n, f);
    fputc(0x15, f), fwrite(&score, 4, 1, f);
    fputc(0x18, f), fputc(type, f);
}

static void test_hand_spm(void) {
    const char *path = "/tmp/test_tokenizer_hand.model";
    FILE *f = fopen_or_die(path, "wb");
    pb_put_piece(f, "<unk>", 0, SP_UNKNOWN);
    pb_put_piece(f, "<s>", 0, SP_CONTROL);
    pb_put_piece(f, "</s>", 0, SP_CONTROL);
    for (int b = 0; b < 256; b++) {
        char p[8];
        snprintf(p, sizeof p, "<0x%02X>", b);
        pb_put_piece(f, p, 0, SP_BYTE);
    }
    // ids 259.. : the pieces and scores the merges are worked out from
    pb_put_piece(f, "\xe2\x96\x81", -1.0f, SP_NORMAL);        // 259 ▁
    pb_put_piece(f, "a", -2.0f, SP_NORMAL);                   // 260
    pb_put_piece(f, "b", -3.0f, SP_NORMAL);                   // 261
    pb_put_piece(f, "ab", -0.5f, SP_NORMAL);                  // 262
    pb_put_piece(f, "\xe2\x96\x81" "a", -0.7f, SP_NORMAL);    // 263 ▁a
    pb_put_piece(f, "aa", -0.6f, SP_NORMAL);                  // 264
    // trainer_spec { model_type: BPE (3), byte_fallback: true (35) }
    fputc(0x12, f), pb_put_varint(f, 2 + 3), fputc(0x18, f), fputc(2, f);
    pb_put_varint(f, 35 << 3), fputc(1, f);
    // normalizer_spec { name: "identity", remove_extra_whitespaces: false }
    fputc(0x1a, f), pb_put_varint(f, 10 + 2), fputc(0x0a, f), fputc(8, f), fwrite("identity", 1, 8, f);
    fputc(0x20, f), fputc(0, f);
    fclose(f);
    Tokenizer t;
    tokenizer_load(&t, path);
    int before = failures;
    // "▁ab": ab (-0.5) beats ▁a (-0.7); "▁ab" is no piece, so ▁ ab
    expect_ids(&t, "highest score first", "ab", 0, (int[]){259, 262}, 2);
    // "▁aaa": aa (-0.6) at two places: leftmost -> ▁ aa a (rightmost would give ▁a aa)
    expect_ids(&t, "leftmost on a score tie", "aaa", 0, (int[]){259, 264, 260}, 3);
    // "c" has no piece: byte fallback <0x63>; BOS first when asked
    expect_ids(&t, "byte fallback and BOS", "a c", TOK_ADD_BOS, (int[]){1, 263, 259, 3 + 'c'}, 4);
    expect_ids(&t, "empty text has no dummy prefix", "", 0, NULL, 0);
    // decode: BOS vanishes, the first piece's "▁" is the dummy prefix, bytes become UTF-8
    int ids[] = {1, 263, 259, 3 + 0xc3, 3 + 0xa9, 3 + 0xff, 0};
    char *text = tokenizer_decode(&t, ids, 7, NULL);
    if (strcmp(text, "a \xc3\xa9\xef\xbf\xbd \xe2\x81\x87 ")) fail("SentencePiece decode gave \"%s\"", text);
    free(text);
    // streaming: "▁a" right after BOS loses its space, later it keeps it; a byte piece is its byte
    char piece[16];
    int l1 = tokenizer_decode_piece(&t, 1, 263, piece, 16);
    int l2 = tokenizer_decode_piece(&t, 260, 263, piece + l1, 16 - l1);
    int l3 = tokenizer_decode_piece(&t, 263, 3 + 0xc3, piece + l1 + l2, 16 - l1 - l2);
    if (l1 + l2 + l3 != 4 || memcmp(piece, "a a\xc3", 4)) fail("tokenizer_decode_piece gave %d bytes", l1 + l2 + l3);
    tokenizer_free(&t);
    remove(path);
    printf("hand-made SentencePiece BPE (scores, ties, byte fallback, decode, streaming): %d wrong\n", failures - before);
}

// ---------------------------------------------------------------------------------------
// Round trip: decode(encode(text)) == text, for every text of the corpus fixture. Byte-level
// BPE keeps every byte. SentencePiece, like the real library, reads an invalid byte as U+FFFD
// and a literal "▁" as a space, so those texts are left out there (their decoded text is
// compared with sentencepiece's instead).
static void round_trips(const Tokenizer *t, const char *name, char **lines, int n) {
    int bad = 0, checked = 0;
    for (int i = 0; i < n; i++) {
        const char *f[3];
        size_t fl[3];
        if (fields(lines[i], f, fl, 3) < 1) continue;
        char *text = malloc_or_die(fl[0] / 2 + 1, "text");
        size_t len = unhex(f[0], fl[0], text);
        text[len] = 0;
        if (t->kind == TOK_SPM && (!valid_utf8(text, len) || strstr(text, "\xe2\x96\x81"))) { free(text); continue; }
        int max = (int)(3 * len + 2), *ids = malloc_or_die((size_t)max * sizeof(int), "ids");
        int k = tokenizer_encode(t, text, len, t->kind == TOK_SPM ? TOK_ADD_BOS : 0, ids, max);
        size_t dl;
        char *dec = tokenizer_decode(t, ids, k, &dl);
        checked++;
        if (dl != len || memcmp(dec, text, len)) { if (bad++ < 3) fail("%s: round trip of line %d changed the text", name, i); }
        free(dec), free(ids), free(text);
    }
    printf("%s: exact round trips decode(encode(text)) == text: %d texts, %d changed\n", name, checked, bad);
}

static void test_bpe_fixture(void) {
    Tokenizer tj, tt;
    tokenizer_load(&tj, FIX "bpe_tokenizer.json");
    tokenizer_load(&tt, FIX "bpe_tokenizer.tiktoken");
    if (tj.n_vocab != tt.n_vocab || tj.bos_id != tt.bos_id) fail("json and tiktoken files disagree on the vocabulary");
    char **lines;
    int n = read_lines(FIX "bpe_ref.tsv", &lines);
    int bad[4] = {0}, ids[8192], want[8192];
    for (int i = 0; i < n; i++) {
        const char *f[6];
        size_t fl[6];
        if (fields(lines[i], f, fl, 6) != 6) die(FIX "bpe_ref.tsv: line %d has not 6 fields", i + 1);
        char text[8192], dec[8192];
        size_t len = unhex(f[0], fl[0], text);
        // 1: the json tokenizer with specials on = tokenizers (which always matches added tokens)
        int nw = parse_ids(f[1], fl[1], want), k = tokenizer_encode(&tj, text, len, TOK_SPECIAL, ids, 8192);
        if (!same_ids(ids, k, want, nw) && bad[0]++ < 3) { fail("json vs tokenizers, line %d", i + 1); print_ids("got ", ids, k); print_ids("want", want, nw); }
        // 2: tiktoken file, plain text = encode_ordinary; and the json file the same way
        nw = parse_ids(f[2], fl[2], want);
        k = tokenizer_encode(&tt, text, len, 0, ids, 8192);
        if (!same_ids(ids, k, want, nw) && bad[1]++ < 3) { fail("tiktoken file vs tiktoken ordinary, line %d", i + 1); print_ids("got ", ids, k); print_ids("want", want, nw); }
        k = tokenizer_encode(&tj, text, len, 0, ids, 8192);
        if (!same_ids(ids, k, want, nw) && bad[1]++ < 3) fail("json, plain text vs tiktoken ordinary, line %d", i + 1);
        // 3: tiktoken file, specials allowed
        nw = parse_ids(f[3], fl[3], want);
        k = tokenizer_encode(&tt, text, len, TOK_SPECIAL, ids, 8192);
        if (!same_ids(ids, k, want, nw) && bad[2]++ < 3) fail("tiktoken file vs tiktoken allowed_special=all, line %d", i + 1);
        // 4: the regex pieces, and the decoded text
        char pieces[16384];
        size_t g = 0;
        for (size_t p = 0; p < len;) {
            size_t e = llama3_piece_end(text, len, p);
            for (size_t q = p; q < e; q++) g += (size_t)sprintf(pieces + g, "%02x", (unsigned char)text[q]);
            if (e < len) pieces[g++] = ',';
            p = e;
        }
        pieces[g] = 0;
        if ((g ? g : 1) != fl[4] || (g && memcmp(pieces, f[4], g)))
            if (bad[3]++ < 3) fail("regex pieces differ from Oniguruma's, line %d: %s vs %.*s", i + 1, pieces, (int)fl[4], f[4]);
        size_t dl = unhex(f[5], fl[5], dec), ol;
        nw = parse_ids(f[1], fl[1], want);
        char *out = tokenizer_decode(&tj, want, nw, &ol);
        if ((ol != dl || memcmp(out, dec, dl)) && bad[3]++ < 3) fail("decode differs from tokenizers', line %d", i + 1);
        free(out);
    }
    printf("byte-level BPE vs tokenizers/tiktoken: %d texts; wrong: %d json ids, %d tiktoken ids, "
           "%d with specials, %d pieces/decodes\n", n, bad[0], bad[1], bad[2], bad[3]);
    char **corpus;
    int nc = read_lines(FIX "llama2_ref.tsv", &corpus);  // the same texts, invalid UTF-8 included
    round_trips(&tj, "byte-level BPE", corpus, nc);
    // BOS
    int b[4];
    if (tokenizer_encode(&tj, "a", 1, TOK_ADD_BOS, b, 4) != 2 || b[0] != tj.bos_id || tj.bos_id != 2000)
        fail("BOS <|begin_of_text|> should be id 2000 and come first");
    // PIQA by hash, when the data is here
    const char *piqa = "../shared/data/piqa/valid.jsonl";
    if (!file_exists(piqa)) printf("skipped: byte-level BPE on PIQA (%s absent)\n", piqa);
    else {
        char **ref, **pl;
        int nr = read_lines(FIX "bpe_piqa.tsv", &ref), np = read_lines(piqa, &pl), badp = 0;
        if (nr != np) fail("bpe_piqa.tsv has %d lines, PIQA %d", nr, np);
        int *pids = malloc_or_die((2u << 18) * sizeof(int), "ids");
        for (int i = 0; i < nr && i < np; i++) {
            int cnt;
            unsigned long long hj, ht;
            sscanf(ref[i], "%d %llx %llx", &cnt, &hj, &ht);
            int k = tokenizer_encode(&tj, pl[i], strlen(pl[i]), 0, pids, 1 << 18);
            int k2 = tokenizer_encode(&tt, pl[i], strlen(pl[i]), 0, pids + (1 << 18), 1 << 18);
            if ((k != cnt || fnv1a64(pids, k) != hj || fnv1a64(pids + (1 << 18), k2) != ht) && badp++ < 3)
                fail("PIQA line %d: byte-level ids differ from tokenizers/tiktoken", i + 1);
        }
        printf("byte-level BPE on PIQA (%d lines) vs tokenizers and tiktoken: %d lines differ\n", np, badp);
        free(pids);
    }
    tokenizer_free(&tj);
    tokenizer_free(&tt);
}

// ---------------------------------------------------------------------------------------
// Random texts, drawn exactly as dev/make_tokenizer_reference.py draws them (xorshift64* over
// the alphabet in random_ref.tsv's first line), compared by hash in chunks of texts. Column
// 1 is sentencepiece's ids (checked when the Llama-2 tokenizer is here), 2 tokenizers' (json,
// specials on), 3 tiktoken's ordinary, 4 tiktoken's with specials allowed (tiktoken file).
static uint64_t xorshift64s(uint64_t *x) {
    *x ^= *x >> 12;
    *x ^= *x << 25;
    *x ^= *x >> 27;
    return *x * 0x2545F4914F6CDD1Dull;
}

static void test_random(const Tokenizer *spm) {
    Tokenizer tj, tt;
    tokenizer_load(&tj, FIX "bpe_tokenizer.json");
    tokenizer_load(&tt, FIX "bpe_tokenizer.tiktoken");
    size_t flen;
    char *file = read_file_or_die(FIX "random_ref.tsv", &flen);
    char *alpha = strstr(file, "# alphabet\t");
    if (!alpha) die(FIX "random_ref.tsv: no alphabet line");
    alpha += 11;
    static char sym[256][64];  // the alphabet's symbols
    static size_t sym_len[256];
    int na = 0;
    for (char *p = alpha; *p && *p != '\n'; na++) {
        size_t n = strcspn(p, ",\n");
        sym_len[na] = unhex(p, n, sym[na]);
        p += n + (p[n] == ',');
    }
    int chunks = 0, bad[4] = {0}, chunk = 0;
    const char *line = file;
    static int ids[4096];
    static char text[4096];
    uint64_t h[4];
    for (int i = 0;; i++) {
        if (i % 50 == 0) {  // the next chunk's reference line
            const char *p = line;
            while ((p = strchr(p, '\n')) && p[1] == '#') p++;
            if (!p || !p[1]) break;
            line = p + 1;
            for (int k = 0; k < 4; k++) h[k] = 14695981039346656037ull;
        }
        uint64_t x = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        int n = 1 + (int)(xorshift64s(&x) % 40);
        size_t len = 0;
        for (int k = 0; k < n; k++) {
            int a = (int)(xorshift64s(&x) % (uint64_t)na);
            memcpy(text + len, sym[a], sym_len[a]);
            len += sym_len[a];
        }
        const Tokenizer *tk[4] = {spm, &tj, &tt, &tt};
        const int fl[4] = {0, TOK_SPECIAL, 0, TOK_SPECIAL};
        for (int k = 0; k < 4; k++) {
            if (!tk[k]) continue;
            int m = tokenizer_encode(tk[k], text, len, fl[k], ids, 4096);
            for (int j = 0; j < m; j++) h[k] = (h[k] ^ (uint64_t)ids[j]) * 1099511628211ull;
        }
        if ((i + 1) % 50 == 0) {
            unsigned long long want[4];
            if (sscanf(line, "%d %llx %llx %llx %llx", &chunk, &want[0], &want[1], &want[2], &want[3]) != 5)
                die(FIX "random_ref.tsv: bad chunk line");
            for (int k = 0; k < 4; k++)
                if (tk[k] && h[k] != want[k] && bad[k]++ < 3) fail("random texts, chunk %d (texts %d..%d): column %d differs", chunk, i - 49, i, k + 1);
            chunks++;
        }
    }
    printf("random texts vs the libraries: %d chunks of 50; chunks that differ: sentencepiece %s, "
           "tokenizers %d, tiktoken %d, tiktoken with specials %d\n", chunks, spm ? (bad[0] ? "SOME" : "0") : "skipped", bad[1], bad[2], bad[3]);
    if (chunks == 0) fail("random_ref.tsv has no chunks");
    free(file);
    tokenizer_free(&tj);
    tokenizer_free(&tt);
}

// ---------------------------------------------------------------------------------------
static void test_llama2_file(const char *path) {
    Tokenizer t;
    tokenizer_load(&t, path);
    if (t.n_vocab != 32000 || t.bos_id != 1 || t.eos_id != 2) fail("%s: vocab %d bos %d eos %d", path, t.n_vocab, t.bos_id, t.eos_id);
    char **lines;
    int n = read_lines(FIX "llama2_ref.tsv", &lines), bad_ids = 0, bad_dec = 0;
    static int ids[1 << 16], want[1 << 16];
    static char text[1 << 16], dec[1 << 16];
    for (int i = 0; i < n; i++) {
        const char *f[3];
        size_t fl[3];
        char line[1 << 15];
        snprintf(line, sizeof line, "%s", lines[i]);
        if (fields(line, f, fl, 3) != 3) die(FIX "llama2_ref.tsv: line %d has not 3 fields", i + 1);
        size_t len = unhex(f[0], fl[0], text);
        int nw = parse_ids(f[1], fl[1], want), k = tokenizer_encode(&t, text, len, 0, ids, 1 << 16);
        if (!same_ids(ids, k, want, nw) && bad_ids++ < 5) { fail("ids differ from sentencepiece, line %d", i + 1); print_ids("got ", ids, k); print_ids("want", want, nw); }
        size_t dl = unhex(f[2], fl[2], dec), ol;
        char *out = tokenizer_decode(&t, want, nw, &ol);
        if ((ol != dl || memcmp(out, dec, dl)) && bad_dec++ < 5) fail("decode differs from sentencepiece, line %d: \"%s\"", i + 1, out);
        free(out);
    }
    printf("%s vs sentencepiece: %d texts; %d with other ids, %d decoded differently\n", path, n, bad_ids, bad_dec);
    round_trips(&t, path, lines, n);
    // the earlier reference set (JSON lines: {"text": ..., "ids": [...]})
    char **jl;
    int nj = read_lines(FIX "llama2_reference.jsonl", &jl), badj = 0;
    for (int i = 0; i < nj; i++) {
        char err[200];
        Json *j = json_parse(jl[i], strlen(jl[i]), err, sizeof err);
        const Json *tx = json_get(j, "text"), *is = json_get(j, "ids");
        if (!j || !tx || !is) die(FIX "llama2_reference.jsonl: line %d: bad line", i + 1);
        int nw = is->n;
        for (int k = 0; k < nw; k++) want[k] = (int)is->items[k].number;
        int k = tokenizer_encode(&t, tx->string, tx->string_len, 0, ids, 1 << 16);
        if (!same_ids(ids, k, want, nw) && badj++ < 3) fail("llama2_reference.jsonl line %d differs", i + 1);
        json_free(j);
    }
    printf("%s vs llama2_reference.jsonl: %d texts, %d differ\n", path, nj, badj);
    if (tokenizer_encode(&t, "Hi", 2, TOK_ADD_BOS, ids, 8) != 2 || ids[0] != 1) fail("BOS 1 should come first");
    const char *piqa = "../shared/data/piqa/valid.jsonl";
    if (!file_exists(piqa)) printf("skipped: Llama-2 on PIQA (%s absent)\n", piqa);
    else {
        char **ref, **pl;
        int nr = read_lines(FIX "llama2_piqa.tsv", &ref), np = read_lines(piqa, &pl), badp = 0;
        if (nr != np) fail("llama2_piqa.tsv has %d lines, PIQA %d", nr, np);
        for (int i = 0; i < nr && i < np; i++) {
            int cnt;
            unsigned long long h;
            sscanf(ref[i], "%d %llx", &cnt, &h);
            int k = tokenizer_encode(&t, pl[i], strlen(pl[i]), 0, ids, 1 << 16);
            if ((k != cnt || fnv1a64(ids, k) != h) && badp++ < 3) fail("PIQA line %d: ids differ from sentencepiece", i + 1);
        }
        printf("%s on PIQA (%d lines) vs sentencepiece: %d lines differ\n", path, np, badp);
    }
    tokenizer_free(&t);
}

int main(void) {
    test_unicode_classes();
    test_pretokenizer();
    test_hand_bpe();
    test_hand_spm();
    test_bpe_fixture();
    const char *dir = "../shared/data/llama2-tokenizer";
    if (!file_exists(dir)) {
        printf("skipped: the real Llama-2 tokenizer (%s absent)\n", dir);
        if (file_exists(FIX "random_ref.tsv")) test_random(NULL);
    } else {
        test_llama2_file("../shared/data/llama2-tokenizer/tokenizer.model");
        test_llama2_file("../shared/data/llama2-tokenizer/tokenizer.bin");
        Tokenizer t;
        tokenizer_load(&t, "../shared/data/llama2-tokenizer/tokenizer.model");
        if (file_exists(FIX "random_ref.tsv")) test_random(&t);
        else fail(FIX "random_ref.tsv is missing");
        tokenizer_free(&t);
    }
    printf("%s: %d failure%s\n", failures ? "FAILED" : "ok", failures, failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}

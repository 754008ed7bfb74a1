// test_data.c — data.c: JSONL examples, the split, batches and masks, prompt sources, and
// teacher-generated data.
//   1. bad input: every malformed data file, prompt spec or generation setting dies with one
//      line "error: ..." and exit status 1 (run in a child process);
//   2. examples (tests/fixtures/data/train.jsonl, the 2,256-token Llama-3-style BPE): tokens,
//      n_real, n_prompt, padding, targets and masks against a hand-computed example; JSON
//      escapes and unicode reach the tokenizer intact; truncation;
//   3. the split (first fifth = eval) and the per-epoch order;
//   4. prompt sources: WikiText, Alpaca (JSON and JSONL), text, mixes and counts, against
//      hand-written expected prompts;
//   5. JSON string writing: control bytes, quotes, invalid UTF-8 parse back with json.h;
//   6. generation with a random model: the file parses back, each prompt is the source prompt,
//      the same seed gives the same bytes; the tokenizer's EOS stops sequences; prompts longer
//      than the context are skipped; SentencePiece responses keep their leading space.
#define TRAIN_NO_MAIN
#include "../train.c"
#include "../lib/data.c"
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#define FIX "tests/fixtures/data/"
#define BPE "tests/fixtures/tokenizer/bpe_tokenizer.json"
#define SPM "../shared/data/llama2-tokenizer/tokenizer.model"

static int failures = 0;
static void expect(int ok, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    printf("  %-96s %s\n", what, ok ? "ok" : "FAIL");
    failures += !ok;
}

static char tmpdir[64];
static Tokenizer tok;

static const char *tmp_file(const char *name, const char *content, size_t len) {
    static char path[16][256];
    static int k = 0;
    char *p = path[k++ % 16];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    FILE *f = fopen_or_die(p, "wb");
    fwrite_or_die(content, len, f, p);
    fclose(f);
    return p;
}
#define TMP(name, literal) tmp_file(name, literal, sizeof(literal) - 1)

// ---------------------------------------------------------------------------------------------
// 1. Bad input, each in a child process: exit status 1, one line on stderr, "error: ..." with
//    the expected words.

typedef struct { const char *path, *spec; int seq, vocab, n_total, batch, max_new; float top_p; Model *m; const Prompts *p; } Case;

static void run_load(const Case *c) { Dataset d; dataset_load(&d, c->path, &tok, c->seq, c->vocab ? c->vocab : 2304); }
static void run_prompts(const Case *c) { Prompts p; prompts_load(&p, c->spec, c->n_total, 1); }
static void run_generate(const Case *c) {
    generate_data(c->m, c->path ? NULL : &tok, c->p, c->batch, c->max_new, 1.0f, c->top_p, 1, "/dev/null/never.jsonl");
}

static void expect_death(void (*fn)(const Case *), Case c, const char *want) {
    char err_path[128];
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", tmpdir);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644), nul = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        dup2(nul, 1);
        fn(&c);
        _exit(0);  // it should have died
    }
    int status = 0;
    waitpid(pid, &status, 0);
    size_t len;
    char *err = read_file_or_die(err_path, &len);
    int lines = 0;
    for (size_t i = 0; i < len; i++) lines += err[i] == '\n';
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 1 && lines == 1 && !strncmp(err, "error: ", 7) && strstr(err, want);
    if (len && err[len - 1] == '\n') err[len - 1] = 0;
    const char *shown = strstr(err, tmpdir) ? strstr(err, tmpdir) + strlen(tmpdir) + 1 : err;  // drop the temp dir
    expect(ok, "dies (status %d, %d line): %.72s", WIFEXITED(status) ? WEXITSTATUS(status) : -1, lines, shown);
    free(err);
}

static void test_bad_input(Model *m) {
    printf("bad input: exit status 1 and one line \"error: FILE:LINE: problem\"\n");
    Case c = {0};
    c.seq = 32;
#define BAD_DATA(name, literal, want) do { c.path = TMP(name, literal); expect_death(run_load, c, want); } while (0)
    BAD_DATA("bad_json.jsonl", "[[\"ok\", \"fine\"]]\n{\"prompt\": \"x\", \"response\": }\n", "bad_json.jsonl:2: not valid JSON");
    BAD_DATA("trailing.jsonl", "[[\"a\", \"b\"]] x\n", "trailing.jsonl:1: not valid JSON");
    BAD_DATA("blank_then_bad.jsonl", "\n  \n42\n", "blank_then_bad.jsonl:3: found a number");
    BAD_DATA("lacks_response.jsonl", "{\"prompt\": \"x\"}\n", ":1: has \"prompt\" but lacks \"response\"");
    BAD_DATA("lacks_prompt.jsonl", "{\"response\": \"x\"}\n", ":1: has \"response\" but lacks \"prompt\"");
    BAD_DATA("prompt_number.jsonl", "{\"prompt\": 1, \"response\": \"x\"}\n", "\"prompt\" is a number, not a string");
    BAD_DATA("text_null.jsonl", "{\"text\": null}\n", "\"text\" is null, not a string");
    BAD_DATA("no_fields.jsonl", "{\"foo\": \"bar\"}\n", ":1: lacks fields");
    BAD_DATA("empty_list.jsonl", "[]\n", ":1: an empty list");
    BAD_DATA("one_string.jsonl", "[[\"only one\"]]\n", "item 1 of the list is not a [\"prompt\", \"response\"] pair");
    BAD_DATA("pair_number.jsonl", "[[\"a\", \"b\"], [\"a\", 3]]\n", "item 2 of the list is not");
    BAD_DATA("flat_pair.jsonl", "[\"a\", \"b\"]\n", "item 1 of the list is not");
    BAD_DATA("bad_utf8.jsonl", "{\"text\": \"\xff\"}\n", ":1: not valid JSON (column 11: invalid UTF-8");
    BAD_DATA("empty.jsonl", "", "empty.jsonl: empty file");
    BAD_DATA("blank.jsonl", "\n  \n\r\n", "blank.jsonl: no examples");
    c.path = "/nonexistent/data.jsonl";
    expect_death(run_load, c, "/nonexistent/data.jsonl: cannot open");
    c.path = FIX "train.jsonl"; c.seq = 1;
    expect_death(run_load, c, "need --seq >= 2");
    c.seq = 32; c.vocab = 100;
    expect_death(run_load, c, "train.jsonl:1: the tokenizer made id 2000, outside the model's vocabulary (100)");

#define BAD_SPEC(spec_, n, want) do { c.spec = spec_; c.n_total = n; expect_death(run_prompts, c, want); } while (0)
    char spec[512];
    BAD_SPEC("foo:x.txt", 0, "unknown prompt source 'foo'");
    BAD_SPEC("prompts.txt", 0, "names no source kind");
    BAD_SPEC("text:", 0, "source 'text' has no path");
    BAD_SPEC("", 0, "expected wikitext:PATH");
    BAD_SPEC("text:/nonexistent/p.txt", 0, "/nonexistent/p.txt: cannot open");
    BAD_SPEC("text:" FIX "prompts.txt=0", 0, "count '0' must be at least 1");
    BAD_SPEC("text:" FIX "prompts.txt=3,alpaca:" FIX "alpaca.json", 3, "none left for the sources without one");
    snprintf(spec, sizeof spec, "wikitext:%s", TMP("short.raw", " = Title = \n\n A short paragraph .\n"));
    BAD_SPEC(spec, 0, "short.raw: no prompts (no paragraph longer than 512 characters)");
    snprintf(spec, sizeof spec, "text:%s", TMP("blank.txt", "\n \n\t\n"));
    BAD_SPEC(spec, 0, "blank.txt: no prompts (only blank lines)");
    snprintf(spec, sizeof spec, "text:%s", TMP("latin1.txt", "fine\ncaf\xe9\n"));
    BAD_SPEC(spec, 0, "latin1.txt:2: invalid UTF-8 (byte 0xe9)");
    snprintf(spec, sizeof spec, "alpaca:%s", TMP("no_instr.json", "[{\"instruction\": \"a\"}, {\"input\": \"b\"}]"));
    BAD_SPEC(spec, 0, "no_instr.json: record 2: lacks \"instruction\"");
    snprintf(spec, sizeof spec, "alpaca:%s", TMP("input_num.jsonl", "{\"instruction\": \"a\", \"input\": 5}\n"));
    BAD_SPEC(spec, 0, "input_num.jsonl:1: \"input\" is a number, not a string");
    snprintf(spec, sizeof spec, "alpaca:%s", TMP("not_obj.json", "[\"just a string\"]"));
    BAD_SPEC(spec, 0, "not_obj.json: record 1: found a string, expected an object");
    snprintf(spec, sizeof spec, "alpaca:%s", TMP("bad.json", "[{\"instruction\": \"a\",}]"));
    BAD_SPEC(spec, 0, "bad.json: not valid JSON (line 1, column 22");
    snprintf(spec, sizeof spec, "alpaca:%s", TMP("bad2.jsonl", "{\"instruction\": \"a\"}\n{\"instruction\" \"b\"}\n"));
    BAD_SPEC(spec, 0, "bad2.jsonl:2: not valid JSON (column 16: expected ':'");
    snprintf(spec, sizeof spec, "alpaca:%s", TMP("empty.json", "[]"));
    BAD_SPEC(spec, 0, "empty.json: no prompts (no records)");

    char *one[] = {"hello"}, *longp[] = {"w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20 w21 "
                                         "w22 w23 w24 w25 w26 w27 w28 w29 w30 w31 w32 w33 w34 w35 w36 w37 w38 w39 w40"};
    Prompts p1 = {1, one}, plong = {1, longp};
    Case g = {0};
    g.m = m; g.p = &p1; g.batch = 2; g.max_new = 4; g.top_p = 1.0f;
    g.batch = 0; expect_death(run_generate, g, "batch (0) and max_new (4) must be at least 1");
    g.batch = 2; g.max_new = 0; expect_death(run_generate, g, "batch (2) and max_new (0) must be at least 1");
    g.max_new = 4; g.top_p = 0.0f; expect_death(run_generate, g, "top_p in (0, 1]");
    g.top_p = 1.0f; g.path = "no tokenizer"; expect_death(run_generate, g, "needs the teacher's tokenizer");
    g.path = NULL; g.p = &plong; expect_death(run_generate, g, "every prompt is longer than the teacher's context (40 tokens)");
    g.p = &p1; g.path = NULL;
    expect_death(run_generate, g, "/dev/null/never.jsonl: the folder /dev/null does not exist");
}

// ---------------------------------------------------------------------------------------------
// 2. Examples

static int *encode(const char *text, size_t len, int *n) {
    int *ids = malloc_or_die((3 * len + 3) * sizeof(int), "ids");
    *n = tokenizer_encode(&tok, text, len, TOK_ADD_BOS, ids, (int)(3 * len + 3));
    return ids;
}

static int row_equals(const Dataset *d, int i, const int *want, int n) {
    for (int t = 0; t < n; t++)
        if (d->tokens[(int64_t)i * d->seq + t] != want[t]) return 0;
    return 1;
}

static void test_examples(void) {
    enum { S = 32 };  // tokens per row
    printf("examples: %s (seq %d, tokenizer bos %d eos %d, %d tokens)\n", FIX "train.jsonl", S, tok.bos_id, tok.eos_id, tok.n_vocab);
    expect(tok.bos_id == 2000 && tok.eos_id == 2001 && tok.n_vocab == 2256, "the fixture tokenizer: BOS 2000, EOS 2001 (= pad), 2,256 tokens");
    Dataset d;
    dataset_load(&d, FIX "train.jsonl", &tok, S, 2304);
    expect(d.n == 7 && d.seq == S, "7 examples from 6 lines (and a blank one; one line holds two pairs): %d", d.n);

    // the hand-computed example: "Hello" + " world" = BOS, Hello = 39 331 334, " world" = 673 517, EOS
    int want[S] = {2000, 39, 331, 334, 673, 517, 2001};
    for (int t = 7; t < S; t++) want[t] = 2001;  // padding = EOS
    expect(row_equals(&d, 0, want, S) && d.n_real[0] == 7 && d.n_prompt[0] == 4,
           "[[\"Hello\", \" world\"]] -> BOS 39 331 334 673 517 EOS + 25 pads; n_real 7, n_prompt 4");
    int in[S], tg[S], tm[S];
    int idx0 = 0;
    dataset_batch(&d, &idx0, 1, 0, in, tg);
    dataset_batch(&d, &idx0, 1, 1, in, tm);
    int want_t[S] = {39, 331, 334, 673, 517, 2001}, want_m[S] = {-1, -1, -1, 673, 517, 2001};
    for (int t = 6; t < S; t++) want_t[t] = want_m[t] = -1;
    expect(!memcmp(in, want, sizeof in), "batch inputs = the row, padding included");
    expect(!memcmp(tg, want_t, sizeof tg), "targets: 39 331 334 673 517 EOS, then -1 (padding and the last position)");
    expect(!memcmp(tm, want_m, sizeof tm), "--mask-prompt targets: -1 -1 -1 673 517 EOS, then -1");

    // every other example = BOS + tokenize(the JSON-decoded prompt + response) + EOS
    static const struct { const char *prompt, *resp, *label; } ex[] = {
        {"Hello", " world", "[[prompt, response]]"},
        {"Caf\xc3\xa9 \"quoted\"\n", "tab\there \xe2\x98\x83 \xf0\x9f\x98\x80 \\ done", "escapes \\u00e9 \\\" \\n \\t \\\\, raw emoji"},
        {"", "Just text.", "{text}"},
        {"a", "b", "first of two pairs on a line"},
        {"", "empty prompt", "second pair, empty prompt"},
        {"", "also empty prompt", "{prompt: \"\", response}, an extra key"},
    };
    for (int i = 0; i < 6; i++) {
        char text[256];
        snprintf(text, sizeof text, "%s%s", ex[i].prompt, ex[i].resp);
        int n, np;
        int *ids = encode(text, strlen(text), &n), *pids = encode(ex[i].prompt, strlen(ex[i].prompt), &np);
        ids[n++] = 2001;
        int ok = n <= S && d.n_real[i] == n && d.n_prompt[i] == np && row_equals(&d, i, ids, n);
        for (int t = n; t < S; t++) ok &= d.tokens[(int64_t)i * S + t] == 2001;
        expect(ok, "example %d (%s): %d tokens, %d prompt = BOS + tokenize(prompt + response) + EOS", i + 1, ex[i].label,
               d.n_real[i], d.n_prompt[i]);
        free(ids); free(pids);
    }
    expect(d.n_prompt[2] == 1 && d.n_prompt[4] == 1 && d.n_prompt[5] == 1, "{\"text\"} and an empty prompt: n_prompt 1 (BOS alone)");
    // the long one: cut to its first S tokens, no EOS
    const char *fox = "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill.";
    char longtext[512] = "";
    for (int k = 0; k < 4; k++) { strcat(longtext, fox); if (k < 3) strcat(longtext, " "); }
    int n;
    int *ids = encode(longtext, strlen(longtext), &n);
    expect(n > S && d.n_real[6] == S && d.n_prompt[6] == 1 && row_equals(&d, 6, ids, S),
           "the long example (%d tokens) is cut to its first %d, EOS lost", n, S);
    free(ids);
    // a masked batch of several rows: masks follow each row's own n_prompt
    int idx[3] = {1, 6, 0}, bi[3 * S], bt[3 * S];
    dataset_batch(&d, idx, 3, 1, bi, bt);
    int ok = 1;
    for (int b = 0; b < 3; b++)
        for (int t = 0; t < S; t++) {
            int i = idx[b], real = d.n_real[i], np = d.n_prompt[i];
            int w = t + 1 < real && t + 1 >= np ? d.tokens[(int64_t)i * S + t + 1] : -1;
            ok &= bi[b * S + t] == d.tokens[(int64_t)i * S + t] && bt[b * S + t] == w;
        }
    int counted = 0;
    for (int t = 0; t < 3 * S; t++) counted += bt[t] >= 0;
    int want_counted = (d.n_real[1] - d.n_prompt[1]) + (S - 1) + (7 - 4);
    expect(ok && counted == want_counted, "batch of rows 1, 6, 0 with masks: %d positions in the loss (want %d)", counted, want_counted);
    dataset_free(&d);
}

// ---------------------------------------------------------------------------------------------
// 3. The split and the epoch order

static void test_split(void) {
    printf("split: BitDistiller's, the first fifth of the file is the eval split\n");
    char text[4096] = "";
    for (int i = 0; i < 23; i++) {
        char line[64];
        snprintf(line, sizeof line, "{\"text\": \"example number %d\"}\n", i);
        strcat(text, line);
    }
    Dataset all, train, eval;
    dataset_load(&all, tmp_file("split.jsonl", text, strlen(text)), &tok, 16, 2304);
    dataset_split(&all, &train, &eval);
    expect(all.n == 23 && eval.n == 4 && train.n == 19, "23 examples -> eval %d (floor(23/5)), train %d", eval.n, train.n);
    int same = 1, overlap = 0;
    for (int i = 0; i < eval.n; i++) same &= row_equals(&all, i, eval.tokens + (int64_t)i * 16, 16) && eval.n_real[i] == all.n_real[i];
    for (int i = 0; i < train.n; i++) same &= row_equals(&all, 4 + i, train.tokens + (int64_t)i * 16, 16) && train.n_prompt[i] == all.n_prompt[4 + i];
    for (int i = 0; i < eval.n; i++)
        for (int j = 0; j < train.n; j++) overlap += !memcmp(eval.tokens + i * 16, train.tokens + j * 16, 16 * sizeof(int));
    expect(same, "eval = examples 0..3 of the file, train = 4..22, rows copied exactly");
    expect(overlap == 0, "no eval row appears in train: %d overlaps", overlap);
    Dataset small, st, se;
    dataset_slice(&small, &all, 0, 4);
    dataset_split(&small, &st, &se);
    expect(se.n == 0 && st.n == 4, "4 examples -> eval 0, train 4");
    int a[19], b[19], c[19], seen[19] = {0}, differ = 0;
    dataset_epoch_order(&train, 42, 0, a);
    dataset_epoch_order(&train, 42, 0, b);
    dataset_epoch_order(&train, 42, 1, c);
    int perm = 1;
    for (int i = 0; i < 19; i++) { perm &= a[i] >= 0 && a[i] < 19 && !seen[a[i]]++; differ += a[i] != c[i]; }
    expect(perm && !memcmp(a, b, sizeof a) && differ > 0, "epoch order: a permutation, the same for the same (seed, epoch), another next epoch");
    dataset_free(&all); dataset_free(&train); dataset_free(&eval); dataset_free(&small); dataset_free(&st); dataset_free(&se);
}

// ---------------------------------------------------------------------------------------------
// 4. Prompt sources

static int prompts_are(const Prompts *p, const char *const *want, int n) {
    if (p->n != n) return 0;
    for (int i = 0; i < n; i++)
        if (strcmp(p->prompts[i], want[i])) { printf("    prompt %d: got \"%s\"\n", i, p->prompts[i]); return 0; }
    return 1;
}

static int index_in(const char *s, const char *const *set, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s, set[i])) return i;
    return -1;
}

static const char *const WIKI[] = {
    // the first 128 characters (not bytes: the Japanese ones are 3 bytes each) of the 600-character paragraph
    "Senj\xc5\x8d no Valkyria 3 : Unrecorded Chronicles ( Japanese : \xe6\x88\xa6\xe5\xa0\xb4\xe3\x81\xae\xe3\x83\xb4\xe3\x82"
    "\xa1\xe3\x83\xab\xe3\x82\xad\xe3\x83\xa5\xe3\x83\xaa\xe3\x82\xa2" "3 , lit . Valkyria of the Battlefield 3 ) , commonly referred",
    // 512 characters + newline: kept (511 + newline is not)
    "EDGE-YES yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
    // surrounded by spaces and tabs: stripped first, then cut
    "Stripped paragraph: spaces and tabs around it go before its first 128 characters are taken; this one is long enough.xxxxxxxxxxxx",
};
static const char *const ALPACA[] = {
    "Give three tips for staying healthy.\n",
    "Translate to English.\nHola, \xc2\xbfqu\xc3\xa9 tal?\n",
    "Say \"hi\".\n",
};
static const char *const TEXT[] = {"Once upon a time", "The capital of France is", "\xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9 prompt \xe2\x98\x83",
                                   "last line without newline"};

static void test_prompts(void) {
    printf("prompt sources (hand-made files in %s)\n", FIX);
    Prompts p;
    prompts_load(&p, "wikitext:" FIX "wikitext.raw", 0, 1);
    expect(prompts_are(&p, WIKI, 3), "wikitext: 3 paragraphs longer than 512 characters, stripped, first 128 characters");
    prompts_free(&p);
    prompts_load(&p, "alpaca:" FIX "alpaca.json", 0, 1);
    expect(prompts_are(&p, ALPACA, 3), "alpaca JSON array: \"{instruction}\\n{input}\\n\", or \"{instruction}\\n\" without input");
    prompts_free(&p);
    prompts_load(&p, "alpaca:" FIX "alpaca.jsonl", 10, 1);
    expect(prompts_are(&p, ALPACA, 3), "alpaca JSONL, 10 asked of 3: all, in file order");
    prompts_free(&p);
    prompts_load(&p, "text:" FIX "prompts.txt", 0, 1);
    expect(prompts_are(&p, TEXT, 4), "text: one prompt per non-blank line, \"\\r\" dropped, no final newline needed");
    prompts_free(&p);

    // counts: random draws without replacement, deterministic for a seed
    Prompts a, b, c;
    prompts_load(&a, "text:" FIX "prompts.txt", 3, 7);
    prompts_load(&b, "text:" FIX "prompts.txt", 3, 7);
    int distinct = a.n == 3, same = a.n == b.n;
    for (int i = 0; i < a.n; i++) {
        distinct &= index_in(a.prompts[i], TEXT, 4) >= 0;
        for (int j = 0; j < i; j++) distinct &= strcmp(a.prompts[i], a.prompts[j]) != 0;
        same &= !strcmp(a.prompts[i], b.prompts[i]);
    }
    expect(distinct && same, "text with --n 3: 3 distinct prompts of the file, the same for the same seed");
    prompts_free(&a); prompts_free(&b);

    // a mix with counts: that many from each, shuffled together
    int seen_text = 0, seen_alpaca = 0, orders_differ = 0, all_known = 1;
    const char *mix = "text:" FIX "prompts.txt=2,alpaca:" FIX "alpaca.json=2,wikitext:" FIX "wikitext.raw=1";
    prompts_load(&a, mix, 0, 3);
    prompts_load(&b, mix, 0, 3);
    for (int s = 4; s < 12 && !orders_differ; s++) {
        prompts_load(&c, mix, 0, (uint64_t)s);
        for (int i = 0; i < c.n && i < a.n; i++) orders_differ |= strcmp(c.prompts[i], a.prompts[i]) != 0;
        prompts_free(&c);
    }
    same = a.n == b.n;
    for (int i = 0; i < a.n; i++) {
        same &= !strcmp(a.prompts[i], b.prompts[i]);
        int t = index_in(a.prompts[i], TEXT, 4) >= 0, al = index_in(a.prompts[i], ALPACA, 3) >= 0, w = index_in(a.prompts[i], WIKI, 3) >= 0;
        seen_text += t; seen_alpaca += al;
        all_known &= t + al + w == 1;
        if (t + al + w != 1) printf("    unknown or ambiguous prompt: \"%s\"\n", a.prompts[i]);
    }
    expect(a.n == 5 && seen_text == 2 && seen_alpaca == 2 && all_known, "mix text=2,alpaca=2,wikitext=1: 5 prompts, 2 + 2 + 1 from the sources");
    expect(same && orders_differ, "the mix is the same for the same seed, and other seeds give other draws/orders");
    prompts_free(&a); prompts_free(&b);
    // a source without a count takes what --n leaves
    prompts_load(&a, "text:" FIX "prompts.txt=1,alpaca:" FIX "alpaca.json", 3, 5);
    seen_text = seen_alpaca = 0;
    for (int i = 0; i < a.n; i++) { seen_text += index_in(a.prompts[i], TEXT, 4) >= 0; seen_alpaca += index_in(a.prompts[i], ALPACA, 3) >= 0; }
    expect(a.n == 3 && seen_text == 1 && seen_alpaca == 2, "text=1 and alpaca without a count, --n 3: 1 + 2");
    prompts_free(&a);
}

// ---------------------------------------------------------------------------------------------
// 5. JSON strings

static void test_json_string(void) {
    printf("JSON string writing\n");
    // every control byte, quotes, backslash, DEL, valid 2/3/4-byte UTF-8, and invalid bytes
    char in[64 + 32];
    int n = 0;
    for (int c = 0; c < 0x20; c++) in[n++] = (char)c;
    const char tail[] = "\"\\/\x7f\xc3\xa9\xe2\x98\x83\xf0\x9f\x98\x80\xff\xc3(\xed\xa0\x80z";
    memcpy(in + n, tail, sizeof tail - 1);
    n += (int)sizeof tail - 1;
    Buf b = {NULL, 0, 0};
    json_put_string(&b, in, (size_t)n);
    char err[256];
    Json *j = json_parse(b.s, b.n, err, sizeof err);
    // expected: the same bytes, with each invalid byte (0xff, the lone 0xc3, the 3 bytes of an
    // encoded surrogate) as U+FFFD
    char want[128];
    int w = 0;
    for (int c = 0; c < 0x20; c++) want[w++] = (char)c;
    const char wtail[] = "\"\\/\x7f\xc3\xa9\xe2\x98\x83\xf0\x9f\x98\x80\xef\xbf\xbd\xef\xbf\xbd(\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz";
    memcpy(want + w, wtail, sizeof wtail - 1);
    w += (int)sizeof wtail - 1;
    int ok = j && j->type == JSON_STRING && j->string_len == (size_t)w && !memcmp(j->string, want, (size_t)w);
    expect(ok, "32 control bytes, \" \\ / DEL, UTF-8, 5 invalid bytes: parses back (%s), invalid -> U+FFFD", j ? "valid JSON" : err);
    expect(strstr(b.s, "\\u0000\\u0001") && strstr(b.s, "\\b\\t\\n\\u000b\\f\\r") && strstr(b.s, "\\\"\\\\/"),
           "escapes as written: \\u0000 \\u0001 ... \\b \\t \\n \\u000b \\f \\r, \\\" \\\\");
    json_free(j);
    free(b.s);
}

// ---------------------------------------------------------------------------------------------
// 6. Generation

static Model tiny_model(int max_seq_len, int tied, uint64_t seed) {
    ModelHeader c = shape_header("tiny");
    c.vocab_size = 2304;  // the tokenizer's 2,256 rounded up to a multiple of 64, as converters pad
    c.max_seq_len = max_seq_len;
    c.tied = tied;
    float *p = malloc_or_die((size_t)tensor_sizes(&c, (int64_t[N_TENSORS]){0}) * sizeof(float), "params");
    init_params(&c, p, seed);
    Model m;
    model_setup(&m, &c, p);
    return m;
}

// A model whose next token is always `id`, whatever the context: every embedding row is the
// same vector e and the attention and MLP outputs are zero, so the final hidden state is
// h = rmsnorm(e) at every position; the LM head's row `id` is h (logit |h|^2 = D), the others
// zero.
static void rig_always(Model *m, int id) {
    const ModelHeader *c = &m->cfg;
    int D = c->dim;
    float *E = m->params_t[T_EMBED], *W = m->params_t[T_LM_HEAD];
    for (int v = 1; v < c->vocab_size; v++) memcpy(E + (int64_t)v * D, E, (size_t)D * sizeof(float));
    for (int64_t i = 0; i < (int64_t)c->n_layers * m->slice[T_WO]; i++) m->params_t[T_WO][i] = 0.0f;
    for (int64_t i = 0; i < (int64_t)c->n_layers * m->slice[T_WDOWN]; i++) m->params_t[T_WDOWN][i] = 0.0f;
    double ss = 0;
    for (int i = 0; i < D; i++) ss += (double)E[i] * E[i];
    float r = 1.0f / sqrtf((float)(ss / D) + c->rms_norm_eps);
    memset(W, 0, (size_t)c->vocab_size * D * sizeof(float));
    for (int i = 0; i < D; i++) W[(int64_t)id * D + i] = E[i] * r;
}

// Reads a generated file: each line [["prompt", "response"]] with the prompt equal to want[i].
static int check_generated(const char *path, const char *const *want, int n, char **responses) {
    size_t len;
    char *text = read_file_or_die(path, &len), err[256];
    int line = 0, ok = 1;
    for (char *p = text, *end = text + len; p < end; line++) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) { printf("    line %d: no newline\n", line + 1); ok = 0; break; }
        Json *j = json_parse(p, (size_t)(eol - p), err, sizeof err);
        const Json *pair = j && j->type == JSON_ARRAY && j->n == 1 ? &j->items[0] : NULL;
        int good = pair && pair->type == JSON_ARRAY && pair->n == 2 && pair->items[0].type == JSON_STRING && pair->items[1].type == JSON_STRING &&
                   line < n && pair->items[0].string_len == strlen(want[line]) && !memcmp(pair->items[0].string, want[line], strlen(want[line]));
        if (!good) printf("    line %d: %s\n", line + 1, j ? "not [[prompt, response]] with the source prompt" : err);
        else if (responses) responses[line] = strdup(pair->items[1].string);
        ok &= good;
        json_free(j);
        p = eol + 1;
    }
    free(text);
    return ok && line == n;
}

static int files_equal(const char *a, const char *b) {
    size_t la, lb;
    char *x = read_file_or_die(a, &la), *y = read_file_or_die(b, &lb);
    int eq = la == lb && !memcmp(x, y, la);
    free(x); free(y);
    return eq;
}

static void test_generate(void) {
    printf("generation (random tiny model, vocab 2304, the BPE tokenizer)\n");
    const char *src[] = {
        "Once upon a time",
        "Quotes \" and \\ backslashes, a tab\there,\na newline and a control byte \x01.",
        "Unicode: caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80",
        "",
        "The capital of France is",
    };
    Prompts p = {5, (char **)src};
    Model m = tiny_model(256, 1, 11);
    char out1[128], out2[128], out3[128];
    snprintf(out1, sizeof out1, "%s/gen1.jsonl", tmpdir);
    snprintf(out2, sizeof out2, "%s/gen2.jsonl", tmpdir);
    snprintf(out3, sizeof out3, "%s/gen3.jsonl", tmpdir);
    generate_data(&m, &tok, &p, 2, 16, 0.8f, 0.95f, 5, out1);
    generate_data(&m, &tok, &p, 2, 16, 0.8f, 0.95f, 5, out2);
    generate_data(&m, &tok, &p, 2, 16, 0.8f, 0.95f, 6, out3);
    expect(check_generated(out1, src, 5, NULL), "5 lines [[prompt, response]] parse back with json.h; each prompt = its source, byte for byte");
    expect(files_equal(out1, out2), "the same seed writes the same bytes");
    expect(!files_equal(out1, out3), "another seed writes another file");
    expect(!file_exists(strcat(strcpy(out3, out1), ".tmp")), "no temp file left behind");
    Dataset d;
    dataset_load(&d, out1, &tok, 64, 2304);
    expect(d.n == 5, "the generated file loads as training data: %d examples", d.n);
    dataset_free(&d);
    model_free(&m);

    // the tokenizer's EOS wins over the model's: a model that always says "a", whose header
    // calls "a" its EOS, still writes max_new "a"s
    int a_id;
    tokenizer_encode(&tok, "a", 1, 0, &a_id, 1);
    Model r = tiny_model(40, 0, 12);
    rig_always(&r, a_id);
    r.cfg.eos_id = a_id;
    char *resp[5] = {0};
    generate_data(&r, &tok, &p, 3, 7, 0.0f, 1.0f, 5, out1);
    int all_a = check_generated(out1, src, 5, resp);
    for (int i = 0; i < 5 && all_a; i++) all_a &= resp[i] && !strcmp(resp[i], "aaaaaaa");
    expect(all_a && r.cfg.eos_id == a_id, "model EOS = \"a\" (%d), tokenizer EOS 2001: responses \"aaaaaaa\" (max_new 7); header restored", a_id);
    for (int i = 0; i < 5; i++) free(resp[i]), resp[i] = NULL;
    // a model that always says EOS writes empty responses
    rig_always(&r, tok.eos_id);
    r.cfg.eos_id = -1;
    generate_data(&r, &tok, &p, 3, 7, 0.0f, 1.0f, 5, out1);
    int empty = check_generated(out1, src, 5, resp);
    for (int i = 0; i < 5 && empty; i++) empty &= resp[i] && resp[i][0] == 0;
    expect(empty, "a model that always says the tokenizer's EOS (model header: none): empty responses");
    for (int i = 0; i < 5; i++) free(resp[i]), resp[i] = NULL;
    // a prompt with no room in the context (40) is skipped, the others keep their order
    const char *src2[] = {"short one", "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20 w21 w22 w23 w24 w25",
                          "short two"};
    Prompts p2 = {3, (char **)src2};
    rig_always(&r, a_id);
    generate_data(&r, &tok, &p2, 2, 5, 0.0f, 1.0f, 5, out1);
    const char *kept[] = {src2[0], src2[2]};
    expect(check_generated(out1, kept, 2, NULL), "a prompt longer than the context of 40 is skipped; 2 lines, in order");
    model_free(&r);
}

// SentencePiece decodes a text's first "▁" as the dummy prefix: a response must be decoded in
// its prompt's context to keep its leading space.
static void test_spm_response(void) {
    if (!file_exists(SPM)) { printf("SentencePiece response: skipped: %s absent\n", SPM); return; }
    printf("SentencePiece response (%s)\n", SPM);
    Tokenizer spm;
    tokenizer_load(&spm, SPM);
    const char *full = "The cat sat on the mat", *prompt = "The cat";
    int ids[64], pids[64];
    int n = tokenizer_encode(&spm, full, strlen(full), TOK_ADD_BOS, ids, 64);
    int np = tokenizer_encode(&spm, prompt, strlen(prompt), TOK_ADD_BOS, pids, 64);
    size_t len, alone_len;
    char *resp = response_text(&spm, pids, np, ids + np, n - np, &len);
    char *alone = tokenizer_decode(&spm, ids + np, n - np, &alone_len);
    expect(np < n && !memcmp(ids, pids, (size_t)np * sizeof(int)) && !strcmp(resp, " sat on the mat") && !strcmp(alone, "sat on the mat"),
           "\"The cat\" + new ids: response \"%s\" (the new ids alone decode to \"%s\")", resp, alone);
    free(resp); free(alone);
    tokenizer_free(&spm);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_data_XXXXXX");
    if (!mkdtemp(tmpdir)) die("cannot make a temporary directory");
    tokenizer_load(&tok, BPE);
    Model m = tiny_model(40, 1, 3);
    test_bad_input(&m);  // first: the children fork before this process starts OpenMP threads
    model_free(&m);
    test_examples();
    test_split();
    test_prompts();
    test_json_string();
    test_generate();
    test_spm_response();
    tokenizer_free(&tok);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    printf("%s\n", failures ? "test_data: FAILED" : "test_data: all ok");
    return failures ? 1 : 0;
}

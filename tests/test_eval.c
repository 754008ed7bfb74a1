// test_eval.c — eval.c against lm-evaluation-harness's rules and the reference numbers of
// dev/make_eval_reference.py (tests/fixtures/eval/reference.json, transformers on the GPU
// machine, a random Llama with the real 32,000-piece vocabulary):
//   1. hand cases: HellaSwag preprocessing, Python's strip / capitalize / len, the standard
//      error, first-maximum argmax, the WikiText-2 join;
//   2. bad input: each malformed file ends in "error: FILE:LINE: ..." and exit status 1;
//   3. the fixture tasks (five files in the original formats): every context and continuation
//      string, gold label and acc_norm length as the harness builds them; every per-request
//      log-likelihood from the reference token ids, with and without BOS, within 1e-4 of
//      transformers'; identical per-item acc / acc_norm and task metrics;
//   4. with ../shared/data: our tokenization of every request (ids and the context/continuation
//      split) against the reference, eval_qa end to end (its JSON against the reference
//      metrics), the first 20 real PIQA items end to end, and the WikiText-2 ids.
#define TRAIN_NO_MAIN
#include "../train.c"
#include "../lib/eval.c"
#include <sys/wait.h>
#include <unistd.h>

#define FIX "tests/fixtures/eval"
#define SPM "../shared/data/llama2-tokenizer/tokenizer.model"
#define PIQA_REAL "../shared/data/piqa"
#define LL_TOL 1e-4

static int failures = 0;
static void expect(int ok, const char *what, double value) {
    printf("  %-66s %12.3e  %s\n", what, value, ok ? "ok" : "FAIL");
    failures += !ok;
}
static void expect_str(const char *got, const char *want, const char *what) {
    int ok = !strcmp(got, want);
    printf("  %-66s %12s  %s\n", what, "", ok ? "ok" : "FAIL");
    if (!ok) printf("    got  \"%s\"\n    want \"%s\"\n", got, want);
    failures += !ok;
}

// ---------------------------------------------------------------------------------------------
// 1. Hand cases

static char *strip_copy(const char *s, int left) {
    size_t a, b;
    py_strip(s, strlen(s), &a, &b, left);
    return str_dup_n(s + a, b - a);
}

static void test_text_rules(void) {
    printf("text rules (Python semantics, hand-computed):\n");
    struct { const char *in, *want; } hs[] = {
        // strip; " [title]" -> ". "; drop [...]; "  " -> " " in one pass (3 spaces -> 2)
        {"  A [title] B [step] c  d   e ", "A. B c d  e"},
        {"[header] How to x [title] Do y. [step] Z.", " How to x. Do y. Z."},
        {"no [closing bracket", "no [closing bracket"},
        {"a [x\n] b", "a [x\n] b"},            // "." does not match a newline
        {"[a][b]c", "c"},
        {"[substeps]   cooking", "  cooking"},
        {"x [title]", "x. "},
    };
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
        char *got = hellaswag_preprocess(hs[i].in), what[96];
        snprintf(what, sizeof what, "hellaswag preprocess case %zu", i + 1);
        expect_str(got, hs[i].want, what);
        free(got);
    }
    char *c1 = py_capitalize("tHE CAT sat"), *c2 = py_capitalize("\xc3\xa9lan \xc3\x89T\xc3\x89"), *c3 = py_capitalize("");
    expect_str(c1, "The cat sat", "str.capitalize ASCII");
    expect_str(c2, "\xc3\x89lan \xc3\xa9t\xc3\xa9", "str.capitalize Latin-1 (élan ÉTÉ -> Élan été)");
    expect_str(c3, "", "str.capitalize empty");
    free(c1); free(c2); free(c3);
    char *s1 = strip_copy("\xc2\xa0 x y\t\xe3\x80\x80\n", 1), *s2 = strip_copy(" x \x1f", 0), *s3 = strip_copy(" \n ", 1);
    expect_str(s1, "x y", "str.strip with U+00A0, U+3000");
    expect_str(s2, " x", "str.rstrip with U+001F (a separator isspace() accepts)");
    expect_str(s3, "", "str.strip of whitespace only");
    free(s1); free(s2); free(s3);
    expect(py_len("caf\xc3\xa9 0 \xc2\xb0" "C", strlen("caf\xc3\xa9 0 \xc2\xb0" "C")) == 9, "len(\"café 0 °C\") == 9 characters (not 11 bytes)", 0);
    double x[4] = {1, 0, 1, 1}, mu, se;
    mean_stderr(x, 4, &mu, &se);
    expect(fabs(mu - 0.75) < 1e-15 && fabs(se - 0.25) < 1e-15, "mean_stderr([1,0,1,1]) = 0.75, 0.25 (sample std / sqrt n)", fabs(se - 0.25));
    mean_stderr(x, 1, &mu, &se);
    expect(isnan(se), "mean_stderr of one value: no standard error", 0);
    double ties[4] = {-3, -1, -1, -2};
    expect(argmax_d(ties, 4) == 1, "argmax takes the first maximum (numpy)", 0);
    const char raw[] = " \n = T = \r\n \r\nline two\n\nlast";
    size_t jl;
    char *j = wikitext2_join(raw, sizeof raw - 1, &jl);
    expect_str(j, "\n\n = T = \n\n\n\n\nline two\n\n\n\n\nlast", "WikiText-2 join (blank lines -> \"\", CRLF -> LF)");
    free(j);
}

// ---------------------------------------------------------------------------------------------
// 2. Bad input: run the loader in a child process, expect exit 1 and one "error: ..." line.

static char tmpdir[256];

static void write_file(const char *rel, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmpdir, rel);
    char *slash = strrchr(p, '/');
    *slash = 0;
    mkdir(p, 0755);
    *slash = '/';
    FILE *f = fopen_or_die(p, "wb");
    fputs(text, f);
    fclose(f);
}

static void expect_death(const char *task, const char *want, const char *what) {
    int fd[2];
    if (pipe(fd) != 0) die("pipe failed");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        if (!strcmp(task, "wikitext")) { int64_t n; wikitext2_tokens(NULL, tmpdir, &n); }
        else { QaTask t; qa_load(&t, task, tmpdir, 0); }
        exit(0);
    }
    close(fd[1]);
    char buf[1024] = "";
    size_t got = 0;
    for (ssize_t k; got < sizeof buf - 1 && (k = read(fd[0], buf + got, sizeof buf - 1 - got)) > 0;) got += (size_t)k;
    buf[got] = 0;
    close(fd[0]);
    int status;
    waitpid(pid, &status, 0);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 1 && !strncmp(buf, "error: ", 7) && strstr(buf, want) &&
             strchr(buf, '\n') == buf + strlen(buf) - 1;
    printf("  %-66s %12s  %s\n", what, "", ok ? "ok" : "FAIL");
    if (!ok) printf("    stderr: %s    wanted to contain: %s\n", buf, want);
    failures += !ok;
}

static void test_bad_input(void) {
    printf("bad input (one line on stderr naming file and line, exit 1):\n");
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_eval_%d", (int)getpid());
    mkdir(tmpdir, 0755);
    const char *ok_piqa = "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n";
    write_file("piqa/valid.jsonl", "{\"goal\": \"g\", \"sol1\": \"a\", \"sol2\": \"b\"}\n{\"goal\": \"g\", \"sol1\": \n");
    write_file("piqa/valid-labels.lst", "0\n1\n");
    expect_death("piqa", "piqa/valid.jsonl:2: malformed JSON", "PIQA: malformed JSON on line 2");
    write_file("piqa/valid.jsonl", "\n{\"goal\": \"g\", \"sol1\": \"a\"}\n");
    expect_death("piqa", "piqa/valid.jsonl:2: missing field \"sol2\"", "PIQA: missing field (after a blank line)");
    write_file("piqa/valid.jsonl", "{\"goal\": 3, \"sol1\": \"a\", \"sol2\": \"b\"}\n");
    expect_death("piqa", "valid.jsonl:1: field \"goal\" is not a string", "PIQA: field of the wrong type");
    write_file("piqa/valid.jsonl", ok_piqa);
    write_file("piqa/valid-labels.lst", "2\n");
    expect_death("piqa", "valid-labels.lst:1: label 2 out of range", "PIQA: label out of range");
    write_file("piqa/valid-labels.lst", "0\n1\n");
    expect_death("piqa", "2 labels for 1 items", "PIQA: label count differs from the items");
    write_file("piqa/valid-labels.lst", "zero\n");
    expect_death("piqa", "valid-labels.lst:1: expected one integer label", "PIQA: label that is not a number");
    write_file("piqa/valid.jsonl", "\n\n");
    write_file("piqa/valid-labels.lst", "0\n");
    expect_death("piqa", "valid.jsonl: empty file", "PIQA: empty file");
    write_file("hellaswag/hellaswag_val.jsonl",
               "{\"activity_label\": \"a\", \"ctx_a\": \"b\", \"ctx_b\": \"c\", \"endings\": [\"x\", \"y\"], \"label\": 2}\n");
    expect_death("hellaswag", "hellaswag_val.jsonl:1: label 2 out of range", "HellaSwag: label out of range");
    write_file("hellaswag/hellaswag_val.jsonl", "{\"activity_label\": \"a\", \"ctx_a\": \"b\", \"ctx_b\": \"c\", \"label\": 0}\n");
    expect_death("hellaswag", "hellaswag_val.jsonl:1: missing array field \"endings\"", "HellaSwag: missing endings");
    write_file("hellaswag/hellaswag_val.jsonl", "[1, 2]\n");
    expect_death("hellaswag", "hellaswag_val.jsonl:1: expected a JSON object", "HellaSwag: a line that is not an object");
    write_file("winogrande/dev.jsonl", "{\"sentence\": \"no blank here\", \"option1\": \"a\", \"option2\": \"b\", \"answer\": \"1\"}\n");
    write_file("winogrande/dev-labels.lst", "1\n");
    expect_death("winogrande", "dev.jsonl:1: the sentence has no \"_\"", "WinoGrande: sentence without a blank");
    write_file("winogrande/dev.jsonl", "{\"sentence\": \"_ x\", \"option1\": \"a\", \"option2\": \"b\", \"answer\": \"1\"}\n");
    write_file("winogrande/dev-labels.lst", "3\n");
    expect_death("winogrande", "dev-labels.lst:1: label 3 out of range", "WinoGrande: label out of range");
    write_file("ARC-Easy/ARC-Easy-Test.jsonl",
               "{\"question\": {\"stem\": \"q\", \"choices\": [{\"text\": \"a\", \"label\": \"A\"}, {\"text\": \"b\", \"label\": \"B\"}]}, \"answerKey\": \"E\"}\n");
    expect_death("arc_easy", "ARC-Easy-Test.jsonl:1: answerKey \"E\" is not one of", "ARC: answerKey not among the labels");
    write_file("ARC-Easy/ARC-Easy-Test.jsonl", "{\"question\": {\"stem\": \"q\"}, \"answerKey\": \"A\"}\n");
    expect_death("arc_easy", "ARC-Easy-Test.jsonl:1: missing or malformed \"choices\"", "ARC: missing choices");
    expect_death("arc_challenge", "no ARC-Challenge data (looked for", "ARC-Challenge: no file");
    expect_death("boolq", "unknown evaluation task 'boolq'", "unknown task name");
    write_file("wiki.test.raw", "");
    expect_death("wikitext", "wiki.test.raw: empty file", "WikiText-2: empty file");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("  (could not remove %s)\n", tmpdir);
}

// The Hugging Face export form of ARC parses to the same requests as the original form.
static void test_arc_hf_form(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_eval_arc_%d", (int)getpid());
    mkdir(tmpdir, 0755);
    write_file("ARC-Challenge/ARC-Challenge-Test.jsonl",
               "{\"id\": \"x\", \"question\": \"Which organ pumps blood through the body?\", "
               "\"choices\": {\"text\": [\"lungs\", \"heart\", \"stomach\", \"liver\"], \"label\": [\"1\", \"2\", \"3\", \"4\"]}, \"answerKey\": \"2\"}\n");
    QaTask a, b;
    qa_load(&a, "arc_challenge", tmpdir, 0);
    qa_load(&b, "arc_challenge", FIX, 0);
    const QaItem *x = &a.items[0], *y = &b.items[2];
    int same = x->n_choices == y->n_choices && x->gold == y->gold;
    for (int c = 0; same && c < x->n_choices; c++)
        same = !strcmp(x->req[c].context, y->req[c].context) && !strcmp(x->req[c].continuation, y->req[c].continuation);
    expect(same, "ARC Hugging Face form == original form (requests and gold)", 0);
    qa_task_free(&a); qa_task_free(&b);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("  (could not remove %s)\n", tmpdir);
}

// ---------------------------------------------------------------------------------------------
// 3. Against the reference

static const Json *jpath(const Json *o, const char *a, const char *b) {
    const Json *v = json_get(o, a);
    if (b) v = json_get(v, b);
    if (!v) die("%s: reference.json lacks %s%s%s", FIX, a, b ? "." : "", b ? b : "");
    return v;
}

// Fills a task's requests with the reference ids (plus BOS when bos).
static void set_reference_ids(QaTask *t, const Json *items, int bos, int bos_id) {
    for (int i = 0; i < t->n; i++)
        for (int c = 0; c < t->items[i].n_choices; c++) {
            const Json *r = json_at(jpath(json_at(items, i), "requests", NULL), c);
            const Json *ids = jpath(r, "ids", NULL);
            QaRequest *q = &t->items[i].req[c];
            free(q->ids);
            q->n = ids->n + bos;
            q->ids = malloc_or_die((size_t)q->n * sizeof(int), "ids");
            if (bos) q->ids[0] = bos_id;
            for (int k = 0; k < ids->n; k++) q->ids[bos + k] = (int)json_at(ids, k)->number;
            q->n_ctx = (int)json_get_number(r, "n_ctx", 0) + bos;
        }
}

// Compares the scores and predictions of t (already scored) with the reference items.
static void compare_scores(const QaTask *t, const Json *items, const char *mode, const char *label) {
    char k_ll[16], k_acc[24], k_norm[24], what[128];
    snprintf(k_ll, sizeof k_ll, "ll_%s", mode);
    snprintf(k_acc, sizeof k_acc, "acc_%s", mode);
    snprintf(k_norm, sizeof k_norm, "acc_norm_%s", mode);
    double worst = 0.0;
    int same_pred = 1;
    for (int i = 0; i < t->n; i++) {
        const Json *it = json_at(items, i), *ll = jpath(it, k_ll, NULL);
        for (int c = 0; c < t->items[i].n_choices; c++) {
            double e = fabs(t->items[i].req[c].ll - json_at(ll, c)->number);
            if (e > worst) worst = e;
        }
        int p, pn;
        qa_predict(&t->items[i], &p, &pn);
        int acc = p == t->items[i].gold, accn = pn == t->items[i].gold;
        if (acc != (int)json_get_number(it, k_acc, -1)) same_pred = 0;
        if (t->has_norm && accn != (int)json_get_number(it, k_norm, -1)) same_pred = 0;
    }
    snprintf(what, sizeof what, "%s %s: max |log-likelihood error| (%d items)", label, mode, t->n);
    expect(worst <= LL_TOL, what, worst);
    snprintf(what, sizeof what, "%s %s: per-item acc%s identical", label, mode, t->has_norm ? " and acc_norm" : "");
    expect(same_pred, what, 0);
}

static void compare_metrics(const QaMetrics *r, const Json *met, int has_norm, const char *what) {
    double e = fabs(r->acc - json_get_number(met, "acc", -9)) + (r->n != (int)json_get_number(met, "n", -1));
    const Json *se = json_get(met, "acc_stderr");
    e += se && se->type == JSON_NUMBER ? fabs(r->acc_se - se->number) : !isnan(r->acc_se);
    if (has_norm) {
        e += fabs(r->acc_norm - json_get_number(met, "acc_norm", -9));
        const Json *sn = json_get(met, "acc_norm_stderr");
        e += sn && sn->type == JSON_NUMBER ? fabs(r->acc_norm_se - sn->number) : !isnan(r->acc_norm_se);
    }
    expect(e < 1e-9, what, e);
}

static const char *const TASKS[] = {"piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge"};

static void test_reference(Model *m, const Json *ref, const Tokenizer *tok) {
    int bos_id = (int)json_get_number(ref, "bos_id", 1);
    const Json *tasks = jpath(ref, "tasks", NULL);
    for (int k = 0; k < 5; k++) {
        printf("%s (fixture, %s):\n", TASKS[k], "tests/fixtures/eval");
        const Json *rt = jpath(tasks, TASKS[k], NULL), *items = jpath(rt, "items", NULL);
        QaTask t;
        qa_load(&t, TASKS[k], FIX, 0);
        // the harness's strings
        int ok = t.n == items->n, bad = 0;
        for (int i = 0; ok && i < t.n; i++) {
            const Json *it = json_at(items, i), *reqs = jpath(it, "requests", NULL), *nl = jpath(it, "norm_len", NULL);
            if (t.items[i].n_choices != reqs->n || t.items[i].gold != (int)json_get_number(it, "gold", -1)) { ok = 0; break; }
            for (int c = 0; c < reqs->n; c++) {
                const QaRequest *q = &t.items[i].req[c];
                const char *wc = json_get_string(json_at(reqs, c), "context"), *wk = json_get_string(json_at(reqs, c), "continuation");
                if (strcmp(q->context, wc) || strcmp(q->continuation, wk) || t.items[i].norm_len[c] != (int64_t)json_at(nl, c)->number) {
                    if (!bad++) printf("    item %d choice %d:\n    got  \"%s\" | \"%s\"\n    want \"%s\" | \"%s\"\n", i, c, q->context, q->continuation, wc, wk);
                }
            }
        }
        expect(ok && !bad, "contexts, continuations, gold and choice lengths as the harness", bad);
        // scores from the reference ids, both BOS conventions
        for (int bos = 0; bos <= 1; bos++) {
            const char *mode = bos ? "bos" : "nobos";
            set_reference_ids(&t, items, bos, bos_id);
            qa_score_task(m, &t);
            compare_scores(&t, items, mode, "reference ids");
            QaMetrics r = qa_metrics(&t);
            char what[96];
            snprintf(what, sizeof what, "task metrics %s (acc, acc_norm, stderr, n) == reference", mode);
            compare_metrics(&r, jpath(jpath(rt, "metrics", NULL), mode, NULL), t.has_norm, what);
        }
        if (tok) {  // our tokenization of the same strings
            int diff = 0;
            for (int bos = 0; bos <= 1; bos++) {
                QaTask u;
                qa_load(&u, TASKS[k], FIX, 0);
                qa_encode(&u, tok, bos);
                QaTask w;
                qa_load(&w, TASKS[k], FIX, 0);
                set_reference_ids(&w, items, bos, bos_id);
                for (int i = 0; i < u.n; i++)
                    for (int c = 0; c < u.items[i].n_choices; c++) {
                        const QaRequest *a = &u.items[i].req[c], *b = &w.items[i].req[c];
                        if (a->n != b->n || a->n_ctx != b->n_ctx || memcmp(a->ids, b->ids, (size_t)a->n * sizeof(int))) {
                            if (!diff) printf("    item %d choice %d (bos %d): %d/%d tokens, want %d/%d\n", i, c, bos, a->n_ctx, a->n, b->n_ctx, b->n);
                            diff++;
                        }
                    }
                qa_task_free(&u); qa_task_free(&w);
            }
            expect(!diff, "our _encode_pair ids and split == reference (with and without BOS)", diff);
        }
        qa_task_free(&t);
    }
}

// _encode_pair's whitespace rule, by hand: a context ending in spaces ("... He " after
// HellaSwag drops a trailing "[step]") is tokenized without them, and they go to the
// continuation; the joined text is unchanged. (No fixture context ends in whitespace.)
static void test_encode_pair_spaces(const Tokenizer *tok) {
    printf("_encode_pair, trailing whitespace of the context (hand case):\n");
    QaRequest r = {0};
    r.context = "Shoveling snow: He ";
    r.continuation = " clears the path.";
    qa_encode_request(&r, tok, 1, "hand case", 1);
    int n_ctx, n_whole, n_naive;
    int *c = encode_alloc(tok, "Shoveling snow: He", 18, TOK_ADD_BOS, &n_ctx);
    int *w = encode_alloc(tok, "Shoveling snow: He  clears the path.", 36, TOK_ADD_BOS, &n_whole);
    free(encode_alloc(tok, "Shoveling snow: He ", 19, TOK_ADD_BOS, &n_naive));
    int ok = r.n_ctx == n_ctx && r.n == n_whole && !memcmp(r.ids, w, (size_t)n_whole * sizeof(int));
    expect(ok, "ids = enc(ctx + cont), n_ctx = len(enc(ctx.rstrip()))", 0);
    expect(n_naive != n_ctx, "(and the rule matters here: enc(\"... He \") is longer)", n_naive - n_ctx);
    free(c); free(w); free(r.ids);
}

// eval_qa end to end on the fixture folder: its JSON against the reference metrics.
static void test_eval_qa(Model *m, const Json *ref, const Tokenizer *tok) {
    printf("eval_qa end to end on %s:\n", FIX);
    for (int bos = 0; bos <= 1; bos++) {
        const char *mode = bos ? "bos" : "nobos";
        char json[4096], wrapped[4200], err[256];
        eval_qa_add_bos = bos;
        eval_qa(m, tok, "piqa,hellaswag,winogrande,arc_easy,arc_challenge", FIX, 0, json, sizeof json);
        snprintf(wrapped, sizeof wrapped, "{%s}", json);
        Json *j = json_parse(wrapped, strlen(wrapped), err, sizeof err);
        expect(j != NULL, "eval_qa writes a valid JSON fragment", 0);
        if (!j) { printf("    %s\n    %s\n", err, wrapped); continue; }
        const Json *qa = json_get(j, "qa");
        double e = 0.0, avg = 0.0;
        for (int k = 0; k < 5; k++) {
            const Json *got = json_get(qa, TASKS[k]);
            const Json *want = jpath(jpath(jpath(jpath(ref, "tasks", NULL), TASKS[k], NULL), "metrics", NULL), mode, NULL);
            const char *keys[] = {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n"};
            for (int q = 0; q < 5; q++) {
                const Json *w = json_get(want, keys[q]);
                if (!w) continue;
                e += fabs(json_get_number(got, keys[q], -9) - w->number);
            }
            avg += json_get_number(want, "acc", 0) / 5;
        }
        e += fabs(json_get_number(qa, "avg", -9) - avg);
        char what[96];
        snprintf(what, sizeof what, "eval_qa JSON (%s BOS): every metric and the average == reference", bos ? "with" : "without");
        expect(e < 1e-7, what, e);
        json_free(j);
    }
    eval_qa_add_bos = 1;
}

// The first 20 items of the real PIQA validation split, text to score.
static void test_piqa_real(Model *m, const Json *ref, const Tokenizer *tok) {
    const Json *pr = json_get(ref, "piqa_real");
    if (!pr) { printf("piqa (real): no reference\n"); failures++; return; }
    if (!file_exists(PIQA_REAL "/valid.jsonl")) { printf("piqa (real): skipped: %s is absent\n", PIQA_REAL); return; }
    printf("piqa (real, first 20 items of %s):\n", PIQA_REAL);
    const Json *items = jpath(pr, "items", NULL);
    for (int bos = 0; bos <= 1; bos++) {
        QaTask t;
        t.name = "piqa"; t.has_norm = 1;
        memset(&t, 0, sizeof t);
        t.name = "piqa"; t.has_norm = 1;
        load_piqa(&t, PIQA_REAL, items->n);
        qa_encode(&t, tok, bos);
        int split_ok = 1;
        for (int i = 0; i < t.n; i++)
            for (int c = 0; c < 2; c++) {
                const Json *r = json_at(jpath(json_at(items, i), "requests", NULL), c);
                split_ok &= t.items[i].req[c].n_ctx == (int)json_get_number(r, "n_ctx", -9) + bos &&
                            t.items[i].req[c].n - t.items[i].req[c].n_ctx == (int)json_get_number(r, "n_cont", -9);
            }
        expect(split_ok, bos ? "token counts of context / continuation (with BOS)" : "token counts of context / continuation (without BOS)", 0);
        qa_score_task(m, &t);
        compare_scores(&t, items, bos ? "bos" : "nobos", "text to score");
        qa_task_free(&t);
    }
}

static void test_wikitext(const Json *ref, const Tokenizer *tok) {
    printf("WikiText-2 (fixture %s/wikitext-2-raw/wiki.test.raw):\n", FIX);
    const Json *w = jpath(ref, "wikitext2", NULL);
    size_t len, jl;
    char *raw = read_file_or_die(FIX "/wikitext-2-raw/wiki.test.raw", &len);
    char *j = wikitext2_join(raw, len, &jl);
    expect_str(j, json_get_string(w, "joined"), "joined text == \"\\n\\n\".join(datasets' lines)");
    free(raw); free(j);
    if (!tok) return;
    int64_t n;
    int *ids = wikitext2_tokens(tok, FIX, &n);
    const Json *want = jpath(w, "ids_bos", NULL);
    int same = n == want->n;
    for (int64_t i = 0; same && i < n; i++) same = ids[i] == (int)json_at(want, (int)i)->number;
    expect(same, "token ids (with BOS) == reference", (double)n);
    free(ids);
}

int main(void) {
    test_text_rules();
    test_bad_input();
    test_arc_hf_form();

    size_t len;
    char err[256];
    char *text = read_file_or_die(FIX "/reference.json", &len);
    Json *ref = json_parse(text, len, err, sizeof err);
    if (!ref) die("%s/reference.json: %s", FIX, err);
    free(text);

    // the reference model, through the converter as a user would import it
    char bin[256], cmd[768];
    snprintf(bin, sizeof bin, "/tmp/test_eval_model_%d.bin", (int)getpid());
    snprintf(cmd, sizeof cmd, "./convert %s/hf_model %s --dtype f32 > /dev/null", FIX, bin);
    if (!file_exists("./convert") || system(cmd) != 0) { printf("FAIL: could not run %s (make convert first)\n", cmd); return 1; }
    Model m;
    model_load_file(&m, bin);
    remove(bin);
    expect(m.cfg.max_seq_len == (int)json_get_number(ref, "max_position_embeddings", 0), "model context == the reference's max_position_embeddings", 0);
    printf("  (closest argmax margin in the reference: %.4g nats)\n", json_get_number(ref, "min_margin", 0));

    Tokenizer tok, *tp = NULL;
    if (file_exists(SPM)) { tokenizer_load(&tok, SPM); tp = &tok; }
    else printf("tokenizer checks: skipped: %s is absent (the scores still use the reference ids)\n", SPM);

    test_reference(&m, ref, tp);
    if (tp) {
        test_encode_pair_spaces(tp);
        test_eval_qa(&m, ref, tp);
        test_piqa_real(&m, ref, tp);
    } else printf("eval_qa end to end and real PIQA: skipped: %s is absent\n", SPM);
    test_wikitext(ref, tp);

    if (tp) tokenizer_free(&tok);
    json_free(ref);
    model_free(&m);
    printf("%s\n", failures ? "test_eval: FAILED" : "test_eval: all passed");
    return failures ? 1 : 0;
}

// eval.c — zero-shot multiple choice scored as lm-evaluation-harness v0.4 scores it, and the
// WikiText-2 test text as GPTQ and BitDistiller tokenize it for perplexity.
//
// #included by train.c after the model (Model, model_forward) and tokenizer.c; it may use
// everything in train.c, json.h and util.h. The entry points:
//
//   eval_qa(m, tok, "piqa,hellaswag,winogrande,arc_easy,arc_challenge", DIR, limit, json, cap)
//       scores at most `limit` items of each task (0 = all), prints the papers' table (acc and
//       acc_norm with standard errors, in percent, and the average) and writes the JSON fragment
//       "qa": {"piqa": {"acc": .., "acc_stderr": .., "acc_norm": .., "acc_norm_stderr": .., "n": ..},
//              ..., "avg": .., "avg_norm": ..}
//       (winogrande has acc only, as in the harness; avg is the mean acc over the tasks,
//       avg_norm the mean of acc_norm where a task has it and acc where it does not).
//   wikitext2_tokens(tok, DIR, &n)
//       the WikiText-2 raw test split joined and tokenized once with BOS, for the perplexity
//       windows of train.c's eval_ppl.
//
// How the harness scores a multiple-choice item (lm_eval/api/model.py, models/huggingface.py,
// api/task.py, and each task's YAML):
//   1. Every choice is a request (context, continuation). The continuation starts with the
//      target delimiter " ". WinoGrande ("multiple_inputs") varies the context instead and
//      keeps one continuation.
//   2. _encode_pair: trailing whitespace of the context moves to the front of the
//      continuation; then whole = enc(context + continuation), ctx = enc(context), and the
//      continuation's tokens are whole[len(ctx):]. Both are tokenized as one text, so the
//      split is where the context's own tokenization ends.
//   3. The model sees (ctx + cont)[-(max_length+1):][:-1] (left-truncated to its context) and
//      the score is the sum of log softmax(logits)[token] over the continuation's tokens.
//   4. acc = [argmax_i score_i == gold]; acc_norm = [argmax_i score_i / len(choice_i) == gold]
//      with len in characters (Python str: code points) of the choice without the delimiter;
//      argmax takes the first maximum (numpy). The standard error of a mean is the sample
//      standard deviation (n - 1) over sqrt(n).
// BOS: enc() is tokenizer.encode(text, add_special_tokens=X). Harness releases up to v0.4.9
// pass X = add_bos_token, False by default, so Llama models are scored WITHOUT BOS; since PR
// #3347 (October 2025) X is left to the tokenizer, whose default for Llama-2 and Llama-3 is to
// add BOS. eval_qa_add_bos chooses (default 1, the current harness); the two differ by a few
// tenths of a point.
#ifndef EVAL_C
#define EVAL_C

#include "json.h"
#include "../tokenizer.c"

static int eval_qa_add_bos = 1;  // 1: context and whole text start with BOS (harness >= PR #3347)

#define QA_MAX_CHOICES 8
#define QA_LOGIT_BYTES (256ll << 20)  // logits of one forward batch stay under this (and >= 1 row)

// ============================================================================================
// Text, with Python's semantics: the harness's rules are Python string methods, and a byte
// more or less of whitespace changes the tokens.

// str.isspace(): the ASCII whitespace, the separators U+001C..U+001F, and Unicode's spaces.
static int py_isspace(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

// One code point at s[0..n): its length in bytes (an invalid byte counts as one non-space).
static int py_char(const char *s, size_t n, uint32_t *cp) {
    int l = utf8_decode((const unsigned char *)s, n, cp);
    if (l == 0) { *cp = 0xfffd; l = 1; }
    return l;
}

// s.strip() / s.rstrip() as the byte span [*a, *b) of s[0..n).
static void py_strip(const char *s, size_t n, size_t *a, size_t *b, int left) {
    size_t i = 0, start = 0, end = 0;
    int seen = 0;  // a non-space character was seen
    while (i < n) {
        uint32_t cp;
        int l = py_char(s + i, n - i, &cp);
        if (!py_isspace(cp)) {
            if (!seen) start = i;
            seen = 1;
            end = i + l;
        }
        i += l;
    }
    *a = left ? (seen ? start : n) : 0;
    *b = seen ? end : (left ? n : 0);
}

// len(s) in Python: code points (UTF-8 bytes that do not continue a sequence).
static int64_t py_len(const char *s, size_t n) {
    int64_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}

static char *str_dup_n(const char *s, size_t n) {
    char *d = malloc_or_die(n + 1, "text");
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static char *str_cat3(const char *a, const char *b, const char *c) {
    Buf o = {0};
    buf_put(&o, a, strlen(a)); buf_put(&o, b, strlen(b)); buf_put(&o, c, strlen(c));
    return o.s;
}

// s.capitalize(): the first character upper case, all the others lower case. Done for ASCII
// and Latin-1 letters (U+00C0..U+00FE); other scripts pass unchanged (HellaSwag's ctx_b is
// English).
static char *py_capitalize(const char *s) {
    Buf o = {0};
    buf_put(&o, "", 0);
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int l = py_char(s + i, n - i, &cp);
        uint32_t c = cp;
        if (i == 0) {
            if (c >= 'a' && c <= 'z') c -= 32;
            else if (c >= 0xe0 && c <= 0xfe && c != 0xf7) c -= 32;
        } else {
            if (c >= 'A' && c <= 'Z') c += 32;
            else if (c >= 0xc0 && c <= 0xde && c != 0xd7) c += 32;
        }
        if (c == cp) buf_put(&o, s + i, (size_t)l);
        else if (c < 0x80) { char ch = (char)c; buf_put(&o, &ch, 1); }
        else { char u[2] = {(char)(0xc0 | (c >> 6)), (char)(0x80 | (c & 0x3f))}; buf_put(&o, u, 2); }
        i += (size_t)l;
    }
    return o.s;
}

// HellaSwag's preprocess (lm_eval/tasks/hellaswag/utils.py), step by step:
//   text.strip(); replace(" [title]", ". "); re.sub(r"\[.*?\]", ""); replace("  ", " ")
// The regex removes each "[" with the shortest run of non-newline characters up to a "]"; the
// last step is one left-to-right pass, so three spaces become two.
static char *hellaswag_preprocess(const char *text) {
    size_t a, b;
    py_strip(text, strlen(text), &a, &b, 1);
    Buf t1 = {0}, t2 = {0}, t3 = {0};
    buf_put(&t1, "", 0); buf_put(&t2, "", 0); buf_put(&t3, "", 0);
    for (size_t i = a; i < b;) {
        if (b - i >= 8 && !memcmp(text + i, " [title]", 8)) { buf_put(&t1, ". ", 2); i += 8; }
        else buf_put(&t1, text + i++, 1);
    }
    for (size_t i = 0; i < t1.n;) {
        if (t1.s[i] == '[') {
            size_t j = i + 1;
            while (j < t1.n && t1.s[j] != ']' && t1.s[j] != '\n') j++;
            if (j < t1.n && t1.s[j] == ']') { i = j + 1; continue; }
        }
        buf_put(&t2, t1.s + i++, 1);
    }
    for (size_t i = 0; i < t2.n;) {
        if (i + 1 < t2.n && t2.s[i] == ' ' && t2.s[i + 1] == ' ') { buf_put(&t3, " ", 1); i += 2; }
        else buf_put(&t3, t2.s + i++, 1);
    }
    free(t1.s); free(t2.s);
    return t3.s;
}

// ============================================================================================
// Items and requests

typedef struct {
    char *context, *continuation;  // the harness's strings; continuation begins with " "
    int *ids, n_ctx, n;            // tokens of context + continuation; ids[n_ctx..n) continue
    double ll;                     // sum of log p(continuation token | all before it)
} QaRequest;

typedef struct {
    int n_choices, gold, line;                 // line: of the item in its file, for messages
    int64_t norm_len[QA_MAX_CHOICES];          // len(choice) in characters, for acc_norm
    QaRequest req[QA_MAX_CHOICES];
} QaItem;

typedef struct {
    const char *name;
    int has_norm;          // acc_norm is reported (all but WinoGrande)
    char path[4096];       // the file the items came from
    QaItem *items;
    int n;
} QaTask;

static void qa_task_free(QaTask *t) {
    for (int i = 0; i < t->n; i++)
        for (int c = 0; c < t->items[i].n_choices; c++) {
            QaRequest *r = &t->items[i].req[c];
            free(r->context); free(r->continuation); free(r->ids);
        }
    free(t->items);
    t->items = NULL;
    t->n = 0;
}

static QaItem *qa_add_item(QaTask *t, int *cap, int line) {
    if (t->n == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        t->items = realloc(t->items, (size_t)*cap * sizeof(QaItem));
        if (!t->items) die("%s: out of memory", t->path);
    }
    QaItem *it = &t->items[t->n++];
    memset(it, 0, sizeof *it);
    it->line = line;
    return it;
}

// One choice: the request (context, " " + choice) and len(choice) for acc_norm.
static void qa_add_choice(QaItem *it, const char *context, const char *choice, const char *path) {
    if (it->n_choices == QA_MAX_CHOICES) die("%s:%d: more than %d choices", path, it->line, QA_MAX_CHOICES);
    QaRequest *r = &it->req[it->n_choices];
    r->context = str_dup_n(context, strlen(context));
    r->continuation = str_cat3(" ", choice, "");
    it->norm_len[it->n_choices++] = py_len(choice, strlen(choice));
}

// ============================================================================================
// Reading the original files: JSON Lines, one item per non-blank line, and label files of one
// integer per line. Every problem names the file and the line.

typedef struct {
    const char *path;
    char *text, *p;
    int line;  // of the last line returned
} Lines;

static Lines lines_open(const char *path) {
    Lines r = {path, NULL, NULL, 0};
    size_t len;
    r.text = read_file_or_die(path, &len);
    if (strlen(r.text) != len) die("%s: contains a NUL byte (not a text file)", path);
    r.p = r.text;
    return r;
}

// The next line that is not blank (NUL-terminated in place), or NULL at the end.
static char *lines_next(Lines *r) {
    while (*r->p) {
        char *s = r->p, *e = strchr(s, '\n');
        if (e) { *e = 0; r->p = e + 1; } else r->p = s + strlen(s);
        r->line++;
        for (char *c = s; *c; c++)
            if (!(*c == ' ' || *c == '\t' || *c == '\r')) return s;
    }
    return NULL;
}

static Json *jsonl_parse(const Lines *r, const char *s) {
    char err[256];
    Json *j = json_parse(s, strlen(s), err, sizeof err);
    if (!j) die("%s:%d: malformed JSON (%s)", r->path, r->line, err);
    if (j->type != JSON_OBJECT) die("%s:%d: expected a JSON object", r->path, r->line);
    return j;
}

// A string field that must be there (no NUL inside: the harness's texts are plain text).
static const char *jfield(const Json *o, const char *key, const char *path, int line) {
    const Json *v = json_get(o, key);
    if (!v) die("%s:%d: missing field \"%s\"", path, line, key);
    if (v->type != JSON_STRING) die("%s:%d: field \"%s\" is not a string", path, line, key);
    if (strlen(v->string) != v->string_len) die("%s:%d: field \"%s\" contains a NUL character", path, line, key);
    return v->string;
}

// An integer label given as a number or as a string of digits ("label": 2 or "2").
static int jlabel(const Json *v, const char *key, const char *path, int line) {
    if (!v) die("%s:%d: missing field \"%s\"", path, line, key);
    if (v->type == JSON_NUMBER && v->number == (int)v->number) return (int)v->number;
    if (v->type == JSON_STRING && v->string_len > 0 && v->string_len < 9 &&
        strspn(v->string, "0123456789") == v->string_len)
        return atoi(v->string);
    die("%s:%d: field \"%s\" is not an integer label", path, line, key);
}

// All integers of a label file; *n gets their count, *line_of[i] their line numbers.
static int *read_labels(const char *path, int *n, int **line_of) {
    Lines r = lines_open(path);
    int cap = 256, k = 0;
    int *v = malloc_or_die(cap * sizeof(int), path), *ln = malloc_or_die(cap * sizeof(int), path);
    for (char *s; (s = lines_next(&r));) {
        char *end;
        while (*s == ' ' || *s == '\t') s++;
        long x = strtol(s, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r') end++;
        if (end == s || *end || x < -1000000 || x > 1000000) die("%s:%d: expected one integer label", path, r.line);
        if (k == cap) {
            cap *= 2;
            v = realloc(v, cap * sizeof(int)); ln = realloc(ln, cap * sizeof(int));
            if (!v || !ln) die("%s: out of memory", path);
        }
        ln[k] = r.line;
        v[k++] = (int)x;
    }
    free(r.text);
    if (k == 0) die("%s: empty file (no labels)", path);
    *n = k;
    *line_of = ln;
    return v;
}

// The first of the candidate paths (relative to dir) that exists; dies listing them all.
static void find_task_file(char *out, size_t cap, const char *dir, const char *task, const char *const *cands) {
    char tried[1024] = "";
    for (int i = 0; cands[i]; i++) {
        snprintf(out, cap, "%s/%s", dir, cands[i]);
        if (file_exists(out)) return;
        strncat(tried, i ? ", " : "", sizeof tried - strlen(tried) - 1);
        strncat(tried, cands[i], sizeof tried - strlen(tried) - 1);
    }
    die("%s: no %s data (looked for %s)", dir, task, tried);
}

// Labels of a task: from a labels file beside the data when there is one. Checks the count
// against the items (all of them when limit is 0) and returns the label of item i.
typedef struct { int *v, *line, n; char path[4096]; } Labels;

static Labels labels_beside(const char *data_path, const char *name) {
    Labels L;
    memset(&L, 0, sizeof L);
    snprintf(L.path, sizeof L.path, "%s", data_path);
    char *slash = strrchr(L.path, '/');
    snprintf(slash ? slash + 1 : L.path, sizeof L.path - (slash ? (size_t)(slash + 1 - L.path) : 0), "%s", name);
    if (file_exists(L.path)) L.v = read_labels(L.path, &L.n, &L.line);
    return L;
}

// The label of the item just added (t->n - 1): from the labels file, else from field `key`.
static int item_label(const Labels *L, const QaTask *t, const Json *j, const char *key, int line) {
    if (!L->v) return jlabel(json_get(j, key), key, t->path, line);
    if (t->n > L->n) die("%s: %d labels for more items in %s", L->path, L->n, t->path);
    return L->v[t->n - 1];
}

__attribute__((noreturn)) static void label_range_error(const Labels *L, const QaTask *t, int line, int v, const char *range) {
    if (L->v) die("%s:%d: label %d out of range (%s)", L->path, L->line[t->n - 1], v, range);
    die("%s:%d: label %d out of range (%s)", t->path, line, v, range);
}

static void labels_check_count(const Labels *L, const QaTask *t, int limit) {
    if (!L->v) return;
    if (L->n < t->n || (limit == 0 && L->n != t->n))
        die("%s: %d labels for %d items in %s", L->path, L->n, t->n, t->path);
}

// --- PIQA: valid.jsonl {goal, sol1, sol2} + valid-labels.lst (0/1), or a "label" field ------
//   context "Question: {goal}\nAnswer:", choices sol1, sol2 (piqa.yaml)
static void load_piqa(QaTask *t, const char *dir, int limit) {
    static const char *const cands[] = {"piqa/valid.jsonl", "valid.jsonl", NULL};
    find_task_file(t->path, sizeof t->path, dir, "PIQA", cands);
    Labels L = labels_beside(t->path, "valid-labels.lst");
    Lines r = lines_open(t->path);
    int cap = 0;
    for (char *s; (limit == 0 || t->n < limit) && (s = lines_next(&r));) {
        Json *j = jsonl_parse(&r, s);
        QaItem *it = qa_add_item(t, &cap, r.line);
        char *ctx = str_cat3("Question: ", jfield(j, "goal", t->path, r.line), "\nAnswer:");
        qa_add_choice(it, ctx, jfield(j, "sol1", t->path, r.line), t->path);
        qa_add_choice(it, ctx, jfield(j, "sol2", t->path, r.line), t->path);
        it->gold = item_label(&L, t, j, "label", r.line);
        if (it->gold != 0 && it->gold != 1) label_range_error(&L, t, r.line, it->gold, "0 or 1");
        free(ctx);
        json_free(j);
    }
    free(r.text);
    if (t->n == 0) die("%s: empty file (no items)", t->path);
    labels_check_count(&L, t, limit);
    free(L.v); free(L.line);
}

// --- HellaSwag: hellaswag_val.jsonl {activity_label, ctx_a, ctx_b, endings[], label} --------
//   context preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize()),
//   choices preprocess(ending) (hellaswag/utils.py process_docs)
static void load_hellaswag(QaTask *t, const char *dir, int limit) {
    static const char *const cands[] = {"hellaswag/hellaswag_val.jsonl", "hellaswag_val.jsonl", NULL};
    find_task_file(t->path, sizeof t->path, dir, "HellaSwag", cands);
    Lines r = lines_open(t->path);
    int cap = 0;
    for (char *s; (limit == 0 || t->n < limit) && (s = lines_next(&r));) {
        Json *j = jsonl_parse(&r, s);
        QaItem *it = qa_add_item(t, &cap, r.line);
        char *cap_b = py_capitalize(jfield(j, "ctx_b", t->path, r.line));
        char *ctx = str_cat3(jfield(j, "ctx_a", t->path, r.line), " ", cap_b);
        char *raw = str_cat3(jfield(j, "activity_label", t->path, r.line), ": ", ctx);
        char *query = hellaswag_preprocess(raw);
        const Json *e = json_get(j, "endings");
        if (!e || e->type != JSON_ARRAY) die("%s:%d: missing array field \"endings\"", t->path, r.line);
        if (e->n < 2 || e->n > QA_MAX_CHOICES) die("%s:%d: %d endings (want 2 to %d)", t->path, r.line, e->n, QA_MAX_CHOICES);
        for (int k = 0; k < e->n; k++) {
            const Json *v = json_at(e, k);
            if (v->type != JSON_STRING || strlen(v->string) != v->string_len)
                die("%s:%d: ending %d is not a string", t->path, r.line, k);
            char *choice = hellaswag_preprocess(v->string);
            qa_add_choice(it, query, choice, t->path);
            free(choice);
        }
        it->gold = jlabel(json_get(j, "label"), "label", t->path, r.line);
        if (it->gold < 0 || it->gold >= e->n) die("%s:%d: label %d out of range (0 to %d)", t->path, r.line, it->gold, e->n - 1);
        free(cap_b); free(ctx); free(raw); free(query);
        json_free(j);
    }
    free(r.text);
    if (t->n == 0) die("%s: empty file (no items)", t->path);
}

// --- WinoGrande: dev.jsonl {sentence, option1, option2, answer} + dev-labels.lst (1/2) ---------
// Partial scoring (winogrande/preprocess_winogrande.py): with i the first "_" of the sentence,
//   contexts sentence[:i] + option1, sentence[:i] + option2;  continuation " " + sentence[i+1:].strip()
// The choices' lengths would be those of the contexts; WinoGrande reports acc only.
static void load_winogrande(QaTask *t, const char *dir, int limit) {
    static const char *const cands[] = {"winogrande/dev.jsonl", "winogrande_1.1/dev.jsonl", "dev.jsonl", NULL};
    find_task_file(t->path, sizeof t->path, dir, "WinoGrande", cands);
    Labels L = labels_beside(t->path, "dev-labels.lst");
    Lines r = lines_open(t->path);
    int cap = 0;
    for (char *s; (limit == 0 || t->n < limit) && (s = lines_next(&r));) {
        Json *j = jsonl_parse(&r, s);
        QaItem *it = qa_add_item(t, &cap, r.line);
        const char *sent = jfield(j, "sentence", t->path, r.line);
        const char *blank = strchr(sent, '_');
        if (!blank) die("%s:%d: the sentence has no \"_\" to fill", t->path, r.line);
        size_t a, b, i = (size_t)(blank - sent);
        py_strip(blank + 1, strlen(blank + 1), &a, &b, 1);
        char *rest = str_dup_n(blank + 1 + a, b - a);
        const char *opt[2] = {jfield(j, "option1", t->path, r.line), jfield(j, "option2", t->path, r.line)};
        for (int k = 0; k < 2; k++) {
            char *head = str_dup_n(sent, i);
            char *ctx = str_cat3(head, opt[k], "");
            qa_add_choice(it, ctx, rest, t->path);
            it->norm_len[k] = py_len(ctx, strlen(ctx));
            free(head); free(ctx);
        }
        int answer = item_label(&L, t, j, "answer", r.line);
        if (answer != 1 && answer != 2) label_range_error(&L, t, r.line, answer, "1 or 2");
        it->gold = answer - 1;
        free(rest);
        json_free(j);
    }
    free(r.text);
    if (t->n == 0) die("%s: empty file (no items)", t->path);
    labels_check_count(&L, t, limit);
    free(L.v); free(L.line);
}

// --- ARC-Easy / ARC-Challenge: ARC-*-Test.jsonl ----------------------------------------------
//   original: {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}
//   Hugging Face export: {"question": "...", "choices": {"text": [...], "label": [...]}, "answerKey"}
//   context "Question: {question}\nAnswer:", choices the texts, gold = labels.index(answerKey)
//   (labels are letters or digits; arc_easy.yaml)
static void load_arc(QaTask *t, const char *dir, int limit, const char *level) {
    char c0[64], c1[96], c2[64], c3[64];
    snprintf(c0, sizeof c0, "ARC-%s/ARC-%s-Test.jsonl", level, level);
    snprintf(c1, sizeof c1, "arc_%s/ARC-%s-Test.jsonl", level[0] == 'E' ? "easy" : "challenge", level);
    snprintf(c2, sizeof c2, "ARC-%s-Test.jsonl", level);
    snprintf(c3, sizeof c3, "ARC-V1-Feb2018-2/ARC-%s/ARC-%s-Test.jsonl", level, level);
    const char *const cands[] = {c0, c1, c2, c3, NULL};
    find_task_file(t->path, sizeof t->path, dir, level[0] == 'E' ? "ARC-Easy" : "ARC-Challenge", cands);
    Lines r = lines_open(t->path);
    int cap = 0;
    for (char *s; (limit == 0 || t->n < limit) && (s = lines_next(&r));) {
        Json *j = jsonl_parse(&r, s);
        QaItem *it = qa_add_item(t, &cap, r.line);
        const Json *q = json_get(j, "question");
        const char *stem;
        const Json *choices;
        int hf = q && q->type == JSON_STRING;
        if (hf) { stem = jfield(j, "question", t->path, r.line); choices = json_get(j, "choices"); }
        else {
            if (!q || q->type != JSON_OBJECT) die("%s:%d: missing object field \"question\"", t->path, r.line);
            stem = jfield(q, "stem", t->path, r.line);
            choices = json_get(q, "choices");
        }
        const Json *texts = hf ? json_get(choices, "text") : choices, *labels = hf ? json_get(choices, "label") : choices;
        if (!texts || texts->type != JSON_ARRAY || !labels || labels->type != JSON_ARRAY || texts->n != labels->n)
            die("%s:%d: missing or malformed \"choices\"", t->path, r.line);
        if (texts->n < 2 || texts->n > QA_MAX_CHOICES) die("%s:%d: %d choices (want 2 to %d)", t->path, r.line, texts->n, QA_MAX_CHOICES);
        const char *key = jfield(j, "answerKey", t->path, r.line);
        char *ctx = str_cat3("Question: ", stem, "\nAnswer:");
        it->gold = -1;
        for (int k = 0; k < texts->n; k++) {
            const Json *tx = json_at(texts, k), *lb = json_at(labels, k);
            const char *text, *label;
            if (hf) {
                if (tx->type != JSON_STRING || lb->type != JSON_STRING) die("%s:%d: choice %d is not a string", t->path, r.line, k);
                text = tx->string; label = lb->string;
            } else {
                if (tx->type != JSON_OBJECT) die("%s:%d: choice %d is not an object", t->path, r.line, k);
                text = jfield(tx, "text", t->path, r.line); label = jfield(tx, "label", t->path, r.line);
            }
            if (hf && strlen(text) != tx->string_len) die("%s:%d: choice %d contains a NUL character", t->path, r.line, k);
            qa_add_choice(it, ctx, text, t->path);
            if (it->gold < 0 && !strcmp(label, key)) it->gold = k;  // list.index: the first match
        }
        if (it->gold < 0) die("%s:%d: answerKey \"%s\" is not one of the choices' labels", t->path, r.line, key);
        free(ctx);
        json_free(j);
    }
    free(r.text);
    if (t->n == 0) die("%s: empty file (no items)", t->path);
}

// ============================================================================================
// Tokenizing requests: the harness's _encode_pair.

static int *encode_alloc(const Tokenizer *tok, const char *s, size_t n, int flags, int *count) {
    int cap = (int)(3 * n + 2);
    int *ids = malloc_or_die((size_t)cap * sizeof(int), "token ids");
    *count = tokenizer_encode(tok, s, n, flags, ids, cap);
    if (*count > cap) die("tokenizer produced more ids than its bound");
    return ids;
}

// ids = enc(context + continuation); n_ctx = len(enc(context')), where context' is the context
// without its trailing whitespace (which the harness moves to the continuation: the joined text
// is unchanged). An empty context is scored after the prefix token alone: [BOS] + enc(cont).
static void qa_encode_request(QaRequest *r, const Tokenizer *tok, int bos, const char *path, int line) {
    int flags = bos ? TOK_ADD_BOS : 0;
    size_t nc = strlen(r->context), nk = strlen(r->continuation);
    if (nc == 0) {
        int nw;
        int *w = encode_alloc(tok, r->continuation, nk, 0, &nw);
        r->ids = malloc_or_die((size_t)(nw + 1) * sizeof(int), "token ids");
        r->ids[0] = tok->bos_id >= 0 ? tok->bos_id : tok->eos_id;
        memcpy(r->ids + 1, w, (size_t)nw * sizeof(int));
        r->n_ctx = 1;
        r->n = nw + 1;
        free(w);
    } else {
        size_t a, b;
        py_strip(r->context, nc, &a, &b, 0);
        char *whole = str_cat3(r->context, r->continuation, "");
        int nctx;
        free(encode_alloc(tok, r->context, b, flags, &nctx));
        r->ids = encode_alloc(tok, whole, nc + nk, flags, &r->n);
        r->n_ctx = nctx;
        free(whole);
    }
    if (r->n_ctx == 0) die("%s:%d: a context (\"%s\") has no tokens", path, line, r->context);
    if (r->n <= r->n_ctx) die("%s:%d: a continuation (\"%s\") has no tokens of its own", path, line, r->continuation);
}

static void qa_encode(QaTask *t, const Tokenizer *tok, int bos) {
    for (int i = 0; i < t->n; i++)
        for (int c = 0; c < t->items[i].n_choices; c++)
            qa_encode_request(&t->items[i].req[c], tok, bos, t->path, t->items[i].line);
}

// The harness refuses a continuation longer than the model's context (it could not be scored
// whole); so do we, naming the item.
static void qa_check_fits(const QaTask *t, int L) {
    for (int i = 0; i < t->n; i++)
        for (int c = 0; c < t->items[i].n_choices; c++) {
            const QaRequest *r = &t->items[i].req[c];
            if (r->n - r->n_ctx > L)
                die("%s:%d: choice %d has %d tokens, more than the model's context %d", t->path,
                    t->items[i].line, c + 1, r->n - r->n_ctx, L);
        }
}

// ============================================================================================
// Scoring: summed log-likelihoods of the continuations, many requests per forward.
//
// A request of n tokens feeds the model ids[s .. n-1) with s = max(0, n - (L + 1)) (the
// harness's (ctx + cont)[-(L+1):][:-1], L the model's context) and reads, for each continuation
// token ids[j], log softmax(logits at position j - 1 - s)[ids[j]]. Requests are sorted longest
// first and packed B at a time into [B, T] batches padded on the right: causal attention keeps
// every real position blind to the padding, and each row's arithmetic does not depend on its
// neighbours, so the scores do not depend on the batching.

typedef struct { int len, idx; } QaOrder;

static int qa_order_cmp(const void *a, const void *b) {
    const QaOrder *x = a, *y = b;
    return x->len != y->len ? y->len - x->len : x->idx - y->idx;
}

// log softmax(z[V])[target] = z[target] - (max + log sum exp(z - max)), summed in double.
static double log_softmax_at(const float *z, int V, int target) {
    float mx = z[0];
    for (int v = 1; v < V; v++) if (z[v] > mx) mx = z[v];
    double s = 0.0;
    for (int v = 0; v < V; v++) s += exp((double)z[v] - mx);
    return (double)z[target] - mx - log(s);
}

// lp[n] = log softmax(logits at n)[targets[n]] for the positions n of inputs[B,T] with a target:
// train.c's inference_backend when one is set (train_cu's GPU), else model_forward here.
static void target_logprobs(Model *m, const int *inputs, const int *targets, int B, int T, double *lp) {
    if (inference_backend) { inference_backend->target_logprobs(m, inputs, targets, B, T, lp); return; }
    int V = m->cfg.vocab_size;
    model_forward(m, inputs, NULL, B, T);
    for (int64_t n = 0; n < (int64_t)B * T; n++)
        if (targets[n] >= 0) lp[n] = log_softmax_at(m->logits + n * V, V, targets[n]);
}

static void qa_score(Model *m, QaRequest **reqs, int n, const char *what) {
    int L = m->cfg.max_seq_len, V = m->cfg.vocab_size;
    QaOrder *ord = malloc_or_die((size_t)n * sizeof(QaOrder), "request order");
    for (int i = 0; i < n; i++) {
        QaRequest *r = reqs[i];
        if (r->n - r->n_ctx > L) die("%s: a continuation of %d tokens does not fit the model's context %d", what, r->n - r->n_ctx, L);
        ord[i].len = (r->n < L + 1 ? r->n : L + 1) - 1;
        ord[i].idx = i;
    }
    qsort(ord, (size_t)n, sizeof *ord, qa_order_cmp);
    int64_t row_budget = QA_LOGIT_BYTES / ((int64_t)V * (int64_t)sizeof(float));
    int *inputs = NULL, *targets = NULL;
    double *lp = NULL, t0 = now_seconds();
    int done = 0, next_report = n / 10 > 0 ? n / 10 : 1;
    for (int i0 = 0; i0 < n;) {
        int T = ord[i0].len > 0 ? ord[i0].len : 1, B = 0;
        while (i0 + B < n && (B == 0 || (int64_t)(B + 1) * T <= row_budget)) B++;
        inputs = realloc(inputs, (size_t)B * T * sizeof(int));
        targets = realloc(targets, (size_t)B * T * sizeof(int));
        lp = realloc(lp, (size_t)B * T * sizeof(double));
        if (!inputs || !targets || !lp) die("out of memory for evaluation inputs");
        for (int b = 0; b < B; b++) {
            const QaRequest *r = reqs[ord[i0 + b].idx];
            int len = ord[i0 + b].len, s = r->n - 1 - len;
            for (int t = 0; t < T; t++) {
                inputs[b * T + t] = t < len ? r->ids[s + t] : r->ids[r->n - 1];
                targets[b * T + t] = -1;
            }
            for (int j = r->n_ctx; j < r->n; j++) targets[b * T + (j - 1 - s)] = r->ids[j];  // token j is predicted at j - 1 - s
        }
        target_logprobs(m, inputs, targets, B, T, lp);
        for (int b = 0; b < B; b++) {
            QaRequest *r = reqs[ord[i0 + b].idx];
            int s = r->n - 1 - ord[i0 + b].len;
            double ll = 0.0;
            for (int j = r->n_ctx; j < r->n; j++) ll += lp[(int64_t)b * T + (j - 1 - s)];
            r->ll = ll;
        }
        i0 += B;
        done += B;
        if (done >= next_report || done == n) {
            double el = now_seconds() - t0;
            printf("qa: %s %d/%d requests | %.1f s\n", what, done, n, el);
            fflush(stdout);
            next_report += n / 10 > 0 ? n / 10 : 1;
        }
    }
    free(inputs); free(targets); free(lp);
    free(ord);
}

static void qa_score_task(Model *m, QaTask *t) {
    int n = 0;
    for (int i = 0; i < t->n; i++) n += t->items[i].n_choices;
    QaRequest **reqs = malloc_or_die((size_t)n * sizeof *reqs, "requests");
    n = 0;
    for (int i = 0; i < t->n; i++)
        for (int c = 0; c < t->items[i].n_choices; c++) reqs[n++] = &t->items[i].req[c];
    qa_score(m, reqs, n, t->name);
    free(reqs);
}

// ============================================================================================
// Metrics

typedef struct { double acc, acc_se, acc_norm, acc_norm_se; int n; } QaMetrics;

// np.argmax: the first index of the maximum.
static int argmax_d(const double *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

// The item's predictions: *pred by score, *pred_norm by score / len(choice).
static void qa_predict(const QaItem *it, int *pred, int *pred_norm) {
    double s[QA_MAX_CHOICES], sn[QA_MAX_CHOICES];
    for (int c = 0; c < it->n_choices; c++) {
        s[c] = it->req[c].ll;
        sn[c] = it->req[c].ll / (double)it->norm_len[c];  // len 0: -inf or nan, as numpy
    }
    *pred = argmax_d(s, it->n_choices);
    *pred_norm = argmax_d(sn, it->n_choices);
}

// mean and its standard error, sample std (n - 1) / sqrt(n) (lm_eval.api.metrics.mean_stderr);
// NAN when n < 2.
static void mean_stderr(const double *x, int n, double *mean, double *se) {
    double mu = 0.0;
    for (int i = 0; i < n; i++) mu += x[i];
    mu /= n;
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (x[i] - mu) * (x[i] - mu);
    *mean = mu;
    *se = n > 1 ? sqrt(ss / (n - 1)) / sqrt((double)n) : NAN;
}

static QaMetrics qa_metrics(const QaTask *t) {
    double *a = malloc_or_die((size_t)t->n * sizeof(double), "metrics");
    double *an = malloc_or_die((size_t)t->n * sizeof(double), "metrics");
    for (int i = 0; i < t->n; i++) {
        int p, pn;
        qa_predict(&t->items[i], &p, &pn);
        a[i] = p == t->items[i].gold;
        an[i] = pn == t->items[i].gold;
    }
    QaMetrics r;
    r.n = t->n;
    mean_stderr(a, t->n, &r.acc, &r.acc_se);
    mean_stderr(an, t->n, &r.acc_norm, &r.acc_norm_se);
    free(a); free(an);
    return r;
}

// ============================================================================================
// The driver

typedef struct { const char *name; int has_norm; } QaTaskName;
static const QaTaskName QA_TASKS[] = {
    {"piqa", 1}, {"hellaswag", 1}, {"winogrande", 0}, {"arc_easy", 1}, {"arc_challenge", 1},
};
#define QA_N_TASKS ((int)(sizeof QA_TASKS / sizeof QA_TASKS[0]))

static void qa_load(QaTask *t, const char *name, const char *dir, int limit) {
    memset(t, 0, sizeof *t);
    for (int k = 0; k < QA_N_TASKS; k++)
        if (!strcmp(name, QA_TASKS[k].name)) { t->name = QA_TASKS[k].name; t->has_norm = QA_TASKS[k].has_norm; }
    if (!t->name) die("unknown evaluation task '%s' (known: piqa, hellaswag, winogrande, arc_easy, arc_challenge)", name);
    if (!strcmp(name, "piqa")) load_piqa(t, dir, limit);
    else if (!strcmp(name, "hellaswag")) load_hellaswag(t, dir, limit);
    else if (!strcmp(name, "winogrande")) load_winogrande(t, dir, limit);
    else if (!strcmp(name, "arc_easy")) load_arc(t, dir, limit, "Easy");
    else load_arc(t, dir, limit, "Challenge");
}

// JSON number, or null for a NAN standard error.
static void json_num(char *buf, size_t n, double x) {
    if (isfinite(x)) snprintf(buf, n, "%.8f", x);
    else snprintf(buf, n, "null");
}

static void json_append(char *json, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void json_append(char *json, size_t cap, const char *fmt, ...) {
    size_t used = strlen(json);
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(json + used, cap - used, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= cap - used) die("evaluation results do not fit their JSON buffer (%zu bytes)", cap);
}

// "78.07 ± 0.97" in percent, padded to 15 characters (± is two bytes, one character).
static void qa_cell(char *buf, size_t n, double x, double se) {
    char t[32];
    if (isfinite(se)) snprintf(t, sizeof t, "%.2f \xc2\xb1 %.2f", 100 * x, 100 * se);
    else snprintf(t, sizeof t, "%.2f", 100 * x);
    size_t k = (size_t)snprintf(buf, n, "%s", t);
    for (int64_t w = py_len(t, strlen(t)); w < 15 && k + 1 < n; w++) buf[k++] = ' ';
    buf[k] = 0;
}

void eval_qa(Model *m, const Tokenizer *tok, const char *tasks, const char *dir, int limit, char *json, size_t json_cap) {
    char list[256];
    if (strlen(tasks) >= sizeof list) die("--eval-qa: task list too long");
    snprintf(list, sizeof list, "%s", tasks);
    char *names[QA_N_TASKS + 1];
    int nt = 0;
    for (char *save = NULL, *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        if (nt == QA_N_TASKS) die("--eval-qa: too many tasks (a task named twice?)");
        for (int k = 0; k < nt; k++) if (!strcmp(names[k], p)) die("--eval-qa: task '%s' named twice", p);
        names[nt++] = p;
    }
    if (nt == 0) die("--eval-qa: no task named");
    QaMetrics res[QA_N_TASKS];
    int has_norm[QA_N_TASKS];
    for (int k = 0; k < nt; k++) {  // load every task first, so bad input stops before any forward
        QaTask t;
        qa_load(&t, names[k], dir, limit);
        qa_task_free(&t);
    }
    for (int k = 0; k < nt; k++) {
        QaTask t;
        qa_load(&t, names[k], dir, limit);
        printf("qa: %s: %d items from %s\n", t.name, t.n, t.path);
        qa_encode(&t, tok, eval_qa_add_bos);
        qa_check_fits(&t, m->cfg.max_seq_len);
        qa_score_task(m, &t);
        res[k] = qa_metrics(&t);
        has_norm[k] = t.has_norm;
        qa_task_free(&t);
    }
    // the table, in percent as the papers print it
    printf("\nzero-shot accuracy (lm-evaluation-harness v0.4 scoring, %s BOS)\n", eval_qa_add_bos ? "with" : "without");
    printf("| %-14s | %6s | %-15s | %-15s |\n", "task", "n", "acc (%)", "acc_norm (%)");
    printf("|----------------|-------:|-----------------|-----------------|\n");
    double avg = 0.0, avg_norm = 0.0;
    json[0] = 0;
    json_append(json, json_cap, "\"qa\": {");
    for (int k = 0; k < nt; k++) {
        QaMetrics r = res[k];
        char a[32], an[32], ja[32], jas[32], jn[32], jns[32];
        qa_cell(a, sizeof a, r.acc, r.acc_se);
        if (has_norm[k]) qa_cell(an, sizeof an, r.acc_norm, r.acc_norm_se);
        else snprintf(an, sizeof an, "%-15s", "-");
        printf("| %-14s | %6d | %s | %s |\n", names[k], r.n, a, an);
        avg += r.acc / nt;
        avg_norm += (has_norm[k] ? r.acc_norm : r.acc) / nt;
        json_num(ja, sizeof ja, r.acc); json_num(jas, sizeof jas, r.acc_se);
        json_num(jn, sizeof jn, r.acc_norm); json_num(jns, sizeof jns, r.acc_norm_se);
        json_append(json, json_cap, "\"%s\": {\"acc\": %s, \"acc_stderr\": %s", names[k], ja, jas);
        if (has_norm[k]) json_append(json, json_cap, ", \"acc_norm\": %s, \"acc_norm_stderr\": %s", jn, jns);
        json_append(json, json_cap, ", \"n\": %d}, ", r.n);
    }
    printf("| %-14s | %6s | %-15.2f | %-15.2f |\n\n", "average", "", 100 * avg, 100 * avg_norm);
    json_append(json, json_cap, "\"avg\": %.8f, \"avg_norm\": %.8f}", avg, avg_norm);
}

// ============================================================================================
// WikiText-2 for perplexity
//
// GPTQ (Frantar et al. 2022) and BitDistiller evaluate on
//   "\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"])
// tokenized once (with BOS). The Hugging Face loader reads wiki.test.raw line by line (Python
// text mode: "\r\n" and "\r" read as "\n") and yields each line WITH its "\n" when it has a
// non-whitespace character, else "" (an empty string, not the blank line). So every blank line
// of the file contributes nothing but its joiners, and a text line ends in "\n" + "\n\n".
// Accepted: DIR/wiki.test.raw, DIR/wikitext-2-raw/wiki.test.raw, or DIR naming the file itself
// (the raw file from wikitext-2-raw-v1.zip; the dataset's parquet holds the same lines).

static char *wikitext2_join(const char *raw, size_t len, size_t *out_len) {
    Buf text = {0}, o = {0};
    buf_put(&text, "", 0);
    buf_put(&o, "", 0);
    for (size_t i = 0; i < len; i++) {  // universal newlines
        if (raw[i] == '\r') { buf_put(&text, "\n", 1); if (i + 1 < len && raw[i + 1] == '\n') i++; }
        else buf_put(&text, raw + i, 1);
    }
    for (size_t i = 0, line = 0; i < text.n; line++) {
        size_t e = i;
        while (e < text.n && text.s[e] != '\n') e++;
        if (e < text.n) e++;  // the line keeps its newline
        size_t a, b;
        py_strip(text.s + i, e - i, &a, &b, 1);
        if (line > 0) buf_put(&o, "\n\n", 2);
        if (b > a) buf_put(&o, text.s + i, e - i);
        i = e;
    }
    free(text.s);
    *out_len = o.n;
    return o.s;
}

int *wikitext2_tokens(const Tokenizer *tok, const char *dir, int64_t *n) {
    char path[4096];
    struct stat st;
    if (stat(dir, &st) == 0 && S_ISREG(st.st_mode)) snprintf(path, sizeof path, "%s", dir);
    else {
        static const char *const cands[] = {"wiki.test.raw", "wikitext-2-raw/wiki.test.raw", NULL};
        find_task_file(path, sizeof path, dir, "WikiText-2", cands);
    }
    size_t len, jl;
    char *raw = read_file_or_die(path, &len);
    if (len == 0) die("%s: empty file", path);
    char *text = wikitext2_join(raw, len, &jl);
    if (jl > (size_t)(INT32_MAX / 3 - 2)) die("%s: too large to tokenize at once", path);
    int count;
    int *ids = encode_alloc(tok, text, jl, TOK_ADD_BOS, &count);
    printf("wikitext2: %s, %zu bytes joined, %d tokens\n", path, jl, count);
    free(raw); free(text);
    *n = count;
    return ids;
}

#endif

// data.c — the data of a distillation run: JSONL examples, and teacher-generated data.
//
// #included by train.c after generate.c (its section 10): it uses the Tokenizer (tokenizer.c),
// json.h, util.h's checking wrappers, rng.h, train.c's Model, Distiller and token streams, and
// generate().
//
// BitDistiller (Du et al. 2024) does not distil on a fixed corpus: the full-precision teacher
// first writes its own training data, continuing prompts taken from WikiText-2 and Alpaca
// ("self-generated data", section 3.3 of the paper). The quantized student then learns the
// teacher's distribution on text the teacher itself finds likely. So this file has two halves,
// and the batches training draws from either kind of data:
//
//   A. examples: a JSONL file of (prompt, response) pairs -> right-padded token rows, the
//      train/eval split, batches with their loss masks, and the held-out split's loss;
//   B. generation: prompt sources (WikiText, Alpaca, text files, mixes) -> the teacher's
//      continuations -> a JSONL file that A reads;
//   C. batches: micro-batch k of a run, from a token stream or from A's examples.
#ifndef DATA_C
#define DATA_C

// ============================================================================================
// A. Examples
//
// One example per JSONL line, in one of three forms:
//   [["prompt", "response"]]               BitDistiller's generated data; a list of several
//                                          pairs gives several examples
//   {"prompt": "...", "response": "..."}
//   {"text": "..."}                        the prompt is empty
//   {"ids": [1, 403, 87, ...]}             token ids, taken as the row itself (nothing added);
//                                          the form of data-free generation (section B), which
//                                          needs no tokenizer. A "text" beside "ids" is only
//                                          for reading: the ids are used.
// Other keys are ignored; blank lines are skipped.
//
// An example's tokens are  BOS + tokenize(prompt + response) + EOS  (BOS/EOS only where the
// tokenizer has them), as BitDistiller's train.py builds them (it appends the EOS string to the
// response and lets the tokenizer add BOS). The concatenated text is tokenized once, so the
// tokens at the seam are the ones the model would see in running text.
//
// The prompt/response boundary (for --mask-prompt): n_prompt = the token count of BOS +
// tokenize(prompt) alone, the rule of Alpaca's and BitDistiller's (commented-out) masking code.
// When a merge spans the seam (a prompt ending in "Hel" and a response starting with "lo"), the
// joint tokenization has no exact boundary and n_prompt may be off by one token there.
//
// Rows hold `seq` tokens: longer examples are cut to their first `seq` tokens (their EOS is
// lost; one line says how many were cut), shorter ones are right-padded with pad_id = EOS (0
// when the tokenizer has none). Padding never reaches the loss: its targets are -1.

typedef struct {
    int n;            // examples
    int *tokens;      // [n, seq], right-padded with pad_id
    int *n_real;      // [n] real tokens of each example (<= seq)
    int *n_prompt;    // [n] prompt tokens of each example (BOS included, <= n_real)
    int seq;
} Dataset;

// The pad id: EOS, since it is already in every vocabulary and its embedding is trained (0 for
// ids-only data read without a tokenizer: padding never reaches the loss).
static int data_pad_id(const Tokenizer *tok) { return tok && tok->eos_id >= 0 ? tok->eos_id : 0; }

// Room for n examples (growing by doubling).
static void dataset_reserve(Dataset *d, int *cap, int n) {
    if (n <= *cap) return;
    int c = *cap ? *cap : 64;
    while (c < n) c *= 2;
    d->tokens = realloc(d->tokens, (size_t)c * d->seq * sizeof(int));
    d->n_real = realloc(d->n_real, (size_t)c * sizeof(int));
    d->n_prompt = realloc(d->n_prompt, (size_t)c * sizeof(int));
    if (!d->tokens || !d->n_real || !d->n_prompt) die("out of memory holding %d examples of %d tokens", c, d->seq);
    *cap = c;
}

// Scratch for one example: the concatenated text and its token ids.
typedef struct { Buf text; int *ids; int64_t cap; } ExampleScratch;

// Tokenizes one (prompt, response) pair into row d->n. Returns 1 when it had to be cut.
static int dataset_add(Dataset *d, int *cap, ExampleScratch *s, const Tokenizer *tok, int vocab_size,
                       const char *prompt, size_t plen, const char *resp, size_t rlen, const char *path, int line) {
    if (!tok) die("%s:%d: a text example needs the model's tokenizer (--tokenizer FILE, or MODEL.tokenizer beside the model); "
                  "a model without one reads {\"ids\": [...]} lines", path, line);
    s->text.n = 0;
    buf_put(&s->text, prompt, plen);
    buf_put(&s->text, resp, rlen);
    int64_t need = 3 * (int64_t)s->text.n + 3;  // tokenizer.c: 3 * len + 2 ids always suffice, + EOS
    if (need > INT32_MAX) die("%s:%d: example too long to tokenize (%zu bytes)", path, line, s->text.n);
    if (need > s->cap) {
        free(s->ids);
        s->cap = need;
        s->ids = malloc_or_die((size_t)need * sizeof(int), "example tokens");
    }
    int n = tokenizer_encode(tok, s->text.s, s->text.n, TOK_ADD_BOS, s->ids, (int)s->cap);
    if (tok->eos_id >= 0) s->ids[n++] = tok->eos_id;
    int np = tokenizer_encode(tok, prompt, plen, TOK_ADD_BOS, NULL, 0);  // counts only
    for (int i = 0; i < n; i++)
        if (s->ids[i] >= vocab_size)
            die("%s:%d: the tokenizer made id %d, outside the model's vocabulary (%d)", path, line, s->ids[i], vocab_size);
    dataset_reserve(d, cap, d->n + 1);
    int keep = n < d->seq ? n : d->seq, pad = data_pad_id(tok);
    int *row = d->tokens + (int64_t)d->n * d->seq;
    for (int t = 0; t < d->seq; t++) row[t] = t < keep ? s->ids[t] : pad;
    d->n_real[d->n] = keep;
    d->n_prompt[d->n] = np < keep ? np : keep;
    d->n++;
    return n > d->seq;
}

// One {"ids": [...]} example into row d->n: the ids as they are, no prompt. Returns 1 when cut.
static int dataset_add_ids(Dataset *d, int *cap, const Json *ids, const Tokenizer *tok, int vocab_size, const char *path, int line) {
    if (ids->type != JSON_ARRAY || ids->n == 0) die("%s:%d: \"ids\" must be a non-empty list of token ids", path, line);
    dataset_reserve(d, cap, d->n + 1);
    int keep = ids->n < d->seq ? ids->n : d->seq, pad = data_pad_id(tok);
    int *row = d->tokens + (int64_t)d->n * d->seq;
    for (int t = 0; t < ids->n; t++) {
        const Json *v = &ids->items[t];
        if (v->type != JSON_NUMBER || v->number != (double)(int64_t)v->number || v->number < 0 || v->number >= vocab_size)
            die("%s:%d: \"ids\" item %d is not a token id in [0, %d)", path, line, t + 1, vocab_size);
        if (t < keep) row[t] = (int)v->number;
    }
    for (int t = keep; t < d->seq; t++) row[t] = pad;
    d->n_real[d->n] = keep;
    d->n_prompt[d->n] = 0;
    d->n++;
    return ids->n > d->seq;
}

static const char *json_type_name(JsonType t) {
    static const char *const names[] = {"null", "a boolean", "a number", "a string", "a list", "an object"};
    return names[t];
}

// A string field of an object: NULL when absent, dies when present but not a string.
static const Json *example_field(const Json *obj, const char *key, const char *path, int line) {
    const Json *v = json_get(obj, key);
    if (v && v->type != JSON_STRING) die("%s:%d: \"%s\" is %s, not a string", path, line, key, json_type_name(v->type));
    return v;
}

// One parsed line -> one or more examples. Returns how many were cut to seq tokens.
static int dataset_add_line(Dataset *d, int *cap, ExampleScratch *s, const Tokenizer *tok, int vocab_size,
                            const Json *j, const char *path, int line) {
    if (j->type == JSON_ARRAY) {  // [["prompt", "response"], ...]
        if (j->n == 0) die("%s:%d: an empty list (expected [[\"prompt\", \"response\"]])", path, line);
        int cut = 0;
        for (int i = 0; i < j->n; i++) {
            const Json *pair = &j->items[i];
            if (pair->type != JSON_ARRAY || pair->n != 2 || pair->items[0].type != JSON_STRING || pair->items[1].type != JSON_STRING)
                die("%s:%d: item %d of the list is not a [\"prompt\", \"response\"] pair of strings", path, line, i + 1);
            cut += dataset_add(d, cap, s, tok, vocab_size, pair->items[0].string, pair->items[0].string_len,
                               pair->items[1].string, pair->items[1].string_len, path, line);
        }
        return cut;
    }
    if (j->type != JSON_OBJECT)
        die("%s:%d: found %s; expected [[\"prompt\", \"response\"]], {\"prompt\", \"response\"} or {\"text\"}",
            path, line, json_type_name(j->type));
    const Json *ids = json_get(j, "ids");
    if (ids) return dataset_add_ids(d, cap, ids, tok, vocab_size, path, line);
    const Json *prompt = example_field(j, "prompt", path, line), *resp = example_field(j, "response", path, line);
    const Json *text = example_field(j, "text", path, line);
    if (prompt || resp) {
        if (!prompt || !resp) die("%s:%d: has \"%s\" but lacks \"%s\"", path, line, prompt ? "prompt" : "response", prompt ? "response" : "prompt");
        return dataset_add(d, cap, s, tok, vocab_size, prompt->string, prompt->string_len, resp->string, resp->string_len, path, line);
    }
    if (!text) die("%s:%d: lacks fields: expected {\"prompt\", \"response\"} or {\"text\"}", path, line);
    return dataset_add(d, cap, s, tok, vocab_size, "", 0, text->string, text->string_len, path, line);
}

// Reads a JSONL file of examples into rows of seq tokens (tok may be NULL for {"ids"} lines).
void dataset_load(Dataset *d, const char *path, const Tokenizer *tok, int seq, int vocab_size) {
    if (seq < 2) die("%s: sequences of %d tokens hold no next-token target (need --seq >= 2)", path, seq);
    size_t len;
    char *text = read_file_or_die(path, &len);
    if (len == 0) die("%s: empty file", path);
    memset(d, 0, sizeof *d);
    d->seq = seq;
    int cap = 0, cut = 0, line = 0;
    ExampleScratch s = {{NULL, 0, 0}, NULL, 0};
    for (char *p = text, *end = text + len; p < end; ) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        line++;
        const char *q = p;
        while (q < eol && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q < eol) {  // not a blank line
            char err[256];
            Json *j = json_parse(p, (size_t)(eol - p), err, sizeof err);
            // json_parse says "line 1, column C: ..." of this one line: keep the column
            if (!j) die("%s:%d: not valid JSON (%s)", path, line, strncmp(err, "line 1, ", 8) ? err : err + 8);
            cut += dataset_add_line(d, &cap, &s, tok, vocab_size, j, path, line);
            json_free(j);
        }
        p = eol + 1;
    }
    free(text); free(s.text.s); free(s.ids);
    if (d->n == 0) die("%s: no examples (only blank lines)", path);
    int64_t real = 0, prompt = 0;
    for (int i = 0; i < d->n; i++) { real += d->n_real[i]; prompt += d->n_prompt[i]; }
    printf("data: %s: %d examples, %lld tokens (%.1f per example, %.1f of them prompt), rows of %d\n", path, d->n,
           (long long)real, (double)real / d->n, (double)prompt / d->n, seq);
    if (cut) printf("data: %d of %d examples were longer than --seq %d tokens and were truncated\n", cut, d->n, seq);
}

// Copies examples [from, from + n) of src into a new dataset.
static void dataset_slice(Dataset *dst, const Dataset *src, int from, int n) {
    dst->n = n;
    dst->seq = src->seq;
    dst->tokens = malloc_or_die((size_t)n * src->seq * sizeof(int), "dataset tokens");
    dst->n_real = malloc_or_die((size_t)n * sizeof(int), "dataset lengths");
    dst->n_prompt = malloc_or_die((size_t)n * sizeof(int), "dataset lengths");
    memcpy(dst->tokens, src->tokens + (int64_t)from * src->seq, (size_t)n * src->seq * sizeof(int));
    memcpy(dst->n_real, src->n_real + from, (size_t)n * sizeof(int));
    memcpy(dst->n_prompt, src->n_prompt + from, (size_t)n * sizeof(int));
}

// BitDistiller's split (train.py): the first floor(n/5) examples of the file are the eval
// split, the remaining ones the training split. Its generated files are already in random
// order (mix_data.py shuffles them), and so are ours (section B), so the first fifth is a
// random fifth. With fewer than 5 examples the eval split is empty.
void dataset_split(const Dataset *all, Dataset *train, Dataset *eval) {
    int n_eval = all->n / 5;
    dataset_slice(eval, all, 0, n_eval);
    dataset_slice(train, all, n_eval, all->n - n_eval);
}

// inputs[B,seq] = the rows idx[0..B); targets[b,t] = the next token tokens[t+1] where t+1 is a
// real position, else -1 (padding, and the last position); with mask_prompt also -1 where
// t+1 < n_prompt, so that only response tokens are predicted in the loss.
void dataset_batch(const Dataset *d, const int *idx, int B, int mask_prompt, int *inputs, int *targets) {
    int T = d->seq;
    for (int b = 0; b < B; b++) {
        if (idx[b] < 0 || idx[b] >= d->n) die("dataset_batch: example %d out of range [0, %d)", idx[b], d->n);
        const int *row = d->tokens + (int64_t)idx[b] * T;
        int real = d->n_real[idx[b]], first = mask_prompt ? d->n_prompt[idx[b]] : 1;
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = row[t];
            targets[b * T + t] = t + 1 < real && t + 1 >= first ? row[t + 1] : -1;
        }
    }
}

// The positions dataset_batch gives a target: what a run on d can learn from.
int64_t dataset_targets(const Dataset *d, int mask_prompt) {
    int64_t n = 0;
    for (int i = 0; i < d->n; i++) {
        int first = mask_prompt ? d->n_prompt[i] : 1;
        for (int t = 0; t + 1 < d->n_real[i]; t++) n += t + 1 >= first;
    }
    return n;
}

// The order of the examples in epoch `epoch`: a permutation of 0..n-1 that depends only on
// (seed, epoch), as a data sampler reshuffling every epoch does. A resumed run recomputes it
// from the saved data position instead of saving it.
void dataset_epoch_order(const Dataset *d, uint64_t seed, int epoch, int *idx) {
    Rng r = rng_seeded(seed * 1000003u + (uint64_t)epoch);
    for (int i = 0; i < d->n; i++) idx[i] = i;
    for (int i = d->n - 1; i > 0; i--) {  // Fisher-Yates
        int j = (int)(rng_u64(&r) % (uint64_t)(i + 1)), t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

void dataset_free(Dataset *d) {
    free(d->tokens); free(d->n_real); free(d->n_prompt);
    memset(d, 0, sizeof *d);
}

// The training loss on the held-out examples, without gradients: d's loss (summed over a
// sequence's positions, averaged over sequences), or without d the cross-entropy averaged over
// tokens, the reductions train.c's train_loop uses (which reports it every --eval-every steps).
static double eval_split_loss(Model *m, Model *teacher, const Distiller *d, const Dataset *ev, int B, int *inputs, int *targets) {
    int T = ev->seq, *idx = malloc_or_die((size_t)B * sizeof(int), "eval batch");
    double sum = 0.0;
    int64_t tokens = 0;
    for (int i0 = 0; i0 < ev->n; i0 += B) {
        int nb = ev->n - i0 < B ? ev->n - i0 : B;
        for (int b = 0; b < nb; b++) idx[b] = i0 + b;
        dataset_batch(ev, idx, nb, 0, inputs, targets);
        if (d) {
            const float *zt = NULL;
            int Vt = m->cfg.vocab_size;
            if (d->loss.kind != LOSS_CE) { model_forward(teacher, inputs, NULL, nb, T); zt = teacher->logits; Vt = teacher->cfg.vocab_size; }
            model_forward(m, inputs, NULL, nb, T);
            sum += nb * distill_loss_batch(m->act[A_DLOGITS], d->scratch, d->scratch_rows, m->logits, zt, targets, nb, T,
                                           m->cfg.vocab_size, Vt, d->loss);
        } else {
            int64_t n = 0;
            for (int i = 0; i < nb * T; i++) n += targets[i] >= 0;
            if (n) sum += (double)model_forward(m, inputs, targets, nb, T) * n;
            tokens += n;
        }
    }
    free(idx);
    return d ? sum / ev->n : sum / (tokens ? tokens : 1);
}

// ============================================================================================
// B. Teacher-generated data
//
// Prompt sources, as BitDistiller's data/generation/data_utils.py takes them:
//   wikitext:PATH  WikiText-2 raw (wiki.train.raw): the paragraphs (lines) longer than 512
//                  characters, stripped, cut to their first 128 characters. "Characters" are
//                  Unicode code points (Python's len), and the length test counts the line
//                  with its newline, as the Hugging Face dataset's rows keep it: exactly the
//                  paragraphs BitDistiller takes. (It does not strip, so its prompts start with
//                  WikiText's leading space; ours do not.)
//   alpaca:PATH    Alpaca-cleaned, a JSON array (or JSONL) of {instruction, input, output}:
//                  the prompt is "{instruction}\n{input}\n", or "{instruction}\n" when input is
//                  empty or absent. The output is not used: the teacher writes its own.
//   text:PATH      one prompt per line (a trailing "\r" dropped); blank lines are skipped.
// A spec is one source or a comma-separated mix, each with an optional count:
//   "wikitext:wiki.train.raw=600,alpaca:alpaca_data_cleaned.json=400"
// From each source, `count` prompts are drawn at random without replacement (random.sample in
// BitDistiller); a count above what the source holds takes all of it, in file order (as
// BitDistiller does, with a note). Sources without a count share n_total minus the explicit
// counts (all of the source when n_total <= 0). A mix is then shuffled (mix_data.py). Paths
// may not contain ','. Prompts must be valid UTF-8.

typedef struct { int n; char **prompts; } Prompts;

static void prompts_push(Prompts *p, int *cap, const char *s, size_t n) {
    if (p->n == *cap) {
        *cap = *cap ? *cap * 2 : 256;
        p->prompts = realloc(p->prompts, (size_t)*cap * sizeof(char *));
        if (!p->prompts) die("out of memory holding %d prompts", *cap);
    }
    char *copy = malloc_or_die(n + 1, "prompt");
    memcpy(copy, s, n);
    copy[n] = 0;
    p->prompts[p->n++] = copy;
}

void prompts_free(Prompts *p) {
    for (int i = 0; i < p->n; i++) free(p->prompts[i]);
    free(p->prompts);
    memset(p, 0, sizeof *p);
}

// Code points in s[0..n), dying on invalid UTF-8 (json.h's strict check).
static int64_t utf8_chars_or_die(const char *s, size_t n, const char *path, int line) {
    int64_t chars = 0;
    for (size_t i = 0; i < n; chars++) {
        int l = json_utf8_valid((const unsigned char *)s + i, (const unsigned char *)s + n);
        if (!l) die("%s:%d: invalid UTF-8 (byte 0x%02x)", path, line, (unsigned char)s[i]);
        i += (size_t)l;
    }
    return chars;
}

// Bytes taken by the first k code points of valid UTF-8 s[0..n).
static size_t utf8_prefix_bytes(const char *s, size_t n, int64_t k) {
    size_t i = 0;
    for (int64_t c = 0; c < k && i < n; c++) i += (size_t)json_utf8_valid((const unsigned char *)s + i, (const unsigned char *)s + n);
    return i;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

// Calls fn(line, len, line_number, has_newline) for every line of a file.
static void for_each_line(char *text, size_t len, void (*fn)(const char *, size_t, int, int, void *), void *ctx) {
    int line = 0;
    for (char *p = text, *end = text + len; p < end; ) {
        char *eol = memchr(p, '\n', (size_t)(end - p));
        fn(p, (size_t)((eol ? eol : end) - p), ++line, eol != NULL, ctx);
        p = eol ? eol + 1 : end;
    }
}

typedef struct { Prompts *p; int cap; const char *path; } LineCtx;

static void wikitext_line(const char *s, size_t n, int line, int has_newline, void *ctx) {
    LineCtx *c = ctx;
    if (utf8_chars_or_die(s, n, c->path, line) + has_newline <= 512) return;
    while (n && is_space(*s)) s++, n--;
    while (n && is_space(s[n - 1])) n--;
    prompts_push(c->p, &c->cap, s, utf8_prefix_bytes(s, n, 128));
}

static void text_line(const char *s, size_t n, int line, int has_newline, void *ctx) {
    LineCtx *c = ctx;
    if (n && s[n - 1] == '\r') n--;
    size_t k = 0;
    while (k < n && is_space(s[k])) k++;
    if (k == n) return;  // blank
    utf8_chars_or_die(s, n, c->path, line);
    prompts_push(c->p, &c->cap, s, n);
}

// An Alpaca record -> its prompt; `where` names it in errors ("FILE:LINE" or "FILE: record K").
static void alpaca_record(Prompts *p, int *cap, const Json *r, const char *where) {
    if (r->type != JSON_OBJECT) die("%s: found %s, expected an object {instruction, input, output}", where, json_type_name(r->type));
    const Json *ins = json_get(r, "instruction"), *in = json_get(r, "input");
    if (!ins) die("%s: lacks \"instruction\"", where);
    if (ins->type != JSON_STRING) die("%s: \"instruction\" is %s, not a string", where, json_type_name(ins->type));
    if (in && in->type != JSON_STRING) die("%s: \"input\" is %s, not a string", where, json_type_name(in->type));
    size_t ni = ins->string_len, nx = in ? in->string_len : 0, n = ni + 1 + (nx ? nx + 1 : 0);
    char *s = malloc_or_die(n, "prompt");
    memcpy(s, ins->string, ni);
    s[ni] = '\n';
    if (nx) { memcpy(s + ni + 1, in->string, nx); s[n - 1] = '\n'; }
    prompts_push(p, cap, s, n);
    free(s);
}

static void alpaca_load(Prompts *p, const char *path) {
    size_t len;
    char *text = read_file_or_die(path, &len), err[256], where[4200];
    int cap = 0;
    size_t k = 0;
    while (k < len && is_space(text[k])) k++;
    if (k < len && text[k] == '[') {  // one JSON array (alpaca_data_cleaned.json)
        Json *j = json_parse(text, len, err, sizeof err);
        if (!j) die("%s: not valid JSON (%s)", path, err);
        for (int i = 0; i < j->n; i++) {
            snprintf(where, sizeof where, "%s: record %d", path, i + 1);
            alpaca_record(p, &cap, &j->items[i], where);
        }
        json_free(j);
    } else {  // JSONL
        int line = 0;
        for (char *q = text, *end = text + len; q < end; ) {
            char *eol = memchr(q, '\n', (size_t)(end - q));
            if (!eol) eol = end;
            line++;
            const char *r = q;
            while (r < eol && is_space(*r)) r++;
            if (r < eol) {
                Json *j = json_parse(q, (size_t)(eol - q), err, sizeof err);
                if (!j) die("%s:%d: not valid JSON (%s)", path, line, strncmp(err, "line 1, ", 8) ? err : err + 8);
                snprintf(where, sizeof where, "%s:%d", path, line);
                alpaca_record(p, &cap, j, where);
                json_free(j);
            }
            q = eol + 1;
        }
    }
    free(text);
}

// All the prompts of one source.
static void source_load(Prompts *p, const char *kind, const char *path) {
    memset(p, 0, sizeof *p);
    if (!strcmp(kind, "alpaca")) {
        alpaca_load(p, path);
    } else {
        size_t len;
        char *text = read_file_or_die(path, &len);
        LineCtx c = {p, 0, path};
        if (!strcmp(kind, "wikitext")) for_each_line(text, len, wikitext_line, &c);
        else for_each_line(text, len, text_line, &c);
        free(text);
    }
    if (p->n == 0)
        die("%s: no prompts (%s)", path, !strcmp(kind, "wikitext") ? "no paragraph longer than 512 characters"
                                         : !strcmp(kind, "alpaca") ? "no records" : "only blank lines");
}

// Keeps `count` prompts of src drawn without replacement, in the order drawn (a partial
// Fisher-Yates shuffle); count >= src->n keeps them all, in file order. Appends to dst.
static void prompts_take(Prompts *dst, int *cap, Prompts *src, int count, Rng *rng) {
    if (count > 0 && count < src->n) {
        for (int i = 0; i < count; i++) {
            int j = i + (int)(rng_u64(rng) % (uint64_t)(src->n - i));
            char *t = src->prompts[i];
            src->prompts[i] = src->prompts[j];
            src->prompts[j] = t;
        }
    } else count = src->n;
    for (int i = 0; i < count; i++) prompts_push(dst, cap, src->prompts[i], strlen(src->prompts[i]));
}

#define MAX_SOURCES 16

void prompts_load(Prompts *p, const char *spec, int n_total, uint64_t seed) {
    // split the spec into kind:path[=count] entries
    char *copy = malloc_or_die(strlen(spec) + 1, "prompt spec");
    strcpy(copy, spec);
    char *kind[MAX_SOURCES], *path[MAX_SOURCES];
    int count[MAX_SOURCES], n_src = 0, explicit_sum = 0, n_free = 0;
    for (char *e = strtok(copy, ","); e; e = strtok(NULL, ",")) {
        if (n_src == MAX_SOURCES) die("%s: more than %d prompt sources", spec, MAX_SOURCES);
        char *colon = strchr(e, ':');
        if (!colon) die("%s: '%s' names no source kind (wikitext:PATH, alpaca:PATH or text:PATH)", spec, e);
        *colon = 0;
        if (strcmp(e, "wikitext") && strcmp(e, "alpaca") && strcmp(e, "text"))
            die("%s: unknown prompt source '%s' (wikitext, alpaca or text)", spec, e);
        kind[n_src] = e;
        path[n_src] = colon + 1;
        count[n_src] = 0;
        char *eq = strrchr(colon + 1, '=');
        if (eq && eq[1] && strspn(eq + 1, "0123456789") == strlen(eq + 1)) {
            long c = strtol(eq + 1, NULL, 10);
            if (c < 1 || c > INT32_MAX / 2 - explicit_sum)  // the counts' sum must fit an int too
                die("%s: count '%s' must be at least 1, and the counts at most %d in all", spec, eq + 1, INT32_MAX / 2);
            count[n_src] = (int)c;
            explicit_sum += (int)c;
            *eq = 0;
        } else n_free++;
        if (!path[n_src][0]) die("%s: source '%s' has no path", spec, kind[n_src]);
        n_src++;
    }
    if (n_src == 0) die("prompt source '%s': expected wikitext:PATH, alpaca:PATH or text:PATH", spec);
    // sources without a count share what n_total leaves (all of themselves when n_total <= 0)
    int left = n_total > 0 ? n_total - explicit_sum : 0;
    if (n_free && n_total > 0 && left < n_free)
        die("%s: %d prompts asked in all, %d of them by explicit counts: none left for the sources without one", spec, n_total, explicit_sum);
    for (int i = 0, k = 0; i < n_src; i++)
        if (!count[i] && n_total > 0) count[i] = left / n_free + (k++ < left % n_free);
    // draw from each source, then shuffle a mix
    memset(p, 0, sizeof *p);
    int cap = 0;
    Rng rng = rng_seeded(seed);
    for (int i = 0; i < n_src; i++) {
        Prompts src;
        source_load(&src, kind[i], path[i]);
        int before = p->n;
        prompts_take(p, &cap, &src, count[i], &rng);
        printf("prompts: %s:%s: %d of %d%s\n", kind[i], path[i], p->n - before, src.n,
               count[i] > src.n ? " (fewer than asked: all of them)" : "");
        prompts_free(&src);
    }
    if (n_src > 1)
        for (int i = p->n - 1; i > 0; i--) {
            int j = (int)(rng_u64(&rng) % (uint64_t)(i + 1));
            char *t = p->prompts[i];
            p->prompts[i] = p->prompts[j];
            p->prompts[j] = t;
        }
    printf("prompts: %d in all%s\n", p->n, n_src > 1 ? ", shuffled" : "");
    free(copy);
}

// Appends s[0..n) as a JSON string (RFC 8259): '"' and '\' escaped, control bytes as \n, \t,
// ... or \u00XX, valid UTF-8 as it is, and each byte of invalid UTF-8 as \ufffd (the
// replacement character, as Python's decode(errors="replace") reads it): a response cut
// mid-character by max_new still makes a valid line.
static void json_put_string(Buf *b, const char *s, size_t n) {
    buf_put(b, "\"", 1);
    for (size_t i = 0; i < n; ) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\t' ? "\\t" :
                          c == '\r' ? "\\r" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (esc) { buf_put(b, esc, strlen(esc)); i++; continue; }
        if (c < 0x20) {
            char u[8];
            snprintf(u, sizeof u, "\\u%04x", c);
            buf_put(b, u, 6);
            i++;
            continue;
        }
        int l = json_utf8_valid((const unsigned char *)s + i, (const unsigned char *)s + n);
        if (!l) { buf_put(b, "\\ufffd", 6); i++; continue; }
        buf_put(b, s + i, (size_t)l);
        i += (size_t)l;
    }
    buf_put(b, "\"", 1);
}

// The text the teacher added after a prompt. Decoding the new ids alone would lose what depends
// on their left context (SentencePiece drops the "▁" of the first piece as a dummy prefix, so
// "The cat" + "▁sat" would decode to "sat"), so this decodes prompt + new and keeps what
// follows the decoded prompt, as BitDistiller does (it strips the decoded prompt from the
// decoded output). Ids with no text are dropped first, as skip_special_tokens does: control
// tokens, and ids beyond the tokenizer (embedding rows padded to a round vocabulary).
static char *response_text(const Tokenizer *tok, const int *prompt, int np, const int *new_ids, int nn, size_t *len) {
    int *ids = malloc_or_die((size_t)(np + nn) * sizeof(int), "response ids");
    memcpy(ids, prompt, (size_t)np * sizeof(int));
    int n = np;
    for (int i = 0; i < nn; i++)
        if (new_ids[i] < tok->n_vocab && tok->type[new_ids[i]] != SP_CONTROL) ids[n++] = new_ids[i];
    size_t pre_len, full_len;
    char *pre = tokenizer_decode(tok, ids, np, &pre_len), *full = tokenizer_decode(tok, ids, n, &full_len), *out;
    if (full_len >= pre_len && !memcmp(full, pre, pre_len)) {
        *len = full_len - pre_len;
        out = malloc_or_die(*len + 1, "response");
        memcpy(out, full + pre_len, *len + 1);
    } else {
        out = tokenizer_decode(tok, ids + np, n - np, len);
    }
    free(pre); free(full); free(ids);
    return out;
}

// "[#####     ]" for a fraction done.
static void format_bar(char *buf, int width, double frac) {
    int k = (int)(frac * width + 0.5);
    buf[0] = '[';
    for (int i = 0; i < width; i++) buf[1 + i] = i < k ? '#' : ' ';
    buf[width + 1] = ']';
    buf[width + 2] = 0;
}

// Continues every prompt with the teacher and writes one [["prompt", "response"]] line per
// prompt, in the order of p, to out_path (atomically). Sampling as BitDistiller's generate.py:
// temperature (0.7 there), top_p (1.0 there), up to max_new new tokens (1024 there), stopping at
// EOS; the prompt ids are BOS + tokenize(prompt), as Hugging Face's tokenizer makes them.
// Prompts in a batch are decoded together (generate() above: one KV cache, one position per
// step). A prompt that leaves no room for a new token in the teacher's context is skipped.
// Returns the number of new tokens written.
int64_t generate_data(Model *teacher, const Tokenizer *tok, const Prompts *p, int batch, int max_new,
                      float temperature, float top_p, uint64_t seed, const char *out_path) {
    if (!tok) die("%s: generating data needs the teacher's tokenizer (--tokenizer FILE)", out_path);
    if (batch < 1 || max_new < 1) die("%s: batch (%d) and max_new (%d) must be at least 1", out_path, batch, max_new);
    if (!(temperature >= 0.0f) || !(top_p > 0.0f && top_p <= 1.0f)) die("%s: temperature must be >= 0 and top_p in (0, 1]", out_path);
    if (p->n < 1) die("%s: no prompts to continue", out_path);
    if (tok->n_vocab > teacher->cfg.vocab_size)
        die("%s: the tokenizer has %d tokens, the teacher's vocabulary only %d", out_path, tok->n_vocab, teacher->cfg.vocab_size);
    // generate() stops at the model's eos_id: make it the tokenizer's, which the data uses
    int model_eos = teacher->cfg.eos_id;
    if (tok->eos_id >= 0) {
        if (model_eos >= 0 && model_eos != tok->eos_id)
            printf("generate: the model's EOS id %d differs from the tokenizer's %d; stopping at the tokenizer's\n", model_eos, tok->eos_id);
        teacher->cfg.eos_id = tok->eos_id;
    }
    // every prompt's ids; those too long for the context are skipped
    int **ids = malloc_or_die((size_t)p->n * sizeof(int *), "prompt ids"), *len = malloc_or_die((size_t)p->n * sizeof(int), "prompt lengths");
    int *use = malloc_or_die((size_t)p->n * sizeof(int), "prompt order"), n_use = 0, ctx = teacher->cfg.max_seq_len;
    for (int i = 0; i < p->n; i++) {
        size_t plen = strlen(p->prompts[i]);
        ids[i] = malloc_or_die((3 * plen + 2) * sizeof(int), "prompt ids");
        len[i] = tokenizer_encode(tok, p->prompts[i], plen, TOK_ADD_BOS, ids[i], (int)(3 * plen + 2));
        if (len[i] >= 1 && len[i] < ctx) use[n_use++] = i;
    }
    if (n_use < p->n) printf("generate: %d of %d prompts skipped: no room for a new token in the context of %d\n", p->n - n_use, p->n, ctx);
    if (n_use == 0) die("%s: every prompt is longer than the teacher's context (%d tokens)", out_path, ctx);
    // batches, in order
    AtomicFile af;
    atomic_open(&af, out_path);
    Rng rng = rng_seeded(seed);
    int **bp = malloc_or_die((size_t)batch * sizeof(int *), "batch"), *bl = malloc_or_die((size_t)batch * sizeof(int), "batch");
    int **out = malloc_or_die((size_t)batch * sizeof(int *), "batch"), *out_len = malloc_or_die((size_t)batch * sizeof(int), "batch");
    for (int b = 0; b < batch; b++) out[b] = malloc_or_die((size_t)max_new * sizeof(int), "new tokens");
    int64_t n_new = 0;
    double t0 = now_seconds();
    Buf line = {NULL, 0, 0};
    for (int i0 = 0; i0 < n_use; i0 += batch) {
        int nb = n_use - i0 < batch ? n_use - i0 : batch;
        for (int b = 0; b < nb; b++) { bp[b] = ids[use[i0 + b]]; bl[b] = len[use[i0 + b]]; }
        generate(teacher, bp, bl, nb, max_new, temperature, top_p, &rng, out, out_len);
        for (int b = 0; b < nb; b++) {
            size_t rlen;
            char *resp = response_text(tok, bp[b], bl[b], out[b], out_len[b], &rlen);
            const char *prompt = p->prompts[use[i0 + b]];
            line.n = 0;
            buf_put(&line, "[[", 2);
            json_put_string(&line, prompt, strlen(prompt));
            buf_put(&line, ", ", 2);
            json_put_string(&line, resp, rlen);
            buf_put(&line, "]]\n", 3);
            atomic_write(&af, line.s, line.n);
            free(resp);
            n_new += out_len[b];
        }
        // progress: a bar, new tokens per second, and the time left at this rate
        double el = now_seconds() - t0, done = i0 + nb;
        char bar[64], eta[32];
        format_bar(bar, 30, done / n_use);
        format_eta(eta, sizeof eta, el / done * (n_use - done));
        printf("generate: %s %d/%d prompts | %lld new tokens | %.0f tok/s | ETA %s\n", bar, (int)done, n_use,
               (long long)n_new, n_new / (el > 0 ? el : 1e-9), eta);
        fflush(stdout);
    }
    atomic_commit(&af);
    printf("generate: wrote %d examples to %s (%.1f new tokens per response)\n", n_use, out_path, (double)n_new / n_use);
    teacher->cfg.eos_id = model_eos;
    for (int i = 0; i < p->n; i++) free(ids[i]);
    for (int b = 0; b < batch; b++) free(out[b]);
    free(ids); free(len); free(use); free(bp); free(bl); free(out); free(out_len); free(line.s);
    return n_new;
}

// Data-free generation (LLM-QAT, Liu et al. 2023): with no prompts at all, the teacher writes
// n sequences from scratch. Each starts at BOS; its first token is drawn from the teacher's own
// next-token distribution after BOS (temperature 1: p(x1 | BOS) as it is, so that the sequences
// begin as the teacher's text begins); the rest are sampled at `temperature` (BitDistiller's 0.7)
// and top_p, up to max_new tokens in all or until EOS. A model without a BOS id starts each
// sequence at a token drawn uniformly from the vocabulary (LLM-QAT's own start).
// Each sequence is one line {"ids": [BOS, x1, ..., EOS]} (EOS when the teacher wrote it), the
// row that --data trains on, so no tokenizer is needed; with one, a "text" field (the decoded
// ids) is added for reading. Before starting, a short timed probe (8 decoding steps of one
// batch) gives the estimated time, so that a CPU user knows to shrink n or max_new.
// Returns the number of tokens written.
// The default number of sequences: BitDistiller's size (3,000 WikiText-2 and 5,000 Alpaca
// prompts, up to 1,024 new tokens each: --max-new's default).
#define DATA_FREE_N 8000

int64_t generate_data_free(Model *teacher, const Tokenizer *tok, int n, int batch, int max_new,
                           float temperature, float top_p, uint64_t seed, const char *out_path) {
    if (n < 1 || batch < 1 || max_new < 1) die("%s: n (%d), batch (%d) and max_new (%d) must be at least 1", out_path, n, batch, max_new);
    int V = teacher->cfg.vocab_size, bos = tok && tok->bos_id >= 0 ? tok->bos_id : teacher->cfg.bos_id;
    int model_eos = teacher->cfg.eos_id;
    if (tok && tok->eos_id >= 0) teacher->cfg.eos_id = tok->eos_id;
    int ctx = teacher->cfg.max_seq_len, start = bos >= 0 ? 2 : 1;  // ids before the sampled rest
    if (max_new > ctx - start + 1) max_new = ctx - start + 1;  // the whole row fits the context
    if (max_new < 1) die("%s: the teacher's context (%d) holds no generated token", out_path, ctx);
    if (batch > n) batch = n;
    int **prompt = malloc_or_die((size_t)batch * sizeof(int *), "prompts"), *plen = malloc_or_die((size_t)batch * sizeof(int), "prompts");
    int **out = malloc_or_die((size_t)batch * sizeof(int *), "batch"), *out_len = malloc_or_die((size_t)batch * sizeof(int), "batch");
    for (int b = 0; b < batch; b++) {
        prompt[b] = malloc_or_die(2 * sizeof(int), "prompt");
        out[b] = malloc_or_die((size_t)max_new * sizeof(int), "new tokens");
    }
    Rng rng = rng_seeded(seed);
    // the probe: 8 steps of one batch from BOS, timed (its tokens are not kept)
    for (int b = 0; b < batch; b++) { prompt[b][0] = bos >= 0 ? bos : 0; plen[b] = 1; }
    Rng probe_rng = rng_seeded(seed ^ 0x5eedULL);
    int probe_steps = max_new < 8 ? max_new : 8;
    double t0 = now_seconds();
    generate(teacher, prompt, plen, batch, probe_steps, temperature, top_p, &probe_rng, out, out_len);
    double per_step = (now_seconds() - t0) / probe_steps;
    char eta[32];
    format_eta(eta, sizeof eta, per_step * max_new * ((n + batch - 1) / batch));
    printf("generate: data-free (LLM-QAT): %d sequences of up to %d tokens from %s, %d at a time; "
           "estimated at most %s (probe: %.1f ms a step); --n and --max-new shrink it\n",
           n, max_new + start - 1, bos >= 0 ? "BOS" : "a uniform first token", batch, eta, 1e3 * per_step);
    AtomicFile af;
    atomic_open(&af, out_path);
    Buf line = {NULL, 0, 0};
    int64_t written = 0;
    t0 = now_seconds();
    for (int i0 = 0; i0 < n; i0 += batch) {
        int nb = n - i0 < batch ? n - i0 : batch;
        // the first token: p(x1 | BOS) at temperature 1, or uniform without a BOS
        for (int b = 0; b < nb; b++) { prompt[b][0] = bos; plen[b] = 1; }
        if (bos >= 0) {
            generate(teacher, prompt, plen, nb, 1, 1.0f, 1.0f, &rng, out, out_len);
            for (int b = 0; b < nb; b++) if (out_len[b] == 1) prompt[b][plen[b]++] = out[b][0];
        } else {
            for (int b = 0; b < nb; b++) prompt[b][0] = (int)(rng_u64(&rng) % (uint64_t)V);
        }
        // the rest at the sampling temperature
        for (int b = 0; b < nb; b++) out_len[b] = 0;
        int rest = max_new - 1;
        if (rest > 0) generate(teacher, prompt, plen, nb, rest, temperature, top_p, &rng, out, out_len);
        for (int b = 0; b < nb; b++) {
            line.n = 0;
            buf_put(&line, "{\"ids\": [", 9);
            int k = 0, ids[2 + max_new];
            for (int j = 0; j < plen[b]; j++) ids[k++] = prompt[b][j];
            for (int j = 0; j < out_len[b]; j++) ids[k++] = out[b][j];
            // EOS where the teacher stopped before its budget (an EOS drawn as the first token is
            // not kept: that sequence continues from BOS alone)
            if (teacher->cfg.eos_id >= 0 && out_len[b] < rest) ids[k++] = teacher->cfg.eos_id;
            for (int j = 0; j < k; j++) {
                char num[16];
                int l = snprintf(num, sizeof num, "%s%d", j ? ", " : "", ids[j]);
                buf_put(&line, num, (size_t)l);
            }
            buf_put(&line, "]", 1);
            if (tok) {  // the decoded text, for reading
                int *shown = malloc_or_die((size_t)k * sizeof(int), "ids"), ns = 0;
                for (int j = 0; j < k; j++) if (ids[j] < tok->n_vocab && tok->type[ids[j]] != SP_CONTROL) shown[ns++] = ids[j];
                size_t tl;
                char *text = tokenizer_decode(tok, shown, ns, &tl);
                buf_put(&line, ", \"text\": ", 10);
                json_put_string(&line, text, tl);
                free(text); free(shown);
            }
            buf_put(&line, "}\n", 2);
            atomic_write(&af, line.s, line.n);
            written += k;
        }
        double el = now_seconds() - t0, done = i0 + nb;
        char bar[64];
        format_bar(bar, 30, done / n);
        format_eta(eta, sizeof eta, el / done * (n - done));
        printf("generate: %s %d/%d sequences | %lld tokens | %.0f tok/s | ETA %s\n", bar, (int)done, n,
               (long long)written, written / (el > 0 ? el : 1e-9), eta);
        fflush(stdout);
    }
    atomic_commit(&af);
    printf("generate: wrote %d sequences to %s (%.1f tokens each)\n", n, out_path, (double)written / n);
    teacher->cfg.eos_id = model_eos;
    for (int b = 0; b < batch; b++) { free(prompt[b]); free(out[b]); }
    free(prompt); free(plen); free(out); free(out_len); free(line.s);
    return written;
}

// --generate TEXT: the model's continuation of one text (BOS + tokenize(text)), appended to
// *out as UTF-8; returns the number of new tokens. Stops at the tokenizer's EOS.
int generate_text(Model *m, const Tokenizer *tok, const char *text, int max_new, float temperature, float top_p,
                  uint64_t seed, Buf *out) {
    if (!tok) die("--generate needs the model's tokenizer (--tokenizer FILE, or MODEL.tokenizer beside the model)");
    size_t n = strlen(text);
    int *ids = malloc_or_die((3 * n + 2) * sizeof(int), "prompt ids"), *new_ids = malloc_or_die((size_t)max_new * sizeof(int), "new tokens");
    int len = tokenizer_encode(tok, text, n, TOK_ADD_BOS, ids, (int)(3 * n + 2)), n_new = 0;
    if (len < 1 || len >= m->cfg.max_seq_len) die("--generate: the text takes %d tokens, the model's context is %d", len, m->cfg.max_seq_len);
    int model_eos = m->cfg.eos_id;
    if (tok->eos_id >= 0) m->cfg.eos_id = tok->eos_id;
    Rng rng = rng_seeded(seed);
    generate(m, (int *const[]){ids}, &len, 1, max_new, temperature, top_p, &rng, (int *[]){new_ids}, &n_new);
    m->cfg.eos_id = model_eos;
    size_t rlen;
    char *resp = response_text(tok, ids, len, new_ids, n_new, &rlen);
    buf_put(out, resp, rlen);
    free(resp); free(ids); free(new_ids);
    return n_new;
}

// ============================================================================================
// C. Batches
//
// Where training batches come from: random windows of a token stream (--train-tokens, for
// pretraining), or the examples of a JSONL file (--data, as BitDistiller trains), every epoch in
// a new order. Micro-batch k of a run is a function of k and the sampler's state alone, so a
// resumed run, knowing how many micro-batches were consumed, sees the same batches.

typedef struct {
    const TokenStream *stream;  // one of the two
    const Dataset *examples;
    int mask_prompt;            // examples: no loss on prompt tokens
    uint64_t seed;              // examples: the epoch orders' seed
    int *order, order_epoch;    // examples: the order of epoch order_epoch (-1: none yet)
    int *idx;                   // [B] the examples of one micro-batch
} Batches;

static Batches batches_of_stream(const TokenStream *s) { return (Batches){s, NULL, 0, 0, NULL, -1, NULL}; }

static Batches batches_of_examples(const Dataset *d, int mask_prompt, uint64_t seed, int B) {
    Batches b = {NULL, d, mask_prompt, seed, malloc_or_die((size_t)d->n * sizeof(int), "epoch order"), -1,
                 malloc_or_die((size_t)B * sizeof(int), "batch")};
    return b;
}

static void batches_free(Batches *b) { free(b->order); free(b->idx); }

// Micro-batch k of the run into inputs/targets [B,T]: B windows drawn with rng from a stream;
// or examples kB .. kB+B-1 of the sequence (epoch 0's order, then epoch 1's, ...).
static void next_batch(Batches *src, int64_t k, Rng *rng, int *inputs, int *targets, int B, int T) {
    if (src->stream) { sample_batch(inputs, targets, src->stream, B, T, rng); return; }
    const Dataset *d = src->examples;
    for (int b = 0; b < B; b++) {
        int64_t pos = k * B + b;
        int epoch = (int)(pos / d->n);
        if (epoch != src->order_epoch) { dataset_epoch_order(d, src->seed, epoch, src->order); src->order_epoch = epoch; }
        src->idx[b] = src->order[pos % d->n];
    }
    dataset_batch(d, src->idx, B, src->mask_prompt, inputs, targets);
}

#endif

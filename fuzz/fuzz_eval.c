// Fuzz target: every evaluation file format (eval.c): PIQA, HellaSwag, WinoGrande, ARC-Easy,
// ARC-Challenge (JSONL; PIQA and WinoGrande with an optional label file), and the WikiText-2
// raw text; each loaded as --eval-qa / wikitext2: load it, and its requests tokenized and
// checked against a context of 64 tokens. Tokenizer: the tests' Llama-3-style BPE.
// Input: one selector byte (the format, 0..5 in that order), then the task file; for PIQA and
// WinoGrande a NUL byte, if any, separates the task file from its label file.
#include "fuzz.h"
#define TRAIN_NO_MAIN
#include "../train.c"

static Tokenizer tok;

static const char *const TASK[6] = {"piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "wikitext2"};
static const char *const FILE_OF[6] = {"piqa/valid.jsonl", "hellaswag/hellaswag_val.jsonl", "winogrande/dev.jsonl",
                                       "ARC-Easy/ARC-Easy-Test.jsonl", "ARC-Challenge/ARC-Challenge-Test.jsonl",
                                       "wiki.test.raw"};
static const char *const LABELS_OF[6] = {"piqa/valid-labels.lst", NULL, "winogrande/dev-labels.lst", NULL, NULL, NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!tok.n_vocab) tokenizer_load(&tok, fuzz_repo_file("tests/fixtures/tokenizer/bpe_tokenizer.json"));
    if (size < 1) return 0;
    int k = data[0] % 6;
    data++, size--;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/eval%d", fuzz_path(""), k);
    const uint8_t *nul = LABELS_OF[k] ? memchr(data, 0, size) : NULL;
    char name[128];
    snprintf(name, sizeof name, "eval%d/%s", k, FILE_OF[k]);
    fuzz_write(name, data, nul ? (size_t)(nul - data) : size);
    if (LABELS_OF[k]) {
        snprintf(name, sizeof name, "eval%d/%s", k, LABELS_OF[k]);
        if (nul) fuzz_write(name, nul + 1, size - (size_t)(nul + 1 - data));
        else fuzz_unlink_file(name);
    }
    if (k == 5) {
        FUZZ_RUN(int64_t n; int *ids = wikitext2_tokens(&tok, dir, &n); free(ids));
    } else {
        FUZZ_RUN(QaTask t; qa_load(&t, TASK[k], dir, 0); qa_encode(&t, &tok, 1); qa_check_fits(&t, 64);
                 qa_task_free(&t));
    }
    return 0;
}

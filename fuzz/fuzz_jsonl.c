// Fuzz target: training data in JSONL (data.c dataset_load: the three example forms), then the
// split and a batch with and without prompt masking. Tokenizer: the tests' Llama-3-style BPE.
// Input: one byte choosing the row length (2 to 33 tokens), then the file.
#include "fuzz.h"
#define TRAIN_NO_MAIN
#include "../train.c"
#include "../lib/data.c"

static Tokenizer tok;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!tok.n_vocab) tokenizer_load(&tok, fuzz_repo_file("tests/fixtures/tokenizer/bpe_tokenizer.json"));
    if (size < 1) return 0;
    int seq = 2 + data[0] % 32;
    const char *path = fuzz_write("train.jsonl", data + 1, size - 1);
    FUZZ_RUN(Dataset d, tr, ev; dataset_load(&d, path, &tok, seq, tok.n_vocab);
             dataset_split(&d, &tr, &ev);
             int *idx = malloc_or_die((size_t)d.n * sizeof(int), "idx");
             int *in = malloc_or_die((size_t)d.n * seq * sizeof(int), "in"), *tg = malloc_or_die((size_t)d.n * seq * sizeof(int), "tg");
             dataset_epoch_order(&d, 1, 0, idx);
             dataset_batch(&d, idx, d.n, 0, in, tg);
             dataset_batch(&d, idx, d.n, 1, in, tg));
    return 0;
}

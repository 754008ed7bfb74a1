// Fuzz target: a UTF-8 text file given to --train-tokens / --eval-ppl / --calib (train.c
// load_tokens), tokenized by a SentencePiece model with byte fallback (fuzz/seeds/) or the
// tests' Llama-3-style BPE, and decoded back. Input: one selector byte (even: SentencePiece,
// odd: BPE), then the text (any bytes: invalid UTF-8 included).
#include "fuzz.h"
#define TRAIN_NO_MAIN
#include "../train.c"

static Tokenizer tok[2];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!tok[0].n_vocab) {
        tokenizer_load(&tok[0], fuzz_repo_file("fuzz/seeds/tokenizer_model/spm_bytes.model"));
        tokenizer_load(&tok[1], fuzz_repo_file("tests/fixtures/tokenizer/bpe_tokenizer.json"));
    }
    if (size < 1) return 0;
    const Tokenizer *t = &tok[data[0] & 1];
    const char *path = fuzz_write("text.txt", data + 1, size - 1);
    FUZZ_RUN(TokenStream s = load_tokens(path, t, t->n_vocab); size_t len;
             char *back = tokenizer_decode(t, s.ids, (int)s.n, &len); free(back); free(s.ids));
    return 0;
}

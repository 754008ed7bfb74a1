// Fuzz target: a token-id file (.ids, train.c load_tokens / load_ids) for a vocabulary of 1000.
#include "fuzz.h"
#define TRAIN_NO_MAIN
#include "../train.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("tokens.ids", data, size);
    FUZZ_RUN(TokenStream s = load_tokens(path, NULL, 1000); free(s.ids));
    return 0;
}

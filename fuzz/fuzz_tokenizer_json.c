// Fuzz target: a Hugging Face tokenizer.json (byte-level BPE), through tokenizer.c's loader,
// encoder and decoder. Input: the file.
#include "fuzz_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_tokenizer("tokenizer.json", data, size);
    return 0;
}

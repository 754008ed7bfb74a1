// Fuzz target: a tokenizer.model (SentencePiece protobuf, or tiktoken ranks) and llama2.c's
// tokenizer.bin, through tokenizer.c's loader, encoder and decoder. Input: the file.
#include "fuzz_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_tokenizer("tokenizer.model", data, size);
    return 0;
}

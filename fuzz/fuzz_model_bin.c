// Fuzz target: the model file (.bin) through train.c's loader, header to tensors (model.h
// model_load, then model_setup). Input: the file.
#include "fuzz.h"
#define TRAIN_NO_MAIN
#include "../train.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("model.bin", data, size);
    FUZZ_RUN(Model m; model_open(&m, path); model_free(&m));
    return 0;
}

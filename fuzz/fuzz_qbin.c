// Fuzz target: a packed low-bit model (.qbin, train.c load_packed): header, packed codes,
// fp16 scales, dequantization. Input: the file.
#include "fuzz.h"
#define TRAIN_NO_MAIN
#include "../train.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("model.qbin", data, size);
    FUZZ_RUN(Model m; load_packed(&m, path); model_free(&m));
    return 0;
}

// Fuzz target: a training checkpoint given to --resume (train.c checkpoint_load). Input: one
// selector byte (which micro student resumes: 0 full precision, 1 int 2-bit, 2 onebit; see
// micro.h), then the checkpoint file.
#include "fuzz.h"
#define TRAIN_NO_MAIN
#include "../train.c"
#include "micro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int v = data[0] % 3;
    const char *path = fuzz_write("resume.ckpt", data + 1, size - 1);
    FUZZ_RUN(Model m; micro_model(&m, v, 7 + v); TrainState st = micro_state(v);
             checkpoint_load(path, &m, &st); model_free(&m));
    return 0;
}

// Fuzz target: a sharded checkpoint's model.safetensors.index.json (convert.c open_shards and
// read_hf_weights): its weight_map sends each tensor of the micro model (micro.h) to one of two
// valid shards written once at start-up. Input: the index file.
#include "fuzz.h"
#define CONVERT_NO_MAIN
#include "../convert.c"
#include "micro.h"

static char dir[512];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) {
        ModelHeader c = micro_header(0);
        int64_t n = tensor_sizes(&c, (int64_t[N_TENSORS]){0});
        float *w = malloc_or_die((size_t)n * sizeof(float), "weights");
        for (int64_t i = 0; i < n; i++) w[i] = 0.01f * (float)(i % 17) - 0.08f;
        snprintf(dir, sizeof dir, "%s", fuzz_path("hf"));
        fuzz_write("hf/placeholder", "", 0);
        char p[600];
        snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
        write_hf(&c, w, p, ST_F32, 0, 5);
        snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
        write_hf(&c, w, p, ST_BF16, 5, 1000);
        free(w);
    }
    fuzz_write("hf/model.safetensors.index.json", data, size);
    FUZZ_RUN(ModelHeader c = micro_header(0); float *p = read_hf_weights(dir, &c); free(p));
    return 0;
}

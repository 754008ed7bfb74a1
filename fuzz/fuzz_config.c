// Fuzz target: a Hugging Face config.json (convert.c read_config), both the classic and the
// transformers 5 (rope_parameters) forms. Input: the file.
#include "fuzz.h"
#define CONVERT_NO_MAIN
#include "../convert.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_write("hf/config.json", data, size);
    char dir[512];
    snprintf(dir, sizeof dir, "%s", fuzz_path("hf"));
    FUZZ_RUN(ModelHeader c = read_config(dir); (void)c);
    return 0;
}

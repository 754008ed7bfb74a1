// Fuzz target: a safetensors file (safetensors.h st_open, then every tensor read as float or
// integer). Input: the file.
#include "fuzz.h"
#include "../lib/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write("model.safetensors", data, size);
    FUZZ_RUN(SafeTensors st; st_open(&st, path);
             for (int i = 0; i < st.n; i++) {
                 const StTensor *t = st_find(&st, st.t[i].name);
                 void *dst = malloc_or_die((size_t)t->numel * 4, "tensor");
                 if (t->dtype == ST_I32 || t->dtype == ST_I64) st_read_i32(&st, t, dst);
                 else st_read_f32(&st, t, dst);
                 free(dst);
             }
             st_close(&st));
    return 0;
}

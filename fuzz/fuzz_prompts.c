// Fuzz target: the prompt sources of teacher-generated data (data.c prompts_load). Input: one
// selector byte, then
//   0, 1, 2: a file read as wikitext:, alpaca: or text: (all of its prompts);
//   3:       a source spec ("text:a=2,alpaca:b,wikitext:c", ...) with the n_total of the next
//            byte, run in a folder holding valid files a (text), b (alpaca JSON) and c (WikiText).
#include "fuzz.h"
#define TRAIN_NO_MAIN
#include "../train.c"
#include "../lib/data.c"

static const char *const KINDS[3] = {"wikitext", "alpaca", "text"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready;
    if (!ready) {
        fuzz_write("a", "first prompt\nsecond prompt\n\nthird\n", 35);
        const char *alp = "[{\"instruction\": \"Say hi\", \"input\": \"\", \"output\": \"hi\"},"
                          " {\"instruction\": \"Add\", \"input\": \"1 2\"}]";
        fuzz_write("b", alp, strlen(alp));
        char wiki[700];
        memset(wiki, 'x', sizeof wiki);
        memcpy(wiki, " = Title = \n", 12);
        wiki[sizeof wiki - 1] = '\n';
        fuzz_write("c", wiki, sizeof wiki);
        ready = 1;
    }
    if (size < 2) return 0;
    int mode = data[0] % 4;
    char spec[4200];
    int n_total = 0;
    if (mode < 3) {
        const char *path = fuzz_write("in", data + 1, size - 1);
        snprintf(spec, sizeof spec, "%s:%s", KINDS[mode], path);
    } else {
        n_total = data[1] - 16;
        size_t n = size - 2 < sizeof spec - 1 ? size - 2 : sizeof spec - 1;
        memcpy(spec, data + 2, n);
        spec[n] = 0;
    }
    int here = open(".", O_RDONLY);  // the spec's relative paths are files of fuzz_dir
    if (here < 0 || chdir(fuzz_dir) != 0) abort();
    FUZZ_RUN(Prompts p; prompts_load(&p, spec, n_total, 42); prompts_free(&p));
    if (fchdir(here) != 0) abort();
    close(here);
    return 0;
}

// Fuzz target: the command line of ./train (train.c parse_args). Input: the arguments,
// separated by NUL bytes. -h/--help print the usage and exit 0 by design; inputs holding them
// are skipped.
#include "fuzz.h"
#define TRAIN_NO_MAIN
#include "../train.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = (malloc)(size + 1);  // outside the tracker: argv must outlive FUZZ_RUN's start
    memcpy(buf, data, size);
    buf[size] = 0;
    char *argv[65] = {"train"};
    int argc = 1;
    for (size_t i = 0; i <= size && argc < 64;) {
        argv[argc++] = buf + i;
        i += strlen(buf + i) + 1;
    }
    argv[argc] = NULL;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) { (free)(buf); return 0; }
    FUZZ_RUN(Args a = parse_args(argc, argv); (void)a);
    (free)(buf);
    return 0;
}

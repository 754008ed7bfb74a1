// fuzz/fuzz.h — what every fuzz target shares. Include it FIRST, before any project file.
//
// A target is one translation unit: this header, the project sources it reads with (e.g.
// `#define TRAIN_NO_MAIN` + `#include "../train.c"`), and LLVMFuzzerTestOneInput. Built with
// -DFUZZING, die() (util.h) jumps back to the target instead of exiting (FUZZ_RUN below).
//
// A rejected input leaves behind whatever the reader had allocated or opened when it died.
// Millions of inputs later that would be gigabytes and no file descriptors left, so here every
// malloc/calloc/realloc/strdup/free and fopen/fclose of the project code is routed through a
// small tracker (the macros at the end): FUZZ_RUN frees and closes whatever an input left.
// Allocations made outside FUZZ_RUN (a target's fixed tokenizer or model) are kept.
#ifndef FUZZ_H
#define FUZZ_H
#define _XOPEN_SOURCE 700  // nftw
#define _DEFAULT_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef FUZZING
#error "fuzz targets are built with -DFUZZING (make fuzz-NAME)"
#endif

typedef struct FuzzBlock {
    struct FuzzBlock *prev, *next;
    size_t size, tracked;  // tracked: allocated inside FUZZ_RUN, freed at its end
} FuzzBlock;               // 32 bytes: the user pointer stays 16-byte aligned

static FuzzBlock fuzz_live = {&fuzz_live, &fuzz_live, 0, 0};
static int fuzz_tracking;
static FILE *fuzz_files[1024];
static int fuzz_n_files;

static void fuzz_link(FuzzBlock *b) { b->prev = &fuzz_live; b->next = fuzz_live.next; fuzz_live.next->prev = b; fuzz_live.next = b; }
static void fuzz_unlink(FuzzBlock *b) { b->prev->next = b->next; b->next->prev = b->prev; }

static void *fuzz_malloc(size_t n) {
    if (n > SIZE_MAX / 2) return NULL;
    FuzzBlock *b = (malloc)(sizeof *b + n);
    if (!b) return NULL;
    b->size = n;
    b->tracked = fuzz_tracking;
    if (b->tracked) fuzz_link(b);
    return b + 1;
}

static void fuzz_free(void *p) {
    if (!p) return;
    FuzzBlock *b = (FuzzBlock *)p - 1;
    if (b->tracked) fuzz_unlink(b);
    (free)(b);
}

static void *fuzz_calloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / 2 / size) return NULL;
    void *p = fuzz_malloc(count * size);
    if (p) memset(p, 0, count * size);
    return p;
}

static void *fuzz_realloc(void *p, size_t n) {
    if (!p) return fuzz_malloc(n);
    if (n > SIZE_MAX / 2) return NULL;
    FuzzBlock *b = (FuzzBlock *)p - 1;
    size_t tracked = b->tracked;
    if (tracked) fuzz_unlink(b);
    FuzzBlock *nb = (realloc)(b, sizeof *b + n);
    if (!nb) { if (tracked) fuzz_link(b); return NULL; }
    nb->size = n;
    if (tracked) fuzz_link(nb);
    return nb + 1;
}

static char *fuzz_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = fuzz_malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

static FILE *fuzz_fopen(const char *path, const char *mode) {
    FILE *f = (fopen)(path, mode);
    if (f && fuzz_tracking) {
        if (fuzz_n_files == (int)(sizeof fuzz_files / sizeof fuzz_files[0])) abort();  // a reader leaking files
        fuzz_files[fuzz_n_files++] = f;
    }
    return f;
}

static int fuzz_fclose(FILE *f) {
    for (int i = 0; i < fuzz_n_files; i++)
        if (fuzz_files[i] == f) { fuzz_files[i] = fuzz_files[--fuzz_n_files]; break; }
    return (fclose)(f);
}

// Frees and closes everything the last input left behind.
static void fuzz_reset(void) {
    while (fuzz_n_files) (fclose)(fuzz_files[--fuzz_n_files]);
    while (fuzz_live.next != &fuzz_live) {
        FuzzBlock *b = fuzz_live.next;
        fuzz_unlink(b);
        (free)(b);
    }
    fuzz_tracking = 0;
}

// ---------------------------------------------------------------------------------------
// Input files. Readers take paths, so an input is written to a file in a private folder
// (on /dev/shm when there is one) and the reader is given its path.

static char fuzz_dir[256];

static int fuzz_rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) { return remove(p); }
static void fuzz_rm_dir(void) { if (fuzz_dir[0]) nftw(fuzz_dir, fuzz_rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

static const char *fuzz_path(const char *name) {
    static char p[512];
    if (!fuzz_dir[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_dir, sizeof fuzz_dir, "%s/bdfuzz.%d", base, (int)getpid());
        mkdir(fuzz_dir, 0700);
        atexit(fuzz_rm_dir);
    }
    snprintf(p, sizeof p, "%s/%s", fuzz_dir, name);
    return p;
}

// Writes data to fuzz_dir/name (sub-folders created) and returns the path.
static const char *fuzz_write(const char *name, const void *data, size_t n) {
    const char *p = fuzz_path(name);
    for (char *s = strchr((char *)p + strlen(fuzz_dir) + 1, '/'); s; s = strchr(s + 1, '/')) {
        *s = 0;
        mkdir(p, 0700);
        *s = '/';
    }
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) { perror(p); abort(); }
    for (size_t off = 0; off < n;) {
        ssize_t k = write(fd, (const char *)data + off, n - off);
        if (k <= 0) { perror(p); abort(); }
        off += (size_t)k;
    }
    close(fd);
    return p;
}

static void fuzz_unlink_file(const char *name) { unlink(fuzz_path(name)); }

// A file of the repository (a fixture): FUZZ_ROOT/rel, FUZZ_ROOT being set by fuzz/run.sh
// (libFuzzer runs in a folder of its own), else relative to the current folder.
static const char *fuzz_repo_file(const char *rel) {
    static char p[4096];
    const char *root = getenv("FUZZ_ROOT");
    snprintf(p, sizeof p, "%s/%s", root ? root : ".", rel);
    return p;
}

// FUZZ_VERBOSE=1 in the environment: each input's fate on stderr ("accepted", or "rejected: "
// and die()'s message), to check that the seeds are accepted and what a regression file hits.
static int fuzz_verbose(void) {
    static int v = -1;
    if (v < 0) v = getenv("FUZZ_VERBOSE") != NULL;
    return v;
}

// Runs the statements given with die() returning here: FUZZ_RUN({ model_load(path, &c); }). Returns nothing;
// g_die_msg holds the reason when the input was rejected.
#define FUZZ_RUN(...)                                \
    do {                                             \
        jmp_buf fuzz_jb_;                            \
        fuzz_tracking = 1;                           \
        g_die_msg[0] = 0;                            \
        if (!setjmp(fuzz_jb_)) {                     \
            g_die_jmp = &fuzz_jb_;                   \
            __VA_ARGS__;                             \
        }                                            \
        g_die_jmp = NULL;                            \
        fuzz_reset();                                \
        if (fuzz_verbose())                          \
            fprintf(stderr, "%s%s\n", g_die_msg[0] ? "rejected: " : "accepted", g_die_msg); \
    } while (0)

// The project's allocation and file calls from here on go through the tracker.
#define malloc(n) fuzz_malloc(n)
#define calloc(c, s) fuzz_calloc(c, s)
#define realloc(p, n) fuzz_realloc(p, n)
#define free(p) fuzz_free(p)
#define strdup(s) fuzz_strdup(s)
#define fopen(p, m) fuzz_fopen(p, m)
#define fclose(f) fuzz_fclose(f)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif

// util.h — the few checking wrappers every program here uses (and json_quote, for their
// JSON result lines).
//
// Bad input must end in one line on stderr naming the file and the problem, and exit
// status 1: never a crash, never silently wrong numbers. These wrappers are how.
// Files are written atomically: to "path.tmp", then renamed over "path", so a reader
// (or a crash in the middle) sees either the old file or the new one, never half of one.
#ifndef UTIL_H
#define UTIL_H

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// s as a JSON string, quotes included, into dst[n] (n >= 3): '"', '\' and control bytes
// escaped, the other bytes as they are; when dst is too small, cut short before a whole UTF-8
// character and still closed. For the file names in the programs' JSON result lines (a fixed
// buffer each); data.c's json_put_string writes the generated text of --generate-data's JSONL into
// a growing one, and also replaces invalid UTF-8, which a cut response can end in. Returns dst.
static const char *json_quote(char *dst, size_t n, const char *s) {
    size_t o = 0;
    dst[o++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char e[8] = {(char)c, 0};
        if (c == '"' || c == '\\') e[0] = '\\', e[1] = (char)c, e[2] = 0;
        else if (c < 0x20) snprintf(e, sizeof e, "\\u%04x", c);
        size_t l = strlen(e);
        if (o + l + 2 > n) {  // no room for it and the closing quote
            if ((c & 0xC0) == 0x80) {  // inside a character: drop its bytes written so far
                while (o > 1 && ((unsigned char)dst[o - 1] & 0xC0) == 0x80) o--;
                if (o > 1 && (unsigned char)dst[o - 1] >= 0xC0) o--;
            }
            break;
        }
        memcpy(dst + o, e, l);
        o += l;
    }
    dst[o++] = '"';
    dst[o] = 0;
    return dst;
}

// die("%s: not a model file", path) prints "error: <message>" and exits 1.
// Atomic writers register their temp file, so that dying mid-write leaves nothing behind.
static char g_tmp_to_remove[4096];

// Fuzzing (fuzz/, built with -DFUZZING): a fuzz target feeds one input after another to a
// reader in the same process, so a rejected input must not exit. The target points
// g_die_jmp at a setjmp of its own; die() then keeps the message in g_die_msg and jumps
// back there instead of exiting. This is the only difference of a fuzzing build.
#ifdef FUZZING
#include <setjmp.h>
static jmp_buf *g_die_jmp;
static char g_die_msg[1024];
#endif

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
#ifdef FUZZING
    if (g_die_jmp) {
        vsnprintf(g_die_msg, sizeof g_die_msg, fmt, ap);
        va_end(ap);
        if (g_tmp_to_remove[0]) remove(g_tmp_to_remove);
        g_tmp_to_remove[0] = 0;
        longjmp(*g_die_jmp, 1);
    }
#endif
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (g_tmp_to_remove[0]) remove(g_tmp_to_remove);
    exit(1);
}

static void *malloc_or_die(size_t n, const char *what) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory allocating %zu bytes for %s", n, what);
    return p;
}

static void *calloc_or_die(size_t count, size_t size, const char *what) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes for %s", count, size, what);
    return p;
}

// (A folder opens for reading too, and then reads as an error or an endless file: refused.)
static FILE *fopen_or_die(const char *path, const char *mode) {
    FILE *f = fopen(path, mode);
    if (!f) die("%s: cannot open (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        die("%s: a folder, not a file", path);
    }
    return f;
}

// Reads exactly n bytes or dies naming the file: a short read means a truncated file.
static void fread_exact(void *dst, size_t n, FILE *f, const char *path) {
    if (n && fread(dst, 1, n, f) != n)
        die("%s: truncated file (wanted %zu more bytes)", path, n);
}

static void fwrite_or_die(const void *src, size_t n, FILE *f, const char *path) {
    if (n && fwrite(src, 1, n, f) != n) die("%s: write failed (%s)", path, strerror(errno));
}

static int64_t file_size_or_die(FILE *f, const char *path) {
    if (fseek(f, 0, SEEK_END) != 0) die("%s: cannot seek (%s)", path, strerror(errno));
    long n = ftell(f);
    if (n < 0) die("%s: cannot tell size (%s)", path, strerror(errno));
    if (fseek(f, 0, SEEK_SET) != 0) die("%s: cannot seek (%s)", path, strerror(errno));
    return (int64_t)n;
}

// Whole file into memory, NUL-terminated (so text parsers may rely on it).
static char *read_file_or_die(const char *path, size_t *len) {
    FILE *f = fopen_or_die(path, "rb");
    int64_t n = file_size_or_die(f, path);
    char *buf = malloc_or_die((size_t)n + 1, path);
    fread_exact(buf, (size_t)n, f, path);
    fclose(f);
    buf[n] = 0;
    if (len) *len = (size_t)n;
    return buf;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// ----------------------------------------------------------------------------
// Outputs. A program checks every path it will write before it starts its work, so that a
// slip on the command line costs nothing: the path must be a regular file or not exist yet
// (the rename of an atomic write would replace a device, a FIFO or a socket by a regular file,
// and opening a FIFO for writing blocks until a reader comes), its temp file likewise, and its
// folder must exist. A path of a stream (--log) may also be a device or a FIFO (stream = 1).
static void output_check(const char *path, int stream) {
    struct stat st;
    if (!path[0]) die("an output path is empty");
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) die("%s: a folder, not a file to write", path);
        if (!S_ISREG(st.st_mode) && !stream) die("%s: not a regular file (a device, FIFO or socket); give a file to write", path);
    }
    char tmp[4096 + 8];
    if (strlen(path) > 4096) die("%s: path too long", path);
    if (!stream) {
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        if (lstat(tmp, &st) == 0 && !S_ISREG(st.st_mode)) die("%s: not a regular file, and it is where %s is written first", tmp, path);
    }
    snprintf(tmp, sizeof tmp, "%s", path);  // the folder: everything before the last '/'
    char *slash = strrchr(tmp, '/');
    if (!slash) return;
    if (slash == tmp) slash[1] = 0;
    else *slash = 0;
    if (stat(tmp, &st) != 0 || !S_ISDIR(st.st_mode)) die("%s: the folder %s does not exist", path, tmp);
}

// The last thing a program does: its results went to stdout, and a failed write (a full disk,
// a closed pipe) must not pass for success.
static void stdout_check(void) {
    int err = fflush(stdout) != 0 ? errno : 0;
    if (ferror(stdout)) die("stdout: write failed%s%s%s", err ? " (" : "", err ? strerror(err) : "", err ? ")" : "");
}

// ----------------------------------------------------------------------------
// Atomic file writing: open "path.tmp", write, then commit = flush + fsync-free close +
// rename. Any die() in between removes the temp file.

typedef struct {
    FILE *f;
    char path[4096];
    char tmp[4096];
} AtomicFile;

static void atomic_open(AtomicFile *a, const char *path) {
    if (strlen(path) + 5 > sizeof a->path) die("%s: path too long", path);
    snprintf(a->path, sizeof a->path, "%s", path);
    snprintf(a->tmp, sizeof a->tmp, "%s.tmp", path);
    output_check(path, 0);
    a->f = fopen(a->tmp, "wb");
    if (!a->f) die("%s: cannot create (%s)", a->tmp, strerror(errno));
    snprintf(g_tmp_to_remove, sizeof g_tmp_to_remove, "%s", a->tmp);
}

static void atomic_write(AtomicFile *a, const void *src, size_t n) {
    fwrite_or_die(src, n, a->f, a->tmp);
}

static void atomic_commit(AtomicFile *a) {
    if (fflush(a->f) != 0 || ferror(a->f)) die("%s: write failed (%s)", a->tmp, strerror(errno));
    if (fclose(a->f) != 0) die("%s: close failed (%s)", a->tmp, strerror(errno));
    a->f = NULL;
    if (rename(a->tmp, a->path) != 0) die("%s: cannot rename into place (%s)", a->path, strerror(errno));
    g_tmp_to_remove[0] = 0;
}

// A copy of the file src at dst, written atomically like every other output.
static void copy_file_atomic(const char *src, const char *dst) {
    size_t len;
    char *bytes = read_file_or_die(src, &len);
    AtomicFile a;
    atomic_open(&a, dst);
    atomic_write(&a, bytes, len);
    atomic_commit(&a);
    free(bytes);
}

// ----------------------------------------------------------------------------
// 16-bit floats. bf16 is the top half of an fp32 (same exponent range); fp16 has a 5-bit
// exponent. Hugging Face checkpoints come in both; we compute in fp32.

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Round to nearest, ties to even (what torch does in .to(torch.bfloat16)); NaN stays NaN.
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static inline float fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    uint32_t u;
    if (exp == 0x1f) u = sign | 0x7f800000u | (man << 13);            // inf / nan
    else if (exp != 0) u = sign | ((exp + 112) << 23) | (man << 13);  // normal
    else if (man == 0) u = sign;                                      // zero
    else {                                                            // subnormal: normalise
        int e = -1;
        do { man <<= 1; e++; } while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Round to nearest even; overflow goes to inf, tiny values to subnormals or zero.
static inline uint16_t f32_to_fp16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00);            // nan
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);           // >= 65520 rounds to inf
    if (a < 0x38800000u) {                                            // below 2^-14: subnormal
        float af;
        memcpy(&af, &a, 4);
        // subnormal step is 2^-24; nearbyintf rounds half to even in the default mode
        return (uint16_t)(sign | (uint32_t)nearbyintf(af * 16777216.0f));
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1);                        // round mantissa to 10 bits
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

#endif

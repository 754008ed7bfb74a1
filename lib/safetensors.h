// safetensors.h — read and write Hugging Face safetensors files.
//
// The format: an 8-byte little-endian header length N, then N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {...}}
// then the data; offsets count from the end of the header. The reader trusts nothing: the
// header length fits the file, the JSON is well formed, every dtype is known, every shape times
// its element size equals its byte range, every range lies inside the data, no two overlap,
// no name repeats, and (as the format requires) the ranges tile the data with no hole and no
// trailing bytes. Only then are sizes computed from the header used.
//
//   SafeTensors st;
//   st_open(&st, "model.safetensors");          // dies with "error: FILE: problem" if invalid
//   const StTensor *t = st_find(&st, "model.norm.weight");
//   float *w = malloc_or_die(t->numel * sizeof(float), "w");
//   st_read_f32(&st, t, w);                     // F32, BF16 or F16 -> fp32
//   st_close(&st);
#ifndef SAFETENSORS_H
#define SAFETENSORS_H

#include "json.h"
#include "util.h"

enum { ST_F32, ST_BF16, ST_F16, ST_I32, ST_I64, ST_N_DTYPES };
static const char *const ST_DTYPE_NAMES[ST_N_DTYPES] = {"F32", "BF16", "F16", "I32", "I64"};
static const int ST_DTYPE_SIZE[ST_N_DTYPES] = {4, 2, 2, 4, 8};

#define ST_MAX_DIMS 8

typedef struct {
    char *name;
    int dtype, ndim;            // dtype: ST_F32 ...
    int64_t shape[ST_MAX_DIMS];
    int64_t numel, begin, end;  // element count; byte range [begin, end) within the data section
} StTensor;

typedef struct {
    char path[4096];
    FILE *f;                    // kept open; tensors are read on demand
    int64_t data_start, data_size;  // the data section: file offset and length in bytes
    int n;                      // number of tensors (__metadata__ excluded)
    StTensor *t;
} SafeTensors;

static int st_cmp_begin(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static void st_open(SafeTensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    snprintf(st->path, sizeof st->path, "%s", path);
    st->f = fopen_or_die(path, "rb");
    int64_t fsize = file_size_or_die(st->f, path);
    uint8_t lenbytes[8];
    if (fsize < 8) die("%s: truncated safetensors file (no header length)", path);
    fread_exact(lenbytes, 8, st->f, path);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenbytes[i];
    if (hlen > (uint64_t)(fsize - 8) || hlen > (100u << 20))
        die("%s: safetensors header length %llu does not fit the file (%lld bytes)", path, (unsigned long long)hlen, (long long)fsize);
    char *text = malloc_or_die((size_t)hlen + 1, path);
    fread_exact(text, (size_t)hlen, st->f, path);
    text[hlen] = 0;
    st->data_start = 8 + (int64_t)hlen;
    st->data_size = fsize - st->data_start;
    char err[256];
    Json *j = json_parse(text, (size_t)hlen, err, sizeof err);
    free(text);
    if (!j) die("%s: malformed safetensors header: %s", path, err);
    if (j->type != JSON_OBJECT) die("%s: safetensors header is not a JSON object", path);
    st->t = calloc_or_die((size_t)j->n, sizeof(StTensor), path);
    for (int i = 0; i < j->n; i++) {
        const char *name = j->keys[i];
        const Json *v = &j->items[i];
        if (!strcmp(name, "__metadata__")) {
            if (v->type != JSON_OBJECT) die("%s: __metadata__ is not an object", path);
            continue;
        }
        for (int k = 0; k < st->n; k++)
            if (!strcmp(st->t[k].name, name)) die("%s: tensor '%s' appears twice in the header", path, name);
        if (v->type != JSON_OBJECT) die("%s: tensor '%s': entry is not an object", path, name);
        StTensor *t = &st->t[st->n];
        const char *dt = json_get_string(v, "dtype");
        t->dtype = -1;
        for (int d = 0; dt && d < ST_N_DTYPES; d++) if (!strcmp(dt, ST_DTYPE_NAMES[d])) t->dtype = d;
        if (t->dtype < 0) die("%s: tensor '%s': unsupported dtype %s", path, name, dt ? dt : "(missing)");
        const Json *shape = json_get(v, "shape"), *off = json_get(v, "data_offsets");
        if (!shape || shape->type != JSON_ARRAY || shape->n > ST_MAX_DIMS) die("%s: tensor '%s': bad shape", path, name);
        t->ndim = shape->n;
        t->numel = 1;
        for (int d = 0; d < shape->n; d++) {
            double x = shape->items[d].number;
            if (shape->items[d].type != JSON_NUMBER || x < 0 || x > 1e12 || x != (double)(int64_t)x)
                die("%s: tensor '%s': bad shape", path, name);
            t->shape[d] = (int64_t)x;
            if (t->shape[d] && t->numel > ((int64_t)1 << 40) / t->shape[d]) die("%s: tensor '%s': shape too large", path, name);
            t->numel *= t->shape[d];
        }
        if (!off || off->type != JSON_ARRAY || off->n != 2 || off->items[0].type != JSON_NUMBER || off->items[1].type != JSON_NUMBER)
            die("%s: tensor '%s': bad data_offsets", path, name);
        double b = off->items[0].number, e = off->items[1].number;
        if (b < 0 || e < b || e > (double)st->data_size || b != (double)(int64_t)b || e != (double)(int64_t)e)
            die("%s: tensor '%s': data_offsets [%.0f, %.0f] outside the data (%lld bytes)", path, name, b, e, (long long)st->data_size);
        t->begin = (int64_t)b;
        t->end = (int64_t)e;
        if (t->end - t->begin != t->numel * ST_DTYPE_SIZE[t->dtype])
            die("%s: tensor '%s': %lld bytes for %lld elements of %s", path, name, (long long)(t->end - t->begin),
                (long long)t->numel, ST_DTYPE_NAMES[t->dtype]);
        t->name = strdup(name);
        if (!t->name) die("%s: out of memory", path);
        st->n++;
    }
    json_free(j);
    // Sorted by start, the ranges must follow each other exactly: a start before the previous
    // end is an overlap, one after it a hole. (Comparing neighbours suffices: if no neighbours
    // overlap, the ends increase too, so the previous end is the largest so far.)
    StTensor *sorted = malloc_or_die((size_t)st->n * sizeof(StTensor), path);
    memcpy(sorted, st->t, (size_t)st->n * sizeof(StTensor));
    qsort(sorted, (size_t)st->n, sizeof(StTensor), st_cmp_begin);
    int64_t covered = 0;
    for (int i = 0; i < st->n; i++) {
        if (i > 0 && sorted[i].begin < sorted[i - 1].end)
            die("%s: tensors '%s' and '%s' overlap", path, sorted[i - 1].name, sorted[i].name);
        if (sorted[i].begin > covered)
            die("%s: data bytes [%lld, %lld) belong to no tensor (a hole before '%s')", path, (long long)covered,
                (long long)sorted[i].begin, sorted[i].name);
        covered = sorted[i].end;
    }
    if (covered != st->data_size)
        die("%s: %lld bytes after the last tensor's data (file longer than its header says)", path,
            (long long)(st->data_size - covered));
    free(sorted);
}

static void st_close(SafeTensors *st) {
    if (st->f) fclose(st->f);
    for (int i = 0; i < st->n; i++) free(st->t[i].name);
    free(st->t);
    memset(st, 0, sizeof *st);
}

static const StTensor *st_find(const SafeTensors *st, const char *name) {
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->t[i].name, name)) return &st->t[i];
    return NULL;
}

// Reads a float tensor (F32, BF16 or F16) into fp32.
static void st_read_f32(const SafeTensors *st, const StTensor *t, float *dst) {
    if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16)
        die("%s: tensor '%s' is %s, expected a float type", st->path, t->name, ST_DTYPE_NAMES[t->dtype]);
    if (fseek(st->f, (long)(st->data_start + t->begin), SEEK_SET) != 0) die("%s: cannot seek", st->path);
    if (t->dtype == ST_F32) { fread_exact(dst, (size_t)t->numel * 4, st->f, st->path); return; }
    uint16_t buf[8192];
    for (int64_t i = 0; i < t->numel; i += 8192) {
        int64_t m = t->numel - i < 8192 ? t->numel - i : 8192;
        fread_exact(buf, (size_t)m * 2, st->f, st->path);
        for (int64_t k = 0; k < m; k++) dst[i + k] = t->dtype == ST_BF16 ? bf16_to_f32(buf[k]) : fp16_to_f32(buf[k]);
    }
}

// Reads an integer tensor (I32 or I64, values must fit int32) into int32.
static void st_read_i32(const SafeTensors *st, const StTensor *t, int32_t *dst) {
    if (t->dtype != ST_I32 && t->dtype != ST_I64) die("%s: tensor '%s' is not an integer tensor", st->path, t->name);
    if (fseek(st->f, (long)(st->data_start + t->begin), SEEK_SET) != 0) die("%s: cannot seek", st->path);
    if (t->dtype == ST_I32) { fread_exact(dst, (size_t)t->numel * 4, st->f, st->path); return; }
    int64_t buf[4096];
    for (int64_t i = 0; i < t->numel; i += 4096) {
        int64_t m = t->numel - i < 4096 ? t->numel - i : 4096;
        fread_exact(buf, (size_t)m * 8, st->f, st->path);
        for (int64_t k = 0; k < m; k++) {
            if (buf[k] < INT32_MIN || buf[k] > INT32_MAX)
                die("%s: tensor '%s': value %lld at %lld does not fit int32", st->path, t->name, (long long)buf[k], (long long)(i + k));
            dst[i + k] = (int32_t)buf[k];
        }
    }
}

// Appends printf-style text to a growing buffer.
static void st_appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void st_appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (k < 0) die("safetensors header: formatting failed");
        if (*len + (size_t)k < *cap) { *len += (size_t)k; return; }
        *cap = 2 * (*len + (size_t)k + 1);
        char *grown = realloc(*buf, *cap);
        if (!grown) die("out of memory growing a safetensors header");
        *buf = grown;
    }
}

// Writes named fp32 tensors as `dtype` (ST_F32 or ST_BF16), atomically (path.tmp, then
// rename), in the order given, back to back. shapes[i] has ndims[i] entries. The JSON header
// is padded with spaces to a multiple of 8 bytes, so the data starts 8-byte aligned.
static void st_write(const char *path, int n, const char *const *names, const float *const *data,
                     const int64_t (*shapes)[ST_MAX_DIMS], const int *ndims, int dtype) {
    if (dtype != ST_F32 && dtype != ST_BF16) die("%s: st_write supports F32 and BF16", path);
    size_t cap = 4096, len = 0;
    char *h = malloc_or_die(cap, path);
    st_appendf(&h, &len, &cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    int64_t offset = 0;
    for (int i = 0; i < n; i++) {
        // names are written unescaped, so they must need no escaping
        for (const char *c = names[i]; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) die("%s: tensor name '%s' would need escaping", path, names[i]);
        if (ndims[i] < 0 || ndims[i] > ST_MAX_DIMS) die("%s: tensor '%s': bad number of dimensions", path, names[i]);
        int64_t numel = 1;
        st_appendf(&h, &len, &cap, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", names[i], ST_DTYPE_NAMES[dtype]);
        for (int d = 0; d < ndims[i]; d++) {
            st_appendf(&h, &len, &cap, "%s%lld", d ? "," : "", (long long)shapes[i][d]);
            numel *= shapes[i][d];
        }
        int64_t bytes = numel * ST_DTYPE_SIZE[dtype];
        st_appendf(&h, &len, &cap, "],\"data_offsets\":[%lld,%lld]}", (long long)offset, (long long)(offset + bytes));
        offset += bytes;
    }
    st_appendf(&h, &len, &cap, "}");
    while (len % 8) st_appendf(&h, &len, &cap, " ");
    uint8_t lenbytes[8];
    for (int i = 0; i < 8; i++) lenbytes[i] = (uint8_t)((uint64_t)len >> (8 * i));  // little-endian
    AtomicFile a;
    atomic_open(&a, path);
    atomic_write(&a, lenbytes, 8);
    atomic_write(&a, h, len);
    free(h);
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++) numel *= shapes[i][d];
        if (dtype == ST_F32) { atomic_write(&a, data[i], (size_t)numel * 4); continue; }
        uint16_t buf[8192];
        for (int64_t k = 0; k < numel; k += 8192) {
            int64_t m = numel - k < 8192 ? numel - k : 8192;
            for (int64_t e = 0; e < m; e++) buf[e] = f32_to_bf16(data[i][k + e]);
            atomic_write(&a, buf, (size_t)m * 2);
        }
    }
    atomic_commit(&a);
}

#endif

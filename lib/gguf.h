// gguf.h — writing GGUF v3 files (the model format of llama.cpp and ggml) and encoding the
// ggml block types their tensors are stored in.
//
// The file, little-endian (the GGUF specification, ggml's docs/gguf.md):
//   uint32 magic "GGUF", uint32 version = 3, uint64 n_tensors, uint64 n_kv
//   n_kv metadata pairs:  string key, uint32 value type, value
//   n_tensors infos:      string name, uint32 n_dims, uint64 ne[n_dims] (innermost dimension
//                         first: a row-major [rows, cols] matrix is ne = {cols, rows}),
//                         uint32 ggml type, uint64 offset of its data
//   zero padding to the alignment (general.alignment, 32 by default), then the data section:
//   each tensor at its offset from the section's start, every offset a multiple of 32.
// A string is a uint64 byte count and the bytes, no terminating NUL. An array value is a uint32
// element type, a uint64 count and the elements.
//
// The block types used here (ggml-common.h; fp16 is IEEE half precision). A row of a tensor
// is a whole number of blocks, so ne[0] must be a multiple of the block length:
//   F32, F16, BF16   one weight per element
//   Q4_0   32 weights in 18 bytes: fp16 d, 16 bytes of 4-bit n;  w = (n - 8) d.
//          Byte i holds n[i] in its low nibble and n[i + 16] in its high nibble.
//   Q4_1   32 weights in 20 bytes: fp16 d, fp16 m, nibbles as Q4_0;  w = n d + m.
//   Q5_0   32 weights in 22 bytes: fp16 d, uint32 qh whose bit j is bit 4 of n[j], then the
//          low nibbles as Q4_0;  w = (n - 16) d.
//   Q8_0   32 weights in 34 bytes: fp16 d, int8 n[32];  w = n d.
//   TQ2_0  256 weights in 66 bytes: 64 bytes of 2-bit n, then fp16 d;  w = (n - 1) d.
//          Byte 32c + m holds n[128c + m + 32k] in bits 2k, 2k+1 (c < 2, m < 32, k < 4).
// The symmetric types (Q4_0, Q5_0, Q8_0, TQ2_0) are written here from signed integers
// q = n - offset with w = q d: ggml_block_from_ints.
#ifndef GGUF_H
#define GGUF_H

#include <ctype.h>  // defines: tolower
#include "util.h"   // defines: die, AtomicFile, atomic_write, f32_to_fp16, fp16_to_f32, f32_to_bf16

enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q8_0 = 8,
       GGML_BF16 = 30, GGML_TQ2_0 = 35 };
enum { GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9 };
#define GGUF_ALIGN 32

typedef struct {
    int type;
    const char *name;
    int block, bytes;  // weights per block, bytes per block
    int qmin, qmax;    // symmetric types: the range of q in w = q d (0, 0 for the others)
} GgmlType;

static const GgmlType GGML_TYPES[] = {
    {GGML_F32, "F32", 1, 4, 0, 0},       {GGML_F16, "F16", 1, 2, 0, 0},
    {GGML_BF16, "BF16", 1, 2, 0, 0},     {GGML_Q4_0, "Q4_0", 32, 18, -8, 7},
    {GGML_Q4_1, "Q4_1", 32, 20, 0, 0},   {GGML_Q5_0, "Q5_0", 32, 22, -16, 15},
    {GGML_Q8_0, "Q8_0", 32, 34, -128, 127}, {GGML_TQ2_0, "TQ2_0", 256, 66, -1, 1},
};

static const GgmlType *ggml_type(int type) {
    for (size_t i = 0; i < sizeof GGML_TYPES / sizeof GGML_TYPES[0]; i++)
        if (GGML_TYPES[i].type == type) return &GGML_TYPES[i];
    die("internal error: ggml type %d is not supported", type);
}

// "q4_0" -> GGML_Q4_0 (any case); -1 when unknown.
static int ggml_type_from_name(const char *name) {
    for (size_t i = 0; i < sizeof GGML_TYPES / sizeof GGML_TYPES[0]; i++) {
        const char *a = name, *b = GGML_TYPES[i].name;
        while (*a && tolower((unsigned char)*a) == tolower((unsigned char)*b)) a++, b++;
        if (!*a && !*b) return GGML_TYPES[i].type;
    }
    return -1;
}

static int64_t ggml_row_bytes(int type, int64_t n) {
    const GgmlType *t = ggml_type(type);
    return n / t->block * t->bytes;
}

// ---------------------------------------------------------------------------------------------
// Blocks. Every encoder writes one block at `out` from the block's weights or integers.

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

// A symmetric block with w[j] = q[j] d, q[j] within the type's [qmin, qmax] (checked).
static void ggml_block_from_ints(uint8_t *out, int type, float d, const int *q) {
    const GgmlType *t = ggml_type(type);
    for (int j = 0; j < t->block; j++)
        if (q[j] < t->qmin || q[j] > t->qmax) die("internal error: %s code %d out of range", t->name, q[j]);
    uint16_t dh = f32_to_fp16(d);
    switch (type) {
    case GGML_Q4_0:
        put_u16(out, dh);
        for (int i = 0; i < 16; i++) out[2 + i] = (uint8_t)((q[i] + 8) | (q[i + 16] + 8) << 4);
        break;
    case GGML_Q5_0: {
        uint32_t qh = 0;
        put_u16(out, dh);
        for (int j = 0; j < 32; j++) qh |= (uint32_t)(((q[j] + 16) >> 4) & 1) << j;
        for (int k = 0; k < 4; k++) out[2 + k] = (uint8_t)(qh >> (8 * k));
        for (int i = 0; i < 16; i++) out[6 + i] = (uint8_t)(((q[i] + 16) & 15) | ((q[i + 16] + 16) & 15) << 4);
        break;
    }
    case GGML_Q8_0:
        put_u16(out, dh);
        for (int j = 0; j < 32; j++) out[2 + j] = (uint8_t)(int8_t)q[j];
        break;
    case GGML_TQ2_0:
        memset(out, 0, 64);
        for (int j = 0; j < 256; j++) {
            int c = j / 128, m = j % 32, k = (j % 128) / 32;
            out[32 * c + m] |= (uint8_t)((q[j] + 1) << (2 * k));
        }
        put_u16(out + 64, dh);
        break;
    default: die("internal error: %s is not a symmetric block type", t->name);
    }
}

// Round to nearest: one block of x into `type`. The symmetric types take d = max|x| / qmax and
// q = round(x / d) with the fp16-rounded d; Q4_1 takes m = min x, d = (max x - min x) / 15.
static void ggml_block_quantize(uint8_t *out, int type, const float *x) {
    const GgmlType *t = ggml_type(type);
    int q[256];
    if (type == GGML_Q4_1) {
        float mn = x[0], mx = x[0];
        for (int j = 1; j < 32; j++) { mn = fminf(mn, x[j]); mx = fmaxf(mx, x[j]); }
        uint16_t dh = f32_to_fp16((mx - mn) / 15.0f), mh = f32_to_fp16(mn);
        float d = fp16_to_f32(dh), m = fp16_to_f32(mh);
        for (int j = 0; j < 32; j++) q[j] = d > 0 ? (int)fminf(fmaxf(rintf((x[j] - m) / d), 0.0f), 15.0f) : 0;
        put_u16(out, dh);
        put_u16(out + 2, mh);
        for (int i = 0; i < 16; i++) out[4 + i] = (uint8_t)(q[i] | q[i + 16] << 4);
        return;
    }
    float amax = 0.0f;
    for (int j = 0; j < t->block; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = fp16_to_f32(f32_to_fp16(amax / (float)t->qmax));
    for (int j = 0; j < t->block; j++) q[j] = d > 0 ? (int)fminf(fmaxf(rintf(x[j] / d), (float)-t->qmax), (float)t->qmax) : 0;
    ggml_block_from_ints(out, type, d, q);
}

// Round to nearest: a row of n weights (n a multiple of the block length) into `type`.
static void ggml_quantize_row(uint8_t *out, int type, const float *x, int64_t n) {
    const GgmlType *t = ggml_type(type);
    for (int64_t j = 0; j < n; j++) {
        if (type == GGML_F32) memcpy(out + 4 * j, x + j, 4);
        else if (type == GGML_F16) put_u16(out + 2 * j, f32_to_fp16(x[j]));
        else if (type == GGML_BF16) put_u16(out + 2 * j, f32_to_bf16(x[j]));
        else break;
    }
    if (t->block == 1) return;
    for (int64_t b = 0; b < n / t->block; b++) ggml_block_quantize(out + b * t->bytes, type, x + b * t->block);
}

// The weights a row of n stored in `type` stands for (what llama.cpp's dequantize computes).
static void ggml_dequantize_row(float *y, int type, const uint8_t *x, int64_t n) {
    const GgmlType *t = ggml_type(type);
    for (int64_t b = 0; b < n / t->block; b++) {
        const uint8_t *p = x + b * t->bytes;
        float *w = y + b * t->block;
        switch (type) {
        case GGML_F32: memcpy(w, p, 4); break;
        case GGML_F16: w[0] = fp16_to_f32(get_u16(p)); break;
        case GGML_BF16: w[0] = bf16_to_f32(get_u16(p)); break;
        case GGML_Q4_0: case GGML_Q4_1: {
            float d = fp16_to_f32(get_u16(p)), m = type == GGML_Q4_1 ? fp16_to_f32(get_u16(p + 2)) : 0.0f;
            const uint8_t *qs = p + (type == GGML_Q4_1 ? 4 : 2);
            int off = type == GGML_Q4_1 ? 0 : 8;
            for (int i = 0; i < 16; i++) {
                w[i] = (float)((qs[i] & 15) - off) * d + m;
                w[i + 16] = (float)((qs[i] >> 4) - off) * d + m;
            }
            break;
        }
        case GGML_Q5_0: {
            float d = fp16_to_f32(get_u16(p));
            uint32_t qh = (uint32_t)p[2] | (uint32_t)p[3] << 8 | (uint32_t)p[4] << 16 | (uint32_t)p[5] << 24;
            for (int i = 0; i < 16; i++) {
                int lo = (p[6 + i] & 15) | (int)((qh >> i) & 1) << 4, hi = (p[6 + i] >> 4) | (int)((qh >> (i + 16)) & 1) << 4;
                w[i] = (float)(lo - 16) * d;
                w[i + 16] = (float)(hi - 16) * d;
            }
            break;
        }
        case GGML_Q8_0: {
            float d = fp16_to_f32(get_u16(p));
            for (int j = 0; j < 32; j++) w[j] = (float)(int8_t)p[2 + j] * d;
            break;
        }
        case GGML_TQ2_0: {
            float d = fp16_to_f32(get_u16(p + 64));
            for (int j = 0; j < 256; j++) w[j] = (float)(((p[32 * (j / 128) + j % 32] >> (2 * ((j % 128) / 32))) & 3) - 1) * d;
            break;
        }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The writer. Declare the metadata and every tensor (name, shape, type), then gguf_begin_data
// writes everything before the data, and gguf_write_data takes each tensor's bytes, in the
// order the tensors were declared (a tensor's bytes may come in several calls).

typedef struct {
    char name[64];
    int n_dims, type;
    int64_t ne[4];
    uint64_t offset, bytes;
} GgufTensor;

typedef struct {
    AtomicFile file;
    uint8_t *kv;         // the serialised metadata pairs
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    GgufTensor *t;
    int n_t, cap_t;
    uint64_t data_bytes;  // the data section so far, padding included
    int next;             // the tensor whose bytes come next
    uint64_t done;        // bytes of it written so far
    uint64_t file_bytes;
} Gguf;

static void gguf_put(Gguf *g, const void *src, size_t n) {
    if (g->kv_len + n > g->kv_cap) {
        g->kv_cap = (g->kv_len + n) * 2 + 4096;
        g->kv = realloc(g->kv, g->kv_cap);
        if (!g->kv) die("out of memory for GGUF metadata");
    }
    memcpy(g->kv + g->kv_len, src, n);
    g->kv_len += n;
}
static void gguf_put_u32(Gguf *g, uint32_t v) { gguf_put(g, &v, 4); }
static void gguf_put_u64(Gguf *g, uint64_t v) { gguf_put(g, &v, 8); }
static void gguf_put_f32(Gguf *g, float v) { gguf_put(g, &v, 4); }
static void gguf_put_str(Gguf *g, const char *s, size_t n) { gguf_put_u64(g, n); gguf_put(g, s, n); }

static void gguf_key(Gguf *g, const char *key, uint32_t type) {
    gguf_put_str(g, key, strlen(key));
    gguf_put_u32(g, type);
    g->n_kv++;
}
static void gguf_kv_u32(Gguf *g, const char *key, uint32_t v) { gguf_key(g, key, GGUF_U32); gguf_put_u32(g, v); }
static void gguf_kv_f32(Gguf *g, const char *key, float v) { gguf_key(g, key, GGUF_F32); gguf_put_f32(g, v); }
static void gguf_kv_bool(Gguf *g, const char *key, int v) { uint8_t b = v != 0; gguf_key(g, key, GGUF_BOOL); gguf_put(g, &b, 1); }
static void gguf_kv_str(Gguf *g, const char *key, const char *s) { gguf_key(g, key, GGUF_STRING); gguf_put_str(g, s, strlen(s)); }
// An array's header; its n elements follow through gguf_put_str / gguf_put_f32 / gguf_put_u32.
static void gguf_kv_array(Gguf *g, const char *key, uint32_t elem_type, uint64_t n) {
    gguf_key(g, key, GGUF_ARRAY);
    gguf_put_u32(g, elem_type);
    gguf_put_u64(g, n);
}

// ne: innermost first. Every row (ne[0] weights) must be whole blocks of the type.
static void gguf_add_tensor(Gguf *g, const char *name, int n_dims, const int64_t *ne, int type) {
    const GgmlType *ty = ggml_type(type);
    if (ne[0] % ty->block) die("internal error: %s: %lld columns are not whole %s blocks", name, (long long)ne[0], ty->name);
    if (g->n_t == g->cap_t) {
        g->cap_t = g->cap_t * 2 + 64;
        g->t = realloc(g->t, (size_t)g->cap_t * sizeof *g->t);
        if (!g->t) die("out of memory for GGUF tensors");
    }
    GgufTensor *t = &g->t[g->n_t++];
    memset(t, 0, sizeof *t);
    if (strlen(name) >= sizeof t->name) die("internal error: tensor name %s too long", name);
    strcpy(t->name, name);
    t->n_dims = n_dims;
    t->type = type;
    uint64_t rows = 1;
    for (int d = 0; d < n_dims; d++) { t->ne[d] = ne[d]; if (d) rows *= (uint64_t)ne[d]; }
    t->bytes = (uint64_t)ggml_row_bytes(type, ne[0]) * rows;
    t->offset = g->data_bytes;
    g->data_bytes += (t->bytes + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
}

static void gguf_pad(Gguf *g, uint64_t n) {
    static const uint8_t zeros[GGUF_ALIGN] = {0};
    if (n % GGUF_ALIGN) atomic_write(&g->file, zeros, GGUF_ALIGN - n % GGUF_ALIGN);
}

// Opens path.tmp and writes the header, the metadata, the tensor infos and the padding.
static void gguf_begin_data(Gguf *g, const char *path) {
    atomic_open(&g->file, path);
    uint32_t head[2] = {0x46554747u, 3};  // "GGUF", version 3
    uint64_t counts[2] = {(uint64_t)g->n_t, g->n_kv};
    atomic_write(&g->file, head, sizeof head);
    atomic_write(&g->file, counts, sizeof counts);
    atomic_write(&g->file, g->kv, g->kv_len);
    uint64_t pos = sizeof head + sizeof counts + g->kv_len;
    for (int i = 0; i < g->n_t; i++) {
        const GgufTensor *t = &g->t[i];
        uint64_t len = strlen(t->name);
        uint32_t nd = (uint32_t)t->n_dims, ty = (uint32_t)t->type;
        atomic_write(&g->file, &len, 8);
        atomic_write(&g->file, t->name, len);
        atomic_write(&g->file, &nd, 4);
        atomic_write(&g->file, t->ne, 8 * (size_t)t->n_dims);
        atomic_write(&g->file, &ty, 4);
        atomic_write(&g->file, &t->offset, 8);
        pos += 8 + len + 4 + 8 * (uint64_t)t->n_dims + 4 + 8;
    }
    gguf_pad(g, pos);
    g->file_bytes = (pos + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
}

static void gguf_write_data(Gguf *g, const void *src, size_t n) {
    if (g->next >= g->n_t || g->done + n > g->t[g->next].bytes)
        die("internal error: more GGUF data than the declared tensors hold");
    atomic_write(&g->file, src, n);
    g->done += n;
    if (g->done == g->t[g->next].bytes) {
        gguf_pad(g, g->done);
        g->file_bytes += (g->done + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
        g->next++;
        g->done = 0;
    }
}

// Checks that every tensor got its bytes and renames the file into place; returns its size.
static uint64_t gguf_finish(Gguf *g) {
    if (g->next != g->n_t) die("internal error: GGUF tensor %s got no data", g->t[g->next].name);
    atomic_commit(&g->file);
    free(g->kv);
    free(g->t);
    return g->file_bytes;
}

#endif

// model.h — the model's configuration, its file format, and the table of its tensors.
//
// Shared by train.c (which trains and evaluates), convert.c (which imports Hugging Face and
// llama2.c checkpoints and exports back) and the tests, so that all of them agree on what
// "the i-th tensor" is.
//
// ---------------------------------------------------------------------------------------
// The model file (.bin), little-endian:
//
//   offset 0     ModelHeader, exactly 1024 bytes: magic "BDLM", version, every config
//                field (below), the weight dtype, and reserved zeros for later state.
//   offset 1024  the tensors of the table below, in table order, each contiguous, each
//                stored in `dtype` (0 = fp32, 1 = bf16), row-major in Hugging Face layout:
//
//     #  name        shape                        Hugging Face name (per layer l)
//     0  embed       [V, D]                       model.embed_tokens.weight
//     1  attn_norm   [L, D]                       model.layers.l.input_layernorm.weight
//     2  wq          [L, H*hd, D]                 model.layers.l.self_attn.q_proj.weight
//     3  wk          [L, KV*hd, D]                model.layers.l.self_attn.k_proj.weight
//     4  wv          [L, KV*hd, D]                model.layers.l.self_attn.v_proj.weight
//     5  wo          [L, D, H*hd]                 model.layers.l.self_attn.o_proj.weight
//     6  mlp_norm    [L, D]                       model.layers.l.post_attention_layernorm.weight
//     7  wgate       [L, F, D]                    model.layers.l.mlp.gate_proj.weight
//     8  wup         [L, F, D]                    model.layers.l.mlp.up_proj.weight
//     9  wdown       [L, D, F]                    model.layers.l.mlp.down_proj.weight
//    10  final_norm  [D]                          model.norm.weight
//    11  lm_head     [V, D], absent when tied     lm_head.weight
//
//   with V vocab, D dim, L layers, H heads, KV key/value heads, hd head_dim, F hidden_dim.
//   Linear weights are [out, in] (y = x W^T), exactly as Hugging Face stores them, so
//   import and export copy bytes and never transpose. q and k rows are in Hugging Face's
//   "rotate half" RoPE order (the first hd/2 rows of a head pair with the second hd/2).
//
//   Quantized models (quant_method != 0) store the LATENT fp32 weights in the table, and after
//   it the learned scales of the quantizers that have them (sign: alpha[out], beta[out];
//   onebit: h[out], g[in]) of each linear tensor, in table order (wq wk wv wo wgate wup wdown):
//   p0 of every layer, then p1 of every layer. The other quantizers' scales are functions of
//   the weights and are not stored.
//
// The file ends right after the last tensor: the loader checks the size exactly.
// ---------------------------------------------------------------------------------------
#ifndef MODEL_H
#define MODEL_H

#include "../quant.h"
#include "util.h"

#define MODEL_MAGIC 0x4d4c4442u  // the bytes "BDLM" read as a little-endian uint32
#define MODEL_VERSION 1
#define HEADER_BYTES 1024

enum { DTYPE_F32 = 0, DTYPE_BF16 = 1 };
enum { ROPE_NONE = 0, ROPE_LLAMA3 = 1 };

// Every field is 4 bytes, so the struct has no padding and is written as is.
typedef struct {
    uint32_t magic, version;
    int32_t dim;            // D, the residual stream width
    int32_t hidden_dim;     // F, the SwiGLU inner width
    int32_t n_layers;       // L
    int32_t n_heads;        // H, query heads
    int32_t n_kv_heads;     // KV, key/value heads (grouped-query attention: KV divides H)
    int32_t head_dim;       // hd, usually D / H
    int32_t vocab_size;     // V
    int32_t max_seq_len;    // the context the model was trained for
    int32_t tied;           // 1: the LM head is the embedding matrix
    int32_t dtype;          // how the tensors are stored: DTYPE_F32 or DTYPE_BF16
    float rope_theta;       // RoPE base, 10000 for Llama-2, 500000 for Llama-3
    float rms_norm_eps;
    int32_t rope_scaling;   // ROPE_NONE or ROPE_LLAMA3
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int32_t rope_original_max_pos;
    int32_t bos_id, eos_id; // -1 when unknown
    int32_t quant_method;   // QUANT_NONE (full precision) or the quantizer of the linears (quant.h)
    int32_t quant_bits, quant_group;
    int32_t quant_act_bits; // 0, or 8: the inputs of the quantized linears are quantized per token
                            // (BitNet b1.58's absmax, quant.h act_absmax_quantize)
    int32_t reserved[256 - 25];  // zeros; later state (tokenizer) goes here
} ModelHeader;

_Static_assert(sizeof(ModelHeader) == HEADER_BYTES, "ModelHeader must be 1024 bytes");

// ---------------------------------------------------------------------------------------
// The tensor table. Parameters, gradients, AdamW m and v are all one contiguous float
// buffer carved by this table, so tensor i means the same thing in each of them.

enum {
    T_EMBED, T_ATTN_NORM, T_WQ, T_WK, T_WV, T_WO, T_MLP_NORM,
    T_WGATE, T_WUP, T_WDOWN, T_FINAL_NORM, T_LM_HEAD, N_TENSORS
};

static const char *const TENSOR_NAMES[N_TENSORS] = {
    "embed", "attn_norm", "wq", "wk", "wv", "wo", "mlp_norm",
    "wgate", "wup", "wdown", "final_norm", "lm_head",
};

// Hugging Face names; "%d" is the layer. Tensors 1..9 are stacked over layers.
static const char *const TENSOR_HF_NAMES[N_TENSORS] = {
    "model.embed_tokens.weight",
    "model.layers.%d.input_layernorm.weight",
    "model.layers.%d.self_attn.q_proj.weight",
    "model.layers.%d.self_attn.k_proj.weight",
    "model.layers.%d.self_attn.v_proj.weight",
    "model.layers.%d.self_attn.o_proj.weight",
    "model.layers.%d.post_attention_layernorm.weight",
    "model.layers.%d.mlp.gate_proj.weight",
    "model.layers.%d.mlp.up_proj.weight",
    "model.layers.%d.mlp.down_proj.weight",
    "model.norm.weight",
    "lm_head.weight",
};

static int tensor_is_per_layer(int t) { return t >= T_ATTN_NORM && t <= T_WDOWN; }

// The shape of one layer's slice (or of the whole tensor, when not per layer):
// rows x cols, with rows = 1 for vectors. Linear weights are [out = rows, in = cols].
static void tensor_slice_shape(const ModelHeader *c, int t, int64_t *rows, int64_t *cols) {
    int64_t D = c->dim, F = c->hidden_dim, V = c->vocab_size;
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t r = 1, k = 0;
    switch (t) {
    case T_EMBED: r = V; k = D; break;
    case T_ATTN_NORM: case T_MLP_NORM: case T_FINAL_NORM: k = D; break;
    case T_WQ: r = q; k = D; break;
    case T_WK: case T_WV: r = kv; k = D; break;
    case T_WO: r = D; k = q; break;
    case T_WGATE: case T_WUP: r = F; k = D; break;
    case T_WDOWN: r = D; k = F; break;
    case T_LM_HEAD: r = c->tied ? 0 : V; k = D; break;
    }
    *rows = r;
    *cols = k;
}

// Element counts of every tensor (layers included); returns the total.
static int64_t tensor_sizes(const ModelHeader *c, int64_t sizes[N_TENSORS]) {
    int64_t total = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        int64_t r, k;
        tensor_slice_shape(c, t, &r, &k);
        sizes[t] = r * k * (tensor_is_per_layer(t) ? c->n_layers : 1);
        total += sizes[t];
    }
    return total;
}

// Carves `base` into the N_TENSORS pointers of the table (NULL for an absent lm_head).
static void tensor_carve(const ModelHeader *c, float *base, float *ptrs[N_TENSORS]) {
    int64_t sizes[N_TENSORS];
    tensor_sizes(c, sizes);
    for (int t = 0; t < N_TENSORS; t++) {
        ptrs[t] = sizes[t] ? base : NULL;
        base += sizes[t];
    }
}

// The seven linear weights of a layer: the only tensors that are quantized.
static int tensor_is_linear(int t) { return t == T_WQ || t == T_WK || t == T_WV || t == T_WO ||
                                            t == T_WGATE || t == T_WUP || t == T_WDOWN; }

static QuantSpec header_quant(const ModelHeader *c) {
    QuantSpec s = {c->quant_method, c->quant_bits, c->quant_group};
    return s;
}

static int quant_is_learned(int method) { return method == QUANT_SIGN || method == QUANT_ONEBIT; }

// Floats of the learned quantizer scales stored after the table (0 unless sign or onebit).
static int64_t quant_learned_floats(const ModelHeader *c) {
    if (!quant_is_learned(c->quant_method)) return 0;
    int64_t total = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!tensor_is_linear(t)) continue;
        int64_t rows, cols, n0, n1;
        tensor_slice_shape(c, t, &rows, &cols);
        quant_param_sizes(&n0, &n1, header_quant(c), (int)rows, (int)cols);
        total += (n0 + n1) * c->n_layers;
    }
    return total;
}

// ---------------------------------------------------------------------------------------
// Validation: a header is checked before a single size computed from it is trusted.
// Returns NULL when valid, else a short description of the first problem.

static const char *header_problem(const ModelHeader *c) {
    static char msg[512];  // the messages that name a field and its value
    if (c->magic != MODEL_MAGIC) return "not a bitdistill model file (bad magic)";
    if (c->version != MODEL_VERSION) return "unsupported model file version";
    const char *names[8] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "vocab_size", "max_seq_len"};
    const int sizes[8] = {c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size, c->max_seq_len};
    const int limits[8] = {1 << 16, 1 << 18, 1024, 1024, 1024, 1024, 1 << 22, 1 << 22};
    for (int i = 0; i < 8; i++) {
        if (sizes[i] <= 0) {
            snprintf(msg, sizeof msg, "a size in the header is zero or negative (%s = %d)", names[i], sizes[i]);
            return msg;
        }
        if (sizes[i] > limits[i]) {
            snprintf(msg, sizeof msg, "a size in the header is implausibly large (%s = %d, at most %d)", names[i], sizes[i], limits[i]);
            return msg;
        }
    }
    if (c->n_heads % c->n_kv_heads != 0) return "n_kv_heads does not divide n_heads";
    if (c->head_dim % 2 != 0) return "head_dim must be even (RoPE rotates pairs)";
    if (c->tied != 0 && c->tied != 1) return "tied must be 0 or 1";
    if (c->dtype != DTYPE_F32 && c->dtype != DTYPE_BF16) return "unknown weight dtype";
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta)) return "rope_theta must be positive";
    if (!(c->rms_norm_eps > 0) || !isfinite(c->rms_norm_eps)) return "rms_norm_eps must be positive";
    if (c->rope_scaling != ROPE_NONE && c->rope_scaling != ROPE_LLAMA3) return "unknown rope_scaling";
    if (c->rope_scaling == ROPE_LLAMA3 &&
        !(c->rope_factor > 0 && c->rope_low_freq_factor > 0 &&
          c->rope_high_freq_factor > c->rope_low_freq_factor && c->rope_original_max_pos > 0))
        return "llama3 rope_scaling needs factor > 0, high_freq_factor > low_freq_factor > 0, "
               "original_max_position_embeddings > 0";
    for (size_t i = 0; i < sizeof c->reserved / sizeof c->reserved[0]; i++)
        if (c->reserved[i] != 0) return "reserved header fields are not zero (newer file?)";
    if (c->quant_act_bits != 0 && c->quant_act_bits != 8) return "activation bits must be 0 or 8";
    if (c->quant_method != QUANT_NONE) {
        QuantSpec q = header_quant(c);
        int ins[3] = {c->dim, c->n_heads * c->head_dim, c->hidden_dim};  // every linear's input width
        const char *readers[3] = {"dim: q, k, v, gate and up", "n_heads x head_dim: o", "hidden_dim: down"};
        for (int i = 0; i < 3; i++) {
            QuantSpec t = q;
            const char *why = quant_spec_check(&t, ins[i]);
            if (why && q.group > 0 && ins[i] % q.group != 0) {  // name the group, the dimension, what would do
                int g = ins[0];  // the greatest common divisor of the three widths: its divisors divide all
                for (int k = 1; k < 3; k++)
                    for (int a = g, b = ins[k]; b; ) { int r = a % b; a = b; b = r; g = a; }
                char fits[160] = "";
                for (int d = 1, n = 0; d <= g && n < (int)sizeof fits - 16; d++)
                    if (g % d == 0) n += snprintf(fits + n, sizeof fits - n, "%d, ", d);
                snprintf(msg, sizeof msg, "group size %d does not divide the input dimension %d of a linear (%s); "
                         "-g that would work (dividing %d, %d and %d): %sor -1 (whole rows)",
                         q.group, ins[i], readers[i], ins[0], ins[1], ins[2], fits);
                return msg;
            }
            if (why) return why;
            if (t.method != q.method || t.bits != q.bits) return "inconsistent quantization fields";
        }
    }
    return NULL;
}

static ModelHeader header_defaults(void) {
    ModelHeader c;
    memset(&c, 0, sizeof c);
    c.magic = MODEL_MAGIC;
    c.version = MODEL_VERSION;
    c.rope_theta = 10000.0f;
    c.rms_norm_eps = 1e-5f;
    c.bos_id = -1;
    c.eos_id = -1;
    return c;
}

// ---------------------------------------------------------------------------------------
// Reading and writing whole models. Weights in memory are always fp32.

// Reads the header and all tensors (and learned quantizer scales); returns the fp32 parameter
// buffer (caller frees).
static float *model_load(const char *path, ModelHeader *c) {
    FILE *f = fopen_or_die(path, "rb");
    int64_t fsize = file_size_or_die(f, path);
    if (fsize < HEADER_BYTES) die("%s: truncated file (%lld bytes, smaller than the header)", path, (long long)fsize);
    fread_exact(c, sizeof *c, f, path);
    const char *why = header_problem(c);
    if (why) die("%s: %s", path, why);
    int64_t sizes[N_TENSORS];
    int64_t n = tensor_sizes(c, sizes) + quant_learned_floats(c);
    int64_t esize = c->dtype == DTYPE_BF16 ? 2 : 4;
    int64_t want = HEADER_BYTES + n * esize;
    if (fsize < want) die("%s: truncated file (%lld bytes, the header implies %lld)", path, (long long)fsize, (long long)want);
    if (fsize > want) die("%s: %lld trailing bytes after the last tensor (shapes do not match the header)", path, (long long)(fsize - want));
    float *params = malloc_or_die((size_t)n * sizeof(float), "model parameters");
    if (c->dtype == DTYPE_F32) {
        fread_exact(params, (size_t)n * 4, f, path);
    } else {
        // bf16: read in chunks and widen
        uint16_t buf[8192];
        for (int64_t i = 0; i < n; i += 8192) {
            int64_t m = n - i < 8192 ? n - i : 8192;
            fread_exact(buf, (size_t)m * 2, f, path);
            for (int64_t j = 0; j < m; j++) params[i + j] = bf16_to_f32(buf[j]);
        }
    }
    fclose(f);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(params[i])) die("%s: weight %lld is NaN or Inf", path, (long long)i);
    c->dtype = DTYPE_F32;  // in memory
    return params;
}

// Writes header + tensors atomically, converting to c->dtype.
static void model_save(const char *path, const ModelHeader *c, const float *params) {
    const char *why = header_problem(c);
    if (why) die("%s: refusing to write an invalid header: %s", path, why);
    int64_t sizes[N_TENSORS];
    int64_t n = tensor_sizes(c, sizes) + quant_learned_floats(c);
    AtomicFile a;
    atomic_open(&a, path);
    atomic_write(&a, c, sizeof *c);
    if (c->dtype == DTYPE_F32) {
        atomic_write(&a, params, (size_t)n * 4);
    } else {
        uint16_t buf[8192];
        for (int64_t i = 0; i < n; i += 8192) {
            int64_t m = n - i < 8192 ? n - i : 8192;
            for (int64_t j = 0; j < m; j++) buf[j] = f32_to_bf16(params[i + j]);
            atomic_write(&a, buf, (size_t)m * 2);
        }
    }
    atomic_commit(&a);
}

#endif

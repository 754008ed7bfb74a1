// fuzz/micro.h — the tiny models the fuzz seeds and targets are made of (include after
// train.c): dim 8, 1 layer, 2 heads of 4 (1 kv head), vocab 16, context 16. Small enough that
// a whole model file is a few kB, so the fuzzer mutates headers and tensors alike.
//   variant 0: untied, full precision    3: tied, ternary
//   variant 1: untied, int 2-bit g8      4: untied, nf3 g8, Llama-3 RoPE scaling
//   variant 2: tied, onebit (learned)    5: untied, sign (learned)
#include "../lib/safetensors.h"

#define MICRO_VARIANTS 6

static ModelHeader micro_header(int variant) {
    ModelHeader c = header_defaults();
    c.dim = 8; c.hidden_dim = 16; c.n_layers = 1; c.n_heads = 2; c.n_kv_heads = 1; c.head_dim = 4;
    c.vocab_size = 16; c.max_seq_len = 16; c.bos_id = 1; c.eos_id = 2;
    c.tied = variant == 2 || variant == 3;
    if (variant == 4) {
        c.rope_scaling = ROPE_LLAMA3; c.rope_factor = 8.0f; c.rope_low_freq_factor = 1.0f;
        c.rope_high_freq_factor = 4.0f; c.rope_original_max_pos = 8;
    }
    return c;
}

static QuantSpec micro_quant(int variant) {
    static const QuantSpec q[MICRO_VARIANTS] = {
        {QUANT_NONE, 16, 0}, {QUANT_INT, 2, 8}, {QUANT_ONEBIT, 1, 0},
        {QUANT_TERNARY, 2, 0}, {QUANT_NF3, 3, 8}, {QUANT_SIGN, 1, 0}};
    return q[variant];
}

// Tensors [first, last) of a model, in table order, under their Hugging Face names, as
// convert --to-hf writes them.
static void write_hf(const ModelHeader *c, const float *params, const char *path, int dtype, int first, int last) {
    const char *names[64];
    const float *data[64];
    int64_t shapes[64][ST_MAX_DIMS];
    int ndims[64], n = 0;
    static char name_buf[64][128];
    float *ptrs[N_TENSORS];
    tensor_carve(c, (float *)params, ptrs);
    for (int t = 0; t < N_TENSORS; t++) {
        if (!ptrs[t]) continue;
        int64_t rows, cols;
        tensor_slice_shape(c, t, &rows, &cols);
        int layers = tensor_is_per_layer(t) ? c->n_layers : 1;
        for (int l = 0; l < layers; l++, n++) {
            snprintf(name_buf[n], sizeof name_buf[n], TENSOR_HF_NAMES[t], l);
            names[n] = name_buf[n];
            data[n] = ptrs[t] + (int64_t)l * rows * cols;
            int vec = rows == 1 && t != T_EMBED && t != T_LM_HEAD;
            ndims[n] = vec ? 1 : 2;
            shapes[n][0] = vec ? cols : rows;
            shapes[n][1] = cols;
        }
    }
    if (last > n) last = n;
    st_write(path, last - first, names + first, data + first, (const int64_t(*)[ST_MAX_DIMS])shapes + first, ndims + first, dtype);
}

#ifdef TRAIN_NO_MAIN  // train.c is included: its Model
// A random micro model of the variant, quantized as the variant says.
static void micro_model(Model *m, int variant, uint64_t seed) {
    ModelHeader c = micro_header(variant);
    float *p = malloc_or_die((size_t)tensor_sizes(&c, (int64_t[N_TENSORS]){0}) * sizeof(float), "micro model");
    init_params(&c, p, seed);
    model_setup(m, &c, p);
    QuantSpec q = micro_quant(variant);
    if (q.method != QUANT_NONE) model_apply_quant(m, q);
}

// The training settings a micro checkpoint is saved and resumed with.
static TrainState micro_state(int variant) {
    TrainState st = {0, 0, 12345, -1.0, 2, 1, 8, variant ? LOSS_CAKLD : -1};
    return st;
}
#endif

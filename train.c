/*
 * train.c — train, quantize and evaluate a Llama in plain C.
 *
 * This file is the whole model and the training program, in the order the data flows:
 *   1. named shapes (--init) and random initialisation
 *   2. the Model: parameters, gradients, AdamW state and activations, each one contiguous
 *      buffer carved by a table
 *   3. layers, each forward beside its backward: embedding, RMSNorm, matmul, RoPE,
 *      attention, SwiGLU, residual, cross-entropy
 *   4. the model forward and backward
 *   5. quantized linears: fake quantization, straight-through backward, clipping, flip-flops
 *   6. distillation: the teacher, the losses of loss.h, the teacher's confidence gamma
 *   7. the optimizer: AdamW, learning-rate schedule, gradient clipping
 *   8. data: token files
 *   9. evaluation: perplexity
 *  10. generation: KV cache and sampling
 *  11. the training loop, the command line and main
 *  12. packed low-bit models
 *  13. weight histograms
 *
 * The model file format and the tensor table live in model.h (shared with convert.c).
 * All math is fp32. Layouts are Hugging Face's, so the numbers can be compared with
 * transformers' LlamaForCausalLM one to one (test_reference).
 */
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "loss.h"
#include "lib/model.h"
#include "tokenizer.c"

// ============================================================================================
// 1. Named shapes and random initialisation
//
// `./train --init NAME -o random.bin` writes a randomly initialised model of a known shape:
// the "random baseline" of the papers, and what the benchmarks run on (real weights cannot be
// downloaded on the test machines).

typedef struct {
    const char *name;
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size, max_seq_len, tied;
    float rope_theta, rms_norm_eps;
    int rope_scaling;  // ROPE_LLAMA3 shapes scale by factor 32, low 1, high 4, original 8192
    int bos_id, eos_id;
} NamedShape;

static const NamedShape SHAPES[] = {
    // a byte-level model of ~200k parameters: the demo's teacher and the tests' model
    {"tiny", 64, 192, 4, 8, 4, 8, 256, 256, 1, 10000.0f, 1e-5f, ROPE_NONE, -1, -1},
    // ~11M and ~42M parameters, Llama-2's vocabulary: with bench-100m, the family of teachers of
    // growing size that dev/teacher_size.sh pretrains on one corpus
    {"study-10m", 256, 768, 4, 8, 4, 32, 32000, 1024, 1, 10000.0f, 1e-5f, ROPE_NONE, 1, 2},
    {"study-40m", 512, 1536, 8, 8, 4, 64, 32000, 1024, 1, 10000.0f, 1e-5f, ROPE_NONE, 1, 2},
    // ~110M parameters: the CPU benchmark's shape
    {"bench-100m", 768, 2048, 12, 12, 4, 64, 32000, 1024, 1, 10000.0f, 1e-5f, ROPE_NONE, 1, 2},
    {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 64, 32000, 2048, 0, 10000.0f, 1e-5f, ROPE_NONE, 1, 2},
    {"llama-3.2-1b", 2048, 8192, 16, 32, 8, 64, 128256, 131072, 1, 500000.0f, 1e-5f, ROPE_LLAMA3, 128000, 128001},
    {"llama-3.2-3b", 3072, 8192, 28, 24, 8, 128, 128256, 131072, 1, 500000.0f, 1e-5f, ROPE_LLAMA3, 128000, 128001},
    {"llama-2-7b", 4096, 11008, 32, 32, 32, 128, 32000, 4096, 0, 10000.0f, 1e-5f, ROPE_NONE, 1, 2},
};
#define N_SHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

static ModelHeader shape_header(const char *name) {
    for (int i = 0; i < N_SHAPES; i++) {
        const NamedShape *s = &SHAPES[i];
        if (strcmp(s->name, name) != 0) continue;
        ModelHeader c = header_defaults();
        c.dim = s->dim; c.hidden_dim = s->hidden_dim; c.n_layers = s->n_layers;
        c.n_heads = s->n_heads; c.n_kv_heads = s->n_kv_heads; c.head_dim = s->head_dim;
        c.vocab_size = s->vocab_size; c.max_seq_len = s->max_seq_len; c.tied = s->tied;
        c.rope_theta = s->rope_theta; c.rms_norm_eps = s->rms_norm_eps;
        c.bos_id = s->bos_id; c.eos_id = s->eos_id;
        if (s->rope_scaling == ROPE_LLAMA3) {
            c.rope_scaling = ROPE_LLAMA3; c.rope_factor = 32.0f;
            c.rope_low_freq_factor = 1.0f; c.rope_high_freq_factor = 4.0f;
            c.rope_original_max_pos = 8192;
        }
        return c;
    }
    fprintf(stderr, "error: unknown shape '%s'; known:", name);
    for (int i = 0; i < N_SHAPES; i++) fprintf(stderr, " %s", SHAPES[i].name);
    fputc('\n', stderr);
    exit(1);
}

// Wall-clock seconds, for progress lines and ETAs.
static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void format_eta(char *buf, size_t n, double seconds) {
    int s = (int)(seconds + 0.5);
    snprintf(buf, n, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
}

// A small, fast, seedable generator (xorshift64*), so runs are reproducible everywhere.
typedef struct { uint64_t s; } Rng;
static uint64_t rng_u64(Rng *r) {
    r->s ^= r->s >> 12; r->s ^= r->s << 25; r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}
static float rng_uniform(Rng *r) { return (float)((rng_u64(r) >> 40) * (1.0 / 16777216.0)); }
static float rng_normal(Rng *r) {  // Box-Muller
    float u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-7f) u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}
static Rng rng_seeded(uint64_t seed) { Rng r = {seed * 0x9E3779B97F4A7C15ULL + 0x1234567ULL}; rng_u64(&r); return r; }

// The generator n draws on, without drawing: xorshift's update is linear over GF(2), s' = A s
// for a 64 x 64 bit matrix A (column j, the update of bit j alone), so the state n draws on is
// A^n s, by squaring (64 squarings of A at most). The output multiply does not touch the state.
static uint64_t gf2_apply(const uint64_t A[64], uint64_t s) {  // A s: the columns of s's set bits
    uint64_t r = 0;
    for (int j = 0; j < 64; j++) if (s >> j & 1) r ^= A[j];
    return r;
}
static Rng rng_jump(Rng r, uint64_t n) {
    uint64_t A[64], A2[64];
    for (int j = 0; j < 64; j++) {
        uint64_t s = 1ULL << j;
        s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
        A[j] = s;
    }
    for (; n; n >>= 1) {  // A holds the update of 2^k draws at bit k of n
        if (n & 1) r.s = gf2_apply(A, r.s);
        for (int j = 0; j < 64; j++) A2[j] = gf2_apply(A, A[j]);
        memcpy(A, A2, sizeof A);
    }
    return r;
}

// Hugging Face's LlamaPreTrainedModel init: every linear and the embedding ~ N(0, 0.02²),
// norm weights = 1. The normals are those of one stream from the seed, in table order, two
// draws each (Box-Muller), so the values do not depend on the threads: a chunk of `chunk`
// weights starts from the stream jumped to its first draw (7B's 6.7 G normals, serially about
// two minutes, take seconds on 16 cores).
static void init_params_chunked(const ModelHeader *c, float *params, uint64_t seed, int64_t chunk) {
    int64_t sizes[N_TENSORS];
    tensor_sizes(c, sizes);
    Rng r0 = rng_seeded(seed);
    uint64_t draws = 0;  // of the stream, before tensor t
    float *p = params;
    for (int t = 0; t < N_TENSORS; t++) {
        int64_t n = sizes[t];
        if (t == T_ATTN_NORM || t == T_MLP_NORM || t == T_FINAL_NORM) {
            for (int64_t i = 0; i < n; i++) p[i] = 1.0f;
        } else {
#pragma omp parallel for schedule(dynamic, 1)
            for (int64_t k = 0; k < (n + chunk - 1) / chunk; k++) {
                Rng r = rng_jump(r0, draws + 2 * (uint64_t)(k * chunk));
                for (int64_t i = k * chunk; i < n && i < (k + 1) * chunk; i++) p[i] = 0.02f * rng_normal(&r);
            }
            draws += 2 * (uint64_t)n;
        }
        p += n;
    }
}
static void init_params(const ModelHeader *c, float *params, uint64_t seed) { init_params_chunked(c, params, seed, 1 << 22); }

// ============================================================================================
// 2. The Model
//
// Parameters, gradients and AdamW m, v: four buffers of n_params floats, each carved by
// model.h's tensor table. Activations: one buffer carved by the table below. During training
// every layer keeps its own activations for the backward pass; for inference (eval, generate)
// all layers share one slot, so memory does not grow with depth.

enum {  // activations; shapes for B sequences of T tokens. Per-layer ones are marked (L).
    A_RESID,      // (L+1) [B,T,D]   the residual stream entering layer l (l = L: after the last)
    A_XN1,        // (L) [B,T,D]     RMSNorm before attention
    A_RSTD1,      // (L) [B,T]       1/rms of that norm, kept for its backward
    A_Q,          // (L) [B,T,H*hd]  queries, after RoPE
    A_K,          // (L) [B,T,KV*hd] keys, after RoPE
    A_V,          // (L) [B,T,KV*hd] values
    A_ATT,        // (L) [B,T,H*hd]  attention output, before the output projection
    A_LSE,        // (L) [B,H,T]     log-sum-exp of each attention row (the softmax is recomputed)
    A_RESID_MID,  // (L) [B,T,D]     residual after attention
    A_XN2,        // (L) [B,T,D]     RMSNorm before the MLP
    A_RSTD2,      // (L) [B,T]
    A_GATE,       // (L) [B,T,F]     x W_gate^T
    A_UP,         // (L) [B,T,F]     x W_up^T
    A_HMID,       // (L) [B,T,F]     silu(gate) * up
    A_ATTQ,       // (L) [B,T,H*hd]  with --act-bits 8: att quantized per token (xn1, xn2, hmid
                  //                 are quantized in place: their backward never reads them)
    A_XNF,        // [B,T,D]         final RMSNorm
    A_RSTDF,      // [B,T]
    A_LOGITS,     // [B,T,V]
    A_PROJ,       // [B,T,D]         scratch: output of wo and wdown before the residual add
    A_SCORES,     // [B,H,T]         scratch: one row of attention scores per (b, h)
    A_MMT,        // scratch for matmul's transposes: the largest W^T, or dout^T [O, B*T]
    // gradients of activations (training only)
    A_DRESID,     // [B,T,D]         flows down the residual stream
    A_DXN,        // [B,T,D]
    A_DQ, A_DK, A_DV, A_DATT,
    A_DGATE, A_DUP, A_DHMID,
    A_DLOGITS,    // [B,T,V]
    N_ACTS
};

typedef struct Model {
    ModelHeader cfg;
    int64_t n_params;           // the table's tensors, then the learned quantizer scales (if any)
    int64_t n_table;            // the table's tensors alone
    int64_t slice[N_TENSORS];   // elements of one layer's slice of each tensor
    float *params, *grads, *adam_m, *adam_v;
    float *params_t[N_TENSORS], *grads_t[N_TENSORS], *m_t[N_TENSORS], *v_t[N_TENSORS];
    // What the forward multiplies by and where the backward puts the gradient of it: for a
    // full-precision model the parameters themselves; for a quantized one, the linears point
    // at their fake-quantized copies wq / dwq (section 5), everything else at the parameters.
    float *fwd_t[N_TENSORS], *dfwd_t[N_TENSORS];
    // quantization (section 5); quant.method == QUANT_NONE for a full-precision model
    QuantSpec quant;
    float *wq, *dwq;                   // fake-quantized linears and dL/d(them), table layout
    uint8_t *codes, *codes_prev;       // integer code of every linear weight, now and before
    float *qstate;                     // scales that are functions of W (int, nf, ternary)
    float *qp0[N_TENSORS], *qp1[N_TENSORS];  // per tensor: layer 0's p0, p1 (quant.h's table)
    int64_t qn0[N_TENSORS], qn1[N_TENSORS];  // their sizes per layer
    int quant_stale;                   // the latent weights changed since the last quantization
    int codes_valid;                   // codes_prev holds a previous quantization's codes
    int64_t flips[N_TENSORS], flips_total, n_codes;  // codes changed by the last quantization
    int64_t *flips_layer;              // the same per layer [L]
    // activations
    int B, T, training;         // what the activation buffer is sized for
    float *acts;
    float *act[N_ACTS];
    int64_t act_layer_stride[N_ACTS];  // 0: shared by all layers
    float *rope_cos, *rope_sin;        // [T, hd/2]
    float *logits;                     // = act[A_LOGITS]
    int *inputs, *targets;             // [B,T] copies of the last forward's tokens
    int has_targets;
    float loss;
    int64_t step;                      // optimizer steps taken (AdamW bias correction)
} Model;

static void model_quant_setup(Model *m, int init_learned);

// Takes ownership of params (the table's tensors, then any learned quantizer scales).
static void model_setup(Model *m, const ModelHeader *c, float *params) {
    memset(m, 0, sizeof *m);
    m->cfg = *c;
    int64_t sizes[N_TENSORS];
    m->n_table = tensor_sizes(c, sizes);
    m->n_params = m->n_table + quant_learned_floats(c);
    for (int t = 0; t < N_TENSORS; t++) {
        int64_t r, k;
        tensor_slice_shape(c, t, &r, &k);
        m->slice[t] = r * k;
    }
    m->params = params;
    tensor_carve(c, m->params, m->params_t);
    memcpy(m->fwd_t, m->params_t, sizeof m->fwd_t);
    m->quant = header_quant(c);
    if (m->quant.method != QUANT_NONE) model_quant_setup(m, 0);
}

static void model_load_file(Model *m, const char *path) {
    ModelHeader c;
    float *p = model_load(path, &c);
    model_setup(m, &c, p);
}

// Gradients and AdamW moments appear only when training asks for them.
static void model_alloc_training(Model *m) {
    if (m->grads) return;
    m->grads = calloc_or_die((size_t)m->n_params, sizeof(float), "gradients");
    m->adam_m = calloc_or_die((size_t)m->n_params, sizeof(float), "AdamW m");
    m->adam_v = calloc_or_die((size_t)m->n_params, sizeof(float), "AdamW v");
    tensor_carve(&m->cfg, m->grads, m->grads_t);
    tensor_carve(&m->cfg, m->adam_m, m->m_t);
    tensor_carve(&m->cfg, m->adam_v, m->v_t);
    for (int t = 0; t < N_TENSORS; t++) m->dfwd_t[t] = tensor_is_linear(t) && m->dwq ? m->dfwd_t[t] : m->grads_t[t];
}

static void model_free(Model *m) {
    free(m->params); free(m->grads); free(m->adam_m); free(m->adam_v);
    free(m->wq); free(m->dwq); free(m->codes); free(m->codes_prev); free(m->qstate); free(m->flips_layer);
    free(m->acts); free(m->rope_cos); free(m->rope_sin); free(m->inputs); free(m->targets);
    memset(m, 0, sizeof *m);
}

// The tensor slice of layer l (tensors that are not per layer ignore l).
static float *layer_tensor(float *const ptrs[N_TENSORS], const Model *m, int t, int l) {
    return ptrs[t] + (tensor_is_per_layer(t) ? (int64_t)l * m->slice[t] : 0);
}

// The LM head: its own tensor, or the embedding when tied.
static int lm_head_tensor(const Model *m) { return m->cfg.tied ? T_EMBED : T_LM_HEAD; }

// RoPE tables for positions 0..T-1, in Hugging Face's frequencies (with Llama-3 scaling):
//   inv_freq[i] = theta^(-2i/hd),  angle(t, i) = t * inv_freq[i],  i < hd/2.
// Llama-3 ("rope_type": "llama3") keeps high frequencies (wavelength < original/high_factor),
// divides low ones (wavelength > original/low_factor) by `factor`, and blends in between:
//   s = (original/wavelength - low) / (high - low),  f = (1 - s) f/factor + s f.
static void rope_tables(float *cosv, float *sinv, const ModelHeader *c, int T) {
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        // HF computes inv_freq in fp32: 1 / theta^(2i/hd)
        float inv = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->head_dim);
        if (c->rope_scaling == ROPE_LLAMA3) {
            float orig = (float)c->rope_original_max_pos, lo = c->rope_low_freq_factor,
                  hi = c->rope_high_freq_factor, factor = c->rope_factor;
            float wavelen = 2.0f * (float)M_PI / inv;
            float lo_wavelen = orig / lo, hi_wavelen = orig / hi;
            if (wavelen > lo_wavelen) inv = inv / factor;
            else if (wavelen >= hi_wavelen) {
                float s = (orig / wavelen - lo) / (hi - lo);
                inv = (1.0f - s) * inv / factor + s * inv;
            }
        }
        for (int t = 0; t < T; t++) {
            float angle = (float)t * inv;
            cosv[t * half + i] = cosf(angle);
            sinv[t * half + i] = sinf(angle);
        }
    }
}

// Sizes the activation buffer for B x T (re-carving only when the shape or the mode changes).
static void model_alloc_acts(Model *m, int B, int T, int training) {
    if (m->acts && B == m->B && T == m->T && training == m->training) return;
    const ModelHeader *c = &m->cfg;
    int64_t BT = (int64_t)B * T, D = c->dim, F = c->hidden_dim, V = c->vocab_size, L = c->n_layers;
    int64_t Hq = (int64_t)c->n_heads * c->head_dim, Hkv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t H = c->n_heads;
    int64_t size[N_ACTS] = {
        [A_RESID] = BT * D, [A_XN1] = BT * D, [A_RSTD1] = BT, [A_Q] = BT * Hq,
        [A_K] = BT * Hkv, [A_V] = BT * Hkv, [A_ATT] = BT * Hq, [A_LSE] = B * H * T,
        [A_RESID_MID] = BT * D, [A_XN2] = BT * D, [A_RSTD2] = BT, [A_GATE] = BT * F,
        [A_UP] = BT * F, [A_HMID] = BT * F, [A_ATTQ] = c->quant_act_bits ? BT * Hq : 0, [A_XNF] = BT * D, [A_RSTDF] = BT,
        [A_LOGITS] = BT * V, [A_PROJ] = BT * D, [A_SCORES] = B * H * T,
    };
    int64_t widest = V > F ? V : F;  // the widest output of any linear (D and H*hd too)
    if (D > widest) widest = D;
    if (Hq > widest) widest = Hq;
    int64_t largest_w = V * D > F * D ? V * D : F * D;
    if (Hq * D > largest_w) largest_w = Hq * D;
    size[A_MMT] = largest_w > BT * widest ? largest_w : BT * widest;
    if (training) {
        size[A_DRESID] = BT * D; size[A_DXN] = BT * D; size[A_DQ] = BT * Hq;
        size[A_DK] = BT * Hkv; size[A_DV] = BT * Hkv; size[A_DATT] = BT * Hq;
        size[A_DGATE] = BT * F; size[A_DUP] = BT * F; size[A_DHMID] = BT * F;
        size[A_DLOGITS] = BT * V;
    }
    int64_t total = 0, count[N_ACTS];
    for (int a = 0; a < N_ACTS; a++) {
        int per_layer = a >= A_RESID && a <= A_ATTQ;
        count[a] = per_layer && training ? (a == A_RESID ? L + 1 : L) : 1;
        m->act_layer_stride[a] = per_layer && training ? size[a] : 0;
        total += count[a] * size[a];
    }
    free(m->acts);
    m->acts = malloc_or_die((size_t)total * sizeof(float), "activations");
    float *p = m->acts;
    for (int a = 0; a < N_ACTS; a++) { m->act[a] = size[a] ? p : NULL; p += count[a] * size[a]; }
    m->logits = m->act[A_LOGITS];
    m->B = B; m->T = T; m->training = training;
    free(m->rope_cos); free(m->rope_sin); free(m->inputs); free(m->targets);
    m->rope_cos = malloc_or_die((size_t)T * c->head_dim / 2 * sizeof(float), "rope");
    m->rope_sin = malloc_or_die((size_t)T * c->head_dim / 2 * sizeof(float), "rope");
    rope_tables(m->rope_cos, m->rope_sin, c, T);
    m->inputs = malloc_or_die((size_t)BT * sizeof(int), "inputs");
    m->targets = malloc_or_die((size_t)BT * sizeof(int), "targets");
}

// Activation a of layer l.
static float *act_l(const Model *m, int a, int l) { return m->act[a] + (int64_t)l * m->act_layer_stride[a]; }

// ============================================================================================
// 3. Layers
//
// Each op is a forward/backward pair: outputs first, then inputs, then sizes. Shapes are given
// in brackets in memory order; N stands for B*T rows. Backward functions ACCUMULATE (+=) into
// every gradient they write (of parameters and of inputs alike); model_backward zeroes them.

// --- embedding: x[N,D] = E[tok[n], :] -----------------------------------------------------
static void embedding_forward(float *x, const int *tok, const float *E, int N, int D) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) memcpy(x + (int64_t)n * D, E + (int64_t)tok[n] * D, (size_t)D * sizeof(float));
}

// dE[tok[n], :] += dx[n, :]. Two rows may share a token, so this runs serially.
static void embedding_backward(float *dE, const float *dx, const int *tok, int N, int D) {
    for (int n = 0; n < N; n++) {
        float *row = dE + (int64_t)tok[n] * D;
        const float *g = dx + (int64_t)n * D;
        for (int i = 0; i < D; i++) row[i] += g[i];
    }
}

// --- RMSNorm: y[N,C] = x / sqrt(mean(x^2) + eps) * w[C] ------------------------------------
// rstd[N] = 1/sqrt(mean(x^2) + eps) is kept for the backward.
static void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w, int N, int C, float eps) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xr = x + (int64_t)n * C;
        float *yr = y + (int64_t)n * C;
        float ss = 0.0f;
        for (int i = 0; i < C; i++) ss += xr[i] * xr[i];
        float r = 1.0f / sqrtf(ss / C + eps);
        rstd[n] = r;
        for (int i = 0; i < C; i++) yr[i] = w[i] * (xr[i] * r);
    }
}

// With g = dy * w:  dx = r * g - x * r^3 * mean(g * x),   dw += sum_n dy * x * r.
static void rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w,
                             const float *rstd, int N, int C) {
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        const float *xr = x + (int64_t)n * C, *dyr = dy + (int64_t)n * C;
        float *dxr = dx + (int64_t)n * C;
        float r = rstd[n], dot = 0.0f;
        for (int i = 0; i < C; i++) dot += dyr[i] * w[i] * xr[i];
        float k = r * r * r * dot / C;
        for (int i = 0; i < C; i++) dxr[i] += r * dyr[i] * w[i] - k * xr[i];
    }
    // dw reduces over rows: parallel over columns instead, so no two threads share a sum
    #pragma omp parallel for
    for (int i = 0; i < C; i++) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += dy[(int64_t)n * C + i] * x[(int64_t)n * C + i] * rstd[n];
        dw[i] += s;
    }
}

// --- matmul: out[N,O] = x[N,I] W[O,I]^T ----------------------------------------------------
// Every linear layer. All three products of a linear (forward, dx, dW) are computed in one
// form, a sum of scaled contiguous rows, which compilers turn into vector FMAs reliably:
//   C[n,:] += sum_k A[n,k] Bm[k,:]          (C[M,J], A[M,K], Bm[K,J])
// Four rows of C share each row of Bm they read; OpenMP splits the rows of C.
#define MM_ROWS 4
static void rows_accumulate(float *C, const float *A, const float *Bm, int M, int K, int J) {
    #pragma omp parallel for schedule(static)
    for (int m0 = 0; m0 < M; m0 += MM_ROWS) {
        int tm = M - m0 < MM_ROWS ? M - m0 : MM_ROWS;
        for (int k = 0; k < K; k++) {
            const float *b = Bm + (int64_t)k * J;
            for (int a = 0; a < tm; a++) {
                float av = A[(int64_t)(m0 + a) * K + k];
                float *c = C + (int64_t)(m0 + a) * J;
                for (int j = 0; j < J; j++) c[j] += av * b[j];
            }
        }
    }
}

// wt[K,M] = a[M,K]^T, in cache-sized blocks.
static void transpose(float *wt, const float *a, int M, int K) {
    #pragma omp parallel for collapse(2) schedule(static)
    for (int m0 = 0; m0 < M; m0 += 32)
        for (int k0 = 0; k0 < K; k0 += 32)
            for (int m = m0; m < m0 + 32 && m < M; m++)
                for (int k = k0; k < k0 + 32 && k < K; k++) wt[(int64_t)k * M + m] = a[(int64_t)m * K + k];
}

// out = x W^T: W is first transposed into scratch wt[I,O] (O*I copies, negligible beside the
// N*O*I multiply-adds), then out[n,:] = sum_i x[n,i] wt[i,:].
static void matmul_forward(float *out, float *wt, const float *x, const float *w, int N, int I, int O) {
    transpose(wt, w, O, I);
    memset(out, 0, (size_t)N * O * sizeof(float));
    rows_accumulate(out, x, wt, N, I, O);
}

// dx[N,I] += dout[N,O] W[O,I];   dW[O,I] += dout[N,O]^T x[N,I] (dout transposed into the
// scratch dt[O,N] first, so both are rows_accumulate).
static void matmul_backward(float *dx, float *dw, float *dt, const float *dout, const float *x,
                            const float *w, int N, int I, int O) {
    if (dx) rows_accumulate(dx, dout, w, N, O, I);
    if (dw) {
        transpose(dt, dout, N, O);
        rows_accumulate(dw, dt, x, O, N, I);
    }
}

// --- RoPE (Hugging Face "rotate half" layout), in place on x[B,T,NH,hd] ---------------------
// For each head, element i pairs with i + hd/2 (i < hd/2), rotated by angle(t, i):
//   x'[i] = x[i] cos - x[i+hd/2] sin,   x'[i+hd/2] = x[i+hd/2] cos + x[i] sin.
// A rotation's backward is the rotation by the opposite angle (sin -> -sin).
static void rope_rotate(float *x, const float *cosv, const float *sinv, int B, int T, int NH, int hd, float sign) {
    int half = hd / 2;
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *cr = cosv + (int64_t)t * half, *sr = sinv + (int64_t)t * half;
            for (int h = 0; h < NH; h++) {
                float *v = x + (((int64_t)b * T + t) * NH + h) * hd;
                for (int i = 0; i < half; i++) {
                    float a = v[i], c = v[i + half], s = sign * sr[i];
                    v[i] = a * cr[i] - c * s;
                    v[i + half] = c * cr[i] + a * s;
                }
            }
        }
}
static void rope_forward(float *x, const float *cosv, const float *sinv, int B, int T, int NH, int hd) {
    rope_rotate(x, cosv, sinv, B, T, NH, hd, 1.0f);
}
// dx = R(-angle) dx', in place: the gradient buffer enters as dL/dx' and leaves as dL/dx.
static void rope_backward(float *dx, const float *cosv, const float *sinv, int B, int T, int NH, int hd) {
    rope_rotate(dx, cosv, sinv, B, T, NH, hd, -1.0f);
}

// --- causal grouped-query attention ----------------------------------------------------------
// q[B,T,H,hd], k,v[B,T,KV,hd] -> out[B,T,H,hd]; query head h reads kv head h / (H/KV).
//   s_tj = q_t . k_j / sqrt(hd)  for j <= t,   p_tj = softmax_j(s_tj),   out_t = sum_j p_tj v_j.
// Only lse[B,H,T] = log sum_j exp(s_tj) is stored: the backward recomputes p_tj = exp(s_tj - lse_t)
// instead of keeping a [T,T] matrix per head (the idea of FlashAttention, Dao et al. 2022).
// Thread mapping: one (b, h) pair per iteration; scores[B,H,T] gives each its own row.
static void attention_forward(float *out, float *lse, float *scores, const float *q, const float *k,
                              const float *v, int B, int T, int H, int KV, int hd) {
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            float *s = scores + ((int64_t)b * H + h) * T;
            int kvh = h / group;
            for (int t = 0; t < T; t++) {
                const float *qt = q + (((int64_t)b * T + t) * H + h) * hd;
                float mx = -INFINITY;
                for (int j = 0; j <= t; j++) {
                    const float *kj = k + (((int64_t)b * T + j) * KV + kvh) * hd;
                    float d = 0.0f;
                    for (int i = 0; i < hd; i++) d += qt[i] * kj[i];
                    s[j] = d * scale;
                    if (s[j] > mx) mx = s[j];
                }
                float sum = 0.0f;
                for (int j = 0; j <= t; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
                float *ot = out + (((int64_t)b * T + t) * H + h) * hd;
                for (int i = 0; i < hd; i++) ot[i] = 0.0f;
                for (int j = 0; j <= t; j++) {
                    const float *vj = v + (((int64_t)b * T + j) * KV + kvh) * hd;
                    float p = s[j] / sum;
                    for (int i = 0; i < hd; i++) ot[i] += p * vj[i];
                }
                lse[((int64_t)b * H + h) * T + t] = mx + logf(sum);
            }
        }
}

// With dO the gradient of out and Delta_t = dO_t . out_t (= sum_j p_tj dO_t . v_j):
//   dv_j += sum_t p_tj dO_t,   ds_tj = p_tj (dO_t . v_j - Delta_t),
//   dq_t += scale sum_j ds_tj k_j,   dk_j += scale sum_t ds_tj q_t.
// Thread mapping: one (b, kv head) per iteration, so that the dk and dv rows a thread adds to
// belong to it alone; it loops over the query heads of its group.
static void attention_backward(float *dq, float *dk, float *dv, float *scores, const float *dout,
                               const float *q, const float *k, const float *v, const float *out,
                               const float *lse, int B, int T, int H, int KV, int hd) {
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int kvh = 0; kvh < KV; kvh++) {
            float *p = scores + ((int64_t)b * H + kvh * group) * T;  // the row of this group's first head
            for (int h = kvh * group; h < (kvh + 1) * group; h++)
                for (int t = 0; t < T; t++) {
                    int64_t qi = (((int64_t)b * T + t) * H + h) * hd;
                    const float *qt = q + qi, *dot = dout + qi, *ot = out + qi;
                    float *dqt = dq + qi;
                    float L = lse[((int64_t)b * H + h) * T + t], delta = 0.0f;
                    for (int i = 0; i < hd; i++) delta += dot[i] * ot[i];
                    for (int j = 0; j <= t; j++) {
                        const float *kj = k + (((int64_t)b * T + j) * KV + kvh) * hd;
                        float d = 0.0f;
                        for (int i = 0; i < hd; i++) d += qt[i] * kj[i];
                        p[j] = expf(d * scale - L);
                    }
                    for (int j = 0; j <= t; j++) {
                        int64_t kvi = (((int64_t)b * T + j) * KV + kvh) * hd;
                        const float *kj = k + kvi, *vj = v + kvi;
                        float *dkj = dk + kvi, *dvj = dv + kvi;
                        float dp = 0.0f;
                        for (int i = 0; i < hd; i++) dp += dot[i] * vj[i];
                        float ds = p[j] * (dp - delta) * scale;
                        for (int i = 0; i < hd; i++) {
                            dvj[i] += p[j] * dot[i];
                            dqt[i] += ds * kj[i];
                            dkj[i] += ds * qt[i];
                        }
                    }
                }
        }
}

// --- SwiGLU: h[N,F] = silu(g) * u, silu(g) = g * sigmoid(g) ---------------------------------
static void swiglu_forward(float *h, const float *g, const float *u, int64_t n) {
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// dg += dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),   du += dh * silu(g).
static void swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-g[i]));
        dg[i] += dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
        du[i] += dh[i] * g[i] * sg;
    }
}

// --- residual: y[N,D] = a + b (its backward passes dy to both inputs unchanged) -------------
static void residual_forward(float *y, const float *a, const float *b, int64_t n) {
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

// --- cross-entropy: loss = mean over rows with target >= 0 of -log softmax(logits)[target] --
// logits[N,V], targets[N] (-1 = ignored). Computed with the max subtracted (log-sum-exp).
static float crossentropy_forward(const float *logits, const int *targets, int N, int V) {
    double sum = 0.0;
    int count = 0;
    #pragma omp parallel for reduction(+ : sum, count)
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        const float *z = logits + (int64_t)n * V;
        float mx = z[0];
        for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
        double s = 0.0;
        for (int i = 0; i < V; i++) s += exp((double)(z[i] - mx));
        sum += log(s) + mx - z[targets[n]];
        count++;
    }
    return count ? (float)(sum / count) : 0.0f;
}

// dlogits += scale * (softmax(logits) - onehot(target)) / count, for rows with a target.
static void crossentropy_backward(float *dlogits, const float *logits, const int *targets, int N, int V, float scale) {
    int count = 0;
    for (int n = 0; n < N; n++) count += targets[n] >= 0;
    if (!count) return;
    float k = scale / count;
    #pragma omp parallel for
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        const float *z = logits + (int64_t)n * V;
        float *dz = dlogits + (int64_t)n * V;
        float mx = z[0];
        for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
        float s = 0.0f;
        for (int i = 0; i < V; i++) s += expf(z[i] - mx);
        for (int i = 0; i < V; i++) dz[i] += k * expf(z[i] - mx) / s;
        dz[targets[n]] -= k;
    }
}

// ============================================================================================
// 4. The model forward and backward
//
// One layer:  h = x + Wo attn(rope(Wq rms1(x)), rope(Wk rms1(x)), Wv rms1(x))
//             x' = h + Wdown (silu(Wgate rms2(h)) * Wup rms2(h))
// then logits = W_head rms_f(x_L). inputs/targets are [B,T]; targets may be NULL (no loss) and
// -1 marks positions without a target. Returns the mean cross-entropy over the targets.

// BitNet b1.58's 8-bit activations (--act-bits 8, Ma et al. 2024): the input x[N, n] of a
// quantized linear is quantized per token (quant.h act_absmax_quantize) into xq, which may be x
// itself. Returns what the matmul reads: xq, or x when activations stay full precision. The
// backward passes dL/dx straight through and computes dL/dW from xq, as the forward used it.
static const float *act_quant(const Model *m, float *xq, const float *x, int N, int n) {
    if (!m->cfg.quant_act_bits) return x;
    if (act_absmax_quantize(xq, x, N, n) != QUANT_OK) die("--act-bits: NaN or Inf in the input of a linear");
    return xq;
}

// Layer l on the residual stream act[A_RESID] of layer l, writing that of layer l+1.
static void layer_forward(Model *m, int l, int B, int T) {
    const ModelHeader *c = &m->cfg;
    int N = B * T, D = c->dim, F = c->hidden_dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    int Hq = H * hd, Hkv = KV * hd;
    float *x = act_l(m, A_RESID, l), *xn1 = act_l(m, A_XN1, l), *q = act_l(m, A_Q, l),
          *k = act_l(m, A_K, l), *v = act_l(m, A_V, l), *att = act_l(m, A_ATT, l),
          *mid = act_l(m, A_RESID_MID, l), *xn2 = act_l(m, A_XN2, l),
          *gate = act_l(m, A_GATE, l), *up = act_l(m, A_UP, l), *hmid = act_l(m, A_HMID, l);
    float *proj = m->act[A_PROJ];
    // attention block
    rmsnorm_forward(xn1, act_l(m, A_RSTD1, l), x, layer_tensor(m->fwd_t, m, T_ATTN_NORM, l), N, D, c->rms_norm_eps);
    act_quant(m, xn1, xn1, N, D);  // in place: rmsnorm_backward reads x, not xn1
    matmul_forward(q, m->act[A_MMT], xn1, layer_tensor(m->fwd_t, m, T_WQ, l), N, D, Hq);
    matmul_forward(k, m->act[A_MMT], xn1, layer_tensor(m->fwd_t, m, T_WK, l), N, D, Hkv);
    matmul_forward(v, m->act[A_MMT], xn1, layer_tensor(m->fwd_t, m, T_WV, l), N, D, Hkv);
    rope_forward(q, m->rope_cos, m->rope_sin, B, T, H, hd);
    rope_forward(k, m->rope_cos, m->rope_sin, B, T, KV, hd);
    attention_forward(att, act_l(m, A_LSE, l), m->act[A_SCORES], q, k, v, B, T, H, KV, hd);
    const float *att_in = act_quant(m, act_l(m, A_ATTQ, l), att, N, Hq);  // attention_backward reads att
    matmul_forward(proj, m->act[A_MMT], att_in, layer_tensor(m->fwd_t, m, T_WO, l), N, Hq, D);
    residual_forward(mid, x, proj, (int64_t)N * D);
    // MLP block
    rmsnorm_forward(xn2, act_l(m, A_RSTD2, l), mid, layer_tensor(m->fwd_t, m, T_MLP_NORM, l), N, D, c->rms_norm_eps);
    act_quant(m, xn2, xn2, N, D);
    matmul_forward(gate, m->act[A_MMT], xn2, layer_tensor(m->fwd_t, m, T_WGATE, l), N, D, F);
    matmul_forward(up, m->act[A_MMT], xn2, layer_tensor(m->fwd_t, m, T_WUP, l), N, D, F);
    swiglu_forward(hmid, gate, up, (int64_t)N * F);
    act_quant(m, hmid, hmid, N, F);  // swiglu_backward reads gate and up
    matmul_forward(proj, m->act[A_MMT], hmid, layer_tensor(m->fwd_t, m, T_WDOWN, l), N, F, D);
    residual_forward(act_l(m, A_RESID, l + 1), mid, proj, (int64_t)N * D);
}

static void model_quantize(Model *m);

static float model_forward(Model *m, const int *inputs, const int *targets, int B, int T) {
    const ModelHeader *c = &m->cfg;
    if (m->quant_stale) model_quantize(m);
    if (T > c->max_seq_len) die("sequence length %d exceeds the model's context %d", T, c->max_seq_len);
    model_alloc_acts(m, B, T, m->grads != NULL);
    int N = B * T, D = c->dim, V = c->vocab_size;
    for (int i = 0; i < N; i++) {
        if (inputs[i] < 0 || inputs[i] >= V) die("token id %d out of range [0, %d)", inputs[i], V);
        if (targets && targets[i] >= V) die("target id %d out of range [0, %d)", targets[i], V);
    }
    memcpy(m->inputs, inputs, (size_t)N * sizeof(int));
    m->has_targets = targets != NULL;
    if (targets) memcpy(m->targets, targets, (size_t)N * sizeof(int));

    embedding_forward(act_l(m, A_RESID, 0), inputs, m->fwd_t[T_EMBED], N, D);
    for (int l = 0; l < c->n_layers; l++) layer_forward(m, l, B, T);
    rmsnorm_forward(m->act[A_XNF], m->act[A_RSTDF], act_l(m, A_RESID, c->n_layers), m->fwd_t[T_FINAL_NORM], N, D, c->rms_norm_eps);
    matmul_forward(m->logits, m->act[A_MMT], m->act[A_XNF], m->fwd_t[lm_head_tensor(m)], N, D, V);
    m->loss = targets ? crossentropy_forward(m->logits, targets, N, V) : 0.0f;
    return m->loss;
}

static void model_zero_grad(Model *m) {
    if (m->grads) memset(m->grads, 0, (size_t)m->n_params * sizeof(float));
}

static void zero_act(Model *m, int a, int64_t n) { memset(m->act[a], 0, (size_t)n * sizeof(float)); }

// Backward of the last model_forward (which must have had targets), given dL/dlogits in
// act[A_DLOGITS]. Parameter gradients accumulate into m->grads.
static void model_quant_backward(Model *m);

static void model_backward_from_dlogits(Model *m) {
    const ModelHeader *c = &m->cfg;
    int B = m->B, T = m->T, N = B * T, D = c->dim, F = c->hidden_dim, V = c->vocab_size,
        H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, Hq = H * hd, Hkv = KV * hd;
    float *dres = m->act[A_DRESID], *dxn = m->act[A_DXN];
    int head = lm_head_tensor(m);
    // head and final norm
    zero_act(m, A_DXN, (int64_t)N * D);
    matmul_backward(dxn, m->dfwd_t[head], m->act[A_MMT], m->act[A_DLOGITS], m->act[A_XNF], m->fwd_t[head], N, D, V);
    zero_act(m, A_DRESID, (int64_t)N * D);
    rmsnorm_backward(dres, m->dfwd_t[T_FINAL_NORM], dxn, act_l(m, A_RESID, c->n_layers),
                     m->fwd_t[T_FINAL_NORM], m->act[A_RSTDF], N, D);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        float *x = act_l(m, A_RESID, l), *xn1 = act_l(m, A_XN1, l), *q = act_l(m, A_Q, l),
              *k = act_l(m, A_K, l), *v = act_l(m, A_V, l), *att = act_l(m, A_ATT, l),
              *mid = act_l(m, A_RESID_MID, l), *xn2 = act_l(m, A_XN2, l),
              *gate = act_l(m, A_GATE, l), *up = act_l(m, A_UP, l), *hmid = act_l(m, A_HMID, l);
        // MLP block: dres holds dL/dx'; the residual passes it to h unchanged
        zero_act(m, A_DHMID, (int64_t)N * F);
        matmul_backward(m->act[A_DHMID], layer_tensor(m->dfwd_t, m, T_WDOWN, l), m->act[A_MMT], dres, hmid,
                        layer_tensor(m->fwd_t, m, T_WDOWN, l), N, F, D);
        zero_act(m, A_DGATE, (int64_t)N * F);
        zero_act(m, A_DUP, (int64_t)N * F);
        swiglu_backward(m->act[A_DGATE], m->act[A_DUP], m->act[A_DHMID], gate, up, (int64_t)N * F);
        zero_act(m, A_DXN, (int64_t)N * D);
        matmul_backward(dxn, layer_tensor(m->dfwd_t, m, T_WGATE, l), m->act[A_MMT], m->act[A_DGATE], xn2,
                        layer_tensor(m->fwd_t, m, T_WGATE, l), N, D, F);
        matmul_backward(dxn, layer_tensor(m->dfwd_t, m, T_WUP, l), m->act[A_MMT], m->act[A_DUP], xn2,
                        layer_tensor(m->fwd_t, m, T_WUP, l), N, D, F);
        rmsnorm_backward(dres, layer_tensor(m->dfwd_t, m, T_MLP_NORM, l), dxn, mid,
                         layer_tensor(m->fwd_t, m, T_MLP_NORM, l), act_l(m, A_RSTD2, l), N, D);
        // attention block: dres now holds dL/dh, which the residual passes to x
        zero_act(m, A_DATT, (int64_t)N * Hq);
        matmul_backward(m->act[A_DATT], layer_tensor(m->dfwd_t, m, T_WO, l), m->act[A_MMT], dres,
                        c->quant_act_bits ? act_l(m, A_ATTQ, l) : att, layer_tensor(m->fwd_t, m, T_WO, l), N, Hq, D);
        zero_act(m, A_DQ, (int64_t)N * Hq);
        zero_act(m, A_DK, (int64_t)N * Hkv);
        zero_act(m, A_DV, (int64_t)N * Hkv);
        attention_backward(m->act[A_DQ], m->act[A_DK], m->act[A_DV], m->act[A_SCORES], m->act[A_DATT],
                           q, k, v, att, act_l(m, A_LSE, l), B, T, H, KV, hd);
        rope_backward(m->act[A_DQ], m->rope_cos, m->rope_sin, B, T, H, hd);
        rope_backward(m->act[A_DK], m->rope_cos, m->rope_sin, B, T, KV, hd);
        zero_act(m, A_DXN, (int64_t)N * D);
        matmul_backward(dxn, layer_tensor(m->dfwd_t, m, T_WQ, l), m->act[A_MMT], m->act[A_DQ], xn1,
                        layer_tensor(m->fwd_t, m, T_WQ, l), N, D, Hq);
        matmul_backward(dxn, layer_tensor(m->dfwd_t, m, T_WK, l), m->act[A_MMT], m->act[A_DK], xn1,
                        layer_tensor(m->fwd_t, m, T_WK, l), N, D, Hkv);
        matmul_backward(dxn, layer_tensor(m->dfwd_t, m, T_WV, l), m->act[A_MMT], m->act[A_DV], xn1,
                        layer_tensor(m->fwd_t, m, T_WV, l), N, D, Hkv);
        rmsnorm_backward(dres, layer_tensor(m->dfwd_t, m, T_ATTN_NORM, l), dxn, x,
                         layer_tensor(m->fwd_t, m, T_ATTN_NORM, l), act_l(m, A_RSTD1, l), N, D);
    }
    embedding_backward(m->dfwd_t[T_EMBED], dres, m->inputs, N, D);
    if (m->quant.method != QUANT_NONE) model_quant_backward(m);
}

// Backward of the mean cross-entropy of the last forward, times loss_scale (1/micro-batches
// when accumulating gradients).
static void model_backward_scaled(Model *m, float loss_scale) {
    if (!m->grads || !m->training) die("model_backward: the model was not set up for training");
    if (!m->has_targets) die("model_backward: the last forward had no targets");
    int N = m->B * m->T, V = m->cfg.vocab_size;
    zero_act(m, A_DLOGITS, (int64_t)N * V);
    crossentropy_backward(m->act[A_DLOGITS], m->logits, m->targets, N, V, loss_scale);
    model_backward_from_dlogits(m);
}

static void model_backward(Model *m) { model_backward_scaled(m, 1.0f); }

// ============================================================================================
// 5. Quantized linears
//
// Quantization-aware training keeps full-precision LATENT weights W as the trained parameters.
// Before a forward, each of the seven linears of every layer is replaced by its fake-quantized
// copy W^ = Q(W) (quant.h: INT-Asym, NF3/NF4, sign, OneBit, ternary); the forward and backward
// above run on W^ unchanged, through the fwd_t / dfwd_t tables. The backward's dL/dW^ is then
// mapped back by quant_backward: straight through to W (the straight-through estimator,
// Bengio et al. 2013, as BitDistiller trains), and exactly to the learned scales of sign
// (FBI-LLM, Ma et al. 2024) and OneBit (Xu et al. 2024). Embeddings, norms and the LM head stay
// full precision.

// Rows and columns of one layer's slice of linear tensor t.
static void linear_shape(const Model *m, int t, int *out, int *in) {
    int64_t r, k;
    tensor_slice_shape(&m->cfg, t, &r, &k);
    *out = (int)r;
    *in = (int)k;
}

// Points fwd_t/dfwd_t of the linears at wq/dwq, and qp0/qp1 at their scales: the learned ones
// in the parameter buffer after the table (so AdamW trains them like any weight), the others
// in qstate. init_learned: initialise sign/onebit scales from the weights (a new student).
static void model_quant_setup(Model *m, int init_learned) {
    const QuantSpec q = m->quant;
    int L = m->cfg.n_layers;
    int64_t n_lin = 0, n_derived = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!tensor_is_linear(t)) continue;
        int out, in;
        linear_shape(m, t, &out, &in);
        quant_param_sizes(&m->qn0[t], &m->qn1[t], q, out, in);
        n_lin += m->slice[t] * L;
        if (!quant_is_learned(q.method)) n_derived += (m->qn0[t] + m->qn1[t]) * L;
    }
    m->n_codes = n_lin;
    m->wq = malloc_or_die((size_t)n_lin * sizeof(float), "quantized weights");
    m->dwq = calloc_or_die((size_t)n_lin, sizeof(float), "quantized weight gradients");
    m->codes = calloc_or_die((size_t)n_lin, 1, "codes");
    m->codes_prev = calloc_or_die((size_t)n_lin, 1, "codes");
    m->qstate = calloc_or_die((size_t)n_derived, sizeof(float), "quantizer scales");
    m->flips_layer = calloc_or_die((size_t)L, sizeof(int64_t), "flips");
    float *w = m->wq, *dw = m->dwq, *learned = m->params + m->n_table, *derived = m->qstate;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!tensor_is_linear(t)) continue;
        m->fwd_t[t] = w; m->dfwd_t[t] = dw;
        w += m->slice[t] * L; dw += m->slice[t] * L;
        float **p = quant_is_learned(q.method) ? &learned : &derived;
        m->qp0[t] = *p; *p += m->qn0[t] * L;
        m->qp1[t] = *p; *p += m->qn1[t] * L;
    }
    if (init_learned && quant_is_learned(q.method))
        for (int t = 0; t < N_TENSORS; t++) {
            if (!tensor_is_linear(t)) continue;
            int out, in;
            linear_shape(m, t, &out, &in);
            for (int l = 0; l < L; l++) {
                int rc = quant_init_params(m->qp0[t] + l * m->qn0[t], m->qp1[t] + l * m->qn1[t],
                                           layer_tensor(m->params_t, m, t, l), q, out, in);
                if (rc) die("%s of layer %d: %s", TENSOR_NAMES[t], l, quant_error_string(rc));
            }
        }
    m->quant_stale = 1;
}

// Turns a full-precision model into a quantized student (before any training buffers exist).
static void model_apply_quant(Model *m, QuantSpec q) {
    if (m->grads) die("internal error: quantization must be chosen before training starts");
    const char *bad = quant_spec_check(&q, 0);  // fills in the width sign, onebit... imply
    if (bad) die("quantization %s: %s", quant_method_name(q.method), bad);
    ModelHeader c = m->cfg;
    c.quant_method = q.method; c.quant_bits = q.bits; c.quant_group = q.group;
    const char *why = header_problem(&c);
    if (why) die("quantization %s: %s", quant_method_name(q.method), why);
    m->cfg = c;
    m->quant = q;
    m->n_params = m->n_table + quant_learned_floats(&c);
    m->params = realloc(m->params, (size_t)m->n_params * sizeof(float));
    if (!m->params) die("out of memory for quantizer scales");
    tensor_carve(&c, m->params, m->params_t);
    memcpy(m->fwd_t, m->params_t, sizeof m->fwd_t);
    model_quant_setup(m, 1);
}

// W^ = Q(W) for every linear; counts the codes that changed since the last call (flip-flops,
// the instability of QAT the seed study monitors).
static void model_quantize(Model *m) {
    uint8_t *tmp = m->codes_prev; m->codes_prev = m->codes; m->codes = tmp;
    m->flips_total = 0;
    memset(m->flips_layer, 0, (size_t)m->cfg.n_layers * sizeof(int64_t));
    for (int t = 0; t < N_TENSORS; t++) {
        if (!tensor_is_linear(t)) continue;
        int out, in;
        linear_shape(m, t, &out, &in);
        int64_t base = layer_tensor(m->fwd_t, m, t, 0) - m->wq;  // where t's codes start
        m->flips[t] = 0;
        for (int l = 0; l < m->cfg.n_layers; l++) {
            uint8_t *codes = m->codes + base + (int64_t)l * m->slice[t];
            int rc = quant_forward(layer_tensor(m->fwd_t, m, t, l), codes, m->qp0[t] + l * m->qn0[t],
                                   m->qp1[t] + l * m->qn1[t], layer_tensor(m->params_t, m, t, l), m->quant, out, in);
            if (rc) die("%s of layer %d: %s", TENSOR_NAMES[t], l, quant_error_string(rc));
            if (!m->codes_valid) continue;
            int64_t f = count_flips(m->codes_prev + base + (int64_t)l * m->slice[t], codes, m->slice[t]);
            m->flips[t] += f;
            m->flips_layer[l] += f;
        }
        m->flips_total += m->flips[t];
    }
    m->codes_valid = 1;
    m->quant_stale = 0;
}

// After a backward: dL/dW += STE(dL/dW^) and the learned scales' exact gradients; then clears
// dwq for the next backward (it holds one backward's gradient, not an accumulation).
static void model_quant_backward(Model *m) {
    int learned = quant_is_learned(m->quant.method);
    for (int t = 0; t < N_TENSORS; t++) {
        if (!tensor_is_linear(t)) continue;
        int out, in;
        linear_shape(m, t, &out, &in);
        #pragma omp parallel for if (!learned)
        for (int l = 0; l < m->cfg.n_layers; l++) {
            float *p0 = m->qp0[t] + l * m->qn0[t], *p1 = m->qp1[t] + l * m->qn1[t];
            float *dp0 = learned ? m->grads + (p0 - m->params) : NULL, *dp1 = learned ? m->grads + (p1 - m->params) : NULL;
            quant_backward(layer_tensor(m->grads_t, m, t, l), dp0, dp1, layer_tensor(m->dfwd_t, m, t, l),
                           layer_tensor(m->params_t, m, t, l), p0, p1, m->quant, out, in);
        }
    }
    memset(m->dwq, 0, (size_t)m->n_codes * sizeof(float));
}

// The asymmetric clipping search that initialises the student (BitDistiller, Du et al. 2024).
// Layer by layer, the full-precision model runs on calibration tokens and each linear's input X
// is captured; clip_search_asym (quant.h) then picks, per group, how far to pull in its max and
// min so that the LAYER OUTPUT X w changes least when the clipped weights are quantized, and the
// weights are replaced by the clipped ones. The next layer sees this layer's output after
// clipping. q and k are left alone: attention logits are too sensitive to clip (BitDistiller).
// n_sample of the B*T positions (evenly spaced) are used for the error. Returns the summed
// squared-error of round-to-nearest and of the clipped weights over all searched groups.
typedef struct { double err_rtn, err_clipped; int64_t groups; } ClipResult;

static ClipResult clip_model(Model *m, QuantSpec q, const int *tokens, int B, int T, int n_sample) {
    if (m->quant.method != QUANT_NONE) die("--clip needs a full-precision model");
    const ModelHeader *c = &m->cfg;
    int N = B * T, D = c->dim;
    model_alloc_acts(m, B, T, 0);
    if (n_sample > N) n_sample = N;
    static const int targets[5] = {T_WV, T_WO, T_WGATE, T_WUP, T_WDOWN};
    static const int inputs[5] = {A_XN1, A_ATT, A_XN2, A_XN2, A_HMID};
    int widest = D > c->hidden_dim ? D : c->hidden_dim;
    if (c->n_heads * c->head_dim > widest) widest = c->n_heads * c->head_dim;
    float *saved = malloc_or_die((size_t)N * D * sizeof(float), "clip: residual");
    float *x = malloc_or_die((size_t)n_sample * widest * sizeof(float), "clip: inputs");
    ClipResult r = {0, 0, 0};
    double t0 = now_seconds();
    embedding_forward(act_l(m, A_RESID, 0), tokens, m->fwd_t[T_EMBED], N, D);
    for (int l = 0; l < c->n_layers; l++) {
        memcpy(saved, act_l(m, A_RESID, 0), (size_t)N * D * sizeof(float));
        layer_forward(m, l, B, T);  // inference activations: this layer's inputs stay captured
        double before = 0, after = 0;
        for (int i = 0; i < 5; i++) {
            int t = targets[i], out, in;
            linear_shape(m, t, &out, &in);
            const float *src = act_l(m, inputs[i], l);
            for (int k = 0; k < n_sample; k++)  // evenly spaced positions
                memcpy(x + (int64_t)k * in, src + (int64_t)((int64_t)k * N / n_sample) * in, (size_t)in * sizeof(float));
            int64_t groups = (int64_t)out * (in / quant_group_len(q, in));
            float *w = layer_tensor(m->params_t, m, t, l);
            float *wclip = malloc_or_die((size_t)out * in * sizeof(float), "clip: weights");
            float *e0 = malloc_or_die((size_t)groups * sizeof(float), "clip: errors");
            float *e1 = malloc_or_die((size_t)groups * sizeof(float), "clip: errors");
            int rc = clip_search_asym(wclip, e0, e1, w, x, q, out, in, n_sample);
            if (rc) die("--clip: %s of layer %d: %s", TENSOR_NAMES[t], l, quant_error_string(rc));
            for (int64_t g = 0; g < groups; g++) { before += e0[g]; after += e1[g]; }
            r.groups += groups;
            memcpy(w, wclip, (size_t)out * in * sizeof(float));
            free(wclip); free(e0); free(e1);
        }
        // this layer's output with its clipped weights: the next layer's input
        memcpy(act_l(m, A_RESID, 0), saved, (size_t)N * D * sizeof(float));
        layer_forward(m, l, B, T);
        r.err_rtn += before;
        r.err_clipped += after;
        printf("clip: layer %2d/%d | output error of RTN %.4g -> clipped %.4g (%.1f%% lower) | %.1f s\n", l + 1,
               c->n_layers, before, after, before > 0 ? 100.0 * (before - after) / before : 0.0, now_seconds() - t0);
        fflush(stdout);
    }
    free(saved); free(x);
    return r;
}

// ============================================================================================
// 6. Distillation
//
// The quantized student learns to match its full-precision teacher's next-token distribution
// (BitDistiller, Du et al. 2024): per position, a loss between the student's logits z_s and the
// teacher's z_t from loss.h (CE, forward or reverse KL, CAKLD, CAKLD + CE with temperature,
// Wasserstein), summed over the real positions of a sequence and averaged over sequences. The
// teacher only runs forward; its logits never need gradients.
//
// CAKLD = gamma KL(P_S || P_T) + (1 - gamma) KL(P_T || P_S) weighs mode-seeking reverse KL by the
// teacher's confidence gamma, the mean over real positions of max_v P_T(v), measured once on the
// first batches of the training data (gamma_accumulate; padding excluded unless asked).

typedef struct {
    DistillLoss loss;
    float *scratch;     // rows of distill_loss_scratch_floats() (Wasserstein only)
    int scratch_rows;
} Distiller;

static void distiller_init(Distiller *d, DistillLoss loss, int V, int Vt) {
    d->loss = loss;
    d->scratch_rows = 1;
#ifdef _OPENMP
    d->scratch_rows = omp_get_max_threads();
#endif
    size_t row = distill_loss_scratch_floats(loss.kind, V, Vt);
    d->scratch = row ? malloc_or_die(row * d->scratch_rows * sizeof(float), "loss scratch") : NULL;
}

// One micro-batch: teacher forward, student forward, the loss into the student's dL/dlogits
// (times `scale`, 1/micro-batches when accumulating), student backward. Returns the loss.
static double distill_step(Model *student, Model *teacher, const Distiller *d, const int *inputs,
                           const int *targets, int B, int T, float scale) {
    const float *zt = NULL;
    int Vt = student->cfg.vocab_size;
    if (d->loss.kind != LOSS_CE) {
        model_forward(teacher, inputs, NULL, B, T);
        zt = teacher->logits;
        Vt = teacher->cfg.vocab_size;
    }
    model_forward(student, inputs, NULL, B, T);
    int64_t n = (int64_t)B * T * student->cfg.vocab_size;
    float *dz = student->act[A_DLOGITS];
    double loss = distill_loss_batch(dz, d->scratch, d->scratch_rows, student->logits, zt, targets, B, T,
                                     student->cfg.vocab_size, Vt, d->loss);
    if (scale != 1.0f) {
        #pragma omp parallel for
        for (int64_t i = 0; i < n; i++) dz[i] *= scale;
    }
    model_backward_from_dlogits(student);
    return loss;
}

// ============================================================================================
// 7. The optimizer
//
// AdamW (Loshchilov & Hutter 2019), with decoupled weight decay applied to matrices only
// (norm weights are not decayed):
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
//   p -= lr * ( m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd p ).

typedef struct {
    float lr, min_lr, beta1, beta2, eps, weight_decay, grad_clip;
    int warmup, schedule;  // SCHED_*
} OptConfig;

enum { SCHED_CONSTANT, SCHED_COSINE };

// Learning rate at `step` (0-based) of `total`: linear warmup over `warmup` steps, then either
// constant or a cosine decay from lr to min_lr at the last step.
static float lr_at(const OptConfig *o, int64_t step, int64_t total) {
    if (o->warmup > 0 && step < o->warmup) return o->lr * (float)(step + 1) / (float)o->warmup;
    if (o->schedule == SCHED_CONSTANT || total <= o->warmup + 1) return o->lr;
    double progress = (double)(step - o->warmup) / (double)(total - o->warmup - 1);
    return o->min_lr + (o->lr - o->min_lr) * 0.5f * (1.0f + (float)cos(M_PI * progress));
}

// Global L2 norm of all gradients; if it exceeds `clip` (> 0), scale them down to it.
// Returns the norm before clipping.
static float clip_grad_norm(Model *m, float clip) {
    // a fixed number of chunks summed in a fixed order: the same norm whatever the thread
    // count and scheduling, which a resumed run needs to be bit-identical
    enum { CHUNKS = 64 };
    double part[CHUNKS];
    #pragma omp parallel for schedule(static)
    for (int c = 0; c < CHUNKS; c++) {
        double ss = 0.0;
        for (int64_t i = m->n_params * c / CHUNKS; i < m->n_params * (c + 1) / CHUNKS; i++) ss += (double)m->grads[i] * m->grads[i];
        part[c] = ss;
    }
    double ss = 0.0;
    for (int c = 0; c < CHUNKS; c++) ss += part[c];
    float norm = (float)sqrt(ss);
    if (clip > 0 && norm > clip) {
        float k = clip / norm;
        #pragma omp parallel for
        for (int64_t i = 0; i < m->n_params; i++) m->grads[i] *= k;
    }
    return norm;
}

// One span of parameters with its gradients and moments.
static void adamw_span(float *p, const float *g, float *mm, float *vv, int64_t n, const OptConfig *o,
                       float lr, float wd, float bc1, float bc2) {
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) {
        mm[i] = o->beta1 * mm[i] + (1.0f - o->beta1) * g[i];
        vv[i] = o->beta2 * vv[i] + (1.0f - o->beta2) * g[i] * g[i];
        float mhat = mm[i] / bc1, vhat = vv[i] / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + o->eps) + wd * p[i]);
    }
}

// The table's tensors (matrices decayed, norm weights not), then the learned quantizer scales
// (not decayed). The latent weights changed, so the next forward quantizes again.
static void adamw_update(Model *m, const OptConfig *o, float lr) {
    m->step++;
    float bc1 = 1.0f - powf(o->beta1, (float)m->step), bc2 = 1.0f - powf(o->beta2, (float)m->step);
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->params_t[t]) continue;
        int64_t r, k, n = m->slice[t] * (tensor_is_per_layer(t) ? m->cfg.n_layers : 1);
        tensor_slice_shape(&m->cfg, t, &r, &k);
        adamw_span(m->params_t[t], m->grads_t[t], m->m_t[t], m->v_t[t], n, o, lr, r > 1 ? o->weight_decay : 0.0f, bc1, bc2);
    }
    int64_t tail = m->n_table;
    adamw_span(m->params + tail, m->grads + tail, m->adam_m + tail, m->adam_v + tail, m->n_params - tail, o, lr, 0.0f, bc1, bc2);
    if (m->quant.method != QUANT_NONE) m->quant_stale = 1;
}

// ============================================================================================
// 8. Data: token files
//
// A `.ids` file is whitespace-separated decimal token ids (any number per line). Training takes
// random windows of T+1 tokens from the stream: inputs are the first T, targets the last T.

typedef struct {
    int *ids;
    int64_t n;
} TokenStream;

static TokenStream load_ids(const char *path, int vocab_size) {
    size_t len;
    char *text = read_file_or_die(path, &len);
    TokenStream s = {NULL, 0};
    int64_t cap = 1024;
    s.ids = malloc_or_die((size_t)cap * sizeof(int), path);
    const char *p = text;
    int line = 1;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') line += *p++ == '\n';
        if (!*p) break;
        if (*p < '0' || *p > '9') die("%s: line %d: expected a token id, found '%c'", path, line, *p);
        long long v = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p++ - '0');
            if (v > 1000000000LL) die("%s: line %d: token id too large", path, line);
        }
        if (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            die("%s: line %d: expected a token id, found '%c'", path, line, *p);
        if (v >= vocab_size) die("%s: line %d: token id %lld out of the model's vocabulary (%d)", path, line, v, vocab_size);
        if (s.n == cap) { cap *= 2; s.ids = realloc(s.ids, (size_t)cap * sizeof(int)); if (!s.ids) die("%s: out of memory", path); }
        s.ids[s.n++] = (int)v;
    }
    free(text);
    if (s.n == 0) die("%s: no token ids in the file", path);
    return s;
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// A token file: `.ids` as above, or any other file as UTF-8 text, tokenized once with BOS by
// the model's tokenizer (tok; NULL when the model has none).
static TokenStream load_tokens(const char *path, const Tokenizer *tok, int vocab_size) {
    if (has_suffix(path, ".ids")) return load_ids(path, vocab_size);
    if (!tok) die("%s: a text file needs the model's tokenizer (--tokenizer FILE, or MODEL.tokenizer beside the model); "
                  "token ids go in a .ids file", path);
    size_t len;
    char *text = read_file_or_die(path, &len);
    TokenStream s;
    int64_t cap = 3 * (int64_t)len + 2;
    if (cap > INT32_MAX) die("%s: too large to tokenize at once (%zu bytes)", path, len);
    s.ids = malloc_or_die((size_t)cap * sizeof(int), path);
    s.n = tokenizer_encode(tok, text, len, TOK_ADD_BOS, s.ids, (int)cap);
    free(text);
    for (int64_t i = 0; i < s.n; i++)
        if (s.ids[i] >= vocab_size) die("%s: the tokenizer made id %d, outside the model's vocabulary (%d)", path, s.ids[i], vocab_size);
    printf("tokenized %s: %zu bytes -> %lld tokens\n", path, len, (long long)s.n);
    return s;
}

// Fills inputs/targets [B,T] with B random windows of the stream.
static void sample_batch(int *inputs, int *targets, const TokenStream *s, int B, int T, Rng *rng) {
    for (int b = 0; b < B; b++) {
        int64_t start = (int64_t)(rng_u64(rng) % (uint64_t)(s->n - T));
        for (int t = 0; t < T; t++) {
            inputs[b * T + t] = s->ids[start + t];
            targets[b * T + t] = s->ids[start + t + 1];
        }
    }
}

// ============================================================================================
// 9. Evaluation: perplexity
//
// As GPTQ and BitDistiller compute WikiText-2 perplexity: the token stream is cut into
// floor(n/T) non-overlapping windows of T tokens (the remainder is dropped); each window is run
// on its own from position 0; its loss is the mean cross-entropy of predicting its tokens
// 1..T-1; ppl = exp(mean of the window losses).

typedef struct { double ppl, mean_loss; int64_t windows; } PplResult;

static PplResult eval_ppl(Model *m, const TokenStream *s, int T, int B, const char *path) {
    int64_t windows = s->n / T;
    if (windows == 0) die("%s: %lld tokens, fewer than one perplexity window of %d", path, (long long)s->n, T);
    int *inputs = malloc_or_die((size_t)B * T * sizeof(int), "eval inputs");
    int *targets = malloc_or_die((size_t)B * T * sizeof(int), "eval targets");
    double sum = 0.0, t0 = now_seconds();
    for (int64_t w0 = 0; w0 < windows; w0 += B) {
        int nb = windows - w0 < B ? (int)(windows - w0) : B;
        for (int b = 0; b < nb; b++) {
            const int *win = s->ids + (w0 + b) * T;
            for (int t = 0; t < T; t++) {
                inputs[b * T + t] = win[t];
                targets[b * T + t] = t + 1 < T ? win[t + 1] : -1;
            }
        }
        // one forward per window group; the loss of each window is its own mean
        model_forward(m, inputs, NULL, nb, T);
        for (int b = 0; b < nb; b++)
            sum += crossentropy_forward(m->logits + (int64_t)b * T * m->cfg.vocab_size, targets + b * T, T, m->cfg.vocab_size);
        int64_t done = w0 + nb, every = windows / 10 > 0 ? windows / 10 : 1;
        if (done % every < nb || done == windows) {  // about ten progress lines
            double el = now_seconds() - t0, tps = (double)done * T / (el > 0 ? el : 1e-9);
            char eta[32];
            format_eta(eta, sizeof eta, (double)(windows - done) * T / tps);
            printf("ppl: window %lld/%lld | running ppl %.3f | %.0f tok/s | ETA %s\n", (long long)done,
                   (long long)windows, exp(sum / done), tps, eta);
            fflush(stdout);
        }
    }
    free(inputs); free(targets);
    PplResult r = {exp(sum / windows), sum / windows, windows};
    return r;
}

// ============================================================================================
// 10. Generation: a KV cache and sampling
//
// To continue a text, each new token needs attention over all earlier ones; their keys and
// values do not change, so they are kept (the KV cache) and each step runs the model on one
// position per sequence: N = B rows instead of B*T. The per-token ops are the layers above,
// called with T = 1; only attention reads the cache.

typedef struct {
    int B, T;             // sequences, positions the cache holds
    float *k, *v;         // [L, B, T, KV*hd]
    float *cosv, *sinv;   // RoPE tables for positions 0..T-1, [T, hd/2]
    float *scores;        // [B, H, T] attention scratch (the activations hold one position only)
} KVCache;

static void kv_alloc(KVCache *kv, const Model *m, int B, int T) {
    const ModelHeader *c = &m->cfg;
    int64_t n = (int64_t)c->n_layers * B * T * c->n_kv_heads * c->head_dim;
    kv->B = B; kv->T = T;
    kv->k = malloc_or_die((size_t)n * sizeof(float), "KV cache");
    kv->v = malloc_or_die((size_t)n * sizeof(float), "KV cache");
    kv->cosv = malloc_or_die((size_t)T * c->head_dim / 2 * sizeof(float), "rope");
    kv->sinv = malloc_or_die((size_t)T * c->head_dim / 2 * sizeof(float), "rope");
    kv->scores = malloc_or_die((size_t)B * c->n_heads * T * sizeof(float), "attention scores");
    rope_tables(kv->cosv, kv->sinv, c, T);
}

static void kv_free(KVCache *kv) { free(kv->k); free(kv->v); free(kv->cosv); free(kv->sinv); free(kv->scores); }

// One query per (b, h) at position pos against the cached keys/values 0..pos:
// out[B,H,hd] = sum_j softmax_j(q . k_j / sqrt(hd)) v_j, with scores[B,H,T] as scratch.
static void attention_decode(float *out, float *scores, const float *q, const float *kc, const float *vc,
                             int B, int T, int pos, int H, int KV, int hd) {
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for collapse(2)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *qh = q + ((int64_t)b * H + h) * hd;
            float *s = scores + ((int64_t)b * H + h) * T, mx = -INFINITY, sum = 0.0f;
            int kvh = h / group;
            for (int j = 0; j <= pos; j++) {
                const float *kj = kc + (((int64_t)b * T + j) * KV + kvh) * hd;
                float d = 0.0f;
                for (int i = 0; i < hd; i++) d += qh[i] * kj[i];
                s[j] = d * scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            for (int j = 0; j <= pos; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
            float *o = out + ((int64_t)b * H + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = 0.0f;
            for (int j = 0; j <= pos; j++) {
                const float *vj = vc + (((int64_t)b * T + j) * KV + kvh) * hd;
                float p = s[j] / sum;
                for (int i = 0; i < hd; i++) o[i] += p * vj[i];
            }
        }
}

// Runs tokens[B] at position pos (every sequence at the same position), appending their keys
// and values to the cache; the next-token logits [B,V] land in m->logits.
static void model_decode_step(Model *m, KVCache *kv, const int *tokens, int pos) {
    const ModelHeader *c = &m->cfg;
    int B = kv->B, D = c->dim, F = c->hidden_dim, V = c->vocab_size, H = c->n_heads,
        KV = c->n_kv_heads, hd = c->head_dim, Hq = H * hd, Hkv = KV * hd, half = hd / 2;
    if (pos >= kv->T) die("generation: position %d beyond the cache (%d)", pos, kv->T);
    if (m->quant_stale) model_quantize(m);
    model_alloc_acts(m, B, 1, 0);  // inference activations for B rows of one position
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V) die("token id %d out of range [0, %d)", tokens[b], V);
    float *x = m->act[A_RESID], *xn = m->act[A_XN1], *q = m->act[A_Q], *k = m->act[A_K],
          *v = m->act[A_V], *att = m->act[A_ATT], *mid = m->act[A_RESID_MID], *proj = m->act[A_PROJ],
          *gate = m->act[A_GATE], *up = m->act[A_UP], *hmid = m->act[A_HMID], *mmt = m->act[A_MMT];
    const float *cosp = kv->cosv + (int64_t)pos * half, *sinp = kv->sinv + (int64_t)pos * half;
    embedding_forward(x, tokens, m->fwd_t[T_EMBED], B, D);
    for (int l = 0; l < c->n_layers; l++) {
        float *kc = kv->k + (int64_t)l * B * kv->T * Hkv, *vc = kv->v + (int64_t)l * B * kv->T * Hkv;
        rmsnorm_forward(xn, m->act[A_RSTD1], x, layer_tensor(m->fwd_t, m, T_ATTN_NORM, l), B, D, c->rms_norm_eps);
        act_quant(m, xn, xn, B, D);  // the linears' inputs, as layer_forward quantizes them (in place: no backward)
        matmul_forward(q, mmt, xn, layer_tensor(m->fwd_t, m, T_WQ, l), B, D, Hq);
        matmul_forward(k, mmt, xn, layer_tensor(m->fwd_t, m, T_WK, l), B, D, Hkv);
        matmul_forward(v, mmt, xn, layer_tensor(m->fwd_t, m, T_WV, l), B, D, Hkv);
        rope_forward(q, cosp, sinp, B, 1, H, hd);
        rope_forward(k, cosp, sinp, B, 1, KV, hd);
        for (int b = 0; b < B; b++) {
            memcpy(kc + ((int64_t)b * kv->T + pos) * Hkv, k + (int64_t)b * Hkv, (size_t)Hkv * sizeof(float));
            memcpy(vc + ((int64_t)b * kv->T + pos) * Hkv, v + (int64_t)b * Hkv, (size_t)Hkv * sizeof(float));
        }
        attention_decode(att, kv->scores, q, kc, vc, B, kv->T, pos, H, KV, hd);
        act_quant(m, att, att, B, Hq);
        matmul_forward(proj, mmt, att, layer_tensor(m->fwd_t, m, T_WO, l), B, Hq, D);
        residual_forward(mid, x, proj, (int64_t)B * D);
        rmsnorm_forward(xn, m->act[A_RSTD2], mid, layer_tensor(m->fwd_t, m, T_MLP_NORM, l), B, D, c->rms_norm_eps);
        act_quant(m, xn, xn, B, D);
        matmul_forward(gate, mmt, xn, layer_tensor(m->fwd_t, m, T_WGATE, l), B, D, F);
        matmul_forward(up, mmt, xn, layer_tensor(m->fwd_t, m, T_WUP, l), B, D, F);
        swiglu_forward(hmid, gate, up, (int64_t)B * F);
        act_quant(m, hmid, hmid, B, F);
        matmul_forward(proj, mmt, hmid, layer_tensor(m->fwd_t, m, T_WDOWN, l), B, F, D);
        residual_forward(x, mid, proj, (int64_t)B * D);
    }
    rmsnorm_forward(m->act[A_XNF], m->act[A_RSTDF], x, m->fwd_t[T_FINAL_NORM], B, D, c->rms_norm_eps);
    matmul_forward(m->logits, mmt, m->act[A_XNF], m->fwd_t[lm_head_tensor(m)], B, D, V);
}

// Where generate() and eval.c's scoring get the model's numbers when the model does not run
// here: NULL in ./train, which runs this file's CPU code; train_cu points it at its GPU KV cache,
// decode step and scoring kernels (train.cu, section 10), so that prompts, tokenization,
// sampling and its RNG, tasks, metrics and the files written stay this file's alone.
typedef struct {
    void (*decode_begin)(Model *m, int B, int T);   // an empty KV cache: B sequences, T positions
    // tokens[B] at position pos, their keys and values appended: the next-token logits [B,V]
    const float *(*decode_step)(Model *m, const int *tokens, int pos);
    void (*decode_end)(Model *m);
    // lp[n] = log softmax(the logits at n of inputs[B,T])[targets[n]] wherever targets[n] >= 0
    void (*target_logprobs)(Model *m, const int *inputs, const int *targets, int B, int T, double *lp);
} InferenceBackend;
static const InferenceBackend *inference_backend;

// Samples from softmax(z / temperature) restricted to the smallest set of tokens whose
// probability reaches top_p (nucleus sampling, Holtzman et al. 2020). temperature 0 = argmax.
// probs[V] and order[V] are scratch.
static int sample_token(const float *z, int V, float temperature, float top_p, Rng *rng, float *probs, int *order) {
    int best = 0;
    for (int i = 1; i < V; i++) best = z[i] > z[best] ? i : best;
    if (temperature <= 0.0f) return best;
    double sum = 0.0;
    for (int i = 0; i < V; i++) { probs[i] = expf((z[i] - z[best]) / temperature); sum += probs[i]; }
    for (int i = 0; i < V; i++) probs[i] = (float)(probs[i] / sum);
    int n = V;
    if (top_p < 1.0f) {
        // sort ids by probability (descending) and keep the nucleus
        for (int i = 0; i < V; i++) order[i] = i;
        for (int i = 1; i < V; i++) {  // insertion sort: V is at most a few hundred thousand,
            int id = order[i], j = i;  // and most mass sits at the front after the first swaps
            while (j > 0 && probs[order[j - 1]] < probs[id]) { order[j] = order[j - 1]; j--; }
            order[j] = id;
        }
        double cum = 0.0;
        for (n = 0; n < V && cum < top_p; n++) cum += probs[order[n]];
        double r = rng_uniform(rng) * cum, acc = 0.0;
        for (int i = 0; i < n; i++) { acc += probs[order[i]]; if (r < acc) return order[i]; }
        return order[n - 1];
    }
    double r = rng_uniform(rng), acc = 0.0;
    for (int i = 0; i < V; i++) { acc += probs[i]; if (r < acc) return i; }
    return best;
}

// Continues B prompts (ids, lengths) by up to max_new tokens each, stopping a sequence at EOS.
// All sequences advance one position per step: while a sequence is still inside its prompt it
// is fed its next prompt token, so prompts of different lengths need no padding.
// out[b] receives the new tokens (EOS excluded), out_len[b] their count.
static void generate(Model *m, int *const *prompts, const int *prompt_len, int B, int max_new,
                     float temperature, float top_p, Rng *rng, int **out, int *out_len) {
    int longest = 0, V = m->cfg.vocab_size;
    for (int b = 0; b < B; b++) longest = prompt_len[b] > longest ? prompt_len[b] : longest;
    int T = longest + max_new;
    if (T > m->cfg.max_seq_len) T = m->cfg.max_seq_len;
    const InferenceBackend *be = inference_backend;
    KVCache kv = {0};
    if (be) be->decode_begin(m, B, T);
    else kv_alloc(&kv, m, B, T);
    int *tok = malloc_or_die((size_t)B * sizeof(int), "tokens"), *done = calloc_or_die(B, sizeof(int), "done");
    float *probs = malloc_or_die((size_t)V * sizeof(float), "probs");
    int *order = malloc_or_die((size_t)V * sizeof(int), "order");
    for (int b = 0; b < B; b++) { out_len[b] = 0; tok[b] = prompt_len[b] > 0 ? prompts[b][0] : 0; }
    for (int pos = 0; pos + 1 < T; pos++) {
        const float *logits;
        if (be) logits = be->decode_step(m, tok, pos);
        else { model_decode_step(m, &kv, tok, pos); logits = m->logits; }
        int active = 0;
        for (int b = 0; b < B; b++) {
            if (pos + 1 < prompt_len[b]) { tok[b] = prompts[b][pos + 1]; active++; continue; }
            if (done[b] || out_len[b] >= max_new) { done[b] = 1; continue; }
            int next = sample_token(logits + (int64_t)b * V, V, temperature, top_p, rng, probs, order);
            if (next == m->cfg.eos_id) { done[b] = 1; continue; }
            out[b][out_len[b]++] = next;
            tok[b] = next;
            active++;
        }
        if (!active) break;
    }
    free(tok); free(done); free(probs); free(order);
    if (be) be->decode_end(m);
    else kv_free(&kv);
}

// Zero-shot multiple-choice evaluation (PIQA, HellaSwag, WinoGrande, ARC) and WikiText-2, scored
// as lm-evaluation-harness does: eval.c.
#include "lib/eval.c"

// The data of a distillation run: JSONL examples (batches with loss masks, the train/eval split)
// and the teacher's own generated data (BitDistiller's self-generated data): data.c.
#include "lib/data.c"

// ============================================================================================
// 11. The training loop, the command line and main

typedef struct {
    // model
    const char *model_path, *init_shape, *out_path, *tokenizer_path;
    int init_vocab;
    int out_dtype;
    uint64_t seed;
    // training
    const char *train_tokens, *data, *log_path;
    int steps, steps_given, epochs, batch, micro_batch, seq, save_every, eval_every, mask_prompt;
    OptConfig opt;
    // distillation
    const char *teacher_path, *clip_init, *resume, *ckpt;
    int loss_kind, loss_given, gamma_batches, gamma_include_pad, stop_after, inject_nan;
    float gamma, temperature;
    int temperature_given;
    // teacher-generated data and --generate
    int generate_data, n_prompts, max_new, gen_batch;
    const char *prompts, *generate_prompt;
    float top_p;
    // evaluation
    const char *eval_ppl, *eval_qa;
    int limit, qa_no_bos;
    int eval_T, eval_batch;
    // quantization
    QuantSpec quant;
    int quant_given, act_bits;
    int clip, calib_seqs, calib_len, clip_tokens;
    const char *calib, *export_packed, *histogram_out;
    int histogram;
    // other
    int threads, bench;
} Args;

static void usage(void) {
    printf(
        "usage: ./train [options]\n"
        "\n"
        "Model:\n"
        "  -m FILE               model to load (.bin, see model.h)\n"
        "  --init SHAPE          start from random weights of a named shape:\n"
        "                        tiny, study-10m, study-40m, bench-100m, tinyllama-1.1b, llama-3.2-1b,\n"
        "                        llama-3.2-3b, llama-2-7b\n"
        "  --vocab N             with --init: this vocabulary size instead of the shape's\n"
        "  --seed N              seed of initialisation and data sampling [42]\n"
        "  -o FILE               write the resulting model here (atomically) [none]\n"
        "  --dtype f32|bf16      dtype of the written model [f32]\n"
        "  --tokenizer FILE      tokenizer.model / tokenizer.json / tokenizer.bin for text files\n"
        "                        [MODEL.tokenizer beside -m, if present]\n"
        "\n"
        "Quantization (of the seven linears of every layer; training and evaluation):\n"
        "  -b BITS               bits per weight; 16 = full precision [16]\n"
        "  -g GROUP              weights per group along the input dimension, -1 = whole row [128]\n"
        "  -q METHOD             int | nf3 | nf4 | sign | onebit | ternary [int]; nf3, nf4, sign,\n"
        "                        onebit and ternary imply their bit width\n"
        "  --act-bits 0|8        8: also quantize the inputs of those linears per token (BitNet\n"
        "                        b1.58's absmax, straight-through backward) [0]\n"
        "  --clip                asymmetric clipping search (BitDistiller): write to -o the full-\n"
        "                        precision weights clipped for -q/-b/-g (int, nf3, nf4)\n"
        "  --calib FILE          calibration tokens for --clip (.ids or text)\n"
        "  --calib-seqs N        calibration sequences [128, or what the file holds]\n"
        "  --calib-len N         tokens per calibration sequence [min(1024, context)]\n"
        "  --clip-tokens N       positions sampled for each linear's error [512]\n"
        "  --export-packed FILE  write the quantized model as packed low-bit codes + fp16 scales\n"
        "                        (.qbin; -m loads it back, dequantized)\n"
        "  --histogram L         histograms (CSV + SVG) and entropies of layer L's FP and\n"
        "                        quantized weights\n"
        "  --histogram-out P     file prefix for --histogram [histogram_layerL]\n"
        "\n"
        "Training data (one of the two; a quantized model trains its latent weights):\n"
        "  --data FILE           JSONL examples: [[\"prompt\", \"response\"]], {\"prompt\", \"response\"}\n"
        "                        or {\"text\"}; right-padded to --seq; the first fifth is held out\n"
        "  --train-tokens FILE   a token stream (.ids or text): random windows of --seq tokens\n"
        "  --epochs N            passes over --data's training split [4]\n"
        "  --steps N             optimizer steps [100; with --data: what --epochs takes]\n"
        "  --mask-prompt         with --data: no loss on prompt tokens (the ablation; BitDistiller\n"
        "                        trains on every real token)\n"
        "  --eval-every N        with --data: the held-out loss every N steps [0 = at the end]\n"
        "  --batch N             sequences per optimizer step [16]\n"
        "  --micro-batch N       sequences per forward/backward; batch/micro-batch steps are\n"
        "                        accumulated [4]\n"
        "  --seq N               tokens per sequence [min(1024, model context)]\n"
        "  --lr F                peak learning rate [2e-5]\n"
        "  --min-lr F            final learning rate of the cosine schedule [0]\n"
        "  --schedule S          constant | cosine (after warmup) [constant]\n"
        "  --warmup N            linear warmup steps [0]\n"
        "  --weight-decay F      AdamW decoupled weight decay, matrices only [0]\n"
        "  --beta1 F --beta2 F   AdamW betas [0.9, 0.999]\n"
        "  --adam-eps F          AdamW epsilon [1e-8]\n"
        "  --grad-clip F         clip the global gradient norm to F, 0 = off [1.0]\n"
        "  --save-every N        write the checkpoint every N steps [0 = only at the end]\n"
        "  --log FILE            JSONL log of every step [none]\n"
        "\n"
        "Distillation (a quantized student learns from its full-precision teacher):\n"
        "  -t FILE               teacher [the -m model itself: self-distillation]; its vocabulary\n"
        "                        must equal the student's unless --loss wasserstein\n"
        "  --clip-init FILE      the student's initial weights (from --clip) [the -m model]\n"
        "  --loss L              ce | fkl | rkl | cakld | cakld_ce | wasserstein [cakld]; used whenever\n"
        "                        the model is quantized or -t is given\n"
        "  --gamma F             CAKLD's teacher confidence [measured on the data]\n"
        "  --gamma-batches N     micro-batches to measure gamma on [20]\n"
        "  --gamma-include-pad   average over padding too (BitDistiller's original code)\n"
        "  --temperature F       cakld_ce's temperature [20]; when generating, the sampling\n"
        "                        temperature [0.7, BitDistiller's]\n"
        "  --ckpt FILE           checkpoint (weights, AdamW state, data position, RNG) written every\n"
        "                        --save-every steps and at the end [OUT.ckpt with -o]\n"
        "  --resume FILE         continue from a checkpoint, bit-identical to an uninterrupted run\n"
        "  --stop-after N        stop after step N as if interrupted (for tests of --resume)\n"
        "  --inject-nan N        fault injection for tests: poison a weight before step N\n"
        "\n"
        "Teacher-generated data and generation (with the -m model, on its tokenizer):\n"
        "  --generate-data       continue --prompts with the model; write [[\"prompt\", \"response\"]]\n"
        "                        lines to -o (the --data format)\n"
        "  --prompts SPEC        prompt sources: wikitext:FILE, alpaca:FILE, text:FILE, or a mix\n"
        "                        \"wikitext:W=600,alpaca:A=400\" (counts optional; see README)\n"
        "  --n N                 prompts in all [every prompt of the sources]\n"
        "  --max-new N, -n N     new tokens per response, at most [1024]\n"
        "  --top-p F             nucleus sampling [1.0]\n"
        "  --gen-batch N         prompts decoded together [16]\n"
        "  --generate TEXT       print the model's continuation of TEXT (--max-new, --temperature,\n"
        "                        --top-p, --seed)\n"
        "\n"
        "Evaluation:\n"
        "  --eval-ppl FILE       perplexity on a .ids or text file (non-overlapping windows)\n"
        "  -T N                  window length [min(2048, model context)]\n"
        "  --eval-batch N        windows per forward [1]\n"
        "                        (--eval-ppl wikitext2:DIR: WikiText-2's wiki.test.raw, joined as GPTQ)\n"
        "  --eval-qa TASKS       zero-shot accuracy, comma-separated: piqa, hellaswag, winogrande,\n"
        "                        arc_easy, arc_challenge (files under --data)\n"
        "  --data DIR            with --eval-qa: the folder of the task files (see README)\n"
        "  --limit N             at most N items per task [all]\n"
        "  --qa-no-bos           score without BOS (lm-evaluation-harness before v0.4.10)\n"
        "\n"
        "Other:\n"
        "  --threads N           OpenMP threads [all cores]\n"
        "  --bench               time full training steps on random tokens (--micro-batch x --seq,\n"
        "                        --steps timed) and report tokens/s and GFLOP/s\n"
        "  -h, --help            this text\n"
        "\n"
        "The last line of stdout is one JSON object with the results.\n");
}

static int parse_int(const char *flag, const char *v) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < -2147483647L || x > 2147483647L) die("%s: expected an integer, got '%s'", flag, v);
    return (int)x;
}

static float parse_float(const char *flag, const char *v) {
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || *end || end == v || !isfinite(x)) die("%s: expected a number, got '%s'", flag, v);
    return x;
}

static int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// --data names the training examples, or with --eval-qa the folder of the task files.
static const char *train_data_path(const Args *a) { return a->data && !a->eval_qa ? a->data : NULL; }

static Args parse_args(int argc, char **argv) {
    Args a;
    memset(&a, 0, sizeof a);
    a.seed = 42; a.steps = 100; a.epochs = 4; a.batch = 16; a.micro_batch = 4; a.eval_batch = 1;
    a.max_new = 1024; a.top_p = 1.0f; a.gen_batch = 16;
    a.quant = (QuantSpec){QUANT_INT, 0, 128};
    a.calib_seqs = 128; a.clip_tokens = 512; a.histogram = -1;
    a.loss_kind = LOSS_CAKLD; a.gamma = -1.0f; a.gamma_batches = 20; a.temperature = 20.0f;
    a.opt = (OptConfig){.lr = 2e-5f, .min_lr = 0.0f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                        .weight_decay = 0.0f, .grad_clip = 1.0f, .warmup = 0, .schedule = SCHED_CONSTANT};
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (!strcmp(f, "-h") || !strcmp(f, "--help")) { usage(); exit(0); }
        if (!strcmp(f, "--bench")) { a.bench = 1; continue; }
        if (!strcmp(f, "--clip")) { a.clip = 1; continue; }
        if (!strcmp(f, "--gamma-include-pad")) { a.gamma_include_pad = 1; continue; }
        if (!strcmp(f, "--qa-no-bos")) { a.qa_no_bos = 1; continue; }
        if (!strcmp(f, "--mask-prompt")) { a.mask_prompt = 1; continue; }
        if (!strcmp(f, "--generate-data")) { a.generate_data = 1; continue; }
        if (i + 1 >= argc) die("%s: missing value (see ./train --help)", f);
        const char *v = argv[++i];
        if (!strcmp(f, "-m")) a.model_path = v;
        else if (!strcmp(f, "--init")) a.init_shape = v;
        else if (!strcmp(f, "--vocab")) a.init_vocab = parse_int(f, v);
        else if (!strcmp(f, "--seed")) a.seed = (uint64_t)parse_int(f, v);
        else if (!strcmp(f, "-o")) a.out_path = v;
        else if (!strcmp(f, "--tokenizer")) a.tokenizer_path = v;
        else if (!strcmp(f, "--dtype")) {
            if (!strcmp(v, "f32")) a.out_dtype = DTYPE_F32;
            else if (!strcmp(v, "bf16")) a.out_dtype = DTYPE_BF16;
            else die("--dtype: expected f32 or bf16, got '%s'", v);
        }
        else if (!strcmp(f, "--train-tokens")) a.train_tokens = v;
        else if (!strcmp(f, "--steps")) { a.steps = parse_int(f, v); a.steps_given = 1; }
        else if (!strcmp(f, "--epochs")) a.epochs = parse_int(f, v);
        else if (!strcmp(f, "--eval-every")) a.eval_every = parse_int(f, v);
        else if (!strcmp(f, "--prompts")) a.prompts = v;
        else if (!strcmp(f, "--n")) a.n_prompts = parse_int(f, v);
        else if (!strcmp(f, "--max-new") || !strcmp(f, "-n")) a.max_new = parse_int(f, v);
        else if (!strcmp(f, "--top-p")) a.top_p = parse_float(f, v);
        else if (!strcmp(f, "--gen-batch")) a.gen_batch = parse_int(f, v);
        else if (!strcmp(f, "--generate")) a.generate_prompt = v;
        else if (!strcmp(f, "--batch")) a.batch = parse_int(f, v);
        else if (!strcmp(f, "--micro-batch")) a.micro_batch = parse_int(f, v);
        else if (!strcmp(f, "--seq")) a.seq = parse_int(f, v);
        else if (!strcmp(f, "--lr")) a.opt.lr = parse_float(f, v);
        else if (!strcmp(f, "--min-lr")) a.opt.min_lr = parse_float(f, v);
        else if (!strcmp(f, "--schedule")) {
            if (!strcmp(v, "constant")) a.opt.schedule = SCHED_CONSTANT;
            else if (!strcmp(v, "cosine")) a.opt.schedule = SCHED_COSINE;
            else die("--schedule: expected constant or cosine, got '%s'", v);
        }
        else if (!strcmp(f, "--warmup")) a.opt.warmup = parse_int(f, v);
        else if (!strcmp(f, "--weight-decay")) a.opt.weight_decay = parse_float(f, v);
        else if (!strcmp(f, "--beta1")) a.opt.beta1 = parse_float(f, v);
        else if (!strcmp(f, "--beta2")) a.opt.beta2 = parse_float(f, v);
        else if (!strcmp(f, "--adam-eps")) a.opt.eps = parse_float(f, v);
        else if (!strcmp(f, "--grad-clip")) a.opt.grad_clip = parse_float(f, v);
        else if (!strcmp(f, "--save-every")) a.save_every = parse_int(f, v);
        else if (!strcmp(f, "--log")) a.log_path = v;
        else if (!strcmp(f, "--eval-ppl")) a.eval_ppl = v;
        else if (!strcmp(f, "-T")) a.eval_T = parse_int(f, v);
        else if (!strcmp(f, "--eval-batch")) a.eval_batch = parse_int(f, v);
        else if (!strcmp(f, "--eval-qa")) a.eval_qa = v;
        else if (!strcmp(f, "--data")) a.data = v;
        else if (!strcmp(f, "--limit")) a.limit = parse_int(f, v);
        else if (!strcmp(f, "--threads")) a.threads = parse_int(f, v);
        else if (!strcmp(f, "--calib")) a.calib = v;
        else if (!strcmp(f, "-t")) a.teacher_path = v;
        else if (!strcmp(f, "--clip-init")) a.clip_init = v;
        else if (!strcmp(f, "--loss")) {
            a.loss_kind = loss_from_name(v);
            if (a.loss_kind < 0) die("--loss: unknown loss '%s' (ce, fkl, rkl, cakld, cakld_ce, wasserstein)", v);
            a.loss_given = 1;
        }
        else if (!strcmp(f, "--gamma")) a.gamma = parse_float(f, v);
        else if (!strcmp(f, "--gamma-batches")) a.gamma_batches = parse_int(f, v);
        else if (!strcmp(f, "--temperature")) { a.temperature = parse_float(f, v); a.temperature_given = 1; }
        else if (!strcmp(f, "--ckpt")) a.ckpt = v;
        else if (!strcmp(f, "--resume")) a.resume = v;
        else if (!strcmp(f, "--stop-after")) a.stop_after = parse_int(f, v);
        else if (!strcmp(f, "--inject-nan")) a.inject_nan = parse_int(f, v);
        else if (!strcmp(f, "--export-packed")) a.export_packed = v;
        else if (!strcmp(f, "--histogram")) a.histogram = parse_int(f, v);
        else if (!strcmp(f, "--histogram-out")) a.histogram_out = v;
        else if (!strcmp(f, "--calib-seqs")) a.calib_seqs = parse_int(f, v);
        else if (!strcmp(f, "--calib-len")) a.calib_len = parse_int(f, v);
        else if (!strcmp(f, "--clip-tokens")) a.clip_tokens = parse_int(f, v);
        else if (!strcmp(f, "-b")) { a.quant.bits = parse_int(f, v); a.quant_given = 1; }
        else if (!strcmp(f, "--act-bits")) {
            a.act_bits = parse_int(f, v);
            if (a.act_bits != 0 && a.act_bits != 8) die("--act-bits: 0 or 8 (BitNet's 8-bit activations), got %d", a.act_bits);
        }
        else if (!strcmp(f, "-g")) { a.quant.group = parse_int(f, v); a.quant_given = 1; }
        else if (!strcmp(f, "-q")) {
            a.quant.method = quant_method_from_name(v);
            if (a.quant.method < 0) die("-q: unknown quantizer '%s' (int, nf3, nf4, sign, onebit, ternary)", v);
            a.quant_given = 1;
        }
        else die("unknown flag '%s' (see ./train --help)", f);
    }
    if (!a.model_path == !a.init_shape) die("give exactly one of -m FILE or --init SHAPE (see ./train --help)");
    if (a.init_vocab && (!a.init_shape || a.init_vocab < 2 || a.init_vocab > (1 << 22)))
        die("--vocab N needs --init and 2 <= N <= 4194304");
    if (a.steps < 1) die("--steps must be at least 1");
    if (a.micro_batch < 1 || a.batch < 1) die("--batch and --micro-batch must be at least 1");
    if (a.batch % a.micro_batch) die("--batch (%d) must be a multiple of --micro-batch (%d)", a.batch, a.micro_batch);
    if (a.seq < 0 || a.eval_T < 0 || a.eval_batch < 1 || a.save_every < 0) die("--seq, -T, --eval-batch and --save-every must be positive");
    if (!(a.opt.lr >= 0) || !(a.opt.beta1 >= 0 && a.opt.beta1 < 1) || !(a.opt.beta2 >= 0 && a.opt.beta2 < 1) || !(a.opt.eps > 0))
        die("--lr must be >= 0, betas in [0, 1), --adam-eps > 0");
    if (a.threads < 0) die("--threads must be positive");
    if (a.gamma != -1.0f && !(a.gamma >= 0.0f && a.gamma <= 1.0f)) die("--gamma must be in [0, 1]");
    if (a.temperature_given && !(a.temperature >= 0)) die("--temperature must not be negative");
    if (!a.temperature_given && (a.generate_data || a.generate_prompt)) a.temperature = 0.7f;  // BitDistiller's sampling
    if (!a.generate_data && !a.generate_prompt && !(a.temperature > 0)) die("--temperature must be positive");
    if (a.epochs < 1 || a.eval_every < 0) die("--epochs must be at least 1, --eval-every not negative");
    if (a.max_new < 1 || a.gen_batch < 1 || a.n_prompts < 0) die("--max-new and --gen-batch must be at least 1, --n not negative");
    if (!(a.top_p > 0.0f && a.top_p <= 1.0f)) die("--top-p must be in (0, 1]");
    if (a.train_tokens && a.data && !a.eval_qa) die("give one training data source: --data FILE.jsonl or --train-tokens FILE");
    if (a.generate_data && (!a.prompts || !a.out_path)) die("--generate-data needs --prompts SPEC and -o OUT.jsonl");
    if (a.generate_data && (a.train_tokens || (a.data && !a.eval_qa) || a.clip || a.generate_prompt))
        die("--generate-data writes data: train, clip or --generate in a separate command");
    if (a.prompts && !a.generate_data) die("--prompts is for --generate-data");
    if (a.gamma_batches < 1 || a.stop_after < 0) die("--gamma-batches must be positive, --stop-after not negative");
    if (a.eval_qa && !a.data) die("--eval-qa needs --data DIR (the task files)");
    if (a.eval_qa && a.data && !is_directory(a.data))
        die("%s: --eval-qa reads its task files from a folder (--data DIR); train on a JSONL file in a separate command", a.data);
    if (a.mask_prompt && !(a.data && !a.eval_qa)) die("--mask-prompt needs --data FILE.jsonl");
    if (a.limit < 0) die("--limit must not be negative");
    if (a.clip && (!a.calib || !a.out_path || !a.quant_given))
        die("--clip needs --calib FILE, -o OUT and the quantization it prepares for (-q/-b/-g)");
    if (a.calib_seqs < 1 || a.calib_len < 0 || a.clip_tokens < 1) die("--calib-seqs, --calib-len and --clip-tokens must be positive");
    if (a.clip && a.quant.method != QUANT_INT && a.quant.method != QUANT_NF3 && a.quant.method != QUANT_NF4)
        die("--clip searches per-group ranges: use -q int, nf3 or nf4");
    if (a.quant_given) {  // int without -b means "not quantized" (-b 16)
        if (a.quant.method == QUANT_INT && a.quant.bits == 0) a.quant.bits = 16;
        const char *why = quant_spec_check(&a.quant, 0);
        if (why) die("-q %s -b %d: %s", quant_method_name(a.quant.method), a.quant.bits, why);
    }
    return a;
}

// Floating-point operations of one training step per token: 6 per matmul weight (forward 2,
// backward 4) plus causal attention, whose two products cost 2*T*H*hd per token forward, as
// Kaplan et al. 2020 and PaLM's MFU count it.
static double train_flops_per_token(const Model *m, int T) {
    const ModelHeader *c = &m->cfg;
    double matmul = (double)m->n_params - (double)c->vocab_size * c->dim * (c->tied ? 0 : 1)
                  - (double)c->dim * (2 * c->n_layers + 1);  // the embedding lookup and norms are no matmuls
    return 6.0 * matmul + 6.0 * c->n_layers * (double)c->n_heads * c->head_dim * T;
}

typedef struct { float final_loss, tokens_per_s, eval_loss; } TrainResult;  // eval_loss -1: none

// Everything a resumed run needs besides the weights and AdamW moments: with it, training N
// steps straight and training k steps, stopping, then resuming to N give the same bits.
typedef struct {
    int64_t step;          // optimizer steps done
    int64_t micro_batches; // micro-batches consumed (the data position)
    uint64_t rng;          // the data sampler's state
    double gamma;          // the teacher's confidence (measured once, before step 1)
    int32_t batch, micro_batch, seq, loss_kind;  // must match on resume
} TrainState;

// ---------------------------------------------------------------------------------------------
// Checkpoints (magic "BDLC"): the student's ModelHeader, TrainState, then params (table and
// learned scales), AdamW m and v, all fp32. Written atomically, so a kill at any moment leaves
// the previous checkpoint or the new one, never half of one.

#define CKPT_MAGIC 0x434c4442u  // "BDLC"

static void checkpoint_save(const char *path, const Model *m, const TrainState *st) {
    uint32_t magic = CKPT_MAGIC, version = 1;
    ModelHeader h = m->cfg;
    h.dtype = DTYPE_F32;
    AtomicFile a;
    atomic_open(&a, path);
    atomic_write(&a, &magic, 4);
    atomic_write(&a, &version, 4);
    atomic_write(&a, &h, sizeof h);
    atomic_write(&a, st, sizeof *st);
    atomic_write(&a, m->params, (size_t)m->n_params * sizeof(float));
    atomic_write(&a, m->adam_m, (size_t)m->n_params * sizeof(float));
    atomic_write(&a, m->adam_v, (size_t)m->n_params * sizeof(float));
    atomic_commit(&a);
}

// Restores a checkpoint into a student set up the same way (same model, same quantizer).
static void checkpoint_load(const char *path, Model *m, TrainState *st) {
    FILE *f = fopen_or_die(path, "rb");
    int64_t fsize = file_size_or_die(f, path);
    uint32_t magic = 0, version = 0;
    ModelHeader h;
    if (fsize < 8 + (int64_t)sizeof h + (int64_t)sizeof *st) die("%s: truncated checkpoint", path);
    fread_exact(&magic, 4, f, path);
    fread_exact(&version, 4, f, path);
    if (magic != CKPT_MAGIC) die("%s: not a checkpoint (bad magic)", path);
    if (version != 1) die("%s: unsupported checkpoint version %u", path, version);
    fread_exact(&h, sizeof h, f, path);
    ModelHeader want = m->cfg;
    h.dtype = want.dtype = DTYPE_F32;
    if (memcmp(&h, &want, sizeof h) != 0)
        die("%s: a checkpoint of another model or quantizer (dim %d, %d layers, vocab %d, -q %s -b %d -g %d)", path,
            h.dim, h.n_layers, h.vocab_size, quant_method_name(h.quant_method), h.quant_bits, h.quant_group);
    int64_t want_size = 8 + (int64_t)sizeof h + (int64_t)sizeof *st + 3 * m->n_params * 4;
    if (fsize != want_size) die("%s: %lld bytes, expected %lld", path, (long long)fsize, (long long)want_size);
    TrainState saved;
    fread_exact(&saved, sizeof saved, f, path);
    if (saved.step < 0 || saved.micro_batches < 0 || !(saved.gamma == -1.0 || (saved.gamma >= 0.0 && saved.gamma <= 1.0)))
        die("%s: corrupt training state (step %lld, %lld micro-batches, gamma %g)", path,
            (long long)saved.step, (long long)saved.micro_batches, saved.gamma);
    if (saved.batch != st->batch || saved.micro_batch != st->micro_batch || saved.seq != st->seq || saved.loss_kind != st->loss_kind)
        die("%s: saved with --batch %d --micro-batch %d --seq %d --loss %s; resume with the same settings", path,
            saved.batch, saved.micro_batch, saved.seq, saved.loss_kind >= 0 && saved.loss_kind < N_LOSSES ? LOSS_NAMES[saved.loss_kind] : "?");
    model_alloc_training(m);
    fread_exact(m->params, (size_t)m->n_params * 4, f, path);
    fread_exact(m->adam_m, (size_t)m->n_params * 4, f, path);
    fread_exact(m->adam_v, (size_t)m->n_params * 4, f, path);
    fclose(f);
    for (int64_t i = 0; i < m->n_params; i++)
        if (!isfinite(m->params[i]) || !isfinite(m->adam_m[i]) || !isfinite(m->adam_v[i]))
            die("%s: NaN or Inf in the saved state", path);
    *st = saved;
    m->step = st->step;
    if (m->quant.method != QUANT_NONE) m->quant_stale = 1;
}

// One line of the JSONL log: the step's numbers and, for a student, its flip-flops.
static void log_step(FILE *log, const Model *m, int64_t step, double loss, double eval_loss, float lr, float norm, float tps,
                     double gamma) {
    fprintf(log, "{\"step\": %lld, \"loss\": %.6f, \"lr\": %g, \"grad_norm\": %.6f, \"tokens_per_s\": %.1f",
            (long long)step, loss, lr, norm, tps);
    if (eval_loss >= 0) fprintf(log, ", \"eval_loss\": %.6f", eval_loss);
    if (gamma >= 0) fprintf(log, ", \"gamma\": %.6f", gamma);
    if (m->quant.method != QUANT_NONE) {  // per tensor and per layer too, for plots
        fprintf(log, ", \"flip_rate\": %.8f", (double)m->flips_total / m->n_codes);
        for (int t = 0; t < N_TENSORS; t++)
            if (tensor_is_linear(t)) fprintf(log, ", \"flips_%s\": %lld", TENSOR_NAMES[t], (long long)m->flips[t]);
        fprintf(log, ", \"flip_rate_layer\": [");  // per layer: flipped / codes of that layer
        int64_t per_layer = m->n_codes / m->cfg.n_layers;
        for (int l = 0; l < m->cfg.n_layers; l++) fprintf(log, "%s%.8f", l ? ", " : "", (double)m->flips_layer[l] / per_layer);
        fprintf(log, "]");
    }
    fprintf(log, "}\n");
    fflush(log);
}

// ---------------------------------------------------------------------------------------------
// Where training batches come from: random windows of a token stream (--train-tokens, for
// pretraining), or the examples of a JSONL file (--data, as BitDistiller trains), every epoch in
// a new order. Micro-batch k of a run is a function of k and the sampler's state alone, so a
// resumed run, knowing how many micro-batches were consumed, sees the same batches.

typedef struct {
    const TokenStream *stream;  // one of the two
    const Dataset *examples;
    int mask_prompt;            // examples: no loss on prompt tokens
    uint64_t seed;              // examples: the epoch orders' seed
    int *order, order_epoch;    // examples: the order of epoch order_epoch (-1: none yet)
    int *idx;                   // [B] the examples of one micro-batch
} Batches;

static Batches batches_of_stream(const TokenStream *s) { return (Batches){s, NULL, 0, 0, NULL, -1, NULL}; }

static Batches batches_of_examples(const Dataset *d, int mask_prompt, uint64_t seed, int B) {
    Batches b = {NULL, d, mask_prompt, seed, malloc_or_die((size_t)d->n * sizeof(int), "epoch order"), -1,
                 malloc_or_die((size_t)B * sizeof(int), "batch")};
    return b;
}

static void batches_free(Batches *b) { free(b->order); free(b->idx); }

// Micro-batch k of the run into inputs/targets [B,T]: B windows drawn with rng from a stream;
// or examples kB .. kB+B-1 of the sequence (epoch 0's order, then epoch 1's, ...).
static void next_batch(Batches *src, int64_t k, Rng *rng, int *inputs, int *targets, int B, int T) {
    if (src->stream) { sample_batch(inputs, targets, src->stream, B, T, rng); return; }
    const Dataset *d = src->examples;
    for (int b = 0; b < B; b++) {
        int64_t pos = k * B + b;
        int epoch = (int)(pos / d->n);
        if (epoch != src->order_epoch) { dataset_epoch_order(d, src->seed, epoch, src->order); src->order_epoch = epoch; }
        src->idx[b] = src->order[pos % d->n];
    }
    dataset_batch(d, src->idx, B, src->mask_prompt, inputs, targets);
}

// The training data the flags name, for train and train_cu alike: a token stream
// (--train-tokens), or --data's JSONL examples split into training and held-out fifths, with
// the run's steps from --epochs unless --steps is given.
typedef struct {
    TokenStream stream;     // --train-tokens
    Dataset train, eval;    // --data
    Batches batches;        // over one of the two
    int steps;
} TrainData;

static void train_data_from_flags(TrainData *td, const Args *a, const char *path, const Tokenizer *tok, int T, int V) {
    memset(td, 0, sizeof *td);
    td->steps = a->steps;
    if (a->train_tokens) {
        td->stream = load_tokens(a->train_tokens, tok, V);
        if (td->stream.n <= T) die("%s: %lld tokens, need more than --seq %d", a->train_tokens, (long long)td->stream.n, T);
        td->batches = batches_of_stream(&td->stream);
        return;
    }
    Dataset all;
    dataset_load(&all, path, tok, T, V);
    dataset_split(&all, &td->train, &td->eval);
    dataset_free(&all);
    if (td->train.n == 0) die("%s: no training examples", path);
    printf("data: %d training and %d held-out examples (BitDistiller's split: the first fifth is held out)%s\n",
           td->train.n, td->eval.n, a->mask_prompt ? "; no loss on prompt tokens" : "");
    td->batches = batches_of_examples(&td->train, a->mask_prompt, a->seed, a->micro_batch);
    if (!a->steps_given) td->steps = (int)(((int64_t)a->epochs * td->train.n + a->batch - 1) / a->batch);
    printf("data: %d epochs of %d examples in batches of %d: %d steps\n", a->epochs, td->train.n, a->batch, td->steps);
}

static void train_data_free(TrainData *td) {
    batches_free(&td->batches);
    free(td->stream.ids);
    dataset_free(&td->train);
    dataset_free(&td->eval);
}

// The teacher's confidence gamma over the first n_batches micro-batches of the run (their
// positions with a target, or all of them with include_pad: BitDistiller's original average,
// padding included), drawn with a copy of the sampler's state so that training then sees the
// same batches it would have without this measurement.
static double measure_gamma(Model *teacher, Batches *data, TrainState st, int B, int T, int n_batches, int include_pad) {
    int *inputs = malloc_or_die((size_t)B * T * sizeof(int), "inputs"), *targets = malloc_or_die((size_t)B * T * sizeof(int), "targets");
    Rng rng = {st.rng};
    double sum = 0;
    long long count = 0;
    for (int i = 0; i < n_batches; i++) {
        next_batch(data, st.micro_batches + i, &rng, inputs, targets, B, T);
        model_forward(teacher, inputs, NULL, B, T);
        gamma_accumulate(&sum, &count, teacher->logits, targets, B, T, teacher->cfg.vocab_size, include_pad);
    }
    free(inputs); free(targets);
    return count ? sum / count : 0.0;
}

// The training loss on the held-out examples, without gradients: d's loss (summed over a
// sequence's positions, averaged over sequences), or without d the cross-entropy averaged over
// tokens, the reductions train_loop uses.
static double eval_split_loss(Model *m, Model *teacher, const Distiller *d, const Dataset *ev, int B, int *inputs, int *targets) {
    int T = ev->seq, *idx = malloc_or_die((size_t)B * sizeof(int), "eval batch");
    double sum = 0.0;
    int64_t tokens = 0;
    for (int i0 = 0; i0 < ev->n; i0 += B) {
        int nb = ev->n - i0 < B ? ev->n - i0 : B;
        for (int b = 0; b < nb; b++) idx[b] = i0 + b;
        dataset_batch(ev, idx, nb, 0, inputs, targets);
        if (d) {
            const float *zt = NULL;
            int Vt = m->cfg.vocab_size;
            if (d->loss.kind != LOSS_CE) { model_forward(teacher, inputs, NULL, nb, T); zt = teacher->logits; Vt = teacher->cfg.vocab_size; }
            model_forward(m, inputs, NULL, nb, T);
            sum += nb * distill_loss_batch(m->act[A_DLOGITS], d->scratch, d->scratch_rows, m->logits, zt, targets, nb, T,
                                           m->cfg.vocab_size, Vt, d->loss);
        } else {
            int64_t n = 0;
            for (int i = 0; i < nb * T; i++) n += targets[i] >= 0;
            if (n) sum += (double)model_forward(m, inputs, targets, nb, T) * n;
            tokens += n;
        }
    }
    free(idx);
    return d ? sum / ev->n : sum / (tokens ? tokens : 1);
}

// Trains m from st->step to steps (or --stop-after): with d, distillation from the teacher
// with d's loss (loss.h; the teacher is unused by --loss ce); without, cross-entropy averaged
// over tokens (full-precision pretraining). With held-out examples (ev), their loss every
// --eval-every steps and at the end. Checkpoints every --save-every steps and at the end when a
// checkpoint path is given.
static TrainResult train_loop(Model *m, Model *teacher, Distiller *d, const Args *a, Batches *data, const Dataset *ev,
                              int steps, int T, TrainState *st, const char *ckpt) {
    model_alloc_training(m);
    FILE *log = a->log_path ? fopen_or_die(a->log_path, st->step ? "a" : "w") : NULL;
    int B = a->micro_batch, accum = a->batch / a->micro_batch;
    int *inputs = malloc_or_die((size_t)B * T * sizeof(int), "inputs");
    int *targets = malloc_or_die((size_t)B * T * sizeof(int), "targets");
    int64_t first = st->step, last = a->stop_after && a->stop_after < steps ? a->stop_after : steps;
    double t0 = now_seconds();
    TrainResult r = {0, 0, -1};
    printf("training: steps %lld..%d of %d, %d sequences x %d tokens (%d micro-batches of %d), lr %g, %s\n",
           (long long)st->step + 1, (int)last, steps, a->batch, T, accum, B, a->opt.lr,
           d ? LOSS_NAMES[d->loss.kind] : "cross-entropy (mean over tokens)");
    for (int64_t step = st->step; step < last; step++) {
        double ts = now_seconds();
        if (a->inject_nan == step + 1) m->params_t[T_FINAL_NORM][0] = NAN;  // every logit becomes NaN
        model_zero_grad(m);
        double loss = 0.0;
        Rng rng = {st->rng};
        for (int micro = 0; micro < accum; micro++) {
            next_batch(data, st->micro_batches + micro, &rng, inputs, targets, B, T);
            if (d) {
                loss += distill_step(m, teacher, d, inputs, targets, B, T, 1.0f / accum) / accum;
            } else {
                loss += model_forward(m, inputs, targets, B, T) / accum;
                model_backward_scaled(m, 1.0f / accum);
            }
        }
        if (!isfinite(loss))
            die("step %lld: the loss is %f; stopping, the last checkpoint%s is intact", (long long)step + 1, loss, ckpt ? "" : " (none)");
        float norm = clip_grad_norm(m, a->opt.grad_clip);
        float lr = lr_at(&a->opt, step, steps);
        adamw_update(m, &a->opt, lr);
        for (int64_t i = 0; i < m->n_params; i++)  // nothing non-finite may reach a checkpoint
            if (!isfinite(m->params[i]))
                die("step %lld: a weight became NaN or Inf (lower --lr?); stopping, the last checkpoint%s is intact",
                    (long long)step + 1, ckpt ? "" : " (none)");
        st->rng = rng.s;
        st->micro_batches += accum;
        st->step = step + 1;
        char flip_s[48] = "", gamma_s[32] = "", eval_s[48] = "";
        if (m->quant.method != QUANT_NONE) {  // quantize now, to log how many codes the update flipped
            model_quantize(m);
            snprintf(flip_s, sizeof flip_s, " | flips %.4f%%", 100.0 * m->flips_total / m->n_codes);
        }
        if (d) snprintf(gamma_s, sizeof gamma_s, " | gamma %.3f", st->gamma);
        double eval_loss = -1.0;
        if (ev && ev->n && ((a->eval_every && st->step % a->eval_every == 0) || st->step == steps)) {
            eval_loss = eval_split_loss(m, teacher, d, ev, B, inputs, targets);
            snprintf(eval_s, sizeof eval_s, " | eval loss %.4f", eval_loss);
            r.eval_loss = (float)eval_loss;
        }
        double now = now_seconds();
        float tps = (float)((double)a->batch * T / (now - ts));
        char eta[32], bar[40];
        format_eta(eta, sizeof eta, (now - t0) / (double)(step + 1 - first) * (double)(last - step - 1));
        format_bar(bar, 20, (double)(step + 1) / steps);
        printf("step %4lld/%d %s | loss %.4f%s%s | lr %.3g | grad norm %.3f%s | %.0f tok/s | ETA %s\n",
               (long long)step + 1, steps, bar, loss, eval_s, gamma_s, lr, norm, flip_s, tps, eta);
        fflush(stdout);
        if (log) log_step(log, m, step + 1, loss, eval_loss, lr, norm, tps, d ? st->gamma : -1.0);
        if (ckpt && ((a->save_every && st->step % a->save_every == 0) || st->step == last)) checkpoint_save(ckpt, m, st);
        r.final_loss = (float)loss;
    }
    r.tokens_per_s = (float)((double)(last - first) * a->batch * T / (now_seconds() - t0));
    if (log) fclose(log);
    free(inputs); free(targets);
    return r;
}

// --bench: full training steps (forward, backward, AdamW) on random tokens.
static void bench(Model *m, const Args *a, int T, char *json, size_t n) {
    model_alloc_training(m);
    int B = a->micro_batch, V = m->cfg.vocab_size;
    int *inputs = malloc_or_die((size_t)B * T * sizeof(int), "inputs");
    int *targets = malloc_or_die((size_t)B * T * sizeof(int), "targets");
    Rng rng = rng_seeded(a->seed);
    for (int i = 0; i < B * T; i++) { inputs[i] = (int)(rng_u64(&rng) % V); targets[i] = (int)(rng_u64(&rng) % V); }
    double best = 1e30;
    for (int s = 0; s <= a->steps; s++) {  // step 0 warms up (page faults, caches)
        double t0 = now_seconds();
        model_zero_grad(m);
        model_forward(m, inputs, targets, B, T);
        model_backward(m);
        adamw_update(m, &a->opt, a->opt.lr);
        double dt = now_seconds() - t0;
        if (s > 0 && dt < best) best = dt;
        printf("bench step %d/%d: %.3f s%s\n", s, a->steps, dt, s == 0 ? " (warm-up)" : "");
        fflush(stdout);
    }
    double tps = B * T / best, gflops = tps * train_flops_per_token(m, T) / 1e9;
    // the reference, measured in the same run: the bare matmul kernel on the MLP's up
    // projection, [B*T, D] x [D, F], best of three
    int N = B * T, D = m->cfg.dim, F = m->cfg.hidden_dim;
    float *x = m->act[A_XN2], *y = m->act[A_UP];
    double kbest = 1e30;
    for (int r = 0; r < 3; r++) {
        double t0 = now_seconds();
        matmul_forward(y, m->act[A_MMT], x, m->params_t[T_WUP], N, D, F);
        double dt = now_seconds() - t0;
        kbest = dt < kbest ? dt : kbest;
    }
    double kernel = 2.0 * N * D * F / kbest / 1e9;
    printf("bench: %lld params, %d x %d tokens per step, best %.3f s: %.0f tokens/s, %.1f GFLOP/s "
           "(%.0f%% of the matmul kernel's %.1f GFLOP/s on [%d,%d]x[%d,%d] in this run)\n",
           (long long)m->n_params, B, T, best, tps, gflops, 100.0 * gflops / kernel, kernel, N, D, D, F);
    snprintf(json, n, "\"bench\": {\"params\": %lld, \"batch\": %d, \"seq\": %d, \"step_s\": %.4f, \"tokens_per_s\": %.1f, "
             "\"gflops\": %.2f, \"matmul_gflops\": %.2f, \"fraction_of_matmul\": %.3f}",
             (long long)m->n_params, B, T, best, tps, gflops, kernel, gflops / kernel);
    free(inputs); free(targets);
}

// ============================================================================================
// 12. Packed low-bit models
//
// `--export-packed out.qbin` stores what a quantized model really is: for each linear of each
// layer its integer codes at their bit width (quant.h's packer: 1-bit 8 per byte, 2-bit 4 per
// byte, 3-bit as a bit stream, 4-bit 2 per byte, ternary 5 trits per byte) and its scales p0, p1
// (quant.h's table: INT step and zero, NF positive and negative scales, sign alpha and beta,
// OneBit h and g, ternary gamma) in fp16; everything else (embeddings, norms, LM head) in the
// model's dtype. Layout: a ModelHeader with magic "BDLQ", then the table's tensors in order,
// each linear as [codes, p0 fp16, p1 fp16] per layer.
//
// Loading dequantizes W^ = value(code, scales) with quant_dequantize: with the same (fp16)
// scales it is bit for bit what the fake-quantized forward computes. The loaded model is a
// full-precision model holding W^ (quantizing it again would not be the identity: a group
// whose codes do not reach both ends would get a narrower grid).

#define PACKED_MAGIC 0x514c4442u  // "BDLQ"

// Bytes of one layer's slice of linear t in the packed file.
static int64_t packed_linear_bytes(const Model *m, int t) {
    return quant_packed_bytes(m->slice[t], quant_pack_width(m->quant)) + 2 * (m->qn0[t] + m->qn1[t]);
}

static void write_fp16(AtomicFile *a, const float *x, int64_t n) {
    uint16_t buf[4096];
    for (int64_t i = 0; i < n; i += 4096) {
        int64_t k = n - i < 4096 ? n - i : 4096;
        for (int64_t j = 0; j < k; j++) buf[j] = f32_to_fp16(x[i + j]);
        atomic_write(a, buf, (size_t)k * 2);
    }
}

static void write_tensor(AtomicFile *a, const float *x, int64_t n, int dtype) {
    if (dtype == DTYPE_F32) { atomic_write(a, x, (size_t)n * 4); return; }
    uint16_t buf[4096];
    for (int64_t i = 0; i < n; i += 4096) {
        int64_t k = n - i < 4096 ? n - i : 4096;
        for (int64_t j = 0; j < k; j++) buf[j] = f32_to_bf16(x[i + j]);
        atomic_write(a, buf, (size_t)k * 2);
    }
}

// Returns the file size; bits per weight of the linears are reported by the caller.
static int64_t export_packed(Model *m, const char *path, int dtype) {
    if (m->quant.method == QUANT_NONE) die("--export-packed needs a quantized model (give -q/-b/-g, or a trained student)");
    if (m->quant_stale) model_quantize(m);
    ModelHeader h = m->cfg;
    h.magic = PACKED_MAGIC;
    h.dtype = dtype;
    int width = quant_pack_width(m->quant);
    uint8_t *buf = malloc_or_die((size_t)quant_packed_bytes(m->n_codes, width) + 8, "packed codes");
    AtomicFile a;
    atomic_open(&a, path);
    atomic_write(&a, &h, sizeof h);
    int64_t bytes = sizeof h;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->params_t[t]) continue;
        if (!tensor_is_linear(t)) {
            int64_t n = m->slice[t] * (tensor_is_per_layer(t) ? m->cfg.n_layers : 1);
            write_tensor(&a, m->params_t[t], n, dtype);
            bytes += n * (dtype == DTYPE_BF16 ? 2 : 4);
            continue;
        }
        int64_t base = layer_tensor(m->fwd_t, m, t, 0) - m->wq;
        for (int l = 0; l < m->cfg.n_layers; l++) {
            int64_t nb = quant_packed_bytes(m->slice[t], width);
            if (pack_codes(buf, m->codes + base + (int64_t)l * m->slice[t], m->slice[t], width))
                die("%s: a code of %s layer %d does not fit %d bits", path, TENSOR_NAMES[t], l, width);
            atomic_write(&a, buf, (size_t)nb);
            write_fp16(&a, m->qp0[t] + l * m->qn0[t], m->qn0[t]);
            write_fp16(&a, m->qp1[t] + l * m->qn1[t], m->qn1[t]);
            bytes += packed_linear_bytes(m, t);
        }
    }
    atomic_commit(&a);
    free(buf);
    return bytes;
}

// Reads a packed model into a full-precision Model whose linears hold the dequantized W^.
static void load_packed(Model *m, const char *path) {
    FILE *f = fopen_or_die(path, "rb");
    int64_t fsize = file_size_or_die(f, path);
    ModelHeader h;
    if (fsize < HEADER_BYTES) die("%s: truncated file (smaller than the header)", path);
    fread_exact(&h, sizeof h, f, path);
    QuantSpec q = header_quant(&h);
    h.magic = MODEL_MAGIC;  // validate the rest as a model header
    const char *why = header_problem(&h);
    if (why) die("%s: %s", path, why);
    if (q.method == QUANT_NONE) die("%s: a packed model without quantization", path);
    // the model, full precision, with this file's quantizer described for the sizes
    ModelHeader fp = h;
    fp.quant_method = QUANT_NONE; fp.quant_bits = 0; fp.quant_group = 0; fp.dtype = DTYPE_F32;
    float *p = malloc_or_die((size_t)tensor_sizes(&fp, (int64_t[N_TENSORS]){0}) * sizeof(float), "parameters");
    model_setup(m, &fp, p);
    m->quant = q;  // for the sizes below only
    int64_t want = HEADER_BYTES, esize = h.dtype == DTYPE_BF16 ? 2 : 4;
    int width = quant_pack_width(q);
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->params_t[t]) continue;
        if (tensor_is_linear(t)) {
            int out, in;
            linear_shape(m, t, &out, &in);
            quant_param_sizes(&m->qn0[t], &m->qn1[t], q, out, in);
            want += packed_linear_bytes(m, t) * h.n_layers;
        } else {
            want += m->slice[t] * (tensor_is_per_layer(t) ? h.n_layers : 1) * esize;
        }
    }
    if (fsize != want) die("%s: %lld bytes, but its header implies %lld", path, (long long)fsize, (long long)want);
    uint8_t *packed = malloc_or_die((size_t)quant_packed_bytes(m->n_table, width) + 8, "packed");
    uint8_t *codes = malloc_or_die((size_t)m->n_table, "codes");
    uint16_t *h16 = malloc_or_die((size_t)m->n_table * 2 + 16, "scales");
    float *p0 = malloc_or_die((size_t)m->n_table * sizeof(float) + 16, "scales");
    float *p1 = malloc_or_die((size_t)m->n_table * sizeof(float) + 16, "scales");
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->params_t[t]) continue;
        int64_t n = m->slice[t] * (tensor_is_per_layer(t) ? h.n_layers : 1);
        if (!tensor_is_linear(t)) {
            if (h.dtype == DTYPE_F32) fread_exact(m->params_t[t], (size_t)n * 4, f, path);
            else {
                fread_exact(h16, (size_t)n * 2, f, path);
                for (int64_t i = 0; i < n; i++) m->params_t[t][i] = bf16_to_f32(h16[i]);
            }
            continue;
        }
        int out, in;
        linear_shape(m, t, &out, &in);
        for (int l = 0; l < h.n_layers; l++) {
            fread_exact(packed, (size_t)quant_packed_bytes(m->slice[t], width), f, path);
            if (unpack_codes(codes, packed, m->slice[t], width)) die("%s: %s of layer %d: a code out of range", path, TENSOR_NAMES[t], l);
            fread_exact(h16, (size_t)m->qn0[t] * 2, f, path);
            for (int64_t i = 0; i < m->qn0[t]; i++) p0[i] = fp16_to_f32(h16[i]);
            fread_exact(h16, (size_t)m->qn1[t] * 2, f, path);
            for (int64_t i = 0; i < m->qn1[t]; i++) p1[i] = fp16_to_f32(h16[i]);
            int levels = width == QUANT_PACK_TRITS ? 3 : 1 << width;
            for (int64_t i = 0; i < m->slice[t]; i++)
                if (codes[i] >= levels) die("%s: %s of layer %d: a code out of range", path, TENSOR_NAMES[t], l);
            quant_dequantize(layer_tensor(m->params_t, m, t, l), codes, p0, p1, q, out, in);
        }
    }
    fclose(f);
    for (int64_t i = 0; i < m->n_table; i++)
        if (!isfinite(m->params[i])) die("%s: weight %lld is NaN or Inf", path, (long long)i);
    m->quant = (QuantSpec){QUANT_NONE, 16, 0};
    free(packed); free(codes); free(h16); free(p0); free(p1);
}

// Any model file: .bin (magic BDLM) or packed (BDLQ).
static void model_open(Model *m, const char *path) {
    FILE *f = fopen_or_die(path, "rb");
    uint32_t magic = 0;
    size_t got = fread(&magic, 4, 1, f);
    fclose(f);
    if (got == 1 && magic == PACKED_MAGIC) {
        load_packed(m, path);
        printf("packed model %s: dequantized to full precision\n", path);
    } else {
        model_load_file(m, path);
    }
}

// ============================================================================================
// 13. Weight histograms
//
// `--histogram L` shows what quantization does to the weights of layer L: for each of its seven
// linears, the histogram of the latent FP weights and of W^ over the same 64 bins (CSV), the
// entropy of the binned FP weights and of the integer codes (bits; the codes can carry at most
// `bits` of them, and a flat use of all levels reaches it), and the same as an SVG picture,
// written directly so that no plotting tool is needed.

#define HIST_BINS 64

static double entropy_bits(const int64_t *counts, int n, int64_t total) {
    double h = 0;
    for (int i = 0; i < n; i++)
        if (counts[i]) { double p = (double)counts[i] / total; h -= p * log2(p); }
    return h;
}

static void write_histogram(Model *m, int layer, const char *prefix, char *json, size_t json_cap) {
    if (strlen(prefix) > 4000) die("--histogram-out: prefix too long");
    if (m->quant.method == QUANT_NONE) die("--histogram needs a quantized model (give -q/-b/-g, or a trained student)");
    if (layer < 0 || layer >= m->cfg.n_layers) die("--histogram: layer %d out of range [0, %d)", layer, m->cfg.n_layers);
    if (m->quant_stale) model_quantize(m);
    char csv_path[4096], svg_path[4096];
    snprintf(csv_path, sizeof csv_path, "%s.csv", prefix);
    snprintf(svg_path, sizeof svg_path, "%s.svg", prefix);
    AtomicFile csv, svg;
    atomic_open(&csv, csv_path);
    char line[512];
    int n = snprintf(line, sizeof line, "tensor,bin_lo,bin_hi,fp_count,quant_count\n");
    atomic_write(&csv, line, (size_t)n);
    char svgbuf[1 << 16];
    int panel_h = 120, width = 640, sn = 0, panel = 0;
    sn += snprintf(svgbuf + sn, sizeof svgbuf - sn,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"monospace\" font-size=\"11\">\n"
                   "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", width, 7 * panel_h + 20);
    char qcsv[4200], qsvg[4200];
    int jn = snprintf(json, json_cap, "\"histogram\": {\"layer\": %d, \"csv\": %s, \"svg\": %s", layer,
                      json_quote(qcsv, sizeof qcsv, csv_path), json_quote(qsvg, sizeof qsvg, svg_path));
    printf("histogram of layer %d (%s %d-bit): entropy of the FP weights (64 bins) and of the codes, in bits\n",
           layer, quant_method_name(m->quant.method), m->quant.bits);
    for (int t = 0; t < N_TENSORS; t++) {
        if (!tensor_is_linear(t)) continue;
        const float *w = layer_tensor(m->params_t, m, t, layer), *wq = layer_tensor(m->fwd_t, m, t, layer);
        const uint8_t *codes = m->codes + (layer_tensor(m->fwd_t, m, t, 0) - m->wq) + (int64_t)layer * m->slice[t];
        int64_t n_w = m->slice[t], fp[HIST_BINS] = {0}, qh[HIST_BINS] = {0}, code_counts[256] = {0};
        float lo = w[0], hi = w[0];
        for (int64_t i = 0; i < n_w; i++) {
            lo = fminf(lo, fminf(w[i], wq[i]));
            hi = fmaxf(hi, fmaxf(w[i], wq[i]));
        }
        float span = hi > lo ? hi - lo : 1.0f;
        for (int64_t i = 0; i < n_w; i++) {
            int a = (int)((w[i] - lo) / span * HIST_BINS), b = (int)((wq[i] - lo) / span * HIST_BINS);
            fp[a < HIST_BINS ? a : HIST_BINS - 1]++;
            qh[b < HIST_BINS ? b : HIST_BINS - 1]++;
            code_counts[codes[i]]++;
        }
        double h_fp = entropy_bits(fp, HIST_BINS, n_w), h_codes = entropy_bits(code_counts, 256, n_w);
        printf("  %-6s  FP %.3f bits | codes %.3f of %d bits\n", TENSOR_NAMES[t], h_fp, h_codes, m->quant.bits);
        jn += snprintf(json + jn, json_cap - jn, ", \"%s\": {\"fp_entropy\": %.4f, \"code_entropy\": %.4f}", TENSOR_NAMES[t], h_fp, h_codes);
        int64_t peak = 1;
        for (int i = 0; i < HIST_BINS; i++) peak = fp[i] > peak ? fp[i] : peak;
        for (int i = 0; i < HIST_BINS; i++) peak = qh[i] > peak ? qh[i] : peak;
        int y0 = panel * panel_h + 20, plot_h = panel_h - 30;
        double bw = (width - 80.0) / HIST_BINS;
        sn += snprintf(svgbuf + sn, sizeof svgbuf - sn, "<text x=\"4\" y=\"%d\">%s  FP %.2f bits, codes %.2f bits  [%.3g, %.3g]</text>\n",
                       y0 - 4, TENSOR_NAMES[t], h_fp, h_codes, lo, hi);
        for (int i = 0; i < HIST_BINS; i++) {
            double x = 60 + i * bw, hf = (double)fp[i] / peak * plot_h, hq = (double)qh[i] / peak * plot_h;
            sn += snprintf(svgbuf + sn, sizeof svgbuf - sn,
                           "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#bbb\"/>"
                           "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#c00\"/>\n",
                           x, y0 + plot_h - hf, bw, hf, x + bw * 0.25, y0 + plot_h - hq, bw * 0.5, hq);
            n = snprintf(line, sizeof line, "%s,%.6g,%.6g,%lld,%lld\n", TENSOR_NAMES[t], lo + span * i / HIST_BINS,
                         lo + span * (i + 1) / HIST_BINS, (long long)fp[i], (long long)qh[i]);
            atomic_write(&csv, line, (size_t)n);
        }
        panel++;
    }
    sn += snprintf(svgbuf + sn, sizeof svgbuf - sn, "<text x=\"4\" y=\"%d\">grey: FP latent weights; red: quantized W^</text>\n</svg>\n", 7 * panel_h + 14);
    snprintf(json + jn, json_cap - jn, "}");
    atomic_commit(&csv);
    atomic_open(&svg, svg_path);
    atomic_write(&svg, svgbuf, (size_t)sn);
    atomic_commit(&svg);
    printf("wrote %s and %s\n", csv_path, svg_path);
}

// Distillation: whenever training a quantized student, or a teacher or loss is named. The same
// answer before student_from_flags quantizes m as after it.
static int distill_from_flags(const Args *a, const Model *m) {
    int will_quantize = (a->quant_given && a->quant.method != QUANT_NONE && !a->clip) || m->quant.method != QUANT_NONE ||
                        a->act_bits || m->cfg.quant_act_bits;
    return (a->train_tokens || train_data_path(a)) && (will_quantize || a->teacher_path || a->loss_given);
}

// The teacher of a distillation run into *t (NULL when there is none: no distillation, or --loss
// ce): -t, or the full-precision -m model itself (self-distillation), taken before the student is
// changed by --clip-init or quantization.
static Model *teacher_from_flags(const Args *a, const Model *m, Model *t) {
    if (!distill_from_flags(a, m) || a->loss_kind == LOSS_CE) return NULL;
    if (a->teacher_path) {
        model_open(t, a->teacher_path);
    } else {
        float *copy = malloc_or_die((size_t)m->n_params * sizeof(float), "teacher");
        memcpy(copy, m->params, (size_t)m->n_params * sizeof(float));
        model_setup(t, &m->cfg, copy);
    }
    if (t->cfg.vocab_size != m->cfg.vocab_size && a->loss_kind != LOSS_WASSERSTEIN)
        die("%s: the teacher's vocabulary (%d) differs from the student's (%d); only --loss wasserstein works across vocabularies",
            a->teacher_path ? a->teacher_path : "teacher", t->cfg.vocab_size, m->cfg.vocab_size);
    return t;
}

// The student as the flags make it: --clip-init's weights, then -q/-b/-g and --act-bits. Called
// after a self-distillation teacher was copied from the same weights (train_cu does the same).
static void student_from_flags(const Args *a, Model *m) {
    if (a->clip_init) {  // the student starts from clipped weights of the same model
        ModelHeader cc;
        float *cp = model_load(a->clip_init, &cc);
        ModelHeader want = m->cfg;
        cc.dtype = want.dtype = DTYPE_F32;
        if (memcmp(&cc, &want, sizeof cc) != 0) die("%s: --clip-init must be a full-precision model of the same shape as -m", a->clip_init);
        memcpy(m->params, cp, (size_t)m->n_table * sizeof(float));
        free(cp);
        printf("student initialised from %s\n", a->clip_init);
    }
    if (a->quant_given && a->quant.method != QUANT_NONE && !a->clip) {
        QuantSpec have = m->quant;
        if (have.method == QUANT_NONE) model_apply_quant(m, a->quant);
        else if (have.method != a->quant.method || have.bits != a->quant.bits || have.group != a->quant.group)
            die("%s: the model is already quantized (-q %s -b %d -g %d); drop the quantization flags",
                a->model_path, quant_method_name(have.method), have.bits, have.group);
    }
    if (a->act_bits) {  // the student's activations; a self-distillation teacher was copied before, as it was
        if (a->clip) die("--act-bits: the clipping search runs on full-precision activations; give it to the QAT run");
        m->cfg.quant_act_bits = a->act_bits;
    }
}

// The tokenizer for text files: --tokenizer, or MODEL.tokenizer beside the model. Returns its
// path, or NULL (and *tok = NULL) when there is none.
static const char *tokenizer_from_flags(const Args *a, const Model *m, Tokenizer *t, Tokenizer **tok) {
    static char sibling[4096];
    snprintf(sibling, sizeof sibling, "%s.tokenizer", a->model_path ? a->model_path : "");
    const char *path = a->tokenizer_path ? a->tokenizer_path : (a->model_path && file_exists(sibling) ? sibling : NULL);
    *tok = NULL;
    if (!path) return NULL;
    tokenizer_load(t, path);
    if (t->n_vocab > m->cfg.vocab_size)
        die("%s: the tokenizer has %d tokens, the model's vocabulary only %d", path, t->n_vocab, m->cfg.vocab_size);
    *tok = t;
    printf("tokenizer: %s (%d tokens)\n", path, t->n_vocab);
    return path;
}

// The lines every run starts with: the quantization and the model's shape.
static void print_model(const Model *m) {
    const ModelHeader *c = &m->cfg;
    if (m->quant.method != QUANT_NONE)
        printf("quantization: %s, %d bits, group %d, on the 7 linears of every layer\n",
               quant_method_name(m->quant.method), m->quant.bits, quant_group_len(m->quant, c->dim));
    if (c->quant_act_bits) printf("activations: the inputs of the 7 linears quantized to %d bits per token (absmax)\n", c->quant_act_bits);
    printf("model: dim %d, hidden %d, layers %d, heads %d (kv %d, head_dim %d), vocab %d, context %d, %s, %lld parameters\n",
           c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab_size,
           c->max_seq_len, c->tied ? "tied" : "untied", (long long)m->n_params);
}

// --generate-data: the teacher continues --prompts into the JSONL -o; json gets the result's part
// of the JSON line.
static void generate_data_from_flags(const Args *a, Model *m, const Tokenizer *tok, char *json, size_t n) {
    Prompts p;
    prompts_load(&p, a->prompts, a->n_prompts, a->seed);
    double t0 = now_seconds();
    int64_t n_new = generate_data(m, tok, &p, a->gen_batch, a->max_new, a->temperature, a->top_p, a->seed, a->out_path);
    double el = now_seconds() - t0;
    char q[4200];
    snprintf(json, n, "\"generated\": {\"path\": %s, \"prompts\": %d, \"new_tokens\": %lld, \"tokens_per_s\": %.1f, "
             "\"temperature\": %g, \"top_p\": %g}", json_quote(q, sizeof q, a->out_path), p.n, (long long)n_new, n_new / (el > 0 ? el : 1e-9),
             a->temperature, a->top_p);
    prompts_free(&p);
}

// --generate TEXT: its continuation, printed; json as above.
static void generate_text_from_flags(const Args *a, Model *m, const Tokenizer *tok, char *json, size_t n) {
    Buf text = {NULL, 0, 0};
    int n_new = generate_text(m, tok, a->generate_prompt, a->max_new, a->temperature, a->top_p, a->seed, &text);
    printf("%s%.*s\n", a->generate_prompt, (int)text.n, text.s);
    Buf js = {NULL, 0, 0};
    json_put_string(&js, text.s ? text.s : "", text.n);
    snprintf(json, n, "\"generated\": %.*s, \"new_tokens\": %d", (int)(js.n < 6000 ? js.n : 0), js.s ? js.s : "", n_new);
    free(text.s); free(js.s);
}

// --eval-qa TASKS: the zero-shot tasks in --data DIR; json gets the "qa" part of the JSON line.
static void eval_qa_from_flags(const Args *a, Model *m, const Tokenizer *tok, char *json, size_t n) {
    if (!tok) die("--eval-qa needs the model's tokenizer (--tokenizer FILE, or MODEL.tokenizer beside the model)");
    eval_qa_add_bos = !a->qa_no_bos;
    eval_qa(m, tok, a->eval_qa, a->data, a->limit, json, n);
}

// --clip: the clipping search (clip_model) for the quantizer -q/-b/-g prepare for, on --calib's
// tokens; json gets the result's part of the JSON line. After training, as ./train orders it.
static void clip_from_flags(const Args *a, Model *m, const Tokenizer *tok, char *json, size_t n) {
    const ModelHeader *c = &m->cfg;
    ModelHeader probe = m->cfg;  // the spec must fit every linear of this model
    probe.quant_method = a->quant.method; probe.quant_bits = a->quant.bits; probe.quant_group = a->quant.group;
    const char *why = header_problem(&probe);
    if (why) die("--clip with -q %s -b %d -g %d: %s", quant_method_name(a->quant.method), a->quant.bits, a->quant.group, why);
    TokenStream s = load_tokens(a->calib, tok, c->vocab_size);
    int Tc = a->calib_len ? a->calib_len : (c->max_seq_len < 1024 ? c->max_seq_len : 1024);
    if (Tc > c->max_seq_len) die("--calib-len %d exceeds the model's context %d", Tc, c->max_seq_len);
    int Bc = (int)(s.n / Tc) < a->calib_seqs ? (int)(s.n / Tc) : a->calib_seqs;
    if (Bc < 1) die("%s: %lld tokens, fewer than one calibration sequence of %d", a->calib, (long long)s.n, Tc);
    printf("clip: %d calibration sequences x %d tokens from %s, %d positions per linear, -q %s -b %d -g %d\n",
           Bc, Tc, a->calib, a->clip_tokens < Bc * Tc ? a->clip_tokens : Bc * Tc, quant_method_name(a->quant.method),
           a->quant.bits, a->quant.group);
    ClipResult r = clip_model(m, a->quant, s.ids, Bc, Tc, a->clip_tokens);
    printf("clip: %lld groups searched; total output error of RTN %.6g -> clipped %.6g\n", (long long)r.groups,
           r.err_rtn, r.err_clipped);
    snprintf(json, n, "\"clip\": {\"groups\": %lld, \"err_rtn\": %.8g, \"err_clipped\": %.8g, \"seqs\": %d, \"len\": %d}",
             (long long)r.groups, r.err_rtn, r.err_clipped, Bc, Tc);
    free(s.ids);
}

// --export-packed: the packed model and its size in bits per weight; json as above.
static void export_from_flags(const Args *a, Model *m, char *json, size_t n) {
    int64_t bytes = export_packed(m, a->export_packed, a->out_dtype);
    int64_t lin = m->n_codes, lin_bytes = 0;
    for (int t = 0; t < N_TENSORS; t++)
        if (tensor_is_linear(t)) lin_bytes += packed_linear_bytes(m, t) * m->cfg.n_layers;
    double bpw = 8.0 * lin_bytes / lin;
    printf("wrote %s: %lld bytes; the linears take %.3f bits per weight (codes and scales), the whole file %.3f\n",
           a->export_packed, (long long)bytes, bpw, 8.0 * bytes / m->n_table);
    char q[4200];
    snprintf(json, n, "\"packed\": {\"path\": %s, \"bytes\": %lld, \"linear_bits_per_weight\": %.4f, \"bits_per_weight\": %.4f}",
             json_quote(q, sizeof q, a->export_packed), (long long)bytes, bpw, 8.0 * bytes / m->n_table);
}

// --histogram L: the histograms of layer L to --histogram-out's prefix; json as above.
static void histogram_from_flags(const Args *a, Model *m, char *json, size_t n) {
    char prefix[4000];
    if (a->histogram_out) snprintf(prefix, sizeof prefix, "%s", a->histogram_out);
    else snprintf(prefix, sizeof prefix, "histogram_layer%d", a->histogram);
    write_histogram(m, a->histogram, prefix, json, n);
}

#ifndef TRAIN_NO_MAIN
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);  // each line as it is printed, also into a file or a pipe
    Args a = parse_args(argc, argv);
#ifdef _OPENMP
    if (a.threads) omp_set_num_threads(a.threads);
#endif
    // the model: loaded, or random of a named shape
    Model m;
    if (a.model_path) {
        model_open(&m, a.model_path);
    } else {
        ModelHeader c = shape_header(a.init_shape);
        if (a.init_vocab) c.vocab_size = a.init_vocab;
        float *p = malloc_or_die((size_t)tensor_sizes(&c, (int64_t[N_TENSORS]){0}) * sizeof(float), "parameters");
        init_params(&c, p, a.seed);
        model_setup(&m, &c, p);
    }
    const char *train_path = a.train_tokens ? a.train_tokens : train_data_path(&a);
    int distill = distill_from_flags(&a, &m);
    Model teacher_model, *teacher = teacher_from_flags(&a, &m, &teacher_model);
    student_from_flags(&a, &m);
    Tokenizer tokenizer, *tok = NULL;
    const char *tok_path = tokenizer_from_flags(&a, &m, &tokenizer, &tok);
    print_model(&m);
    const ModelHeader *c = &m.cfg;

    // results accumulate into one JSON object, printed last
    char json[16384] = "", part[8192], qpath[4200];  // qpath: a file name quoted for JSON
#define JSON_ADD(...) do { snprintf(part, sizeof part, __VA_ARGS__); \
        if (json[0]) strncat(json, ", ", sizeof json - strlen(json) - 1); \
        strncat(json, part, sizeof json - strlen(json) - 1); } while (0)
    JSON_ADD("\"params\": %lld", (long long)m.n_params);

    int T = a.seq ? a.seq : (c->max_seq_len < 1024 ? c->max_seq_len : 1024);
    if (T > c->max_seq_len) die("--seq %d exceeds the model's context %d", T, c->max_seq_len);
    if (a.bench) {
        char b[1024];
        bench(&m, &a, T, b, sizeof b);
        JSON_ADD("%s", b);
    }
    if (a.generate_data) {  // the teacher writes the training data (BitDistiller's self-generated data)
        char b[8000];  // b fits in part (8192)
        generate_data_from_flags(&a, &m, tok, b, sizeof b);
        JSON_ADD("%s", b);
    }
    if (a.generate_prompt) {
        char b[8000];
        generate_text_from_flags(&a, &m, tok, b, sizeof b);
        JSON_ADD("%s", b);
    }
    if (train_path) {
        // the data: a token stream, or JSONL examples split into training and held-out fifths
        TrainData td;
        train_data_from_flags(&td, &a, train_path, tok, T, c->vocab_size);
        int steps = td.steps;
        TrainState st = {0, 0, rng_seeded(a.seed + 1).s, -1.0, a.batch, a.micro_batch, T, distill ? a.loss_kind : -1};
        Distiller d = {{LOSS_CE, 0, 1}, NULL, 1};
        char ckpt[4096] = "";
        if (a.ckpt) snprintf(ckpt, sizeof ckpt, "%s", a.ckpt);
        else if (a.out_path) snprintf(ckpt, sizeof ckpt, "%.4000s.ckpt", a.out_path);
        if (a.resume) {
            checkpoint_load(a.resume, &m, &st);
            if (st.step > steps) die("%s: saved at step %lld, beyond the run's %d steps", a.resume, (long long)st.step, steps);
            printf("resumed from %s at step %lld\n", a.resume, (long long)st.step);
        }
        if (distill) {
            if (st.gamma < 0) {  // measured once; a resumed run keeps the saved value
                int uses_gamma = a.loss_kind == LOSS_CAKLD || a.loss_kind == LOSS_CAKLD_CE;
                if (a.gamma >= 0) st.gamma = a.gamma;
                else if (uses_gamma && teacher) st.gamma = measure_gamma(teacher, &td.batches, st, a.micro_batch, T, a.gamma_batches, a.gamma_include_pad);
                else st.gamma = 0.0;
            }
            printf("distillation: %s, teacher %s, gamma %.4f%s\n", LOSS_NAMES[a.loss_kind],
                   a.teacher_path ? a.teacher_path : "= the full-precision model (self-distillation)", st.gamma,
                   a.gamma >= 0 ? " (given)" : a.gamma_include_pad ? " (measured, padding included)" : " (measured on real tokens)");
            DistillLoss dl = {(LossKind)a.loss_kind, (float)st.gamma, a.temperature};
            distiller_init(&d, dl, m.cfg.vocab_size, teacher ? teacher->cfg.vocab_size : m.cfg.vocab_size);
        }
        TrainResult r = train_loop(&m, distill ? teacher : NULL, distill ? &d : NULL, &a, &td.batches,
                                   a.train_tokens ? NULL : &td.eval, steps, T, &st, ckpt[0] ? ckpt : NULL);
        JSON_ADD("\"train\": {\"steps\": %lld, \"final_loss\": %.6f, \"tokens_per_s\": %.1f%s}", (long long)st.step, r.final_loss,
                 r.tokens_per_s, distill ? ", \"distill\": true" : "");
        if (r.eval_loss >= 0) JSON_ADD("\"eval_loss\": %.6f", r.eval_loss);
        if (distill) JSON_ADD("\"gamma\": %.6f, \"loss_kind\": \"%s\"", st.gamma, LOSS_NAMES[a.loss_kind]);
        if (ckpt[0]) JSON_ADD("\"ckpt\": %s", json_quote(qpath, sizeof qpath, ckpt));
        free(d.scratch);
        train_data_free(&td);
    }
    if (a.clip) {
        char b[1024];
        clip_from_flags(&a, &m, tok, b, sizeof b);
        JSON_ADD("%s", b);
    }
    if (a.out_path && !a.generate_data) {  // written before evaluation, so a long evaluation cannot lose the training
        ModelHeader out = m.cfg;
        out.dtype = a.out_dtype;
        model_save(a.out_path, &out, m.params);
        printf("wrote %s\n", a.out_path);
        char out_tok[4096];  // the tokenizer goes along, so that ./train -m OUT needs nothing else
        snprintf(out_tok, sizeof out_tok, "%.4000s.tokenizer", a.out_path);
        if (tok_path && strcmp(tok_path, out_tok)) copy_file_atomic(tok_path, out_tok);
        JSON_ADD("\"out\": %s", json_quote(qpath, sizeof qpath, a.out_path));
    }
    if (a.export_packed) {
        char b[4096 + 256];  // b fits in part (8192)
        export_from_flags(&a, &m, b, sizeof b);
        JSON_ADD("%s", b);
    }
    if (a.histogram >= 0) {
        char b[4096];  // b fits in part (8192)
        histogram_from_flags(&a, &m, b, sizeof b);
        JSON_ADD("%s", b);
    }
    if (a.eval_ppl) {
        int Te = a.eval_T ? a.eval_T : (c->max_seq_len < 2048 ? c->max_seq_len : 2048);
        if (Te > c->max_seq_len) die("-T %d exceeds the model's context %d", Te, c->max_seq_len);
        if (Te < 2) die("-T must be at least 2");
        TokenStream s;
        if (!strncmp(a.eval_ppl, "wikitext2:", 10)) {
            if (!tok) die("%s: WikiText-2 needs the model's tokenizer (--tokenizer FILE)", a.eval_ppl);
            s.ids = wikitext2_tokens(tok, a.eval_ppl + 10, &s.n);
            for (int64_t i = 0; i < s.n; i++)
                if (s.ids[i] >= c->vocab_size) die("%s: token id %d outside the model's vocabulary", a.eval_ppl, s.ids[i]);
        } else {
            s = load_tokens(a.eval_ppl, tok, c->vocab_size);
        }
        PplResult r = eval_ppl(&m, &s, Te, a.eval_batch, a.eval_ppl);
        printf("perplexity of %s: %.4f (%lld windows of %d tokens)\n", a.eval_ppl, r.ppl, (long long)r.windows, Te);
        JSON_ADD("\"ppl\": %.6f, \"loss\": %.6f, \"windows\": %lld, \"T\": %d", r.ppl, r.mean_loss, (long long)r.windows, Te);
        free(s.ids);
    }
    if (a.eval_qa) {
        char qa[4096];
        eval_qa_from_flags(&a, &m, tok, qa, sizeof qa);
        if (json[0]) strncat(json, ", ", sizeof json - strlen(json) - 1);
        strncat(json, qa, sizeof json - strlen(json) - 1);
    }
    printf("{%s}\n", json);
    if (tok) tokenizer_free(tok);
    if (teacher) model_free(teacher);
    model_free(&m);
    return 0;
}
#endif

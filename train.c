/*
 * train.c — train, quantize and evaluate a Llama in plain C.
 *
 * This file is the model and the training program, in the order the data flows:
 *   1. random initialisation (--init, of lib/shapes.h's named shapes)
 *   2. the Model: parameters, gradients, AdamW state and activations, each one contiguous
 *      buffer carved by a table
 *   3. layers, each forward beside its backward: embedding, RMSNorm, matmul, RoPE,
 *      attention, SwiGLU, residual, cross-entropy
 *   4. the model forward and backward
 *   5. quantized linears: fake quantization, straight-through backward, clipping, flip-flops
 *   6. distillation: the teacher, the losses of loss.h, the teacher's confidence gamma
 *   7. the optimizer: AdamW, learning-rate schedule, gradient clipping
 *   8. data: random windows of a token stream
 *   9. evaluation: perplexity
 *  10. the program around the method, in lib/: generation, zero-shot tasks, JSONL data,
 *      batches and the held-out loss, checkpoints, packed low-bit files, histograms, the
 *      command line and main's steps (the model, -o, --eval-ppl...), --bench, the pipeline
 *  11. the training loop
 *  12. main
 *
 * All math is fp32. Layouts are Hugging Face's, so the numbers can be compared with
 * transformers' LlamaForCausalLM one to one (test_reference).
 */
#include <time.h>            // defines: clock_gettime, for the timings
#ifdef _OPENMP
#include <omp.h>             // defines: omp_set_num_threads (--threads)
#endif
#include "loss.h"            // defines: the distillation losses (CE, KL, reverse KL, CAKLD, Wasserstein), gamma
#include "lib/gemm.h"        // defines: gemm, the blocked matrix product of the linears (section 3's matmul)
#include "lib/attention.h"   // defines: attention_forward/_backward, section 3's attention by blocks through gemm
#include "lib/model.h"       // defines: ModelHeader, the .bin format and the tensor table; with quant.h
                             //          (the quantizers) and lib/util.h (die, checked I/O, atomic files)
#include "lib/shapes.h"      // defines: shape_header, the named shapes of --init (tiny ... llama-2-7b)
#include "tokenizer.c"       // defines: Tokenizer (byte-level BPE, SentencePiece), encode, decode; lib/json.h
#include "lib/rng.h"         // defines: Rng (xorshift64*), rng_seeded, rng_uniform, rng_normal, rng_jump
#include "lib/tokens.h"      // defines: TokenStream, load_tokens (a .ids file, or text through the tokenizer)
// lib/'s files that use the Model come after it, in section 10.

// ============================================================================================
// 1. Random initialisation
//
// `./train --init NAME -o random.bin` writes a randomly initialised model of a named shape
// (lib/shapes.h): the "random baseline" of the papers, and what the benchmarks run on.

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
    int ste;                           // backward rule of int/nf3/nf4: QUANT_STE_PLAIN or _BITDISTILLER
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
        [A_LOGITS] = BT * V, [A_PROJ] = BT * D,
    };
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

// Activation a of layer l (NULL for one this run did not allocate: arithmetic on NULL is undefined).
static float *act_l(const Model *m, int a, int l) {
    return m->act[a] ? m->act[a] + (int64_t)l * m->act_layer_stride[a] : NULL;
}

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
// Every linear layer. With W [O,I] as Hugging Face stores it, the three products of a linear:
//   forward   out[n,o]  = sum_i x[n,i] W[o,i]       out[N,O]  = x[N,I] W[O,I]^T
//   backward  dx[n,i]  += sum_o dout[n,o] W[o,i]    dx[N,I]  += dout[N,O] W[O,I]
//             dW[o,i]  += sum_n dout[n,o] x[n,i]    dW[O,I]  += dout[N,O]^T x[N,I]
// The plain loops (matmul_*_reference) are the definition. The layers call lib/gemm.h's
// blocked product instead, the same sums in another order (so equal up to float rounding),
// much faster: cache-sized packed panels and a vector micro-kernel that keeps
// a tile of the output in registers (its header draws the blocking).
static void matmul_forward_reference(float *out, const float *x, const float *w, int N, int I, int O) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            float s = 0.0f;
            for (int i = 0; i < I; i++) s += x[(int64_t)n * I + i] * w[(int64_t)o * I + i];
            out[(int64_t)n * O + o] = s;
        }
}

static void matmul_backward_reference(float *dx, float *dw, const float *dout, const float *x,
                                      const float *w, int N, int I, int O) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            float g = dout[(int64_t)n * O + o];
            for (int i = 0; i < I; i++) {
                if (dx) dx[(int64_t)n * I + i] += g * w[(int64_t)o * I + i];
                if (dw) dw[(int64_t)o * I + i] += g * x[(int64_t)n * I + i];
            }
        }
}

// gemm(C, A, B, M, N, K, ta, tb, accumulate): C[M,N] (+)= op(A)[M,K] op(B)[K,N]
static void matmul_forward(float *out, const float *x, const float *w, int N, int I, int O) {
    gemm(out, x, w, N, O, I, 0, 1, 0);      // x [N,I] times W [O,I] transposed
}

static void matmul_backward(float *dx, float *dw, const float *dout, const float *x,
                            const float *w, int N, int I, int O) {
    if (dx) gemm(dx, dout, w, N, I, O, 0, 0, 1);  // dout [N,O] times W [O,I]
    if (dw) gemm(dw, dout, x, O, I, N, 1, 0, 1);  // dout [N,O] transposed times x [N,I]
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
// These are the definition, one query row at a time; the layers call lib/attention.h, the same
// function a block of queries at a time through gemm (tests/test_model.c compares the two).

// y += a x over n floats; restrict tells the compiler the rows do not overlap, so it vectorises
// the loop without a run-time check (the rows of q, k, v and their gradients never do).
static inline void axpy(float *restrict y, float a, const float *restrict x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

// Thread mapping: one (b, h) pair per iteration; scores[B,H,T] gives each its own row.
// The dot products over hd go through gemm.h's gemm_dot, whose 16 partial sums vectorise (a
// plain float sum is one chain of dependent additions, which the compiler may not reorder).
static void attention_forward_reference(float *out, float *lse, float *scores, const float *q, const float *k,
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
                    s[j] = gemm_dot(qt, kj, hd) * scale;
                    if (s[j] > mx) mx = s[j];
                }
                float sum = 0.0f;
                for (int j = 0; j <= t; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
                float *ot = out + (((int64_t)b * T + t) * H + h) * hd;
                for (int i = 0; i < hd; i++) ot[i] = 0.0f;
                for (int j = 0; j <= t; j++) {
                    const float *vj = v + (((int64_t)b * T + j) * KV + kvh) * hd;
                    axpy(ot, s[j] / sum, vj, hd);
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
static void attention_backward_reference(float *dq, float *dk, float *dv, float *scores, const float *dout,
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
                    float L = lse[((int64_t)b * H + h) * T + t], delta = gemm_dot(dot, ot, hd);
                    for (int j = 0; j <= t; j++) {
                        const float *kj = k + (((int64_t)b * T + j) * KV + kvh) * hd;
                        p[j] = expf(gemm_dot(qt, kj, hd) * scale - L);
                    }
                    for (int j = 0; j <= t; j++) {
                        int64_t kvi = (((int64_t)b * T + j) * KV + kvh) * hd;
                        const float *kj = k + kvi, *vj = v + kvi;
                        float *dkj = dk + kvi, *dvj = dv + kvi;
                        float ds = p[j] * (gemm_dot(dot, vj, hd) - delta) * scale;
                        axpy(dvj, p[j], dot, hd);
                        axpy(dqt, ds, kj, hd);
                        axpy(dkj, ds, qt, hd);
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
    #pragma omp parallel
    {
        float *e = malloc_or_die((size_t)V * sizeof(float), "a row of exponentials");  // each exp once
        #pragma omp for
        for (int n = 0; n < N; n++) {
            if (targets[n] < 0) continue;
            const float *z = logits + (int64_t)n * V;
            float *dz = dlogits + (int64_t)n * V;
            float mx = z[0];
            for (int i = 1; i < V; i++) mx = z[i] > mx ? z[i] : mx;
            float s = 0.0f;
            for (int i = 0; i < V; i++) { e[i] = expf(z[i] - mx); s += e[i]; }
            for (int i = 0; i < V; i++) dz[i] += k * e[i] / s;
            dz[targets[n]] -= k;
        }
        free(e);
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
    matmul_forward(q, xn1, layer_tensor(m->fwd_t, m, T_WQ, l), N, D, Hq);
    matmul_forward(k, xn1, layer_tensor(m->fwd_t, m, T_WK, l), N, D, Hkv);
    matmul_forward(v, xn1, layer_tensor(m->fwd_t, m, T_WV, l), N, D, Hkv);
    rope_forward(q, m->rope_cos, m->rope_sin, B, T, H, hd);
    rope_forward(k, m->rope_cos, m->rope_sin, B, T, KV, hd);
    attention_forward(att, act_l(m, A_LSE, l), q, k, v, B, T, H, KV, hd);
    const float *att_in = act_quant(m, act_l(m, A_ATTQ, l), att, N, Hq);  // attention_backward reads att
    matmul_forward(proj, att_in, layer_tensor(m->fwd_t, m, T_WO, l), N, Hq, D);
    residual_forward(mid, x, proj, (int64_t)N * D);
    // MLP block
    rmsnorm_forward(xn2, act_l(m, A_RSTD2, l), mid, layer_tensor(m->fwd_t, m, T_MLP_NORM, l), N, D, c->rms_norm_eps);
    act_quant(m, xn2, xn2, N, D);
    matmul_forward(gate, xn2, layer_tensor(m->fwd_t, m, T_WGATE, l), N, D, F);
    matmul_forward(up, xn2, layer_tensor(m->fwd_t, m, T_WUP, l), N, D, F);
    swiglu_forward(hmid, gate, up, (int64_t)N * F);
    act_quant(m, hmid, hmid, N, F);  // swiglu_backward reads gate and up
    matmul_forward(proj, hmid, layer_tensor(m->fwd_t, m, T_WDOWN, l), N, F, D);
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
    matmul_forward(m->logits, m->act[A_XNF], m->fwd_t[lm_head_tensor(m)], N, D, V);
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
    matmul_backward(dxn, m->dfwd_t[head], m->act[A_DLOGITS], m->act[A_XNF], m->fwd_t[head], N, D, V);
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
        matmul_backward(m->act[A_DHMID], layer_tensor(m->dfwd_t, m, T_WDOWN, l), dres, hmid,
                        layer_tensor(m->fwd_t, m, T_WDOWN, l), N, F, D);
        zero_act(m, A_DGATE, (int64_t)N * F);
        zero_act(m, A_DUP, (int64_t)N * F);
        swiglu_backward(m->act[A_DGATE], m->act[A_DUP], m->act[A_DHMID], gate, up, (int64_t)N * F);
        zero_act(m, A_DXN, (int64_t)N * D);
        matmul_backward(dxn, layer_tensor(m->dfwd_t, m, T_WGATE, l), m->act[A_DGATE], xn2,
                        layer_tensor(m->fwd_t, m, T_WGATE, l), N, D, F);
        matmul_backward(dxn, layer_tensor(m->dfwd_t, m, T_WUP, l), m->act[A_DUP], xn2,
                        layer_tensor(m->fwd_t, m, T_WUP, l), N, D, F);
        rmsnorm_backward(dres, layer_tensor(m->dfwd_t, m, T_MLP_NORM, l), dxn, mid,
                         layer_tensor(m->fwd_t, m, T_MLP_NORM, l), act_l(m, A_RSTD2, l), N, D);
        // attention block: dres now holds dL/dh, which the residual passes to x
        zero_act(m, A_DATT, (int64_t)N * Hq);
        matmul_backward(m->act[A_DATT], layer_tensor(m->dfwd_t, m, T_WO, l), dres,
                        c->quant_act_bits ? act_l(m, A_ATTQ, l) : att, layer_tensor(m->fwd_t, m, T_WO, l), N, Hq, D);
        zero_act(m, A_DQ, (int64_t)N * Hq);
        zero_act(m, A_DK, (int64_t)N * Hkv);
        zero_act(m, A_DV, (int64_t)N * Hkv);
        attention_backward(m->act[A_DQ], m->act[A_DK], m->act[A_DV], m->act[A_DATT], q, k, v, att,
                           act_l(m, A_LSE, l), B, T, H, KV, hd);
        rope_backward(m->act[A_DQ], m->rope_cos, m->rope_sin, B, T, H, hd);
        rope_backward(m->act[A_DK], m->rope_cos, m->rope_sin, B, T, KV, hd);
        zero_act(m, A_DXN, (int64_t)N * D);
        matmul_backward(dxn, layer_tensor(m->dfwd_t, m, T_WQ, l), m->act[A_DQ], xn1,
                        layer_tensor(m->fwd_t, m, T_WQ, l), N, D, Hq);
        matmul_backward(dxn, layer_tensor(m->dfwd_t, m, T_WK, l), m->act[A_DK], xn1,
                        layer_tensor(m->fwd_t, m, T_WK, l), N, D, Hkv);
        matmul_backward(dxn, layer_tensor(m->dfwd_t, m, T_WV, l), m->act[A_DV], xn1,
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
// mapped back by quant_backward: for int, nf3 and nf4 as BitDistiller trains (--ste
// bitdistiller: straight through the rounding and exactly through each group's scale into its
// max and min weights) or plain straight through to W (--ste plain, the straight-through
// estimator, Bengio et al. 2013); straight through for ternary; exactly to the learned scales of
// sign (FBI-LLM, Ma et al. 2024) and OneBit (Xu et al. 2024). Embeddings, norms and the LM head
// stay full precision.

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
// the instability of QAT that Leszko & Mateńko 2025 monitor).
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
                           layer_tensor(m->params_t, m, t, l), p0, p1, m->quant, m->ste, out, in);
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
// (The settings are copied out of o and the buffers marked restrict: they never overlap, and so
// the compiler keeps b1, b2, eps in registers and vectorises the loop.)
static void adamw_span(float *restrict p, const float *restrict g, float *restrict mm, float *restrict vv, int64_t n,
                       const OptConfig *o, float lr, float wd, float bc1, float bc2) {
    const float b1 = o->beta1, b2 = o->beta2, eps = o->eps;
    #pragma omp parallel for
    for (int64_t i = 0; i < n; i++) {
        mm[i] = b1 * mm[i] + (1.0f - b1) * g[i];
        vv[i] = b2 * vv[i] + (1.0f - b2) * g[i] * g[i];
        float mhat = mm[i] / bc1, vhat = vv[i] / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * p[i]);
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
// 8. Data: windows of a token stream
//
// A token stream (lib/tokens.h: a `.ids` file, or a text file run through the tokenizer) is
// pretraining's data. Training takes random windows of T+1 tokens from the stream: inputs are
// the first T, targets the last T. (Distillation's JSONL examples: lib/data.c.)

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
// 10. The program around the method (lib/)
//
// What ./train does besides training the model: generation, evaluation tasks, JSONL data and
// their held-out loss, checkpoints, packed files, histograms, the command line and the steps of
// main it names, the benchmark, the pipeline. These files read the
// Model's fields and call the functions above, and C needs a struct's definition before code that
// reads it, so they are included here, after the model, rather than in the block at the top.
#include "lib/generate.c"    // defines: KVCache, model_decode_step, InferenceBackend, sample_token, generate
#include "lib/eval.c"        // defines: eval_qa (zero-shot tasks), wikitext2_tokens
#include "lib/data.c"        // defines: Dataset (JSONL examples), eval_split_loss, generate_data, Batches, next_batch
#include "lib/checkpoint.c"  // defines: TrainState, checkpoint_save, checkpoint_load, log_step
#include "lib/packed.c"      // defines: export_packed, load_packed, model_open
#include "lib/histogram.c"   // defines: write_histogram
#include "lib/cli.c"         // defines: Args, usage, parse_args, TrainData, the *_from_flags steps of main
#include "lib/bench.c"       // defines: train_flops_per_token, bench
#include "lib/pipeline.c"    // defines: the pipeline (-q/-b/-g alone: every stage), eval_heldout, the loss SVG

// ============================================================================================
// 11. The training loop

typedef struct { float final_loss, tokens_per_s, eval_loss; } TrainResult;  // eval_loss -1: none

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

// Trains m from st->step to steps (or --stop-after): with d, distillation from the teacher
// with d's loss (loss.h; the teacher is unused by --loss ce); without, cross-entropy averaged
// over tokens (full-precision pretraining). With held-out examples (ev), their loss every
// --eval-every steps and at the end. Checkpoints every --save-every steps and at the end when a
// checkpoint path is given.
static TrainResult train_loop(Model *m, Model *teacher, Distiller *d, const Args *a, Batches *data, const Dataset *ev,
                              int steps, int T, TrainState *st, const char *ckpt) {
    model_alloc_training(m);
    StepLog log = {0};
    if (a->log_path) steplog_open(&log, a->log_path, st->step);
    // the checkpoint a stop leaves: the one resumed from, then each one written
    const char *saved = st->step ? a->resume : NULL;
    int64_t saved_step = st->step;
    char intact[4400];
    int B = a->micro_batch, accum = a->batch / a->micro_batch;
    int *inputs = malloc_or_die((size_t)B * T * sizeof(int), "inputs");
    int *targets = malloc_or_die((size_t)B * T * sizeof(int), "targets");
    int64_t first = st->step, last = a->stop_after && a->stop_after < steps ? a->stop_after : steps;
    double t0 = now_seconds();
    TrainResult r = {0, 0, -1};
    printf("training: steps %lld..%d of %d, %d sequences x %d tokens (%d micro-batches of %d), lr %g, %s\n",
           (long long)st->step + 1, (int)last, steps, a->batch, T, accum, B, a->opt.lr,
           d ? LOSS_NAMES[d->loss.kind] : "cross-entropy (mean over tokens)");
    int q = m->quant.method;
    if (q == QUANT_INT || q == QUANT_NF3 || q == QUANT_NF4)
        printf("quantizer backward: %s\n", m->ste == QUANT_STE_BITDISTILLER
               ? "bitdistiller (straight through the rounding, exact through the groups' scales)" : "plain straight-through");
    for (int64_t step = st->step; step < last; step++) {
        // the gradient of one step: the mean over `accum` micro-batches, each backward scaled by 1/accum
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
        checkpoint_note(intact, sizeof intact, saved, saved_step);
        if (!isfinite(loss)) die("step %lld: the loss is %f; stopping; %s", (long long)step + 1, loss, intact);
        // the update: clip the gradient's norm, the schedule's learning rate, AdamW on the latent weights
        float norm = clip_grad_norm(m, a->opt.grad_clip);
        float lr = lr_at(&a->opt, step, steps);
        adamw_update(m, &a->opt, lr);
        for (int64_t i = 0; i < m->n_params; i++)  // nothing non-finite may reach a checkpoint
            if (!isfinite(m->params[i]))
                die("step %lld: a weight became NaN or Inf (lower --lr?); stopping; %s", (long long)step + 1, intact);
        // the run's data position (micro-batches consumed, the sampler's state), which checkpoints save
        st->rng = rng.s;
        st->micro_batches += accum;
        st->step = step + 1;
        // what the step did: flipped codes, held-out loss, the progress line, the log, a checkpoint
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
        if (log.f) log_step(&log, m, step + 1, loss, eval_loss, lr, norm, tps, d ? st->gamma : -1.0);
        if (ckpt && ((a->save_every && st->step % a->save_every == 0) || st->step == last)) {
            checkpoint_save(ckpt, m, st);
            saved = ckpt, saved_step = st->step;
        }
        r.final_loss = (float)loss;
    }
    r.tokens_per_s = (float)((double)(last - first) * a->batch * T / (now_seconds() - t0));
    steplog_close(&log);
    free(inputs); free(targets);
    return r;
}

// ============================================================================================
// 12. main

// The flags' work, in a fixed order: the model (loaded, or random of a named shape); the teacher,
// copied before the student changes; the student (--clip-init, -q/-b/-g, --act-bits); then
// --bench, --generate-data, --generate, training, --clip, -o, --export-packed, --histogram,
// --eval-ppl and --eval-qa. Each adds its part to the one JSON line printed last.
#ifndef TRAIN_NO_MAIN
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);  // each line as it is printed, also into a file or a pipe
    Args a = parse_args(argc, argv);
#ifdef _OPENMP
    if (a.threads) omp_set_num_threads(a.threads);
#endif
    Model m;
    model_from_flags(&a, &m);  // loaded, or random of a named shape
    const char *train_path = a.train_tokens ? a.train_tokens : train_data_path(&a);
    int distill = distill_from_flags(&a, &m);
    Model teacher_model, *teacher = teacher_from_flags(&a, &m, &teacher_model);
    student_from_flags(&a, &m);
    Tokenizer tokenizer, *tok = NULL;
    const char *tok_path = tokenizer_from_flags(&a, &m, &tokenizer, &tok);
    print_model(&m);
    const ModelHeader *c = &m.cfg;
    if (pipeline_wanted(&a)) {  // a quantizer and nothing else to do: the whole method
        if (tok) tokenizer_free(tok);
        model_free(&m);
        return pipeline_run(&a, argc, argv);
    }

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
        char ckpt[4096];
        ckpt_path_from_flags(&a, ckpt, sizeof ckpt);
        if (a.resume) resume_from_flags(&a, &m, &st, steps);
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
        write_model_from_flags(&a, &m, tok_path);
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
        char b[1024];
        eval_ppl_from_flags(&a, &m, tok, b, sizeof b);
        JSON_ADD("%s", b);
    }
    if (a.eval_heldout) {
        char b[1024];
        eval_heldout_from_flags(&a, &m, tok, T, b, sizeof b);
        JSON_ADD("%s", b);
    }
    if (a.eval_qa) {
        char qa[4096];
        eval_qa_from_flags(&a, &m, tok, qa, sizeof qa);
        if (json[0]) strncat(json, ", ", sizeof json - strlen(json) - 1);
        strncat(json, qa, sizeof json - strlen(json) - 1);
    }
    printf("{%s}\n", json);
    stdout_check();
    if (tok) tokenizer_free(tok);
    if (teacher) model_free(teacher);
    model_free(&m);
    return 0;
}
#endif

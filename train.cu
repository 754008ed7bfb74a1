/*
 * train.cu — the GPU mirror of train.c: the same model, quantized linears, distillation losses,
 * optimizer and training loop, on one NVIDIA GPU or, data parallel over NCCL, on several.
 *
 * Read it beside train.c: the sections, the names and the argument orders are the same. A
 * layer `rmsnorm_forward` on the CPU is a launcher `rmsnorm_forward` here, whose kernel is
 * `rmsnorm_forward_kernel`; the kernels and their launchers live in cuda/*.cuh, one layer family a
 * file (the include block below is their table of contents), and this file keeps the model on the
 * GPU, its training loop and main. Its own host code around the model (generation, data
 * parallelism, --bench, its flags) is cuda/*.cu, included after the Model (section 10) as train.c
 * includes lib/*.c. What is not about the model (the command line, loading and saving
 * models, token files, checkpoints, the JSONL log) is train.c's own code, compiled as C in
 * lib/train_cu_host.c and reached through lib/train_cu.h, so both programs read and write the same
 * bytes and take the same flags (plus their own: --matmul fp32|tf32|bf16, --attention
 * gemm|fused|flash|cudnn, --layered-wq, --recompute).
 *
 *   2. the Model on the GPU: parameters, gradients, AdamW state, activations
 *   3. layers: what ties cuda/'s launchers to the Model (bf16 activations, weights, residual + norm)
 *   4. the model forward and backward
 *   5. quantized linears: quant.h's quantizers in kernels once per step, BitDistiller's or plain straight-through backward
 *   6. distillation: the classifier fused with loss.h's losses, in chunks of rows
 *   7. the optimizer: AdamW, gradient clipping
 *   9. evaluation: perplexity
 *  10. the program around the model, in cuda/*.cu: generation (a KV cache, the decode step) and
 *      zero-shot scoring for train.c's loops, data parallelism over NCCL with ZeRO-1 optimizer
 *      state, --bench, train_cu's own flags
 *  11. the training loop (--train-tokens or --data with its held-out loss)
 *  12. main; --clip, --export-packed and --histogram are train.c's own, on the downloaded parameters
 *
 * Precision: parameters (the master weights), gradients and AdamW moments are fp32, and so is the
 * residual stream; matmuls (all through cuBLASLt) run in bf16 (--matmul bf16, the default), with
 * TF32 tensor cores (--matmul tf32), or in plain fp32 (--matmul fp32, what the parity test
 * compares against train.c). Under bf16 the quantizer writes each fake-quantized linear straight
 * into the bf16 copy the matmuls read, activations that only bf16 readers take are kept in bf16
 * alone (act_bf16, section 3), and a full-precision teacher is stored in bf16. Attention runs as
 * cuBLAS products over a [T,T] score matrix (--attention gemm, the default under tf32 and fp32), as
 * a fused kernel on CUDA cores (--attention fused), or as FlashAttention-2 on bf16 tensor cores
 * (--attention flash, the default under bf16 without cuDNN), or, in a build with cuDNN, as cuDNN's
 * fused attention with the flash path's inputs and outputs (--attention cudnn, the default under
 * bf16 there). doc/gpu.md explains these choices and the memory plan; doc/performance.md has the
 * benchmark.
 */
#include <cublasLt.h>               // defines: cublasLtMatmul and its descriptors (every product)
#include <cuda_bf16.h>              // defines: __nv_bfloat16 and its conversions
#include <cuda_runtime.h>           // defines: cudaMalloc, cudaMemcpy, kernel launches, events
#include <float.h>                  // defines: FLT_MAX (the loss kernels)
#include <stdarg.h>                 // defines: va_list (fail)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>                   // defines: clock_gettime (now_seconds)
#ifdef USE_NCCL
#include <nccl.h>                   // defines: ncclAllReduce, ncclReduceScatter, ncclAllGather (data parallel)
#endif
#ifdef USE_CUDNN
#include <array>
#include <map>
#include <unordered_map>
#pragma nv_diagnostic push
#pragma nv_diag_suppress 128, 2810  // (cudnn-frontend's own: a loop after a return, a nodiscard result assigned)
#include <cudnn_frontend.h>         // defines: cudnn_frontend::graph::Graph, its sdpa and sdpa_backward (--attention cudnn)
#pragma nv_diagnostic pop
#endif

#include "lib/dp.h"                 // defines: DpEnv, dp_env_read, dp_rendezvous, the ZeRO-1 shard and span arithmetic
#include "loss.h"                   // defines: DistillLoss, the losses (QD: also run inside the loss kernels)
#include "quant.h"                  // defines: QuantSpec, the quantizers' per-group functions (QD: run inside kernels)
#include "lib/train_cu.h"           // defines: HostModel, HostArgs, host_*: train.c's host code, compiled as C
#include "cuda/common.cuh"          // defines: fail, cudaCheck, cublasCheck, launchCheck, PROFILE, gpu_malloc (the memory
                                    //   plan), blocks_for, warp/block reductions, bf16 stores, cast_bf16, cast_bf16_rows, Act
#include "cuda/matmul.cuh"          // defines: g_bf16, g_compute, lt_matmul (cuBLASLt plans), bf16 scratch, Weight,
                                    //   matmul_forward, matmul_forward_add, matmul_backward, matmul_backward_stacked
#include "cuda/embedding.cuh"       // defines: embedding_forward, embedding_backward
#include "cuda/rmsnorm.cuh"         // defines: rmsnorm_forward, rmsnorm_backward
#include "cuda/rope.cuh"            // defines: rope_forward, rope_backward (fp32 in place, or into bf16, rows at strides)
#include "cuda/attention.cuh"       // defines: attention_forward/_backward (fused), attention_forward_gemm/_backward_gemm,
                                    //   attention_decode (one position against a KV cache)
#include "cuda/flash_attention.cuh" // defines: attention_forward_flash, attention_backward_flash (mma.sync, bf16)
#ifdef USE_CUDNN
#include "cuda/cudnn_attention.cuh" // defines: attention_forward_cudnn, attention_backward_cudnn (cuDNN's fused attention,
                                    //   the flash kernels' arguments and results; they run what cuDNN does not take),
                                    //   attention_backward_cudnn_bf16 (dq, dk, dv in bf16 at strides)
#else                               // (without cuDNN, --attention cudnn is refused: cli.cu; these are never reached)
#define attention_forward_cudnn attention_forward_flash
#define attention_backward_cudnn attention_backward_flash
#define attention_backward_cudnn_bf16(...) 0
#endif
#include "cuda/swiglu.cuh"          // defines: swiglu_forward, swiglu_backward
#include "cuda/quant.cuh"           // defines: quantize_group, quantize_binary, quantize_ternary, dequantize_layer,
                                    //   quant_backward_binary, ste_bitdistiller: quant.h's quantizers in kernels, and their backward
#include "cuda/loss.cuh"            // defines: crossentropy_forward (rows), distill_loss, distill_loss_wasserstein, gamma_rows
#include "cuda/adamw.cuh"           // defines: OptConfig, sum_squares, adamw_span
#include "cuda/data_parallel.cuh"   // defines: g_dp, dp_setup, dp_connect, dp_finish, dp_reduce_scatter, dp_all_gather (NCCL)

// ============================================================================================
// 2. The Model on the GPU
//
// The same four buffers of n_params floats as train.c (parameters, gradients, AdamW m and v),
// carved by model.h's table at the offsets train.c computed; the same activation table.

enum {  // activations, as train.c's (without its matmul scratch, which cuBLAS does not need)
    A_RESID, A_XN1, A_RSTD1, A_Q, A_K, A_V,
    A_QB, A_KB, A_VB,  // --attention flash: bf16 q, k, v (after RoPE), what its kernels read
    A_ATT, A_LSE, A_RESID_MID, A_XN2, A_RSTD2,
    A_GATE, A_UP, A_HMID, A_XNF, A_RSTDF,
    A_DELTA,      // [B,H,T]  attention backward: dO_t . O_t per row (train.c recomputes it per row)
    A_SCORES,     // [B,H,T,T] --attention gemm: scores, then probabilities (one layer at a time)
    A_DSCORES,    // [B,H,T,T] --attention gemm, training: dL/dP, then dL/dS
    A_DRESID, A_DXN, A_DQ, A_DK, A_DV, A_DATT, A_DGATE, A_DUP, A_DHMID,
    N_ACTS
};
// No [B,T,V] logits among them: training and perplexity run the classifier and the loss in
// chunks of rows (section 6); only an inference forward that asks for every logit (model_forward)
// gets them, in their own buffer (logits below), made when first needed.

typedef struct {
    HostModel *h;               // shape and table, as train.c set them up
    int64_t n_params, n_table, slice[N_TENSORS];
    float *params, *grads, *adam_m, *adam_v;
    float *params_t[N_TENSORS], *grads_t[N_TENSORS];
    float *fwd_t[N_TENSORS], *dfwd_t[N_TENSORS];
    // --matmul bf16: bf16 copies of the matmul weights (fwd_t's linears and LM head), remade from
    // fwd_t when bf16_stale; a bf16-only teacher has these alone (fwd_t NULL but for the norms)
    __nv_bfloat16 *wbf, *wbf_t[N_TENSORS];
    int bf16_stale, bf16_only;
    // quantization (section 5)
    QuantSpec quant;
    int ste;                                 // backward rule of int, nf3, nf4: QUANT_STE_PLAIN or _BITDISTILLER
    float *wq, *dwq;                         // fp32 W^ (not under bf16; one layer's when layered), dL/dW^ (sign, onebit only)
    uint8_t *codes;
    int64_t qoff[N_TENSORS];                 // first weight of tensor t in wq, codes (table order)
    float *qstate;
    float *qp0[N_TENSORS], *qp1[N_TENSORS];
    int64_t qn0[N_TENSORS], qn1[N_TENSORS];
    int quant_stale, codes_valid;
    // layered W^ (--layered-wq, when the run trains; section 5): the linears' W^ of layer wq_at
    // alone (-1: none yet), in wq (fp32) or wq_bf (bf16), linear t at qlay[t]
    int wq_layered, wq_at;
    __nv_bfloat16 *wq_bf;
    int64_t qlay[N_TENSORS];
    int64_t flips[N_TENSORS], flips_total, n_codes;
    int64_t *flips_layer;                    // host [L]
    unsigned char *fresh;                    // host [N_TENSORS * L]: the layer's gradient slice not yet written this step (grad_beta)
    unsigned long long *d_flips;             // device [N_TENSORS * L]
    // activations
    int B, T, training, attention;           // what the activations are sized for (attention: attention_mode)
    int recompute;                           // sized under --recompute: mid, gate and up remade in the backward
    float *acts, *act[N_ACTS];
    int64_t act_layer_stride[N_ACTS];
    float *rope_cos, *rope_sin;
    float *logits;                           // [B,T,V] of the last model_forward (inference only)
    int64_t logits_cap;
    int *inputs, *targets;                   // device [B,T]
    int *by_token, n_tokens;                 // device [B*T + n_tokens + 1]: positions grouped by token (embedding_backward)
    int *staged;                             // pinned host [4 B*T + 1]: inputs, targets, by_token on their way up
    cudaEvent_t staged_read;                 // recorded after the copies of staged (model_forward_hidden)
    double *rows;                            // device [B*T]: one number per position (losses, gamma)
    double *d_sum;                           // device scratch for reductions
    int *d_bad;
    float loss;
    int64_t step;
} Model;

static int g_wq_layers;           // quantized models set up now keep W^ one layer at a time (section 5)
static int g_attention_gemm = 1;  // --attention gemm (cuBLAS, [T,T] scores); with g_attention_flash 0 too: fused
                                  // (parse_gpu_flags picks cudnn or flash under bf16 unless --attention is given)
static int g_attention_flash;     // --attention flash (bf16 tensor cores, no [T,T]); g_attention_gemm is 0 then
static int g_attention_cudnn;     // --attention cudnn: cuDNN's fused attention in the flash path's place (and its
                                  // activations: g_attention_flash is 1 too)
static int g_recompute;           // --recompute: mid and the MLP's gate and up remade in the backward

static float *layer_tensor(float *const ptrs[N_TENSORS], const Model *m, int t, int l) {
    return ptrs[t] + (m->h->per_layer[t] ? (int64_t)l * m->slice[t] : 0);
}
static int lm_head_tensor(const Model *m) { return m->h->tied ? T_EMBED : T_LM_HEAD; }
static float *act_l(const Model *m, int a, int l) { return m->act[a] + (int64_t)l * m->act_layer_stride[a]; }

static void carve(const Model *m, float *base, float *ptrs[N_TENSORS]) {
    for (int t = 0; t < N_TENSORS; t++) ptrs[t] = m->h->offset[t] >= 0 ? base + m->h->offset[t] : NULL;
}

static void model_quant_setup(Model *m);
static int64_t dp_shard(const Model *m);
static double dp_all_reduce(Model *m, double x);
static void dp_report_shard(const Model *m);

static int64_t tensor_numel(const Model *m, int t) { return m->slice[t] * (m->h->per_layer[t] ? m->h->n_layers : 1); }
static int is_norm_tensor(int t) { return t == T_ATTN_NORM || t == T_MLP_NORM || t == T_FINAL_NORM; }
// The weights a matmul reads: the seven linears of every layer and the LM head (the embedding when tied).
static int is_matmul_weight(const Model *m, int t) { return m->h->offset[t] >= 0 && (m->h->is_linear[t] || t == lm_head_tensor(m)); }

// --matmul bf16: room for the bf16 copies of the matmul weights, in table order.
// Under layered W^ the linears' copies are its one layer (model_quant_setup), not made here.
static int in_bf16_copies(const Model *m, int t) { return is_matmul_weight(m, t) && !(m->wq_layered && m->h->is_linear[t]); }
static void model_bf16_setup(Model *m) {
    int64_t n = 0;
    for (int t = 0; t < N_TENSORS; t++) n += in_bf16_copies(m, t) ? tensor_numel(m, t) : 0;
    m->wbf = (__nv_bfloat16 *)gpu_malloc((size_t)n * sizeof(__nv_bfloat16), "bf16 weights");
    n = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!in_bf16_copies(m, t)) continue;
        m->wbf_t[t] = m->wbf + n;
        n += tensor_numel(m, t);
    }
    m->bf16_stale = 1;
}

// W_bf16 = bf16(W) of every matmul weight as the forward uses it (fake-quantized where quantized):
// once per step, after the update and the quantizer.
static void model_cast_bf16(Model *m) {
    if (!m->wbf) model_bf16_setup(m);
    for (int t = 0; t < N_TENSORS; t++)  // quantized linears: the quantizer writes their bf16 W^ (section 5)
        if (m->wbf_t[t] && !(m->quant.method != QUANT_NONE && m->h->is_linear[t]))
            cast_bf16(m->wbf_t[t], m->fwd_t[t], tensor_numel(m, t));
    m->bf16_stale = 0;
}

// Copies train.c's parameters to the GPU (the host keeps its copy for writing files).
static void model_setup(Model *m, HostModel *h, const char *what) {
    memset(m, 0, sizeof *m);
    m->h = h;
    m->n_params = h->n_params;
    m->n_table = h->n_table;
    for (int t = 0; t < N_TENSORS; t++) m->slice[t] = h->slice[t];
    m->params = (float *)gpu_malloc((size_t)dp_padded(m->n_params) * sizeof(float), what);  // ZeRO-1's shards (cuda/zero1.cu)
    cudaCheck(cudaMemset(m->params + m->n_params, 0, (size_t)(dp_padded(m->n_params) - m->n_params) * sizeof(float)));
    cudaCheck(cudaMemcpy(m->params, h->params, (size_t)m->n_params * sizeof(float), cudaMemcpyHostToDevice));
    carve(m, m->params, m->params_t);
    memcpy(m->fwd_t, m->params_t, sizeof m->fwd_t);
    m->quant.method = h->quant_method; m->quant.bits = h->quant_bits; m->quant.group = h->quant_group;
    m->ste = h->quant_ste;
    m->rows = NULL;
    m->d_sum = (double *)gpu_malloc(64 * sizeof(double), "scratch");
    m->d_bad = (int *)gpu_malloc(sizeof(int), "scratch");
    if (m->quant.method != QUANT_NONE) model_quant_setup(m);
    if (g_bf16) model_bf16_setup(m);
}

// The teacher is frozen: under --matmul bf16 a full-precision one is stored in bf16 alone (every
// tensor but the norm gains, which stay fp32 and are a few thousand floats a layer), half the
// bytes of fp32; it goes up through a small fp32 staging buffer. Otherwise as the student.
static void model_setup_teacher(Model *m, HostModel *h) {
    if (!g_bf16 || h->quant_method != QUANT_NONE || h->n_params != h->n_table) { model_setup(m, h, "teacher"); return; }
    memset(m, 0, sizeof *m);
    m->h = h;
    m->n_params = h->n_params;
    m->n_table = h->n_table;
    for (int t = 0; t < N_TENSORS; t++) m->slice[t] = h->slice[t];
    m->quant.method = QUANT_NONE;
    int64_t nf = 0, nb = 0, stage_n = (int64_t)1 << 24;
    for (int t = 0; t < N_TENSORS; t++)
        if (h->offset[t] >= 0) *(is_norm_tensor(t) ? &nf : &nb) += tensor_numel(m, t);
    m->params = (float *)gpu_malloc((size_t)nf * sizeof(float), "teacher");
    m->wbf = (__nv_bfloat16 *)gpu_malloc((size_t)nb * sizeof(__nv_bfloat16), "teacher");
    float *stage = (float *)gpu_malloc((size_t)stage_n * sizeof(float), "scratch");
    nf = nb = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (h->offset[t] < 0) continue;
        int64_t n = tensor_numel(m, t);
        const float *src = h->params + h->offset[t];
        if (is_norm_tensor(t)) {
            m->params_t[t] = m->params + nf;
            nf += n;
            cudaCheck(cudaMemcpy(m->params_t[t], src, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
            continue;
        }
        m->wbf_t[t] = m->wbf + nb;
        nb += n;
        for (int64_t i = 0; i < n; i += stage_n) {
            int64_t c = n - i < stage_n ? n - i : stage_n;
            cudaCheck(cudaMemcpy(stage, src + i, (size_t)c * sizeof(float), cudaMemcpyHostToDevice));
            cast_bf16(m->wbf_t[t] + i, stage, c);
        }
    }
    cudaCheck(cudaDeviceSynchronize());
    gpu_free(stage);
    memcpy(m->fwd_t, m->params_t, sizeof m->fwd_t);
    m->bf16_only = 1;
    m->d_sum = (double *)gpu_malloc(64 * sizeof(double), "scratch");
    m->d_bad = (int *)gpu_malloc(sizeof(int), "scratch");
}

static void model_alloc_training(Model *m) {
    if (m->grads) return;
    // AdamW m and v are not carved by the table: adamw_update indexes them by its spans. Under
    // ZeRO-1 (cuda/zero1.cu): gradients over the padded buffer (the padding stays zero), m and v of
    // this rank's shard alone
    size_t ng = (size_t)dp_padded(m->n_params) * sizeof(float), ns = (size_t)(g_dp.on ? dp_shard(m) : m->n_params) * sizeof(float);
    const char *mv = g_dp.on ? "AdamW m, v (ZeRO-1 shard)" : "AdamW m, v";
    m->grads = (float *)gpu_malloc(ng, "gradients");
    m->adam_m = (float *)gpu_malloc(ns, mv);
    m->adam_v = (float *)gpu_malloc(ns, mv);
    cudaCheck(cudaMemset(m->grads, 0, ng));
    cudaCheck(cudaMemset(m->adam_m, 0, ns));
    cudaCheck(cudaMemset(m->adam_v, 0, ns));
    if (g_dp.on) dp_report_shard(m);
    carve(m, m->grads, m->grads_t);
    for (int t = 0; t < N_TENSORS; t++) m->dfwd_t[t] = m->h->is_linear[t] && m->dwq ? m->dfwd_t[t] : m->grads_t[t];
    m->fresh = (unsigned char *)calloc((size_t)N_TENSORS * m->h->n_layers, 1);
    if (!m->fresh) fail("out of host memory");
}

// Parameters (and AdamW moments) between the host's buffers and the GPU's.
static void model_download(Model *m, int with_adam) {
    size_t n = (size_t)m->n_params * sizeof(float);
    cudaCheck(cudaMemcpy(m->h->params, m->params, n, cudaMemcpyDeviceToHost));
    if (with_adam && m->grads) {
        host_alloc_training(m->h);
        cudaCheck(cudaMemcpy(m->h->adam_m, m->adam_m, n, cudaMemcpyDeviceToHost));
        cudaCheck(cudaMemcpy(m->h->adam_v, m->adam_v, n, cudaMemcpyDeviceToHost));
    }
}

static void model_upload(Model *m, int with_adam) {
    size_t n = (size_t)m->n_params * sizeof(float);
    cudaCheck(cudaMemcpy(m->params, m->h->params, n, cudaMemcpyHostToDevice));
    if (with_adam) {
        model_alloc_training(m);
        cudaCheck(cudaMemcpy(m->adam_m, m->h->adam_m, n, cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(m->adam_v, m->h->adam_v, n, cudaMemcpyHostToDevice));
    }
    if (m->quant.method != QUANT_NONE) m->quant_stale = 1;
    m->bf16_stale = 1;
}

// Activation recomputation: the normed inputs of the two blocks and the SwiGLU product are not
// kept per layer for the backward (2D + F of the 6D + 2 Hkv + 3F floats a layer keeps a position,
// a third for TinyLlama) but remade there from what is kept (x, rstd and the gain; gate and up),
// by the same deterministic kernels, so the gradients are unchanged: a few elementwise passes a
// layer, no matmul.
//
// Under --attention flash the fp32 q, k, v are not kept either: the flash kernels read only their
// bf16 copies (A_QB, A_KB, A_VB), which are kept per layer instead, half the bytes.
static int act_bf16(int a);  // kept in bf16 alone (section 3, Act)
//
// --recompute goes further, for memory: the residual stream between the two blocks (mid = x +
// att Wo^T) and the MLP's gate and up projections are not kept either but remade in the backward
// by their matmuls, the forward's own on the same operands (x and att, kept; xn2, remade from mid;
// the layer's W^), so the same bits. It saves D fp32 and 2F bf16 values a position a layer (4.9
// GiB on TinyLlama at 8 x 1024 tokens) for three matmuls of the seven a layer's forward runs.
static int act_recomputed(int a) {
    return a == A_XN1 || a == A_XN2 || a == A_HMID || (g_attention_flash && (a == A_Q || a == A_K || a == A_V)) ||
           (g_recompute && (a == A_RESID_MID || a == A_GATE || a == A_UP));
}

// Rows of a loss chunk (section 6): --loss-chunk ROWS, or as many as keep one chunk's logits
// within HEAD_CHUNK_FLOATS (128 MiB of fp32), a multiple of 128 where that is more than 128 (the
// classifier's matmuls then split into whole tiles of rows).
#define HEAD_CHUNK_FLOATS ((int64_t)1 << 25)
static int g_loss_chunk;
static int head_chunk_rows(int N, int V) {
    int64_t r = g_loss_chunk > 0 ? g_loss_chunk : HEAD_CHUNK_FLOATS / (V > 0 ? V : 1);
    if (g_loss_chunk <= 0 && r > 128) r -= r % 128;
    return (int)(r < 1 ? 1 : r > N ? N : r);
}

// The attention kernels' choice, which sizes some activations (scores; flash's bf16 q, k, v).
static int attention_mode(void) { return g_attention_gemm + 2 * g_attention_flash; }

// Sizes the activations for B x T (as train.c: per layer when training, one shared slot otherwise).
static void model_alloc_acts(Model *m, int B, int T, int training) {
    if (m->acts && B == m->B && T == m->T && training == m->training && m->attention == attention_mode() &&
        m->recompute == g_recompute)
        return;
    const HostModel *c = m->h;
    int64_t BT = (int64_t)B * T, D = c->dim, F = c->hidden_dim, V = c->vocab_size, L = c->n_layers;
    int64_t Hq = (int64_t)c->n_heads * c->head_dim, Hkv = (int64_t)c->n_kv_heads * c->head_dim, H = c->n_heads;
    int64_t size[N_ACTS] = {0};
    size[A_RESID] = BT * D; size[A_XN1] = BT * D; size[A_RSTD1] = BT; size[A_Q] = BT * Hq;
    size[A_K] = BT * Hkv; size[A_V] = BT * Hkv; size[A_ATT] = BT * Hq; size[A_LSE] = B * H * T;
    size[A_XN2] = BT * D; size[A_RSTD2] = BT; size[A_GATE] = BT * F;
    size[A_UP] = BT * F; size[A_HMID] = BT * F; size[A_XNF] = BT * D; size[A_RSTDF] = BT;
    if (training) size[A_RESID_MID] = BT * D;  // else the residual adds are in place (matmul_residual_norm)
    if (g_attention_flash) { size[A_QB] = BT * Hq; size[A_KB] = BT * Hkv; size[A_VB] = BT * Hkv; }
    if (g_attention_gemm) size[A_SCORES] = B * H * T * T;
    if (training && g_attention_gemm) size[A_DSCORES] = B * H * T * T;
    if (training) {
        size[A_DELTA] = B * H * T;
        size[A_DRESID] = BT * D; size[A_DXN] = BT * D; size[A_DQ] = BT * Hq;
        size[A_DK] = BT * Hkv; size[A_DV] = BT * Hkv; size[A_DATT] = BT * Hq;
        size[A_DGATE] = BT * F; size[A_DUP] = BT * F; size[A_DHMID] = BT * F;
    }
    // --matmul bf16: the activations of act_bf16 are stored in bf16 alone, half the floats; every
    // slot starts 256 bytes aligned, as a cudaMalloc'd buffer does (the alignment of an operand
    // can change cuBLAS's choice of kernel, so also its sums).
    int64_t total = 0, count[N_ACTS], align = g_bf16 || g_attention_flash ? 64 : 1;
    for (int a = 0; a < N_ACTS; a++) size[a] = act_bf16(a) ? (size[a] + 1) / 2 : size[a];
    for (int a = A_QB; a <= A_VB; a++) size[a] = (size[a] + 1) / 2;  // bf16 (flash_qkv)
    for (int a = 0; a < N_ACTS; a++) size[a] = (size[a] + align - 1) / align * align;
    for (int a = 0; a < N_ACTS; a++) {
        int per_layer = a >= A_RESID && a <= A_HMID && !act_recomputed(a);
        count[a] = per_layer && training ? (a == A_RESID ? L + 1 : L) : 1;
        m->act_layer_stride[a] = per_layer && training ? size[a] : 0;
        total += count[a] * size[a];
    }
    gpu_free(m->acts); gpu_free(m->rope_cos); gpu_free(m->rope_sin);
    gpu_free(m->inputs); gpu_free(m->targets); gpu_free(m->rows); gpu_free(m->by_token);
    m->acts = (float *)gpu_malloc((size_t)total * sizeof(float), "activations");
    float *p = m->acts;
    for (int a = 0; a < N_ACTS; a++) { m->act[a] = size[a] ? p : NULL; p += count[a] * size[a]; }
    m->B = B; m->T = T; m->training = training; m->attention = attention_mode(); m->recompute = g_recompute;
    size_t half = (size_t)T * c->head_dim / 2;
    float *cs = (float *)malloc(2 * half * sizeof(float));
    if (!cs) fail("out of host memory for the RoPE tables");
    host_rope_tables(cs, cs + half, c, T);
    m->rope_cos = (float *)gpu_malloc(half * sizeof(float), "activations");
    m->rope_sin = (float *)gpu_malloc(half * sizeof(float), "activations");
    cudaCheck(cudaMemcpy(m->rope_cos, cs, half * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(m->rope_sin, cs + half, half * sizeof(float), cudaMemcpyHostToDevice));
    free(cs);
    m->inputs = (int *)gpu_malloc((size_t)BT * sizeof(int), "activations");
    m->by_token = training ? (int *)gpu_malloc((size_t)(2 * BT + 1) * sizeof(int), "activations") : NULL;
    m->targets = (int *)gpu_malloc((size_t)BT * sizeof(int), "activations");
    m->rows = (double *)gpu_malloc((size_t)BT * sizeof(double), "activations");
    if (m->staged) cudaCheck(cudaFreeHost(m->staged));
    cudaCheck(cudaMallocHost((void **)&m->staged, (size_t)(4 * BT + 1) * sizeof(int)));
    if (!m->staged_read) cudaCheck(cudaEventCreateWithFlags(&m->staged_read, cudaEventDisableTiming));
    if (g_bf16) {  // the bf16 casts of a matmul's input [BT, I] and output gradient [BT, O], or [R, V] of a loss chunk;
                   // the inputs cast are xnf and, but under flash, the attention output (the others are stored in bf16),
                   // so I = max(D, Hq); the output gradients, the loss chunk's dz cast, dq|dk|dv [BT, Hq + 2 Hkv]
                   // (qkv_gradients) and the residual gradient's copy (rmsnorm_backward) written there
        int64_t O = D > F ? D : F, R = head_chunk_rows((int)BT, (int)V);
        O = BT * (O > Hq + 2 * Hkv ? O : Hq + 2 * Hkv);
        bf16_scratch_reserve(BT * (D > Hq ? D : Hq), training ? (O > R * V ? O : R * V) : 0);
    }
}

static void model_free(Model *m) {
    gpu_free(m->params); gpu_free(m->grads); gpu_free(m->adam_m); gpu_free(m->adam_v);
    gpu_free(m->wbf); gpu_free(m->wq); gpu_free(m->wq_bf); gpu_free(m->dwq); gpu_free(m->codes); gpu_free(m->qstate);
    gpu_free(m->d_flips); free(m->flips_layer); free(m->fresh);
    gpu_free(m->acts); gpu_free(m->rope_cos); gpu_free(m->rope_sin); gpu_free(m->inputs); gpu_free(m->targets); gpu_free(m->by_token);
    gpu_free(m->rows); gpu_free(m->d_sum); gpu_free(m->d_bad); gpu_free(m->logits);
    if (m->staged) cudaCheck(cudaFreeHost(m->staged));
    if (m->staged_read) cudaCheck(cudaEventDestroy(m->staged_read));
    memset(m, 0, sizeof *m);
}

// ============================================================================================
// 3. Layers
//
// The kernels and their launchers are cuda/*.cuh's (the include block above). Launchers take
// train.c's arguments (outputs first, then inputs, then sizes) and, like train.c's layers,
// ACCUMULATE (+=) into every gradient they write; the model backward zeroes them, or
// (matmul_backward's betas) has the first matmul into a buffer write it instead. What stays here
// is what ties them to the Model: which activations are kept in bf16, a tensor's weight for a
// matmul, and the residual add fused with the norm after it.

// Under --matmul bf16 every activation whose readers are bf16 products (matmuls, the flash
// kernels) or elementwise kernels that take bf16 is kept in bf16 alone (an Act with h alone), made
// so by its producer: one rounding per value instead of a cast before each matmul that reads it,
// and half the bytes stored and moved.
//   - the normed inputs xn1, xn2 (rmsnorm_forward) and the SwiGLU product hmid (swiglu_forward):
//     read by matmuls alone (their backward reads x and rstd, gate and up); the values are those
//     of a cast, __float2bfloat16_rn of the same fp32 value;
//   - gate and up (their matmuls write bf16, as PyTorch's autocast keeps them), read by
//     swiglu_forward and swiglu_backward; dhmid likewise (the down matmul's backward), read by
//     swiglu_backward, which writes dgate and dup in bf16 for the gate and up matmuls;
//   - under --attention flash the attention output O (written by the flash forward, read by the
//     output matmul and by the backward's Delta = dO . O) and its gradient dO (the output
//     matmul's backward, read by Delta and the flash backward), as FlashAttention-2 keeps them.
// One Act has both: the residual gradient, fp32 (it sums over the layers) with the bf16 copy that
// each rmsnorm backward writes beside it for the matmul backward that reads it next.
static int act_bf16(int a) {
    return g_bf16 && (a == A_XN1 || a == A_XN2 || a == A_HMID || a == A_GATE || a == A_UP || a == A_DGATE ||
                      a == A_DUP || a == A_DHMID || (g_attention_flash && (a == A_ATT || a == A_DATT)));
}
static Act act_in(const Model *m, int a, int l) {
    float *p = act_l(m, a, l);
    Act x = {act_bf16(a) ? NULL : p, act_bf16(a) ? (__nv_bfloat16 *)p : NULL};
    return x;
}

// The Weight (cuda/matmul.cuh) of tensor t, layer l. A linear's W^ under layered W^ is that of
// the layer model_layer_weights made last, which must be l.
static Weight weight(const Model *m, int t, int l) {
    int layered = m->wq_layered && m->h->is_linear[t];
    if (layered && m->wq_at != l) fail("internal: layer %d's W^ asked for while layer %d's is made", l, m->wq_at);
    int64_t off = m->h->per_layer[t] && !layered ? (int64_t)l * m->slice[t] : 0;
    Weight w = {m->fwd_t[t] ? m->fwd_t[t] + off : NULL, m->wbf_t[t] ? m->wbf_t[t] + off : NULL};
    return w;
}

// --- the residual add after a block, and the RMSNorm that reads its sum -------------------
// y = x + a W^T (the matmul's epilogue: matmul_forward_add), then norm.y = rmsnorm(y) * norm.w
// (norm.rstd its 1/rms): the next block's input. The student keeps x and y per layer for its
// backward; without a backward the residual stream is one buffer (y == x: act_l of A_RESID is one
// slot, and layer_forward passes it as mid too), added to in place.
typedef struct { Act y; float *rstd; const float *w; } Norm;
static void matmul_residual_norm(float *y, const float *x, Act a, Weight w, int N, int I, int O, Norm norm, float eps) {
    matmul_forward_add(y, x, a, w, N, I, O);
    rmsnorm_forward(norm.y, norm.rstd, y, norm.w, N, O, eps);
}
// The norm after layer l's MLP block: layer l + 1's attention norm (into xn1), after the last
// layer the final norm (into xnf, the classifier's input).
static Norm norm_after_layer(const Model *m, int l) {
    if (l + 1 == m->h->n_layers) {
        Norm n = {act_f(m->act[A_XNF]), m->act[A_RSTDF], m->fwd_t[T_FINAL_NORM]};
        return n;
    }
    Norm n = {act_in(m, A_XN1, l + 1), act_l(m, A_RSTD1, l + 1), layer_tensor(m->fwd_t, m, T_ATTN_NORM, l + 1)};
    return n;
}

// --- cross-entropy of full logits (model_forward): cuda/loss.cuh's rows, averaged here ------
// Row losses back on the host; the mean over rows with a target (targets: the host's copy).
static double rows_mean(const Model *m, const int *targets, int N, double *host_rows) {
    cudaCheck(cudaMemcpy(host_rows, m->rows, (size_t)N * sizeof(double), cudaMemcpyDeviceToHost));
    double sum = 0.0;
    int count = 0;
    for (int n = 0; n < N; n++) if (targets[n] >= 0) { sum += host_rows[n]; count++; }
    return count ? sum / count : 0.0;
}

static float crossentropy_forward(Model *m, const float *logits, const int *d_targets, const int *targets, int N, int V) {
    PROFILE(PROF_LOSS);
    crossentropy_forward(m->rows, logits, d_targets, N, V);
    double *h = (double *)malloc((size_t)N * sizeof(double));
    if (!h) fail("out of host memory");
    float loss = (float)rows_mean(m, targets, N, h);
    free(h);
    return loss;
}

// ============================================================================================
// 4. The model forward and backward (train.c's, layer for layer)

// --attention flash: layer l's bf16 q, k or v (A_QB, A_KB, A_VB), kept for the backward.
static __nv_bfloat16 *flash_qkv(const Model *m, int a, int l) { return (__nv_bfloat16 *)act_l(m, a, l); }

static void model_layer_weights(Model *m, int l);

static void layer_forward(Model *m, int l, int B, int T) {
    const HostModel *c = m->h;
    model_layer_weights(m, l);  // under layered W^, this layer's (section 5)
    int N = B * T, D = c->dim, F = c->hidden_dim, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    int Hq = H * hd, Hkv = KV * hd;
    float *x = act_l(m, A_RESID, l), *q = act_l(m, A_Q, l),
          *k = act_l(m, A_K, l), *v = act_l(m, A_V, l);
    float *mid = m->training ? act_l(m, A_RESID_MID, l) : x;  // without a backward: x itself (matmul_residual_norm)
    Act xn1 = act_in(m, A_XN1, l), xn2 = act_in(m, A_XN2, l), hmid = act_in(m, A_HMID, l),  // bf16 under --matmul bf16
        att = act_in(m, A_ATT, l), gate = act_in(m, A_GATE, l), up = act_in(m, A_UP, l);
    // attention block (xn1 = rmsnorm(x) was made with x: by the layer below, or for layer 0 by
    // model_forward_hidden)
    matmul_forward(q, xn1, weight(m, T_WQ, l), N, D, Hq);
    matmul_forward(k, xn1, weight(m, T_WK, l), N, D, Hkv);
    if (g_attention_flash) {  // the kernels read bf16 q, k (rotated, then rounded) and v (the matmul's own)
        __nv_bfloat16 *qb = flash_qkv(m, A_QB, l), *kb = flash_qkv(m, A_KB, l), *vb = flash_qkv(m, A_VB, l);
        Act vh = {g_bf16 ? NULL : v, g_bf16 ? vb : NULL};
        matmul_forward(vh, xn1, weight(m, T_WV, l), N, D, Hkv);
        if (!g_bf16) cast_bf16(vb, v, (int64_t)N * Hkv);
        rope_forward_bf16(qb, q, m->rope_cos, m->rope_sin, B, T, H, hd);
        rope_forward_bf16(kb, k, m->rope_cos, m->rope_sin, B, T, KV, hd);
        if (g_attention_cudnn) attention_forward_cudnn(att, act_l(m, A_LSE, l), qb, kb, vb, B, T, H, KV, hd);
        else attention_forward_flash(att, act_l(m, A_LSE, l), qb, kb, vb, B, T, H, KV, hd);
    } else {
        matmul_forward(v, xn1, weight(m, T_WV, l), N, D, Hkv);
        rope_forward(q, m->rope_cos, m->rope_sin, B, T, H, hd);
        rope_forward(k, m->rope_cos, m->rope_sin, B, T, KV, hd);
        if (g_attention_gemm) attention_forward_gemm(att.f, act_l(m, A_LSE, l), m->act[A_SCORES], q, k, v, B, T, H, KV, hd);
        else attention_forward(att.f, act_l(m, A_LSE, l), q, k, v, B, T, H, KV, hd);
    }
    Norm norm2 = {xn2, act_l(m, A_RSTD2, l), layer_tensor(m->fwd_t, m, T_MLP_NORM, l)};
    matmul_residual_norm(mid, x, att, weight(m, T_WO, l), N, Hq, D, norm2, c->rms_norm_eps);
    // MLP block
    matmul_forward(gate, xn2, weight(m, T_WGATE, l), N, D, F);
    matmul_forward(up, xn2, weight(m, T_WUP, l), N, D, F);
    swiglu_forward(hmid, gate, up, (int64_t)N * F);
    matmul_residual_norm(act_l(m, A_RESID, l + 1), mid, hmid, weight(m, T_WDOWN, l), N, F, D, norm_after_layer(m, l),
                         c->rms_norm_eps);
}

static void model_quantize(Model *m);

// The positions of inputs[N] grouped by token for embedding_backward: a stable sort of (token,
// position) pairs; m->by_token gets the N positions in that order, then where each of the
// n_tokens groups starts (n_tokens + 1 entries, the last N).
static int compare_token_position(const void *a, const void *b) {
    const int *x = (const int *)a, *y = (const int *)b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] < y[1] ? -1 : x[1] > y[1]);
}
static void model_group_tokens(Model *m, const int *inputs, int N) {
    int *pairs = (int *)malloc((size_t)N * 2 * sizeof(int)), *host = m->staged + 2 * N;
    if (!pairs) fail("out of host memory for the batch's token groups");
    for (int n = 0; n < N; n++) { pairs[2 * n] = inputs[n]; pairs[2 * n + 1] = n; }
    qsort(pairs, (size_t)N, 2 * sizeof(int), compare_token_position);
    int groups = 0;
    for (int j = 0; j < N; j++) {
        host[j] = pairs[2 * j + 1];
        if (j == 0 || pairs[2 * j] != pairs[2 * j - 2]) host[N + groups++] = j;
    }
    host[N + groups] = N;
    cudaCheck(cudaMemcpyAsync(m->by_token, host, (size_t)(N + groups + 1) * sizeof(int), cudaMemcpyHostToDevice));
    m->n_tokens = groups;
    free(pairs);
}

// The layer stack up to the final norm: act[A_XNF] = the classifier's input [B,T,D]. inputs and
// targets are the host's [B,T]; targets (NULL: none) go to the device for the loss that follows.
static void model_forward_hidden(Model *m, const int *inputs, const int *targets, int B, int T) {
    const HostModel *c = m->h;
    if (m->quant_stale) model_quantize(m);
    if (g_bf16 && (m->bf16_stale || !m->wbf)) model_cast_bf16(m);
    if (!g_bf16 && m->bf16_only) fail("internal: a bf16-only model run without --matmul bf16");
    if (T > c->max_seq_len) fail("sequence length %d exceeds the model's context %d", T, c->max_seq_len);
    if (c->head_dim > ATT_MAX_HD) fail("head_dim %d: train_cu's attention kernel takes at most %d", c->head_dim, ATT_MAX_HD);
    model_alloc_acts(m, B, T, m->grads != NULL);
    int N = B * T, D = c->dim, V = c->vocab_size;
    for (int i = 0; i < N; i++) {
        if (inputs[i] < 0 || inputs[i] >= V) fail("token id %d out of range [0, %d)", inputs[i], V);
        if (targets && targets[i] >= V) fail("target id %d out of range [0, %d)", targets[i], V);
    }
    // The uploads go through pinned memory, in stream order, so the host does not wait for the
    // GPU here (a copy from pageable memory waits for the stream first), and the tokens are
    // grouped while the GPU runs the layers, not while it idles. staged is reused once the last
    // forward's copies out of it are done.
    cudaCheck(cudaEventSynchronize(m->staged_read));
    memcpy(m->staged, inputs, (size_t)N * sizeof(int));
    cudaCheck(cudaMemcpyAsync(m->inputs, m->staged, (size_t)N * sizeof(int), cudaMemcpyHostToDevice));
    if (targets) {
        memcpy(m->staged + N, targets, (size_t)N * sizeof(int));
        cudaCheck(cudaMemcpyAsync(m->targets, m->staged + N, (size_t)N * sizeof(int), cudaMemcpyHostToDevice));
    }

    if (m->fwd_t[T_EMBED]) embedding_forward(act_l(m, A_RESID, 0), m->inputs, m->fwd_t[T_EMBED], N, D);
    else embedding_forward(act_l(m, A_RESID, 0), m->inputs, m->wbf_t[T_EMBED], N, D);  // a bf16-only teacher
    rmsnorm_forward(act_in(m, A_XN1, 0), act_l(m, A_RSTD1, 0), act_l(m, A_RESID, 0),
                    layer_tensor(m->fwd_t, m, T_ATTN_NORM, 0), N, D, c->rms_norm_eps);
    for (int l = 0; l < c->n_layers; l++) layer_forward(m, l, B, T);  // the last one ends with xnf
    if (m->by_token) model_group_tokens(m, inputs, N);
    cudaCheck(cudaEventRecord(m->staged_read));
}

// The whole forward with every logit: logits[B,T,V] (inference, the tests). Training and
// perplexity never ask for them: they run the classifier in chunks with the loss (section 6).
// inputs/targets are the host's [B,T]; targets may be NULL (no loss). Returns the mean CE.
static float *model_logits(Model *m, int64_t N) {  // room for N rows of logits (inference)
    return gpu_grow(&m->logits, &m->logits_cap, N * m->h->vocab_size, "logits (inference)");
}

static float model_forward(Model *m, const int *inputs, const int *targets, int B, int T) {
    model_forward_hidden(m, inputs, targets, B, T);
    int64_t N = (int64_t)B * T;
    int D = m->h->dim, V = m->h->vocab_size;
    matmul_forward(model_logits(m, N), m->act[A_XNF], weight(m, lm_head_tensor(m), 0), (int)N, D, V);
    m->loss = targets ? crossentropy_forward(m, m->logits, m->targets, targets, (int)N, V) : 0.0f;
    return m->loss;
}

// A step's gradients start at zero. The linears' and an untied LM head's are written by their
// matmuls' backward alone (dfwd_t is grads_t: no dL/dW^ of their own), so they are not cleared
// but marked fresh, and the first matmul of the step writes them (grad_beta: beta 0) instead of
// adding to zeros: 4.2 GB not cleared and not read back on the benchmark's 1.1 G parameters
// (PyTorch's gradients start as None for the same reason). Every other gradient (norm gains, the
// embedding, the learned quantizer scales after the table) is cleared. model_settle_grads clears
// what is still fresh after a backward.
static int grad_written_by_matmul(const Model *m, int t) {
    return m->grads_t[t] && m->dfwd_t[t] == m->grads_t[t] && (m->h->is_linear[t] || (t == T_LM_HEAD && !m->h->tied));
}
static void model_zero_grad(Model *m) {
    if (!m->grads) return;
    int L = m->h->n_layers;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->grads_t[t]) continue;
        if (grad_written_by_matmul(m, t)) memset(m->fresh + (size_t)t * L, 1, m->h->per_layer[t] ? (size_t)L : 1);
        else cudaCheck(cudaMemsetAsync(m->grads_t[t], 0, (size_t)tensor_numel(m, t) * sizeof(float)));
    }
    cudaCheck(cudaMemsetAsync(m->grads + m->n_table, 0, (size_t)(m->n_params - m->n_table) * sizeof(float)));
}
// The beta of the matmul backward adding to the gradient of tensor t, layer l (0: the layer's
// slice is fresh, and is written now; it is not fresh after).
static float grad_beta(Model *m, int t, int l) {
    unsigned char *f = m->fresh ? m->fresh + (size_t)t * m->h->n_layers + (m->h->per_layer[t] ? l : 0) : NULL;
    if (!f || !*f) return 1.0f;
    *f = 0;
    return 0.0f;
}
// Clears the slices no matmul wrote since model_zero_grad (none, on every path that runs all
// layers), so that the gradients read after a backward are whole.
static void model_settle_grads(Model *m) {
    if (!m->fresh) return;
    int L = m->h->n_layers;
    for (int t = 0; t < N_TENSORS; t++)
        for (int l = 0; l < (m->h->per_layer[t] ? L : 1); l++) {
            if (!m->fresh[(size_t)t * L + l]) continue;
            m->fresh[(size_t)t * L + l] = 0;
            float *g = layer_tensor(m->grads_t, m, t, l);
            cudaCheck(cudaMemsetAsync(g, 0, (size_t)m->slice[t] * sizeof(float)));
        }
}

static void zero_act(Model *m, int a, int64_t n) { cudaCheck(cudaMemsetAsync(m->act[a], 0, (size_t)n * sizeof(float))); }

static void model_quant_backward(Model *m);

// The bf16 W^ of layer l's q, k and v stacked [Hq + 2 Hkv, D], as their one dx product reads
// them: where the three lie so already (one layer's W^ under --layered-wq), in place; else
// copied into a scratch.
static const __nv_bfloat16 *qkv_weights(const Model *m, int l) {
    const __nv_bfloat16 *wq = weight(m, T_WQ, l).h, *wk = weight(m, T_WK, l).h, *wv = weight(m, T_WV, l).h;
    int64_t nq = m->slice[T_WQ], nk = m->slice[T_WK];
    if (wk == wq + nq && wv == wk + nk) return wq;
    static __nv_bfloat16 *buf;
    static int64_t cap;
    __nv_bfloat16 *w = bf16_scratch(&buf, &cap, nq + 2 * nk);
    cudaCheck(cudaMemcpyAsync(w, wq, (size_t)nq * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice));
    cudaCheck(cudaMemcpyAsync(w + nq, wk, (size_t)nk * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice));
    cudaCheck(cudaMemcpyAsync(w + nq + nk, wv, (size_t)nk * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice));
    return w;
}

// The attention's backward, from dO (datt) to dq, dk, dv and on through RoPE: the gradients the
// q, k and v matmuls' backward reads. Under bf16 they are written side by side in the rows of
// one bf16 buffer, dqkv [N, Hq + 2 Hkv] (g_bf_d): cuDNN writes them there itself, the other
// kernels into the fp32 dq, dk, dv, rotated and cast into it; dq and dk are rotated back in place.
// Under fp32 they stay in dq, dk, dv, rotated in place. Returns dqkv (bf16), or NULL (fp32).
static __nv_bfloat16 *qkv_gradients(Model *m, int l, Act datt, Act att) {
    const HostModel *c = m->h;
    int B = m->B, T = m->T, N = B * T, H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, Hq = H * hd, Hkv = KV * hd;
    int C = Hq + 2 * Hkv;
    float *dq = m->act[A_DQ], *dk = m->act[A_DK], *dv = m->act[A_DV], *lse = act_l(m, A_LSE, l);
    __nv_bfloat16 *dqkv = g_bf16 ? bf16_scratch(&g_bf_d, &g_bf_d_n, (int64_t)N * C) : NULL;
    if (dqkv && g_attention_cudnn &&
        attention_backward_cudnn_bf16(dqkv, dqkv + Hq, dqkv + Hq + Hkv, C, C, datt, flash_qkv(m, A_QB, l),
                                      flash_qkv(m, A_KB, l), flash_qkv(m, A_VB, l), att, lse, B, T, H, KV, hd)) {
        rope_backward_bf16(dqkv, C, dqkv, C, m->rope_cos, m->rope_sin, B, T, H, hd);
        rope_backward_bf16(dqkv + Hq, C, dqkv + Hq, C, m->rope_cos, m->rope_sin, B, T, KV, hd);
        return dqkv;
    }
    zero_act(m, A_DQ, (int64_t)N * Hq);
    zero_act(m, A_DK, (int64_t)N * Hkv);
    zero_act(m, A_DV, (int64_t)N * Hkv);
    if (g_attention_gemm)
        attention_backward_gemm(dq, dk, dv, m->act[A_SCORES], m->act[A_DSCORES], datt.f, act_l(m, A_Q, l),
                                act_l(m, A_K, l), act_l(m, A_V, l), att.f, lse, B, T, H, KV, hd);
    else if (g_attention_flash)
        (g_attention_cudnn ? attention_backward_cudnn : attention_backward_flash)(
            dq, dk, dv, m->act[A_DELTA], datt, flash_qkv(m, A_QB, l), flash_qkv(m, A_KB, l), flash_qkv(m, A_VB, l), att,
            lse, B, T, H, KV, hd);
    else
        attention_backward(dq, dk, dv, m->act[A_DELTA], datt.f, act_l(m, A_Q, l), act_l(m, A_K, l), act_l(m, A_V, l),
                           att.f, lse, B, T, H, KV, hd);
    if (!dqkv) {
        rope_backward(dq, m->rope_cos, m->rope_sin, B, T, H, hd);
        rope_backward(dk, m->rope_cos, m->rope_sin, B, T, KV, hd);
        return NULL;
    }
    rope_backward_bf16(dqkv, C, dq, Hq, m->rope_cos, m->rope_sin, B, T, H, hd);
    rope_backward_bf16(dqkv + Hq, C, dk, Hkv, m->rope_cos, m->rope_sin, B, T, KV, hd);
    cast_bf16_rows(dqkv + Hq + Hkv, C, dv, Hkv, N, Hkv);
    return dqkv;
}

// Backward of the last forward below the classifier, given dL/dxnf in act[A_DXN] (head_loss
// leaves it there, with the classifier's own gradient already added).
static void model_backward_from_dxnf(Model *m) {
    const HostModel *c = m->h;
    int B = m->B, T = m->T, N = B * T, D = c->dim, F = c->hidden_dim,
        H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, Hq = H * hd, Hkv = KV * hd;
    float *dres = m->act[A_DRESID], *dxn = m->act[A_DXN];
    // dres: the residual gradient, and under bf16 its bf16 copy in g_bf_d, which each rmsnorm
    // backward writes as it adds to dres and the next matmul backward reads as its output
    // gradient (the down projection's, then the output projection's) before anything else
    // writes g_bf_d (qkv_gradients' dq|dk|dv; model_alloc_acts reserved g_bf_d for the larger of
    // the two, so that neither moves it)
    Act dres_a = {dres, g_bf16 ? bf16_scratch(&g_bf_d, &g_bf_d_n, (int64_t)N * D) : NULL};
    // final norm
    zero_act(m, A_DRESID, (int64_t)N * D);
    rmsnorm_backward(dres, dres_a.h, m->dfwd_t[T_FINAL_NORM], dxn, act_l(m, A_RESID, c->n_layers),
                     m->fwd_t[T_FINAL_NORM], m->act[A_RSTDF], N, D);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        model_layer_weights(m, l);
        float *x = act_l(m, A_RESID, l), *mid = act_l(m, A_RESID_MID, l);
        Act xn1 = act_in(m, A_XN1, l), xn2 = act_in(m, A_XN2, l), hmid = act_in(m, A_HMID, l),
            att = act_in(m, A_ATT, l), gate = act_in(m, A_GATE, l), up = act_in(m, A_UP, l);
        // recomputed (act_recomputed): under --recompute mid = x + att Wo^T; xn2 = rmsnorm(mid);
        // under --recompute gate and up from xn2; then hmid = swiglu(gate, up) of this layer
        if (m->recompute) matmul_forward_add(mid, x, att, weight(m, T_WO, l), N, Hq, D);
        rmsnorm_forward(xn2, act_l(m, A_RSTD2, l), mid, layer_tensor(m->fwd_t, m, T_MLP_NORM, l), N, D, c->rms_norm_eps);
        if (m->recompute) {
            matmul_forward(gate, xn2, weight(m, T_WGATE, l), N, D, F);
            matmul_forward(up, xn2, weight(m, T_WUP, l), N, D, F);
        }
        swiglu_forward(hmid, gate, up, (int64_t)N * F);
        // MLP block: dres holds dL/dx'. Under bf16 dhmid, dgate, dup are written, not accumulated (Act).
        // (the first matmul into each of dhmid, dxn, datt writes it: beta 0, no clearing first)
        Act dhmid = act_in(m, A_DHMID, 0), dgate = act_in(m, A_DGATE, 0), dup = act_in(m, A_DUP, 0);
        matmul_backward(dhmid, layer_tensor(m->dfwd_t, m, T_WDOWN, l), dres_a, hmid,
                        weight(m, T_WDOWN, l), N, F, D, 0.0f, grad_beta(m, T_WDOWN, l));
        if (!g_bf16) zero_act(m, A_DGATE, (int64_t)N * F);
        if (!g_bf16) zero_act(m, A_DUP, (int64_t)N * F);
        swiglu_backward(dgate, dup, dhmid, gate, up, (int64_t)N * F);
        matmul_backward(act_f(dxn), layer_tensor(m->dfwd_t, m, T_WGATE, l), dgate, xn2,
                        weight(m, T_WGATE, l), N, D, F, 0.0f, grad_beta(m, T_WGATE, l));
        matmul_backward(act_f(dxn), layer_tensor(m->dfwd_t, m, T_WUP, l), dup, xn2,
                        weight(m, T_WUP, l), N, D, F, 1.0f, grad_beta(m, T_WUP, l));
        rmsnorm_backward(dres, dres_a.h, layer_tensor(m->dfwd_t, m, T_MLP_NORM, l), dxn, mid,
                         layer_tensor(m->fwd_t, m, T_MLP_NORM, l), act_l(m, A_RSTD2, l), N, D);
        // attention block: dres now holds dL/dh; dO written in bf16 under flash and bf16 (Act)
        Act datt = act_in(m, A_DATT, 0);
        matmul_backward(datt, layer_tensor(m->dfwd_t, m, T_WO, l), dres_a, att,
                        weight(m, T_WO, l), N, Hq, D, 0.0f, grad_beta(m, T_WO, l));
        __nv_bfloat16 *dqkv = qkv_gradients(m, l, datt, att);
        rmsnorm_forward(xn1, act_l(m, A_RSTD1, l), x, layer_tensor(m->fwd_t, m, T_ATTN_NORM, l), N, D, c->rms_norm_eps);
        float *dwq = layer_tensor(m->dfwd_t, m, T_WQ, l), *dwk = layer_tensor(m->dfwd_t, m, T_WK, l),
              *dwv = layer_tensor(m->dfwd_t, m, T_WV, l);
        if (dqkv) {  // one dx product over the three (inner size Hq + 2 Hkv), a dW product each
            float *dw[3] = {dwq, dwk, dwv};
            float dw_beta[3] = {grad_beta(m, T_WQ, l), grad_beta(m, T_WK, l), grad_beta(m, T_WV, l)};
            int widths[3] = {Hq, Hkv, Hkv};
            matmul_backward_stacked(dxn, dw, dw_beta, dqkv, xn1, qkv_weights(m, l), widths, 3, N, D, 0.0f);
        } else {
            matmul_backward(act_f(dxn), dwq, act_f(m->act[A_DQ]), xn1, weight(m, T_WQ, l), N, D, Hq, 0.0f, grad_beta(m, T_WQ, l));
            matmul_backward(act_f(dxn), dwk, act_f(m->act[A_DK]), xn1, weight(m, T_WK, l), N, D, Hkv, 1.0f, grad_beta(m, T_WK, l));
            matmul_backward(act_f(dxn), dwv, act_f(m->act[A_DV]), xn1, weight(m, T_WV, l), N, D, Hkv, 1.0f, grad_beta(m, T_WV, l));
        }
        rmsnorm_backward(dres, dres_a.h, layer_tensor(m->dfwd_t, m, T_ATTN_NORM, l), dxn, x,
                         layer_tensor(m->fwd_t, m, T_ATTN_NORM, l), act_l(m, A_RSTD1, l), N, D);
    }
    embedding_backward(m->dfwd_t[T_EMBED], dres, m->inputs, m->by_token, m->n_tokens, N, D);
    model_settle_grads(m);
    if (m->quant.method != QUANT_NONE) model_quant_backward(m);
}

static float head_ce_backward(Model *m, const int *targets, float loss_scale);

// Backward of the mean CE of the last forward (which had targets, the host's copy), times
// loss_scale; the classifier runs again, in chunks, fused with the loss. Returns the mean CE.
static float model_backward_scaled(Model *m, const int *targets, float loss_scale) {
    float loss = head_ce_backward(m, targets, loss_scale);
    model_backward_from_dxnf(m);
    return loss;
}

// ============================================================================================
// 5. Quantized linears
//
// As train.c: before a forward, each of the seven linears of every layer is replaced by its
// fake-quantized copy W^ = Q(W), computed by quant.h's own per-group and per-element functions
// (marked QD, so the same code runs here); the backward maps dL/dW^ to W straight through the
// rounding (STE), for int and nf also through each group's scale as BitDistiller trains (--ste),
// and exactly to the learned scales of sign and onebit. Layout: wq, dwq, codes in table order.
//
// The kernels are cuda/quant.cuh's; here, the Model's layout and the per-step pass over it.
// Memory: under --matmul bf16 the quantizer writes W^ straight into the bf16
// copy the matmuls read (rounding to nearest even, as a cast of the fp32 W^ would), so no fp32
// W^ exists; the matmuls' backward adds dL/dW^ into the gradients of W themselves (the
// straight-through estimator, dL/dW = dL/dW^; BitDistiller's rule then maps them in place),
// and dwq exists only for sign and onebit, whose backward needs dL/dW^ apart. Codes that flip are counted as they are written (no copy of the old codes).
// --layered-wq keeps W^ for one layer at a time, remade from the codes (model_layer_weights below).

// sign and onebit train their scales (they live in the parameters); the others derive them.
static int quant_is_learned_method(int method) { return method == QUANT_SIGN || method == QUANT_ONEBIT; }

static void model_quant_setup(Model *m) {
    const QuantSpec q = m->quant;
    int L = m->h->n_layers;
    int64_t n_lin = 0, n_derived = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->h->is_linear[t]) continue;
        quant_param_sizes(&m->qn0[t], &m->qn1[t], q, m->h->rows[t], m->h->cols[t]);
        n_lin += m->slice[t] * L;
        if (!quant_is_learned_method(q.method)) n_derived += (m->qn0[t] + m->qn1[t]) * L;
    }
    m->n_codes = n_lin;
    // layered W^: room for one layer of every linear, in the type the matmuls read, each starting
    // 256 bytes aligned (the alignment of an operand can change cuBLAS's kernel, so its sums)
    m->wq_layered = g_wq_layers;
    m->wq_at = -1;
    int64_t n_lay = 0;
    for (int t = 0; t < N_TENSORS; t++)
        if (m->h->is_linear[t]) m->qlay[t] = n_lay, n_lay += (m->slice[t] + 127) / 128 * 128;
    if (m->wq_layered && g_bf16) m->wq_bf = (__nv_bfloat16 *)gpu_malloc((size_t)n_lay * sizeof(__nv_bfloat16), "W^, one layer");
    else if (m->wq_layered) m->wq = (float *)gpu_malloc((size_t)n_lay * sizeof(float), "W^, one layer");
    else if (!g_bf16) m->wq = (float *)gpu_malloc((size_t)n_lin * sizeof(float), "quantized weights");
    if (quant_is_learned_method(q.method)) {
        m->dwq = (float *)gpu_malloc((size_t)n_lin * sizeof(float), "quantized weight gradients");
        cudaCheck(cudaMemset(m->dwq, 0, (size_t)n_lin * sizeof(float)));
    }
    m->codes = (uint8_t *)gpu_malloc((size_t)n_lin, "codes");
    m->qstate = (float *)gpu_malloc((size_t)(n_derived ? n_derived : 1) * sizeof(float), "quantized weights");
    m->d_flips = (unsigned long long *)gpu_malloc(N_TENSORS * L * sizeof(unsigned long long), "scratch");
    m->flips_layer = (int64_t *)calloc((size_t)L, sizeof(int64_t));
    cudaCheck(cudaMemset(m->codes, 0, (size_t)n_lin));
    float *learned = m->params + m->n_table, *derived = m->qstate;
    int64_t off = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->h->is_linear[t]) continue;
        m->qoff[t] = off;
        int64_t at = m->wq_layered ? m->qlay[t] : off;  // where W^ starts
        m->fwd_t[t] = m->wq ? m->wq + at : NULL;        // under bf16, W^ lives in wbf_t alone
        if (m->wq_bf) m->wbf_t[t] = m->wq_bf + at;
        m->dfwd_t[t] = m->dwq ? m->dwq + off : NULL;  // NULL: the gradients of W (model_alloc_training)
        off += m->slice[t] * L;
        float **p = quant_is_learned_method(q.method) ? &learned : &derived;
        m->qp0[t] = *p; *p += m->qn0[t] * L;
        m->qp1[t] = *p; *p += m->qn1[t] * L;
    }
    m->quant_stale = 1;
}

// One tensor of every layer: its W^ into wq (fp32 or bf16; NULL: none), codes, scales, flips[L].
template <typename W>
static void quantize_tensor(Model *m, int t, W *wq) {
    const QuantSpec q = m->quant;
    int L = m->h->n_layers, out = m->h->rows[t], in = m->h->cols[t], count = m->codes_valid;
    int64_t n = m->slice[t];
    uint8_t *codes = m->codes + m->qoff[t];
    unsigned long long *flips = m->d_flips + (int64_t)t * L;
    if (q.method == QUANT_INT || q.method == QUANT_NF3 || q.method == QUANT_NF4) {
        int g = quant_group_len(q, in);
        quantize_group(wq, codes, flips, count, m->qp0[t], m->qp1[t], m->params_t[t], n * L / g, g, n, q.method, q.bits, m->d_bad);
    } else if (q.method == QUANT_SIGN || q.method == QUANT_ONEBIT) {
        quantize_binary(wq, codes, flips, count, m->params_t[t], m->qp0[t], m->qp1[t], n * L, out, in, q.method, m->d_bad);
    } else if (q.method == QUANT_TERNARY) {
        if (L > 64) fail("ternary on the GPU: at most 64 layers");  // m->d_sum holds 64 layers' sums
        quantize_ternary(wq, codes, flips, count, m->qp0[t], m->params_t[t], m->d_sum, n, L, m->d_bad);
    }
}

// A quantizer's pass over every layer begins (flags and flip counters cleared) and ends (NaN or
// Inf is an error; the flips counted by layer and by tensor; the codes now the ones to compare to).
static void quantize_begin(Model *m) {
    cudaCheck(cudaMemsetAsync(m->d_bad, 0, sizeof(int)));
    cudaCheck(cudaMemsetAsync(m->d_flips, 0, N_TENSORS * m->h->n_layers * sizeof(unsigned long long)));
    if (g_bf16 && !m->wbf) model_bf16_setup(m);
}
static void quantize_finish(Model *m) {
    int L = m->h->n_layers, bad = 0;
    cudaCheck(cudaMemcpy(&bad, m->d_bad, sizeof(int), cudaMemcpyDeviceToHost));
    if (bad) fail("a linear weight is NaN or Inf: %s", quant_error_string(QUANT_ERR_NONFINITE));
    m->flips_total = 0;
    memset(m->flips_layer, 0, (size_t)L * sizeof(int64_t));
    if (m->codes_valid) {
        unsigned long long f[N_TENSORS * 64 * 16];
        if (N_TENSORS * L > (int)(sizeof f / sizeof f[0])) fail("too many layers for the flip counters");
        cudaCheck(cudaMemcpy(f, m->d_flips, N_TENSORS * L * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
        for (int t = 0; t < N_TENSORS; t++) {
            m->flips[t] = 0;
            if (!m->h->is_linear[t]) continue;
            for (int l = 0; l < L; l++) { m->flips[t] += f[t * L + l]; m->flips_layer[l] += f[t * L + l]; }
            m->flips_total += m->flips[t];
        }
    }
    m->codes_valid = 1;
    m->quant_stale = 0;
}

// A quantizer's pass, after an update: every layer's codes, scales and flips, and W^ where the
// matmuls read it; under layered W^ no W^ (model_layer_weights makes a layer's from the codes).
static void model_quantize(Model *m) {
    PROFILE(PROF_QUANT);
    quantize_begin(m);
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->h->is_linear[t]) continue;
        if (m->wq_layered) quantize_tensor(m, t, (float *)NULL);
        else if (g_bf16) quantize_tensor(m, t, m->wbf_t[t]);
        else quantize_tensor(m, t, m->fwd_t[t]);
    }
    m->wq_at = -1;
    quantize_finish(m);
}

// Layered W^ (--layered-wq): the linears' W^ exist for one layer at a time, which saves all the
// others' (doc/gpu.md gives the sizes). A training step needs each layer's in the forward and
// again in the backward (and in every micro-batch's): model_layer_weights makes it from what the
// quantizer's pass kept, the layer's codes and scales, through code_value, as the quantizer did:
// the same bits. A remake moves 3 bytes a weight (a code read, a bf16 written), twice a step,
// where the pass (which then writes no W^) moves 2 bytes less; it costs a little throughput
// (doc/performance.md), so it is not the default.

// Makes layer l's W^ the one the matmuls read (layered W^; nothing otherwise), from the codes
// and scales of the last quantizer's pass.
static void model_layer_weights(Model *m, int l) {
    if (!m->wq_layered || m->wq_at == l) return;
    PROFILE(PROF_QUANT);
    if (m->quant_stale) fail("internal: layer %d's W^ asked for before the quantizer's pass", l);
    DequantLayer d;
    memset(&d, 0, sizeof d);
    d.method = m->quant.method;
    d.bits = m->quant.bits;
    int64_t units = 0;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->h->is_linear[t]) continue;
        if (m->slice[t] > INT32_MAX - 8) fail("internal: a linear of 2^31 weights or more");
        DequantSegment *g = &d.s[d.count++];
        g->n = (int)m->slice[t];
        g->in = m->h->cols[t];
        g->g = quant_group_len(m->quant, g->in);
        g->wq = g_bf16 ? (void *)m->wbf_t[t] : (void *)m->fwd_t[t];
        g->codes = m->codes + m->qoff[t] + (int64_t)l * m->slice[t];
        g->p0 = m->qp0[t] + l * m->qn0[t];
        g->p1 = m->qp1[t] + l * m->qn1[t];
        g->vec = g->n % 4 == 0 && g->in % 4 == 0 && g->g % 4 == 0 && (uintptr_t)g->codes % 4 == 0 &&
                 (uintptr_t)g->wq % (4 * (g_bf16 ? 2 : 4)) == 0;
        g->first = units;
        units += (g->n + 3) / 4;
    }
    if (g_bf16) dequantize_layer<__nv_bfloat16>(d, units);
    else dequantize_layer<float>(d, units);
    m->wq_at = l;
}

static void model_quant_backward(Model *m) {
    PROFILE(PROF_QUANT);
    int L = m->h->n_layers, method = m->quant.method;
    if (!m->dwq) return;  // straight through: the matmuls' backward already added dL/dW^ to dL/dW
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->h->is_linear[t]) continue;
        int out = m->h->rows[t], in = m->h->cols[t];
        if (method == QUANT_SIGN || method == QUANT_ONEBIT) {
            float *dp0 = m->grads + (m->qp0[t] - m->params), *dp1 = m->grads + (m->qp1[t] - m->params);
            quant_backward_binary(m->grads_t[t], dp0, dp1, m->dfwd_t[t], m->params_t[t], m->qp0[t], m->qp1[t], out, in, L,
                                  method);
        }
    }
    cudaCheck(cudaMemsetAsync(m->dwq, 0, (size_t)m->n_codes * sizeof(float)));
}

// BitDistiller's backward of int and nf (--ste bitdistiller, the default): once a step, after
// the micro-batches' backwards have summed dL/dW^ into the gradients of W, each group's sum is
// mapped to dL/dW in place (cuda/quant.cuh's ste_bitdistiller; the map is linear, so once on the
// sum is the sum of it per micro-batch, as train.c applies it). The forward's scales are still
// W's: no update came between.
static void model_ste_backward(Model *m) {
    int method = m->quant.method;
    if (m->ste != QUANT_STE_BITDISTILLER || (method != QUANT_INT && method != QUANT_NF3 && method != QUANT_NF4)) return;
    PROFILE(PROF_QUANT);
    int L = m->h->n_layers;
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->h->is_linear[t]) continue;
        int g = quant_group_len(m->quant, m->h->cols[t]);
        ste_bitdistiller(m->grads_t[t], m->params_t[t], m->qp0[t], m->qp1[t], m->slice[t] * L / g, g, method, m->quant.bits);
    }
}

// ============================================================================================
// 6. Distillation
//
// The distiller (the loss and its scratch) and the classifier fused with the loss in chunks of
// rows; the loss kernels (loss.h's losses, one block a row) are cuda/loss.cuh's.

typedef struct {
    DistillLoss loss;
    float *scratch;  // device [R, max(V, Vt)] for a chunk of R rows (Wasserstein only)
    double *host_rows;
} Distiller;

static void distiller_init(Distiller *d, DistillLoss loss, int V, int Vt, int N) {
    d->loss = loss;
    size_t row = distill_loss_scratch_floats(loss.kind, V, Vt);
    int R = head_chunk_rows(N, V > Vt ? V : Vt);
    d->scratch = row ? (float *)gpu_malloc(row * R * sizeof(float), "loss chunks") : NULL;
    d->host_rows = (double *)malloc((size_t)N * sizeof(double));
    if (!d->host_rows) fail("out of host memory");
}

// --- the classifier fused with the loss, in chunks of rows ----------------------------------
// For rows n0 .. n0+R-1 of the batch (R = head_chunk_rows):
//   zs[R,V] = xnf_S W_S^T,  zt[R,Vt] = xnf_T W_T^T  (the teacher's, when the loss reads it),
//   the loss kernel replaces zs by dz = dL/dzs in place (Wasserstein, which sorts, writes a
//   separate dz), then  dW_head += dz^T xnf_S  and  dxnf_S[n0..] = dz W_S  at once.
// So the B*T*V logits of neither model are ever stored: the chunk buffers hold R*V floats each,
// and the losses and gradients are those of the whole batch (every row's loss depends on its
// own logits only). rows[n] gets position n's loss; the caller reduces them on the host.
static float *g_chunk_zs, *g_chunk_zt, *g_chunk_dz;
static int64_t g_chunk_zs_n, g_chunk_zt_n, g_chunk_dz_n;

// backward 0: the losses alone (evaluation); 1: also dL/dxnf into act[A_DXN] and dW_head.
// The student's last forward (model_forward_hidden, with targets) and the teacher's (t: NULL
// when the loss reads no teacher) are of the same B x T inputs.
static void head_loss(Model *s, Model *t, DistillLoss loss, float *wscratch, float scale, float accum, int backward) {
    const HostModel *c = s->h;
    int N = s->B * s->T, D = c->dim, V = c->vocab_size, Dt = t ? t->h->dim : 0, Vt = t ? t->h->vocab_size : V;
    int R = head_chunk_rows(N, V > Vt ? V : Vt), head = lm_head_tensor(s);
    float *zs = gpu_grow(&g_chunk_zs, &g_chunk_zs_n, (int64_t)R * V, "loss chunks");
    float *zt = t ? gpu_grow(&g_chunk_zt, &g_chunk_zt_n, (int64_t)R * Vt, "loss chunks") : NULL;
    // dL/dlogits: in place of zs; Wasserstein's in a buffer of its own; under bf16 with the
    // classifier's backward to follow, written in bf16 straight into the scratch its matmul reads
    // (the values the cast there made from the fp32 dz, without the fp32 store and the cast pass)
    Act dz = act_f(loss.kind == LOSS_WASSERSTEIN ? gpu_grow(&g_chunk_dz, &g_chunk_dz_n, (int64_t)R * V, "loss chunks") : zs);
    if (g_bf16 && backward && loss.kind != LOSS_WASSERSTEIN) dz.f = NULL, dz.h = bf16_scratch(&g_bf_d, &g_bf_d_n, (int64_t)R * V);
    if (t && (t->B != s->B || t->T != s->T)) fail("internal: teacher and student forwards of different shapes");
    for (int n0 = 0; n0 < N; n0 += R) {
        int nc = N - n0 < R ? N - n0 : R;
        const float *xs = s->act[A_XNF] + (int64_t)n0 * D;
        matmul_forward(zs, xs, weight(s, head, 0), nc, D, V);
        if (t) matmul_forward(zt, t->act[A_XNF] + (int64_t)n0 * Dt, weight(t, lm_head_tensor(t), 0), nc, Dt, Vt);
        {
            PROFILE(PROF_LOSS);
            if (loss.kind == LOSS_WASSERSTEIN)
                distill_loss_wasserstein(s->rows + n0, dz.f, wscratch, zs, zt, s->targets + n0, nc, V, Vt, scale, accum);
            else
                distill_loss(s->rows + n0, dz, zs, zt, s->targets + n0, nc, V, loss, scale, accum);
        }
        if (backward)  // the chunk's rows of dL/dxnf written (beta 0), the head's gradient added (or written first)
            matmul_backward(act_f(s->act[A_DXN] + (int64_t)n0 * D), s->dfwd_t[head], dz, act_f(xs), weight(s, head, 0),
                            nc, D, V, 0.0f, grad_beta(s, head, 0));
    }
}

// The positions' losses back on the host: their sum over rows with a target, and the count.
static double rows_sum(const Model *m, const int *targets, int N, double *host_rows, int *count) {
    cudaCheck(cudaMemcpy(host_rows, m->rows, (size_t)N * sizeof(double), cudaMemcpyDeviceToHost));
    double sum = 0.0;
    *count = 0;
    for (int n = 0; n < N; n++) if (targets[n] >= 0) { sum += host_rows[n]; (*count)++; }
    return sum;
}

// Pretraining's loss: the mean CE over the rows with a target, its gradient times loss_scale
// (train.c's crossentropy_forward and _backward), for the last forward. Returns the mean CE.
static float head_ce_backward(Model *m, const int *targets, float loss_scale) {
    int N = m->B * m->T, count = 0;
    for (int n = 0; n < N; n++) count += targets[n] >= 0;
    DistillLoss ce = {LOSS_CE, 0.0f, 1.0f};
    head_loss(m, NULL, ce, NULL, count ? loss_scale / count : 0.0f, 1.0f, 1);
    double *h = (double *)malloc((size_t)N * sizeof(double));
    if (!h) fail("out of host memory");
    double sum = rows_sum(m, targets, N, h, &count);
    free(h);
    m->loss = count ? (float)(sum / count) : 0.0f;
    return m->loss;
}

// One micro-batch (train.c's distill_step): teacher forward, student forward, the fused
// classifier and loss (train.c's distill_loss_batch: sum over a sequence's unmasked positions,
// mean over sequences; gradient times 1/B, then times scale), backward.
static double distill_step(Model *student, Model *teacher, const Distiller *d, const int *inputs,
                           const int *targets, int B, int T, float scale) {
    int kd = d->loss.kind != LOSS_CE;
    if (kd) model_forward_hidden(teacher, inputs, NULL, B, T);
    model_forward_hidden(student, inputs, targets, B, T);
    head_loss(student, kd ? teacher : NULL, d->loss, d->scratch, 1.0f / B, scale, 1);
    int count;
    double loss = rows_sum(student, targets, B * T, d->host_rows, &count) / B;
    model_backward_from_dxnf(student);
    return loss;
}

// The teacher's confidence over the positions of its last forward, its classifier in chunks.
static void gamma_accumulate(double *sum, long long *count, Model *teacher, const int *labels, int B, int T, int include_pad) {
    int N = B * T, D = teacher->h->dim, Vt = teacher->h->vocab_size, R = head_chunk_rows(N, Vt);
    float *zt = gpu_grow(&g_chunk_zt, &g_chunk_zt_n, (int64_t)R * Vt, "loss chunks");
    for (int n0 = 0; n0 < N; n0 += R) {
        int nc = N - n0 < R ? N - n0 : R;
        matmul_forward(zt, teacher->act[A_XNF] + (int64_t)n0 * D, weight(teacher, lm_head_tensor(teacher), 0), nc, D, Vt);
        gamma_rows(teacher->rows + n0, zt, nc, Vt);
    }
    double *h = (double *)malloc((size_t)N * sizeof(double));
    if (!h) fail("out of host memory");
    cudaCheck(cudaMemcpy(h, teacher->rows, (size_t)N * sizeof(double), cudaMemcpyDeviceToHost));
    for (int n = 0; n < N; n++) {
        if (!include_pad && labels[n] < 0) continue;
        *sum += h[n];
        (*count)++;
    }
    free(h);
}

// ============================================================================================
// 7. The optimizer: AdamW (Loshchilov & Hutter 2019), as train.c
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
//   p -= lr * ( m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd p ).
// The kernels (adamw_span, sum_squares) are cuda/adamw.cuh's, with OptConfig.

// Global L2 norm of the gradients; returns it, and in *gscale the factor that brings it down to
// clip (> 0) when above, else 1. AdamW applies the factor as it reads each gradient (g * gscale,
// the product a scaling pass over the gradients would store), which spares that pass, a read and
// a write of every gradient.
static float clip_grad_norm(Model *m, float clip, float *gscale) {
    PROFILE(PROF_OPTIMIZER);
    float norm = (float)sqrt(sum_squares(m->d_sum, m->grads, m->n_params));
    *gscale = clip > 0 && norm > clip ? clip / norm : 1.0f;
    return norm;
}

// The table's tensors (matrices decayed, norm weights not), then the learned quantizer scales: the
// spans of the parameter buffer in train.c's order (lib/dp.h's dp_param_spans); gscale:
// clip_grad_norm's factor. Under ZeRO-1 (cuda/zero1.cu) this rank updates the parts of the spans in
// its shard [lo, lo + shard) alone, whose m and v it alone holds (indexed from lo), and then every
// rank gathers every shard of the new parameters; one GPU's shard is the whole buffer.
static void adamw_update(Model *m, const OptConfig *o, float lr, float gscale) {
    PROFILE(PROF_OPTIMIZER);
    m->step++;
    cudaCheck(cudaMemsetAsync(m->d_bad, 0, sizeof(int)));  // the kernels' non-finite flag (params_finite)
    float bc1 = 1.0f - powf(o->beta1, (float)m->step), bc2 = 1.0f - powf(o->beta2, (float)m->step);
    int64_t offset[N_TENSORS], numel[N_TENSORS];
    for (int t = 0; t < N_TENSORS; t++) { offset[t] = m->h->offset[t]; numel[t] = tensor_numel(m, t); }
    DpSpan spans[N_TENSORS + 1], mine[N_TENSORS + 1];
    int n = dp_param_spans(spans, offset, numel, m->h->rows, N_TENSORS, m->n_table, m->n_params, o->weight_decay);
    int64_t shard = g_dp.on ? dp_shard(m) : m->n_params, lo = g_dp.on ? g_dp.rank * shard : 0;
    n = dp_clip_spans(mine, spans, n, lo, lo + shard);
    for (int i = 0; i < n; i++) {
        int64_t b = mine[i].begin;
        adamw_span(m->params + b, m->grads + b, m->adam_m + (b - lo), m->adam_v + (b - lo), mine[i].n, gscale, o, lr, mine[i].wd,
                   bc1, bc2, m->d_bad);
    }
    if (g_dp.on) dp_all_gather(m->params, shard);
    if (m->quant.method != QUANT_NONE) m->quant_stale = 1;
    m->bf16_stale = 1;
}

// After adamw_update: whether every parameter it wrote is finite (its kernels' flag). Under ZeRO-1
// a rank wrote its shard alone, so the ranks' flags are summed: all stop, or none.
static int params_finite(Model *m) {
    int bad;
    cudaCheck(cudaMemcpy(&bad, m->d_bad, sizeof bad, cudaMemcpyDeviceToHost));
    if (g_dp.on) bad = dp_all_reduce(m, (double)bad) > 0.0;
    return !bad;
}

// ============================================================================================
// 9. Evaluation: perplexity, as train.c's eval_ppl (non-overlapping windows of T tokens; each
// window's loss is the mean CE of predicting its tokens 1..T-1; ppl = exp(mean of the windows)).

typedef struct { double ppl, mean_loss; int64_t windows; } PplResult;

static PplResult eval_ppl(Model *m, const int *ids, int64_t n_ids, int T, int B, const char *path) {
    int64_t windows = n_ids / T;
    if (windows == 0) fail("%s: %lld tokens, fewer than one perplexity window of %d", path, (long long)n_ids, T);
    int *inputs = (int *)malloc((size_t)B * T * sizeof(int)), *targets = (int *)malloc((size_t)B * T * sizeof(int));
    double *rows = (double *)malloc((size_t)B * T * sizeof(double));
    if (!inputs || !targets || !rows) fail("out of host memory");
    double sum = 0.0, t0 = now_seconds();
    DistillLoss ce = {LOSS_CE, 0.0f, 1.0f};
    for (int64_t w0 = 0; w0 < windows; w0 += B) {
        int nb = windows - w0 < B ? (int)(windows - w0) : B;
        for (int b = 0; b < nb; b++) {
            const int *win = ids + (w0 + b) * T;
            for (int t = 0; t < T; t++) {
                inputs[b * T + t] = win[t];
                targets[b * T + t] = t + 1 < T ? win[t + 1] : -1;
            }
        }
        model_forward_hidden(m, inputs, targets, nb, T);
        head_loss(m, NULL, ce, NULL, 0.0f, 1.0f, 0);  // the classifier and CE in chunks, no [B,T,V] logits
        cudaCheck(cudaMemcpy(rows, m->rows, (size_t)nb * T * sizeof(double), cudaMemcpyDeviceToHost));
        for (int b = 0; b < nb; b++) {  // each window's own mean, as a float (train.c's crossentropy_forward)
            double s = 0.0;
            int count = 0;
            for (int t = 0; t < T; t++) if (targets[b * T + t] >= 0) { s += rows[b * T + t]; count++; }
            sum += count ? (float)(s / count) : 0.0f;
        }
        int64_t done = w0 + nb, every = windows / 10 > 0 ? windows / 10 : 1;
        if (done % every < nb || done == windows) {
            double el = now_seconds() - t0, tps = (double)done * T / (el > 0 ? el : 1e-9);
            char eta[32];
            format_eta(eta, sizeof eta, (double)(windows - done) * T / tps);
            printf("ppl: window %lld/%lld | running ppl %.3f | %.0f tok/s | ETA %s\n", (long long)done,
                   (long long)windows, exp(sum / done), tps, eta);
            fflush(stdout);
        }
    }
    free(inputs); free(targets); free(rows);
    PplResult r = {exp(sum / windows), sum / windows, windows};
    return r;
}

// ============================================================================================
// 10. The program around the model (cuda/*.cu)
//
// What train_cu does besides the model's own steps: generation and zero-shot scoring for train.c's
// loops, data parallelism (ZeRO-1), --bench, its own flags. These files read the Model's fields
// and call the functions above, so they are included here, after the model, as train.c includes
// lib/*.c after its Model; the kernels (cuda/*.cuh) are the block at the top.
#include "cuda/generate.cu"         // defines: KVCache, model_decode_step, target_logprobs, GPU_INFERENCE (train.c's
                                    //   InferenceBackend on the GPU), g_infer, g_kv
#include "cuda/zero1.cu"            // defines: dp_reduce_gradients, dp_clip_grad_norm, dp_broadcast,
                                    //   dp_checkpoint_save, dp_resume: a step over several GPUs, ZeRO-1
#include "cuda/bench.cu"            // defines: bench (--bench)
#include "cuda/cli.cu"              // defines: parse_gpu_flags (--matmul, --attention, --loss-chunk, --layered-wq,
                                    //   --recompute), gpu_init

// ============================================================================================
// 11. The training loop

typedef struct { float final_loss, tokens_per_s, eval_loss; } TrainResult;  // eval_loss -1: none

// The teacher's confidence over the first n_batches micro-batches (a copy of the data RNG).
static double measure_gamma(Model *teacher, HostTrainState st, int B, int T, int n_batches, int include_pad) {
    int *inputs = (int *)malloc((size_t)B * T * sizeof(int)), *targets = (int *)malloc((size_t)B * T * sizeof(int));
    if (!inputs || !targets) fail("out of host memory");
    uint64_t rng = st.rng;
    double sum = 0;
    long long count = 0;
    for (int i = 0; i < n_batches; i++) {
        host_next_batch(st.micro_batches + i, &rng, inputs, targets, B, T);
        model_forward_hidden(teacher, inputs, NULL, B, T);
        gamma_accumulate(&sum, &count, teacher, targets, B, T, include_pad);
    }
    free(inputs); free(targets);
    return count ? sum / count : 0.0;
}

static void checkpoint_save(Model *m, const HostTrainState *st) {
    if (g_dp.on) { dp_checkpoint_save(m, st); return; }
    model_download(m, 1);
    host_checkpoint_save(m->h, st);
}

// train.c's eval_split_loss on the GPU: the loss on --data's n_eval held-out examples, without
// gradients: d's loss (summed over a sequence's positions, averaged over sequences), or without d
// the cross-entropy averaged over tokens. Batches of B; the last one is filled up to B with rows
// that have no targets (they add nothing to either loss), so the activations keep the training
// shape instead of being reallocated for it.
static double eval_split_loss(Model *m, Model *teacher, const Distiller *d, int n_eval, int B, int T, int *inputs,
                              int *targets) {
    double sum = 0.0, *rows = (double *)malloc((size_t)B * T * sizeof(double));
    if (!rows) fail("out of host memory");
    int64_t tokens = 0;
    for (int i0 = 0; i0 < n_eval; i0 += B) {
        int nb = n_eval - i0 < B ? n_eval - i0 : B;
        host_eval_batch(i0, nb, inputs, targets);
        for (int i = nb * T; i < B * T; i++) { inputs[i] = 0; targets[i] = -1; }
        int kd = d && d->loss.kind != LOSS_CE, count;
        if (kd) model_forward_hidden(teacher, inputs, NULL, B, T);
        model_forward_hidden(m, inputs, targets, B, T);
        DistillLoss ce = {LOSS_CE, 0.0f, 1.0f};
        head_loss(m, kd ? teacher : NULL, d ? d->loss : ce, d ? d->scratch : NULL, 1.0f, 1.0f, 0);  // losses only
        double s = rows_sum(m, targets, B * T, rows, &count);
        if (d) {
            sum += s;  // the nb sequences' summed losses: train.c's nb * distill_loss_batch
        } else if (count) {
            sum += (double)(float)(s / count) * count;  // train.c's float mean of the batch, times its tokens
            tokens += count;
        }
    }
    free(rows);
    return d ? sum / n_eval : sum / (tokens ? tokens : 1);
}

static TrainResult train_loop(Model *m, Model *teacher, Distiller *d, const HostArgs *a, const OptConfig *opt,
                              int T, HostTrainState *st) {
    model_alloc_training(m);
    int B = a->micro_batch, accum = a->batch / a->micro_batch;
    if (accum % g_dp.world != 0)
        fail("--batch %d / --micro-batch %d = %d micro-batches a step, not a multiple of the %d processes: each process "
             "computes an equal part of the global batch", a->batch, a->micro_batch, accum, g_dp.world);
    int *inputs = (int *)malloc((size_t)B * T * sizeof(int)), *targets = (int *)malloc((size_t)B * T * sizeof(int));
    if (!inputs || !targets) fail("out of host memory");
    const char *ckpt = a->ckpt[0] ? a->ckpt : NULL;
    int64_t first = st->step, last = a->stop_after && a->stop_after < a->steps ? a->stop_after : a->steps;
    double t0 = now_seconds();
    TrainResult r = {0, 0, -1};
    printf("training: steps %lld..%d of %d, %d sequences x %d tokens (%d micro-batches of %d), lr %g, %s\n",
           (long long)st->step + 1, (int)last, a->steps, a->batch, T, accum, B, a->lr,
           d ? LOSS_NAMES[d->loss.kind] : "cross-entropy (mean over tokens)");
    for (int64_t step = st->step; step < last; step++) {
        double ts = now_seconds();
        if (a->inject_nan == step + 1) {  // every logit becomes NaN
            float nan = NAN;
            cudaCheck(cudaMemcpy(m->params_t[T_FINAL_NORM], &nan, sizeof nan, cudaMemcpyHostToDevice));
        }
        model_zero_grad(m);
        double loss = 0.0;
        uint64_t rng = st->rng;
        for (int micro = 0; micro < accum; micro++) {
            host_next_batch(st->micro_batches + micro, &rng, inputs, targets, B, T);
            if (micro % g_dp.world != g_dp.rank) continue;  // another rank's micro-batch (cuda/zero1.cu)
            if (d) {
                loss += distill_step(m, teacher, d, inputs, targets, B, T, 1.0f / accum) / accum;
            } else {
                model_forward_hidden(m, inputs, targets, B, T);
                loss += model_backward_scaled(m, targets, 1.0f / accum) / accum;
            }
        }
        model_ste_backward(m);
        if (g_dp.on) loss = dp_reduce_gradients(m, loss);
        char intact[4400];  // the checkpoint a stop leaves
        host_checkpoint_note(intact, sizeof intact);
        if (!isfinite(loss)) fail("step %lld: the loss is %f; stopping; %s", (long long)step + 1, loss, intact);
        float gscale, norm = g_dp.on ? dp_clip_grad_norm(m, opt->grad_clip, &gscale) : clip_grad_norm(m, opt->grad_clip, &gscale);
        float lr = host_lr_at(step);
        adamw_update(m, opt, lr, gscale);
        if (!params_finite(m))
            fail("step %lld: a weight became NaN or Inf (lower --lr?); stopping; %s", (long long)step + 1, intact);
        st->rng = rng;
        st->micro_batches += accum;
        st->step = step + 1;
        char flip_s[48] = "";
        if (m->quant.method != QUANT_NONE) {
            model_quantize(m);
            snprintf(flip_s, sizeof flip_s, " | flips %.4f%%", 100.0 * m->flips_total / m->n_codes);
        }
        char eval_s[48] = "";  // --data: the held-out loss, every --eval-every steps and at the end
        double eval_loss = -1.0;
        if (a->n_eval && ((a->eval_every && st->step % a->eval_every == 0) || st->step == a->steps)) {
            eval_loss = eval_split_loss(m, teacher, d, a->n_eval, B, T, inputs, targets);
            snprintf(eval_s, sizeof eval_s, " | eval loss %.4f", eval_loss);
            r.eval_loss = (float)eval_loss;
        }
        cudaCheck(cudaDeviceSynchronize());
        double now = now_seconds();
        float tps = (float)((double)a->batch * T / (now - ts));
        char eta[32];
        format_eta(eta, sizeof eta, (now - t0) / (double)(step + 1 - first) * (double)(last - step - 1));
        printf("step %4lld/%d | loss %.4f%s | lr %.3g | grad norm %.3f%s | %.0f tok/s | ETA %s\n",
               (long long)step + 1, a->steps, loss, eval_s, lr, norm, flip_s, tps, eta);
        fflush(stdout);
        if (g_dp.rank == 0)
            host_log_step(m->h, step + 1, loss, eval_loss, lr, norm, tps, d ? st->gamma : -1.0, m->flips, m->flips_layer,
                          m->flips_total);
        if (ckpt && ((a->save_every && st->step % a->save_every == 0) || st->step == last)) checkpoint_save(m, st);
        r.final_loss = (float)loss;
    }
    cudaCheck(cudaDeviceSynchronize());
    r.tokens_per_s = (float)((double)(last - first) * a->batch * T / (now_seconds() - t0));
    if (g_prof_on) {
        printf("profile (TRAIN_CU_PROFILE, seconds over %lld steps):", (long long)(last - first));
        for (int i = 0; i < N_PROF; i++) printf(" %s %.3f |", PROF_NAMES[i], g_prof[i]);
        printf(" total %.3f\n", now_seconds() - t0);
    }
    free(inputs); free(targets);
    return r;
}

// ============================================================================================
// 12. main

#ifndef TRAIN_CU_NO_MAIN
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);  // each line as it is printed, also into a file (a 7B start-up takes minutes)
    parse_gpu_flags(&argc, argv);
    int help = 0;
    for (int i = 1; i < argc; i++) help |= !strcmp(argv[i], "-h") || !strcmp(argv[i], "--help");
    if (!help) {
        dp_setup();
        gpu_init();
        dp_connect();
    }
    HostArgs a;
    HostModel hs, ht;
    HostTrainState st;
    host_setup(argc, argv, &a, &hs, &ht, &st);
    Model m, teacher_model, *teacher = NULL;
    g_wq_layers = g_layered_wq_flag && (a.train_tokens || a.data || a.bench);  // --layered-wq (section 5)
    model_setup(&m, &hs, "parameters");
    g_wq_layers = 0;
    if (g_layered_wq_flag && !m.wq_layered) printf("--layered-wq: no effect (it applies to a quantized model that trains)\n");
    if (ht.cpu) {
        model_setup_teacher(&teacher_model, &ht);
        teacher = &teacher_model;
    }
    int T = a.seq;
    char part[1024];
    if (a.bench) {
        bench(&m, &a, T, part, sizeof part);
        host_json_add(part);
    }
    g_infer = &m;  // what --generate-data, --generate and --eval-qa run
    if (a.generate_data) host_generate_data(&hs, &GPU_INFERENCE);
    if (a.generate_prompt) host_generate_text(&hs, &GPU_INFERENCE);
    if (a.train_tokens || a.data) {
        Distiller d = {{LOSS_CE, 0, 1}, NULL, NULL};
        if (a.resume) {
            if (g_dp.on) {
                dp_resume(&m, &st);
            } else {
                host_resume(&hs, &st);
                model_upload(&m, 1);
            }
            m.step = st.step;
        }
        if (a.distill) {
            if (st.gamma < 0) {
                int uses_gamma = a.loss_kind == LOSS_CAKLD || a.loss_kind == LOSS_CAKLD_CE;
                if (a.gamma_given >= 0) st.gamma = a.gamma_given;
                else if (uses_gamma && teacher) st.gamma = measure_gamma(teacher, st, a.micro_batch, T, a.gamma_batches, a.gamma_include_pad);
                else st.gamma = 0.0;
                if (g_dp.on) st.gamma = dp_broadcast(&m, st.gamma);  // every rank's loss uses rank 0's gamma
            }
            printf("distillation: %s, teacher %s, gamma %.4f%s\n", LOSS_NAMES[a.loss_kind],
                   a.teacher_path ? a.teacher_path : "= the full-precision model (self-distillation)", st.gamma,
                   a.gamma_given >= 0 ? " (given)" : a.gamma_include_pad ? " (measured, padding included)" : " (measured on real tokens)");
            DistillLoss dl = {(LossKind)a.loss_kind, (float)st.gamma, a.temperature};
            distiller_init(&d, dl, hs.vocab_size, teacher ? ht.vocab_size : hs.vocab_size, a.micro_batch * T);
        }
        OptConfig opt = {a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.grad_clip};
        model_alloc_training(&m);
        model_alloc_acts(&m, a.micro_batch, T, 1);
        if (teacher) model_alloc_acts(teacher, a.micro_batch, T, 0);
        print_memory_plan();
        TrainResult r = train_loop(&m, a.distill ? teacher : NULL, a.distill ? &d : NULL, &a, &opt, T, &st);
        snprintf(part, sizeof part, "\"train\": {\"steps\": %lld, \"final_loss\": %.6f, \"tokens_per_s\": %.1f%s}",
                 (long long)st.step, r.final_loss, r.tokens_per_s, a.distill ? ", \"distill\": true" : "");
        host_json_add(part);
        if (r.eval_loss >= 0) {
            snprintf(part, sizeof part, "\"eval_loss\": %.6f", r.eval_loss);
            host_json_add(part);
        }
        if (a.distill) {
            snprintf(part, sizeof part, "\"gamma\": %.6f, \"loss_kind\": \"%s\"", st.gamma, LOSS_NAMES[a.loss_kind]);
            host_json_add(part);
        }
        if (a.ckpt[0]) {
            host_json_add_path("ckpt", a.ckpt);
        }
        gpu_free(d.scratch);
        free(d.host_rows);
    }
    if (a.clip) {  // train.c's search on the host, between training and -o as ./train orders it
        model_download(&m, 0);
        host_clip(&hs);
        model_upload(&m, 0);
    }
    if (a.out_path && !a.generate_data) {  // with --generate-data, -o is the JSONL it wrote
        model_download(&m, 0);
        if (g_dp.rank == 0) host_write_model(&hs);
        host_json_add_path("out", a.out_path);
    }
    if (a.export_packed || a.histogram >= 0) {  // train.c's own writers, on the parameters trained here
        model_download(&m, 0);
        if (a.export_packed) host_export_packed(&hs);
        if (a.histogram >= 0) host_histogram(&hs);
    }
    if (a.eval_ppl) {
        int Te = a.eval_T ? a.eval_T : (hs.max_seq_len < 2048 ? hs.max_seq_len : 2048);
        if (Te > hs.max_seq_len) fail("-T %d exceeds the model's context %d", Te, hs.max_seq_len);
        if (Te < 2) fail("-T must be at least 2");
        int64_t n;
        int *ids = host_load_eval_tokens(&hs, &n);
        PplResult r = eval_ppl(&m, ids, n, Te, a.eval_batch, a.eval_ppl);
        printf("perplexity of %s: %.4f (%lld windows of %d tokens)\n", a.eval_ppl, r.ppl, (long long)r.windows, Te);
        snprintf(part, sizeof part, "\"ppl\": %.6f, \"loss\": %.6f, \"windows\": %lld, \"T\": %d", r.ppl, r.mean_loss,
                 (long long)r.windows, Te);
        host_json_add(part);
        host_free(ids);
    }
    if (a.eval_qa) host_eval_qa(&hs, &GPU_INFERENCE);
    note_peak();
    printf("GPU memory: peak %.1f MiB in use on the device (cudaMemGetInfo, CUDA context and cuBLAS included)\n",
           g_mem_peak / 1048576.0);
    host_finish();
    if (teacher) model_free(teacher);
    model_free(&m);
    dp_finish();
    kv_free(&g_kv);
    lt_free();
    return 0;
}
#endif

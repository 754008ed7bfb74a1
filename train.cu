/*
 * train.cu — the GPU mirror of train.c: the same model, quantized linears, distillation losses,
 * optimizer and training loop, on one NVIDIA GPU or, data parallel over NCCL, on several.
 *
 * Read it beside train.c: the sections, the names and the argument orders are the same. A
 * layer `rmsnorm_forward` on the CPU is a launcher `rmsnorm_forward` here, whose kernel is
 * `rmsnorm_forward_kernel`. What is not about the model (the command line, loading and saving
 * models, token files, checkpoints, the JSONL log) is train.c's own code, compiled as C in
 * train_cu_host.c and reached through train_cu.h, so both programs read and write the same bytes
 * and take the same flags (plus their own: --matmul fp32|tf32|bf16, --attention gemm|fused|flash).
 *
 *   2. the Model on the GPU: parameters, gradients, AdamW state, activations
 *   3. layers (kernels and launchers), each forward beside its backward
 *   4. the model forward and backward
 *   5. quantized linears: quant.h's per-group functions in kernels, straight-through backward
 *   6. distillation: loss.h's losses, one block per position
 *   7. the optimizer: AdamW, gradient clipping
 *   9. evaluation: perplexity
 *  10. generation (a KV cache, the decode step) and zero-shot scoring, for train.c's loops
 *  11. data parallelism: one process per GPU over NCCL, ZeRO-1 optimizer state
 *  12. the training loop (--train-tokens or --data with its held-out loss), --bench, and main;
 *      --clip, --export-packed and --histogram are train.c's own, on the downloaded parameters
 *
 * Precision: parameters (the master weights), gradients and AdamW moments are fp32, and so is the
 * residual stream; matmuls (all through cuBLASLt) run in bf16 (--matmul bf16, the default), with TF32
 * tensor cores (--matmul tf32), or in plain fp32 (--matmul fp32, what the parity test compares
 * against train.c). Under bf16: once per step the quantizer writes each fake-quantized linear
 * straight into the bf16 copy the matmuls read (with --layered-wq one layer's at a time, remade
 * from the codes before the layer's forward and backward), and the other forward weights (embedding, LM head)
 * are cast to theirs; an activation that only bf16 readers take (matmuls, the flash kernels,
 * SwiGLU) is kept in bf16 alone, written so by its producer (act_bf16, section 3), the residual
 * gradient gets a bf16 copy from the RMSNorm backward that adds to it, and the others are cast
 * just before their matmul; cuBLASLt multiplies bf16 by bf16 with fp32 accumulation, as
 * mixed-precision training does (Micikevicius et al. 2018). Under --matmul bf16 a full-precision
 * teacher is stored in bf16 alone (its norm gains excepted), half the memory. Attention runs as
 * cuBLAS products over a [T,T] score matrix per head (--attention gemm, the default under --matmul
 * tf32 and fp32, on TF32 tensor cores), or as this file's fused kernel (--attention fused: the
 * FlashAttention recurrence, Dao et al. 2022, no [T,T] matrix stored, but CUDA cores only), or as
 * FlashAttention-2 on tensor cores (--attention flash, the default under --matmul bf16; Dao 2023:
 * mma.sync on bf16 copies of q, k, v, which are what a layer keeps for the backward; fp32
 * accumulation and softmax, no [T,T] matrix stored).
 */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <float.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef USE_NCCL
#include <nccl.h>
#endif

#include "lib/dp.h"
#include "loss.h"
#include "quant.h"
#include "lib/train_cu.h"

// ============================================================================================
// Errors: every CUDA and cuBLASLt call is checked, naming file, line and the library's message.

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void cuda_check(cudaError_t e, const char *file, int line) {
    if (e != cudaSuccess) fail("CUDA at %s:%d: %s (%s)", file, line, cudaGetErrorString(e), cudaGetErrorName(e));
}
static void cublas_check(cublasStatus_t s, const char *file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt at %s:%d: %s", file, line, cublasLtGetStatusString(s));
}
#define cudaCheck(x) cuda_check((x), __FILE__, __LINE__)
#define cublasCheck(x) cublas_check((x), __FILE__, __LINE__)
#define launchCheck() cuda_check(cudaGetLastError(), __FILE__, __LINE__)

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void format_eta(char *buf, size_t n, double seconds) {
    int s = (int)(seconds + 0.5);
    snprintf(buf, n, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
}

// TRAIN_CU_PROFILE=1: seconds per kind of work, measured by synchronizing around each launcher
// (slower; for finding where a step's time goes), printed after training.
enum { PROF_MATMUL, PROF_ATTENTION, PROF_QUANT, PROF_LOSS, PROF_OPTIMIZER, PROF_OTHER, N_PROF };
static const char *const PROF_NAMES[N_PROF] = {"matmul", "attention", "quantize", "loss", "optimizer", "norms+elementwise"};
static int g_prof_on;
static double g_prof[N_PROF];
struct ProfScope {
    int cat;
    double t0;
    ProfScope(int c) : cat(c), t0(0) { if (g_prof_on) { cudaDeviceSynchronize(); t0 = now_seconds(); } }
    ~ProfScope() { if (g_prof_on) { cudaDeviceSynchronize(); g_prof[cat] += now_seconds() - t0; } }
};
#define PROFILE(cat) ProfScope prof_scope_(cat)

// The memory plan: every device allocation is named and counted, and printed at start-up.
enum { MEM_PARTS = 16 };
static struct { const char *what; size_t bytes; } g_mem[MEM_PARTS];
static size_t g_mem_total, g_mem_peak;  // bytes train_cu allocated; the most the GPU had in use

static void note_peak(void) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && total_b - free_b > g_mem_peak) g_mem_peak = total_b - free_b;
}

static int g_layered_wq_flag;  // --layered-wq (section 5), which the out-of-memory error suggests when not given

static void *gpu_malloc(size_t n, const char *what) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n ? n : 1);
    if (e == cudaErrorMemoryAllocation) {
        size_t free_b = 0, total_b = 0;
        cudaGetLastError();
        cudaMemGetInfo(&free_b, &total_b);
        fail("out of GPU memory: %s needs %.3f GiB more, %.3f GiB of the GPU's %.3f GiB are free (train_cu has "
             "allocated %.3f GiB so far); lower --micro-batch or --seq%s", what, n / 1073741824.0, free_b / 1073741824.0,
             total_b / 1073741824.0, g_mem_total / 1073741824.0, g_layered_wq_flag ? "" : " (or add --layered-wq)");
    }
    cudaCheck(e);
    int i = 0;
    while (i < MEM_PARTS - 1 && g_mem[i].what && strcmp(g_mem[i].what, what) != 0) i++;
    g_mem[i].what = g_mem[i].what ? g_mem[i].what : what;
    g_mem[i].bytes += n;
    g_mem_total += n;
    note_peak();
    return p;
}

static void gpu_free(void *p) { if (p) cudaCheck(cudaFree(p)); }

// *p: at least n floats (contents not kept), reallocated only when it holds fewer (*cap).
static float *gpu_grow(float **p, int64_t *cap, int64_t n, const char *what) {
    if (n > *cap) {
        gpu_free(*p);
        *p = (float *)gpu_malloc((size_t)n * sizeof(float), what);
        *cap = n;
    }
    return *p;
}

static void print_memory_plan(void) {
    printf("GPU memory plan:");
    for (int i = 0; i < MEM_PARTS && g_mem[i].what; i++) printf(" %s %.1f MiB |", g_mem[i].what, g_mem[i].bytes / 1048576.0);
    size_t free_b = 0, total_b = 0;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    printf(" total %.1f MiB of %.1f MiB\n", g_mem_total / 1048576.0, total_b / 1048576.0);
}

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
    float *params_t[N_TENSORS], *grads_t[N_TENSORS], *m_t[N_TENSORS], *v_t[N_TENSORS];
    float *fwd_t[N_TENSORS], *dfwd_t[N_TENSORS];
    // --matmul bf16: bf16 copies of the matmul weights (fwd_t's linears and LM head), remade from
    // fwd_t when bf16_stale; a bf16-only teacher has these alone (fwd_t NULL but for the norms)
    __nv_bfloat16 *wbf, *wbf_t[N_TENSORS];
    int bf16_stale, bf16_only;
    // quantization (section 5)
    QuantSpec quant;
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

static cublasComputeType_t g_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
static int g_bf16 = 1;            // --matmul bf16, the default (then g_compute is TF32, for the gemm attention products)
static int g_wq_layers;           // quantized models set up now keep W^ one layer at a time (section 5)
static int g_attention_gemm = 1;  // --attention gemm (cuBLAS, [T,T] scores); with g_attention_flash 0 too: fused
                                  // (parse_gpu_flags picks flash under bf16 unless --attention is given)
static int g_attention_flash;     // --attention flash (bf16 tensor cores, no [T,T]); g_attention_gemm is 0 then
static DpEnv g_dp = {0, 0, 1, 0, "none", "", 0};  // section 11: this process's place in a data-parallel job (on: through NCCL)

static float *layer_tensor(float *const ptrs[N_TENSORS], const Model *m, int t, int l) {
    return ptrs[t] + (m->h->per_layer[t] ? (int64_t)l * m->slice[t] : 0);
}
static int lm_head_tensor(const Model *m) { return m->h->tied ? T_EMBED : T_LM_HEAD; }
static float *act_l(const Model *m, int a, int l) { return m->act[a] + (int64_t)l * m->act_layer_stride[a]; }

static void carve(const Model *m, float *base, float *ptrs[N_TENSORS]) {
    for (int t = 0; t < N_TENSORS; t++) ptrs[t] = m->h->offset[t] >= 0 ? base + m->h->offset[t] : NULL;
}

static void model_quant_setup(Model *m);
static int64_t dp_padded(int64_t n);
static int64_t dp_shard(const Model *m);
static double dp_all_reduce(Model *m, double x);
static void dp_report_shard(const Model *m);
static void cast_bf16(__nv_bfloat16 *y, const float *x, int64_t n);

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
    m->params = (float *)gpu_malloc((size_t)dp_padded(m->n_params) * sizeof(float), what);  // section 11's shards
    cudaCheck(cudaMemset(m->params + m->n_params, 0, (size_t)(dp_padded(m->n_params) - m->n_params) * sizeof(float)));
    cudaCheck(cudaMemcpy(m->params, h->params, (size_t)m->n_params * sizeof(float), cudaMemcpyHostToDevice));
    carve(m, m->params, m->params_t);
    memcpy(m->fwd_t, m->params_t, sizeof m->fwd_t);
    m->quant.method = h->quant_method; m->quant.bits = h->quant_bits; m->quant.group = h->quant_group;
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
    // under ZeRO-1 (section 11): gradients over the padded buffer (the padding stays zero), AdamW
    // m and v of this rank's shard alone, not carved by the table (a shard cuts across tensors)
    size_t ng = (size_t)dp_padded(m->n_params) * sizeof(float), ns = (size_t)(g_dp.on ? dp_shard(m) : m->n_params) * sizeof(float);
    const char *mv = g_dp.on ? "AdamW m, v (ZeRO-1 shard)" : "AdamW m, v";
    m->grads = (float *)gpu_malloc(ng, "gradients");
    m->adam_m = (float *)gpu_malloc(ns, mv);
    m->adam_v = (float *)gpu_malloc(ns, mv);
    cudaCheck(cudaMemset(m->grads, 0, ng));
    cudaCheck(cudaMemset(m->adam_m, 0, ns));
    cudaCheck(cudaMemset(m->adam_v, 0, ns));
    if (g_dp.on) {
        dp_report_shard(m);
    } else {
        carve(m, m->adam_m, m->m_t);
        carve(m, m->adam_v, m->v_t);
    }
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

static void bf16_scratch_reserve(int64_t nx, int64_t nd);

// Activation recomputation: the normed inputs of the two blocks and the SwiGLU product are not
// kept per layer for the backward (2D + F of the 6D + 2 Hkv + 3F floats a layer keeps a position,
// a third for TinyLlama) but remade there from what is kept (x, rstd and the gain; gate and up),
// by the same deterministic kernels, so the gradients are unchanged: a few elementwise passes a
// layer, no matmul.
//
// Under --attention flash the fp32 q, k, v are not kept either: the flash kernels read only their
// bf16 copies (A_QB, A_KB, A_VB), which are kept per layer instead, half the bytes.
static int act_bf16(int a);  // kept in bf16 alone (section 3, Act)
static int act_recomputed(int a) {
    return a == A_XN1 || a == A_XN2 || a == A_HMID || (g_attention_flash && (a == A_Q || a == A_K || a == A_V));
}

// Rows of a loss chunk (section 6): --loss-chunk ROWS, or as many as keep one chunk's logits
// within HEAD_CHUNK_FLOATS (128 MiB of fp32).
#define HEAD_CHUNK_FLOATS ((int64_t)1 << 25)
static int g_loss_chunk;
static int head_chunk_rows(int N, int V) {
    int64_t r = g_loss_chunk > 0 ? g_loss_chunk : HEAD_CHUNK_FLOATS / (V > 0 ? V : 1);
    return (int)(r < 1 ? 1 : r > N ? N : r);
}

// The attention kernels' choice, which sizes some activations (scores; flash's bf16 q, k, v).
static int attention_mode(void) { return g_attention_gemm + 2 * g_attention_flash; }

// Sizes the activations for B x T (as train.c: per layer when training, one shared slot otherwise).
static void model_alloc_acts(Model *m, int B, int T, int training) {
    if (m->acts && B == m->B && T == m->T && training == m->training && m->attention == attention_mode()) return;
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
    // slot starts 256 bytes aligned, as the cudaMalloc'd casts the matmuls read before did (the
    // alignment of an operand can change cuBLAS's choice of kernel, so also its sums).
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
    m->B = B; m->T = T; m->training = training; m->attention = attention_mode();
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
                   // so I = max(D, Hq); the output gradients, dv and the loss chunk's dz cast, the rotated dq, dk
                   // (rope_backward_operand) and the residual gradient's copy (rmsnorm_backward) written there
        int64_t O = D > F ? D : F, R = head_chunk_rows((int)BT, (int)V);
        O = BT * (O > Hq ? O : Hq);
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
// Launchers take train.c's arguments (outputs first, then inputs, then sizes) and, like train.c's
// layers, ACCUMULATE (+=) into every gradient they write; the model backward zeroes them, or
// (matmul_backward's betas) has the first matmul into a buffer write it instead.

static int blocks_for(int64_t n, int threads) { return (int)((n + threads - 1) / threads); }

// The GPU's multiprocessor count and L2 size in bytes, asked once (a process drives one GPU).
static void gpu_limits(int *sms, int *l2) {
    static int n, bytes;
    if (!n) {
        int dev;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
        cudaCheck(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, dev));
    }
    *sms = n;
    *l2 = bytes;
}

// Warp and block reductions. Thread mapping of the block ones: every thread of the block passes
// its partial value, every thread gets the total; at most 1024 threads.
__device__ static inline float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ static inline double warp_sum_d(double x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ static inline float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ static double block_sum_d(double x) {
    __shared__ double part[32];
    __syncthreads();  // part may still be read by a previous call
    x = warp_sum_d(x);
    int w = threadIdx.x / 32, lane = threadIdx.x % 32, nw = (blockDim.x + 31) / 32;
    if (lane == 0) part[w] = x;
    __syncthreads();
    x = lane < nw ? part[lane] : 0.0;
    return warp_sum_d(x);
}
__device__ static float block_max(float x) {
    __shared__ float part[32];
    __syncthreads();
    x = warp_max(x);
    int w = threadIdx.x / 32, lane = threadIdx.x % 32, nw = (blockDim.x + 31) / 32;
    if (lane == 0) part[w] = x;
    __syncthreads();
    x = lane < nw ? part[lane] : -INFINITY;
    return warp_max(x);
}
__device__ static float block_sum(float x) {
    __shared__ float part[32];
    __syncthreads();
    x = warp_sum(x);
    int w = threadIdx.x / 32, lane = threadIdx.x % 32, nw = (blockDim.x + 31) / 32;
    if (lane == 0) part[w] = x;
    __syncthreads();
    x = lane < nw ? part[lane] : 0.0f;
    return warp_sum(x);
}

__device__ static inline float to_float(float x) { return x; }
__device__ static inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// A value stored as the matmuls read it: fp32, or bf16 rounded to nearest even (--matmul bf16),
// the same bits as cast_bf16 of the fp32 value. W^ (section 5) and the activations below.
__device__ static inline void store_w(float *p, float x) { *p = x; }
__device__ static inline void store_w(__nv_bfloat16 *p, float x) { *p = __float2bfloat16_rn(x); }
// 4 consecutive values at once: 16 bytes fp32, 8 bytes bf16 (p aligned so).
__device__ static inline void store_w4(float *p, float4 v) { *(float4 *)p = v; }
__device__ static inline void store_w4(__nv_bfloat16 *p, float4 v) {  // element 0 at the lowest address
    uint2 u;
    u.x = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.x)) | (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.y)) << 16;
    u.y = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.z)) | (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.w)) << 16;
    *(uint2 *)p = u;
}
// W consecutive floats: loaded as a float4 and stored by store_w4 when W = 4 (p aligned so),
// else one at a time.
template <int W>
__device__ static inline void load_floats(float *f, const float *p) {
    if constexpr (W == 4) {
        float4 v = *(const float4 *)p;
        f[0] = v.x; f[1] = v.y; f[2] = v.z; f[3] = v.w;
    } else {
        for (int e = 0; e < W; e++) f[e] = p[e];
    }
}
template <int W, typename Yt>
__device__ static inline void store_floats(Yt *p, const float *f) {
    if constexpr (W == 4) store_w4(p, make_float4(f[0], f[1], f[2], f[3]));
    else for (int e = 0; e < W; e++) store_w(&p[e], f[e]);
}

// --- bf16: y[n] = bf16(x[n]), rounded to nearest even (--matmul bf16) ----------------------
// Thread mapping: one thread per 4 elements (a float4 in, 8 bytes out) when n % 4 == 0 and x, y
// are 16 and 8 bytes aligned (every activation slot and scratch is), else one per element.
__global__ static void cast_bf16_kernel(__nv_bfloat16 *y, const float *x, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}
__global__ static void cast_bf16_x4_kernel(__nv_bfloat16 *y, const float *x, int64_t n4) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n4) store_w4(y + 4 * i, ((const float4 *)x)[i]);
}
static void cast_bf16(__nv_bfloat16 *y, const float *x, int64_t n) {
    if (n <= 0) return;
    if (n % 4 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)y % 8 == 0) cast_bf16_x4_kernel<<<blocks_for(n / 4, 256), 256>>>(y, x, n / 4);
    else cast_bf16_kernel<<<blocks_for(n, 256), 256>>>(y, x, n);
    launchCheck();
}

// 8 bf16 as one 16-byte word (p 16 bytes aligned), to and from floats.
__device__ static inline void bf16x8_load(float *f, const __nv_bfloat16 *p) {
    uint4 v = *(const uint4 *)p;
    const __nv_bfloat16 *e = (const __nv_bfloat16 *)&v;
#pragma unroll
    for (int i = 0; i < 8; i++) f[i] = __bfloat162float(e[i]);
}
__device__ static inline void bf16x8_store(__nv_bfloat16 *p, const float *f) {
    uint4 v;
    __nv_bfloat16 *e = (__nv_bfloat16 *)&v;
#pragma unroll
    for (int i = 0; i < 8; i++) e[i] = __float2bfloat16_rn(f[i]);
    *(uint4 *)p = v;
}

// n % 8 == 0 and a, b, c, d 16-byte aligned: bf16 rows of n elements whose every 8 are one 16-byte
// word (flash_stage's vec, with n = hd; SwiGLU's 8-wide kernels).
static int aligned_x8(int64_t n, const void *a, const void *b, const void *c, const void *d) {
    return n % 8 == 0 && ((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) % 16 == 0;
}

// An activation [N,C] that a matmul reads or writes: fp32 (f), or, under --matmul bf16, bf16
// alone (h; f NULL). Under bf16 every activation whose readers are bf16 products (matmuls, the
// flash kernels) or elementwise kernels that take bf16 is kept in bf16 alone (act_bf16), made so
// by its producer: one rounding per value instead of a cast before each matmul that reads it,
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
typedef struct { float *f; __nv_bfloat16 *h; } Act;
static Act act_f(const float *x) { Act a = {(float *)x, NULL}; return a; }
static int act_bf16(int a) {
    return g_bf16 && (a == A_XN1 || a == A_XN2 || a == A_HMID || a == A_GATE || a == A_UP || a == A_DGATE ||
                      a == A_DUP || a == A_DHMID || (g_attention_flash && (a == A_ATT || a == A_DATT)));
}
static Act act_in(const Model *m, int a, int l) {
    float *p = act_l(m, a, l);
    Act x = {act_bf16(a) ? NULL : p, act_bf16(a) ? (__nv_bfloat16 *)p : NULL};
    return x;
}

// --- embedding: x[N,D] = E[tok[n], :] -----------------------------------------------------
// Thread mapping: one thread per element of x. E is fp32, or bf16 for a bf16-only teacher.
template <typename Et>
__global__ static void embedding_forward_kernel(float *x, const int *tok, const Et *E, int N, int D) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (int64_t)N * D) x[i] = to_float(E[(int64_t)tok[i / D] * D + i % D]);
}
template <typename Et>
static void embedding_forward(float *x, const int *tok, const Et *E, int N, int D) {
    PROFILE(PROF_OTHER);
    embedding_forward_kernel<<<blocks_for((int64_t)N * D, 256), 256>>>(x, tok, E, N, D);
    launchCheck();
}

// dE[tok[n], :] += dx[n, :], in train.c's order: each row of dE takes its positions' rows of dx one
// after another, n ascending, so the sums are train.c's (serial) bit for bit and the same every run
// (atomicAdd, with rows that share a token meeting in any order, made the gradients, and a 2-bit
// student's codes after them, differ between two runs). by_token (model_group_tokens): the
// positions grouped by token, n ascending in a group, then where each group starts.
// Thread mapping: blockIdx.x a token of the batch, the block's threads over the D columns.
__global__ static void embedding_backward_kernel(float *dE, const float *dx, const int *tok, const int *by_token, int N, int D) {
    const int *pos = by_token, *start = by_token + N;
    int s0 = start[blockIdx.x], s1 = start[blockIdx.x + 1];
    float *row = dE + (int64_t)tok[pos[s0]] * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = row[d];
        for (int j = s0; j < s1; j++) acc += dx[(int64_t)pos[j] * D + d];
        row[d] = acc;
    }
}
static void embedding_backward(float *dE, const float *dx, const int *tok, const int *by_token, int n_tokens, int N, int D) {
    PROFILE(PROF_OTHER);
    embedding_backward_kernel<<<n_tokens, 256>>>(dE, dx, tok, by_token, N, D);
    launchCheck();
}

// --- RMSNorm: y[N,C] = x / sqrt(mean(x^2) + eps) * w[C] ------------------------------------
// Thread mapping: one warp per row. When C % 4 == 0 and the pointers are 16 bytes aligned (bf16
// y: 8), as the activation slots are (then every row is), its lanes take the row as float4s:
// lane j the float4s j, j + 32, ..., held in registers (NV of them, NV = C / 128 rounded up to a
// launched size) from the first pass, where all NV loads are in flight at once, to the second,
// where they are normed (a lane's loads one at a time and a second read of the row ran at about
// half the memory's bandwidth: 40 us for 8192 rows of 2048). Wider rows (NV 0) and the others
// stride over the row with the same per-lane order of sums, float4s or single floats. y: fp32,
// or bf16 (Act).
// Float4 i of the row, its squares added to ss.
__device__ static inline float4 rms_load4(const float4 *x4, int i, float &ss) {
    float4 v = x4[i];
    ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    return v;
}
template <typename Yt>
__device__ static inline void rms_store4(Yt *yr, int i, float4 v, float4 g, float r) {
    store_w4(yr + 4 * i, make_float4(g.x * (v.x * r), g.y * (v.y * r), g.z * (v.z * r), g.w * (v.w * r)));
}
template <int NV, typename Yt>
__global__ static void rmsnorm_forward_kernel(Yt *y, float *rstd, const float *x, const float *w, int N, int C, float eps,
                                              int vec) {
    int n = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (n >= N) return;
    const float *xr = x + (int64_t)n * C;
    Yt *yr = y + (int64_t)n * C;
    const float4 *x4 = (const float4 *)xr, *w4 = (const float4 *)w;
    float4 v[NV > 0 ? NV : 1];
    float ss = 0.0f;
    if constexpr (NV > 0) {  // vec
#pragma unroll
        for (int k = 0; k < NV; k++)
            if (lane + 32 * k < C / 4) v[k] = rms_load4(x4, lane + 32 * k, ss);
    } else if (vec) {
        for (int i = lane; i < C / 4; i += 32) rms_load4(x4, i, ss);
    } else {
        for (int i = lane; i < C; i += 32) ss += xr[i] * xr[i];
    }
    ss = warp_sum(ss);
    float r = 1.0f / sqrtf(ss / C + eps);
    if (lane == 0) rstd[n] = r;
    if constexpr (NV > 0) {
#pragma unroll
        for (int k = 0; k < NV; k++)
            if (lane + 32 * k < C / 4) rms_store4(yr, lane + 32 * k, v[k], w4[lane + 32 * k], r);
    } else if (vec) {
        for (int i = lane; i < C / 4; i += 32) rms_store4(yr, i, x4[i], w4[i], r);
    } else {
        for (int i = lane; i < C; i += 32) store_w(&yr[i], w[i] * (xr[i] * r));
    }
}
// The float4s a lane holds for a row of C floats: 4, 16 or 32 (C up to 512, 2048, 4096), else 0
// (the strided loops); 0 too when the pointers are not aligned for float4s.
static int rms_nv(int C, int vec) {
    int nv = (C / 4 + 31) / 32;
    if (!vec || nv > 32) return 0;
    return nv <= 4 ? 4 : nv <= 16 ? 16 : 32;
}
template <int NV>
static void rmsnorm_forward_launch(Act y, float *rstd, const float *x, const float *w, int N, int C, float eps, int vec) {
    if (y.h) rmsnorm_forward_kernel<NV><<<blocks_for(N, 8), 256>>>(y.h, rstd, x, w, N, C, eps, vec);
    else rmsnorm_forward_kernel<NV><<<blocks_for(N, 8), 256>>>(y.f, rstd, x, w, N, C, eps, vec);
    launchCheck();
}
static void rmsnorm_forward(Act y, float *rstd, const float *x, const float *w, int N, int C, float eps) {
    PROFILE(PROF_OTHER);
    void *yp = y.h ? (void *)y.h : (void *)y.f;
    int vec = C % 4 == 0 && ((uintptr_t)x | (uintptr_t)w) % 16 == 0 && (uintptr_t)yp % (y.h ? 8 : 16) == 0;
    int nv = rms_nv(C, vec);
    if (nv == 4) rmsnorm_forward_launch<4>(y, rstd, x, w, N, C, eps, vec);
    else if (nv == 16) rmsnorm_forward_launch<16>(y, rstd, x, w, N, C, eps, vec);
    else if (nv == 32) rmsnorm_forward_launch<32>(y, rstd, x, w, N, C, eps, vec);
    else rmsnorm_forward_launch<0>(y, rstd, x, w, N, C, eps, vec);
}

// With g = dy * w:  dx += r * g - x * r^3 * mean(g * x),   dw += sum_n dy * x * r.
// dxh (not NULL under --matmul bf16): the bf16 copy of the updated dx, as cast_bf16 would make it:
// the residual gradient is the output gradient of the next matmul backward (the layer below's
// down or output projection), which reads it in bf16.
// Thread mapping: a block of 8 warps per chunk of RMS_ROWS rows, in two passes over them:
//   - mean(g * x) of each row: a warp per row, its lanes striding over the row;
//   - dx and dw: a thread per W columns (W = 4, float4s, when C % 4 == 0 and the pointers are
//     aligned; else 1) going down the chunk's rows, updating dx (and dxh) and summing dy * x * r
//     of its columns, which it stores in parts[chunk][C]. rmsnorm_dw_sum_kernel then adds the
//     chunks in order, so dw is the same in every run (no float atomics).
// The second pass reads dy and x again; the chunk's rows were just read, but with every chunk in
// flight at once most of them have left L2 (ncu, the benchmark's step: 419 MB of DRAM traffic a
// call, where one read of dy and x, dx read and written and dxh written are 302 MB). The dw sums
// were a kernel of their own, which read dy and x from memory a third time (44 us of the
// benchmark's 107 + 44 per call, ncu).
#define RMS_ROWS 16
template <int W>
__global__ static void rmsnorm_backward_kernel(float *dx, __nv_bfloat16 *dxh, float *parts, const float *dy, const float *x,
                                               const float *w, const float *rstd, int N, int C) {
    __shared__ float rs[RMS_ROWS], ks[RMS_ROWS];  // row j of the chunk's r, and r^3 mean(g * x)
    int n0 = blockIdx.x * RMS_ROWS, rows = min(RMS_ROWS, N - n0), lane = threadIdx.x % 32;
    for (int j = threadIdx.x / 32; j < rows; j += blockDim.x / 32) {
        int64_t row = (int64_t)(n0 + j) * C;
        float dot = 0.0f;
#pragma unroll 4
        for (int i = lane * W; i < C; i += 32 * W) {
            float d[W], g[W], v[W];
            load_floats<W>(d, dy + row + i);
            load_floats<W>(g, w + i);
            load_floats<W>(v, x + row + i);
            for (int e = 0; e < W; e++) dot += d[e] * g[e] * v[e];
        }
        dot = warp_sum(dot);
        if (lane == 0) {
            float r = rstd[n0 + j];
            rs[j] = r;
            ks[j] = r * r * r * dot / C;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x * W; i < C; i += blockDim.x * W) {
        float g[W], s[W] = {};
        load_floats<W>(g, w + i);
#pragma unroll 4
        for (int j = 0; j < rows; j++) {
            int64_t at = (int64_t)(n0 + j) * C + i;
            float d[W], v[W], o[W];
            load_floats<W>(d, dy + at);
            load_floats<W>(v, x + at);
            load_floats<W>(o, dx + at);
            for (int e = 0; e < W; e++) {
                o[e] += rs[j] * d[e] * g[e] - ks[j] * v[e];
                s[e] += d[e] * v[e] * rs[j];
            }
            store_floats<W>(dx + at, o);
            if (dxh) store_floats<W>(dxh + at, o);
        }
        store_floats<W>(parts + (int64_t)blockIdx.x * C + i, s);
    }
}
// dw[c] += the sum over chunks of parts[chunk][c]. Thread mapping: a block of 32 x 32 threads per
// 32 columns; thread (c, y) adds chunks y, y + 32, ... of its column, then row 0 adds the 32
// partial sums in order.
__global__ static void rmsnorm_dw_sum_kernel(float *dw, const float *parts, int chunks, int C) {
    __shared__ float part[32][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < C)
#pragma unroll 4
        for (int k = threadIdx.y; k < chunks; k += 32) s += parts[(int64_t)k * C + c];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y > 0 || c >= C) return;
    float t = 0.0f;
    for (int y = 0; y < 32; y++) t += part[y][threadIdx.x];
    dw[c] += t;
}
static float *g_rms_parts;  // [chunks, C] of rmsnorm_backward_kernel
static int64_t g_rms_parts_n;
static void rmsnorm_backward(float *dx, __nv_bfloat16 *dxh, float *dw, const float *dy, const float *x, const float *w,
                             const float *rstd, int N, int C) {
    PROFILE(PROF_OTHER);
    int vec = C % 4 == 0 && ((uintptr_t)x | (uintptr_t)w | (uintptr_t)dx | (uintptr_t)dy) % 16 == 0 && (uintptr_t)dxh % 8 == 0;
    int chunks = blocks_for(N, RMS_ROWS);
    float *parts = gpu_grow(&g_rms_parts, &g_rms_parts_n, (int64_t)chunks * C, "scratch");
    if (vec) rmsnorm_backward_kernel<4><<<chunks, 256>>>(dx, dxh, parts, dy, x, w, rstd, N, C);
    else rmsnorm_backward_kernel<1><<<chunks, 256>>>(dx, dxh, parts, dy, x, w, rstd, N, C);
    launchCheck();
    rmsnorm_dw_sum_kernel<<<blocks_for(C, 32), dim3(32, 32)>>>(dw, parts, chunks, C);
    launchCheck();
}

// --- cuBLASLt: every product of the program -----------------------------------------------
// One call, lt_matmul:  D = alpha op(A) op(B) + beta C,  column-major as cuBLAS counts (m x n, inner
// size k; see the matmul section below), or `batch` such products at strides (--attention gemm).
// A and B are both fp32 or both bf16; C and D share a type, fp32 or bf16 (bf16 only written, beta
// 0). C is D itself but for the student's residual adds, where C is the residual stream and D its
// next copy, so the add is the matmul's epilogue and no pass of its own. Accumulation is fp32, on
// tensor cores for bf16 and under --matmul tf32.
// cuBLASLt's heuristic picks the kernel for a shape (sizes, leading dimensions, types, and the
// pointers' alignments, which some kernels need). A shape's first call asks it, and keeps the
// answer with its descriptors in a table of plans, so that a step's later calls ask nothing. The
// kernels may use a workspace of LT_WORKSPACE bytes (split-K's partial sums), allocated once.
typedef struct {
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc, batch;
    int64_t sa, sb, sc;     // strides between the products of a batch
    cudaDataType_t ab, cd;  // the type of A and B; of C and D
    cublasComputeType_t compute;
    int align[4];  // A's, B's, C's and D's pointer alignment in bytes, at most 256
} LtShape;
typedef struct {
    LtShape s;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;  // c: C's and D's
    cublasLtMatmulAlgo_t algo;
} LtPlan;
#define LT_PLANS 128  // when full, the oldest plan gives way
#define LT_WORKSPACE ((size_t)32 << 20)
static cublasLtHandle_t g_lt;
static void *g_lt_workspace;
static LtPlan g_lt_plans[LT_PLANS];
static int g_lt_n, g_lt_next;

static int ptr_align(const void *p) {
    int a = 256;
    while (a > 1 && (uintptr_t)p % a) a /= 2;
    return a;
}
static cublasLtMatrixLayout_t lt_layout(cudaDataType_t type, int rows, int cols, int ld, int batch, int64_t stride) {
    cublasLtMatrixLayout_t l;
    cublasCheck(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld));
    if (batch > 1) {
        cublasCheck(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
        cublasCheck(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    }
    return l;
}
static void lt_plan_free(LtPlan *p) {
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->c);
    cublasLtMatmulDescDestroy(p->op);
}
static const LtPlan *lt_plan(const LtShape *s) {
    for (int i = 0; i < g_lt_n; i++)
        if (!memcmp(&g_lt_plans[i].s, s, sizeof *s)) return &g_lt_plans[i];
    LtPlan *p;
    if (g_lt_n < LT_PLANS) {
        p = &g_lt_plans[g_lt_n++];
    } else {
        p = &g_lt_plans[g_lt_next];
        g_lt_next = (g_lt_next + 1) % LT_PLANS;
        lt_plan_free(p);
    }
    p->s = *s;
    cublasCheck(cublasLtMatmulDescCreate(&p->op, s->compute, CUDA_R_32F));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &s->ta, sizeof s->ta));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &s->tb, sizeof s->tb));
    int na = s->ta == CUBLAS_OP_N, nb = s->tb == CUBLAS_OP_N;
    p->a = lt_layout(s->ab, na ? s->m : s->k, na ? s->k : s->m, s->lda, s->batch, s->sa);
    p->b = lt_layout(s->ab, nb ? s->k : s->n, nb ? s->n : s->k, s->ldb, s->batch, s->sb);
    p->c = lt_layout(s->cd, s->m, s->n, s->ldc, s->batch, s->sc);
    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = LT_WORKSPACE;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++) {
        uint32_t v = (uint32_t)s->align[i];
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &v, sizeof v));
    }
    cublasLtMatmulHeuristicResult_t r;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g_lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &r, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
        fail("cuBLASLt has no kernel for a %d x %d x %d matmul (%s operands, batch %d, alignments %d %d %d %d): %s", s->m,
             s->n, s->k, s->ab == CUDA_R_16BF ? "bf16" : "fp32", s->batch, s->align[0], s->align[1], s->align[2],
             s->align[3], cublasLtGetStatusString(st));
    p->algo = r.algo;
    return p;
}
static void lt_matmul(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const void *A, int lda,
                      int64_t sa, const void *B, int ldb, int64_t sb, cudaDataType_t ab, float beta, const void *C, void *D,
                      int ldc, int64_t sc, cudaDataType_t cd, int batch, cublasComputeType_t compute) {
    if (m == 0 || n == 0) return;  // D empty
    LtShape s;
    memset(&s, 0, sizeof s);  // its padding too: shapes are compared whole
    s.ta = ta, s.tb = tb, s.m = m, s.n = n, s.k = k, s.lda = lda, s.ldb = ldb, s.ldc = ldc, s.batch = batch;
    s.sa = sa, s.sb = sb, s.sc = sc, s.ab = ab, s.cd = cd, s.compute = compute;
    s.align[0] = ptr_align(A), s.align[1] = ptr_align(B), s.align[2] = ptr_align(C), s.align[3] = ptr_align(D);
    const LtPlan *p = lt_plan(&s);
    cublasCheck(cublasLtMatmul(g_lt, p->op, &alpha, A, p->a, B, p->b, &beta, C, p->c, D, p->c, &p->algo, g_lt_workspace,
                               LT_WORKSPACE, 0));
}
static void lt_init(void) {
    cublasCheck(cublasLtCreate(&g_lt));
    g_lt_workspace = gpu_malloc(LT_WORKSPACE, "cuBLASLt workspace");
}
static void lt_free(void) {
    for (int i = 0; i < g_lt_n; i++) lt_plan_free(&g_lt_plans[i]);
    g_lt_n = g_lt_next = 0;
    gpu_free(g_lt_workspace);
    cublasLtDestroy(g_lt);
}

// --- matmul: out[N,O] = x[N,I] W[O,I]^T ----------------------------------------------------
// cuBLAS(Lt) is column-major: a row-major [R,C] matrix is its column-major transpose [C,R], so
//   out^T[O,N] = W[O,I] x^T[I,N],   dx^T[I,N] += W^T[I,O] dout^T[O,N],   dW^T[I,O] += x^T[I,N] dout[N,O].
// Under --matmul bf16 both operands are bf16 (the weight's copy; the other as its producer wrote
// it, an Act, or cast just before the call) and the products accumulate in fp32 into the output:
// fp32, C = A B + beta C, or, for the activations kept in bf16 alone (act_bf16), bf16 written once.
// c_in (the residual adds alone): C = A B + beta c_in instead, out of place.
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc, const float *c_in = NULL) {
    lt_matmul(ta, tb, m, n, k, 1.0f, A, lda, 0, B, ldb, 0, CUDA_R_32F, beta, c_in ? c_in : C, C, ldc, 0, CUDA_R_32F, 1,
              g_compute);
}
// C: an Act, fp32 (C = A B + beta C, or beta c_in), or bf16 (C = A B rounded once, beta 0).
static void gemm_bf16(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const __nv_bfloat16 *A, int lda,
                      const __nv_bfloat16 *B, int ldb, float beta, Act C, int ldc, const float *c_in = NULL) {
    if (C.h && beta != 0.0f) fail("internal: a bf16 matmul output is written, not accumulated");
    void *c = C.h ? (void *)C.h : (void *)C.f;
    lt_matmul(ta, tb, m, n, k, 1.0f, A, lda, 0, B, ldb, 0, CUDA_R_16BF, beta, c_in ? (const void *)c_in : c, c, ldc, 0,
              C.h ? CUDA_R_16BF : CUDA_R_32F, 1, CUBLAS_COMPUTE_32F);
}

// The bf16 casts of a matmul's input (x) and of its output gradient (d), reused by every matmul.
static __nv_bfloat16 *g_bf_x, *g_bf_d;
static int64_t g_bf_x_n, g_bf_d_n;
static __nv_bfloat16 *bf16_scratch(__nv_bfloat16 **buf, int64_t *cap, int64_t n) {
    if (n > *cap) {
        gpu_free(*buf);
        *buf = (__nv_bfloat16 *)gpu_malloc((size_t)n * sizeof(__nv_bfloat16), "bf16 activation casts");
        *cap = n;
    }
    return *buf;
}
static void bf16_scratch_reserve(int64_t nx, int64_t nd) {
    bf16_scratch(&g_bf_x, &g_bf_x_n, nx);
    bf16_scratch(&g_bf_d, &g_bf_d_n, nd);
}
static const __nv_bfloat16 *bf16_of(__nv_bfloat16 **buf, int64_t *cap, const float *x, int64_t n) {
    __nv_bfloat16 *y = bf16_scratch(buf, cap, n);
    cast_bf16(y, x, n);
    return y;
}

// A matmul's weight [O,I]: fp32 (f), and its bf16 copy (h) under --matmul bf16. A linear's W^
// under layered W^ is that of the layer model_layer_weights made last, which must be l.
typedef struct { const float *f; const __nv_bfloat16 *h; } Weight;
static Weight weight(const Model *m, int t, int l) {
    int layered = m->wq_layered && m->h->is_linear[t];
    if (layered && m->wq_at != l) fail("internal: layer %d's W^ asked for while layer %d's is made", l, m->wq_at);
    int64_t off = m->h->per_layer[t] && !layered ? (int64_t)l * m->slice[t] : 0;
    Weight w = {m->fwd_t[t] ? m->fwd_t[t] + off : NULL, m->wbf_t[t] ? m->wbf_t[t] + off : NULL};
    return w;
}

// x: an Act; under bf16 cast here (into g_bf_x) only when it exists in fp32 alone.
static const __nv_bfloat16 *bf16_in(Act x, int64_t n) { return x.h ? x.h : bf16_of(&g_bf_x, &g_bf_x_n, x.f, n); }

// out: an Act, written in bf16 when it is bf16 alone (gate, up).
static void matmul_forward(Act out, Act x, Weight w, int N, int I, int O) {
    PROFILE(PROF_MATMUL);
    if (g_bf16) gemm_bf16(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w.h, I, bf16_in(x, (int64_t)N * I), I, 0.0f, out, O);
    else gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w.f, I, x.f, I, 0.0f, out.f, O);
}
// The residual add: y = r + a W^T in the matmul's epilogue (fp32; C = r, D = y, and y may be r).
static void matmul_forward_add(float *y, const float *r, Act a, Weight w, int N, int I, int O) {
    PROFILE(PROF_MATMUL);
    if (g_bf16) gemm_bf16(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w.h, I, bf16_in(a, (int64_t)N * I), I, 1.0f, act_f(y), O, r);
    else gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w.f, I, a.f, I, 1.0f, y, O, r);
}
static void matmul_forward(float *out, Act x, Weight w, int N, int I, int O) { matmul_forward(act_f(out), x, w, N, I, O); }
static void matmul_forward(float *out, const float *x, Weight w, int N, int I, int O) { matmul_forward(act_f(out), act_f(x), w, N, I, O); }
// dout: an Act too (dgate, dup are written in bf16 by swiglu_backward; the residual gradient comes
// with the bf16 copy its rmsnorm backward wrote), cast into g_bf_d when it is fp32 alone.
// dx: accumulated into when fp32 (the layers' += rule); when bf16 alone (dhmid, and dO under flash)
// written instead, the rule's exception: its one reader takes it as the gradient itself.
// dx_beta, dw_beta: 1 adds to dx and dw (the rule), 0 writes them, for the first writer of a buffer
// that is not cleared first (the model backward's dx buffers; a step's first gradient of a
// weight, grad_beta): a pass of memset and the GEMM's read of zeros spared.
static void matmul_backward(Act dx, float *dw, Act dout, Act x, Weight w, int N, int I, int O, float dx_beta = 1.0f,
                            float dw_beta = 1.0f) {
    PROFILE(PROF_MATMUL);
    if (g_bf16) {
        const __nv_bfloat16 *db = dout.h ? dout.h : bf16_of(&g_bf_d, &g_bf_d_n, dout.f, (int64_t)N * O);
        if (dx.f || dx.h) gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w.h, I, db, O, dx.h ? 0.0f : dx_beta, dx, I);
        if (dw) gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, bf16_in(x, (int64_t)N * I), I, db, O, dw_beta, act_f(dw), I);
        return;
    }
    if (dx.f) gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w.f, I, dout.f, O, dx_beta, dx.f, I);
    if (dw) gemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x.f, I, dout.f, O, dw_beta, dw, I);
}

// --- RoPE (rotate half) of x[B,T,NH,hd], into y ------------------------------------------------
//   y[i] = x[i] cos - x[i+hd/2] sin,   y[i+hd/2] = x[i+hd/2] cos + x[i] sin;  backward: sin -> -sin.
// In place (y = x, fp32), or into a bf16 y (Act), the values of the fp32 rotation and cast_bf16 in
// one pass: --attention flash's q and k (forward), and the bf16 dq, dk their matmuls read
// (backward, --matmul bf16).
// Thread mapping: one thread per W rotated pairs (b, t, head, i .. i + W-1 < hd/2); it reads them
// all before writing. W = 4 (float4 loads, 16 or 8 bytes stored) when hd/2 % 4 == 0 and the
// pointers are aligned so (every real shape), else 1.
template <int W, typename Yt>
__global__ static void rope_rotate_kernel(Yt *y, const float *x, const float *cosv, const float *sinv, int B, int T, int NH,
                                          int hd, float sign) {
    int half = hd / 2, groups = half / W;
    int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (int64_t)B * T * NH * groups) return;
    int i = (int)(p % groups) * W;
    int64_t row = p / groups;  // (b, t, head)
    int t = (int)(row / NH % T);
    float a[W], c[W], cr[W], s[W], lo[W], hi[W];
    load_floats<W>(a, x + row * hd + i);
    load_floats<W>(c, x + row * hd + i + half);
    load_floats<W>(cr, cosv + (int64_t)t * half + i);
    load_floats<W>(s, sinv + (int64_t)t * half + i);
#pragma unroll
    for (int e = 0; e < W; e++) {
        float sn = sign * s[e];
        lo[e] = a[e] * cr[e] - c[e] * sn;
        hi[e] = c[e] * cr[e] + a[e] * sn;
    }
    store_floats<W>(y + row * hd + i, lo);
    store_floats<W>(y + row * hd + i + half, hi);
}
template <typename Yt>
static void rope_rotate(Yt *y, const float *x, const float *cosv, const float *sinv, int B, int T, int NH, int hd, float sign) {
    PROFILE(PROF_OTHER);
    int64_t pairs = (int64_t)B * T * NH * (hd / 2);
    int x4 = hd / 2 % 4 == 0 && ((uintptr_t)x | (uintptr_t)cosv | (uintptr_t)sinv) % 16 == 0 && (uintptr_t)y % (4 * sizeof(Yt)) == 0;
    if (x4) rope_rotate_kernel<4><<<blocks_for(pairs / 4, 256), 256>>>(y, x, cosv, sinv, B, T, NH, hd, sign);
    else rope_rotate_kernel<1><<<blocks_for(pairs, 256), 256>>>(y, x, cosv, sinv, B, T, NH, hd, sign);
    launchCheck();
}
static void rope_forward(float *x, const float *cosv, const float *sinv, int B, int T, int NH, int hd) {
    rope_rotate(x, x, cosv, sinv, B, T, NH, hd, 1.0f);
}
static void rope_forward_bf16(__nv_bfloat16 *y, const float *x, const float *cosv, const float *sinv, int B, int T, int NH, int hd) {
    rope_rotate(y, x, cosv, sinv, B, T, NH, hd, 1.0f);
}
static void rope_backward(float *dx, const float *cosv, const float *sinv, int B, int T, int NH, int hd) {
    rope_rotate(dx, dx, cosv, sinv, B, T, NH, hd, -1.0f);
}
static void rope_backward_bf16(__nv_bfloat16 *y, const float *dx, const float *cosv, const float *sinv, int B, int T, int NH, int hd) {
    rope_rotate(y, dx, cosv, sinv, B, T, NH, hd, -1.0f);
}

// --- causal grouped-query attention ----------------------------------------------------------
// q[B,T,H,hd], k,v[B,T,KV,hd] -> out[B,T,H,hd], lse[B,H,T]; query head h reads kv head h/(H/KV).
//   s_tj = q_t . k_j / sqrt(hd) (j <= t),  p_tj = softmax_j,  out_t = sum_j p_tj v_j.
// The softmax is computed online over tiles of ATT_KT keys (FlashAttention's recurrence, Dao et
// al. 2022): a running max m and sum l, rescaled by exp(m_old - m_new) whenever the max grows.
// Thread mapping: a block owns ATT_Q consecutive queries of one (b, h), one warp per query. The
// block loads each tile of ATT_KT keys and values into shared memory together (rows padded to
// hd + 1 floats, so that lane j reading row j hits its own bank); for the scores, lane j takes
// key j of the tile; for the output, a lane owns dims lane, lane + 32, ...
#define ATT_MAX_HD 256
#define ATT_Q 8
#define ATT_KT 32

static void attention_shared(const void *kernel, size_t bytes) {
    if (bytes > 48 * 1024) cudaCheck(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

// The backward's Delta_t = dO_t . O_t of row (b, h, t) of dout, out[B,T,H,hd] (fp32, or bf16
// under flash and --matmul bf16), summed by a warp (its lanes over the dims), every lane getting it.
template <typename Ot>
__device__ static float attention_row_delta(const Ot *dout, const Ot *out, int64_t row, int T, int H, int hd) {
    int t = (int)(row % T), h = (int)(row / T % H), b = (int)(row / ((int64_t)T * H)), lane = threadIdx.x % 32;
    int64_t qi = (((int64_t)b * T + t) * H + h) * hd;
    float d = 0.0f;
    for (int i = lane; i < hd; i += 32) d += to_float(dout[qi + i]) * to_float(out[qi + i]);
    return warp_sum(d);
}

// tile rows j0.. j0+ATT_KT-1 of a [B,T,NH,hd] tensor (head hh) into a padded shared tile; zeros past T
__device__ static void load_tile(float *tile, const float *x, int b, int j0, int T, int NH, int hh, int hd) {
    int P = hd + 1;
    for (int e = threadIdx.x; e < ATT_KT * hd; e += blockDim.x) {
        int jj = e / hd, i = e % hd, j = j0 + jj;
        tile[jj * P + i] = j < T ? x[(((int64_t)b * T + j) * NH + hh) * hd + i] : 0.0f;
    }
}

__global__ static void attention_forward_kernel(float *out, float *lse, const float *q, const float *k, const float *v,
                                                int B, int T, int H, int KV, int hd) {
    extern __shared__ float sm[];
    int P = hd + 1, warp = threadIdx.x / 32, lane = threadIdx.x % 32, tiles = (T + ATT_Q - 1) / ATT_Q;
    float *qs = sm + warp * hd, *ks = sm + ATT_Q * hd, *vs = ks + ATT_KT * P;
    int bh = blockIdx.x / tiles, t = (blockIdx.x % tiles) * ATT_Q + warp, b = bh / H, h = bh % H, kvh = h / (H / KV);
    int tmax = min(T - 1, (blockIdx.x % tiles) * ATT_Q + ATT_Q - 1);
    int active = t < T;
    float scale = 1.0f / sqrtf((float)hd);
    if (active) for (int i = lane; i < hd; i += 32) qs[i] = q[(((int64_t)b * T + t) * H + h) * hd + i];
    float o[ATT_MAX_HD / 32];
#pragma unroll
    for (int r = 0; r < ATT_MAX_HD / 32; r++) o[r] = 0.0f;
    float mx = -INFINITY, sum = 0.0f;
    for (int j0 = 0; j0 <= tmax; j0 += ATT_KT) {
        __syncthreads();  // the previous tile is consumed
        load_tile(ks, k, b, j0, T, KV, kvh, hd);
        load_tile(vs, v, b, j0, T, KV, kvh, hd);
        __syncthreads();
        if (!active || j0 > t) continue;
        int j = j0 + lane;
        float s = -INFINITY;
        if (j <= t) {
            float d = 0.0f;
            for (int i = 0; i < hd; i++) d += qs[i] * ks[lane * P + i];
            s = d * scale;
        }
        float nmx = fmaxf(mx, warp_max(s));
        float p = j <= t ? expf(s - nmx) : 0.0f, corr = expf(mx - nmx);
        sum = sum * corr + warp_sum(p);
        int n = min(ATT_KT, t - j0 + 1);
#pragma unroll
        for (int r = 0; r < ATT_MAX_HD / 32; r++) o[r] *= corr;
        for (int jj = 0; jj < n; jj++) {
            float pj = __shfl_sync(0xffffffffu, p, jj);
#pragma unroll
            for (int r = 0; r < ATT_MAX_HD / 32; r++)
                if (lane + 32 * r < hd) o[r] += pj * vs[jj * P + lane + 32 * r];
        }
        mx = nmx;
    }
    if (!active) return;
    float *ot = out + (((int64_t)b * T + t) * H + h) * hd;
#pragma unroll
    for (int r = 0; r < ATT_MAX_HD / 32; r++)
        if (lane + 32 * r < hd) ot[lane + 32 * r] = o[r] / sum;
    if (lane == 0) lse[((int64_t)b * H + h) * T + t] = mx + logf(sum);
}
static void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                              int B, int T, int H, int KV, int hd) {
    PROFILE(PROF_ATTENTION);
    size_t bytes = (size_t)(ATT_Q * hd + 2 * ATT_KT * (hd + 1)) * sizeof(float);
    attention_shared((const void *)attention_forward_kernel, bytes);
    int blocks = B * H * ((T + ATT_Q - 1) / ATT_Q);
    attention_forward_kernel<<<blocks, 32 * ATT_Q, bytes>>>(out, lse, q, k, v, B, T, H, KV, hd);
    launchCheck();
}

// With dO the gradient of out, Delta_t = dO_t . out_t and p_tj = exp(s_tj - lse_t) recomputed:
//   ds_tj = p_tj (dO_t . v_j - Delta_t),  dq_t += scale sum_j ds_tj k_j,
//   dk_j += scale sum_t ds_tj q_t,  dv_j += sum_t p_tj dO_t.
// Two kernels, so that no two warps add to the same row:
//   dq: as the forward, a block owns ATT_Q queries of one (b, h), one warp per query, and walks
//       tiles of keys and values in shared memory; it also stores Delta_t for the second kernel.
//   dk, dv: a block owns ATT_Q consecutive keys of one (b, kv head), one warp per key, and walks
//       the query heads of its group and tiles of ATT_KT queries t >= j (q, dO, lse, Delta in
//       shared memory); lanes over queries for the scores, over dims for dk and dv.
__global__ static void attention_backward_dq_kernel(float *dq, float *delta, const float *dout, const float *q,
                                                    const float *k, const float *v, const float *out, const float *lse,
                                                    int B, int T, int H, int KV, int hd) {
    extern __shared__ float sm[];
    int P = hd + 1, warp = threadIdx.x / 32, lane = threadIdx.x % 32, tiles = (T + ATT_Q - 1) / ATT_Q;
    float *qs = sm + warp * hd, *dos = sm + ATT_Q * hd + warp * hd, *ks = sm + 2 * ATT_Q * hd, *vs = ks + ATT_KT * P;
    int bh = blockIdx.x / tiles, t = (blockIdx.x % tiles) * ATT_Q + warp, b = bh / H, h = bh % H, kvh = h / (H / KV);
    int tmax = min(T - 1, (blockIdx.x % tiles) * ATT_Q + ATT_Q - 1);
    int active = t < T;
    float scale = 1.0f / sqrtf((float)hd);
    int64_t qi = (((int64_t)b * T + t) * H + h) * hd, li = ((int64_t)b * H + h) * T + t;
    float dl = 0.0f, L = 0.0f;
    if (active) {
        for (int i = lane; i < hd; i += 32) { qs[i] = q[qi + i]; dos[i] = dout[qi + i]; dl += dout[qi + i] * out[qi + i]; }
        dl = warp_sum(dl);
        L = lse[li];
        if (lane == 0) delta[li] = dl;
    }
    float acc[ATT_MAX_HD / 32];
#pragma unroll
    for (int r = 0; r < ATT_MAX_HD / 32; r++) acc[r] = 0.0f;
    for (int j0 = 0; j0 <= tmax; j0 += ATT_KT) {
        __syncthreads();
        load_tile(ks, k, b, j0, T, KV, kvh, hd);
        load_tile(vs, v, b, j0, T, KV, kvh, hd);
        __syncthreads();
        if (!active || j0 > t) continue;
        int j = j0 + lane;
        float ds = 0.0f;
        if (j <= t) {
            float d = 0.0f, dp = 0.0f;
            for (int i = 0; i < hd; i++) { d += qs[i] * ks[lane * P + i]; dp += dos[i] * vs[lane * P + i]; }
            float p = expf(d * scale - L);
            ds = p * (dp - dl) * scale;
        }
        int n = min(ATT_KT, t - j0 + 1);
        for (int jj = 0; jj < n; jj++) {
            float dsj = __shfl_sync(0xffffffffu, ds, jj);
#pragma unroll
            for (int r = 0; r < ATT_MAX_HD / 32; r++)
                if (lane + 32 * r < hd) acc[r] += dsj * ks[jj * P + lane + 32 * r];
        }
    }
    if (!active) return;
#pragma unroll
    for (int r = 0; r < ATT_MAX_HD / 32; r++)
        if (lane + 32 * r < hd) dq[qi + lane + 32 * r] += acc[r];
}

__global__ static void attention_backward_dkv_kernel(float *dk, float *dv, const float *delta, const float *dout,
                                                     const float *q, const float *k, const float *v, const float *lse,
                                                     int B, int T, int H, int KV, int hd) {
    extern __shared__ float sm[];
    int P = hd + 1, warp = threadIdx.x / 32, lane = threadIdx.x % 32, tiles = (T + ATT_Q - 1) / ATT_Q;
    float *ks = sm + warp * hd, *vs = sm + ATT_Q * hd + warp * hd, *qt = sm + 2 * ATT_Q * hd, *dot = qt + ATT_KT * P,
          *lt = dot + ATT_KT * P, *dlt = lt + ATT_KT;
    int bk = blockIdx.x / tiles, jt0 = (blockIdx.x % tiles) * ATT_Q, j = jt0 + warp, b = bk / KV, kvh = bk % KV;
    int group = H / KV, active = j < T;
    float scale = 1.0f / sqrtf((float)hd);
    int64_t kvi = (((int64_t)b * T + j) * KV + kvh) * hd;
    if (active) for (int i = lane; i < hd; i += 32) { ks[i] = k[kvi + i]; vs[i] = v[kvi + i]; }
    float ak[ATT_MAX_HD / 32], av[ATT_MAX_HD / 32];
#pragma unroll
    for (int r = 0; r < ATT_MAX_HD / 32; r++) { ak[r] = 0.0f; av[r] = 0.0f; }
    for (int h = kvh * group; h < (kvh + 1) * group; h++)
        for (int t0 = jt0; t0 < T; t0 += ATT_KT) {
            __syncthreads();
            load_tile(qt, q, b, t0, T, H, h, hd);
            load_tile(dot, dout, b, t0, T, H, h, hd);
            for (int e = threadIdx.x; e < ATT_KT; e += blockDim.x) {
                int tt = t0 + e;
                lt[e] = tt < T ? lse[((int64_t)b * H + h) * T + tt] : 0.0f;
                dlt[e] = tt < T ? delta[((int64_t)b * H + h) * T + tt] : 0.0f;
            }
            __syncthreads();
            if (!active) continue;
            int t = t0 + lane;
            float p = 0.0f, ds = 0.0f;
            if (t < T && t >= j) {
                float d = 0.0f, dp = 0.0f;
                for (int i = 0; i < hd; i++) { d += qt[lane * P + i] * ks[i]; dp += dot[lane * P + i] * vs[i]; }
                p = expf(d * scale - lt[lane]);
                ds = p * (dp - dlt[lane]) * scale;
            }
            int n = min(ATT_KT, T - t0);
            for (int tt = 0; tt < n; tt++) {
                float pt = __shfl_sync(0xffffffffu, p, tt), dst = __shfl_sync(0xffffffffu, ds, tt);
#pragma unroll
                for (int r = 0; r < ATT_MAX_HD / 32; r++)
                    if (lane + 32 * r < hd) {
                        av[r] += pt * dot[tt * P + lane + 32 * r];
                        ak[r] += dst * qt[tt * P + lane + 32 * r];
                    }
            }
        }
    if (!active) return;
#pragma unroll
    for (int r = 0; r < ATT_MAX_HD / 32; r++)
        if (lane + 32 * r < hd) { dk[kvi + lane + 32 * r] += ak[r]; dv[kvi + lane + 32 * r] += av[r]; }
}

static void attention_backward(float *dq, float *dk, float *dv, float *delta, const float *dout, const float *q,
                               const float *k, const float *v, const float *out, const float *lse,
                               int B, int T, int H, int KV, int hd) {
    PROFILE(PROF_ATTENTION);
    int tiles = (T + ATT_Q - 1) / ATT_Q;
    size_t bytes = (size_t)(2 * ATT_Q * hd + 2 * ATT_KT * (hd + 1)) * sizeof(float);
    attention_shared((const void *)attention_backward_dq_kernel, bytes);
    attention_backward_dq_kernel<<<B * H * tiles, 32 * ATT_Q, bytes>>>(dq, delta, dout, q, k, v, out, lse, B, T, H, KV, hd);
    launchCheck();
    bytes += 2 * ATT_KT * sizeof(float);
    attention_shared((const void *)attention_backward_dkv_kernel, bytes);
    attention_backward_dkv_kernel<<<B * KV * tiles, 32 * ATT_Q, bytes>>>(dk, dv, delta, dout, q, k, v, lse, B, T, H, KV, hd);
    launchCheck();
}

// The same attention through cuBLAS (--attention gemm, the default): per (b, h) the [T,T]
// score matrix is materialised, so the products run on tensor cores (TF32) at the price of
// B*H*T*T floats of scratch (two such buffers when training); the causal softmax and its
// backward are kernels. Each product is one strided-batched call over the B sequences per query
// head h (its kv head h/(H/KV)); per head, so that the heads of a group add to dk, dv in turn.
//   S = scale Q K^T,  P = softmax(S) causal,  O = P V;
//   dP = dO V^T,  dS = P (dP - Delta),  dQ += scale dS K,  dK += scale dS^T Q,  dV += P^T dO.
static void gemm_batched(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                         const float *A, int lda, int64_t sa, const float *Bm, int ldb, int64_t sb, float beta,
                         float *C, int ldc, int64_t sc, int batch) {
    lt_matmul(ta, tb, m, n, k, alpha, A, lda, sa, Bm, ldb, sb, CUDA_R_32F, beta, C, C, ldc, sc, CUDA_R_32F, batch, g_compute);
}

// row-major X[t][j] (+)= alpha sum_i A_t[i] Bm_j[i] for every head: A rows [T, hd] with stride
// lda, Bm rows likewise; X [T,T] of head h. (S = Q K^T and dP = dO V^T.)
static void attn_rows_dot(float *X, const float *A, int lda, const float *Bm, int ldb, float alpha,
                          int B, int T, int H, int KV, int hd) {
    for (int h = 0; h < H; h++)
        gemm_batched(CUBLAS_OP_T, CUBLAS_OP_N, T, T, hd, alpha, Bm + (int64_t)(h / (H / KV)) * hd, ldb, (int64_t)T * ldb,
                     A + (int64_t)h * hd, lda, (int64_t)T * lda, 0.0f, X + (int64_t)h * T * T, T, (int64_t)H * T * T, B);
}
// row-major Y_t (+)= alpha sum_j X[t][j] Bm_j: Y rows [T, hd] (stride ldy), Bm rows (stride ldb).
// (O = P V and dQ += scale dS K.)
static void attn_mix(float *Y, int ldy, const float *X, const float *Bm, int ldb, int bm_per_kv, float alpha, float beta,
                     int B, int T, int H, int KV, int hd) {
    for (int h = 0; h < H; h++) {
        int hb = bm_per_kv ? h / (H / KV) : h;
        gemm_batched(CUBLAS_OP_N, CUBLAS_OP_N, hd, T, T, alpha, Bm + (int64_t)hb * hd, ldb, (int64_t)T * ldb,
                     X + (int64_t)h * T * T, T, (int64_t)H * T * T, beta, Y + (int64_t)h * hd, ldy, (int64_t)T * ldy, B);
    }
}
// row-major Y_j += alpha sum_t X[t][j] A_t: Y rows of the kv heads. (dK += scale dS^T Q, dV += P^T dO.)
static void attn_mix_t(float *Y, const float *X, const float *A, float alpha, int B, int T, int H, int KV, int hd) {
    for (int h = 0; h < H; h++)
        gemm_batched(CUBLAS_OP_N, CUBLAS_OP_T, hd, T, T, alpha, A + (int64_t)h * hd, H * hd, (int64_t)T * H * hd,
                     X + (int64_t)h * T * T, T, (int64_t)H * T * T, 1.0f, Y + (int64_t)(h / (H / KV)) * hd, KV * hd,
                     (int64_t)T * KV * hd, B);
}

// Causal softmax in place on S[B,H,T,T]: row t keeps j <= t, lse[b,h,t] = log sum_j exp(s_tj).
// Thread mapping: one warp per row (b, h, t); lanes stride over its columns.
__global__ static void softmax_causal_kernel(float *S, float *lse, int64_t rows, int T) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    int t = (int)(row % T);
    float *s = S + row * T;
    float mx = -INFINITY;
    for (int j = lane; j <= t; j += 32) mx = fmaxf(mx, s[j]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j <= t; j += 32) sum += expf(s[j] - mx);
    sum = warp_sum(sum);
    float L = mx + logf(sum);
    for (int j = lane; j < T; j += 32) s[j] = j <= t ? expf(s[j] - L) : 0.0f;
    if (lane == 0) lse[row] = L;
}
// dS = P (dP - Delta_t) in place of dP, Delta_t = dO_t . O_t; P = exp(S - lse) recomputed in place
// of S. Thread mapping: one warp per row (b, h, t).
__global__ static void softmax_causal_backward_kernel(float *dS, float *S, const float *lse, const float *dout,
                                                      const float *out, int B, int T, int H, int hd) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // (b, h, t)
    int lane = threadIdx.x % 32;
    if (row >= (int64_t)B * H * T) return;
    int t = (int)(row % T);
    float dl = attention_row_delta(dout, out, row, T, H, hd);
    float L = lse[row], *s = S + row * T, *ds = dS + row * T;
    for (int j = lane; j < T; j += 32) {
        float p = j <= t ? expf(s[j] - L) : 0.0f;
        s[j] = p;
        ds[j] = p * (ds[j] - dl);
    }
}

static void attention_forward_gemm(float *out, float *lse, float *S, const float *q, const float *k, const float *v,
                                   int B, int T, int H, int KV, int hd) {
    PROFILE(PROF_ATTENTION);
    float scale = 1.0f / sqrtf((float)hd);
    attn_rows_dot(S, q, H * hd, k, KV * hd, scale, B, T, H, KV, hd);
    int64_t rows = (int64_t)B * H * T;
    softmax_causal_kernel<<<blocks_for(rows, 8), 256>>>(S, lse, rows, T);
    launchCheck();
    attn_mix(out, H * hd, S, v, KV * hd, 1, 1.0f, 0.0f, B, T, H, KV, hd);
}

static void attention_backward_gemm(float *dq, float *dk, float *dv, float *S, float *dS, const float *dout, const float *q,
                                    const float *k, const float *v, const float *out, const float *lse,
                                    int B, int T, int H, int KV, int hd) {
    PROFILE(PROF_ATTENTION);
    float scale = 1.0f / sqrtf((float)hd);
    attn_rows_dot(S, q, H * hd, k, KV * hd, scale, B, T, H, KV, hd);      // S again
    attn_rows_dot(dS, dout, H * hd, v, KV * hd, 1.0f, B, T, H, KV, hd);    // dP
    softmax_causal_backward_kernel<<<blocks_for((int64_t)B * H * T, 8), 256>>>(dS, S, lse, dout, out, B, T, H, hd);
    launchCheck();
    attn_mix(dq, H * hd, dS, k, KV * hd, 1, scale, 1.0f, B, T, H, KV, hd);
    attn_mix_t(dk, dS, q, scale, B, T, H, KV, hd);
    attn_mix_t(dv, S, dout, 1.0f, B, T, H, KV, hd);
}

// --- the same attention on tensor cores (--attention flash) -----------------------------------
// FlashAttention-2 (Dao 2023): the online softmax of the fused kernel above, with the products of
// each tile on tensor cores and no [T,T] matrix in memory. It reads q, k, v (and, backward, dO)
// as bf16 copies [B,T,NH,hd] made once per layer (the forward keeps them for the backward in
// place of fp32 ones); tiles are staged into shared memory by cp.async (16-byte copies that run
// while the warps compute on the previous tile: double buffering), rows past T and dims past hd
// as zeros (which add nothing to a dot product), so that a head of hd <= 64 is computed as one of
// HDP = 64 dims, hd <= 128 as 128. The softmax runs in base 2 (exp(s) = exp2(s log2 e), and exp2
// is one instruction): on scores x_tj = s_tj log2(e), with the running max m in the same units.
// Per tile of 64 keys, for each query t (m_t and l_t start at -inf and 0, O_t at 0):
//   m_new = max(m, max_j x_tj),  c = exp2(m - m_new),  p_tj = exp2(x_tj - m_new),
//   l = c l + sum_j p_tj,  O_t = c O_t + sum_j p_tj v_j  (P rounded to bf16 for the product);
// at the end out_t = O_t / l_t and lse_t = (m_t + log2 l_t) ln 2.
//
// The products are the tensor cores' warp-wide mma.sync m16n8k16 (bf16 operands, fp32
// accumulators), whose fragments have a documented layout (PTX ISA, "Matrix Fragments for
// mma.m16n8k16"). With g = lane / 4 and c = lane % 4:
//   A, 16 x 16 (4 registers of 2 bf16): rows g and g + 8, columns 2c, 2c + 1 and 2c + 8, 2c + 9
//      (register i holds row g + 8 (i & 1), columns 2c + 8 (i >> 1) and the next);
//   B, 16 x 8 (2 registers): column g, rows 2c, 2c + 1 and 2c + 8, 2c + 9;
//   C, 16 x 8 (4 floats): rows g and g + 8 (element e: row g + 8 (e >> 1)), columns 2c + (e & 1).
// So every row of a product lives in the 4 lanes of one group (a row's max and sum take two
// shuffles), and the C fragments of two neighbouring 8-column tiles of S are, packed to bf16,
// exactly the A fragment of P for the next product: P never leaves the registers. Operands in
// shared memory are read by ldmatrix.x4, four 8 x 8 blocks a warp-wide instruction, which hands
// lane (g, c) row g, columns 2c and 2c + 1 of each block: the pairs of the fragments above. So an
// operand whose k dimension runs along the rows of its tile (K, V as A in the backward's K Q^T and
// V dO^T; K as B in Q K^T, Q and dO in K Q^T and V dO^T) is read as it is, one instruction for
// an A fragment or two B fragments; one whose k runs down the columns (V in P V, dO and Q in P^T
// dO and dS^T Q, dS^T and K in dS K) through ldmatrix .trans, which hands each lane the pairs of
// the transposed blocks. Tile rows are HDP + 8 bf16 (16 bytes more than a multiple of
// 128) apart, so ldmatrix's 8 rows of a block fall in different banks.
#define FLASH_T 64                // keys per tile; queries a block of the backward owns
#define FLASH_THREADS 128         // 4 warps: of the backward, 16 of the 64 rows each
#define FLASH_MAX_HD 128
#define FLASH_LDS (FLASH_T + 8)   // row stride of dS^T [64][64] in shared memory, bf16
// Row tiles of 16 queries a warp of the forward owns, so FLASH_T MT queries a block. Every K and V
// fragment a warp reads from shared memory (ldmatrix) feeds MT mma, one a row tile: MT = 2
// (FlashAttention-2's 128 queries a block of 4 warps) halves the shared-memory reads per mma and
// the K, V tiles staged per query, but its ~240 registers leave 2 blocks (8 warps) an SM. Measured
// with ncu on an H200 (the benchmark's layer, B 8, T 1024, H 32, hd 64): MT = 2 at 2 blocks 302
// us a call, MT = 1 at 3 blocks (161 registers, 12 warps) 272 us: here the warps that hide
// latency count for more than the reads saved, so MT = 1. MT = 2 stays a setting (the kernel
// takes any MT; cuda_parity passed with both); HDP = 128 cannot take it (its O accumulators alone
// are HDP / 2 registers a row tile: two would pass 255).
#define FLASH_FORWARD_MT(HDP) 1
// Blocks a SM that the kernels of HDP = 64 are compiled for (__launch_bounds__ caps the registers
// a thread at 64K / (128 threads x blocks)): the forward 3 (161 registers at MT = 1; MT = 2 needs
// 2: ~240, of which its two row tiles' S and O fragments take 128 and Q 32; 3 x 36 KiB of shared
// memory), the backward 3 (167 registers, which it fits by computing S^T in halves; 3 x 64 KiB).
// HDP = 128: the forward with bf16 O 3 (168 registers; with fp32 O 168 would spill, so no
// minimum: 174, 2 blocks), the backward no minimum (0; 252 registers, 2 blocks).
#define FLASH_FORWARD_BLOCKS 3
#define FLASH_BACKWARD_BLOCKS 3

__device__ static inline void mma_16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 2^x by the SFU's ex2.approx.ftz alone (FlashAttention-2's exp2f, built with --use_fast_math):
// exp2f wraps the same instruction in a range test and two multiplies only so that results below
// 2^-126 come out subnormal rather than 0; in the softmax they are terms below 2^-126 of a row
// whose largest term is 1 (the forward's p and corrections, the backward's p = exp2(x - lse2) <= 1).
// 2^-inf = +0, the masked keys' p.
__device__ static inline float exp2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// two floats as the bf16 pair of one register, the first in the low half (the lower column)
__device__ static inline uint32_t bf16_pair(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}
// ldmatrix.x4 loads four 8 x 8 bf16 blocks: lane l gives the shared address of row l % 8 of block
// l / 8 (8 rows of 16 bytes, anywhere), and register i of lane (g, c) receives row g, columns 2c
// and 2c + 1 of block i (with .trans: of the block's transpose, i.e. column g, rows 2c and 2c + 1).
__device__ static inline void ldmatrix_x4(uint32_t r[4], const __nv_bfloat16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ static inline void ldmatrix_x4_trans(uint32_t r[4], const __nv_bfloat16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
// The A fragment of rows r .. r + 15, columns k .. k + 15 of a row-major bf16 matrix in shared
// memory: block i is rows r + 8 (i & 1), columns k + 8 (i >> 1), lane l giving row l % 8 of block
// l / 8; so register i holds row g + 8 (i & 1), columns k + 2c + 8 (i >> 1) and the next, the A
// layout above.
__device__ static inline void frag_a(uint32_t a[4], const __nv_bfloat16 *x, int ld, int r, int k, int lane) {
    ldmatrix_x4(a, x + (r + (lane >> 3 & 1) * 8 + (lane & 7)) * ld + k + (lane >> 4) * 8);
}
// The B fragments of columns 8n .. 8n + 15 (two fragments: b[0..1] and b[2..3]) of rows k ..
// k + 15 of B = x^T, x [n][k] row-major in shared memory (k along x's rows, as K in Q K^T): block
// i is rows 8 (n + (i >> 1)) of x, columns k + 8 (i & 1), lane l giving row l % 8 of block l / 8;
// so register i holds B's column g of tile n + (i >> 1), rows 2c + 8 (i & 1) and the next.
__device__ static inline void frag_b(uint32_t b[4], const __nv_bfloat16 *x, int ld, int k, int n, int lane) {
    ldmatrix_x4(b, x + ((n + (lane >> 4)) * 8 + (lane & 7)) * ld + k + (lane >> 3 & 1) * 8);
}
// The A fragment of rows r .. r + 15, columns k .. k + 15 of A = x^T, x [k][r] row-major in
// shared memory (k down A's columns, as dS^T stored [key][query] for dS K): ldmatrix.x4.trans,
// block i is rows k + 8 (i >> 1) of x, columns r + 8 (i & 1), lane l giving row l % 8 of block
// l / 8; so register i holds A's row g + 8 (i & 1), columns k + 2c + 8 (i >> 1) and the next.
__device__ static inline void frag_a_trans(uint32_t a[4], const __nv_bfloat16 *x, int ld, int r, int k, int lane) {
    ldmatrix_x4_trans(a, x + (k + (lane >> 4) * 8 + (lane & 7)) * ld + r + (lane >> 3 & 1) * 8);
}
// C fragments n and n + 1 of a 16-row product, as the A fragment of its columns 8n .. 8n + 15.
__device__ static inline void frag_a_of_c(uint32_t a[4], const float c0[4], const float c1[4]) {
    a[0] = bf16_pair(c0[0], c0[1]);
    a[1] = bf16_pair(c0[2], c0[3]);
    a[2] = bf16_pair(c1[0], c1[1]);
    a[3] = bf16_pair(c1[2], c1[3]);
}
// The B fragments of columns 8n .. 8n + 15 (two fragments: b[0..1] and b[2..3]) of rows k ..
// k + 15 of a row-major bf16 matrix x [k][n] in shared memory: ldmatrix.x4.trans, lane l giving
// the address of row l % 8 of block l / 8 (blocks: rows k and k + 8, columns 8n and 8n + 8).
__device__ static inline void frag_b_trans(uint32_t b[4], const __nv_bfloat16 *x, int ld, int k, int n, int lane) {
    ldmatrix_x4_trans(b, x + (k + (lane >> 3 & 1) * 8 + (lane & 7)) * ld + (n + (lane >> 4)) * 8);
}
// acc[i] (row tile i < MT: 16 rows x HDP columns of C fragments) += a[i] B, a[i] a 16 x 16 A
// fragment, B rows k .. k + 15 of a row-major [.][HDP] matrix in shared memory; each B fragment
// read serves all MT row tiles (O += P V in the forward, FLASH_FORWARD_MT; dQ += dS K with MT = 1).
template <int HDP, int MT>
__device__ static inline void mma_a_tiles(float acc[][HDP / 8][4], const uint32_t a[][4], const __nv_bfloat16 *b, int ld, int k,
                                          int lane) {
#pragma unroll
    for (int n = 0; n < HDP / 8; n += 2) {
        uint32_t bf[4];
        frag_b_trans(bf, b, ld, k, n, lane);
#pragma unroll
        for (int i = 0; i < MT; i++) {
            mma_16816(acc[i][n], a[i], bf[0], bf[1]);
            mma_16816(acc[i][n + 1], a[i], bf[2], bf[3]);
        }
    }
}

// cp.async: 16 (or 4) bytes global -> shared without passing through registers; commit closes a
// group of copies, wait<n> waits until at most n groups are in flight (the thread's own copies of
// the older groups are then in shared memory, others' after a barrier). .cg (through L2 only) takes
// only 16 bytes; 4 go through .ca.
__device__ static inline void cp_async16(void *dst, const void *src) {
    unsigned a = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(src));
}
__device__ static inline void cp_async4(void *dst, const void *src) {
    unsigned a = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(a), "l"(src));
}
__device__ static inline void cp_async_commit(void) { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ static inline void cp_async_wait(void) { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// Shared memory of the forward: K and V [64][HDP + 8], twice (double buffering); of the backward:
// K, V, then Q, dO twice, as [64][HDP + 8], dS^T [64][64 + 8], lse and Delta of 64 queries twice,
// and the (h, q0) of both buffers' tiles. Every part is a multiple of 16 bytes.
__host__ __device__ static size_t flash_forward_smem(int hdp) { return (size_t)4 * FLASH_T * (hdp + 8) * 2; }
__host__ __device__ static size_t flash_backward_smem(int hdp) {
    return (size_t)6 * FLASH_T * (hdp + 8) * 2 + FLASH_T * FLASH_LDS * 2 + 4 * FLASH_T * 4 + 4 * 4;
}

// Rows r0 .. r0+63 of head hh of x[B,T,NH,hd] (bf16) into the tile [64][hdp] (rows ld apart),
// zeros past T and past hd. A thread takes 8 dims (16 bytes) at a time: with vec (hd % 8 == 0 and
// x 16-byte aligned) one cp.async, otherwise element by element.
__device__ static void flash_stage(__nv_bfloat16 *tile, int ld, int hdp, const __nv_bfloat16 *x, int b, int r0, int T,
                                   int NH, int hh, int hd, int vec) {
    int chunks = hdp / 8;
    for (int e = threadIdx.x; e < FLASH_T * chunks; e += blockDim.x) {
        int r = e / chunks, i = e % chunks * 8, t = r0 + r;
        __nv_bfloat16 *dst = tile + r * ld + i;
        const __nv_bfloat16 *src = x + (((int64_t)b * T + t) * NH + hh) * hd + i;
        if (vec && t < T && i < hd) cp_async16(dst, src);
        else
            for (int j = 0; j < 8; j++) dst[j] = t < T && i + j < hd ? src[j] : __float2bfloat16_rn(0.0f);
    }
}

// flash_stage where the whole tile is below T, hd = HDP and vec holds (so every copy is a whole
// 16-byte cp.async): thread i copies dims 8 (i % (HDP / 8)) .. + 7 of rows i / (HDP / 8) + 128 /
// (HDP / 8) p, the same dims in every row, so its copies lie at fixed strides (row elements a key
// row) from src, the first of them. flash_stage's division and bounds tests cost ~40 instructions
// a copy (sm_90 SASS); these ~8, mostly 64-bit addresses.
template <int HDP>
__device__ static inline void flash_stage_full(__nv_bfloat16 *tile, const __nv_bfloat16 *src, int64_t row) {
    const int CH = HDP / 8, RP = FLASH_THREADS / CH;  // 16-byte chunks a row, rows a pass
    __nv_bfloat16 *dst = tile + threadIdx.x / CH * (HDP + 8) + threadIdx.x % CH * 8;
#pragma unroll
    for (int p = 0; p < FLASH_T / RP; p++) cp_async16(dst + p * RP * (HDP + 8), src + p * RP * row);
}
// Rows r0 .. r0 + 63 of head hh of x and of y, both [B,T,NH,hd], into the tiles at xs and, after
// it, xs + 64 (HDP + 8): the forward's K and V; the backward's K and V, and Q and dO.
template <int HDP>
__device__ static inline void flash_stage_pair(__nv_bfloat16 *xs, const __nv_bfloat16 *x, const __nv_bfloat16 *y, int b, int r0,
                                               int T, int NH, int hh, int hd, int vec) {
    __nv_bfloat16 *ys = xs + FLASH_T * (HDP + 8);
    if (vec && hd == HDP && r0 + FLASH_T <= T) {
        int64_t row = (int64_t)NH * HDP,  // from one row t to the next; this thread's first chunk:
            first = (((int64_t)b * T + r0 + threadIdx.x / (HDP / 8)) * NH + hh) * HDP + threadIdx.x % (HDP / 8) * 8;
        flash_stage_full<HDP>(xs, x + first, row);
        flash_stage_full<HDP>(ys, y + first, row);
    } else {
        flash_stage(xs, HDP + 8, HDP, x, b, r0, T, NH, hh, hd, vec);
        flash_stage(ys, HDP + 8, HDP, y, b, r0, T, NH, hh, hd, vec);
    }
}

// Thread mapping: a block owns BQ = 64 MT consecutive queries q0.. of one (b, h) (MT =
// FLASH_FORWARD_MT(HDP)), the blocks of the last query tiles (the most keys) first; warp w owns
// the MT row tiles q0 + 64 i + 16 w .. + 15 (i < MT; FlashAttention-2's interleave, so that at
// MT = 2, in a block's last key tile, j0 = q0 + 64, every warp has one tile wholly masked and one
// on the diagonal, the same work): their Q fragments (read once from global memory), their S fragments
// for a tile of 64 keys (8 of 8 keys each), their O accumulators (HDP / 8 of 8 dims each), and
// each lane the running max and sum of its 2 MT rows. The block shares the K and V tiles, the next
// pair loading while the warps work on the current one; each K and V fragment a warp reads feeds
// its MT row tiles. Key tiles run to the last key of the block's last row below T (rows past T
// are computed but not written).
template <int HDP, typename Ot>
__global__ static void __launch_bounds__(FLASH_THREADS, HDP == 64 ? FLASH_FORWARD_BLOCKS : sizeof(Ot) == 2 ? 3 : 0)
attention_forward_flash_kernel(Ot *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                               const __nv_bfloat16 *v, int B, int T, int H, int KV, int hd, int vec) {
    const int MT = FLASH_FORWARD_MT(HDP), BQ = MT * FLASH_T, LD = HDP + 8, TILE = FLASH_T * LD;
    extern __shared__ __align__(16) unsigned char flash_sm[];
    __nv_bfloat16 *sm = (__nv_bfloat16 *)flash_sm;  // buffer u: K at sm + 2 u TILE, V after it
    int tiles = (T + BQ - 1) / BQ, bh = blockIdx.x % (B * H), b = bh / H, h = bh % H, kvh = h / (H / KV);
    int q0 = (tiles - 1 - blockIdx.x / (B * H)) * BQ, lane = threadIdx.x % 32, r0 = threadIdx.x / 32 * 16;
    int g = lane / 4, c = lane % 4, last = min(q0 + BQ, T) - 1;  // the last key of the last row below T
    float scale2 = 1.4426950408889634f / sqrtf((float)hd);  // log2(e) / sqrt(hd)
    flash_stage_pair<HDP>(sm, k, v, b, 0, T, KV, kvh, hd, vec);
    cp_async_commit();
    uint32_t qf[MT][HDP / 16][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int kk = 0; kk < HDP / 16; kk++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int t = q0 + FLASH_T * i + r0 + g + 8 * (e & 1), d = kk * 16 + 2 * c + 8 * (e >> 1);
                const __nv_bfloat16 *src = q + (((int64_t)b * T + t) * H + h) * hd + d;
                qf[i][kk][e] = bf16_pair(t < T && d < hd ? __bfloat162float(src[0]) : 0.0f,
                                         t < T && d + 1 < hd ? __bfloat162float(src[1]) : 0.0f);
            }
    float o[MT][HDP / 8][4], m[MT][2], l[MT][2];
#pragma unroll
    for (int i = 0; i < MT; i++) {
        m[i][0] = m[i][1] = -INFINITY;
        l[i][0] = l[i][1] = 0.0f;
#pragma unroll
        for (int n = 0; n < HDP / 8; n++) o[i][n][0] = o[i][n][1] = o[i][n][2] = o[i][n][3] = 0.0f;
    }
    for (int j0 = 0, u = 0; j0 <= last; j0 += FLASH_T, u ^= 1) {
        if (j0 + FLASH_T <= last)  // the next tile into the other buffer (consumed: the barrier below)
            flash_stage_pair<HDP>(sm + 2 * (u ^ 1) * TILE, k, v, b, j0 + FLASH_T, T, KV, kvh, hd, vec);
        cp_async_commit();
        cp_async_wait<1>();  // this tile's copies are done (the next tile's may still run)
        __syncthreads();
        const __nv_bfloat16 *ks = sm + 2 * u * TILE, *vs = ks + TILE;
        // S = Q K^T, 16 keys at a time (K's rows are the columns of K^T, k runs along them: frag_b),
        // each K fragment into the MT row tiles
        float s[MT][FLASH_T / 8][4];
#pragma unroll
        for (int n = 0; n < FLASH_T / 8; n += 2) {
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[i][n][e] = s[i][n + 1][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HDP / 16; kk++) {
                uint32_t bk[4];
                frag_b(bk, ks, LD, kk * 16, n, lane);
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    mma_16816(s[i][n], qf[i][kk], bk[0], bk[1]);
                    mma_16816(s[i][n + 1], qf[i][kk], bk[2], bk[3]);
                }
            }
        }
        // the online softmax of the lane's 2 MT rows, on the raw scores s: the max first (keys j > t
        // masked, which only the tiles j0 >= q0 have, in the others every j < q0 <= t; keys past T
        // among them for every row t < T), then scaled, m_new = max(m, scale2 max_j s_tj) (scaling by
        // scale2 > 0 commutes with max, rounding included: the same max as of the scaled scores), and
        // p_tj = exp2(s_tj scale2 - m_new) as one FFMA into the exp2 (FlashAttention-2's folding;
        // exp2_ftz: one instruction)
        int diag = j0 + FLASH_T > q0;
        uint32_t pa[MT][FLASH_T / 16][4];  // P as the A fragments of P V
#pragma unroll
        for (int i = 0; i < MT; i++) {
            float mx[2] = {-INFINITY, -INFINITY}, corr[2];
#pragma unroll
            for (int n = 0; n < FLASH_T / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    if (diag && j0 + n * 8 + 2 * c + (e & 1) > q0 + FLASH_T * i + r0 + g + 8 * (e >> 1)) s[i][n][e] = -INFINITY;
                    mx[e >> 1] = fmaxf(mx[e >> 1], s[i][n][e]);
                }
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
                float mn = fmaxf(m[i][r], mx[r] * scale2);
                if (mn == -INFINITY) mn = 0.0f;  // no key yet (cannot happen: key 0 is in tile 0): no NaN
                corr[r] = exp2_ftz(m[i][r] - mn);
                m[i][r] = mn;
                l[i][r] *= corr[r];
            }
#pragma unroll
            for (int n = 0; n < FLASH_T / 8; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    s[i][n][e] = exp2_ftz(fmaf(s[i][n][e], scale2, -m[i][e >> 1]));
                    l[i][e >> 1] += s[i][n][e];
                }
#pragma unroll
            for (int n = 0; n < HDP / 8; n++) {
                o[i][n][0] *= corr[0]; o[i][n][1] *= corr[0];
                o[i][n][2] *= corr[1]; o[i][n][3] *= corr[1];
            }
#pragma unroll
            for (int kk = 0; kk < FLASH_T / 16; kk++) frag_a_of_c(pa[i][kk], s[i][2 * kk], s[i][2 * kk + 1]);
        }
        // O += P V, 16 keys at a time (k runs down V's columns: ldmatrix .trans), each V fragment
        // into the MT row tiles
        uint32_t pk[MT][4];
#pragma unroll
        for (int kk = 0; kk < FLASH_T / 16; kk++) {
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int e = 0; e < 4; e++) pk[i][e] = pa[i][kk][e];
            mma_a_tiles<HDP, MT>(o, pk, vs, LD, kk * 16, lane);
        }
        __syncthreads();  // every warp is done with this buffer before it is loaded again
    }
#pragma unroll
    for (int i = 0; i < MT; i++) {
#pragma unroll
        for (int r = 0; r < 2; r++) {
            l[i][r] += __shfl_xor_sync(0xffffffffu, l[i][r], 1);
            l[i][r] += __shfl_xor_sync(0xffffffffu, l[i][r], 2);
        }
        float inv[2] = {1.0f / l[i][0], 1.0f / l[i][1]};  // out = O / l as O (1 / l): a division a row, not an element
#pragma unroll
        for (int n = 0; n < HDP / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int t = q0 + FLASH_T * i + r0 + g + 8 * (e >> 1), d = n * 8 + 2 * c + (e & 1);
                if (t < T && d < hd) store_w(&out[(((int64_t)b * T + t) * H + h) * hd + d], o[i][n][e] * inv[e >> 1]);
            }
        if (c == 0)
            for (int r = 0; r < 2; r++) {
                int t = q0 + FLASH_T * i + r0 + g + 8 * r;
                if (t < T) lse[((int64_t)b * H + h) * T + t] = (m[i][r] + log2f(l[i][r])) * 0.6931471805599453f;
            }
    }
}

// The backward (FlashAttention-2's split): with p_tj = exp(s_tj - lse_t) recomputed,
// Delta_t = dO_t . O_t, dP_tj = dO_t . v_j and dS_tj = p_tj (dP_tj - Delta_t),
//   dq_t += scale sum_j dS_tj k_j,  dk_j += scale sum_t dS_tj q_t,  dv_j += sum_t p_tj dO_t.
// Delta first (one warp per (b, h, t), lanes over dims); then one kernel over tiles of keys.
template <typename Ot>
__global__ static void attention_delta_kernel(float *delta, const Ot *dout, const Ot *out, int B, int T, int H, int hd) {
    int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;  // (b, h, t)
    if (row >= (int64_t)B * H * T) return;
    float d = attention_row_delta(dout, out, row, T, H, hd);
    if (threadIdx.x % 32 == 0) delta[row] = d;
}
// bf16 dO and O with rows of 16-byte words, hd / 8 a power of two up to 32 (every real shape):
// G = hd / 8 lanes a row, each one word of dO and one of O, summed over the G lanes by shuffles
// (a warp takes 32 / G rows; a lane's 4-byte loads above left the kernel at a fifth of the memory's
// bandwidth).
__global__ static void attention_delta_x8_kernel(float *delta, const __nv_bfloat16 *dout, const __nv_bfloat16 *out, int B,
                                                 int T, int H, int hd) {
    int G = hd / 8;
    int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, row = g / G;  // (b, h, t)
    int j = (int)(g % G);
    float d = 0.0f;
    if (row < (int64_t)B * H * T) {  // no return before the shuffles: every lane of the warp takes part
        int t = (int)(row % T), h = (int)(row / T % H), b = (int)(row / ((int64_t)T * H));
        int64_t qi = (((int64_t)b * T + t) * H + h) * hd + 8 * j;
        float a[8], o[8];
        bf16x8_load(a, dout + qi);
        bf16x8_load(o, out + qi);
#pragma unroll
        for (int e = 0; e < 8; e++) d += a[e] * o[e];
    }
    for (int s = G / 2; s > 0; s >>= 1) d += __shfl_xor_sync(0xffffffffu, d, s);
    if (row < (int64_t)B * H * T && j == 0) delta[row] = d;
}

// Q and dO of the query tile q0 of head h into a buffer of the backward at qs (dO after Q), and its
// lse and Delta at ls (Delta after lse): thread i < 64 copies lse_t of t = q0 + i, thread 64 + i
// Delta_t, each one 4-byte cp.async (no registers, no wait for global memory here); past T, zero
// rows of Q and dO, lse +inf (p = exp2(x - inf) = 0) and Delta 0. lse is copied as the forward
// wrote it, in nats: the thread that copied it makes it base 2 once its copy has landed
// (flash_lse_base2).
static_assert(FLASH_THREADS == 2 * FLASH_T, "a thread for each lse and each Delta of a query tile");
template <int HDP>
__device__ static inline void flash_stage_queries(__nv_bfloat16 *qs, float *ls, const __nv_bfloat16 *q,
                                                  const __nv_bfloat16 *dout, const float *lse, const float *delta, int b,
                                                  int h, int q0, int T, int H, int hd, int vec) {
    flash_stage_pair<HDP>(qs, q, dout, b, q0, T, H, h, hd, vec);
    int i = threadIdx.x, t = q0 + i % FLASH_T;
    if (t < T) cp_async4(ls + i, (i < FLASH_T ? lse : delta) + ((int64_t)b * H + h) * T + t);
    else ls[i] = i < FLASH_T ? INFINITY : 0.0f;
}
// lse2 = lse log2(e) in place, by the thread that copied it (so its cp.async group must have been
// waited for), before the barrier after which the warps read it.
__device__ static inline void flash_lse_base2(float *ls) {
    if (threadIdx.x < FLASH_T) ls[threadIdx.x] *= 1.4426950408889634f;
}

// Thread mapping: a block owns 64 consecutive keys j0.. of one (b, kv head) and one of `splits`
// equal parts of the query heads of its group (flash_backward_splits); the blocks of the first key
// tiles (the most queries) come first. It walks its heads and every tile of 64 queries q0 >= j0,
// the next tile loading while the warps work on the current one.
// Warp w owns keys j0 + 16 w .. + 15: its fragments of S^T = K Q^T and dP^T = V dO^T (8 of 8
// queries each, 4 at a time), from which P^T and dS^T are made in place and used as the A
// fragments of dV += P^T dO and dK += dS^T Q; it keeps its dK and dV accumulators (HDP / 8 of 8
// dims each) over the whole walk, so with GQA the heads of a group add to them in turn, no
// atomics; part 0 adds them to dk and dv, part s > 0 stores them in slice s - 1 of `parts`
// ([splits - 1][2][B,T,KV,hd], dk's then dv's), which flash_parts_add_kernel adds to dk and dv after.
// The dQ of a query tile needs every warp's keys: the warps write dS^T ([key][query]) to
// shared memory, and after a barrier warp w takes queries q0 + 16 w .. + 15, dQ = dS K over the
// block's 64 keys, and adds them to dq with atomicAdd, since the blocks of other key tiles add to
// the same rows.
template <int HDP>
__global__ static void __launch_bounds__(FLASH_THREADS, HDP == 64 ? FLASH_BACKWARD_BLOCKS : 0)
attention_backward_flash_kernel(float *dq, float *dk, float *dv, const float *delta, const __nv_bfloat16 *dout,
                                const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                const float *lse, float *parts, int splits, int B, int T, int H, int KV, int hd, int vec) {
    const int LD = HDP + 8, TILE = FLASH_T * LD;
    extern __shared__ __align__(16) unsigned char flash_sm[];
    __nv_bfloat16 *ks = (__nv_bfloat16 *)flash_sm, *vs = ks + TILE, *qd = vs + TILE,  // buffer u: Q at qd + 2 u TILE, dO after it
                  *dss = qd + 4 * TILE;
    float *ld2 = (float *)(dss + FLASH_T * FLASH_LDS);  // buffer u: lse2 at ld2 + 2 u FLASH_T, Delta after it
    int *walk = (int *)(ld2 + 4 * FLASH_T);             // buffer u: its tile's h and q0 at walk + 2 u
    int per_tile = B * KV * splits, bk = blockIdx.x % per_tile / splits, b = bk / KV, kvh = bk % KV;
    int j0 = blockIdx.x / per_tile * FLASH_T, heads = H / KV / splits, h0 = kvh * (H / KV) + blockIdx.x % splits * heads;
    int lane = threadIdx.x % 32, r0 = threadIdx.x / 32 * 16, g = lane / 4, c = lane % 4;
    int nq = (T - j0 + FLASH_T - 1) / FLASH_T;  // query tiles q0 = j0, j0 + 64, .. of every head of the group
    float scale = 1.0f / sqrtf((float)hd), scale2 = 1.4426950408889634f * scale;
    int full2 = hd == HDP && (uintptr_t)dq % 8 == 0;  // no padded dims, dq's pairs (t, 2i) 8-byte aligned
    flash_stage_pair<HDP>(ks, k, v, b, j0, T, KV, kvh, hd, vec);
    flash_stage_queries<HDP>(qd, ld2, q, dout, lse, delta, b, h0, j0, T, H, hd, vec);
    cp_async_commit();
    // The walk's place, the head h and first query q0 of the tile in buffer u, is written beside the
    // tile when it is staged and read back after the barriers: not held in registers through the
    // tile (the kernel is at its cap of 168; two more spill), nor recomputed from the tile count it
    // as it / nq and it % nq (a division, ~25 instructions, at the top and again for dQ).
    if (threadIdx.x == 0) walk[0] = h0, walk[1] = j0;
    __syncthreads();
    float dkf[HDP / 8][4], dvf[HDP / 8][4];
#pragma unroll
    for (int n = 0; n < HDP / 8; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dkf[n][e] = dvf[n][e] = 0.0f;
    for (int it = 0, u = 0, steps = heads * nq; it < steps; it++, u ^= 1) {
        int h = walk[2 * u], q0 = walk[2 * u + 1];
        if (it + 1 < steps) {  // the next tile into the other buffer (consumed: the last barrier)
            int hn = h, qn = q0 + FLASH_T;  // the head's next query tile, else the next head's first
            if (qn >= T) hn++, qn = j0;
            if (threadIdx.x == 0) walk[2 * (u ^ 1)] = hn, walk[2 * (u ^ 1) + 1] = qn;
            flash_stage_queries<HDP>(qd + 2 * (u ^ 1) * TILE, ld2 + 2 * (u ^ 1) * FLASH_T, q, dout, lse, delta, b, hn, qn, T, H,
                                     hd, vec);
        }
        cp_async_commit();
        cp_async_wait<1>();  // this tile's copies are done (the next tile's may still run)
        flash_lse_base2(ld2 + 2 * u * FLASH_T);
        __syncthreads();
        const __nv_bfloat16 *qs = qd + 2 * u * TILE, *dos = qs + TILE;
        const float *lse2 = ld2 + 2 * u * FLASH_T, *dl = lse2 + FLASH_T;
        // S^T = K Q^T and dP^T = V dO^T, the warp's 16 keys by 64 queries, in two halves of 32
        // queries (n0 = 0, 4 of the 8-query column tiles): only one half's fp32 accumulators are
        // live at a time, the other's already packed to bf16 below, which keeps the kernel within
        // the registers of 3 blocks a SM (K's and V's A fragments are read once a half).
        uint32_t pp[FLASH_T / 8][2], ds[FLASH_T / 8][2];
#pragma unroll
        for (int n0 = 0; n0 < FLASH_T / 8; n0 += FLASH_T / 16) {
            float st[FLASH_T / 16][4], dpt[FLASH_T / 16][4];
#pragma unroll
            for (int n = 0; n < FLASH_T / 16; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) st[n][e] = dpt[n][e] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HDP / 16; kk++) {
                uint32_t ka[4], va[4];
                frag_a(ka, ks, LD, r0, kk * 16, lane);
                frag_a(va, vs, LD, r0, kk * 16, lane);
#pragma unroll
                for (int n = 0; n < FLASH_T / 16; n += 2) {
                    uint32_t bq[4], bd[4];
                    frag_b(bq, qs, LD, kk * 16, n0 + n, lane);
                    frag_b(bd, dos, LD, kk * 16, n0 + n, lane);
                    mma_16816(st[n], ka, bq[0], bq[1]);
                    mma_16816(st[n + 1], ka, bq[2], bq[3]);
                    mma_16816(dpt[n], va, bd[0], bd[1]);
                    mma_16816(dpt[n + 1], va, bd[2], bd[3]);
                }
            }
            // P^T and dS^T = P^T (dP^T - Delta), zero where t >= T (lse is +inf there) and where
            // t < j, which only the diagonal tile q0 = j0 has; kept as the bf16 pairs that the A
            // fragments below take (frag_a_of_c's packing: pp[n][h] and ds[n][h] hold row g + 8h
            // of column tile n); dS^T also to shared memory as [key][query], a pair one word. The
            // lane's elements of tile n are queries 8n + 2c and the next (e & 1), whose lse and
            // Delta it reads as one pair each. p = exp2(s scale2 - lse2): one FFMA into exp2_ftz,
            // as in the forward (exp2f's range test and two multiplies were 3 of its 4 instructions).
#pragma unroll
            for (int n = 0; n < FLASH_T / 16; n++) {
                int tt = (n0 + n) * 8 + 2 * c;
                float2 l2 = *(const float2 *)(lse2 + tt), d2 = *(const float2 *)(dl + tt);
                float p[4], d[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int jj = r0 + g + 8 * (e >> 1);
                    p[e] = q0 == j0 && tt + (e & 1) < jj ? 0.0f : exp2_ftz(fmaf(st[n][e], scale2, -(e & 1 ? l2.y : l2.x)));
                    d[e] = p[e] * (dpt[n][e] - (e & 1 ? d2.y : d2.x));
                }
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    pp[n0 + n][h] = bf16_pair(p[2 * h], p[2 * h + 1]);
                    ds[n0 + n][h] = bf16_pair(d[2 * h], d[2 * h + 1]);
                    *(uint32_t *)(dss + (r0 + g + 8 * h) * FLASH_LDS + tt) = ds[n0 + n][h];
                }
            }
        }
        // dV += P^T dO and dK += dS^T Q (times scale at the end), 16 queries at a time (k runs
        // down dO's and Q's columns: ldmatrix .trans)
#pragma unroll
        for (int kk = 0; kk < FLASH_T / 16; kk++) {
            uint32_t pa[4] = {pp[2 * kk][0], pp[2 * kk][1], pp[2 * kk + 1][0], pp[2 * kk + 1][1]};
            uint32_t da[4] = {ds[2 * kk][0], ds[2 * kk][1], ds[2 * kk + 1][0], ds[2 * kk + 1][1]};
#pragma unroll
            for (int n = 0; n < HDP / 8; n += 2) {
                uint32_t bo[4], bq[4];
                frag_b_trans(bo, dos, LD, kk * 16, n, lane);
                frag_b_trans(bq, qs, LD, kk * 16, n, lane);
                mma_16816(dvf[n], pa, bo[0], bo[1]);
                mma_16816(dvf[n + 1], pa, bo[2], bo[3]);
                mma_16816(dkf[n], da, bq[0], bq[1]);
                mma_16816(dkf[n + 1], da, bq[2], bq[3]);
            }
        }
        __syncthreads();  // every warp's part of dS is written
        h = walk[2 * u], q0 = walk[2 * u + 1];  // read again (a load after the barrier: no registers held)
        // dQ of the warp's 16 queries = scale dS K, over the block's 64 keys (k runs down the
        // columns of dS^T and of K: ldmatrix .trans for both)
        float dqf[HDP / 8][4];
#pragma unroll
        for (int n = 0; n < HDP / 8; n++) dqf[n][0] = dqf[n][1] = dqf[n][2] = dqf[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < FLASH_T / 16; kk++) {
            uint32_t a[4];
            frag_a_trans(a, dss, FLASH_LDS, r0, kk * 16, lane);
            mma_a_tiles<HDP, 1>(&dqf, &a, ks, LD, kk * 16, lane);
        }
        // to dq, the lane's two rows t one address each; its dims d = 8n + 2c and d + 1 as one
        // 8-byte atomic where every dim is real and the pairs aligned (full2), one by one else
#pragma unroll
        for (int r = 0; r < 2; r++) {
            int t = q0 + r0 + g + 8 * r;
            if (t >= T) continue;
            float *row = dq + (((int64_t)b * T + t) * H + h) * hd + 2 * c;
            if (full2) {
#pragma unroll
                for (int n = 0; n < HDP / 8; n++)
                    atomicAdd((float2 *)(row + n * 8), make_float2(scale * dqf[n][2 * r], scale * dqf[n][2 * r + 1]));
            } else {
#pragma unroll
                for (int n = 0; n < HDP / 8; n++) {
                    if (n * 8 + 2 * c < hd) atomicAdd(row + n * 8, scale * dqf[n][2 * r]);
                    if (n * 8 + 2 * c + 1 < hd) atomicAdd(row + n * 8 + 1, scale * dqf[n][2 * r + 1]);
                }
            }
        }
        __syncthreads();  // every warp is done with this buffer and with dS before they are written again
    }
    // dk, dv of the warp's 16 keys: added to dk and dv (part 0), or stored in the part's slice;
    // dk's first, then dv's (one output pointer and one set of accumulators live at a time: the
    // kernel is at its cap of registers)
    int part = blockIdx.x % splits;
    int64_t nk = (int64_t)B * T * KV * hd;
    float *o = part ? parts + (part - 1) * 2 * nk : dk;
    for (int x = 0; x < 2; x++) {
#pragma unroll
        for (int n = 0; n < HDP / 8; n++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int j = j0 + r0 + g + 8 * (e >> 1), d = n * 8 + 2 * c + (e & 1);
                if (j < T && d < hd) {
                    int64_t i = (((int64_t)b * T + j) * KV + kvh) * hd + d;
                    o[i] = (part ? 0.0f : o[i]) + (x ? dvf[n][e] : scale * dkf[n][e]);
                }
            }
        o = part ? o + nk : dv;
    }
}

// dk += parts' dk slices and dv += their dv slices, slice 0 first (the same sums every run).
// Thread mapping: one thread per element of dk (n of them) and its dv element.
__global__ static void flash_parts_add_kernel(float *dk, float *dv, const float *parts, int slices, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float a = dk[i], b = dv[i];
    for (int s = 0; s < slices; s++) {
        a += parts[2 * s * n + i];
        b += parts[(2 * s + 1) * n + i];
    }
    dk[i] = a;
    dv[i] = b;
}
static float *g_flash_parts;  // the slices (flash_backward_splits - 1 of them), grown as needed
static int64_t g_flash_parts_n;

// How many parts the flash backward splits each group's query heads into. A block's work grows
// with the query tiles after its key tile, so the blocks of key tile 0 have the most, tiles x
// (H / KV) / splits tile steps, and the kernel takes at least as long as they do; the average
// over the blocks the GPU runs at once (`slots`) is B KV (H / KV) tiles (tiles + 1) / 2 / slots. The
// fewest parts (a divisor of H / KV) that bring the first within the second: splits >=
// 2 slots / (B KV (tiles + 1)). On the benchmark's step (B 8, KV 4, 16 tiles, 396 slots) that is
// 2: unsplit, the blocks of key tile 0 have 128 tile steps, against an average of 88 a slot (by
// the counts above; ncu: 0.73-0.75 ms a call unsplit, 0.65 in 2 parts).
static int flash_backward_splits(int B, int T, int H, int KV, int slots) {
    int group = H / KV, tiles = (T + FLASH_T - 1) / FLASH_T, s = 1;
    while (s < group && (int64_t)s * B * KV * (tiles + 1) < 2LL * slots) {
        s++;
        while (group % s) s++;
    }
    return s;
}
// The same for this GPU: its slots are its multiprocessors times the blocks of the kernel for hd
// that fit on one (3 at head_dim <= 64). Sets the kernel's shared memory size on the way.
static int flash_backward_parts(int B, int T, int H, int KV, int hd) {
    const void *kernel = hd <= 64 ? (const void *)attention_backward_flash_kernel<64> : (const void *)attention_backward_flash_kernel<128>;
    size_t smem = flash_backward_smem(hd <= 64 ? 64 : 128);
    int sms, l2, per_sm;
    attention_shared(kernel, smem);
    gpu_limits(&sms, &l2);
    cudaCheck(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, FLASH_THREADS, smem));
    return flash_backward_splits(B, T, H, KV, sms * (per_sm > 0 ? per_sm : 1));
}

static void flash_check_hd(int hd) {
    if (hd > FLASH_MAX_HD) fail("head_dim %d: --attention flash takes head_dim up to %d; use --attention gemm", hd, FLASH_MAX_HD);
}

template <int HDP, typename Ot>
static void flash_forward_launch(Ot *out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                 const __nv_bfloat16 *v, int B, int T, int H, int KV, int hd) {
    int bq = FLASH_FORWARD_MT(HDP) * FLASH_T, blocks = B * H * ((T + bq - 1) / bq), vec = aligned_x8(hd, q, k, v, v);
    attention_shared((const void *)attention_forward_flash_kernel<HDP, Ot>, flash_forward_smem(HDP));
    attention_forward_flash_kernel<HDP><<<blocks, FLASH_THREADS, flash_forward_smem(HDP)>>>(out, lse, q, k, v, B, T, H, KV, hd, vec);
    launchCheck();
}

// q, k, v: the bf16 copies (layer_forward makes them after RoPE). out: an Act (bf16 under
// --matmul bf16: act_bf16).
static void attention_forward_flash(Act out, float *lse, const __nv_bfloat16 *q, const __nv_bfloat16 *k,
                                    const __nv_bfloat16 *v, int B, int T, int H, int KV, int hd) {
    PROFILE(PROF_ATTENTION);
    flash_check_hd(hd);
    if (hd <= 64 && out.h) flash_forward_launch<64>(out.h, lse, q, k, v, B, T, H, KV, hd);
    else if (hd <= 64) flash_forward_launch<64>(out.f, lse, q, k, v, B, T, H, KV, hd);
    else if (out.h) flash_forward_launch<128>(out.h, lse, q, k, v, B, T, H, KV, hd);
    else flash_forward_launch<128>(out.f, lse, q, k, v, B, T, H, KV, hd);
}

// dout, out: Acts, both fp32 or both bf16 (act_bf16); Delta from them, and the products from
// dout in bf16, rounded once here when it is fp32.
static void attention_backward_flash(float *dq, float *dk, float *dv, float *delta, Act dout,
                                     const __nv_bfloat16 *q, const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                     Act out, const float *lse, int B, int T, int H, int KV, int hd) {
    PROFILE(PROF_ATTENTION);
    flash_check_hd(hd);
    if (!dout.h != !out.h) fail("internal: the flash backward's dO and O in different precisions");
    int G = hd / 8;
    if (dout.h && aligned_x8(hd, dout.h, out.h, out.h, out.h) && (G & (G - 1)) == 0 && G <= 32)
        attention_delta_x8_kernel<<<blocks_for((int64_t)B * H * T * G, 256), 256>>>(delta, dout.h, out.h, B, T, H, hd);
    else if (dout.h) attention_delta_kernel<<<blocks_for((int64_t)B * H * T, 8), 256>>>(delta, dout.h, out.h, B, T, H, hd);
    else attention_delta_kernel<<<blocks_for((int64_t)B * H * T, 8), 256>>>(delta, dout.f, out.f, B, T, H, hd);
    launchCheck();
    const __nv_bfloat16 *db = dout.h ? dout.h : bf16_of(&g_bf_d, &g_bf_d_n, dout.f, (int64_t)B * T * H * hd);
    int vec = aligned_x8(hd, q, k, v, db), splits = flash_backward_parts(B, T, H, KV, hd);
    int64_t nk = (int64_t)B * T * KV * hd;
    float *parts = splits > 1 ? gpu_grow(&g_flash_parts, &g_flash_parts_n, (splits - 1) * 2 * nk, "scratch") : NULL;
    int blocks = B * KV * splits * ((T + FLASH_T - 1) / FLASH_T);
    if (hd <= 64)
        attention_backward_flash_kernel<64><<<blocks, FLASH_THREADS, flash_backward_smem(64)>>>(
            dq, dk, dv, delta, db, q, k, v, lse, parts, splits, B, T, H, KV, hd, vec);
    else
        attention_backward_flash_kernel<128><<<blocks, FLASH_THREADS, flash_backward_smem(128)>>>(
            dq, dk, dv, delta, db, q, k, v, lse, parts, splits, B, T, H, KV, hd, vec);
    launchCheck();
    if (splits > 1) {
        flash_parts_add_kernel<<<blocks_for(nk, 256), 256>>>(dk, dv, parts, splits - 1, nk);
        launchCheck();
    }
}

// --- SwiGLU: h[N,F] = silu(g) * u ----------------------------------------------------------
// Thread mapping (both): one thread per element. The operands are all fp32, or all bf16
// (--matmul bf16: act_bf16 keeps h, g, u and backward dh, dg, du alike); the arithmetic is fp32.
template <typename T>
__global__ static void swiglu_forward_kernel(T *h, const T *g, const T *u, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = to_float(g[i]);
    store_w(&h[i], gi / (1.0f + expf(-gi)) * to_float(u[i]));
}
// --matmul bf16, all three in bf16 and 16-byte aligned, n % 8 == 0 (every real shape): eight
// elements a thread, moved as one 16-byte word each (the 2-byte loads of the kernel above ran at
// a third of the memory's bandwidth), the same arithmetic per element, so the same bits.
__global__ static void swiglu_forward_x8_kernel(__nv_bfloat16 *h, const __nv_bfloat16 *g, const __nv_bfloat16 *u, int64_t n8) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    float gf[8], uf[8], hf[8];
    bf16x8_load(gf, g + 8 * i);
    bf16x8_load(uf, u + 8 * i);
#pragma unroll
    for (int e = 0; e < 8; e++) hf[e] = gf[e] / (1.0f + expf(-gf[e])) * uf[e];
    bf16x8_store(h + 8 * i, hf);
}
static void swiglu_forward(Act h, Act g, Act u, int64_t n) {
    PROFILE(PROF_OTHER);
    if (!h.h != !g.h || !g.h != !u.h) fail("internal: swiglu_forward's operands in different precisions");
    if (g.h && aligned_x8(n, h.h, g.h, u.h, u.h)) swiglu_forward_x8_kernel<<<blocks_for(n / 8, 256), 256>>>(h.h, g.h, u.h, n / 8);
    else if (g.h) swiglu_forward_kernel<<<blocks_for(n, 256), 256>>>(h.h, g.h, u.h, n);
    else swiglu_forward_kernel<<<blocks_for(n, 256), 256>>>(h.f, g.f, u.f, n);
    launchCheck();
}
// dg += dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),   du += dh * silu(g).
__global__ static void swiglu_backward_kernel(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float sg = 1.0f / (1.0f + expf(-g[i]));
    dg[i] += dh[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));
    du[i] += dh[i] * g[i] * sg;
}
static void swiglu_backward(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n) {
    PROFILE(PROF_OTHER);
    swiglu_backward_kernel<<<blocks_for(n, 256), 256>>>(dg, du, dh, g, u, n);
    launchCheck();
}
// --matmul bf16: dg and du are read by the gate and up matmuls alone, so they are written in
// bf16 (no fp32 copy, no zeroing): the EXCEPTION to the layers' += rule. Each value is that of
// the += into zeroed buffers it replaces, 0 + dg (-0 becomes +0), then rounded as cast_bf16.
// dh, g, u: bf16 as their matmuls wrote them.
// Thread mapping: one thread per element.
__global__ static void swiglu_backward_bf16_kernel(__nv_bfloat16 *dg, __nv_bfloat16 *du, const __nv_bfloat16 *dh,
                                                   const __nv_bfloat16 *g, const __nv_bfloat16 *u, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = to_float(g[i]), dhi = to_float(dh[i]), sg = 1.0f / (1.0f + expf(-gi));
    dg[i] = __float2bfloat16_rn(0.0f + dhi * to_float(u[i]) * sg * (1.0f + gi * (1.0f - sg)));
    du[i] = __float2bfloat16_rn(0.0f + dhi * gi * sg);
}
// All five in bf16 and 16-byte aligned, n % 8 == 0: eight elements a thread, as swiglu_forward_x8.
__global__ static void swiglu_backward_x8_kernel(__nv_bfloat16 *dg, __nv_bfloat16 *du, const __nv_bfloat16 *dh,
                                                 const __nv_bfloat16 *g, const __nv_bfloat16 *u, int64_t n8) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    float dhf[8], gf[8], uf[8], dgf[8], duf[8];
    bf16x8_load(dhf, dh + 8 * i);
    bf16x8_load(gf, g + 8 * i);
    bf16x8_load(uf, u + 8 * i);
#pragma unroll
    for (int e = 0; e < 8; e++) {
        float sg = 1.0f / (1.0f + expf(-gf[e]));
        dgf[e] = 0.0f + dhf[e] * uf[e] * sg * (1.0f + gf[e] * (1.0f - sg));
        duf[e] = 0.0f + dhf[e] * gf[e] * sg;
    }
    bf16x8_store(dg + 8 * i, dgf);
    bf16x8_store(du + 8 * i, duf);
}
static void swiglu_backward(Act dg, Act du, Act dh, Act g, Act u, int64_t n) {
    if (!dg.h) { swiglu_backward(dg.f, du.f, dh.f, g.f, u.f, n); return; }
    PROFILE(PROF_OTHER);
    if (!du.h || !dh.h || !g.h || !u.h) fail("internal: swiglu_backward's operands in different precisions");
    if (aligned_x8(n, dg.h, du.h, dh.h, g.h) && (uintptr_t)u.h % 16 == 0)
        swiglu_backward_x8_kernel<<<blocks_for(n / 8, 256), 256>>>(dg.h, du.h, dh.h, g.h, u.h, n / 8);
    else swiglu_backward_bf16_kernel<<<blocks_for(n, 256), 256>>>(dg.h, du.h, dh.h, g.h, u.h, n);
    launchCheck();
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

// --- cross-entropy over rows with target >= 0, of full logits (model_forward) ----------------
// rows[n] = log sum_v exp(z_v - max) + max - z[target] (0 for rows without a target); the host
// averages. Its backward is section 6's fused head_loss, which training uses.
// Thread mapping: one block per row; its threads stride over the V logits.
__global__ static void crossentropy_forward_kernel(double *rows, const float *logits, const int *targets, int N, int V) {
    int n = blockIdx.x;
    if (targets[n] < 0) { if (threadIdx.x == 0) rows[n] = 0.0; return; }
    const float *z = logits + (int64_t)n * V;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, z[i]);
    mx = block_max(mx);
    double s = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += exp((double)(z[i] - mx));
    s = block_sum_d(s);
    if (threadIdx.x == 0) rows[n] = log(s) + mx - z[targets[n]];
}
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
    crossentropy_forward_kernel<<<N, 256>>>(m->rows, logits, d_targets, N, V);
    launchCheck();
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
        attention_forward_flash(att, act_l(m, A_LSE, l), qb, kb, vb, B, T, H, KV, hd);
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

// dq or dk (activation a, NH heads of the batch) rotated back by RoPE, as the output gradient its
// matmul reads: in place in fp32, or under bf16 straight into the bf16 cast scratch g_bf_d, the
// values of rope_backward and the cast matmul_backward would make, in one pass.
static Act rope_backward_operand(Model *m, int a, int NH) {
    int hd = m->h->head_dim;
    if (!g_bf16) {
        rope_backward(m->act[a], m->rope_cos, m->rope_sin, m->B, m->T, NH, hd);
        return act_f(m->act[a]);
    }
    Act d = {NULL, bf16_scratch(&g_bf_d, &g_bf_d_n, (int64_t)m->B * m->T * NH * hd)};
    rope_backward_bf16(d.h, m->act[a], m->rope_cos, m->rope_sin, m->B, m->T, NH, hd);
    return d;
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
    // writes g_bf_d (the rotated dq, dk below)
    Act dres_a = {dres, g_bf16 ? bf16_scratch(&g_bf_d, &g_bf_d_n, (int64_t)N * D) : NULL};
    // final norm
    zero_act(m, A_DRESID, (int64_t)N * D);
    rmsnorm_backward(dres, dres_a.h, m->dfwd_t[T_FINAL_NORM], dxn, act_l(m, A_RESID, c->n_layers),
                     m->fwd_t[T_FINAL_NORM], m->act[A_RSTDF], N, D);
    for (int l = c->n_layers - 1; l >= 0; l--) {
        model_layer_weights(m, l);
        float *x = act_l(m, A_RESID, l), *q = act_l(m, A_Q, l),
              *k = act_l(m, A_K, l), *v = act_l(m, A_V, l), *mid = act_l(m, A_RESID_MID, l);
        Act xn1 = act_in(m, A_XN1, l), xn2 = act_in(m, A_XN2, l), hmid = act_in(m, A_HMID, l),
            att = act_in(m, A_ATT, l), gate = act_in(m, A_GATE, l), up = act_in(m, A_UP, l);
        // recomputed (act_recomputed): xn2 = rmsnorm(mid), hmid = swiglu(gate, up) of this layer
        rmsnorm_forward(xn2, act_l(m, A_RSTD2, l), mid, layer_tensor(m->fwd_t, m, T_MLP_NORM, l), N, D, c->rms_norm_eps);
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
        zero_act(m, A_DQ, (int64_t)N * Hq);
        zero_act(m, A_DK, (int64_t)N * Hkv);
        zero_act(m, A_DV, (int64_t)N * Hkv);
        if (g_attention_gemm)
            attention_backward_gemm(m->act[A_DQ], m->act[A_DK], m->act[A_DV], m->act[A_SCORES], m->act[A_DSCORES],
                                    datt.f, q, k, v, att.f, act_l(m, A_LSE, l), B, T, H, KV, hd);
        else if (g_attention_flash)
            attention_backward_flash(m->act[A_DQ], m->act[A_DK], m->act[A_DV], m->act[A_DELTA], datt,
                                     flash_qkv(m, A_QB, l), flash_qkv(m, A_KB, l), flash_qkv(m, A_VB, l), att,
                                     act_l(m, A_LSE, l), B, T, H, KV, hd);
        else
            attention_backward(m->act[A_DQ], m->act[A_DK], m->act[A_DV], m->act[A_DELTA], datt.f,
                               q, k, v, att.f, act_l(m, A_LSE, l), B, T, H, KV, hd);
        rmsnorm_forward(xn1, act_l(m, A_RSTD1, l), x, layer_tensor(m->fwd_t, m, T_ATTN_NORM, l), N, D, c->rms_norm_eps);
        // dq, then dk, rotated back as their matmuls' operand (both through g_bf_d under bf16:
        // stream order puts dk's rotation after dq's matmuls)
        matmul_backward(act_f(dxn), layer_tensor(m->dfwd_t, m, T_WQ, l), rope_backward_operand(m, A_DQ, H), xn1,
                        weight(m, T_WQ, l), N, D, Hq, 0.0f, grad_beta(m, T_WQ, l));
        matmul_backward(act_f(dxn), layer_tensor(m->dfwd_t, m, T_WK, l), rope_backward_operand(m, A_DK, KV), xn1,
                        weight(m, T_WK, l), N, D, Hkv, 1.0f, grad_beta(m, T_WK, l));
        matmul_backward(act_f(dxn), layer_tensor(m->dfwd_t, m, T_WV, l), act_f(m->act[A_DV]), xn1,
                        weight(m, T_WV, l), N, D, Hkv, 1.0f, grad_beta(m, T_WV, l));
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
// (marked QD, so the same code runs here); the backward maps dL/dW^ to W straight through (STE)
// and exactly to the learned scales of sign and onebit. Layout: wq, dwq, codes in table order.
//
// Memory (issue 6's budget): under --matmul bf16 the quantizer writes W^ straight into the bf16
// copy the matmuls read (rounding to nearest even, as a cast of the fp32 W^ would), so no fp32
// W^ exists; under the straight-through estimator dL/dW = dL/dW^, so the matmuls' backward adds
// into the gradients of W themselves and dwq exists only for sign and onebit, whose backward needs
// dL/dW^ apart. Codes that flip are counted as they are written (no copy of the old codes).
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

// W^ is stored as the matmuls read it: store_w (section 3).

// The value of code c under a quantizer's two scales (int: s, z; nf: s+, s-; sign: alpha_r,
// beta_r; onebit: h_i, g_j; ternary: gamma, b unused), by quant.h's function for the method. The
// quantizer kernels and the layered W^'s remake (model_layer_weights) both take values from
// here, so a W^ remade from its codes and scales is the bits the quantizer wrote.
__device__ static inline float code_value(int method, int c, float a, float b, int bits) {
    if (method == QUANT_INT) return int_asym_value(c, a, b);
    if (method == QUANT_NF3 || method == QUANT_NF4) return nf_asym_value(c, a, b, bits);
    if (method == QUANT_SIGN) return sign_value(c, a, b);
    if (method == QUANT_ONEBIT) return onebit_value(c, a, b);
    return ternary_value(c, a);  // QUANT_TERNARY
}

// A code written over the previous one: counted in flips[layer] when the old codes are valid.
__device__ static inline int write_code(uint8_t *c, int q, int count) {
    int flipped = count && *c != q;
    *c = (uint8_t)q;
    return flipped;
}

// int and nf, the per-group steps of the two kernels below: the scales from the lanes' partial
// min and max (the warp's min and max, exact in any order, then int_asym_params, or nf's
// extremes) and each weight's code and value, which both share; and the scalar kernel's record of
// the group by lane 0 (scales, NaN or Inf, flips; the vector kernel records the scales alike but
// sums its flips a block at a time).
__device__ static inline void group_scales(float *a, float *b, float mn, float mx, int method, int bits) {
    mx = warp_max(mx);
    mn = -warp_max(-mn);
    if (method == QUANT_INT) int_asym_params(a, b, mn, mx, bits);
    else { *a = fabsf(mx); *b = fabsf(mn); }
}
__device__ static inline int group_code(float w, float a, float b, int method, int bits, float *value) {
    int q = method == QUANT_INT ? int_asym_code(w, a, b, bits) : nf_asym_code(w, a, b, bits);
    *value = code_value(method, q, a, b, bits);
    return q;
}
__device__ static inline void group_finish(float *p0, float *p1, int *bad, unsigned long long *flips, int64_t k, float a,
                                           float b, int ok, int f) {
    f = (int)warp_sum((float)f);  // at most g <= 2^24 flips: exact in float
    if (threadIdx.x % 32 == 0) {
        p0[k] = a;
        p1[k] = b;
        if (!ok) *bad = 1;
        if (f) atomicAdd(flips, (unsigned long long)f);
    }
}

// int and nf: thread mapping, one warp per group of g weights (groups tile memory, across
// layers too, so one launch covers a tensor of every layer; a group never straddles two layers),
// its lanes over the weights. The group's min and max are exact whatever the order, and every
// weight then goes through quant.h's own int_asym_params/_code/_value (nf_asym_code/_value), so
// W^ is int_asym_group's bit for bit. *bad is set on NaN or Inf; the warp adds its flips to its
// layer's counter (a layer holds n weights).
template <typename W>
__global__ static void quantize_group_kernel(W *wq, uint8_t *codes, unsigned long long *flips, int count, float *p0,
                                             float *p1, const float *w, int64_t n_groups, int g, int64_t n, int method,
                                             int bits, int *bad) {
    int64_t k = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (k >= n_groups) return;
    const float *wk = w + k * g;
    float mn = INFINITY, mx = -INFINITY;
    int ok = 1;
    for (int j = lane; j < g; j += 32) {
        ok &= isfinite(wk[j]) != 0;
        mn = fminf(mn, wk[j]);
        mx = fmaxf(mx, wk[j]);
    }
    ok = __all_sync(0xffffffffu, ok);
    float a, b, value;
    group_scales(&a, &b, mn, mx, method, bits);
    int f = 0;
    for (int j = lane; j < g; j += 32) {
        f += write_code(&codes[k * g + j], group_code(wk[j], a, b, method, bits, &value), count);
        if (wq) store_w(&wq[k * g + j], value);
    }
    group_finish(p0, p1, bad, &flips[k * g / n], k, a, b, ok, f);
}

// The same for g % 4 == 0 with w, wq 16 bytes (bf16: 8) and codes 4 bytes aligned (quantize_tensor
// checks), which is the bandwidth-bound case of every real shape. Thread mapping: one warp per
// group as above, but a lane owns 4 consecutive weights at a time: W read as one float4, the 4
// codes read and written as one 32-bit word, the 4 values of W^ stored at once (16 bytes fp32,
// 8 bytes bf16), so a warp moves 512 bytes of W per load instead of 128 and no single bytes. Same
// min and max (exact in any order), same quant.h functions per weight, rounding as store_w: W^ and
// codes bit for bit those of the kernel above.
// The 4 codes of v as one word (code 0 in the lowest byte, the lowest address), their values in *r.
template <int METHOD>
__device__ static inline uint32_t group_code4(float4 v, float a, float b, int bits, float4 *r) {
    return (uint32_t)group_code(v.x, a, b, METHOD, bits, &r->x) | (uint32_t)group_code(v.y, a, b, METHOD, bits, &r->y) << 8 |
           (uint32_t)group_code(v.z, a, b, METHOD, bits, &r->z) << 16 | (uint32_t)group_code(v.w, a, b, METHOD, bits, &r->w) << 24;
}
__device__ static inline int bytes_differing(uint32_t x, uint32_t y) {
    uint32_t d = x ^ y;
    return ((d & 0xffu) != 0) + ((d & 0xff00u) != 0) + ((d & 0xff0000u) != 0) + ((d & 0xff000000u) != 0);
}
// Memory latency, not bandwidth, bounds this kernel: a group's loads, its warp's min and max, then
// its stores, in a chain. One group at a time a warp, ncu had it at 1.3 ms on a 254M-weight tensor
// (a third of the bandwidth), and 5.7 ms when flips were counted (the previous codes, read after
// the min and max, a second trip to memory). So a warp takes its groups QG4_BATCH at a time: the
// lanes load the batch's weights together, prefetch the previous codes into L1 on the way, and
// the second pass loads the batch's weights (from L1) and codes together before computing any.
// METHOD (QUANT_INT, QUANT_NF3, QUANT_NF4) is a template argument, so a kernel holds one
// quantizer's code.
//
// Flip counting: every group's flips go to its layer's counter, and one atomicAdd a group (as
// above) queues thousands of adds on the same address (a layer is 90k groups of TinyLlama's MLP
// linears). So here a warp walks QG4_RUN consecutive groups and the block's warps sum their flips
// in shared memory, one atomicAdd a block (a block's groups lie in one layer but where a layer
// ends inside it: those groups add their own). Counts are integers: the same totals in any order.
#define QG4_RUN 16
#define QG4_BATCH 4
template <typename W, int METHOD>
__global__ static void __launch_bounds__(256, 4)  // 64 registers: 4 blocks an SM, 32 warps
quantize_group4_kernel(W *wq, uint8_t *codes, unsigned long long *flips, int count, float *p0, float *p1, const float *w,
                       int64_t n_groups, int g, int64_t n, int bits, int *bad) {
    __shared__ unsigned long long block_flips;
    int lane = threadIdx.x % 32, g4 = g / 4;
    int64_t k0 = ((int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * QG4_RUN;
    int64_t first_layer = (int64_t)blockIdx.x * (blockDim.x / 32) * QG4_RUN * g / n;  // of the block's first group
    const float4 *w4 = (const float4 *)w;
    uint32_t *c4 = (uint32_t *)codes;
    if (threadIdx.x == 0) block_flips = 0;
    __syncthreads();
    int f_first = 0;  // the lane's flips in groups of first_layer
    for (int64_t k = k0; k < k0 + QG4_RUN && k < n_groups; k += QG4_BATCH) {
        int nb = n_groups - k < QG4_BATCH ? (int)(n_groups - k) : QG4_BATCH;  // groups in this batch
        // a batch short of QG4_BATCH (the last groups of all) loads its first group again in the
        // missing places, so every load is unconditional, and stores nothing there
        float mn[QG4_BATCH], mx[QG4_BATCH], a[QG4_BATCH], b[QG4_BATCH];
        int ok[QG4_BATCH], f[QG4_BATCH];
#pragma unroll
        for (int r = 0; r < QG4_BATCH; r++) { mn[r] = INFINITY; mx[r] = -INFINITY; ok[r] = 1; f[r] = 0; }
        for (int j = lane; j < g4; j += 32) {
#pragma unroll
            for (int r = 0; r < QG4_BATCH; r++) {
                int64_t i = (k + (r < nb ? r : 0)) * g4 + j;
                float4 v = w4[i];
                if (count) asm volatile("prefetch.global.L1 [%0];" ::"l"(c4 + i));
                ok[r] &= isfinite(v.x) && isfinite(v.y) && isfinite(v.z) && isfinite(v.w);
                mn[r] = fminf(mn[r], fminf(fminf(v.x, v.y), fminf(v.z, v.w)));
                mx[r] = fmaxf(mx[r], fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)));
            }
        }
#pragma unroll
        for (int r = 0; r < QG4_BATCH; r++) {
            ok[r] = __all_sync(0xffffffffu, ok[r]);
            group_scales(&a[r], &b[r], mn[r], mx[r], METHOD, bits);
        }
        for (int j = lane; j < g4; j += 32) {
            float4 v[QG4_BATCH];
            uint32_t old[QG4_BATCH];
#pragma unroll
            for (int r = 0; r < QG4_BATCH; r++) {
                int64_t i = (k + (r < nb ? r : 0)) * g4 + j;
                v[r] = w4[i];
                old[r] = count ? c4[i] : 0u;
            }
#pragma unroll
            for (int r = 0; r < QG4_BATCH; r++) {
                if (r >= nb) continue;
                int64_t i = (k + r) * g4 + j;
                float4 value;
                uint32_t c = group_code4<METHOD>(v[r], a[r], b[r], bits, &value);
                if (count) f[r] += bytes_differing(old[r], c);  // codes that differ from the previous ones
                c4[i] = c;
                if (wq) store_w4(wq + 4 * i, value);
            }
        }
#pragma unroll
        for (int r = 0; r < QG4_BATCH; r++) {
            if (r >= nb) continue;
            int64_t layer = (k + r) * g / n;
            if (layer == first_layer) f_first += f[r];
            else {  // past the end of the block's first layer
                int fr = (int)warp_sum((float)f[r]);  // at most g <= 2^24 flips: exact in float
                if (lane == 0 && fr) atomicAdd(&flips[layer], (unsigned long long)fr);
            }
            if (lane == 0) {
                p0[k + r] = a[r];
                p1[k + r] = b[r];
                if (!ok[r]) *bad = 1;
            }
        }
    }
    f_first = (int)warp_sum((float)f_first);  // at most QG4_RUN g flips
    if (lane == 0 && f_first) atomicAdd(&block_flips, (unsigned long long)f_first);
    __syncthreads();
    if (threadIdx.x == 0 && block_flips) atomicAdd(&flips[first_layer], block_flips);
}
template <typename W>
static void quantize_group4(W *wq, uint8_t *codes, unsigned long long *flips, int count, float *p0, float *p1, const float *w,
                            int64_t n_groups, int g, int64_t n, int method, int bits, int *bad) {
    int blocks = blocks_for(n_groups, 8 * QG4_RUN);
    if (method == QUANT_INT)
        quantize_group4_kernel<W, QUANT_INT><<<blocks, 256>>>(wq, codes, flips, count, p0, p1, w, n_groups, g, n, bits, bad);
    else if (method == QUANT_NF3)
        quantize_group4_kernel<W, QUANT_NF3><<<blocks, 256>>>(wq, codes, flips, count, p0, p1, w, n_groups, g, n, bits, bad);
    else
        quantize_group4_kernel<W, QUANT_NF4><<<blocks, 256>>>(wq, codes, flips, count, p0, p1, w, n_groups, g, n, bits, bad);
}

// sign and onebit: thread mapping, one thread per weight (of every layer, n = out * in each);
// row = i / in.
template <typename W>
__global__ static void quantize_binary_kernel(W *wq, uint8_t *codes, unsigned long long *flips, int count, const float *w,
                                              const float *p0, const float *p1, int64_t n_all, int out, int in, int method,
                                              int *bad) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_all) return;
    if (!isfinite(w[i])) *bad = 1;
    int c = sign_code(w[i]);
    int64_t row = i / in;                       // over all layers: p0 holds `out` floats per layer
    int64_t col = (i / ((int64_t)out * in)) * in + i % in;  // onebit's g: `in` floats per layer
    if (write_code(&codes[i], c, count)) atomicAdd(&flips[i / ((int64_t)out * in)], 1ull);
    if (wq) store_w(&wq[i], code_value(method, c, p0[row], method == QUANT_SIGN ? p1[row] : p1[col], 1));
}

// ternary: gamma = mean |W| per layer (sums in double), then one thread per weight.
// Thread mapping of the sum: blockIdx.y is the layer; threads stride over its weights.
__global__ static void absmean_sum_kernel(double *sums, const float *w, int64_t n, int *bad) {
    const float *wl = w + (int64_t)blockIdx.y * n;
    double s = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        if (!isfinite(wl[i])) *bad = 1;
        s += fabsf(wl[i]);
    }
    s = block_sum_d(s);
    if (threadIdx.x == 0) atomicAdd(&sums[blockIdx.y], s);
}
template <typename W>
__global__ static void ternary_kernel(W *wq, uint8_t *codes, unsigned long long *flips, int count, float *gammas,
                                      const float *w, const double *sums, int64_t n, int L) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n * L) return;
    int l = (int)(i / n);
    float gamma = (float)(sums[l] / (double)n), div = gamma + 1e-5f;
    int c = (int)clampf(round_even(w[i] / div), -1.0f, 1.0f) + 1;
    if (write_code(&codes[i], c, count)) atomicAdd(&flips[l], 1ull);
    if (wq) store_w(&wq[i], code_value(QUANT_TERNARY, c, gamma, 0.0f, 2));
    if (i % n == 0) gammas[l] = gamma;
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
        int64_t groups = n * L / g;
        if (g % 4 == 0 && (uintptr_t)m->params_t[t] % 16 == 0 && (uintptr_t)wq % (4 * sizeof(W)) == 0 && (uintptr_t)codes % 4 == 0)
            quantize_group4(wq, codes, flips, count, m->qp0[t], m->qp1[t], m->params_t[t], groups, g, n, q.method, q.bits, m->d_bad);
        else
            quantize_group_kernel<<<blocks_for(groups, 8), 256>>>(wq, codes, flips, count, m->qp0[t], m->qp1[t], m->params_t[t],
                                                                  groups, g, n, q.method, q.bits, m->d_bad);
    } else if (q.method == QUANT_SIGN || q.method == QUANT_ONEBIT) {
        quantize_binary_kernel<<<blocks_for(n * L, 256), 256>>>(wq, codes, flips, count, m->params_t[t], m->qp0[t], m->qp1[t],
                                                              n * L, out, in, q.method, m->d_bad);
    } else if (q.method == QUANT_TERNARY) {
        cudaCheck(cudaMemsetAsync(m->d_sum, 0, (size_t)L * sizeof(double)));
        if (L > 64) fail("ternary on the GPU: at most 64 layers");
        dim3 grid(blocks_for(n, 256) < 256 ? blocks_for(n, 256) : 256, L);
        absmean_sum_kernel<<<grid, 256>>>(m->d_sum, m->params_t[t], n, m->d_bad);
        launchCheck();
        ternary_kernel<<<blocks_for(n * L, 256), 256>>>(wq, codes, flips, count, m->qp0[t], m->params_t[t], m->d_sum, n, L);
    }
    launchCheck();
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
// others' (1.8 GiB of bf16 on the benchmark's TinyLlama; by its memory plan 11.7 GiB on
// Llama-2-7B). A training step needs each layer's in the forward and again in the backward (and
// in every micro-batch's): model_layer_weights makes it from what the quantizer's pass kept, the
// layer's codes and scales, through code_value, as the quantizer did: the same bits. A remake
// moves 3 bytes a weight (a code read, a bf16 written), twice a step, where the pass (which then
// writes no W^) moves 2 bytes less. Measured (dev/bench_cuda.sh, one run): 1.0-1.2% of the
// benchmark's tokens/s, and 5% with two micro-batches (four remakes a step; against the run
// before), so it is not the default.
//
// One launch a layer makes all its linears' W^: the kernel takes the layer's tensors as segments
// (at most N_TENSORS), of n < 2^31 weights each; vec: n, in and g multiples of 4, codes 4-byte
// and W^ 4-value aligned, so that 4 codes are read as one word and 4 values stored at once.
typedef struct {
    void *wq;
    const uint8_t *codes;
    const float *p0, *p1;
    int64_t first;  // the segment's first unit (of 4 weights) in the launch
    int n, in, g, vec;
} DequantSegment;
typedef struct { DequantSegment s[N_TENSORS]; int count, method, bits; } DequantLayer;

// Weights i .. i + k - 1 (k <= 4, one group or row: the vec case, or k = 1) from their codes c[],
// with the scales the quantizer stored for them (code_value).
__device__ static inline void dequant_run(float *v, const DequantSegment *d, int i, const int *c, int k, int method, int bits) {
    if (method == QUANT_INT || method == QUANT_NF3 || method == QUANT_NF4) {
        float a = d->p0[i / d->g], b = d->p1[i / d->g];
        for (int e = 0; e < k; e++) v[e] = code_value(method, c[e], a, b, bits);
    } else if (method == QUANT_SIGN || method == QUANT_ONEBIT) {
        int r = i / d->in, col = i - r * d->in;
        for (int e = 0; e < k; e++) v[e] = code_value(method, c[e], d->p0[r], method == QUANT_SIGN ? d->p1[r] : d->p1[col + e], bits);
    } else {  // QUANT_TERNARY
        for (int e = 0; e < k; e++) v[e] = code_value(method, c[e], d->p0[0], 0.0f, bits);
    }
}
// Thread mapping: one thread per unit of 4 consecutive weights of a segment (the units of all
// segments numbered in a row, a segment's last unit cut at its n); its segment by a scan of the
// segments' first units. A unit's weights share a group (or row) in the vec case: one division.
template <typename W>
__global__ static void dequantize_layer_kernel(DequantLayer d, int64_t units) {
    int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (u >= units) return;
    int s = 0;
    while (s + 1 < d.count && u >= d.s[s + 1].first) s++;
    const DequantSegment *seg = &d.s[s];
    W *wq = (W *)seg->wq;
    int i = (int)(u - seg->first) * 4;
    float v[4];
    if (seg->vec) {
        uint32_t w = *(const uint32_t *)(seg->codes + i);
        int c[4] = {(int)(w & 0xff), (int)(w >> 8 & 0xff), (int)(w >> 16 & 0xff), (int)(w >> 24)};
        dequant_run(v, seg, i, c, 4, d.method, d.bits);
        store_w4(wq + i, make_float4(v[0], v[1], v[2], v[3]));
    } else {
        for (int j = i; j < i + 4 && j < seg->n; j++) {
            int c = seg->codes[j];
            dequant_run(v, seg, j, &c, 1, d.method, d.bits);
            store_w(&wq[j], v[0]);
        }
    }
}

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
    if (g_bf16) dequantize_layer_kernel<__nv_bfloat16><<<blocks_for(units, 256), 256>>>(d, units);
    else dequantize_layer_kernel<float><<<blocks_for(units, 256), 256>>>(d, units);
    launchCheck();
    m->wq_at = l;
}

// sign: dalpha[r] += sum_j dwq sign(w), dbeta[r] += sum_j dwq, dw += dwq alpha 1{|w| <= 1}.
// onebit's row part: dh[r] += sum_j dwq sign(w) g[j], dw += dwq h g 1{|w| <= 1}.
// Thread mapping: one block per row (of every layer); threads stride over its `in` weights.
__global__ static void binary_backward_rows_kernel(float *dw, float *dp0, float *dp1, const float *dwq, const float *w,
                                                   const float *p0, const float *p1, int out, int in, int method) {
    int64_t r = blockIdx.x;  // global row; layer = r / out
    int64_t goff = (r / out) * in;
    double da = 0.0, db = 0.0;
    for (int j = threadIdx.x; j < in; j += blockDim.x) {
        int64_t i = r * in + j;
        float s = sign_pm1(sign_code(w[i]));
        if (method == QUANT_SIGN) {
            da += (double)dwq[i] * s;
            db += dwq[i];
            if (fabsf(w[i]) <= 1.0f) dw[i] += dwq[i] * p0[r];
        } else {
            da += (double)dwq[i] * s * p1[goff + j];
            if (fabsf(w[i]) <= 1.0f) dw[i] += dwq[i] * p0[r] * p1[goff + j];
        }
    }
    da = block_sum_d(da);
    db = block_sum_d(db);
    if (threadIdx.x == 0) {
        dp0[r] += (float)da;
        if (method == QUANT_SIGN) dp1[r] += (float)db;
    }
}
// onebit's column part: dg[j] += sum_i dwq sign(w) h[i]. Thread mapping: one thread per column
// (of every layer), looping over the rows of its layer.
__global__ static void onebit_backward_cols_kernel(float *dg, const float *dwq, const float *w, const float *h,
                                                   int out, int in, int L) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= (int64_t)L * in) return;
    int64_t l = c / in, j = c % in;
    double acc = 0.0;
    for (int r = 0; r < out; r++) {
        int64_t i = (l * out + r) * in + j;
        acc += (double)dwq[i] * sign_pm1(sign_code(w[i])) * h[l * out + r];
    }
    dg[c] += (float)acc;
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
            binary_backward_rows_kernel<<<out * L, 256>>>(m->grads_t[t], dp0, dp1, m->dfwd_t[t], m->params_t[t],
                                                          m->qp0[t], m->qp1[t], out, in, method);
            launchCheck();
            if (method == QUANT_ONEBIT) {
                onebit_backward_cols_kernel<<<blocks_for((int64_t)L * in, 128), 128>>>(dp1, m->dfwd_t[t], m->params_t[t],
                                                                                      m->qp0[t], out, in, L);
                launchCheck();
            }
        }
    }
    cudaCheck(cudaMemsetAsync(m->dwq, 0, (size_t)m->n_codes * sizeof(float)));
}

// ============================================================================================
// 6. Distillation
//
// loss.h's losses on a chunk of rows (positions): a block takes one row at a time, reduces the
// log-sum-exps and the two KL sums over the vocabulary in double, the sums of kl_mix_tempered and
// ce_add, and writes the gradient in place, in three passes over the row: the log-sum-exps of zs
// and zt (online: one read each), the KL sums, the gradient. Wasserstein sorts, so it runs loss.h's
// wasserstein_loss itself, one thread per position, on a scratch row each.
//
// Each term's exponential is taken in float (exp_f): the log-probabilities, their differences and
// the sums stay in double as loss.h's, but double's exp is a long instruction sequence, and six a
// vocabulary entry made this kernel ~1 ms per 1k-row chunk of a 32k vocabulary (a quarter of
// that is memory). A term's relative error is then float's (~1e-7), far below the tolerances
// the parity tests hold the losses and dL/dlogits to (1e-5 and 1e-4).
__device__ static inline double exp_f(double x) { return (double)expf((float)x); }

// Block reductions of K values at once: one round of __syncthreads for all K, every thread gets
// the K results, reduced in a fixed tree (the same bits every run). blockDim.x a multiple of 32.
// Op: the reduction, its warp step and its identity (the value of a warp with no block to read).
struct MaxF {
    typedef float T;
    __device__ static float warp(float x) { return warp_max(x); }
    __device__ static float none(void) { return -INFINITY; }
};
struct SumD {
    typedef double T;
    __device__ static double warp(double x) { return warp_sum_d(x); }
    __device__ static double none(void) { return 0.0; }
};
template <typename Op, int K> __device__ static void block_reduce_k(typename Op::T (&x)[K]) {
    __shared__ typename Op::T part[K][32];
    __syncthreads();  // part may still be read by a previous call
    int w = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
#pragma unroll
    for (int k = 0; k < K; k++) {
        x[k] = Op::warp(x[k]);
        if (lane == 0) part[k][w] = x[k];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < K; k++) x[k] = Op::warp(lane < nw ? part[k][lane] : Op::none());
}

// Online log-sum-exp (Milakov & Gimelshein 2018, the recurrence of FlashAttention's softmax):
// lse(z / tau) from one read of z. A thread keeps the largest logit m it has read and
//   s = sum_v exp(z_v / tau - m / tau)
// over those logits; a piece of W logits whose largest, c, exceeds m first rescales
//   s *= exp(m / tau - c / tau),  m = c.
// s1, when `one` (cakld_ce at tau != 1), is the same sum at tau = 1 (the CE's), with the same m.
// m starts at -FLT_MAX rather than -inf: a thread that reads no logit (V < W blockDim.x) keeps
// s = 0, and neither this rescale nor the block's below computes -inf - (-inf) = NaN (a -inf logit
// adds exp(-inf) = 0; a NaN one makes s NaN, as in loss.h).
template <int W>
__device__ static inline void lse_online(float &m, double &s, double &s1, bool one, const float *z, double inv_tau) {
    float c = z[0];
#pragma unroll
    for (int e = 1; e < W; e++) c = fmaxf(c, z[e]);
    if (c > m) {
        s *= exp_f((double)m * inv_tau - (double)c * inv_tau);
        if (one) s1 *= exp_f((double)m - c);
        m = c;
    }
    double mt = (double)m * inv_tau;
#pragma unroll
    for (int e = 0; e < W; e++) {
        s += exp_f((double)z[e] * inv_tau - mt);
        if (one) s1 += exp_f((double)z[e] - m);
    }
}

// The last reads and the writes of a row, marked evict-first (ld/st.global.cs): nothing in this
// kernel reads those lines again, so L2 keeps instead the rows still between their passes.
template <int W> __device__ static inline void load_last(float *f, const float *p) {
    if constexpr (W == 4) {
        float4 v = __ldcs((const float4 *)p);
        f[0] = v.x; f[1] = v.y; f[2] = v.z; f[3] = v.w;
    } else {
        for (int e = 0; e < W; e++) f[e] = __ldcs(p + e);
    }
}
template <int W> __device__ static inline void store_last(float *p, const float *f) {
    if constexpr (W == 4) __stcs((float4 *)p, make_float4(f[0], f[1], f[2], f[3]));
    else for (int e = 0; e < W; e++) __stcs(p + e, f[e]);
}
// dz in bf16 (the classifier's backward reads it so under --matmul bf16): rounded to nearest even,
// the values a cast of the fp32 dz gave, 8 bytes a piece of 4; plain stores, not marked, since
// the classifier's backward reads them next
template <int W> __device__ static inline void store_last(__nv_bfloat16 *p, const float *f) { store_floats<W>(p, f); }

// One position's loss and dz = dL/dzs, the sums of loss.h's kl_mix_tempered and ce_add:
//   KL part (every loss but ce): (1 - g) KL(P_T^tau || P_S^tau) + g KL(P_S^tau || P_T^tau),
//     dz_v += s_kl/tau ((1 - g)(ps_v - pt_v) + g ps_v (log ps_v - log pt_v - KL(P_S || P_T))),
//     g = 0 for fkl, 1 for rkl, gamma for cakld and cakld_ce; tau and s_kl = scale tau^2 for
//     cakld_ce, else 1 and scale;
//   CE part (ce, cakld_ce): -log P_S(label),  dz_v += scale (ps_v - 1{v = label}) at tau = 1;
// then dz *= accum. Thread i owns the W-float pieces i, i + blockDim.x, ... of the row.
// The block's lse from the threads' (m, s): with M = max_t m_t (the row's largest logit, as
// loss.h's), lse = M / tau + log sum_t s_t exp(m_t / tau - M / tau). The max is reduced first so
// that each thread's sum is rescaled once, its rounding independent of the others' (a tree of
// pairwise (max, sum) merges would round one factor into half the sum at each level).
// dz (Dz: float, or bf16 under --matmul bf16 when the classifier's backward follows) may be zs
// itself (head_loss overwrites a chunk's logits with their fp32 gradient): every read of
// zs and zt in passes 1 and 2 (z_label included) comes before the last reduction's
// __syncthreads, and pass 3 reads zs[v] and zt[v] in the thread that then writes dz[v]. The
// returned loss is every thread's.
template <int W, typename Dz>
__device__ static double block_distill(Dz *dz, const float *zs, const float *zt, int label, int V, DistillLoss loss,
                                       float scale, float accum) {
    int kind = loss.kind, kl = kind != LOSS_CE, ce = kind == LOSS_CE || kind == LOSS_CAKLD_CE, pieces = V / W;
    float tau_f = kind == LOSS_CAKLD_CE ? loss.temperature : 1.0f;
    float s_kl = kind == LOSS_CAKLD_CE ? scale * tau_f * tau_f : scale;
    double g = kind == LOSS_FKL ? 0.0 : kind == LOSS_RKL ? 1.0 : (double)loss.gamma, inv_tau = 1.0 / tau_f;
    bool one = ce && tau_f != 1.0f;  // the CE's lse (tau = 1) is not lse_s
    double z_label = ce ? (double)zs[label] : 0.0;
    // pass 1: lse_s = lse(zs / tau), lse_t = lse(zt / tau), lse_1 = lse(zs), online
    float ms = -FLT_MAX, mt = -FLT_MAX;
    double ss = 0.0, st = 0.0, s1 = 0.0, none = 0.0;
    for (int i = threadIdx.x; i < pieces; i += blockDim.x) {
        float a[W], b[W];
        load_floats<W>(a, zs + i * W);
        if (kl) load_floats<W>(b, zt + i * W);
        lse_online<W>(ms, ss, s1, one, a, inv_tau);
        if (kl) lse_online<W>(mt, st, none, false, b, inv_tau);
    }
    float m[2] = {ms, mt};
    block_reduce_k<MaxF>(m);
    double s[3] = {ss * exp_f((double)ms * inv_tau - (double)m[0] * inv_tau),
                   st * exp_f((double)mt * inv_tau - (double)m[1] * inv_tau), s1 * exp_f((double)ms - m[0])};
    block_reduce_k<SumD>(s);
    double lse_s = (double)m[0] * inv_tau + log(s[0]), lse_t = kl ? (double)m[1] * inv_tau + log(s[1]) : 0.0;
    double lse_1 = one ? (double)m[0] + log(s[2]) : lse_s;
    // pass 2: KL(P_T || P_S) and KL(P_S || P_T)
    double fkl = 0.0, rkl = 0.0;
    if (kl) {
        for (int i = threadIdx.x; i < pieces; i += blockDim.x) {
            float a[W], b[W];
            load_floats<W>(a, zs + i * W);
            load_floats<W>(b, zt + i * W);
#pragma unroll
            for (int e = 0; e < W; e++) {
                double ls = (double)a[e] * inv_tau - lse_s, lt = (double)b[e] * inv_tau - lse_t;
                fkl += exp_f(lt) * (lt - ls);
                rkl += exp_f(ls) * (ls - lt);
            }
        }
        double k[2] = {fkl, rkl};
        block_reduce_k<SumD>(k);
        fkl = k[0];
        rkl = k[1];
    }
    // pass 3: the gradient, each piece read, then overwritten, by its own thread
    for (int i = threadIdx.x; i < pieces; i += blockDim.x) {
        float a[W], b[W], d[W];
        load_last<W>(a, zs + i * W);
        if (kl) load_last<W>(b, zt + i * W);
#pragma unroll
        for (int e = 0; e < W; e++) {
            float x = 0.0f;
            if (kl) {
                double ls = (double)a[e] * inv_tau - lse_s, lt = (double)b[e] * inv_tau - lse_t;
                double ps = exp_f(ls), pt = exp_f(lt);
                x = (float)(s_kl * ((1.0 - g) * (ps - pt) + g * ps * ((ls - lt) - rkl)) * inv_tau);
            }
            if (ce) x = x + scale * (float)exp_f((double)a[e] - lse_1) - (i * W + e == label ? scale : 0.0f);
            d[e] = x * accum;
        }
        store_last<W>(dz + i * W, d);
    }
    double l = kl ? (1.0 - g) * fkl + g * rkl : 0.0;
    if (kind == LOSS_CAKLD_CE) l *= (double)tau_f * tau_f;
    return ce ? l + (lse_1 - z_label) : l;
}

// Thread mapping: block b takes rows b, b + gridDim.x, b + 2 gridDim.x, ... of the chunk's N, one
// at a time (distill_loss sizes the grid); thread i owns the W-float pieces i, i + blockDim.x, ...
// of a row (W = 4: 16-byte loads and stores). rows[n] gets position n's loss, dlogits its
// gradient (times `scale` = 1/B, then times `accum`, as train.c's distill_step scales after the
// loss). dlogits may be logits (in place, fp32), or bf16 (a buffer of its own).
template <int W, typename Dz>
__global__ static void __launch_bounds__(1024) distill_loss_kernel(double *rows, Dz *dlogits, const float *logits,
                                                                   const float *teacher, const int *labels, int N, int V,
                                                                   DistillLoss loss, float scale, float accum) {
    for (int n = blockIdx.x; n < N; n += gridDim.x) {
        Dz *dz = dlogits + (int64_t)n * V;
        const float *zs = logits + (int64_t)n * V, *zt = teacher ? teacher + (int64_t)n * V : NULL;
        int label = labels[n];
        double l = 0.0;
        if (label < 0) {
            float zero[W] = {};
            for (int i = threadIdx.x; i < V / W; i += blockDim.x) store_last<W>(dz + i * W, zero);
        } else if (label >= V || loss.kind > LOSS_CAKLD_CE || (loss.kind != LOSS_CE && !zt)) {
            l = NAN;
        } else {
            l = block_distill<W, Dz>(dz, zs, zt, label, V, loss, scale, accum);
        }
        if (threadIdx.x == 0) rows[n] = l;
    }
}

// The grid: passes 2 and 3 re-read the row pass 1 read, so the rows in flight (one a block), 8V
// bytes each (4V without a teacher), are kept within half of L2; then DRAM sees each row's zs and
// zt read once and dz written once, 12V bytes: 0.4 GB a chunk of 1,048 rows of a 32k vocabulary,
// where six passes of one block a row, all rows at once, moved 1.13 GB (ncu, H200). At most 1024
// threads an SM (a 1024-thread block at 64 registers fills the register file). Blocks of 128 to
// 1024 threads, at least 4 pieces a thread, so that a small vocabulary leaves few idle; a row's
// result depends on the block size alone (so on V), not on the grid. W = 4 when V % 4 == 0 and the
// rows are 16 bytes aligned (dz: 8 in bf16). dz: an Act, fp32 (may be zs) or bf16.
static void distill_loss(double *rows, Act dz, const float *zs, const float *zt, const int *labels, int N, int V,
                         DistillLoss loss, float scale, float accum) {
    if (N <= 0) return;
    int w4 = V % 4 == 0 && ((uintptr_t)dz.f | (uintptr_t)zs | (uintptr_t)zt) % 16 == 0 && (uintptr_t)dz.h % 8 == 0;
    int pieces = w4 ? V / 4 : V, threads = 128, sms, l2;
    while (threads < 1024 && threads * 4 < pieces) threads *= 2;
    gpu_limits(&sms, &l2);
    int64_t grid = (int64_t)sms * (1024 / threads), fit = l2 / 2 / ((loss.kind == LOSS_CE ? 4 : 8) * (int64_t)V);
    if (grid > fit) grid = fit;
    if (grid > N) grid = N;
    if (grid < 1) grid = 1;
    if (dz.h && w4) distill_loss_kernel<4><<<(int)grid, threads>>>(rows, dz.h, zs, zt, labels, N, V, loss, scale, accum);
    else if (dz.h) distill_loss_kernel<1><<<(int)grid, threads>>>(rows, dz.h, zs, zt, labels, N, V, loss, scale, accum);
    else if (w4) distill_loss_kernel<4><<<(int)grid, threads>>>(rows, dz.f, zs, zt, labels, N, V, loss, scale, accum);
    else distill_loss_kernel<1><<<(int)grid, threads>>>(rows, dz.f, zs, zt, labels, N, V, loss, scale, accum);
    launchCheck();
}

// Thread mapping: one thread per position, running loss.h's wasserstein_loss on scratch row n.
__global__ static void wasserstein_loss_kernel(double *rows, float *dlogits, float *scratch, const float *logits,
                                               const float *teacher, const int *labels, int N, int V, int Vt, float scale, float accum) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    float *dz = dlogits + (int64_t)n * V;
    if (labels[n] < 0) {
        for (int v = 0; v < V; v++) dz[v] = 0.0f;
        rows[n] = 0.0;
        return;
    }
    int W = V > Vt ? V : Vt;
    rows[n] = wasserstein_loss(dz, scratch + (int64_t)n * W, logits + (int64_t)n * V, teacher + (int64_t)n * Vt, V, Vt, scale);
    if (accum != 1.0f) for (int v = 0; v < V; v++) dz[v] *= accum;
}

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
                wasserstein_loss_kernel<<<blocks_for(nc, 64), 64>>>(s->rows + n0, dz.f, wscratch, zs, zt, s->targets + n0, nc, V,
                                                                   Vt, scale, accum);
            else
                distill_loss(s->rows + n0, dz, zs, zt, s->targets + n0, nc, V, loss, scale, accum);
            launchCheck();
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

// gamma_accumulate: rows[n] = max_v P_T(v) = 1 / sum_v exp(zt_v - max zt).
// Thread mapping: one block per position.
__global__ static void gamma_rows_kernel(double *rows, const float *teacher, int Vt) {
    const float *z = teacher + (int64_t)blockIdx.x * Vt;
    float mx = -INFINITY;
    for (int v = threadIdx.x; v < Vt; v += blockDim.x) mx = fmaxf(mx, z[v]);
    mx = block_max(mx);
    double e = 0.0;
    for (int v = threadIdx.x; v < Vt; v += blockDim.x) e += exp((double)z[v] - mx);
    e = block_sum_d(e);
    if (threadIdx.x == 0) rows[blockIdx.x] = 1.0 / e;
}

// The teacher's confidence over the positions of its last forward, its classifier in chunks.
static void gamma_accumulate(double *sum, long long *count, Model *teacher, const int *labels, int B, int T, int include_pad) {
    int N = B * T, D = teacher->h->dim, Vt = teacher->h->vocab_size, R = head_chunk_rows(N, Vt);
    float *zt = gpu_grow(&g_chunk_zt, &g_chunk_zt_n, (int64_t)R * Vt, "loss chunks");
    for (int n0 = 0; n0 < N; n0 += R) {
        int nc = N - n0 < R ? N - n0 : R;
        matmul_forward(zt, teacher->act[A_XNF] + (int64_t)n0 * D, weight(teacher, lm_head_tensor(teacher), 0), nc, D, Vt);
        gamma_rows_kernel<<<nc, 256>>>(teacher->rows + n0, zt, Vt);
        launchCheck();
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

typedef struct {
    float lr, beta1, beta2, eps, weight_decay, grad_clip;
} OptConfig;

// Thread mapping (sum_squares_kernel): threads stride over the elements. The sum of squares
// reduces per block in double into parts[blockIdx.x], and sum_parts_kernel (one block of
// SUM_BLOCKS threads, one part each) adds the parts up in a fixed tree: the same norm every run
// (an atomicAdd of each block's total added them in any order, so the clipping factor and every
// gradient after it could differ in the last bit between two runs), and the same for a ZeRO-1
// shard padded with zeros as for the unpadded gradients (the same threads hold the same elements).
#define SUM_BLOCKS 1024
__global__ static void sum_squares_kernel(double *parts, const float *g, int64_t n) {
    double s = 0.0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        s += (double)g[i] * g[i];
    s = block_sum_d(s);
    if (threadIdx.x == 0) parts[blockIdx.x] = s;
}
__global__ static void sum_parts_kernel(double *out, const double *parts) {
    double s = block_sum_d(parts[threadIdx.x]);
    if (threadIdx.x == 0) *out = s;
}
// The sum of squares of g[n], in double, on the host.
static double sum_squares(Model *m, const float *g, int64_t n) {
    static double *parts;
    if (!parts) parts = (double *)gpu_malloc(SUM_BLOCKS * sizeof(double), "scratch");
    sum_squares_kernel<<<SUM_BLOCKS, 256>>>(parts, g, n);
    sum_parts_kernel<<<1, SUM_BLOCKS>>>(m->d_sum, parts);
    launchCheck();
    double ss;
    cudaCheck(cudaMemcpy(&ss, m->d_sum, sizeof ss, cudaMemcpyDeviceToHost));
    return ss;
}
// Global L2 norm of the gradients; returns it, and in *gscale the factor that brings it down to
// clip (> 0) when above, else 1. AdamW applies the factor as it reads each gradient (g * gscale,
// the product a scaling pass over the gradients would store), which spares that pass: 3.3 ms a
// step, read and write of every gradient, on the benchmark's 1.1 G parameters.
static float clip_grad_norm(Model *m, float clip, float *gscale) {
    PROFILE(PROF_OPTIMIZER);
    float norm = (float)sqrt(sum_squares(m, m->grads, m->n_params));
    *gscale = clip > 0 && norm > clip ? clip / norm : 1.0f;
    return norm;
}

// One parameter's AdamW step (train.c's adamw_update), g already times the clipping factor.
__device__ static inline void adamw_one(float *p, float g, float *m, float *v, float beta1, float beta2, float eps, float lr,
                                        float wd, float bc1, float bc2) {
    *m = beta1 * *m + (1.0f - beta1) * g;
    *v = beta2 * *v + (1.0f - beta2) * g * g;
    float mhat = *m / bc1, vhat = *v / bc2;
    *p -= lr * (mhat / (sqrtf(vhat) + eps) + wd * *p);
}
// Thread mapping: one thread per W consecutive parameters of the span: W = 4 moves p, g, m, v as
// float4s (all four 16-byte aligned), W = 1 one float each. The same adamw_one either way. *bad is
// set when a parameter it writes is NaN or Inf (params_finite reads it: no pass of its own over
// the parameters, which took 1.0 ms a step on the benchmark's 1.1 G).
template <int W>
__global__ static void adamw_span_kernel(float *p, const float *g, float *mm, float *vv, int64_t n, float gscale,
                                         float beta1, float beta2, float eps, float lr, float wd, float bc1, float bc2,
                                         int *bad) {
    int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * W;
    if (i >= n) return;
    if (W == 4 && i + 4 <= n) {
        float4 p4 = *(float4 *)(p + i), g4 = *(const float4 *)(g + i), m4 = *(float4 *)(mm + i), v4 = *(float4 *)(vv + i);
        adamw_one(&p4.x, g4.x * gscale, &m4.x, &v4.x, beta1, beta2, eps, lr, wd, bc1, bc2);
        adamw_one(&p4.y, g4.y * gscale, &m4.y, &v4.y, beta1, beta2, eps, lr, wd, bc1, bc2);
        adamw_one(&p4.z, g4.z * gscale, &m4.z, &v4.z, beta1, beta2, eps, lr, wd, bc1, bc2);
        adamw_one(&p4.w, g4.w * gscale, &m4.w, &v4.w, beta1, beta2, eps, lr, wd, bc1, bc2);
        *(float4 *)(p + i) = p4;
        *(float4 *)(mm + i) = m4;
        *(float4 *)(vv + i) = v4;
        if (!(isfinite(p4.x) && isfinite(p4.y) && isfinite(p4.z) && isfinite(p4.w))) *bad = 1;
        return;
    }
    for (int64_t j = i; j < i + W && j < n; j++) {
        adamw_one(p + j, g[j] * gscale, mm + j, vv + j, beta1, beta2, eps, lr, wd, bc1, bc2);
        if (!isfinite(p[j])) *bad = 1;
    }
}
static void adamw_span(Model *m, float *p, const float *g, float *mm, float *vv, int64_t n, float gscale, const OptConfig *o,
                       float lr, float wd, float bc1, float bc2) {
    if (n <= 0) return;
    if (((uintptr_t)p | (uintptr_t)g | (uintptr_t)mm | (uintptr_t)vv) % 16 == 0)
        adamw_span_kernel<4><<<blocks_for((n + 3) / 4, 256), 256>>>(p, g, mm, vv, n, gscale, o->beta1, o->beta2, o->eps, lr, wd,
                                                                    bc1, bc2, m->d_bad);
    else
        adamw_span_kernel<1><<<blocks_for(n, 256), 256>>>(p, g, mm, vv, n, gscale, o->beta1, o->beta2, o->eps, lr, wd, bc1, bc2,
                                                          m->d_bad);
    launchCheck();
}

// The table's tensors (matrices decayed, norm weights not), then the learned quantizer scales;
// gscale: clip_grad_norm's factor.
static void adamw_update(Model *m, const OptConfig *o, float lr, float gscale) {
    PROFILE(PROF_OPTIMIZER);
    m->step++;
    cudaCheck(cudaMemsetAsync(m->d_bad, 0, sizeof(int)));  // the kernels' non-finite flag (params_finite)
    float bc1 = 1.0f - powf(o->beta1, (float)m->step), bc2 = 1.0f - powf(o->beta2, (float)m->step);
    for (int t = 0; t < N_TENSORS; t++) {
        if (!m->params_t[t]) continue;
        int64_t n = m->slice[t] * (m->h->per_layer[t] ? m->h->n_layers : 1);
        adamw_span(m, m->params_t[t], m->grads_t[t], m->m_t[t], m->v_t[t], n, gscale, o, lr,
                   m->h->rows[t] > 1 ? o->weight_decay : 0.0f, bc1, bc2);
    }
    int64_t tail = m->n_table;
    adamw_span(m, m->params + tail, m->grads + tail, m->adam_m + tail, m->adam_v + tail, m->n_params - tail, gscale, o, lr, 0.0f,
               bc1, bc2);
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
// 10. Generation and zero-shot scoring: a KV cache, the decode step, log-likelihoods
//
// train.c's generate() and eval.c's qa_score stay on the host (prompts, tokenization, sampling
// and its RNG, tasks, metrics, files) and ask train.c's InferenceBackend for the model's numbers;
// train_cu_host.c points that at GPU_INFERENCE below. As in train.c, each decode step runs the
// model on one position per sequence (N = B rows), and only attention reads the cache.

typedef struct {
    int B, T;             // sequences, positions the cache holds now
    float *k, *v;         // [L, B, T, KV*hd] each, one allocation
    float *cosv, *sinv;   // RoPE tables for positions 0..T-1, [T, hd/2] each, one allocation
    float *scores;        // [B, H, T] attention scratch
    float *logits;        // host (pinned) [B, V]: the decode step's answer
    int64_t cap_kv, cap_rope, cap_scores, cap_logits;  // floats allocated at k, cosv, scores, logits
} KVCache;

// Sizes the cache for B sequences of T positions. generate_data calls this once per batch of
// prompts, so the buffers are kept and only grow.
static void kv_alloc(KVCache *kv, const Model *m, int B, int T) {
    const HostModel *c = m->h;
    int64_t n = (int64_t)c->n_layers * B * T * c->n_kv_heads * c->head_dim, half = (int64_t)T * c->head_dim / 2;
    kv->B = B; kv->T = T;
    gpu_grow(&kv->k, &kv->cap_kv, 2 * n, "KV cache");  // k, then v
    kv->v = kv->k + n;
    gpu_grow(&kv->cosv, &kv->cap_rope, 2 * half, "KV cache");
    kv->sinv = kv->cosv + half;
    gpu_grow(&kv->scores, &kv->cap_scores, (int64_t)B * c->n_heads * T, "KV cache");
    if ((int64_t)B * c->vocab_size > kv->cap_logits) {
        if (kv->logits) cudaCheck(cudaFreeHost(kv->logits));
        kv->cap_logits = (int64_t)B * c->vocab_size;
        cudaCheck(cudaMallocHost((void **)&kv->logits, (size_t)kv->cap_logits * sizeof(float)));
    }
    float *cs = (float *)malloc((size_t)(2 * half) * sizeof(float));
    if (!cs) fail("out of host memory for the RoPE tables");
    host_rope_tables(cs, cs + half, c, T);
    cudaCheck(cudaMemcpy(kv->cosv, cs, (size_t)half * sizeof(float), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(kv->sinv, cs + half, (size_t)half * sizeof(float), cudaMemcpyHostToDevice));
    free(cs);
}

static void kv_free(KVCache *kv) {
    gpu_free(kv->k); gpu_free(kv->cosv); gpu_free(kv->scores);
    if (kv->logits) cudaCheck(cudaFreeHost(kv->logits));
    memset(kv, 0, sizeof *kv);
}

// One query per (b, h) at position pos against the cached keys and values 0..pos, kc and vc
// [B,T,KV,hd]; query head h reads kv head h/(H/KV):
//   out[B,H,hd] = sum_j softmax_j(q . k_j / sqrt(hd)) v_j,  with scores[B,H,T] as scratch.
// Thread mapping: one block per (b, h). Its threads first stride over the keys j <= pos, a
// thread scoring whole keys (the scores go to global scratch: T may exceed shared memory); the
// block reduces their max and the sum of the exponentials; then thread i owns the output dims
// i, i + blockDim, ... and sums over j in order, as train.c's attention_decode does.
template <typename Ot>
__global__ static void attention_decode_kernel(Ot *out, float *scores, const float *q, const float *kc, const float *vc,
                                               int B, int T, int pos, int H, int KV, int hd) {
    int b = blockIdx.x / H, h = blockIdx.x % H, kvh = h / (H / KV);
    const float *qh = q + ((int64_t)b * H + h) * hd;
    float *s = scores + ((int64_t)b * H + h) * T, scale = 1.0f / sqrtf((float)hd);
    float mx = -INFINITY;
    for (int j = threadIdx.x; j <= pos; j += blockDim.x) {
        const float *kj = kc + (((int64_t)b * T + j) * KV + kvh) * hd;
        float d = 0.0f;
        for (int i = 0; i < hd; i++) d += qh[i] * kj[i];
        s[j] = d * scale;
        mx = fmaxf(mx, s[j]);
    }
    mx = block_max(mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= pos; j += blockDim.x) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    sum = block_sum(sum);  // its __syncthreads also makes every thread's s[j] visible to the block
    Ot *o = out + ((int64_t)b * H + h) * hd;
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j <= pos; j++) acc += s[j] / sum * vc[(((int64_t)b * T + j) * KV + kvh) * hd + i];
        store_w(&o[i], acc);
    }
}
// out: an Act, as the training forward's attention output (act_bf16).
static void attention_decode(Act out, float *scores, const float *q, const float *kc, const float *vc,
                             int B, int T, int pos, int H, int KV, int hd) {
    PROFILE(PROF_ATTENTION);
    if (out.h) attention_decode_kernel<<<B * H, 128>>>(out.h, scores, q, kc, vc, B, T, pos, H, KV, hd);
    else attention_decode_kernel<<<B * H, 128>>>(out.f, scores, q, kc, vc, B, T, pos, H, KV, hd);
    launchCheck();
}

// Runs tokens[B] (host) at position pos, every sequence at the same position, appending their
// keys and values to the cache; the next-token logits [B,V] land in m->logits (train.c's
// model_decode_step, launcher for function).
static void model_decode_step(Model *m, KVCache *kv, const int *tokens, int pos) {
    const HostModel *c = m->h;
    int B = kv->B, D = c->dim, F = c->hidden_dim, V = c->vocab_size, H = c->n_heads,
        KV = c->n_kv_heads, hd = c->head_dim, Hq = H * hd, Hkv = KV * hd, half = hd / 2;
    if (pos >= kv->T) fail("generation: position %d beyond the cache (%d)", pos, kv->T);
    if (m->quant_stale) model_quantize(m);
    if (g_bf16 && (m->bf16_stale || !m->wbf)) model_cast_bf16(m);
    if (!g_bf16 && m->bf16_only) fail("internal: a bf16-only model run without --matmul bf16");
    model_alloc_acts(m, B, 1, 0);  // inference activations for B rows of one position
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= V) fail("token id %d out of range [0, %d)", tokens[b], V);
    cudaCheck(cudaMemcpy(m->inputs, tokens, (size_t)B * sizeof(int), cudaMemcpyHostToDevice));
    float *x = m->act[A_RESID], *q = m->act[A_Q], *k = m->act[A_K], *v = m->act[A_V];
    Act xn = act_in(m, A_XN1, 0), hmid = act_in(m, A_HMID, 0), att = act_in(m, A_ATT, 0),
        gate = act_in(m, A_GATE, 0), up = act_in(m, A_UP, 0);
    const float *cosp = kv->cosv + (int64_t)pos * half, *sinp = kv->sinv + (int64_t)pos * half;
    if (m->fwd_t[T_EMBED]) embedding_forward(x, m->inputs, m->fwd_t[T_EMBED], B, D);
    else embedding_forward(x, m->inputs, m->wbf_t[T_EMBED], B, D);  // a bf16-only model
    rmsnorm_forward(xn, m->act[A_RSTD1], x, layer_tensor(m->fwd_t, m, T_ATTN_NORM, 0), B, D, c->rms_norm_eps);
    for (int l = 0; l < c->n_layers; l++) {  // xn = rmsnorm(x) for the attention block, as layer_forward
        float *kc = kv->k + (int64_t)l * B * kv->T * Hkv, *vc = kv->v + (int64_t)l * B * kv->T * Hkv;
        model_layer_weights(m, l);
        matmul_forward(q, xn, weight(m, T_WQ, l), B, D, Hq);
        matmul_forward(k, xn, weight(m, T_WK, l), B, D, Hkv);
        matmul_forward(v, xn, weight(m, T_WV, l), B, D, Hkv);
        rope_forward(q, cosp, sinp, B, 1, H, hd);
        rope_forward(k, cosp, sinp, B, 1, KV, hd);
        // row b of k and v to cache row (b, pos): B rows of Hkv floats, strided by T * Hkv
        size_t row = (size_t)Hkv * sizeof(float), pitch = (size_t)kv->T * row;
        cudaCheck(cudaMemcpy2DAsync(kc + (int64_t)pos * Hkv, pitch, k, row, row, B, cudaMemcpyDeviceToDevice));
        cudaCheck(cudaMemcpy2DAsync(vc + (int64_t)pos * Hkv, pitch, v, row, row, B, cudaMemcpyDeviceToDevice));
        attention_decode(att, kv->scores, q, kc, vc, B, kv->T, pos, H, KV, hd);
        Norm norm2 = {xn, m->act[A_RSTD2], layer_tensor(m->fwd_t, m, T_MLP_NORM, l)};
        matmul_residual_norm(x, x, att, weight(m, T_WO, l), B, Hq, D, norm2, c->rms_norm_eps);  // in place, as layer_forward without a backward
        matmul_forward(gate, xn, weight(m, T_WGATE, l), B, D, F);
        matmul_forward(up, xn, weight(m, T_WUP, l), B, D, F);
        swiglu_forward(hmid, gate, up, (int64_t)B * F);
        matmul_residual_norm(x, x, hmid, weight(m, T_WDOWN, l), B, F, D, norm_after_layer(m, l), c->rms_norm_eps);
    }
    matmul_forward(model_logits(m, B), m->act[A_XNF], weight(m, lm_head_tensor(m), 0), B, D, V);
}

// lp[n] = log softmax(z_n)[target_n] for the positions of inputs[B,T] with a target: the
// forward, then crossentropy_forward_kernel's rows (-lp[n]; rows without a target get 0), so
// that only B*T numbers, never the B*T*V logits, come back to the host.
static void target_logprobs(Model *m, const int *inputs, const int *targets, int B, int T, double *lp) {
    int N = B * T;
    model_forward(m, inputs, NULL, B, T);
    cudaCheck(cudaMemcpy(m->targets, targets, (size_t)N * sizeof(int), cudaMemcpyHostToDevice));
    crossentropy_forward_kernel<<<N, 256>>>(m->rows, m->logits, m->targets, N, m->h->vocab_size);
    launchCheck();
    cudaCheck(cudaMemcpy(lp, m->rows, (size_t)N * sizeof(double), cudaMemcpyDeviceToHost));
    for (int n = 0; n < N; n++) lp[n] = -lp[n];
}

// What train.c's generation and scoring call (train_cu.h's HostInference), on the model g_infer.
static Model *g_infer;
static KVCache g_kv;

static void gpu_decode_begin(int B, int T) { kv_alloc(&g_kv, g_infer, B, T); }
static const float *gpu_decode_step(const int *tokens, int pos) {
    model_decode_step(g_infer, &g_kv, tokens, pos);
    cudaCheck(cudaMemcpy(g_kv.logits, g_infer->logits, (size_t)g_kv.B * g_infer->h->vocab_size * sizeof(float),
                         cudaMemcpyDeviceToHost));
    return g_kv.logits;
}
static void gpu_decode_end(void) {}  // the cache is kept for the next batch of prompts
static void gpu_target_logprobs(const int *inputs, const int *targets, int B, int T, double *lp) {
    target_logprobs(g_infer, inputs, targets, B, T, lp);
}
static const HostInference GPU_INFERENCE = {gpu_decode_begin, gpu_decode_step, gpu_decode_end, gpu_target_logprobs};

// ============================================================================================
// 11. Data parallelism: one process per GPU over NCCL, ZeRO-1 (Rajbhandari et al. 2020)
//
// The launcher's variables (dp.h: torchrun's, Open MPI's or Slurm's) place this process: rank r of
// W, on GPU local_rank. Rank 0 makes NCCL's id and hands it to the others over TCP at
// MASTER_ADDR:MASTER_PORT. The same global batch as one GPU: a step's accum micro-batches are dealt
// round-robin (rank r computes micro-batches r, r + W, ...), every rank draws all of them from the
// data RNG so that the RNG stays in step, and each loss keeps its scale 1/accum, so the gradients
// summed over the ranks are one GPU's. ZeRO-1: the parameter, gradient and moment buffers are split
// into W equal shards (padded, dp.h); gradients are reduce-scattered (summed), rank r keeps AdamW m
// and v of its shard alone, the clipping norm is the all-reduced sum of the shards' squares, each
// rank updates its shard of the fp32 master weights (train.c's weight decay per tensor) and the
// shards are all-gathered into every rank's full copy. WORLD_SIZE=1 takes this path too and writes
// the bytes of a plain run. Only rank 0 prints and writes files; every rank ends on the same numbers.

#ifdef USE_NCCL
static ncclComm_t g_nccl;
static void nccl_check(ncclResult_t r, const char *file, int line) {
    if (r != ncclSuccess) fail("NCCL at %s:%d: %s (%s)", file, line, ncclGetErrorString(r), ncclGetLastError(NULL));
}
#define ncclCheck(x) nccl_check((x), __FILE__, __LINE__)
#define DP_COLLECTIVE(call) ncclCheck(call)
#else
#define DP_COLLECTIVE(call) fail("train_cu was built without NCCL")
#endif

#ifdef USE_NCCL
// The longest wait for all ranks at the rendezvous: TRAIN_CU_RENDEZVOUS_TIMEOUT seconds [300].
static double dp_timeout(void) {
    const char *s = getenv("TRAIN_CU_RENDEZVOUS_TIMEOUT");
    double t = s ? atof(s) : 300.0;
    return t > 0 ? t : 300.0;
}
#endif

static int64_t dp_padded(int64_t n) { return g_dp.on ? dp_padded_floats(n, g_dp.world) : n; }
static int64_t dp_shard(const Model *m) { return dp_shard_floats(m->n_params, g_dp.world); }

// The launcher's variables, read before the GPU is chosen. Without NCCL a world of one runs the
// plain way, a larger one is refused. Ranks other than 0 print nothing (errors still reach stderr)
// unless TRAIN_CU_PRINT_ALL_RANKS=1 (for tests that compare the ranks' result lines).
static void dp_setup(void) {
    int n_gpus = 0;
    if (cudaGetDeviceCount(&n_gpus) != cudaSuccess) { n_gpus = 0; cudaGetLastError(); }
    char err[512];
    if (!dp_env_read(&g_dp, n_gpus, err, sizeof err)) fail("%s", err);
#ifndef USE_NCCL
    if (g_dp.world > 1)
        fail("%s's variables ask for %d processes, but train_cu was built without NCCL (make found no nccl.h, or NCCL=0): install "
             "NCCL and rebuild (make train_cu NCCL_HOME=DIR), or run one process", g_dp.source, g_dp.world);
    g_dp.on = 0;
#endif
    if (!g_dp.on) return;
    setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast stays off on shared machines unless the user set it
    const char *all = getenv("TRAIN_CU_PRINT_ALL_RANKS");
    if (g_dp.rank != 0 && !(all && !strcmp(all, "1")) && !freopen("/dev/null", "w", stdout))
        fail("rank %d: cannot silence stdout", g_dp.rank);
}

// After gpu_init chose GPU local_rank: the rendezvous and the NCCL communicator.
static void dp_connect(void) {
#ifdef USE_NCCL
    if (!g_dp.on) return;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (g_dp.rank == 0) ncclCheck(ncclGetUniqueId(&id));
    char err[512];
    if (!dp_rendezvous(&id, sizeof id, &g_dp, dp_timeout(), err, sizeof err)) fail("%s", err);
    ncclCheck(ncclCommInitRank(&g_nccl, g_dp.world, id, g_dp.rank));
    int v = 0;
    ncclCheck(ncclGetVersion(&v));
    printf("data parallel: %d process%s (%s's variables), rendezvous at %s:%d, NCCL %d.%d.%d, NCCL_NVLS_ENABLE=%s\n",
           g_dp.world, g_dp.world > 1 ? "es" : "", g_dp.source, g_dp.addr, g_dp.port, v / 10000, v / 100 % 100, v % 100,
           getenv("NCCL_NVLS_ENABLE"));
#endif
}

static void dp_finish(void) {
#ifdef USE_NCCL
    if (g_dp.on) ncclCheck(ncclCommDestroy(g_nccl));
#endif
}

// In place, on the default stream: buf[W * shard] summed over the ranks, rank r's shard at
// buf + r * shard; then every rank's shard gathered into buf; a double summed or taken from rank 0.
static void dp_reduce_scatter(float *buf, int64_t shard) {
    DP_COLLECTIVE(ncclReduceScatter(buf, buf + g_dp.rank * shard, (size_t)shard, ncclFloat, ncclSum, g_nccl, 0));
}
static void dp_all_gather(float *buf, int64_t shard) {
    DP_COLLECTIVE(ncclAllGather(buf + g_dp.rank * shard, buf, (size_t)shard, ncclFloat, g_nccl, 0));
}
static double dp_all_reduce(Model *m, double x) {
    cudaCheck(cudaMemcpy(m->d_sum, &x, sizeof x, cudaMemcpyHostToDevice));
    DP_COLLECTIVE(ncclAllReduce(m->d_sum, m->d_sum, 1, ncclDouble, ncclSum, g_nccl, 0));
    cudaCheck(cudaMemcpy(&x, m->d_sum, sizeof x, cudaMemcpyDeviceToHost));
    return x;
}
static double dp_broadcast(Model *m, double x) {
    cudaCheck(cudaMemcpy(m->d_sum, &x, sizeof x, cudaMemcpyHostToDevice));
    DP_COLLECTIVE(ncclBroadcast(m->d_sum, m->d_sum, 1, ncclDouble, 0, g_nccl, 0));
    cudaCheck(cudaMemcpy(&x, m->d_sum, sizeof x, cudaMemcpyDeviceToHost));
    return x;
}

// What model_alloc_training gave this rank under ZeRO-1.
static void dp_report_shard(const Model *m) {
    size_t ns = (size_t)dp_shard(m) * sizeof(float);
    printf("ZeRO-1: rank %d of %d owns floats [%lld, %lld) of %lld (padded to %lld); AdamW m, v %.1f MiB a rank "
           "(%.1f MiB unsharded)\n", g_dp.rank, g_dp.world, (long long)(g_dp.rank * dp_shard(m)),
           (long long)((g_dp.rank + 1) * dp_shard(m)), (long long)m->n_params, (long long)dp_padded(m->n_params),
           2.0 * ns / 1048576.0, 2.0 * m->n_params * sizeof(float) / 1048576.0);
}

// After the micro-batches: this rank's shard of the summed gradients; the step's loss over all ranks.
static double dp_reduce_gradients(Model *m, double loss) {
    PROFILE(PROF_OPTIMIZER);
    dp_reduce_scatter(m->grads, dp_shard(m));
    return dp_all_reduce(m, loss);
}

// clip_grad_norm over the shards: |g|^2 = sum over ranks of the shard's squares.
static float dp_clip_grad_norm(Model *m, float clip, float *gscale) {
    PROFILE(PROF_OPTIMIZER);
    int64_t shard = dp_shard(m);
    float *g = m->grads + g_dp.rank * shard;
    float norm = (float)sqrt(dp_all_reduce(m, sum_squares(m, g, shard)));
    *gscale = clip > 0 && norm > clip ? clip / norm : 1.0f;
    return norm;
}

// adamw_update on this rank's shard [lo, lo + shard): adamw_update's spans (dp.h) cut to the
// shard, m and v indexed from lo; then every rank gets every shard of the new parameters.
static void dp_adamw_update(Model *m, const OptConfig *o, float lr, float gscale) {
    PROFILE(PROF_OPTIMIZER);
    m->step++;
    cudaCheck(cudaMemsetAsync(m->d_bad, 0, sizeof(int)));  // the kernels' non-finite flag (params_finite)
    float bc1 = 1.0f - powf(o->beta1, (float)m->step), bc2 = 1.0f - powf(o->beta2, (float)m->step);
    int64_t offset[N_TENSORS], numel[N_TENSORS], shard = dp_shard(m), lo = g_dp.rank * shard;
    for (int t = 0; t < N_TENSORS; t++) { offset[t] = m->h->offset[t]; numel[t] = tensor_numel(m, t); }
    DpSpan spans[N_TENSORS + 1], mine[N_TENSORS + 1];
    int n = dp_param_spans(spans, offset, numel, m->h->rows, N_TENSORS, m->n_table, m->n_params, o->weight_decay);
    n = dp_clip_spans(mine, spans, n, lo, lo + shard);
    for (int i = 0; i < n; i++) {
        int64_t b = mine[i].begin;
        adamw_span(m, m->params + b, m->grads + b, m->adam_m + (b - lo), m->adam_v + (b - lo), mine[i].n, gscale, o, lr, mine[i].wd,
                   bc1, bc2);
    }
    dp_all_gather(m->params, shard);
    if (m->quant.method != QUANT_NONE) m->quant_stale = 1;
    m->bf16_stale = 1;
}

// checkpoint_save under ZeRO-1: m and v gathered (through the gradient buffer, free after the
// update) into the host's full copies; rank 0 writes the file.
static void dp_checkpoint_save(Model *m, const HostTrainState *st) {
    int64_t shard = dp_shard(m);
    size_t n = (size_t)m->n_params * sizeof(float);
    if (g_dp.rank == 0) {
        cudaCheck(cudaMemcpy(m->h->params, m->params, n, cudaMemcpyDeviceToHost));
        host_alloc_training(m->h);
    }
    for (int k = 0; k < 2; k++) {
        cudaCheck(cudaMemcpy(m->grads + g_dp.rank * shard, k ? m->adam_v : m->adam_m, (size_t)shard * sizeof(float),
                             cudaMemcpyDeviceToDevice));
        dp_all_gather(m->grads, shard);
        if (g_dp.rank == 0) cudaCheck(cudaMemcpy(k ? m->h->adam_v : m->h->adam_m, m->grads, n, cudaMemcpyDeviceToHost));
    }
    cudaCheck(cudaMemset(m->grads, 0, (size_t)dp_padded(m->n_params) * sizeof(float)));
    if (g_dp.rank == 0) host_checkpoint_save(m->h, st);
}

// --resume under ZeRO-1: every rank reads the checkpoint (train.c's checkpoint_load, which checks
// it) and keeps its shard of m and v.
static void dp_resume(Model *m, HostTrainState *st) {
    host_resume(m->h, st);
    model_upload(m, 0);
    model_alloc_training(m);
    int64_t shard = dp_shard(m), lo = g_dp.rank * shard, k = m->n_params - lo < shard ? m->n_params - lo : shard;
    if (k > 0) {
        cudaCheck(cudaMemcpy(m->adam_m, m->h->adam_m + lo, (size_t)k * sizeof(float), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(m->adam_v, m->h->adam_v + lo, (size_t)k * sizeof(float), cudaMemcpyHostToDevice));
    }
}

// ============================================================================================
// 12. The training loop and main

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
            if (micro % g_dp.world != g_dp.rank) continue;  // another rank's micro-batch (section 11)
            if (d) {
                loss += distill_step(m, teacher, d, inputs, targets, B, T, 1.0f / accum) / accum;
            } else {
                model_forward_hidden(m, inputs, targets, B, T);
                loss += model_backward_scaled(m, targets, 1.0f / accum) / accum;
            }
        }
        if (g_dp.on) loss = dp_reduce_gradients(m, loss);
        if (!isfinite(loss))
            fail("step %lld: the loss is %f; stopping, the last checkpoint%s is intact", (long long)step + 1, loss, ckpt ? "" : " (none)");
        float gscale, norm = g_dp.on ? dp_clip_grad_norm(m, opt->grad_clip, &gscale) : clip_grad_norm(m, opt->grad_clip, &gscale);
        float lr = host_lr_at(step);
        if (g_dp.on) dp_adamw_update(m, opt, lr, gscale);
        else adamw_update(m, opt, lr, gscale);
        if (!params_finite(m))
            fail("step %lld: a weight became NaN or Inf (lower --lr?); stopping, the last checkpoint%s is intact",
                 (long long)step + 1, ckpt ? "" : " (none)");
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

// --bench: train.c's bench on the GPU, with its JSON keys. Full training steps (forward, backward,
// AdamW) of --micro-batch x --seq random tokens, each timed from its first launch to
// cudaDeviceSynchronize; the best of --steps after one warm-up step (cuBLAS's heuristics, the
// first allocations). The reference, measured in the same run: the bare matmul of the MLP's up
// projection, [B*T, D] x [D, F], through the same cuBLAS call and --matmul precision the model
// uses, best of three.
static void bench(Model *m, const HostArgs *a, int T, char *json, size_t n) {
    model_alloc_training(m);
    int B = a->micro_batch, V = m->h->vocab_size;
    int *inputs = (int *)malloc((size_t)B * T * sizeof(int)), *targets = (int *)malloc((size_t)B * T * sizeof(int));
    if (!inputs || !targets) fail("out of host memory");
    host_bench_tokens(inputs, targets, B * T, V);
    OptConfig opt = {a->lr, a->beta1, a->beta2, a->eps, a->weight_decay, a->grad_clip};
    double best = 1e30;
    for (int s = 0; s <= a->bench; s++) {
        cudaCheck(cudaDeviceSynchronize());
        double t0 = now_seconds();
        model_zero_grad(m);
        model_forward_hidden(m, inputs, targets, B, T);  // the training step's path: the classifier fused with the loss
        model_backward_scaled(m, targets, 1.0f);
        adamw_update(m, &opt, a->lr, 1.0f);
        cudaCheck(cudaDeviceSynchronize());
        double dt = now_seconds() - t0;
        if (s > 0 && dt < best) best = dt;
        printf("bench step %d/%d: %.4f s%s\n", s, a->bench, dt, s == 0 ? " (warm-up)" : "");
        fflush(stdout);
    }
    double tps = B * T / best, gflops = tps * host_train_flops_per_token(m->h, T) / 1e9;
    int N = B * T, D = m->h->dim, F = m->h->hidden_dim;
    double kbest = 1e30;
    for (int r = 0; r < 3; r++) {
        cudaCheck(cudaDeviceSynchronize());
        double t0 = now_seconds();
        matmul_forward(act_in(m, A_UP, 0), act_in(m, A_XN2, 0), weight(m, T_WUP, 0), N, D, F);
        cudaCheck(cudaDeviceSynchronize());
        double dt = now_seconds() - t0;
        kbest = dt < kbest ? dt : kbest;
    }
    double kernel = 2.0 * N * D * F / kbest / 1e9;
    note_peak();
    printf("bench: %lld params, %d x %d tokens per step, best %.4f s: %.0f tokens/s, %.1f GFLOP/s "
           "(%.0f%% of the cuBLAS matmul's %.1f GFLOP/s on [%d,%d]x[%d,%d] in this run; --matmul %s)\n",
           (long long)m->n_params, B, T, best, tps, gflops, 100.0 * gflops / kernel, kernel, N, D, D, F,
           g_bf16 ? "bf16" : g_compute == CUBLAS_COMPUTE_32F ? "fp32" : "tf32");
    snprintf(json, n, "\"bench\": {\"params\": %lld, \"batch\": %d, \"seq\": %d, \"step_s\": %.4f, \"tokens_per_s\": %.1f, "
             "\"gflops\": %.2f, \"matmul_gflops\": %.2f, \"fraction_of_matmul\": %.3f}",
             (long long)m->n_params, B, T, best, tps, gflops, kernel, gflops / kernel);
    free(inputs); free(targets);
}

// No GPU: one clear line and exit 1 (before any model is loaded).
static void gpu_init(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0)
        fail("no CUDA GPU is available (%s); train_cu needs an NVIDIA GPU and driver; ./train runs on the CPU",
             e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
    if (g_dp.local_rank >= n) fail("%s's local rank %d, but this machine has %d GPU%s", g_dp.source, g_dp.local_rank, n, n > 1 ? "s" : "");
    cudaCheck(cudaSetDevice(g_dp.local_rank));
    cudaDeviceProp p;
    cudaCheck(cudaGetDeviceProperties(&p, g_dp.local_rank));
    printf("GPU: %s, %.1f GiB, compute capability %d.%d, %d multiprocessors\n", p.name, p.totalGlobalMem / 1073741824.0,
           p.major, p.minor, p.multiProcessorCount);
    lt_init();
    const char *prof = getenv("TRAIN_CU_PROFILE");
    g_prof_on = prof && *prof && strcmp(prof, "0") != 0;
}

// train_cu's flags of its own, taken out before train.c's parser sees the rest.
static void parse_gpu_flags(int *argc, char **argv) {
    int o = 1, attention_given = 0;
    for (int i = 1; i < *argc; i++) {
        if (!strcmp(argv[i], "--matmul")) {
            if (i + 1 >= *argc) fail("--matmul: missing value (fp32, tf32 or bf16)");
            const char *v = argv[++i];
            g_bf16 = !strcmp(v, "bf16");
            if (!strcmp(v, "fp32")) g_compute = CUBLAS_COMPUTE_32F;
            else if (!strcmp(v, "tf32") || g_bf16) g_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
            else fail("--matmul: expected fp32, tf32 or bf16, got '%s'", v);
            continue;
        }
        if (!strcmp(argv[i], "--attention")) {
            if (i + 1 >= *argc) fail("--attention: missing value (gemm, fused or flash)");
            const char *v = argv[++i];
            attention_given = 1;
            g_attention_gemm = !strcmp(v, "gemm");
            g_attention_flash = !strcmp(v, "flash");
            if (!g_attention_gemm && !g_attention_flash && strcmp(v, "fused") != 0)
                fail("--attention: expected gemm, fused or flash, got '%s'", v);
            continue;
        }
        if (!strcmp(argv[i], "--loss-chunk")) {
            if (i + 1 >= *argc) fail("--loss-chunk: missing value (rows, or 0 for automatic)");
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 0 || v > (1L << 30)) fail("--loss-chunk: expected rows >= 0, got '%s'", argv[i]);
            g_loss_chunk = (int)v;
            continue;
        }
        if (!strcmp(argv[i], "--layered-wq")) {
            g_layered_wq_flag = 1;
            continue;
        }
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
            printf("train_cu: the GPU build of ./train. It takes ./train's flags below (--clip runs train.c's\n"
                   "search on the CPU) and four of its own:\n"
                   "  --matmul fp32|tf32|bf16  matmul precision: tf32 tensor cores, plain fp32, or bf16 operands\n"
                   "                        with fp32 accumulation (fp32 master weights; a bf16 teacher) [bf16]\n"
                   "  --attention gemm|fused|flash  attention through cuBLAS with [T,T] scores per head\n"
                   "                        (TF32), the fused fp32 kernel (no [T,T] memory, CUDA cores), or the\n"
                   "                        FlashAttention-2 kernel (bf16 tensor cores, no [T,T]; head_dim <= 128)\n"
                   "                        [flash under --matmul bf16, gemm under tf32 and fp32]\n"
                   "  --loss-chunk ROWS     rows of logits the classifier and loss take at a time (their\n"
                   "                        [B,T,V] logits are never stored); 0: 128 MiB of fp32 a chunk [0]\n"
                   "  --layered-wq          while training, keep the student's fake-quantized weights W^ for one\n"
                   "                        layer at a time, remade from its codes before the layer's forward and\n"
                   "                        backward: the same results in less memory (1.8 GiB on TinyLlama,\n"
                   "                        11.7 GiB on Llama-2-7B), 1-5%% slower\n"
                   "Several GPUs: one process a GPU, placed by torchrun's, mpirun's or Slurm's variables (RANK,\n"
                   "WORLD_SIZE, LOCAL_RANK; MASTER_ADDR, MASTER_PORT [127.0.0.1:29500]); --batch is the global batch.\n\n");
        argv[o++] = argv[i];
    }
    *argc = o;
    argv[o] = NULL;
    // attention's precision follows the matmuls': bf16 tensor cores (flash) under bf16, measured
    // 1.17x gemm's tokens/s at 2 GiB less (README, "The GPU build"); exact fp32 products otherwise
    if (!attention_given) { g_attention_flash = g_bf16; g_attention_gemm = !g_bf16; }
}

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

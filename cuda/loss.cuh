/*
 * cuda/loss.cuh: the losses on the GPU: cross-entropy rows of full logits (inference), loss.h's
 * distillation losses with their dL/dlogits on a chunk of rows (one block a row), Wasserstein (one
 * thread a row), and the teacher's confidence gamma.
 * Needs: loss.h (DistillLoss, the loss functions, QD), common.cuh (reductions, gpu_limits, Act,
 * launchCheck).
 */

// --- cross-entropy over rows with target >= 0, of full logits (model_forward) ----------------
// rows[n] = log sum_v exp(z_v - max) + max - z[target] (0 for rows without a target); the host
// averages. Its backward is train.cu's fused head_loss (section 6), which training uses.
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
static void crossentropy_forward(double *rows, const float *logits, const int *targets, int N, int V) {
    crossentropy_forward_kernel<<<N, 256>>>(rows, logits, targets, N, V);
    launchCheck();
}

// --- distillation losses over a chunk of rows: rows[N], dlogits[N,V] from zs[N,V], zt[N,Vt] ---
// loss.h's losses on a chunk of rows (positions): a block takes one row at a time, reduces the
// log-sum-exps and the two KL sums over the vocabulary in double, the sums of kl_mix_tempered and
// ce_add, and writes the gradient in place, in three passes over the row: the log-sum-exps of zs
// and zt (online: one read each), the KL sums, the gradient. Wasserstein sorts, so it runs loss.h's
// wasserstein_loss itself, one thread per position, on a scratch row each.
//
// Each term's exponential is taken in float (exp_f): the log-probabilities, their differences and
// the sums stay in double as loss.h's, but double's exp is a long instruction sequence, six of
// them a vocabulary entry, which would make the kernel compute-bound. A term's relative error is
// then float's (~1e-7), far below the tolerances the parity tests hold the losses and dL/dlogits
// to (1e-5 and 1e-4).
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
// zt read once and dz written once, 12V bytes (0.4 GB a chunk of 1,048 rows of a 32k vocabulary).
// At most 1024 threads an SM (a 1024-thread block at 64 registers fills the register file). Blocks of 128 to
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
static void distill_loss_wasserstein(double *rows, float *dlogits, float *scratch, const float *zs, const float *zt,
                                     const int *labels, int N, int V, int Vt, float scale, float accum) {
    wasserstein_loss_kernel<<<blocks_for(N, 64), 64>>>(rows, dlogits, scratch, zs, zt, labels, N, V, Vt, scale, accum);
    launchCheck();
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
static void gamma_rows(double *rows, const float *teacher, int N, int Vt) {
    gamma_rows_kernel<<<N, 256>>>(rows, teacher, Vt);
    launchCheck();
}

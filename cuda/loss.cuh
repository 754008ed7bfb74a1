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
// loss.h's losses on a chunk of rows (positions), a block a row at a time, in two passes over the
// row. With u = zs / tau, w = zt / tau, lse_s = logsumexp(u), lse_t = logsumexp(w), the
// log-probabilities ls_v = u_v - lse_s, lt_v = w_v - lse_t and the logits' difference d = zt - zs,
// both KL divergences are first moments of d:
//   KL(P_T || P_S) = sum_v P_T(v) (lt_v - ls_v) = E_T[d] / tau - (lse_t - lse_s),
//   KL(P_S || P_T) = sum_v P_S(v) (ls_v - lt_v) = (lse_t - lse_s) - E_S[d] / tau.
// So pass 1 reads zs and zt once for the log-sum-exps (online) and these moments, and pass 2 writes
// the gradient, which needs KL(P_S || P_T) (loss.h's kl_mix_tempered). Wasserstein sorts, so it
// runs loss.h's wasserstein_loss itself, one thread per position, on a scratch row each.
//
// Precision: each term (an exponential, a product) is computed in float and added to a sum kept
// in double, a thread's, then the block's. The terms keep float's relative precision (~1e-7,
// expf's 2 ulp included) because their arguments do: an exponential takes z - m, m the row's (or
// the thread's) largest logit, not z / tau - lse, whose float would be off by 1e-3 at logits of
// 1e4; and the log-probabilities' difference is formed from the logits' difference,
//   ls_v - lt_v = (zs_v - zt_v) / tau + (lse_t - lse_s),
// so that its error is relative to how far the teacher is from the student, not to the logits'
// magnitude (a student identical to its teacher gives a loss and a gradient of exactly 0, as in
// loss.h). The KLs then come out within a few 1e-8 (absolute) of loss.h's double ones where
// zt - zs is of order 1 (more, in proportion, for a teacher offset from the student by tens), and
// dL/dlogits with float's error on its terms P_S(v), P_T(v): far below the tolerances the parity
// tests hold them to (1e-5 relative, at KLs of ~0.1, and 1e-4 of dL/dlogits' largest). That
// absolute error, the log-sum-exps' (float exponentials summed), leaves a KL below ~1e-3 known
// to ~1e-5 relative only.

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

// Pass 1's sums of one thread over one row of logits z (zs or zt), online (Milakov & Gimelshein
// 2018, the recurrence of FlashAttention's softmax): m is the largest logit read so far and, over
// the logits read,
//   s = sum_v exp((z_v - m) / tau),   sd = sum_v exp((z_v - m) / tau) d_v   (d = zt - zs);
// a piece of W logits whose largest, c, exceeds m first rescales both sums by exp((m - c) / tau),
// m = c. m starts at -FLT_MAX rather than -inf: a thread that reads no logit (V < W blockDim.x)
// keeps s = 0, and neither this rescale nor the block's below computes -inf - (-inf) = NaN (a -inf
// logit adds exp(-inf) = 0; a NaN one makes s NaN, as in loss.h).
struct Online {
    float m;
    double s, sd;
};
template <int W>
__device__ static inline void online_add(Online &o, const float *z, const float *d, float inv_tau) {
    float c = z[0];
#pragma unroll
    for (int e = 1; e < W; e++) c = fmaxf(c, z[e]);
    if (c > o.m) {
        float r = expf((o.m - c) * inv_tau);
        o.s *= r;
        o.sd *= r;
        o.m = c;
    }
#pragma unroll
    for (int e = 0; e < W; e++) {
        float x = expf((z[e] - o.m) * inv_tau);
        o.s += x;
        o.sd += x * d[e];
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

// Piece i of zs into a and, with a teacher (kl), of zt into b; nothing past the row's last piece.
// Last: the loads of pass 2 (load_last). Each pass loads a thread's next piece before it works on
// the one in hand, so that the next piece's loads are in flight during this one's math.
template <int W, bool Last>
__device__ static inline void load_piece(float *a, float *b, const float *zs, const float *zt, int i, int pieces, bool kl) {
    if (i >= pieces) return;
    if constexpr (Last) {
        load_last<W>(a, zs + i * W);
        if (kl) load_last<W>(b, zt + i * W);
    } else {
        load_floats<W>(a, zs + i * W);
        if (kl) load_floats<W>(b, zt + i * W);
    }
}

// One position's loss and dz = dL/dzs, the sums of loss.h's kl_mix_tempered and ce_add:
//   KL part (every loss but ce): (1 - g) KL(P_T^tau || P_S^tau) + g KL(P_S^tau || P_T^tau),
//     dz_v += s_kl/tau ((1 - g)(ps_v - pt_v) + g ps_v (ls_v - lt_v - KL(P_S || P_T))),
//     g = 0 for fkl, 1 for rkl, gamma for cakld and cakld_ce; tau and s_kl = scale tau^2 for
//     cakld_ce, else 1 and scale;
//   CE part (ce, cakld_ce): -log P_S(label),  dz_v += scale (ps_v - 1{v = label}) at tau = 1;
// then dz *= accum. Thread i owns the W-float pieces i, i + blockDim.x, ... of the row.
// The block's sums from the threads' (m, s, sd): with M = max_t m_t (the row's largest logit, as
// loss.h's), each thread's s and sd are rescaled by exp((m_t - M) / tau), then summed, so that
// lse = M / tau + log s and E[d] = sd / s. The max is reduced first so that each thread's sums
// are rescaled once, their rounding independent of the others' (a tree of pairwise (max, sum)
// merges would round one factor into half the sum at each level).
// dz (Dz: float, or bf16 under --matmul bf16 when the classifier's backward follows) may be zs
// itself (head_loss overwrites a chunk's logits with their fp32 gradient): every read of zs and zt
// in pass 1 (z_label included) comes before the last reduction's __syncthreads, and pass 2 reads
// zs[v] and zt[v] in the thread that then writes dz[v]. The returned loss is every thread's.
template <int W, typename Dz>
__device__ static double block_distill(Dz *dz, const float *zs, const float *zt, int label, int V, DistillLoss loss,
                                       float scale, float accum) {
    int kind = loss.kind, kl = kind != LOSS_CE, ce = kind == LOSS_CE || kind == LOSS_CAKLD_CE, pieces = V / W;
    float tau = kind == LOSS_CAKLD_CE ? loss.temperature : 1.0f, inv_tau = 1.0f / tau;
    float g = kind == LOSS_FKL ? 0.0f : kind == LOSS_RKL ? 1.0f : loss.gamma;
    float k = (kind == LOSS_CAKLD_CE ? scale * tau * tau : scale) * inv_tau;  // s_kl / tau
    bool one = ce && tau != 1.0f;  // the CE's lse (tau = 1) is not lse_s
    double z_label = ce ? (double)zs[label] : 0.0;
    // pass 1: a thread's sums S over zs / tau, T over zt / tau, S1 over zs (the CE's; its sd unused)
    Online S = {-FLT_MAX, 0.0, 0.0}, T = S, S1 = S;
    float a[W] = {}, b[W] = {};  // the piece in hand, of zs and zt
    load_piece<W, false>(a, b, zs, zt, threadIdx.x, pieces, kl);
    for (int i = threadIdx.x; i < pieces; i += blockDim.x) {
        float an[W] = {}, bn[W] = {}, d[W];
        load_piece<W, false>(an, bn, zs, zt, i + blockDim.x, pieces, kl);
#pragma unroll
        for (int e = 0; e < W; e++) d[e] = kl ? b[e] - a[e] : 0.0f;  // zt - zs
        online_add<W>(S, a, d, inv_tau);
        if (kl) online_add<W>(T, b, d, inv_tau);
        if (one) online_add<W>(S1, a, d, 1.0f);
#pragma unroll
        for (int e = 0; e < W; e++) a[e] = an[e], b[e] = bn[e];
    }
    // the block's: the row's largest logits m (of zs and zt), then the sums rescaled to them
    float m[2] = {S.m, T.m};
    block_reduce_k<MaxF>(m);
    float fs = expf((S.m - m[0]) * inv_tau), ft = expf((T.m - m[1]) * inv_tau), f1 = expf(S.m - m[0]);
    double r[5] = {S.s * fs, S.sd * fs, T.s * ft, T.sd * ft, S1.s * f1};
    block_reduce_k<SumD>(r);
    // lse_s = m_s / tau + log_s, lse_t = m_t / tau + log_t, the CE's lse_1 = m_s + log_1
    double log_s = log(r[0]), log_t = kl ? log(r[2]) : 0.0, log_1 = one ? log(r[4]) : log_s;
    double lse_ts = kl ? ((double)m[1] - m[0]) / tau + (log_t - log_s) : 0.0;  // lse_t - lse_s
    double fkl = kl ? r[3] / r[2] / tau - lse_ts : 0.0, rkl = kl ? lse_ts - r[1] / r[0] / tau : 0.0;
    // pass 2: the gradient, in float, each piece read, then overwritten, by its own thread
    float ms = m[0], mt = m[1], rs = (float)log_s, rt = (float)log_t, r1 = (float)log_1;
    float lse_ts_f = (float)lse_ts, rkl_f = (float)rkl;
    load_piece<W, true>(a, b, zs, zt, threadIdx.x, pieces, kl);
    for (int i = threadIdx.x; i < pieces; i += blockDim.x) {
        float an[W] = {}, bn[W] = {}, d[W];
        load_piece<W, true>(an, bn, zs, zt, i + blockDim.x, pieces, kl);
#pragma unroll
        for (int e = 0; e < W; e++) {
            float ps = expf((a[e] - ms) * inv_tau - rs), x = 0.0f;  // P_S^tau(v)
            if (kl) {
                float pt = expf((b[e] - mt) * inv_tau - rt);        // P_T^tau(v)
                float dl = (a[e] - b[e]) * inv_tau + lse_ts_f;      // ls_v - lt_v
                x = k * ((1.0f - g) * (ps - pt) + g * ps * (dl - rkl_f));
            }
            if (ce) x += scale * (one ? expf(a[e] - ms - r1) : ps) - (i * W + e == label ? scale : 0.0f);
            d[e] = x * accum;
        }
        store_last<W>(dz + i * W, d);
#pragma unroll
        for (int e = 0; e < W; e++) a[e] = an[e], b[e] = bn[e];
    }
    double l = kl ? (1.0 - g) * fkl + g * rkl : 0.0;
    if (kind == LOSS_CAKLD_CE) l *= (double)tau * tau;
    return ce ? l + ((double)ms + log_1 - z_label) : l;
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

// The grid: pass 2 re-reads the row pass 1 read, so the rows in flight (one a block), 8V bytes
// each (4V without a teacher), are kept within two thirds of L2 (a 1024-thread block on each of
// an H100's 132 SMs at a 32k vocabulary: 34 MB of its 50); then DRAM sees each row's zs and zt read
// once and dz written once, 12V bytes (10V with dz in bf16). At most 1024 threads an SM (a
// 1024-thread block at 64 registers fills the register file). Blocks of 128 to 1024 threads, at
// least 4 pieces a thread, so that a small vocabulary leaves few idle; a row's result depends on
// the block size alone (so on V), not on the grid. W = 4 when V % 4 == 0 and the rows are 16
// bytes aligned (dz: 8 in bf16). dz: an Act, fp32 (may be zs) or bf16.
static void distill_loss(double *rows, Act dz, const float *zs, const float *zt, const int *labels, int N, int V,
                         DistillLoss loss, float scale, float accum) {
    if (N <= 0) return;
    int w4 = V % 4 == 0 && ((uintptr_t)dz.f | (uintptr_t)zs | (uintptr_t)zt) % 16 == 0 && (uintptr_t)dz.h % 8 == 0;
    int pieces = w4 ? V / 4 : V, threads = 128, sms, l2;
    while (threads < 1024 && threads * 4 < pieces) threads *= 2;
    gpu_limits(&sms, &l2);
    int64_t grid = (int64_t)sms * (1024 / threads), fit = (int64_t)l2 * 2 / 3 / ((loss.kind == LOSS_CE ? 4 : 8) * (int64_t)V);
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

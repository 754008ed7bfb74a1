/*
 * cuda/attention.cuh: causal grouped-query attention on CUDA cores and through cuBLAS:
 *   - fused (--attention fused): the FlashAttention recurrence in one kernel forward, two backward;
 *   - gemm (--attention gemm): the [T,T] scores materialised, products by cuBLASLt, the causal
 *     softmax and its backward as kernels;
 *   - decode: one position per sequence against a KV cache (generation).
 * The tensor-core kernels (--attention flash) are flash_attention.cuh's.
 * Needs: common.cuh (reductions, store_w, Act, PROFILE), matmul.cuh (lt_matmul, g_compute).
 */

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

// out[B,T,H,hd], lse[B,H,T] from q[B,T,H,hd], k, v[B,T,KV,hd], by the recurrence above. Shared
// memory: the block's ATT_Q queries (hd floats each), then one tile of keys and one of values
// (ATT_KT rows of hd + 1). Registers: a lane's output dims o[], the running max and sum.
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

// dk, dv[B,T,KV,hd] += the sums above over every query t >= j of the kv head's query heads.
// Shared memory: the block's ATT_Q keys and values (hd floats each), a tile of ATT_KT queries and
// of their dO (rows of hd + 1), their lse and Delta. Registers: a lane's dims of dk and dv.
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

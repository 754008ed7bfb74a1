/*
 * cuda/rmsnorm.cuh: RMSNorm forward (into fp32 or bf16) and backward (dx, its bf16 copy, dw summed
 * in a fixed order, so the same every run).
 * Needs: common.cuh (warp_sum, load_floats/store_floats, store_w4, gpu_grow, Act, PROFILE).
 */

// --- RMSNorm: y[N,C] = x / sqrt(mean(x^2) + eps) * w[C] ------------------------------------
// Thread mapping: one warp per row. When C % 4 == 0 and the pointers are 16 bytes aligned (bf16
// y: 8), as the activation slots are (then every row is), its lanes take the row as float4s:
// lane j the float4s j, j + 32, ..., held in registers (NV of them, NV = C / 128 rounded up to a
// launched size) from the first pass, where all NV loads are in flight at once, to the second,
// where they are normed, so the row is read from memory once. Wider rows (NV 0) and the others
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
// y[N,C], rstd[N] = 1 / sqrt(mean(x^2) + eps) from x[N,C], w[C], as above; NV float4s a lane in
// registers (0: none, the strided loops).
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
// Shared memory: the chunk's r and r^3 mean(g * x), RMS_ROWS floats each. The second pass reads
// dy and x again (mostly from memory: with every chunk in flight at once, most of a chunk's rows
// have left L2); summing dw in the same pass spares a third read of them.
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

/*
 * cuda/adamw.cuh: AdamW (Loshchilov & Hutter 2019) on a span of parameters, and the sum of squares
 * of the gradients (in double, in a fixed order) that the clipping norm takes.
 * Needs: common.cuh (block_sum_d, blocks_for, gpu_malloc, cudaCheck, launchCheck).
 */

typedef struct {
    float lr, beta1, beta2, eps, weight_decay, grad_clip;
} OptConfig;

// Thread mapping (sum_squares_kernel): threads stride over the elements. The sum of squares
// reduces per block in double into parts[blockIdx.x], and sum_parts_kernel (one block of
// SUM_BLOCKS threads, one part each) adds the parts up in a fixed tree: the same norm every run
// (an atomicAdd of each block's total would add them in any order, so the clipping factor and every
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
// *out = sum_i parts[i], i < SUM_BLOCKS. Thread mapping: one block of SUM_BLOCKS threads, thread i
// holding parts[i]; block_sum_d's fixed tree adds them.
__global__ static void sum_parts_kernel(double *out, const double *parts) {
    double s = block_sum_d(parts[threadIdx.x]);
    if (threadIdx.x == 0) *out = s;
}
// The sum of squares of g[n], in double, on the host; d_sum: one double of device scratch.
static double sum_squares(double *d_sum, const float *g, int64_t n) {
    static double *parts;
    if (!parts) parts = (double *)gpu_malloc(SUM_BLOCKS * sizeof(double), "scratch");
    sum_squares_kernel<<<SUM_BLOCKS, 256>>>(parts, g, n);
    sum_parts_kernel<<<1, SUM_BLOCKS>>>(d_sum, parts);
    launchCheck();
    double ss;
    cudaCheck(cudaMemcpy(&ss, d_sum, sizeof ss, cudaMemcpyDeviceToHost));
    return ss;
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
// the parameters).
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
// One span of parameters p[n] with their gradients and moments; *bad set if a parameter becomes NaN or Inf.
static void adamw_span(float *p, const float *g, float *mm, float *vv, int64_t n, float gscale, const OptConfig *o, float lr,
                       float wd, float bc1, float bc2, int *bad) {
    if (n <= 0) return;
    if (((uintptr_t)p | (uintptr_t)g | (uintptr_t)mm | (uintptr_t)vv) % 16 == 0)
        adamw_span_kernel<4><<<blocks_for((n + 3) / 4, 256), 256>>>(p, g, mm, vv, n, gscale, o->beta1, o->beta2, o->eps, lr, wd,
                                                                    bc1, bc2, bad);
    else
        adamw_span_kernel<1><<<blocks_for(n, 256), 256>>>(p, g, mm, vv, n, gscale, o->beta1, o->beta2, o->eps, lr, wd, bc1, bc2,
                                                          bad);
    launchCheck();
}

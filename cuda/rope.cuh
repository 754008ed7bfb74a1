/*
 * cuda/rope.cuh: rotary position embedding (rotate half) and its backward, in place in fp32 or
 * into a bf16 copy.
 * Needs: common.cuh (load_floats/store_floats, blocks_for, PROFILE).
 */

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

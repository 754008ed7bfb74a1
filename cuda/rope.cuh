/*
 * cuda/rope.cuh: rotary position embedding (rotate half) and its backward, in place in fp32 or
 * into a bf16 copy (from fp32 or bf16, rows at strides).
 * Needs: common.cuh (load_floats/store_floats, blocks_for, PROFILE).
 */

// --- RoPE (rotate half) of x[B,T,NH,hd], into y ------------------------------------------------
//   y[i] = x[i] cos - x[i+hd/2] sin,   y[i+hd/2] = x[i+hd/2] cos + x[i] sin;  backward: sin -> -sin.
// In place (y = x, fp32), or into a bf16 y (Act), the values of the fp32 rotation and cast_bf16 in
// one pass: --attention flash's q and k (forward), and the bf16 dq, dk their matmuls read
// (backward, --matmul bf16), from fp32 or, as cuDNN's backward writes them, from bf16 (in place).
// A position's NH heads start ldx values after the last position's in x, ldy in y (NH hd when
// x or y holds them alone; more where dq, dk and dv share the rows of one buffer).
// Thread mapping: one thread per W rotated pairs (b, t, head, i .. i + W-1 < hd/2); it reads them
// all before writing. W = 4 (16 or 8 bytes loaded, 16 or 8 stored) when hd/2 % 4 == 0 and the
// pointers and strides are aligned so (every real shape), else 1.
template <int W, typename Yt, typename Xt>
__global__ static void rope_rotate_kernel(Yt *y, int64_t ldy, const Xt *x, int64_t ldx, const float *cosv, const float *sinv,
                                          int B, int T, int NH, int hd, float sign) {
    int half = hd / 2, groups = half / W;
    int64_t p = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= (int64_t)B * T * NH * groups) return;
    int i = (int)(p % groups) * W;
    int64_t row = p / groups, pos = row / NH;  // (b, t, head); (b, t)
    int t = (int)(pos % T), head = (int)(row % NH);
    const Xt *xr = x + pos * ldx + (int64_t)head * hd;
    Yt *yr = y + pos * ldy + (int64_t)head * hd;
    float a[W], c[W], cr[W], s[W], lo[W], hi[W];
    load_floats<W>(a, xr + i);
    load_floats<W>(c, xr + i + half);
    load_floats<W>(cr, cosv + (int64_t)t * half + i);
    load_floats<W>(s, sinv + (int64_t)t * half + i);
#pragma unroll
    for (int e = 0; e < W; e++) {
        float sn = sign * s[e];
        lo[e] = a[e] * cr[e] - c[e] * sn;
        hi[e] = c[e] * cr[e] + a[e] * sn;
    }
    store_floats<W>(yr + i, lo);
    store_floats<W>(yr + i + half, hi);
}
template <typename Yt, typename Xt>
static void rope_rotate(Yt *y, int64_t ldy, const Xt *x, int64_t ldx, const float *cosv, const float *sinv, int B, int T,
                        int NH, int hd, float sign) {
    PROFILE(PROF_OTHER);
    int64_t pairs = (int64_t)B * T * NH * (hd / 2);
    int x4 = hd / 2 % 4 == 0 && ldx % 4 == 0 && ldy % 4 == 0 && (uintptr_t)x % (4 * sizeof(Xt)) == 0 &&
             ((uintptr_t)cosv | (uintptr_t)sinv) % 16 == 0 && (uintptr_t)y % (4 * sizeof(Yt)) == 0;
    if (x4) rope_rotate_kernel<4><<<blocks_for(pairs / 4, 256), 256>>>(y, ldy, x, ldx, cosv, sinv, B, T, NH, hd, sign);
    else rope_rotate_kernel<1><<<blocks_for(pairs, 256), 256>>>(y, ldy, x, ldx, cosv, sinv, B, T, NH, hd, sign);
    launchCheck();
}
static void rope_forward(float *x, const float *cosv, const float *sinv, int B, int T, int NH, int hd) {
    rope_rotate(x, NH * hd, x, NH * hd, cosv, sinv, B, T, NH, hd, 1.0f);
}
static void rope_forward_bf16(__nv_bfloat16 *y, const float *x, const float *cosv, const float *sinv, int B, int T, int NH, int hd) {
    rope_rotate(y, NH * hd, x, NH * hd, cosv, sinv, B, T, NH, hd, 1.0f);
}
static void rope_backward(float *dx, const float *cosv, const float *sinv, int B, int T, int NH, int hd) {
    rope_rotate(dx, NH * hd, dx, NH * hd, cosv, sinv, B, T, NH, hd, -1.0f);
}
// dx (fp32 or bf16, rows ldx apart) rotated back into bf16 y (rows ldy apart; y may be dx).
template <typename Xt>
static void rope_backward_bf16(__nv_bfloat16 *y, int64_t ldy, const Xt *dx, int64_t ldx, const float *cosv, const float *sinv,
                               int B, int T, int NH, int hd) {
    rope_rotate(y, ldy, dx, ldx, cosv, sinv, B, T, NH, hd, -1.0f);
}

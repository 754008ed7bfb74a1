/*
 * cuda/swiglu.cuh: the SwiGLU product h = silu(g) * u and its backward, in fp32 or bf16.
 * Needs: common.cuh (to_float, store_w, bf16x8_load/_store, aligned_x8, Act, PROFILE).
 */

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
// elements a thread, moved as one 16-byte word each (where the kernel above loads 2 bytes at a
// time), the same arithmetic per element, so the same bits.
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
// dg += dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),   du += dh * silu(g), all [N,F] fp32.
// Thread mapping: one thread per element.
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

/*
 * cuda/quant.cuh: the quantizers of quant.h in kernels (int and nf per group, sign and onebit per
 * row, ternary per layer): each writes W^ (fp32, or bf16 straight into the copy the matmuls read),
 * the codes and the scales, and counts the codes that flip; the remake of one layer's W^ from its
 * codes (--layered-wq); the backward of sign and onebit into W and their learned scales.
 * Needs: quant.h (the per-group and per-element functions, QD), common.cuh (reductions, store_w,
 * store_w4, blocks_for, launchCheck).
 */

// W^ is stored as the matmuls read it: store_w (cuda/common.cuh).

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
// its stores, in a chain, and counting flips adds a second trip to memory (the previous codes,
// read after the min and max). So a warp takes its groups QG4_BATCH at a time: the
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
// Thread mapping: a block of 8 warps, each owning QG4_RUN consecutive groups; in registers a
// lane's 4-weight pieces of QG4_BATCH groups, their min, max, scales and flip counts; in shared
// memory the block's flip count.
#define QG4_RUN 16
#define QG4_BATCH 4
template <typename W, int METHOD>
__global__ static void __launch_bounds__(256, 4)  // at most 64 registers a thread: 4 blocks (32 warps) an SM
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
// int and nf over one tensor of every layer: the 4-wide kernel where g and the pointers allow it,
// else the scalar one (the same W^, codes and scales either way).
template <typename W>
static void quantize_group(W *wq, uint8_t *codes, unsigned long long *flips, int count, float *p0, float *p1, const float *w,
                           int64_t n_groups, int g, int64_t n, int method, int bits, int *bad) {
    if (g % 4 == 0 && (uintptr_t)w % 16 == 0 && (uintptr_t)wq % (4 * sizeof(W)) == 0 && (uintptr_t)codes % 4 == 0)
        quantize_group4(wq, codes, flips, count, p0, p1, w, n_groups, g, n, method, bits, bad);
    else
        quantize_group_kernel<<<blocks_for(n_groups, 8), 256>>>(wq, codes, flips, count, p0, p1, w, n_groups, g, n, method,
                                                                bits, bad);
    launchCheck();
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
template <typename W>
static void quantize_binary(W *wq, uint8_t *codes, unsigned long long *flips, int count, const float *w, const float *p0,
                            const float *p1, int64_t n_all, int out, int in, int method, int *bad) {
    quantize_binary_kernel<<<blocks_for(n_all, 256), 256>>>(wq, codes, flips, count, w, p0, p1, n_all, out, in, method, bad);
    launchCheck();
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
// W^ = gamma clamp(round(W / (gamma + 1e-5)), -1, 1) with gamma = sums[l] / n of the layer
// (BitNet b1.58, Ma et al. 2024), its code c + 1 in {0, 1, 2}; gammas[l] = gamma.
// Thread mapping: one thread per weight of every layer (n a layer).
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
// sums: device scratch of L doubles (a layer's sum of |W|), cleared here.
template <typename W>
static void quantize_ternary(W *wq, uint8_t *codes, unsigned long long *flips, int count, float *gammas, const float *w,
                             double *sums, int64_t n, int L, int *bad) {
    cudaCheck(cudaMemsetAsync(sums, 0, (size_t)L * sizeof(double)));
    dim3 grid(blocks_for(n, 256) < 256 ? blocks_for(n, 256) : 256, L);
    absmean_sum_kernel<<<grid, 256>>>(sums, w, n, bad);
    launchCheck();
    ternary_kernel<<<blocks_for(n * L, 256), 256>>>(wq, codes, flips, count, gammas, w, sums, n, L);
    launchCheck();
}
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
// d: one layer's linears (model_layer_weights fills it), units = the 4-weight units of all its segments.
template <typename W>
static void dequantize_layer(const DequantLayer &d, int64_t units) {
    dequantize_layer_kernel<W><<<blocks_for(units, 256), 256>>>(d, units);
    launchCheck();
}

// BitDistiller's backward of int and nf (--ste bitdistiller; quant.h's int_asym_group_backward
// and nf_asym_group_backward): dL/dW^ of a group becomes dL/dW, straight through the rounding
// and through the group's scale to its max and min weight,
//   int:  dw_j = dŵ_j [0 <= u_j <= qmax] + (ds/qmax) [w_j = mx]/#mx - (ds/qmax) [w_j = mn]/#mn,
//         ds = Σ_j dŵ_j dŵ_j/ds                                (when mx - mn >= 1e-5)
//   nf:   dw_j = dŵ_j + ds+ sign(mx) [w_j = mx]/#mx + ds- sign(mn) [w_j = mn]/#mn,
// each weight's part through quant.h's int_asym_weight_backward / nf_asym_weight_backward.
// In place: g holds Σ over the step's micro-batches of dL/dW^ and is replaced by dL/dW; the
// map is linear in dL/dW^, so applying it once to the sum equals summing it per micro-batch.
// Thread mapping: one warp per group (groups tile memory across layers, as the quantizer's).
// When g is 128 R (R = 1, 2 or 4: groups of 128, 256, 512), each lane loads its 4R weights and
// gradients once, as float4s, and keeps them in registers for the three steps (min and max; the
// scale's gradient and the ties; the rewrite), with warp reductions between; for other g
// (R = 0) its lanes stride over the group, reading it again for each step.
__device__ static inline float warp_min(float x) { return -warp_max(-x); }
// What the group's scale gradient brings to its max and min weights (shared by their #mx, #mn
// ties): int through s = (mx - mn) / qmax, nf through s+ = |mx| and s- = |mn| (ds0 = ds+, ds1 = ds-).
__device__ static inline void ste_minmax_parts(float *dmx, float *dmn, float ds0, float ds1, float mn, float mx, int method,
                                               float qmax) {
    if (method == QUANT_INT) {
        int moves = mx - mn >= 1e-5f;
        *dmx = moves ? ds0 / qmax : 0.0f;
        *dmn = moves ? -ds0 / qmax : 0.0f;
    } else {
        *dmx = ds0 * sign_of(mx);
        *dmn = ds1 * sign_of(mn);
    }
}
// One weight's straight-through part, adding its share of the scale gradient to *ds0 (*ds1).
__device__ static inline float ste_weight(float *ds0, float *ds1, float dwq, float w, float a, float b, int method,
                                          float qmax, int bits) {
    return method == QUANT_INT ? int_asym_weight_backward(ds0, dwq, w, a, b, qmax)
                               : nf_asym_weight_backward(ds0, ds1, dwq, w, a, b, bits);
}
template <int R>
__global__ static void ste_bitdistiller_kernel(float *grad, const float *w, const float *p0, const float *p1,
                                               int64_t n_groups, int g, int method, int bits) {
    int64_t k = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (k >= n_groups) return;
    const float *wk = w + k * g;
    float *gk = grad + k * g;
    float a = p0[k], b = p1[k], qmax = (float)((1 << bits) - 1), ds0 = 0.0f, ds1 = 0.0f, n_mx = 0.0f, n_mn = 0.0f;
    float mn = INFINITY, mx = -INFINITY, dmx, dmn;
    if constexpr (R > 0) {
        float wr[4 * R], d[4 * R];  // lane's weights lane*4 + 128 r + e, and their new gradients
#pragma unroll
        for (int r = 0; r < R; r++) {
            float4 w4 = *(const float4 *)(wk + 128 * r + 4 * lane), g4 = *(const float4 *)(gk + 128 * r + 4 * lane);
            wr[4 * r] = w4.x, wr[4 * r + 1] = w4.y, wr[4 * r + 2] = w4.z, wr[4 * r + 3] = w4.w;
            d[4 * r] = g4.x, d[4 * r + 1] = g4.y, d[4 * r + 2] = g4.z, d[4 * r + 3] = g4.w;
        }
#pragma unroll
        for (int j = 0; j < 4 * R; j++) mn = fminf(mn, wr[j]), mx = fmaxf(mx, wr[j]);
        mn = warp_min(mn);
        mx = warp_max(mx);
#pragma unroll
        for (int j = 0; j < 4 * R; j++) {
            d[j] = ste_weight(&ds0, &ds1, d[j], wr[j], a, b, method, qmax, bits);
            n_mx += wr[j] == mx;
            n_mn += wr[j] == mn;
        }
        ds0 = warp_sum(ds0); ds1 = warp_sum(ds1); n_mx = warp_sum(n_mx); n_mn = warp_sum(n_mn);
        ste_minmax_parts(&dmx, &dmn, ds0, ds1, mn, mx, method, qmax);
#pragma unroll
        for (int j = 0; j < 4 * R; j++) {
            if (wr[j] == mx) d[j] += dmx / n_mx;
            if (wr[j] == mn) d[j] += dmn / n_mn;
        }
#pragma unroll
        for (int r = 0; r < R; r++)
            *(float4 *)(gk + 128 * r + 4 * lane) = make_float4(d[4 * r], d[4 * r + 1], d[4 * r + 2], d[4 * r + 3]);
    } else {
        for (int j = lane; j < g; j += 32) { mn = fminf(mn, wk[j]); mx = fmaxf(mx, wk[j]); }
        mn = warp_min(mn);
        mx = warp_max(mx);
        for (int j = lane; j < g; j += 32) {
            ste_weight(&ds0, &ds1, gk[j], wk[j], a, b, method, qmax, bits);
            n_mx += wk[j] == mx;
            n_mn += wk[j] == mn;
        }
        ds0 = warp_sum(ds0); ds1 = warp_sum(ds1); n_mx = warp_sum(n_mx); n_mn = warp_sum(n_mn);
        ste_minmax_parts(&dmx, &dmn, ds0, ds1, mn, mx, method, qmax);
        for (int j = lane; j < g; j += 32) {
            float unused0 = 0.0f, unused1 = 0.0f;
            float d = ste_weight(&unused0, &unused1, gk[j], wk[j], a, b, method, qmax, bits);
            if (wk[j] == mx) d += dmx / n_mx;
            if (wk[j] == mn) d += dmn / n_mn;
            gk[j] = d;
        }
    }
}
// One tensor of every layer (n weights a layer, L layers, groups of g): its gradient in place.
static void ste_bitdistiller(float *grad, const float *w, const float *p0, const float *p1, int64_t n_groups, int g,
                             int method, int bits) {
    int blocks = blocks_for(n_groups * 32, 256), R = g % 128 == 0 && ((uintptr_t)grad | (uintptr_t)w) % 16 == 0 ? g / 128 : 0;
    if (R == 1) ste_bitdistiller_kernel<1><<<blocks, 256>>>(grad, w, p0, p1, n_groups, g, method, bits);
    else if (R == 2) ste_bitdistiller_kernel<2><<<blocks, 256>>>(grad, w, p0, p1, n_groups, g, method, bits);
    else if (R == 4) ste_bitdistiller_kernel<4><<<blocks, 256>>>(grad, w, p0, p1, n_groups, g, method, bits);
    else ste_bitdistiller_kernel<0><<<blocks, 256>>>(grad, w, p0, p1, n_groups, g, method, bits);
    launchCheck();
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
// One tensor of every layer: dL/dW^ (dwq) into dw and the scales' gradients dp0, dp1 (sign), or
// dp0 = dh and dp1 = dg (onebit).
static void quant_backward_binary(float *dw, float *dp0, float *dp1, const float *dwq, const float *w, const float *p0,
                                  const float *p1, int out, int in, int L, int method) {
    binary_backward_rows_kernel<<<out * L, 256>>>(dw, dp0, dp1, dwq, w, p0, p1, out, in, method);
    launchCheck();
    if (method == QUANT_ONEBIT) {
        onebit_backward_cols_kernel<<<blocks_for((int64_t)L * in, 128), 128>>>(dp1, dwq, w, p0, out, in, L);
        launchCheck();
    }
}

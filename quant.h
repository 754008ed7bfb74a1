// quant.h — every weight quantizer of bitdistill.c, their backward rules, the asymmetric
// clipping search that initialises the student, packed low-bit storage and flip-flop counting.
//
// Pure math: this header needs only <math.h>, <stdint.h>, <string.h> and <stdlib.h>, so C,
// CUDA host code and the tests all include the same file. Functions that could run inside a
// CUDA kernel (the per-element and per-group pieces) are marked QD, which is
// __host__ __device__ under nvcc and nothing otherwise. The whole-matrix loops are host code;
// their `#pragma omp` lines are ignored by a compiler without OpenMP.
//
// Conventions
// - A linear weight is W[out, in], row-major, Hugging Face layout (y = x W^T).
// - A group is g consecutive weights of one row along `in`; g = -1 means the whole row. Since g
//   divides `in`, the groups tile memory: group k (k = 0 .. out*in/g - 1) is W[k*g .. k*g+g).
// - Fake quantization: the latent fp32 weights W stay the trained parameters; every forward
//   computes Ŵ = Q(W) and uses Ŵ in the matmul; the backward maps dŴ back to dW (and to the
//   learned scales where a method has them).
// - Integer codes, one uint8_t per weight, are what packing stores and what flip-flop counts.
//   Every `codes` output may be NULL when not wanted.
// - Argument order: outputs first, then inputs, then sizes. Backward functions accumulate (+=)
//   into their gradient outputs; the caller zeroes them once per step.
// - Bad numbers: a forward that meets NaN or Inf in W returns QUANT_ERR_NONFINITE (and leaves
//   the outputs of that group unspecified); the caller dies with a message naming the tensor.
//   No quantizer ever produces NaN from finite input: zero ranges and zero scales are defined.
//
// The parameters of one quantized linear, by method (sizes from quant_param_sizes; G = in/g):
//
//   method    p0                        p1                        who sets them
//   int       s, step size  [out*G]     z, zero point  [out*G]    recomputed by every forward
//   nf3, nf4  s+ = |max|    [out*G]     s- = |min|     [out*G]    recomputed by every forward
//   sign      alpha         [out]       beta           [out]      sign_init, then trained
//   onebit    h             [out]       g              [in]       onebit_init, then trained
//   ternary   gamma         [1]         (none)                    recomputed by every forward
//
// Bit widths: int b ∈ {1,2,3,4,8}; nf3 3; nf4 4; sign and onebit 1; ternary is stored in the
// spec as bits = 2 (a code in {0,1,2} needs 2 bits in a plain bit stream) although its
// information is log2(3) = 1.58 bits and the packer stores it at 1.6 bits (5 trits per byte).
#ifndef QUANT_H
#define QUANT_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef QD
#ifdef __CUDACC__
#define QD __host__ __device__
#else
#define QD
#endif
#endif

// ---------------------------------------------------------------------------------------------
// The quantizer description, its command-line names and its validation.

enum { QUANT_NONE, QUANT_INT, QUANT_NF3, QUANT_NF4, QUANT_SIGN, QUANT_ONEBIT, QUANT_TERNARY };

typedef struct {
    int method;  // QUANT_*
    int bits;    // code width; 0 in a spec being parsed means "not given" (see quant_spec_check)
    int group;   // g, or -1 for the whole row; only int, nf3 and nf4 use it
} QuantSpec;

enum { QUANT_OK = 0, QUANT_ERR_NONFINITE, QUANT_ERR_CODES, QUANT_ERR_METHOD, QUANT_ERR_NOMEM };

static const char *quant_error_string(int err) {
    switch (err) {
    case QUANT_OK: return "ok";
    case QUANT_ERR_NONFINITE: return "NaN or Inf in the weights or inputs";
    case QUANT_ERR_CODES: return "a code is out of range for its bit width";
    case QUANT_ERR_METHOD: return "this quantizer does not support the operation";
    case QUANT_ERR_NOMEM: return "out of memory";
    }
    return "unknown error";
}

static const char *const quant_method_names[] = {"none", "int", "nf3", "nf4", "sign", "onebit", "ternary"};

// "int" -> QUANT_INT ...; -1 for an unknown name.
static int quant_method_from_name(const char *name) {
    for (int m = 0; m < 7; m++)
        if (strcmp(name, quant_method_names[m]) == 0) return m;
    return -1;
}

static const char *quant_method_name(int method) {
    return method >= 0 && method < 7 ? quant_method_names[method] : "?";
}

// Checks a spec against a linear of input dimension in_dim (pass 0 to check bits only) and
// completes it. Returns NULL when it is valid, else a message for the caller's die().
//  - int: bits ∈ {1,2,3,4,8}; bits = 16 means "no quantization" and turns the spec into
//    QUANT_NONE (the CLI's "-b 16").
//  - nf3, nf4, sign, onebit, ternary imply their width (3, 4, 1, 1, 2): bits may be 0 or 16
//    (not given on the command line; the width is filled in) or that width; else an error.
//  - group: int, nf3 and nf4 need g = -1 or g > 0 dividing in_dim. sign, onebit and ternary
//    have per-row, per-row-and-column or per-matrix scales and ignore the group.
static const char *quant_spec_check(QuantSpec *s, int in_dim) {
    static const int implied[7] = {16, 0, 3, 4, 1, 1, 2};
    static const char *const wrong_bits[7] = {
        NULL, NULL,
        "nf3 is a 3-bit quantizer (use -b 3 or leave -b out)",
        "nf4 is a 4-bit quantizer (use -b 4 or leave -b out)",
        "sign is a 1-bit quantizer (use -b 1 or leave -b out)",
        "onebit is a 1-bit quantizer (use -b 1 or leave -b out)",
        "ternary is a 1.58-bit quantizer, stored as bits = 2 (use -b 2 or leave -b out)"};
    if (s->method < QUANT_NONE || s->method > QUANT_TERNARY)
        return "unknown quantizer (expected int, nf3, nf4, sign, onebit or ternary)";
    if (s->method == QUANT_NONE) { s->bits = 16; return NULL; }
    if (s->method == QUANT_INT) {
        if (s->bits == 16) { s->method = QUANT_NONE; return NULL; }
        if (s->bits == 0) return "int needs a bit width (-b 1, 2, 3, 4 or 8)";
        if (s->bits != 1 && s->bits != 2 && s->bits != 3 && s->bits != 4 && s->bits != 8)
            return "int supports 1, 2, 3, 4 or 8 bits";
    } else {
        if (s->bits == 0 || s->bits == 16) s->bits = implied[s->method];
        if (s->bits != implied[s->method]) return wrong_bits[s->method];
        if (s->method != QUANT_NF3 && s->method != QUANT_NF4) return NULL;  // no groups
    }
    if (s->group != -1 && s->group <= 0) return "group size must be -1 (whole row) or positive";
    if (in_dim > 0 && s->group != -1 && in_dim % s->group != 0)
        return "group size does not divide the input dimension of a linear";
    return NULL;
}

// Group length in weights: g, or the whole row for g = -1 and for the methods without groups.
static int quant_group_len(QuantSpec s, int in_dim) {
    int grouped = s.method == QUANT_INT || s.method == QUANT_NF3 || s.method == QUANT_NF4;
    return grouped && s.group != -1 ? s.group : in_dim;
}

// ---------------------------------------------------------------------------------------------
// Rounding. Two different rules appear in BitDistiller's INT-Asym and they matter at ties:
//   round_away(x) = sign(x) * floor(|x| + 0.5)   ties away from zero: 0.5 -> 1, -2.5 -> -3
//   round_even(x) = nearest integer, ties to even (torch.round): 0.5 -> 0, 2.5 -> 2, -1.5 -> -2
// rintf rounds to nearest-even in the default rounding mode, on the CPU and on the GPU.

QD static inline float round_away(float x) { return copysignf(floorf(fabsf(x) + 0.5f), x); }
QD static inline float round_even(float x) { return rintf(x); }
QD static inline float clampf(float x, float lo, float hi) { return fminf(fmaxf(x, lo), hi); }

// Min and max of a group; returns 0 if it holds NaN or Inf.
QD static inline int group_minmax(float *mn_out, float *mx_out, const float *w, int g) {
    float mn = w[0], mx = w[0];
    int ok = 1;
    for (int j = 0; j < g; j++) {
        ok &= isfinite(w[j]) != 0;
        mn = fminf(mn, w[j]);
        mx = fmaxf(mx, w[j]);
    }
    *mn_out = mn;
    *mx_out = mx;
    return ok;
}

// ---------------------------------------------------------------------------------------------
// 1. INT-Asym (BitDistiller, Du et al. 2024; the asymmetric uniform quantizer of AWQ/GPTQ).
// Per group, with mx = max w, mn = min w, qmax = 2^b - 1:
//   s = max(mx - mn, 1e-5) / qmax                         step
//   z = clamp(-round_even(mn / s), 0, qmax)               zero point, an integer code
//   q = clamp(round_away(w / s) + z, 0, qmax)             the code
//   ŵ = (q - z) * s
// The grid {(q - z) s : q = 0..qmax} always contains 0, because z is clamped into [0, qmax].
// Consequences, all well defined (and what the reference does):
//   - an all-zero group gives 0;
//   - a constant group c (mx = mn) gets s = 1e-5/qmax and quantizes to the grid point nearest
//     to c inside [-1e-5, 1e-5]: c = 2 becomes qmax * s = 1e-5;
//   - an all-positive group cannot lift its grid off 0 (z = 0): [1,2,3,4] at b = 2 (s = 1)
//     becomes [1,2,3,3]; an all-negative one likewise ends at 0 from below.
// At b = 1 this is the 1-bit threshold quantizer: each weight becomes one of {-z s, (1-z) s}.
// Backward: BitDistiller's, through the rounding and through s (int_asym_group_backward), or
// plain straight-through, dL/dw = dL/dŵ (ste_backward); see "Backward rules" below.

QD static inline void int_asym_params(float *s_out, float *z_out, float mn, float mx, int bits) {
    float qmax = (float)((1 << bits) - 1);
    float s = fmaxf(mx - mn, 1e-5f) / qmax;
    *s_out = s;
    *z_out = clampf(-round_even(mn / s), 0.0f, qmax);
}

QD static inline int int_asym_code(float w, float s, float z, int bits) {
    return (int)clampf(round_away(w / s) + z, 0.0f, (float)((1 << bits) - 1));
}

QD static inline float int_asym_value(int q, float s, float z) { return ((float)q - z) * s; }

// One group of g weights. Returns 0 on success, 1 on NaN/Inf.
QD static inline int int_asym_group(float *wq, uint8_t *codes, float *s_out, float *z_out,
                                    const float *w, int g, int bits) {
    float mn, mx, s, z;
    if (!group_minmax(&mn, &mx, w, g)) return 1;
    int_asym_params(&s, &z, mn, mx, bits);
    for (int j = 0; j < g; j++) {
        int q = int_asym_code(w[j], s, z, bits);
        if (codes) codes[j] = (uint8_t)q;
        wq[j] = int_asym_value(q, s, z);
    }
    *s_out = s;
    *z_out = z;
    return 0;
}

// wq[out,in] = Q(w); scale, zero [out * in/g] (each may be NULL). group = g or -1.
static int int_asym_quantize(float *wq, uint8_t *codes, float *scale, float *zero,
                             const float *w, int out, int in, int bits, int group) {
    int g = group == -1 ? in : group;
    int64_t n_groups = (int64_t)out * (in / g);
    int bad = 0;
#pragma omp parallel for reduction(| : bad)
    for (int64_t k = 0; k < n_groups; k++) {
        float s = 0, z = 0;
        bad |= int_asym_group(wq + k * g, codes ? codes + k * g : NULL, &s, &z, w + k * g, g, bits);
        if (scale) scale[k] = s;
        if (zero) zero[k] = z;
    }
    return bad ? QUANT_ERR_NONFINITE : QUANT_OK;
}

// ---------------------------------------------------------------------------------------------
// 2. NF-Asym, 3 and 4 bits (BitDistiller's "ste-n2f3", Du et al. 2024; NF4 from QLoRA,
// Dettmers et al. 2023). NormalFloat levels are quantiles of a normal distribution scaled to
// [-1, 1]. The asymmetric variant scales each side of zero separately, per group:
//   s+ = |mx|, s- = |mn|
//   w >= 0: x = w / s+,  w < 0: x = w / s-              so x ∈ [-1, 1]
//   code = number of thresholds t_k with x >= t_k       (levels sorted, t_k their midpoints)
//   ŵ = level[code] * (level >= 0 ? s+ : s-)
// Ties sit exactly on a threshold and go to the upper level (towards +inf): on the positive
// side away from zero, on the negative side towards zero. This is the reference's
// `q >= t` on both sides. A zero scale gives x = 0 (the reference computes 0/0 = NaN there,
// which then poisons the whole group): an all-zero group stays 0. A constant group c > 0 is
// represented exactly (x = 1), so is c < 0 (x = -1).
// The 8 NF3 levels (3 negative, 0, 4 positive) and their thresholds are BitDistiller's; the 16
// NF4 levels are QLoRA's table, its 15 thresholds the midpoints of neighbouring levels.
// Backward: BitDistiller's, through the rounding and through s+ and s- (nf_asym_group_backward),
// or plain straight-through, dL/dw = dL/dŵ (ste_backward); see "Backward rules" below.

QD static inline float nf_level(int bits, int code) {
    const float nf3[8] = {-1.0f, -0.5350227355957031f, -0.2469314038753510f, 0.0f,
                          0.1833375245332718f, 0.3819939494132996f, 0.6229856610298157f, 1.0f};
    const float nf4[16] = {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
                           -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
                           0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f,
                           0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
                           0.7229568362236023f, 1.0f};
    return bits == 3 ? nf3[code & 7] : nf4[code & 15];
}

// x in [-1, 1] -> code in [0, 2^bits)
QD static inline int nf_code(int bits, float x) {
    const float t3[7] = {-0.7675113677978516f, -0.39097706973552704f, -0.1234657019376755f,
                         0.0916687622666359f, 0.2826657369732857f, 0.5024898052215576f,
                         0.8114928305149078f};
    const float t4[15] = {-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,
                          -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
                          -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
                          0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
                          0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f};
    const float *t = bits == 3 ? t3 : t4;
    int n = bits == 3 ? 7 : 15, code = 0;
    for (int k = 0; k < n; k++) code += x >= t[k];
    return code;
}

QD static inline int nf_asym_code(float w, float sp, float sn, int bits) {
    float x = w >= 0.0f ? (sp > 0.0f ? w / sp : 0.0f) : (sn > 0.0f ? w / sn : 0.0f);
    return nf_code(bits, x);
}

QD static inline float nf_asym_value(int code, float sp, float sn, int bits) {
    float level = nf_level(bits, code);
    return level * (level >= 0.0f ? sp : sn);
}

QD static inline int nf_asym_group(float *wq, uint8_t *codes, float *sp_out, float *sn_out,
                                   const float *w, int g, int bits) {
    float mn, mx;
    if (!group_minmax(&mn, &mx, w, g)) return 1;
    float sp = fabsf(mx), sn = fabsf(mn);
    for (int j = 0; j < g; j++) {
        int q = nf_asym_code(w[j], sp, sn, bits);
        if (codes) codes[j] = (uint8_t)q;
        wq[j] = nf_asym_value(q, sp, sn, bits);
    }
    *sp_out = sp;
    *sn_out = sn;
    return 0;
}

// bits = 3 or 4. scale_pos, scale_neg [out * in/g] (each may be NULL).
static int nf_asym_quantize(float *wq, uint8_t *codes, float *scale_pos, float *scale_neg,
                            const float *w, int out, int in, int bits, int group) {
    int g = group == -1 ? in : group;
    int64_t n_groups = (int64_t)out * (in / g);
    int bad = 0;
#pragma omp parallel for reduction(| : bad)
    for (int64_t k = 0; k < n_groups; k++) {
        float sp = 0, sn = 0;
        bad |= nf_asym_group(wq + k * g, codes ? codes + k * g : NULL, &sp, &sn, w + k * g, g, bits);
        if (scale_pos) scale_pos[k] = sp;
        if (scale_neg) scale_neg[k] = sn;
    }
    return bad ? QUANT_ERR_NONFINITE : QUANT_OK;
}

static int nf3_asym_quantize(float *wq, uint8_t *codes, float *scale_pos, float *scale_neg,
                             const float *w, int out, int in, int group) {
    return nf_asym_quantize(wq, codes, scale_pos, scale_neg, w, out, in, 3, group);
}

static int nf4_asym_quantize(float *wq, uint8_t *codes, float *scale_pos, float *scale_neg,
                             const float *w, int out, int in, int group) {
    return nf_asym_quantize(wq, codes, scale_pos, scale_neg, w, out, in, 4, group);
}

// ---------------------------------------------------------------------------------------------
// Backward rules of int, nf3, nf4 and ternary. The rounding has zero derivative almost
// everywhere, so training needs a rule that lets gradient through it. Two are here:
//   plain          dw = dŵ for every weight (ste_backward): the forward is treated as the
//                  identity (Bengio et al. 2013). Ternary and the activation quantizer use it.
//   bitdistiller   what autograd computes from BitDistiller's training quantizers (Du et al.
//                  2024, quantization/quantizer.py: SteInt2AsymQuantizer, SteN2F3Quantizer):
//                  only the rounding is straight-through; the group's scale is computed from
//                  its max and min WITHOUT detaching it, so gradient also flows through the
//                  scale into the weights that are the group's max and min. The default for
//                  int, nf3 and nf4 (train's --ste).
enum { QUANT_STE_PLAIN, QUANT_STE_BITDISTILLER };

// Plain straight-through: dw[n] += dŵ[n].
static void ste_backward(float *dw, const float *dwq, int64_t n) {
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) dw[i] += dwq[i];
}

// Where a group's scale gradient ds goes: the scale is a function of the group's max (and/or
// min), and torch's amax/amin send their gradient to every weight equal to the extreme, split
// evenly among ties: dw[j] += dmx / #{w = mx} for w[j] = mx, and likewise dmn for the min.
QD static inline void minmax_backward(float *dw, const float *w, float dmx, float dmn, float mn, float mx, int g) {
    int n_mx = 0, n_mn = 0;
    for (int j = 0; j < g; j++) { n_mx += w[j] == mx; n_mn += w[j] == mn; }
    for (int j = 0; j < g; j++) {
        if (w[j] == mx) dw[j] += dmx / (float)n_mx;
        if (w[j] == mn) dw[j] += dmn / (float)n_mn;
    }
}

// BitDistiller's backward of INT-Asym, one group of g weights with the forward's s and z.
// Their forward is ŵ = (clamp(R(w/s) + z, 0, qmax) - z) s with R = round_away made straight-
// through (dR/du = 1), torch's clamp (gradient 1 inside [0, qmax], ends included, 0 outside),
// z = clamp(-round(mn/s)) (torch.round has gradient 0: z carries none) and
// s = max(mx - mn, 1e-5) / qmax. With u_j = R(w_j/s) + z and q_j = clamp(u_j) (the code):
//   inside, 0 <= u_j <= qmax:  dŵ_j/dw_j = 1,  dŵ_j/ds = q_j - z - w_j/s
//   clamped:                   dŵ_j/dw_j = 0,  dŵ_j/ds = q_j - z
// so  dw_j += dŵ_j [inside],  ds = Σ_j dŵ_j dŵ_j/ds,  and, when mx - mn >= 1e-5,
//   dmx = +ds/qmax, dmn = -ds/qmax (minmax_backward). A constant group passes nothing to s.
// A weight is clamped only at ties of the two roundings (round_away of w/s, round_even of
// mn/s) and in groups that do not straddle 0 (z clamped to 0 or qmax).
// One weight's part of it: returns dŵ_j/dw_j · dŵ_j (the straight-through term) and adds
// dŵ_j · dŵ_j/ds to *ds.
QD static inline float int_asym_weight_backward(float *ds, float dwq, float w, float s, float z, float qmax) {
    float x = w / s, u = round_away(x) + z;
    if (u >= 0.0f && u <= qmax) {
        *ds += dwq * (u - z - x);
        return dwq;
    }
    *ds += dwq * (clampf(u, 0.0f, qmax) - z);
    return 0.0f;
}
QD static inline void int_asym_group_backward(float *dw, const float *dwq, const float *w, float s, float z,
                                              int g, int bits) {
    float qmax = (float)((1 << bits) - 1), mn, mx, ds = 0.0f;
    group_minmax(&mn, &mx, w, g);
    for (int j = 0; j < g; j++) dw[j] += int_asym_weight_backward(&ds, dwq[j], w[j], s, z, qmax);
    if (mx - mn >= 1e-5f) minmax_backward(dw, w, ds / qmax, -ds / qmax, mn, mx, g);
}

// BitDistiller's backward of NF-Asym (their SteN2F3Quantizer; nf4 by the same rule), one group
// with the forward's s+ = |mx| and s- = |mn|. Their forward: x = w/s± on each side of 0,
// ŵ = L(x) s± with the level L made straight-through by (L(x) - x).detach() + x, which passes
// every weight (no clamp). With s_j the scale of w_j's side and L_j its level:
//   dŵ_j/dw_j = 1,  dŵ_j/ds_j = L_j - w_j/s_j
// so  dw_j += dŵ_j,  ds+ = Σ_{w_j >= 0} dŵ_j (L_j - w_j/s+),  ds- = Σ_{w_j < 0} dŵ_j (L_j - w_j/s-),
//   dmx = ds+ sign(mx),  dmn = ds- sign(mn)  (d|m|/dm = sign(m), 0 at 0), to the max and min
// weights (minmax_backward). A zero scale (their 0/0 = NaN; here x = 0) passes nothing.
// One weight's part of it: returns the straight-through term dŵ_j and adds dŵ_j · dŵ_j/ds_j to
// *dsp or *dsn (the side of 0 that w_j lies on).
QD static inline float nf_asym_weight_backward(float *dsp, float *dsn, float dwq, float w, float sp, float sn, int bits) {
    float s = w >= 0.0f ? sp : sn;
    if (s == 0.0f) return dwq;
    float d = dwq * (nf_level(bits, nf_asym_code(w, sp, sn, bits)) - w / s);
    if (w >= 0.0f) *dsp += d; else *dsn += d;
    return dwq;
}
// d|m|/dm = sign(m), 0 at 0: what the scales' gradients bring to the max and the min.
QD static inline float sign_of(float m) { return (float)((m > 0.0f) - (m < 0.0f)); }
QD static inline void nf_asym_group_backward(float *dw, const float *dwq, const float *w, float sp, float sn,
                                             int g, int bits) {
    float mn, mx, dsp = 0.0f, dsn = 0.0f;
    group_minmax(&mn, &mx, w, g);
    for (int j = 0; j < g; j++) dw[j] += nf_asym_weight_backward(&dsp, &dsn, dwq[j], w[j], sp, sn, bits);
    minmax_backward(dw, w, dsp * sign_of(mx), dsn * sign_of(mn), mn, mx, g);
}

// BitDistiller's backward over a whole int, nf3 or nf4 matrix: dw[out,in] += from dwq[out,in];
// p0, p1 the forward's per-group scales (the table at the top of this file); group g or -1.
static void ste_bitdistiller_backward(float *dw, const float *dwq, const float *w, const float *p0,
                                      const float *p1, QuantSpec s, int out, int in) {
    int g = quant_group_len(s, in);
    int64_t n_groups = (int64_t)out * (in / g);
#pragma omp parallel for
    for (int64_t k = 0; k < n_groups; k++) {
        if (s.method == QUANT_INT) int_asym_group_backward(dw + k * g, dwq + k * g, w + k * g, p0[k], p1[k], g, s.bits);
        else nf_asym_group_backward(dw + k * g, dwq + k * g, w + k * g, p0[k], p1[k], g, s.bits);
    }
}

// sign(w) with sign(0) = +1, as the binarizers below use it; code 1 for +1, 0 for -1.
QD static inline int sign_code(float w) { return w >= 0.0f; }
QD static inline float sign_pm1(int code) { return code ? 1.0f : -1.0f; }

// ---------------------------------------------------------------------------------------------
// 3. sign — 1-bit binarization with learned scales (FBI-LLM, Ma et al. 2024). Per output row r:
//   ŵ[r,j] = alpha[r] * sign(w[r,j]) + beta[r],  sign(0) = +1
// FBI-LLM binarizes sign(W) and learns a full-precision scale alpha and shift beta; we keep one
// pair per output row, so y_r = alpha_r * Σ_j x_j sign(w_rj) + beta_r * Σ_j x_j.
// Initialisation (sign_init), following FBI-LLM:
//   beta[r] = mean_j w[r,j],  alpha[r] = mean_j |w[r,j] - beta[r]|
// Backward, with L the loss and dŵ = dL/dŵ:
//   dalpha[r] = Σ_j dŵ[r,j] sign(w[r,j])     exact
//   dbeta[r]  = Σ_j dŵ[r,j]                  exact
//   dw[r,j]   = dŵ[r,j] * alpha[r] * 1{|w[r,j]| <= 1}
// The last is the clipped straight-through estimator of binary networks (Courbariaux, Hubara
// et al. 2016): in the backward, sign(w) is replaced by hardtanh(w) = clamp(w, -1, 1), whose
// derivative is 1 on |w| <= 1 and 0 outside; the chain rule through alpha then gives the line
// above. (Under AdamW the per-row factor alpha[r] hardly matters; it is kept so that dw is the
// exact gradient of the surrogate alpha*hardtanh(w) + beta.)

QD static inline float sign_value(int code, float alpha, float beta) { return alpha * sign_pm1(code) + beta; }

static int sign_init(float *alpha, float *beta, const float *w, int out, int in) {
    int bad = 0;
#pragma omp parallel for reduction(| : bad)
    for (int r = 0; r < out; r++) {
        const float *wr = w + (int64_t)r * in;
        double mean = 0.0, dev = 0.0;
        for (int j = 0; j < in; j++) {
            bad |= !isfinite(wr[j]);
            mean += wr[j];
        }
        mean /= in;
        for (int j = 0; j < in; j++) dev += fabs(wr[j] - mean);
        beta[r] = (float)mean;
        alpha[r] = (float)(dev / in);
    }
    return bad ? QUANT_ERR_NONFINITE : QUANT_OK;
}

static int sign_quantize(float *wq, uint8_t *codes, const float *w, const float *alpha,
                         const float *beta, int out, int in) {
    int bad = 0;
#pragma omp parallel for reduction(| : bad)
    for (int r = 0; r < out; r++) {
        for (int64_t i = (int64_t)r * in; i < (int64_t)(r + 1) * in; i++) {
            bad |= !isfinite(w[i]);
            int c = sign_code(w[i]);
            if (codes) codes[i] = (uint8_t)c;
            wq[i] = sign_value(c, alpha[r], beta[r]);
        }
    }
    return bad ? QUANT_ERR_NONFINITE : QUANT_OK;
}

static void sign_backward(float *dw, float *dalpha, float *dbeta, const float *dwq, const float *w,
                          const float *alpha, int out, int in) {
#pragma omp parallel for
    for (int r = 0; r < out; r++) {
        double da = 0.0, db = 0.0;
        for (int64_t i = (int64_t)r * in; i < (int64_t)(r + 1) * in; i++) {
            da += (double)dwq[i] * sign_pm1(sign_code(w[i]));
            db += dwq[i];
            if (fabsf(w[i]) <= 1.0f) dw[i] += dwq[i] * alpha[r];
        }
        dalpha[r] += (float)da;
        dbeta[r] += (float)db;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. onebit — OneBit (Xu et al. 2024):
//   Ŵ = diag(h) · sign(W) · diag(g),  i.e.  ŵ[i,j] = h[i] * sign(w[i,j]) * g[j]
// with full-precision vectors h [out] and g [in] and sign(0) = +1.
// Initialisation (onebit_init) by sign-value-independent decomposition (SVID): W = sign(W) ∘ |W|,
// and |W| ≈ σ u v^T, its best rank-1 approximation. |W| is non-negative, so its top singular
// vectors are non-negative (Perron-Frobenius) and power iteration from a positive start finds
// them:  u ← |W| v / ‖|W| v‖,  v ← |W|^T u / ‖|W|^T u‖,  σ = ‖|W|^T u‖.
// Then h = sqrt(σ) u, g = sqrt(σ) v. If |W| is exactly rank 1, Ŵ = W. An all-zero W gives h = g = 0.
// Backward (exact for h and g; clipped straight-through for W as in sign above):
//   dh[i] = Σ_j dŵ[i,j] sign(w[i,j]) g[j]
//   dg[j] = Σ_i dŵ[i,j] sign(w[i,j]) h[i]
//   dw[i,j] = dŵ[i,j] h[i] g[j] 1{|w[i,j]| <= 1}

QD static inline float onebit_value(int code, float h, float g) { return h * sign_pm1(code) * g; }

// iters: the most power iterations (50 is plenty: it stops once σ changes by < 1e-7 relative).
// Allocates one double vector of `in` entries.
static int onebit_init(float *h, float *g, const float *w, int out, int in, int iters) {
    double *v = (double *)malloc((size_t)in * sizeof(double));
    if (!v) return QUANT_ERR_NOMEM;
    int bad = 0;
    for (int64_t i = 0; i < (int64_t)out * in; i++) bad |= !isfinite(w[i]);
    if (bad) { free(v); return QUANT_ERR_NONFINITE; }
    for (int j = 0; j < in; j++) v[j] = 1.0 / sqrt((double)in);
    double sigma = 0.0;
    for (int it = 0; it < iters; it++) {
        // u = |W| v, normalised; h holds u
        double nu = 0.0;
#pragma omp parallel for reduction(+ : nu)
        for (int r = 0; r < out; r++) {
            double acc = 0.0;
            const float *wr = w + (int64_t)r * in;
            for (int j = 0; j < in; j++) acc += fabs((double)wr[j]) * v[j];
            h[r] = (float)acc;
            nu += acc * acc;
        }
        nu = sqrt(nu);
        if (nu == 0.0) { sigma = 0.0; break; }
        for (int r = 0; r < out; r++) h[r] = (float)(h[r] / nu);
        // v = |W|^T u, column blocks so that each thread reads rows contiguously
#pragma omp parallel for
        for (int j0 = 0; j0 < in; j0 += 64) {
            int j1 = j0 + 64 < in ? j0 + 64 : in;
            for (int j = j0; j < j1; j++) v[j] = 0.0;
            for (int r = 0; r < out; r++) {
                const float *wr = w + (int64_t)r * in;
                for (int j = j0; j < j1; j++) v[j] += fabs((double)wr[j]) * h[r];
            }
        }
        double nv = 0.0;
        for (int j = 0; j < in; j++) nv += v[j] * v[j];
        nv = sqrt(nv);
        for (int j = 0; j < in; j++) v[j] /= nv;  // nv > 0: u > 0 somewhere where |W| is
        int converged = fabs(nv - sigma) <= 1e-7 * nv;
        sigma = nv;
        if (converged) break;
    }
    double root = sqrt(sigma);
    for (int r = 0; r < out; r++) h[r] = sigma > 0.0 ? (float)(root * h[r]) : 0.0f;
    for (int j = 0; j < in; j++) g[j] = sigma > 0.0 ? (float)(root * v[j]) : 0.0f;
    free(v);
    return QUANT_OK;
}

static int onebit_quantize(float *wq, uint8_t *codes, const float *w, const float *h, const float *g,
                           int out, int in) {
    int bad = 0;
#pragma omp parallel for reduction(| : bad)
    for (int r = 0; r < out; r++) {
        for (int j = 0; j < in; j++) {
            int64_t i = (int64_t)r * in + j;
            bad |= !isfinite(w[i]);
            int c = sign_code(w[i]);
            if (codes) codes[i] = (uint8_t)c;
            wq[i] = onebit_value(c, h[r], g[j]);
        }
    }
    return bad ? QUANT_ERR_NONFINITE : QUANT_OK;
}

static void onebit_backward(float *dw, float *dh, float *dg, const float *dwq, const float *w,
                            const float *h, const float *g, int out, int in) {
    // dh and dw: one row per iteration
#pragma omp parallel for
    for (int r = 0; r < out; r++) {
        double acc = 0.0;
        for (int j = 0; j < in; j++) {
            int64_t i = (int64_t)r * in + j;
            acc += (double)dwq[i] * sign_pm1(sign_code(w[i])) * g[j];
            if (fabsf(w[i]) <= 1.0f) dw[i] += dwq[i] * h[r] * g[j];
        }
        dh[r] += (float)acc;
    }
    // dg: column sums, in blocks of columns so that rows are read contiguously
#pragma omp parallel for
    for (int j0 = 0; j0 < in; j0 += 64) {
        double acc[64] = {0};
        int j1 = j0 + 64 < in ? j0 + 64 : in;
        for (int r = 0; r < out; r++)
            for (int j = j0; j < j1; j++) {
                int64_t i = (int64_t)r * in + j;
                acc[j - j0] += (double)dwq[i] * sign_pm1(sign_code(w[i])) * h[r];
            }
        for (int j = j0; j < j1; j++) dg[j] += (float)acc[j - j0];
    }
}

// ---------------------------------------------------------------------------------------------
// 5. ternary — BitNet b1.58 absmean (Ma et al. 2024). One scale for the whole matrix:
//   γ = mean |W|,   q = clamp(round_even(w / (γ + 1e-5)), -1, 1),   ŵ = γ q
// round_even is torch.round: an exact ±0.5 goes to 0. code = q + 1 ∈ {0, 1, 2}. An all-zero W
// gives γ = 0 and ŵ = 0. Backward: straight-through (ste_backward).

QD static inline float ternary_value(int code, float gamma) { return gamma * (float)(code - 1); }

static int ternary_absmean_quantize(float *wq, uint8_t *codes, float *gamma_out, const float *w,
                                    int out, int in) {
    int64_t n = (int64_t)out * in;
    double sum = 0.0;
    int bad = 0;
#pragma omp parallel for reduction(+ : sum) reduction(| : bad)
    for (int64_t i = 0; i < n; i++) {
        bad |= !isfinite(w[i]);
        sum += fabsf(w[i]);
    }
    if (bad) return QUANT_ERR_NONFINITE;
    float gamma = (float)(sum / (double)n);
    float div = gamma + 1e-5f;
#pragma omp parallel for
    for (int64_t i = 0; i < n; i++) {
        int c = (int)clampf(round_even(w[i] / div), -1.0f, 1.0f) + 1;
        if (codes) codes[i] = (uint8_t)c;
        wq[i] = ternary_value(c, gamma);
    }
    if (gamma_out) *gamma_out = gamma;
    return QUANT_OK;
}

// ---------------------------------------------------------------------------------------------
// Optional: BitNet's 8-bit per-token absmax activation quantization (Ma et al. 2024), for the
// input x[N, D] of a ternary linear. Per token (row) t:
//   m = max(max_j |x[t,j]|, 1e-5),  x̂[t,j] = clamp(round_even(x[t,j] * 127 / m), -128, 127) * m / 127
// (computed as BitNet does: scale = 127 / m, x̂ = round(x * scale) / scale).
// Backward: straight-through, dx += dx̂ (use ste_backward). Returns QUANT_ERR_NONFINITE on NaN/Inf.
static int act_absmax_quantize(float *xq, const float *x, int n_tokens, int dim) {
    int bad = 0;
#pragma omp parallel for reduction(| : bad)
    for (int t = 0; t < n_tokens; t++) {
        const float *xt = x + (int64_t)t * dim;
        float m = 0.0f;
        for (int j = 0; j < dim; j++) {
            bad |= !isfinite(xt[j]);
            m = fmaxf(m, fabsf(xt[j]));
        }
        float scale = 127.0f / fmaxf(m, 1e-5f);
        for (int j = 0; j < dim; j++)
            xq[(int64_t)t * dim + j] = clampf(round_even(xt[j] * scale), -128.0f, 127.0f) / scale;
    }
    return bad ? QUANT_ERR_NONFINITE : QUANT_OK;
}

// ---------------------------------------------------------------------------------------------
// One interface over all methods, for the training loop and the packer. p0, p1 are the arrays
// of the table at the top of this file. For int, nf3, nf4 and ternary the forward WRITES them
// (they are functions of W); for sign and onebit it READS them (they are trained parameters,
// set once by quant_init_params).

static void quant_param_sizes(int64_t *n0, int64_t *n1, QuantSpec s, int out, int in) {
    int64_t groups = (int64_t)out * (in / quant_group_len(s, in));
    switch (s.method) {
    case QUANT_INT: case QUANT_NF3: case QUANT_NF4: *n0 = groups; *n1 = groups; break;
    case QUANT_SIGN: *n0 = out; *n1 = out; break;
    case QUANT_ONEBIT: *n0 = out; *n1 = in; break;
    case QUANT_TERNARY: *n0 = 1; *n1 = 0; break;
    default: *n0 = 0; *n1 = 0; break;
    }
}

// Learned scales of sign and onebit from the FP weights; a no-op for the other methods.
static int quant_init_params(float *p0, float *p1, const float *w, QuantSpec s, int out, int in) {
    if (s.method == QUANT_SIGN) return sign_init(p0, p1, w, out, in);
    if (s.method == QUANT_ONEBIT) return onebit_init(p0, p1, w, out, in, 50);
    return QUANT_OK;
}

// wq = Q(w). QUANT_NONE copies w (codes untouched).
static int quant_forward(float *wq, uint8_t *codes, float *p0, float *p1, const float *w, QuantSpec s,
                         int out, int in) {
    switch (s.method) {
    case QUANT_INT: return int_asym_quantize(wq, codes, p0, p1, w, out, in, s.bits, s.group);
    case QUANT_NF3: return nf3_asym_quantize(wq, codes, p0, p1, w, out, in, s.group);
    case QUANT_NF4: return nf4_asym_quantize(wq, codes, p0, p1, w, out, in, s.group);
    case QUANT_SIGN: return sign_quantize(wq, codes, w, p0, p1, out, in);
    case QUANT_ONEBIT: return onebit_quantize(wq, codes, w, p0, p1, out, in);
    case QUANT_TERNARY: return ternary_absmean_quantize(wq, codes, p0, w, out, in);
    default: memcpy(wq, w, (size_t)out * in * sizeof(float)); return QUANT_OK;
    }
}

// Accumulates dw (and dp0, dp1 for the learned scales of sign and onebit) from dwq. ste: the
// backward rule of int, nf3 and nf4 (QUANT_STE_PLAIN or QUANT_STE_BITDISTILLER); ternary is
// always plain straight-through.
static void quant_backward(float *dw, float *dp0, float *dp1, const float *dwq, const float *w,
                           const float *p0, const float *p1, QuantSpec s, int ste, int out, int in) {
    int grouped = s.method == QUANT_INT || s.method == QUANT_NF3 || s.method == QUANT_NF4;
    if (s.method == QUANT_SIGN) sign_backward(dw, dp0, dp1, dwq, w, p0, out, in);
    else if (s.method == QUANT_ONEBIT) onebit_backward(dw, dp0, dp1, dwq, w, p0, p1, out, in);
    else if (grouped && ste == QUANT_STE_BITDISTILLER) ste_bitdistiller_backward(dw, dwq, w, p0, p1, s, out, in);
    else ste_backward(dw, dwq, (int64_t)out * in);
}

// The weights from their codes and parameters: the loader of a packed model calls this. It uses
// the same *_value functions as the forwards, so with the same parameters it reproduces the
// forward's ŵ bit for bit. Codes are trusted to be in range (quant_unpack_codes checks them).
static void quant_dequantize(float *wq, const uint8_t *codes, const float *p0, const float *p1,
                             QuantSpec s, int out, int in) {
    int g = quant_group_len(s, in);
#pragma omp parallel for
    for (int r = 0; r < out; r++) {
        for (int j = 0; j < in; j++) {
            int64_t i = (int64_t)r * in + j, k = i / g;
            int c = codes[i];
            switch (s.method) {
            case QUANT_INT: wq[i] = int_asym_value(c, p0[k], p1[k]); break;
            case QUANT_NF3: case QUANT_NF4: wq[i] = nf_asym_value(c, p0[k], p1[k], s.bits); break;
            case QUANT_SIGN: wq[i] = sign_value(c, p0[r], p1[r]); break;
            case QUANT_ONEBIT: wq[i] = onebit_value(c, p0[r], p1[j]); break;
            case QUANT_TERNARY: wq[i] = ternary_value(c, p0[0]); break;
            default: wq[i] = 0.0f; break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Asymmetric clipping search (BitDistiller, Du et al. 2024, after AWQ's clipping): the student's
// initial weights. Outliers stretch a group's [mn, mx] and waste grid points on a few weights;
// clipping them can lower the error of the layer's OUTPUT even though it moves those weights.
// For every group (row r, columns C of that group) and every pair (i, j) ∈ {0..9}²:
//   mx' = mx (1 - i/20),  mn' = mn (1 - j/20),  w' = clamp(w, mn', mx'),  ŵ = Q(w')
//   err(i, j) = mean_t ( X[t,C] · ŵ - X[t,C] · w )²  over the n captured input tokens
// and keep the minimising pair (ties: the first in order i, then j, so (0,0) wins a tie). Q is
// int, nf3 or nf4 with the spec's bits and group; Q recomputes its range from w'. (0,0) is
// plain round-to-nearest, so the result never has a larger error than no clipping.
// Because err = d^T G d with d = ŵ - w and G = X[:,C]^T X[:,C] / n (g×g, the same for every row),
// when g <= n we precompute one G per column group (in*g doubles) and each candidate costs g²
// instead of n*g; otherwise we use X directly. Cost: about 100 * out * in * min(g, n)
// multiply-adds per linear (g = 128: 2e11 for a 4096 x 4096 linear, minutes on two cores).
// With n = 0 tokens there is no evidence: wclip = w.
// Writes wclip[out,in] = the clipped FP weights w' of the chosen pairs; err0, err1 [out*in/g]
// (each may be NULL) = the error of (0,0) and of the chosen pair. x is [n, in].
// Returns QUANT_ERR_METHOD for sign/onebit/ternary/none (they have no per-group range).

static double clip_group_error(const float *d, const double *gram, const float *x, int g, int n,
                               int in) {
    double e = 0.0;
    if (gram) {
        for (int a = 0; a < g; a++) {
            double row = 0.0;
            for (int b = 0; b < g; b++) row += gram[(int64_t)a * g + b] * d[b];
            e += d[a] * row;
        }
        return e;
    }
    for (int t = 0; t < n; t++) {  // here x points at this group's first column of token 0
        double y = 0.0;
        for (int j = 0; j < g; j++) y += (double)x[(int64_t)t * in + j] * d[j];
        e += y * y;
    }
    return e / n;
}

static int clip_search_asym(float *wclip, float *err0, float *err1, const float *w, const float *x,
                            QuantSpec s, int out, int in, int n) {
    if (s.method != QUANT_INT && s.method != QUANT_NF3 && s.method != QUANT_NF4) return QUANT_ERR_METHOD;
    if (n <= 0) { memcpy(wclip, w, (size_t)out * in * sizeof(float)); return QUANT_OK; }
    int g = quant_group_len(s, in), n_col_groups = in / g;
    int64_t n_groups = (int64_t)out * n_col_groups;
    int bad = 0;
    for (int64_t i = 0; i < (int64_t)out * in; i++) bad |= !isfinite(w[i]);
    for (int64_t i = 0; i < (int64_t)n * in; i++) bad |= !isfinite(x[i]);
    if (bad) return QUANT_ERR_NONFINITE;

    // Phase 1: the Gram matrix of each column group, G_c = X[:,C]^T X[:,C] / n
    double *gram = NULL;
    if (g <= n) {
        gram = (double *)malloc((size_t)in * g * sizeof(double));
        if (!gram) return QUANT_ERR_NOMEM;
#pragma omp parallel for
        for (int c = 0; c < n_col_groups; c++) {
            double *G = gram + (int64_t)c * g * g;
            for (int a = 0; a < g; a++)
                for (int b = 0; b <= a; b++) {
                    double acc = 0.0;
                    for (int t = 0; t < n; t++)
                        acc += (double)x[(int64_t)t * in + c * g + a] * x[(int64_t)t * in + c * g + b];
                    G[(int64_t)a * g + b] = G[(int64_t)b * g + a] = acc / n;
                }
        }
    }

    // Phase 2: every group tries the 10 x 10 grid of shrink pairs
#pragma omp parallel reduction(| : bad)
    {
        float *buf = (float *)malloc((size_t)3 * g * sizeof(float));
        if (!buf) bad |= 1;
#pragma omp for schedule(dynamic, 4)
        for (int64_t k = 0; k < n_groups; k++) {
            if (!buf) continue;
            float *wc = buf, *wq = buf + g, *d = buf + 2 * g;
            const float *wk = w + k * g;
            int c = (int)(k % n_col_groups);
            const double *G = gram ? gram + (int64_t)c * g * g : NULL;
            float mn, mx, p0, p1;
            group_minmax(&mn, &mx, wk, g);
            double best = INFINITY;
            int best_i = 0, best_j = 0;
            for (int i = 0; i < 10; i++)
                for (int j = 0; j < 10; j++) {
                    float hi = mx * (1.0f - i / 20.0f), lo = mn * (1.0f - j / 20.0f);
                    for (int e = 0; e < g; e++) wc[e] = clampf(wk[e], lo, hi);
                    if (s.method == QUANT_INT) int_asym_group(wq, NULL, &p0, &p1, wc, g, s.bits);
                    else nf_asym_group(wq, NULL, &p0, &p1, wc, g, s.bits);
                    for (int e = 0; e < g; e++) d[e] = wq[e] - wk[e];
                    double err = clip_group_error(d, G, x + c * g, g, n, in);
                    if (i == 0 && j == 0 && err0) err0[k] = (float)err;
                    if (err < best) { best = err; best_i = i; best_j = j; }
                }
            float hi = mx * (1.0f - best_i / 20.0f), lo = mn * (1.0f - best_j / 20.0f);
            for (int e = 0; e < g; e++) wclip[k * g + e] = clampf(wk[e], lo, hi);
            if (err1) err1[k] = (float)best;
        }
        free(buf);
    }
    free(gram);
    return bad ? QUANT_ERR_NOMEM : QUANT_OK;
}

// ---------------------------------------------------------------------------------------------
// Packed storage of codes.
// Widths 1..8: one little-endian bit stream. Code i occupies stream bits [i*b, (i+1)*b), and
// stream bit k is bit (k mod 8) of byte k/8 (least significant first). So 1-bit codes are 8 per
// byte with code 0 in bit 0, 2-bit 4 per byte, 4-bit 2 per byte with code 0 in the low nibble,
// 8-bit one per byte, and 3-bit codes straddle bytes. Unused high bits of the last byte are 0.
// Ternary: 5 trits per byte, byte = t0 + 3 t1 + 9 t2 + 27 t3 + 81 t4 ≤ 242 (3^5 = 243 ≤ 256), so
// 1.6 bits per weight; missing trits of the last byte are 0.
// The scales are not packed here: the exporter stores p0, p1 in fp16 (util.h's f32_to_fp16) and
// the loader dequantizes with the fp16-rounded values (quant.h stays free of util.h). The
// dequantized weights then equal the forward's ŵ exactly whenever the scales are
// fp16-representable, and differ by at most the fp16 rounding of the scales otherwise.

enum { QUANT_PACK_TRITS = 0 };  // the "width" of ternary packing

// Width used to pack a spec's codes: bits, or QUANT_PACK_TRITS for ternary.
static int quant_pack_width(QuantSpec s) { return s.method == QUANT_TERNARY ? QUANT_PACK_TRITS : s.bits; }

static int64_t quant_packed_bytes(int64_t n, int width) {
    return width == QUANT_PACK_TRITS ? (n + 4) / 5 : (n * width + 7) / 8;
}

// Returns QUANT_ERR_CODES if a code does not fit the width.
static int pack_codes(uint8_t *dst, const uint8_t *codes, int64_t n, int width) {
    if (width == QUANT_PACK_TRITS) {
        for (int64_t i = 0; i < n; i += 5) {
            int byte = 0, pow3 = 1;
            for (int64_t t = i; t < i + 5 && t < n; t++, pow3 *= 3) {
                if (codes[t] > 2) return QUANT_ERR_CODES;
                byte += codes[t] * pow3;
            }
            dst[i / 5] = (uint8_t)byte;
        }
        return QUANT_OK;
    }
    uint32_t acc = 0;  // bits not yet written, lowest first
    int n_acc = 0;
    int64_t o = 0;
    for (int64_t i = 0; i < n; i++) {
        if (codes[i] >> width) return QUANT_ERR_CODES;
        acc |= (uint32_t)codes[i] << n_acc;
        n_acc += width;
        while (n_acc >= 8) { dst[o++] = (uint8_t)acc; acc >>= 8; n_acc -= 8; }
    }
    if (n_acc > 0) dst[o] = (uint8_t)acc;
    return QUANT_OK;
}

// Returns QUANT_ERR_CODES for a ternary byte above 242 (a corrupt file).
static int unpack_codes(uint8_t *codes, const uint8_t *src, int64_t n, int width) {
    if (width == QUANT_PACK_TRITS) {
        for (int64_t i = 0; i < n; i += 5) {
            int byte = src[i / 5];
            if (byte > 242) return QUANT_ERR_CODES;
            for (int64_t t = i; t < i + 5 && t < n; t++, byte /= 3) codes[t] = (uint8_t)(byte % 3);
        }
        return QUANT_OK;
    }
    uint32_t acc = 0, mask = (1u << width) - 1;
    int n_acc = 0;
    int64_t o = 0;
    for (int64_t i = 0; i < n; i++) {
        while (n_acc < width) { acc |= (uint32_t)src[o++] << n_acc; n_acc += 8; }
        codes[i] = (uint8_t)(acc & mask);
        acc >>= width;
        n_acc -= width;
    }
    return QUANT_OK;
}

// ---------------------------------------------------------------------------------------------
// Flip-flops (QAT's stability measure, as Leszko & Mateńko 2025 track it): how many codes
// changed between two snapshots of a tensor, e.g. before and after an optimizer step. The rate
// is count / n.
static int64_t count_flips(const uint8_t *before, const uint8_t *after, int64_t n) {
    int64_t flips = 0;
#pragma omp parallel for reduction(+ : flips)
    for (int64_t i = 0; i < n; i++) flips += before[i] != after[i];
    return flips;
}

#endif

// gemm.h — the single-precision matrix product every linear layer runs on the CPU:
//
//   C[M,N] = op(A)[M,K] op(B)[K,N]        (accumulate = 0)
//   C[M,N] += op(A)[M,K] op(B)[K,N]       (accumulate = 1)
//
// all row-major; op(A) = A stored [M,K] (ta = 0) or A^T with A stored [K,M] (ta = 1), and
// likewise op(B) = B stored [K,N] (tb = 0) or [N,K] (tb = 1). A linear y = x W^T with W [O,I]
// (Hugging Face's layout) needs all three forms: y = x W^T (tb = 1), dx += dy W (plain),
// dW += dy^T x (ta = 1); no operand is ever transposed into a buffer of its own.
//
// The structure is the one of GotoBLAS and BLIS (Goto & van de Geijn 2008; Van Zee & van de
// Geijn 2015): five loops around a small register-blocked micro-kernel, with both operands
// copied ("packed") into contiguous panels sized to the caches:
//
//   for jc in N by NC:                   B block  [KC x NC]  stays in L3
//     for pc in K by KC:                 pack op(B)[pc:+KC, jc:+NC] -> Bp
//       for ic in M by MC:               A block  [MC x KC]  stays in L2
//         pack op(A)[ic:+MC, pc:+KC] -> Ap
//         for jr in NC by NR:            B micro-panel [KC x NR]
//           for ir in MC by MR:          A micro-panel [MR x KC]
//             C[ir:+MR, jr:+NR] += Ap[ir] Bp[jr]       (the micro-kernel)
//
//   packed A block, MR rows at a time,       packed B block, NR columns at a time,
//   k-major inside each micro-panel:         k-major inside each micro-panel:
//     Ap: | a(0,0..MR) a(1,0..MR) ... |        Bp: | b(0,0..NR) b(1,0..NR) ... |
//         |<------ MR x KC floats --->|            |<------ KC x NR floats --->|
//
// The micro-kernel keeps the whole MR x NR tile of C in vector registers for the KC steps:
// each step loads NR floats of Bp (NR/16 zmm or NR/8 ymm registers), broadcasts the MR floats
// of Ap one at a time and issues MR * NR/width fused multiply-adds, so every float loaded feeds
// several FMAs and the loop runs at the FMA units' rate. Packing makes every load of the
// kernel contiguous whatever ta, tb and the strides are, and pads the edge panels with zeros,
// so the kernel only ever sees full tiles: an edge tile is computed into a local MR x NR
// buffer, of which the valid part is added to C.
//
// The kernel is chosen at compile time: AVX-512F (__AVX512F__, 14 x 32: 28 zmm accumulators),
// AVX2 + FMA (__AVX2__ && __FMA__, 6 x 16: 12 ymm accumulators, the classic choice), else
// plain C that the compiler vectorises as it can (4 x 16). GEMM_PORTABLE forces the last.
//
// Threads (OpenMP): each computes its own block of C (a share of the rows; of the columns too
// when M is small) with its own packed panels, so they never wait for one another. Every
// element of C is summed by one thread in one fixed order (k ascending), so the result does not
// depend on the number of threads.
// For M <= GEMM_SMALL_M with ta = 0, tb = 1 (y = x W^T in batch-1 decoding: a matrix-vector
// product bound by memory, not by FMAs) packing would only add work: each row of B is read
// once and dotted with the M rows of A.
#ifndef GEMM_H
#define GEMM_H

#include <stdint.h>  // defines: int64_t
#include <string.h>  // defines: memset
#if !defined(GEMM_PORTABLE) && (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)))
#include <immintrin.h>  // defines: _mm512_fmadd_ps, _mm256_fmadd_ps, ...
#endif
#ifdef _OPENMP
#include <omp.h>  // defines: omp_get_max_threads, omp_get_thread_num, omp_get_num_threads
#endif

#if !defined(GEMM_PORTABLE) && defined(__AVX512F__)
#define GEMM_ISA "avx512f"
#ifndef GEMM_MR
#define GEMM_MR 14
#endif
#define GEMM_NR 32
#elif !defined(GEMM_PORTABLE) && defined(__AVX2__) && defined(__FMA__)
#define GEMM_ISA "avx2+fma"
#define GEMM_MR 6
#define GEMM_NR 16
#else
#define GEMM_ISA "portable"
#define GEMM_MR 4
#define GEMM_NR 16
#endif
// Cache blocks: Ap (MC x KC floats) fits a core's L2 beside the B micro-panel it meets (KC x NR),
// Bp (KC x NC) the shared L3. Multiples of MR and NR.
#ifndef GEMM_KC
#define GEMM_KC 384
#endif
#ifndef GEMM_MC
#define GEMM_MC (GEMM_MR * 12)
#endif
#ifndef GEMM_NC
#define GEMM_NC (GEMM_NR * 64)
#endif
#define GEMM_MAX_THREADS 32
#define GEMM_SMALL_M 4

// The packed panels, one pair per thread: static, so no call allocates (untouched pages cost
// nothing).
static float gemm_bp[GEMM_MAX_THREADS][GEMM_KC * GEMM_NC] __attribute__((aligned(64)));
static float gemm_ap[GEMM_MAX_THREADS][GEMM_MC * GEMM_KC] __attribute__((aligned(64)));

// --- the micro-kernel: c[MR,NR] (+)= ap[kc,MR]^T bp[kc,NR], c with row stride ldc ----------
#if !defined(GEMM_PORTABLE) && defined(__AVX512F__)
static void gemm_kernel(int kc, const float *ap, const float *bp, float *c, int64_t ldc, int accumulate) {
    __m512 c0[GEMM_MR], c1[GEMM_MR];
#pragma GCC unroll 16
    for (int i = 0; i < GEMM_MR; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++, ap += GEMM_MR, bp += GEMM_NR) {
        __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
#pragma GCC unroll 16
        for (int i = 0; i < GEMM_MR; i++) {
            __m512 a = _mm512_set1_ps(ap[i]);
            c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
        }
    }
#pragma GCC unroll 16
    for (int i = 0; i < GEMM_MR; i++) {
        float *ci = c + i * ldc;
        if (accumulate) {
            c0[i] = _mm512_add_ps(_mm512_loadu_ps(ci), c0[i]);
            c1[i] = _mm512_add_ps(_mm512_loadu_ps(ci + 16), c1[i]);
        }
        _mm512_storeu_ps(ci, c0[i]);
        _mm512_storeu_ps(ci + 16, c1[i]);
    }
}
#elif !defined(GEMM_PORTABLE) && defined(__AVX2__) && defined(__FMA__)
static void gemm_kernel(int kc, const float *ap, const float *bp, float *c, int64_t ldc, int accumulate) {
    __m256 c0[GEMM_MR], c1[GEMM_MR];
#pragma GCC unroll 8
    for (int i = 0; i < GEMM_MR; i++) c0[i] = c1[i] = _mm256_setzero_ps();
    for (int k = 0; k < kc; k++, ap += GEMM_MR, bp += GEMM_NR) {
        __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
#pragma GCC unroll 8
        for (int i = 0; i < GEMM_MR; i++) {
            __m256 a = _mm256_broadcast_ss(ap + i);
            c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
            c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < GEMM_MR; i++) {
        float *ci = c + i * ldc;
        if (accumulate) {
            c0[i] = _mm256_add_ps(_mm256_loadu_ps(ci), c0[i]);
            c1[i] = _mm256_add_ps(_mm256_loadu_ps(ci + 8), c1[i]);
        }
        _mm256_storeu_ps(ci, c0[i]);
        _mm256_storeu_ps(ci + 8, c1[i]);
    }
}
#else
static void gemm_kernel(int kc, const float *ap, const float *bp, float *c, int64_t ldc, int accumulate) {
    float acc[GEMM_MR][GEMM_NR] = {{0}};
    for (int k = 0; k < kc; k++, ap += GEMM_MR, bp += GEMM_NR)
        for (int i = 0; i < GEMM_MR; i++)
            for (int j = 0; j < GEMM_NR; j++) acc[i][j] += ap[i] * bp[j];
    for (int i = 0; i < GEMM_MR; i++)
        for (int j = 0; j < GEMM_NR; j++) c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + acc[i][j];
}
#endif

// --- packing ---------------------------------------------------------------------------------
// Bp <- op(B)[pc:+kc, j0:+nr] as one micro-panel bp[k*NR + j], zero past nr columns.
static void gemm_pack_b(float *bp, const float *B, int tb, int N, int K, int pc, int kc, int j0) {
    int nr = N - j0 < GEMM_NR ? N - j0 : GEMM_NR;
    if (!tb) {  // B [K,N]: a row of the panel is contiguous
        for (int k = 0; k < kc; k++) {
            const float *b = B + (int64_t)(pc + k) * N + j0;
            float *d = bp + k * GEMM_NR;
            for (int j = 0; j < nr; j++) d[j] = b[j];
            for (int j = nr; j < GEMM_NR; j++) d[j] = 0.0f;
        }
    } else {    // B [N,K]: a column of the panel is contiguous; 32 k at a time, so that the
                // 32 rows of the panel being written stay in L1 while every column visits them
        for (int k0 = 0; k0 < kc; k0 += 32) {
            int k1 = kc - k0 < 32 ? kc : k0 + 32;
            for (int j = 0; j < nr; j++) {
                const float *b = B + (int64_t)(j0 + j) * K + pc;
                for (int k = k0; k < k1; k++) bp[k * GEMM_NR + j] = b[k];
            }
            for (int j = nr; j < GEMM_NR; j++)
                for (int k = k0; k < k1; k++) bp[k * GEMM_NR + j] = 0.0f;
        }
    }
}

// Ap <- op(A)[i0:+MR, pc:+kc] as one micro-panel ap[k*MR + i], zero past mr rows.
static void gemm_pack_a(float *ap, const float *A, int ta, int M, int K, int pc, int kc, int i0) {
    int mr = M - i0 < GEMM_MR ? M - i0 : GEMM_MR;
    if (ta) {   // A [K,M]: a row of the panel (fixed k) is contiguous
        for (int k = 0; k < kc; k++) {
            const float *a = A + (int64_t)(pc + k) * M + i0;
            float *d = ap + k * GEMM_MR;
            for (int i = 0; i < mr; i++) d[i] = a[i];
            for (int i = mr; i < GEMM_MR; i++) d[i] = 0.0f;
        }
    } else {    // A [M,K]: a column of the panel is contiguous (32 k at a time, as for B)
        for (int k0 = 0; k0 < kc; k0 += 32) {
            int k1 = kc - k0 < 32 ? kc : k0 + 32;
            for (int i = 0; i < mr; i++) {
                const float *a = A + (int64_t)(i0 + i) * K + pc;
                for (int k = k0; k < k1; k++) ap[k * GEMM_MR + i] = a[k];
            }
            for (int i = mr; i < GEMM_MR; i++)
                for (int k = k0; k < k1; k++) ap[k * GEMM_MR + i] = 0.0f;
        }
    }
}

// --- small M, ta = 0, tb = 1: C[m,n] (+)= dot(A[m,:], B[n,:]) --------------------------------
// Sixteen partial sums, a vector register's worth, so the compiler vectorises the dot product.
static inline __attribute__((always_inline)) float gemm_dot(const float *a, const float *b, int K) {
    float s[16] = {0};
    int k = 0;
    for (; k + 16 <= K; k += 16)
        for (int j = 0; j < 16; j++) s[j] += a[k + j] * b[k + j];
    for (int j = 0; k < K; k++, j++) s[j] += a[k] * b[k];
    for (int w = 8; w > 0; w /= 2)
        for (int j = 0; j < w; j++) s[j] += s[j + w];
    return s[0];
}

static void gemm_small_m(float *C, const float *A, const float *B, int M, int N, int K, int accumulate) {
#pragma omp parallel for schedule(static) if ((int64_t)N * K > 32768)
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++) {
            float d = gemm_dot(A + (int64_t)m * K, B + (int64_t)n * K, K);
            float *c = C + (int64_t)m * N + n;
            *c = accumulate ? *c + d : d;
        }
}

// --- the five loops --------------------------------------------------------------------------
// The block C[r0:r1, c0:c1] of the product, by one thread (r0 a multiple of MR, c0 of NR),
// with its own packing buffers bp and ap.
static void gemm_block(float *C, const float *A, const float *B, int M, int N, int K, int ta, int tb,
                       int accumulate, int r0, int r1, int c0, int c1, float *bp, float *ap) {
    for (int jc = c0; jc < c1; jc += GEMM_NC) {
        int nc = c1 - jc < GEMM_NC ? c1 - jc : GEMM_NC;
        for (int pc = 0; pc < K; pc += GEMM_KC) {
            int kc = K - pc < GEMM_KC ? K - pc : GEMM_KC;
            int acc = accumulate || pc > 0;  // the first K block writes C unless asked to add
            for (int j = 0; j < nc; j += GEMM_NR) gemm_pack_b(bp + (int64_t)j * kc, B, tb, N, K, pc, kc, jc + j);
            for (int ic = r0; ic < r1; ic += GEMM_MC) {
                int mc = r1 - ic < GEMM_MC ? r1 - ic : GEMM_MC;
                for (int i = 0; i < mc; i += GEMM_MR) gemm_pack_a(ap + i * kc, A, ta, M, K, pc, kc, ic + i);
                for (int j = 0; j < nc; j += GEMM_NR) {
                    int nr = N - (jc + j) < GEMM_NR ? N - (jc + j) : GEMM_NR;
                    for (int i = 0; i < mc; i += GEMM_MR) {
                        int mr = mc - i < GEMM_MR ? mc - i : GEMM_MR;
                        float *c = C + (int64_t)(ic + i) * N + jc + j;
                        if (mr == GEMM_MR && nr == GEMM_NR) {
                            gemm_kernel(kc, ap + i * kc, bp + (int64_t)j * kc, c, N, acc);
                        } else {  // an edge tile: the full tile into t, its valid part into C
                            float t[GEMM_MR * GEMM_NR] __attribute__((aligned(64)));
                            gemm_kernel(kc, ap + i * kc, bp + (int64_t)j * kc, t, GEMM_NR, 0);
                            for (int a = 0; a < mr; a++)
                                for (int b = 0; b < nr; b++)
                                    c[(int64_t)a * N + b] = (acc ? c[(int64_t)a * N + b] : 0.0f) + t[a * GEMM_NR + b];
                        }
                    }
                }
            }
        }
    }
}

static void gemm(float *C, const float *A, const float *B, int M, int N, int K, int ta, int tb, int accumulate) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        if (!accumulate) memset(C, 0, (size_t)M * N * sizeof(float));
        return;
    }
    if (!ta && tb && M <= GEMM_SMALL_M) { gemm_small_m(C, A, B, M, N, K, accumulate); return; }
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
    if (nt > GEMM_MAX_THREADS) nt = GEMM_MAX_THREADS;
    if ((double)M * N * K < 1e5) nt = 1;  // a parallel region costs more than the product
#endif
    int m_p = (M + GEMM_MR - 1) / GEMM_MR, n_p = (N + GEMM_NR - 1) / GEMM_NR;  // micro-panels of C
#pragma omp parallel num_threads(nt)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        // The threads as a grid tm x tn over C: tm equal shares of the row panels, each split tn
        // ways over the column panels when there are fewer row panels than threads. A thread
        // packs what its block needs (B twice over with two threads: K*N copies against
        // M*N*K/2 multiply-adds), and no thread ever waits for another until the end.
        int tm = m_p < nth ? m_p : nth, tn = nth / tm;
        if (tn > n_p) tn = n_p;
        int ti = tid / tn, tj = tid % tn;
        if (ti < tm) {  // (threads past tm * tn have no share)
            int r0 = (int)((int64_t)m_p * ti / tm) * GEMM_MR, r1 = (int)((int64_t)m_p * (ti + 1) / tm) * GEMM_MR;
            int c0 = (int)((int64_t)n_p * tj / tn) * GEMM_NR, c1 = (int)((int64_t)n_p * (tj + 1) / tn) * GEMM_NR;
            gemm_block(C, A, B, M, N, K, ta, tb, accumulate, r0, r1 < M ? r1 : M, c0, c1 < N ? c1 : N,
                       gemm_bp[tid], gemm_ap[tid]);
        }
    }
}

#endif

// attention.h — causal grouped-query attention on the CPU, by blocks of queries through gemm.
//
// The same function as train.c's attention_forward_reference / attention_backward_reference
// (the definition, one query row and one key at a time; the formulas are there), computed a
// block of ATT_BQ queries at a time so that its products run as matrix products at the
// matmul's rate. For queries [t0, t1) of one head only the keys [0, t1) can be seen, so a
// block's products stop at t1: the blocks above the diagonal are never computed.
//   forward, per block:  S = Q_b K^T [bq, t1],  p = softmax of each row over j <= t (0 beyond),
//                        O_b = P V,  lse_t = log sum_j exp(s_tj)
//   backward, per block: P again from S and lse,  dP = dO_b V^T,  dS = P o (dP - Delta) / sqrt(hd)
//                        with Delta_t = dO_t . O_t,  dV += P^T dO_b,  dQ_b = dS K,  dK += dS^T Q_b
// A head's rows of q, k, v (strided in [B,T,NH,hd]) are first copied into contiguous [T, hd]
// buffers, which gemm's layouts need; gradients are added back the same way.
// Thread mapping: the forward one (b, h) pair per iteration, the backward one (b, kv head), so
// that the dk and dv rows a thread adds to are its own; each thread runs gemm's blocked product
// alone (gemm_block with its own packing buffers) on its own scratch.
#ifndef ATTENTION_H
#define ATTENTION_H

#include <math.h>
#include <string.h>
#include "gemm.h"
#include "util.h"

#define ATT_BQ 64  // queries a block

// Per-thread scratch, grown as needed and kept (a fresh allocation a layer would cost page faults).
static float *att_scratch[GEMM_MAX_THREADS];
static size_t att_scratch_n[GEMM_MAX_THREADS];
static float *att_buffer(int tid, size_t n) {
    if (att_scratch_n[tid] < n) {
        free(att_scratch[tid]);
        att_scratch[tid] = malloc_or_die(n * sizeof(float), "attention scratch");
        att_scratch_n[tid] = n;
    }
    return att_scratch[tid];
}

static int att_threads(void) {
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
    if (nt > GEMM_MAX_THREADS) nt = GEMM_MAX_THREADS;
#endif
    return nt;
}
static int att_tid(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// y[T, hd] = head h's rows of x[B,T,NH,hd] in batch b; att_scatter_add adds them back.
static void att_gather(float *y, const float *x, int b, int T, int NH, int h, int hd) {
    for (int t = 0; t < T; t++) memcpy(y + (int64_t)t * hd, x + (((int64_t)b * T + t) * NH + h) * hd, (size_t)hd * sizeof(float));
}
static void att_scatter_add(float *x, const float *y, int b, int T, int NH, int h, int hd) {
    for (int t = 0; t < T; t++) {
        float *xt = x + (((int64_t)b * T + t) * NH + h) * hd;
        const float *yt = y + (int64_t)t * hd;
        for (int i = 0; i < hd; i++) xt[i] += yt[i];
    }
}

// C[M,N] (+)= op(A) op(B) by the calling thread alone, with its packing buffers.
static void att_gemm(float *C, const float *A, const float *B, int M, int N, int K, int ta, int tb, int accumulate, int tid) {
    gemm_block(C, A, B, M, N, K, ta, tb, accumulate, 0, M, 0, N, gemm_bp[tid], gemm_ap[tid]);
}

// q[B,T,H,hd], k,v[B,T,KV,hd] -> out[B,T,H,hd], lse[B,H,T].
static void attention_forward(float *out, float *lse, const float *q, const float *k, const float *v,
                              int B, int T, int H, int KV, int hd) {
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for collapse(2) schedule(dynamic) num_threads(att_threads())
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            int tid = att_tid();
            int64_t th = (int64_t)T * hd;
            float *Q = att_buffer(tid, 4 * th + (int64_t)ATT_BQ * T), *K = Q + th, *V = K + th, *O = V + th, *S = O + th;
            att_gather(Q, q, b, T, H, h, hd);
            att_gather(K, k, b, T, KV, h / group, hd);
            att_gather(V, v, b, T, KV, h / group, hd);
            for (int t0 = 0; t0 < T; t0 += ATT_BQ) {
                int bq = T - t0 < ATT_BQ ? T - t0 : ATT_BQ, t1 = t0 + bq;
                att_gemm(S, Q + (int64_t)t0 * hd, K, bq, t1, hd, 0, 1, 0, tid);  // S[bq, t1] = Q_b K^T
                for (int r = 0; r < bq; r++) {
                    int t = t0 + r;
                    float *s = S + (int64_t)r * t1, mx = -INFINITY, sum = 0.0f;
                    for (int j = 0; j <= t; j++) { s[j] *= scale; if (s[j] > mx) mx = s[j]; }
                    for (int j = 0; j <= t; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
                    for (int j = 0; j <= t; j++) s[j] /= sum;
                    for (int j = t + 1; j < t1; j++) s[j] = 0.0f;  // the keys after t are masked
                    lse[((int64_t)b * H + h) * T + t] = mx + logf(sum);
                }
                att_gemm(O + (int64_t)t0 * hd, S, V, bq, hd, t1, 0, 0, 0, tid);  // O_b = P V
            }
            for (int t = 0; t < T; t++)
                memcpy(out + (((int64_t)b * T + t) * H + h) * hd, O + (int64_t)t * hd, (size_t)hd * sizeof(float));
        }
}

// Adds dL/dq, dL/dk, dL/dv of the forward above to dq, dk, dv, given dout = dL/dout, its out
// and lse.
static void attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                               const float *v, const float *out, const float *lse, int B, int T, int H, int KV, int hd) {
    int group = H / KV;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for collapse(2) schedule(dynamic) num_threads(att_threads())
    for (int b = 0; b < B; b++)
        for (int kvh = 0; kvh < KV; kvh++) {
            int tid = att_tid();
            int64_t th = (int64_t)T * hd;
            float *K = att_buffer(tid, 8 * th + 2 * (int64_t)ATT_BQ * T), *V = K + th, *dK = V + th, *dV = dK + th,
                  *Q = dV + th, *dO = Q + th, *O = dO + th, *dQ = O + th, *P = dQ + th, *dP = P + (int64_t)ATT_BQ * T;
            att_gather(K, k, b, T, KV, kvh, hd);
            att_gather(V, v, b, T, KV, kvh, hd);
            memset(dK, 0, (size_t)(2 * th) * sizeof(float));  // dK and dV
            for (int h = kvh * group; h < (kvh + 1) * group; h++) {
                att_gather(Q, q, b, T, H, h, hd);
                att_gather(dO, dout, b, T, H, h, hd);
                att_gather(O, out, b, T, H, h, hd);
                const float *L = lse + ((int64_t)b * H + h) * T;
                for (int t0 = 0; t0 < T; t0 += ATT_BQ) {
                    int bq = T - t0 < ATT_BQ ? T - t0 : ATT_BQ, t1 = t0 + bq;
                    const float *Qb = Q + (int64_t)t0 * hd, *dOb = dO + (int64_t)t0 * hd;
                    att_gemm(P, Qb, K, bq, t1, hd, 0, 1, 0, tid);    // S = Q_b K^T
                    att_gemm(dP, dOb, V, bq, t1, hd, 0, 1, 0, tid);  // dP = dO_b V^T
                    for (int r = 0; r < bq; r++) {
                        int t = t0 + r;
                        float *p = P + (int64_t)r * t1, *ds = dP + (int64_t)r * t1;
                        float delta = gemm_dot(dOb + (int64_t)r * hd, O + (int64_t)t * hd, hd);
                        for (int j = 0; j <= t; j++) {
                            p[j] = expf(p[j] * scale - L[t]);
                            ds[j] = p[j] * (ds[j] - delta) * scale;
                        }
                        for (int j = t + 1; j < t1; j++) p[j] = ds[j] = 0.0f;
                    }
                    att_gemm(dV, P, dOb, t1, hd, bq, 1, 0, 1, tid);                  // dV += P^T dO_b
                    att_gemm(dQ + (int64_t)t0 * hd, dP, K, bq, hd, t1, 0, 0, 0, tid);  // dQ_b = dS K
                    att_gemm(dK, dP, Qb, t1, hd, bq, 1, 0, 1, tid);                  // dK += dS^T Q_b
                }
                att_scatter_add(dq, dQ, b, T, H, h, hd);
            }
            att_scatter_add(dk, dK, b, T, KV, kvh, hd);
            att_scatter_add(dv, dV, b, T, KV, kvh, hd);
        }
}

#endif

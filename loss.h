// loss.h — the distillation losses: what the quantized student is trained to minimise.
//
// One position of one sequence: the student's logits zs[V], the teacher's logits zt[Vt] (the
// same model in full precision, or a larger one) and, where the loss needs it, the label (the
// next token). P = softmax(z). Every loss below
//   - returns its value at that position, as a double (accumulated in double);
//   - OVERWRITES dzs[V] with scale * dL/dzs, where `scale` is the caller's reduction factor
//     (distill_loss_batch passes 1/B);
//   - works in log space: log P(v) = z_v - logsumexp(z), with the maximum subtracted inside
//     the log-sum-exp, so logits of +-1e4 give finite numbers, never log(0) or inf - inf;
//   - takes finite logits (an inf or NaN logit gives a NaN loss, which stops training);
//   - allocates nothing. Only the Wasserstein loss needs a temporary, one vocabulary-sized
//     row `scratch` given by the caller (distill_loss_scratch_floats says how long).
//
// The losses (KL(P || Q) = sum_v P(v) (log P(v) - log Q(v))):
//   ce           -log P_S(label)                                  plain next-token training
//   fkl          KL(P_T || P_S)       forward KL: the student must cover the teacher's mass
//   rkl          KL(P_S || P_T)       reverse KL: the student seeks the teacher's modes
//   cakld        gamma KL(P_S || P_T) + (1 - gamma) KL(P_T || P_S)
//                the confidence-aware KL of BitDistiller (Du et al. 2024, eq. 1): gamma is the
//                teacher's mean confidence (gamma_accumulate below), so a confident teacher
//                weighs the mode-seeking reverse KL more
//   cakld_ce     tau^2 [(1 - gamma) KL(P_T^tau || P_S^tau) + gamma KL(P_S^tau || P_T^tau)]
//                + CE(label),  P^tau = softmax(z / tau), tau the temperature (default 20);
//                tau^2 keeps the gradient's size independent of tau (Hinton et al. 2015)
//   wasserstein  the universal logit distillation loss (Boizard et al. 2025): sort P_S and P_T
//                in descending order, pad the shorter with zeros, L = sum_i |P_S(i) - P_T(i)|.
//                It only compares sorted probabilities, so the teacher may have another
//                vocabulary (Vt != V). Every other loss needs Vt == V.
//
// Reduction (distill_loss_batch), as BitDistiller, so that its learning rates carry over:
// sum over the unmasked positions of a sequence, mean over the B sequences of the batch.
//
// Pure math: only <math.h>, <stdlib.h>, <string.h>, so that C programs, CUDA host code and the
// tests all include it. Functions marked QD also compile for the GPU (__host__ __device__).
#ifndef LOSS_H
#define LOSS_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef QD
#ifdef __CUDACC__
#define QD __host__ __device__
#else
#define QD
#endif
#endif

// ----------------------------------------------------------------------------------------
// Softmax in log space.

// logsumexp(z / tau) over n logits = m + log sum_v exp(z_v / tau - m), m = max_v z_v / tau.
QD static inline double logsumexp_tempered(const float *z, int n, double inv_tau) {
    float mx = z[0];
    for (int v = 1; v < n; v++) mx = z[v] > mx ? z[v] : mx;
    double m = (double)mx * inv_tau, s = 0.0;
    for (int v = 0; v < n; v++) s += exp((double)z[v] * inv_tau - m);
    return m + log(s);
}

// ----------------------------------------------------------------------------------------
// Cross-entropy: L = -log P_S(y) = logsumexp(zs) - zs[y];  dL/dzs = P_S - onehot(y).
// A label outside [0, V) returns NaN (the caller checks its data; NaN stops training).

// Adds scale * dL/dzs to dzs (cakld_ce adds it to the KL terms' gradient).
QD static inline double ce_add(float *dzs, const float *zs, int label, int V, float scale) {
    if (label < 0 || label >= V) return NAN;
    double lse = logsumexp_tempered(zs, V, 1.0);
    for (int v = 0; v < V; v++) dzs[v] += scale * (float)exp((double)zs[v] - lse);
    dzs[label] -= scale;
    return lse - zs[label];
}

QD static inline double ce_loss(float *dzs, const float *zs, int label, int V, float scale) {
    for (int v = 0; v < V; v++) dzs[v] = 0.0f;
    return ce_add(dzs, zs, label, V, scale);
}

// ----------------------------------------------------------------------------------------
// The KL family. One function computes both directions at temperature tau, at once:
//
//   L = (1 - gamma) KL(P_T || P_S) + gamma KL(P_S || P_T),   P = softmax(z / tau).
//
// With u = zs / tau and a_v = log P_S(v) - log P_T(v):
//   d KL(P_T || P_S) / du_j = P_S(j) - P_T(j)                         (since sum P_T = 1)
//   d KL(P_S || P_T) / du_j = P_S(j) (a_j - KL(P_S || P_T))
//     [ KL(P_S||P_T) = sum_v P_S(v) a_v and dP_S(v)/du_j = P_S(v)(delta_vj - P_S(j)); the
//       "+1" from d a_v/du_j = delta_vj - P_S(j) sums to zero against it ]
// and d/dzs = (1/tau) d/du. The reverse KL's gradient needs its value, hence two passes.
// Identical logits give a_v = 0 exactly, so L = 0 and dL/dzs = 0 exactly.

QD static inline double kl_mix_tempered(float *dzs, const float *zs, const float *zt, int V,
                                        float gamma, float tau, float scale) {
    double inv_tau = 1.0 / tau, g = gamma;
    double lse_s = logsumexp_tempered(zs, V, inv_tau), lse_t = logsumexp_tempered(zt, V, inv_tau);
    // pass 1: both divergences
    double fkl = 0.0, rkl = 0.0;
    for (int v = 0; v < V; v++) {
        double ls = (double)zs[v] * inv_tau - lse_s, lt = (double)zt[v] * inv_tau - lse_t;
        double ps = exp(ls), pt = exp(lt);
        fkl += pt * (lt - ls);
        rkl += ps * (ls - lt);
    }
    // pass 2: the gradient, chained through u = zs / tau
    for (int v = 0; v < V; v++) {
        double ls = (double)zs[v] * inv_tau - lse_s, lt = (double)zt[v] * inv_tau - lse_t;
        double ps = exp(ls), pt = exp(lt);
        double d = (1.0 - g) * (ps - pt) + g * ps * ((ls - lt) - rkl);
        dzs[v] = (float)(scale * d * inv_tau);
    }
    return (1.0 - g) * fkl + g * rkl;
}

// KL(P_T || P_S)
QD static inline double fkl_loss(float *dzs, const float *zs, const float *zt, int V, float scale) {
    return kl_mix_tempered(dzs, zs, zt, V, 0.0f, 1.0f, scale);
}

// KL(P_S || P_T)
QD static inline double rkl_loss(float *dzs, const float *zs, const float *zt, int V, float scale) {
    return kl_mix_tempered(dzs, zs, zt, V, 1.0f, 1.0f, scale);
}

// gamma KL(P_S || P_T) + (1 - gamma) KL(P_T || P_S)   (BitDistiller, Du et al. 2024, eq. 1)
QD static inline double cakld_loss(float *dzs, const float *zs, const float *zt, int V, float gamma,
                                   float scale) {
    return kl_mix_tempered(dzs, zs, zt, V, gamma, 1.0f, scale);
}

// tau^2 [(1 - gamma) KL(P_T^tau || P_S^tau) + gamma KL(P_S^tau || P_T^tau)] + CE(label),
// the CE on the untempered logits. At tau = 1 it is cakld + ce.
QD static inline double cakld_ce_loss(float *dzs, const float *zs, const float *zt, int label, int V,
                                      float gamma, float tau, float scale) {
    double kl = kl_mix_tempered(dzs, zs, zt, V, gamma, tau, scale * tau * tau);
    return (double)tau * tau * kl + ce_add(dzs, zs, label, V, scale);
}

// ----------------------------------------------------------------------------------------
// Wasserstein (universal logit distillation, Boizard et al. 2025).
//
// Let S_r be P_S sorted descending (S_r = P_S(p(r)), p(r) the token of rank r) and T_r the
// same for P_T, both padded with zeros to W = max(V, Vt):
//   L = sum_{r < W} |S_r - T_r|.
// The teacher is constant, so only the student's ranks carry a gradient. With the sign
// g_r = sign(S_r - T_r) (the gradient of |.| at 0 is taken as 0) and the softmax Jacobian
//   dL/dzs_j = sum_r g_r dS_r/dzs_j = P_S(j) (g_rank(j) - gbar),   gbar = sum_r S_r g_r.
// Between ties that is the exact gradient. Where student logits tie, the order among them is
// arbitrary; every tied token then gets the mean of g over its group, the same whichever
// order the sort left them in (the average of the gradients of all those orders, so still a
// valid subgradient).
//
// Memory: the caller's scratch row (W floats) first holds the teacher's logits sorted (same
// order as its probabilities; each T_r is recomputed in double from its logit), then g by
// rank, then g by token. dzs first holds the student's ranking p(r) as floats, exact for
// indices below 2^24; larger vocabularies return NaN. Sorting is an in-place heapsort:
// O(V log V), no recursion, no allocation, so it runs on the GPU too.

#define WASSERSTEIN_MAX_VOCAB (1 << 24)

// key of element i: key[a[i]] when sorting indices by key, a[i] itself when key is NULL
QD static inline float sort_key(const float *a, int i, const float *key) {
    return key ? key[(int)a[i]] : a[i];
}

// Restores the min-heap property below `root` in a[0..n).
QD static inline void min_heap_sift_down(float *a, int root, int n, const float *key) {
    for (;;) {
        int c = 2 * root + 1;
        if (c >= n) return;
        if (c + 1 < n && sort_key(a, c + 1, key) < sort_key(a, c, key)) c++;
        if (!(sort_key(a, c, key) < sort_key(a, root, key))) return;
        float t = a[root]; a[root] = a[c]; a[c] = t;
        root = c;
    }
}

// Heapsort into descending order: build a min-heap, then move the minimum to the end n times.
QD static inline void sort_descending(float *a, int n, const float *key) {
    for (int i = n / 2 - 1; i >= 0; i--) min_heap_sift_down(a, i, n, key);
    for (int end = n - 1; end > 0; end--) {
        float t = a[0]; a[0] = a[end]; a[end] = t;
        min_heap_sift_down(a, 0, end, key);
    }
}

// scratch needs max(V, Vt) floats.
QD static inline double wasserstein_loss(float *dzs, float *scratch, const float *zs, const float *zt,
                                         int V, int Vt, float scale) {
    if (V > WASSERSTEIN_MAX_VOCAB || Vt > WASSERSTEIN_MAX_VOCAB) {
        for (int j = 0; j < V; j++) dzs[j] = 0.0f;
        return NAN;
    }
    int W = V > Vt ? V : Vt;
    double lse_s = logsumexp_tempered(zs, V, 1.0), lse_t = logsumexp_tempered(zt, Vt, 1.0);

    // phase 1: the teacher's logits, sorted descending, in scratch[0..Vt)
    for (int i = 0; i < Vt; i++) scratch[i] = zt[i];
    sort_descending(scratch, Vt, NULL);
    // phase 2: the student's ranking, dzs[r] = p(r)
    for (int j = 0; j < V; j++) dzs[j] = (float)j;
    sort_descending(dzs, V, zs);

    // phase 3: the loss, and g_r in place of T_r (read before overwritten)
    double loss = 0.0;
    for (int r = 0; r < W; r++) {
        double S = r < V ? exp((double)zs[(int)dzs[r]] - lse_s) : 0.0;
        double T = r < Vt ? exp((double)scratch[r] - lse_t) : 0.0;
        loss += fabs(S - T);
        if (r < V) scratch[r] = (float)((S > T) - (S < T));
    }

    // phase 4: tied student logits share the mean of their g; gbar = sum_r S_r g_r
    double gbar = 0.0;
    for (int r0 = 0, r1; r0 < V; r0 = r1) {
        float z0 = zs[(int)dzs[r0]];
        double gsum = scratch[r0];
        for (r1 = r0 + 1; r1 < V && zs[(int)dzs[r1]] == z0; r1++) gsum += scratch[r1];
        double gmean = gsum / (r1 - r0);
        for (int r = r0; r < r1; r++) scratch[r] = (float)gmean;
        gbar += (r1 - r0) * exp((double)z0 - lse_s) * gmean;
    }

    // phase 5: from rank order to token order, scratch[p(r)] <- g_r, by following the
    // permutation's cycles; a visited rank r is marked by storing -1 - p(r) in dzs[r]
    for (int s = 0; s < V; s++) {
        if (dzs[s] < 0.0f) continue;
        float carried = scratch[s];
        for (int r = s; dzs[r] >= 0.0f;) {
            int t = (int)dzs[r];
            dzs[r] = -1.0f - (float)t;
            float displaced = scratch[t];
            scratch[t] = carried;
            carried = displaced;
            r = t;
        }
    }

    // phase 6: dL/dzs_j = P_S(j) (g_rank(j) - gbar)
    for (int j = 0; j < V; j++)
        dzs[j] = (float)(scale * exp((double)zs[j] - lse_s) * (scratch[j] - gbar));
    return loss;
}

// ----------------------------------------------------------------------------------------
// Choosing a loss by name, and one entry point for a position.

typedef enum { LOSS_CE, LOSS_FKL, LOSS_RKL, LOSS_CAKLD, LOSS_CAKLD_CE, LOSS_WASSERSTEIN, N_LOSSES } LossKind;

static const char *const LOSS_NAMES[N_LOSSES] = {"ce", "fkl", "rkl", "cakld", "cakld_ce", "wasserstein"};

// The loss named `name`, or -1 when there is none.
static inline int loss_from_name(const char *name) {
    for (int k = 0; k < N_LOSSES; k++)
        if (strcmp(name, LOSS_NAMES[k]) == 0) return k;
    return -1;
}

// The loss and its settings: gamma for cakld and cakld_ce, temperature tau for cakld_ce.
typedef struct {
    LossKind kind;
    float gamma;
    float temperature;
} DistillLoss;

// Floats of scratch a position needs (0: scratch may be NULL).
static inline size_t distill_loss_scratch_floats(LossKind kind, int V, int Vt) {
    return kind == LOSS_WASSERSTEIN ? (size_t)(V > Vt ? V : Vt) : 0;
}

// One position: returns L, overwrites dzs[V] with scale * dL/dzs. zt[Vt] is unused by ce;
// label is used by ce and cakld_ce only. Vt != V outside wasserstein returns NaN, as does an
// unknown kind; in both cases dzs is zeroed.
QD static inline double distill_loss_position(float *dzs, float *scratch, const float *zs, const float *zt,
                                              int label, int V, int Vt, DistillLoss loss, float scale) {
    if (loss.kind == LOSS_CE) return ce_loss(dzs, zs, label, V, scale);
    if (loss.kind == LOSS_WASSERSTEIN) return wasserstein_loss(dzs, scratch, zs, zt, V, Vt, scale);
    if (Vt == V) {
        switch (loss.kind) {
        case LOSS_FKL: return fkl_loss(dzs, zs, zt, V, scale);
        case LOSS_RKL: return rkl_loss(dzs, zs, zt, V, scale);
        case LOSS_CAKLD: return cakld_loss(dzs, zs, zt, V, loss.gamma, scale);
        case LOSS_CAKLD_CE: return cakld_ce_loss(dzs, zs, zt, label, V, loss.gamma, loss.temperature, scale);
        default: break;
        }
    }
    for (int v = 0; v < V; v++) dzs[v] = 0.0f;
    return NAN;
}

// ----------------------------------------------------------------------------------------
// The batch: logits[B,T,V] (student), teacher[B,T,Vt], labels[B,T] (-1 = masked: padding,
// or a prompt under --mask-prompt). Returns
//   L = (1/B) sum_b sum_{t : labels[b,t] >= 0} L(b,t)          (BitDistiller's reduction)
// and overwrites dlogits[B,T,V] with dL/dlogits: (1/B) dL(b,t)/dz at unmasked positions, 0 at
// masked ones. teacher may be NULL for ce.
//
// Parallel over positions (OpenMP). The loss needs one scratch row per position being worked
// on at once: the caller gives `scratch_rows` rows of distill_loss_scratch_floats() floats
// (e.g. one per thread), and the B*T positions are split into that many contiguous chunks,
// chunk c using row c. Losses that need no scratch take NULL and split into single positions.
// The gradient does not depend on the split; the returned sum may differ in the last bits.
static inline double distill_loss_batch(float *dlogits, float *scratch, int scratch_rows,
                                        const float *logits, const float *teacher, const int *labels,
                                        int B, int T, int V, int Vt, DistillLoss loss) {
    long long N = (long long)B * T;
    size_t row = distill_loss_scratch_floats(loss.kind, V, Vt);
    long long chunks = row ? (scratch_rows < 1 ? 1 : scratch_rows) : N;
    if (chunks > N) chunks = N;
    float scale = 1.0f / B;
    double sum = 0.0;
    #pragma omp parallel for schedule(dynamic) reduction(+ : sum)
    for (long long c = 0; c < chunks; c++) {
        float *scr = row ? scratch + (size_t)c * row : NULL;
        for (long long n = c * N / chunks; n < (c + 1) * N / chunks; n++) {
            float *dz = dlogits + (size_t)n * V;
            if (labels[n] < 0) {
                memset(dz, 0, (size_t)V * sizeof(float));
                continue;
            }
            const float *zt = teacher ? teacher + (size_t)n * Vt : NULL;
            sum += distill_loss_position(dz, scr, logits + (size_t)n * V, zt, labels[n], V, Vt, loss, scale);
        }
    }
    return sum / B;
}

// ----------------------------------------------------------------------------------------
// gamma, the teacher's confidence (BitDistiller, Du et al. 2024): the mean over positions of
// max_v P_T(v) = 1 / sum_v exp(zt_v - max zt), measured on the first batches of the training
// data before training. Adds the batch's sum of max_v P_T(v) to *sum and its number of
// positions to *count, so that gamma = sum / count over several batches.
// Positions: those with labels >= 0 (real tokens; the default), or all B*T of them with
// include_pad = 1, as BitDistiller's original code, which averaged over the padding too.
static inline void gamma_accumulate(double *sum, long long *count, const float *teacher, const int *labels,
                                    int B, int T, int Vt, int include_pad) {
    long long N = (long long)B * T, cnt = 0;
    double s = 0.0;
    #pragma omp parallel for reduction(+ : s, cnt)
    for (long long n = 0; n < N; n++) {
        if (!include_pad && labels[n] < 0) continue;
        const float *z = teacher + (size_t)n * Vt;
        float mx = z[0];
        for (int v = 1; v < Vt; v++) mx = z[v] > mx ? z[v] : mx;
        double e = 0.0;
        for (int v = 0; v < Vt; v++) e += exp((double)z[v] - mx);
        s += 1.0 / e;
        cnt++;
    }
    *sum += s;
    *count += cnt;
}

#endif

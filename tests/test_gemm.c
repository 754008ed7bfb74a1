// test_gemm.c — lib/gemm.h's blocked product against the plain triple loop in double.
//
// For every shape class (1 x 1, one row, one column, K = 1, large K, odd sizes, and sizes one
// below, at and one past the micro-tile MR x NR and the cache blocks MC, KC, NC in each
// dimension), every transposition (ta, tb), overwrite and accumulate, and 1, 2 and 3 threads:
//   - random reals in [-1, 1): the error |C - C_ref| against the bound
//     (K + 2) eps (sum_k |a||b| + |C0|), the worst case of a float sum of K products
//     (Higham 2002, section 3.1), as a ratio (ok <= 1);
//   - small integers (|a|, |b| <= 5: every partial sum is an integer below 2^24, so float
//     arithmetic is exact in any order): C equal to the exact product, error 0. This catches
//     what the bound above is too loose to see at large K, such as one missing term;
//   - C bit for bit the same whatever the number of threads (each element has one summation
//     order);
//   - nothing written before or after C (canaries), and the old C ignored when overwriting
//     (C filled with NaN first).
// The kernel compiled here is GEMM_ISA; tests/test_gemm_portable.c compiles this file with
// the plain C kernel, and the Makefile builds it once more without AVX-512.
// A self-check at the end shows that a product with one wrong element is caught.
#include <float.h>  // defines: FLT_EPSILON
#include <math.h>   // defines: fabs, isnan
#include <stdio.h>  // defines: printf
#include "../lib/util.h"  // defines: malloc_or_die
#include "../lib/gemm.h"  // defines: gemm, GEMM_MR, GEMM_NR, GEMM_MC, GEMM_KC, GEMM_NC, GEMM_ISA

static int g_failed = 0, g_rows = 0;

static void report(const char *what, double err, double tol) {
    int bad = !(err <= tol);  // NaN fails too
    g_failed += bad;
    g_rows++;
    printf("  %-72s %10.3e %9.1e  %s\n", what, err, tol, bad ? "FAIL" : "ok");
}

static uint64_t g_seed = 0x9e3779b97f4a7c15ull;
static int g_integers = 0;  // rng_sym draws integers in [-5, 4] instead
static float rng_sym(void) {  // uniform in [-1, 1)
    uint64_t z = (g_seed += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    float u = (float)(z >> 40) / 8388608.0f - 1.0f;
    return g_integers ? floorf(5.0f * u) : u;
}

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

#define GUARD 37  // canary floats on each side of C
#define CANARY 12345.5f

// The reference: P[m,n] = sum_k a(m,k) b(k,n) in double, and S[m,n] = sum_k |a(m,k)||b(k,n)|,
// reading the logical A [M,K] and B [K,N] (row-major, untransposed).
static void reference(double *P, double *S, const float *A, const float *B, int M, int N, int K) {
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double p = 0.0, s = 0.0;
            for (int k = 0; k < K; k++) {
                double t = (double)A[(int64_t)m * K + k] * B[(int64_t)k * N + n];
                p += t;
                s += fabs(t);
            }
            P[(int64_t)m * N + n] = p;
            S[(int64_t)m * N + n] = s;
        }
}

// The largest |C - (C0 + P)| / ((K + 2) eps (S + |C0|)) over C; NaN if any element is NaN.
static double bound_ratio(const float *C, const float *C0, const double *P, const double *S, int64_t n, int K, int acc) {
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double c0 = acc ? C0[i] : 0.0, want = c0 + P[i];
        double bound = (K + 2) * (double)FLT_EPSILON * (S[i] + fabs(c0)) + 1e-30;
        double r = fabs((double)C[i] - want) / bound;
        if (!(r <= worst)) worst = r;  // keeps NaN
    }
    return worst;
}

// The largest |C - (C0 + P)|, for integer inputs whose products are exact in float.
static double max_exact_error(const float *C, const float *C0, const double *P, int64_t n, int acc) {
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)C[i] - ((acc ? C0[i] : 0.0) + P[i]));
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

static int canaries_intact(const float *buf, int64_t n) {
    for (int i = 0; i < GUARD; i++)
        if (buf[i] != CANARY || buf[GUARD + n + i] != CANARY) return 0;
    return 1;
}

// Every (ta, tb, accumulate, threads) on one shape, random reals or integers (exact = 1).
static void check_fill(const char *name, int M, int N, int K, int exact) {
    int64_t nc = (int64_t)M * N;
    float *A = malloc_or_die((size_t)M * K * sizeof(float), "A"), *At = malloc_or_die((size_t)M * K * sizeof(float), "At");
    float *B = malloc_or_die((size_t)K * N * sizeof(float), "B"), *Bt = malloc_or_die((size_t)K * N * sizeof(float), "Bt");
    float *C0 = malloc_or_die((size_t)nc * sizeof(float), "C0"), *C1 = malloc_or_die((size_t)nc * sizeof(float), "C1");
    float *buf = malloc_or_die((size_t)(nc + 2 * GUARD) * sizeof(float), "C"), *C = buf + GUARD;
    double *P = malloc_or_die((size_t)nc * sizeof(double), "P"), *S = malloc_or_die((size_t)nc * sizeof(double), "S");
    for (int64_t i = 0; i < (int64_t)M * K; i++) A[i] = rng_sym();
    for (int64_t i = 0; i < (int64_t)K * N; i++) B[i] = rng_sym();
    for (int64_t i = 0; i < nc; i++) C0[i] = rng_sym();
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) At[(int64_t)k * M + m] = A[(int64_t)m * K + k];
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++) Bt[(int64_t)n * K + k] = B[(int64_t)k * N + n];
    reference(P, S, A, B, M, N, K);

    double worst = 0.0;
    int same_threads = 1, canaries = 1;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int acc = 0; acc < 2; acc++)
                for (int th = 1; th <= 3; th++) {
                    for (int i = 0; i < GUARD; i++) buf[i] = buf[GUARD + nc + i] = CANARY;
                    for (int64_t i = 0; i < nc; i++) C[i] = acc ? C0[i] : NAN;
                    set_threads(th);
                    gemm(C, ta ? At : A, tb ? Bt : B, M, N, K, ta, tb, acc);
                    double r = exact ? max_exact_error(C, C0, P, nc, acc) : bound_ratio(C, C0, P, S, nc, K, acc);
                    if (!(r <= worst)) worst = r;
                    canaries &= canaries_intact(buf, nc);
                    if (th == 1) memcpy(C1, C, (size_t)nc * sizeof(float));
                    else same_threads &= memcmp(C1, C, (size_t)nc * sizeof(float)) == 0;
                }
    char what[160];
    if (exact) {
        snprintf(what, sizeof what, "%s, integers: max |C - exact|", name);
        report(what, worst, 0.0);
    } else {
        snprintf(what, sizeof what, "%s [%d,%d]x[%d,%d]: error / bound", name, M, K, K, N);
        report(what, worst, 1.0);
    }
    snprintf(what, sizeof what, "%s%s: same bits with 1, 2, 3 threads; canaries intact", name, exact ? ", integers" : "");
    report(what, same_threads && canaries ? 0.0 : 1.0, 0.0);
    free(A); free(At); free(B); free(Bt); free(C0); free(C1); free(buf); free(P); free(S);
}

static void check_shape(const char *name, int M, int N, int K) {
    g_integers = 0;
    check_fill(name, M, N, K, 0);
    g_integers = 1;
    check_fill(name, M, N, K, 1);
    g_integers = 0;
}

// The bound must catch a single wrong element: perturb one by 1e-3 of its scale.
static void self_check(void) {
    int M = 9, N = 23, K = 17;
    float A[9 * 17], B[17 * 23], C[9 * 23];
    double P[9 * 23], S[9 * 23];
    for (int i = 0; i < M * K; i++) A[i] = rng_sym();
    for (int i = 0; i < K * N; i++) B[i] = rng_sym();
    reference(P, S, A, B, M, N, K);
    gemm(C, A, B, M, N, K, 0, 0, 0);
    C[5 * N + 7] += 1e-3f * (float)S[5 * N + 7];
    double r = bound_ratio(C, NULL, P, S, (int64_t)M * N, K, 0);
    report("self-check: one element off by 1e-3 sum|a||b| is seen (ratio > 1)", 1.0 / r, 1.0);
}

int main(void) {
    int MR = GEMM_MR, NR = GEMM_NR, MC = GEMM_MC, KC = GEMM_KC, NC = GEMM_NC;
    printf("gemm kernel %s: MR x NR = %d x %d, MC %d, KC %d, NC %d\n", GEMM_ISA, MR, NR, MC, KC, NC);
    printf("  %-72s %10s %9s\n", "compared", "error", "tolerance");
    check_shape("1 x 1", 1, 1, 1);
    check_shape("K = 1", 19, 45, 1);
    check_shape("one row (matrix-vector)", 1, 77, 300);
    check_shape("two rows", 2, 130, 257);
    check_shape("one column", 67, 1, 300);
    check_shape("micro-tile exactly", MR, NR, 8);
    check_shape("micro-tile minus one", MR - 1, NR - 1, 9);
    check_shape("micro-tile plus one", MR + 1, NR + 1, 10);
    check_shape("odd sizes", 37, 53, 71);
    check_shape("K = KC - 1", 2 * MR + 3, NR + 5, KC - 1);
    check_shape("K = KC", 3 * MR, 2 * NR, KC);
    check_shape("K = 2 KC + 1", MR + 2, NR + 3, 2 * KC + 1);
    check_shape("large K", 5, 7, 6000);
    check_shape("one row panel, threads split the columns", 3, 5 * NR + 7, 700);
    check_shape("two row panels, three threads", MR + 1, 3 * NR + 1, 600);
    check_shape("M past MC, all tails", MC + MR + 3, 2 * NR + 7, KC + 9);
    check_shape("N past NC", 2 * MR + 1, NC + NR + 3, 33);
    check_shape("N = 2 NC exactly", MR, 2 * NC, 20);
    check_shape("all three blocks crossed", MC + 5, NC + 11, KC + 3);
    self_check();
    printf("%d rows, %d failed\n", g_rows, g_failed);
    return g_failed ? 1 : 0;
}

// bench_gemm.c — lib/gemm.h against OpenBLAS's sgemm on the three products of the linears of
// bench-100m and tinyllama-1.1b (dev/bench_cpu.sh builds and runs it; make bench).
//
// A linear y[N,O] = x[N,I] W[O,I]^T over N tokens runs three products:
//   forward  y  = x W^T      gemm(M=N, N=O, K=I, tb = 1)        sgemm(NoTrans, Trans)
//   dx      dx += dy W       gemm(M=N, N=I, K=O)                sgemm(NoTrans, NoTrans, beta 1)
//   dW      dW += dy^T x     gemm(M=O, N=I, K=N, ta = 1)        sgemm(Trans, NoTrans, beta 1)
// Each is timed for ours and for BLAS back to back, best of BENCH_REPEAT (3), both with the same
// number of threads (OpenMP's), so a busy machine slows both alike; the ratio is what to read.
// Without OpenBLAS (built without -DHAVE_OPENBLAS) only ours is timed.
// Usage: bench_gemm [tokens (1024)] [shapes: all | small (bench-100m only)]
#include <stdio.h>   // defines: printf
#include <stdlib.h>  // defines: atoi, getenv
#include <time.h>    // defines: clock_gettime
#include "../lib/util.h"  // defines: malloc_or_die
#include "../lib/gemm.h"  // defines: gemm, GEMM_ISA
#ifdef HAVE_OPENBLAS
#include <cblas.h>   // defines: cblas_sgemm, openblas_set_num_threads
#endif

// BENCH_CLOCK=cpu: the process's CPU time instead of the wall clock. With one thread on a
// machine that others share, that counts only the time this program ran (no waits for a core).
static clockid_t g_clock = CLOCK_MONOTONIC;
static double now(void) {
    struct timespec t;
    clock_gettime(g_clock, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

// count: how many linears of this shape one bench-100m training step runs (wq and wo are
// [768,768], wk and wv [256,768], wgate and wup [2048,768], in each of 12 layers), the weights
// of the summary line, which is so the GFLOP/s of a step's matmuls
typedef struct { const char *model, *name; int out, in, count; } Linear;

static const Linear LINEARS[] = {
    {"bench-100m", "wq", 768, 768, 24},          {"bench-100m", "wk", 256, 768, 24},
    {"bench-100m", "wgate", 2048, 768, 24},      {"bench-100m", "wdown", 768, 2048, 12},
    {"bench-100m", "lm_head", 32000, 768, 1},
    {"tinyllama-1.1b", "wq", 2048, 2048, 0},     {"tinyllama-1.1b", "wk", 256, 2048, 0},
    {"tinyllama-1.1b", "wgate", 5632, 2048, 0},  {"tinyllama-1.1b", "wdown", 2048, 5632, 0},
};
#define N_LINEARS ((int)(sizeof LINEARS / sizeof LINEARS[0]))

// One product: C[M,N] (+)= op(A) op(B), ours (blas = 0) or sgemm's.
static void product(int blas, float *C, const float *A, const float *B, int M, int N, int K, int ta, int tb, int acc) {
#ifdef HAVE_OPENBLAS
    if (blas) {
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f,
                    A, ta ? M : K, B, tb ? K : N, acc ? 1.0f : 0.0f, C, N);
        return;
    }
#endif
    gemm(C, A, B, M, N, K, ta, tb, acc);
}

static double best_seconds(int blas, int repeat, float *C, const float *A, const float *B, int M, int N, int K, int ta, int tb, int acc) {
    double best = 1e30;
    for (int r = 0; r < repeat; r++) {
        double t0 = now();
        product(blas, C, A, B, M, N, K, ta, tb, acc);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

int main(int argc, char **argv) {
    int T = argc > 1 ? atoi(argv[1]) : 1024, small = argc > 2 && !strcmp(argv[2], "small");
    int repeat = getenv("BENCH_REPEAT") ? atoi(getenv("BENCH_REPEAT")) : 3;
    if (getenv("BENCH_CLOCK") && !strcmp(getenv("BENCH_CLOCK"), "cpu")) g_clock = CLOCK_PROCESS_CPUTIME_ID;
    if (T <= 0 || repeat <= 0) die("bench_gemm: tokens and BENCH_REPEAT must be positive");
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    int have_blas = 0;
#ifdef HAVE_OPENBLAS
    openblas_set_num_threads(threads);
    have_blas = 1;
    printf("OpenBLAS: %s\n", openblas_get_config());
#else
    printf("OpenBLAS: not built in (no cblas.h): timing lib/gemm.h alone\n");
#endif
    printf("lib/gemm.h kernel %s %dx%d, %d threads, %d tokens, best of %d, %s time\n", GEMM_ISA, GEMM_MR, GEMM_NR,
           threads, T, repeat, g_clock == CLOCK_MONOTONIC ? "wall" : "CPU");
    printf("%-15s %-8s %-7s %-18s %9s %9s %7s\n", "model", "linear", "product", "[M,K]x[K,N]", "ours", "OpenBLAS", "ratio");
    size_t most = 0;
    for (int l = 0; l < N_LINEARS; l++) {
        size_t o = LINEARS[l].out, i = LINEARS[l].in, t = T;
        size_t m = o * i > t * o ? o * i : t * o;
        m = m > t * i ? m : t * i;
        most = m > most ? m : most;
    }
    float *A = malloc_or_die(most * sizeof(float), "A"), *B = malloc_or_die(most * sizeof(float), "B");
    float *C = malloc_or_die(most * sizeof(float), "C");
    for (size_t k = 0; k < most; k++) A[k] = (float)((k * 7919) % 1000) / 1000.0f - 0.5f, B[k] = (float)((k * 104729) % 997) / 997.0f - 0.5f, C[k] = 0.0f;
    double flops_small = 0, ours_small = 0, blas_small = 0;
    for (int l = 0; l < N_LINEARS; l++) {
        const Linear *L = &LINEARS[l];
        if (small && strcmp(L->model, "bench-100m")) continue;
        // {M, N, K, ta, tb, accumulate} of forward, dx, dW
        int p[3][6] = {{T, L->out, L->in, 0, 1, 0}, {T, L->in, L->out, 0, 0, 1}, {L->out, L->in, T, 1, 0, 1}};
        const char *names[3] = {"forward", "dx", "dW"};
        for (int q = 0; q < 3; q++) {
            int M = p[q][0], N = p[q][1], K = p[q][2], ta = p[q][3], tb = p[q][4], acc = p[q][5];
            double flops = 2.0 * M * N * K;
            product(0, C, A, B, M, N, K, ta, tb, acc);  // warm-up: pages, caches
            double ours = best_seconds(0, repeat, C, A, B, M, N, K, ta, tb, acc), blas = 0;
            if (have_blas) {
                product(1, C, A, B, M, N, K, ta, tb, acc);
                blas = best_seconds(1, repeat, C, A, B, M, N, K, ta, tb, acc);
            }
            char dims[40];
            snprintf(dims, sizeof dims, "[%d,%d]x[%d,%d]", M, K, K, N);
            printf("%-15s %-8s %-7s %-18s %9.1f", L->model, L->name, names[q], dims, flops / ours / 1e9);
            if (have_blas) printf(" %9.1f %7.2f\n", flops / blas / 1e9, blas / ours);
            else printf(" %9s %7s\n", "-", "-");
            fflush(stdout);
            flops_small += L->count * flops, ours_small += L->count * ours, blas_small += L->count * blas;
        }
    }
    printf("a bench-100m step's matmuls (each shape times its count): ours %.1f GFLOP/s", flops_small / ours_small / 1e9);
    if (have_blas) printf(", OpenBLAS %.1f GFLOP/s, ratio %.2f", flops_small / blas_small / 1e9, blas_small / ours_small);
    printf("\n");
    printf("{\"threads\": %d, \"tokens\": %d, \"ours_gflops\": %.2f, \"blas_gflops\": %.2f}\n", threads, T,
           flops_small / ours_small / 1e9, have_blas ? flops_small / blas_small / 1e9 : 0.0);
    free(A); free(B); free(C);
    return 0;
}

// dev/bench_gemm_cu.cu — where a train_cu step's matmul time goes (a benchmark, not a test).
// Every product of one training step of dev/bench_cuda.sh's shape (tinyllama-1.1b, --matmul bf16,
// one micro-batch of 8 x 1024 tokens, the loss's classifier in chunks of 1024 rows) is timed
// through train_cu's own cuda/matmul.cuh, with the operand and output types train.cu gives it, and
// beside it the same m x n x k product in cuBLASLt's plainest form (bf16 in, bf16 out, beta 0).
// Prints each kind of product: calls a step, microseconds a call, TFLOP/s, both forms; then the
// step's total. The operands hold one small constant (cuBLAS's work does not depend on the values,
// but the GPU's clock can: with varied values under a long load it may run lower), so the rates
// are upper bounds and the two forms' difference is what the comparison shows: the cost of fp32
// outputs and of accumulating into them.
//   make build/bench_gemm_cu && ./build/bench_gemm_cu        (dev/bench_cuda.sh runs it too)
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <float.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../cuda/common.cuh"
#include "../cuda/matmul.cuh"

// One kind of product: C[m,n] = op(A) op(B) as cuBLAS counts, the types train.cu uses, and how
// many of them one step runs.
typedef struct {
    const char *name;
    cublasOperation_t ta, tb;
    int m, n, k, out_bf16;  // out_bf16: written in bf16 (else fp32)
    float beta;             // 1: accumulated into fp32 (or the residual add's C)
    int per_step;
} Product;

static float time_us(const Product *p, const __nv_bfloat16 *A, const __nv_bfloat16 *B, void *C, int plain) {
    int lda = p->ta == CUBLAS_OP_N ? p->m : p->k, ldb = p->tb == CUBLAS_OP_N ? p->k : p->n;
    int bf = plain || p->out_bf16;
    float beta = plain ? 0.0f : p->beta;
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0));
    cudaCheck(cudaEventCreate(&e1));
    int reps = 20;
    for (int r = -3; r < reps; r++) {  // three warm-up calls
        if (r == 0) cudaCheck(cudaEventRecord(e0));
        lt_matmul(p->ta, p->tb, p->m, p->n, p->k, 1.0f, A, lda, 0, B, ldb, 0, CUDA_R_16BF, beta, C, C, p->m, 0,
                  bf ? CUDA_R_16BF : CUDA_R_32F, 1, CUBLAS_COMPUTE_32F);
    }
    cudaCheck(cudaEventRecord(e1));
    cudaCheck(cudaEventSynchronize(e1));
    float ms = 0;
    cudaCheck(cudaEventElapsedTime(&ms, e0, e1));
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 1000.0f * ms / reps;
}

int main(void) {
    lt_init();
    const int N = 8 * 1024, D = 2048, Hq = 2048, Hkv = 256, F = 5632, V = 32000, R = 1024, L = 22;
    const cublasOperation_t T_ = CUBLAS_OP_T, N_ = CUBLAS_OP_N;
    // forward y^T[O,N] = W[O,I] x^T[I,N]: (T, N, O, N, I); the teacher runs each too (x2)
    // backward dx^T[I,N] = W^T dout^T: (N, N, I, N, O); dW^T[I,O] = x^T[I,N] dout[N,O]: (N, T, I, O, N)
    Product ps[] = {
        {"fwd q (fp32 out)", T_, N_, Hq, N, D, 0, 0, 2 * L},
        {"fwd k (fp32 out)", T_, N_, Hkv, N, D, 0, 0, 2 * L},
        {"fwd v (bf16 out)", T_, N_, Hkv, N, D, 1, 0, 2 * L},
        {"fwd o + residual (fp32)", T_, N_, D, N, Hq, 0, 1, 2 * L},
        {"fwd gate, up (bf16 out)", T_, N_, F, N, D, 1, 0, 4 * L},
        {"fwd down + residual (fp32)", T_, N_, D, N, F, 0, 1, 2 * L},
        {"fwd classifier chunk (fp32)", T_, N_, V, R, D, 0, 0, 2 * N / R},
        {"dx down (bf16 out)", N_, N_, F, N, D, 1, 0, L},
        {"dx gate (fp32, beta 0)", N_, N_, D, N, F, 0, 0, L},
        {"dx up (fp32, beta 1)", N_, N_, D, N, F, 0, 1, L},
        {"dx o (bf16 out)", N_, N_, Hq, N, D, 1, 0, L},
        {"dx q, k, v stacked (fp32)", N_, N_, D, N, Hq + 2 * Hkv, 0, 0, L},
        {"dx classifier chunk (fp32)", N_, N_, D, R, V, 0, 0, N / R},
        {"dW down (fp32)", N_, T_, F, D, N, 0, 0, L},
        {"dW gate, up (fp32)", N_, T_, D, F, N, 0, 0, 2 * L},
        {"dW o (fp32)", N_, T_, Hq, D, N, 0, 0, L},
        {"dW q (fp32)", N_, T_, D, Hq, N, 0, 0, L},
        {"dW k, v (fp32)", N_, T_, D, Hkv, N, 0, 0, 2 * L},
        {"dW classifier chunk (fp32)", N_, T_, D, V, R, 0, 1, N / R},
    };
    int n = (int)(sizeof ps / sizeof ps[0]);
    size_t most = 0;
    for (int i = 0; i < n; i++) {
        size_t a = (size_t)ps[i].m * ps[i].k, b = (size_t)ps[i].k * ps[i].n, c = (size_t)ps[i].m * ps[i].n;
        most = a > most ? a : most; most = b > most ? b : most; most = c > most ? c : most;
    }
    __nv_bfloat16 *A, *B;
    void *C;
    cudaCheck(cudaMalloc(&A, most * 2));
    cudaCheck(cudaMalloc(&B, most * 2));
    cudaCheck(cudaMalloc(&C, most * 4));
    cudaCheck(cudaMemset(A, 0x3c, most * 2));  // small finite bf16 values
    cudaCheck(cudaMemset(B, 0x3c, most * 2));
    cudaCheck(cudaMemset(C, 0, most * 4));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, 0));
    printf("%s: the products of one bench_cuda.sh step, as train_cu runs them | the same m x n x k bf16 out, beta 0\n",
           prop.name);
    printf("%-30s %6s %6s %6s %5s | %9s %7s %8s | %9s %7s\n", "product", "m", "n", "k", "/step", "us/call", "TFLOP/s",
           "ms/step", "us plain", "TFLOP/s");
    double total = 0, total_plain = 0, flops = 0;
    for (int i = 0; i < n; i++) {
        const Product *p = &ps[i];
        double f = 2.0 * p->m * p->n * p->k;
        float us = time_us(p, A, B, C, 0), up = time_us(p, A, B, C, 1);
        total += us * p->per_step / 1000.0;
        total_plain += up * p->per_step / 1000.0;
        flops += f * p->per_step;
        printf("%-30s %6d %6d %6d %5d | %9.1f %7.0f %8.2f | %9.1f %7.0f\n", p->name, p->m, p->n, p->k, p->per_step, us,
               f / us / 1e6, us * p->per_step / 1000.0, up, f / up / 1e6);
    }
    printf("step: %.1f TFLOP of products in %.1f ms as train_cu runs them (%.0f TFLOP/s), %.1f ms plain (%.0f TFLOP/s)\n",
           flops / 1e12, total, flops / total / 1e9, total_plain, flops / total_plain / 1e9);
    return 0;
}

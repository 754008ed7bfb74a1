/*
 * cuda/embedding.cuh: the token embedding, x[N,D] = E[tok[n], :], and its backward into dE.
 * Needs: common.cuh (blocks_for, to_float, launchCheck, PROFILE).
 */

// --- embedding: x[N,D] = E[tok[n], :] -----------------------------------------------------
// Thread mapping: one thread per element of x. E is fp32, or bf16 for a bf16-only teacher.
template <typename Et>
__global__ static void embedding_forward_kernel(float *x, const int *tok, const Et *E, int N, int D) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (int64_t)N * D) x[i] = to_float(E[(int64_t)tok[i / D] * D + i % D]);
}
template <typename Et>
static void embedding_forward(float *x, const int *tok, const Et *E, int N, int D) {
    PROFILE(PROF_OTHER);
    embedding_forward_kernel<<<blocks_for((int64_t)N * D, 256), 256>>>(x, tok, E, N, D);
    launchCheck();
}

// dE[tok[n], :] += dx[n, :], in train.c's order: each row of dE takes its positions' rows of dx one
// after another, n ascending, so the sums are train.c's (serial) bit for bit and the same every run
// (with atomicAdd, rows that share a token would meet in any order, and the gradients, and a 2-bit
// student's codes after them, would differ between two runs). by_token (model_group_tokens): the
// positions grouped by token, n ascending in a group, then where each group starts.
// Thread mapping: blockIdx.x a token of the batch, the block's threads over the D columns.
__global__ static void embedding_backward_kernel(float *dE, const float *dx, const int *tok, const int *by_token, int N, int D) {
    const int *pos = by_token, *start = by_token + N;
    int s0 = start[blockIdx.x], s1 = start[blockIdx.x + 1];
    float *row = dE + (int64_t)tok[pos[s0]] * D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = row[d];
        for (int j = s0; j < s1; j++) acc += dx[(int64_t)pos[j] * D + d];
        row[d] = acc;
    }
}
static void embedding_backward(float *dE, const float *dx, const int *tok, const int *by_token, int n_tokens, int N, int D) {
    PROFILE(PROF_OTHER);
    embedding_backward_kernel<<<n_tokens, 256>>>(dE, dx, tok, by_token, N, D);
    launchCheck();
}

/*
 * cuda/matmul.cuh: every product of the program goes through cuBLASLt (lt_matmul, with a table of
 * plans); the linear layers' matmul_forward / matmul_backward on top of it, in fp32, TF32 or bf16
 * (--matmul), with the bf16 scratch that casts an fp32 operand just before its product.
 * Needs: common.cuh (cublasCheck, gpu_malloc, cast_bf16, Act, PROFILE).
 */

// The precision of the products: --matmul bf16 (the default) multiplies bf16 copies on tensor
// cores; g_compute is the compute type of the fp32 products (TF32 tensor cores, or plain fp32).
static cublasComputeType_t g_compute = CUBLAS_COMPUTE_32F_FAST_TF32;
static int g_bf16 = 1;            // --matmul bf16, the default (then g_compute is TF32, for the gemm attention products)

// --- cuBLASLt: every product of the program -----------------------------------------------
// One call, lt_matmul:  D = alpha op(A) op(B) + beta C,  column-major as cuBLAS counts (m x n, inner
// size k; see the matmul section below), or `batch` such products at strides (--attention gemm).
// A and B are both fp32 or both bf16; C and D share a type, fp32 or bf16 (bf16 only written, beta
// 0). C is D itself but for the student's residual adds, where C is the residual stream and D its
// next copy, so the add is the matmul's epilogue and no pass of its own. Accumulation is fp32, on
// tensor cores for bf16 and under --matmul tf32.
// cuBLASLt's heuristic picks the kernel for a shape (sizes, leading dimensions, types, and the
// pointers' alignments, which some kernels need). A shape's first call asks it, and keeps the
// answer with its descriptors in a table of plans, so that a step's later calls ask nothing. The
// kernels may use a workspace of LT_WORKSPACE bytes (split-K's partial sums), allocated once.
typedef struct {
    cublasOperation_t ta, tb;
    int m, n, k, lda, ldb, ldc, batch;
    int64_t sa, sb, sc;     // strides between the products of a batch
    cudaDataType_t ab, cd;  // the type of A and B; of C and D
    cublasComputeType_t compute;
    int align[4];  // A's, B's, C's and D's pointer alignment in bytes, at most 256
} LtShape;
typedef struct {
    LtShape s;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, c;  // c: C's and D's
    cublasLtMatmulAlgo_t algo;
} LtPlan;
#define LT_PLANS 128  // when full, the oldest plan gives way
#define LT_WORKSPACE ((size_t)32 << 20)
static cublasLtHandle_t g_lt;
static void *g_lt_workspace;
static LtPlan g_lt_plans[LT_PLANS];
static int g_lt_n, g_lt_next;

static int ptr_align(const void *p) {
    int a = 256;
    while (a > 1 && (uintptr_t)p % a) a /= 2;
    return a;
}
static cublasLtMatrixLayout_t lt_layout(cudaDataType_t type, int rows, int cols, int ld, int batch, int64_t stride) {
    cublasLtMatrixLayout_t l;
    cublasCheck(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld));
    if (batch > 1) {
        cublasCheck(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
        cublasCheck(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    }
    return l;
}
static void lt_plan_free(LtPlan *p) {
    cublasLtMatrixLayoutDestroy(p->a);
    cublasLtMatrixLayoutDestroy(p->b);
    cublasLtMatrixLayoutDestroy(p->c);
    cublasLtMatmulDescDestroy(p->op);
}
static const LtPlan *lt_plan(const LtShape *s) {
    for (int i = 0; i < g_lt_n; i++)
        if (!memcmp(&g_lt_plans[i].s, s, sizeof *s)) return &g_lt_plans[i];
    LtPlan *p;
    if (g_lt_n < LT_PLANS) {
        p = &g_lt_plans[g_lt_n++];
    } else {
        p = &g_lt_plans[g_lt_next];
        g_lt_next = (g_lt_next + 1) % LT_PLANS;
        lt_plan_free(p);
    }
    p->s = *s;
    cublasCheck(cublasLtMatmulDescCreate(&p->op, s->compute, CUDA_R_32F));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &s->ta, sizeof s->ta));
    cublasCheck(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &s->tb, sizeof s->tb));
    int na = s->ta == CUBLAS_OP_N, nb = s->tb == CUBLAS_OP_N;
    p->a = lt_layout(s->ab, na ? s->m : s->k, na ? s->k : s->m, s->lda, s->batch, s->sa);
    p->b = lt_layout(s->ab, nb ? s->k : s->n, nb ? s->n : s->k, s->ldb, s->batch, s->sb);
    p->c = lt_layout(s->cd, s->m, s->n, s->ldc, s->batch, s->sc);
    cublasLtMatmulPreference_t pref;
    cublasCheck(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = LT_WORKSPACE;
    cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++) {
        uint32_t v = (uint32_t)s->align[i];
        cublasCheck(cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &v, sizeof v));
    }
    cublasLtMatmulHeuristicResult_t r;
    int found = 0;
    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(g_lt, p->op, p->a, p->b, p->c, p->c, pref, 1, &r, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || found == 0)
        fail("cuBLASLt has no kernel for a %d x %d x %d matmul (%s operands, batch %d, alignments %d %d %d %d): %s", s->m,
             s->n, s->k, s->ab == CUDA_R_16BF ? "bf16" : "fp32", s->batch, s->align[0], s->align[1], s->align[2],
             s->align[3], cublasLtGetStatusString(st));
    p->algo = r.algo;
    return p;
}
static void lt_matmul(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const void *A, int lda,
                      int64_t sa, const void *B, int ldb, int64_t sb, cudaDataType_t ab, float beta, const void *C, void *D,
                      int ldc, int64_t sc, cudaDataType_t cd, int batch, cublasComputeType_t compute) {
    if (m == 0 || n == 0) return;  // D empty
    LtShape s;
    memset(&s, 0, sizeof s);  // its padding too: shapes are compared whole
    s.ta = ta, s.tb = tb, s.m = m, s.n = n, s.k = k, s.lda = lda, s.ldb = ldb, s.ldc = ldc, s.batch = batch;
    s.sa = sa, s.sb = sb, s.sc = sc, s.ab = ab, s.cd = cd, s.compute = compute;
    s.align[0] = ptr_align(A), s.align[1] = ptr_align(B), s.align[2] = ptr_align(C), s.align[3] = ptr_align(D);
    const LtPlan *p = lt_plan(&s);
    cublasCheck(cublasLtMatmul(g_lt, p->op, &alpha, A, p->a, B, p->b, &beta, C, p->c, D, p->c, &p->algo, g_lt_workspace,
                               LT_WORKSPACE, 0));
}
static void lt_init(void) {
    cublasCheck(cublasLtCreate(&g_lt));
    g_lt_workspace = gpu_malloc(LT_WORKSPACE, "cuBLASLt workspace");
}
static void lt_free(void) {
    for (int i = 0; i < g_lt_n; i++) lt_plan_free(&g_lt_plans[i]);
    g_lt_n = g_lt_next = 0;
    gpu_free(g_lt_workspace);
    cublasLtDestroy(g_lt);
}

// --- matmul: out[N,O] = x[N,I] W[O,I]^T ----------------------------------------------------
// cuBLAS(Lt) is column-major: a row-major [R,C] matrix is its column-major transpose [C,R], so
//   out^T[O,N] = W[O,I] x^T[I,N],   dx^T[I,N] += W^T[I,O] dout^T[O,N],   dW^T[I,O] += x^T[I,N] dout[N,O].
// Under --matmul bf16 both operands are bf16 (the weight's copy; the other as its producer wrote
// it, an Act, or cast just before the call) and the products accumulate in fp32 into the output:
// fp32, C = A B + beta C, or, for the activations kept in bf16 alone (act_bf16), bf16 written once.
// c_in (the residual adds alone): C = A B + beta c_in instead, out of place.
static void gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc, const float *c_in = NULL) {
    lt_matmul(ta, tb, m, n, k, 1.0f, A, lda, 0, B, ldb, 0, CUDA_R_32F, beta, c_in ? c_in : C, C, ldc, 0, CUDA_R_32F, 1,
              g_compute);
}
// C: an Act, fp32 (C = A B + beta C, or beta c_in), or bf16 (C = A B rounded once, beta 0).
static void gemm_bf16(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const __nv_bfloat16 *A, int lda,
                      const __nv_bfloat16 *B, int ldb, float beta, Act C, int ldc, const float *c_in = NULL) {
    if (C.h && beta != 0.0f) fail("internal: a bf16 matmul output is written, not accumulated");
    void *c = C.h ? (void *)C.h : (void *)C.f;
    lt_matmul(ta, tb, m, n, k, 1.0f, A, lda, 0, B, ldb, 0, CUDA_R_16BF, beta, c_in ? (const void *)c_in : c, c, ldc, 0,
              C.h ? CUDA_R_16BF : CUDA_R_32F, 1, CUBLAS_COMPUTE_32F);
}

// The bf16 casts of a matmul's input (x) and of its output gradient (d), reused by every matmul.
static __nv_bfloat16 *g_bf_x, *g_bf_d;
static int64_t g_bf_x_n, g_bf_d_n;
static __nv_bfloat16 *bf16_scratch(__nv_bfloat16 **buf, int64_t *cap, int64_t n) {
    if (n > *cap) {
        gpu_free(*buf);
        *buf = (__nv_bfloat16 *)gpu_malloc((size_t)n * sizeof(__nv_bfloat16), "bf16 activation casts");
        *cap = n;
    }
    return *buf;
}
static void bf16_scratch_reserve(int64_t nx, int64_t nd) {
    bf16_scratch(&g_bf_x, &g_bf_x_n, nx);
    bf16_scratch(&g_bf_d, &g_bf_d_n, nd);
}
static const __nv_bfloat16 *bf16_of(__nv_bfloat16 **buf, int64_t *cap, const float *x, int64_t n) {
    __nv_bfloat16 *y = bf16_scratch(buf, cap, n);
    cast_bf16(y, x, n);
    return y;
}

// A matmul's weight [O,I]: fp32 (f), and its bf16 copy (h) under --matmul bf16 (train.cu's weight()
// picks a tensor's, or one layer's slice of it).
typedef struct { const float *f; const __nv_bfloat16 *h; } Weight;

// x: an Act; under bf16 cast here (into g_bf_x) only when it exists in fp32 alone.
static const __nv_bfloat16 *bf16_in(Act x, int64_t n) { return x.h ? x.h : bf16_of(&g_bf_x, &g_bf_x_n, x.f, n); }

// out: an Act, written in bf16 when it is bf16 alone (gate, up).
static void matmul_forward(Act out, Act x, Weight w, int N, int I, int O) {
    PROFILE(PROF_MATMUL);
    if (g_bf16) gemm_bf16(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w.h, I, bf16_in(x, (int64_t)N * I), I, 0.0f, out, O);
    else gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w.f, I, x.f, I, 0.0f, out.f, O);
}
// The residual add: y = r + a W^T in the matmul's epilogue (fp32; C = r, D = y, and y may be r).
static void matmul_forward_add(float *y, const float *r, Act a, Weight w, int N, int I, int O) {
    PROFILE(PROF_MATMUL);
    if (g_bf16) gemm_bf16(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w.h, I, bf16_in(a, (int64_t)N * I), I, 1.0f, act_f(y), O, r);
    else gemm(CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, w.f, I, a.f, I, 1.0f, y, O, r);
}
static void matmul_forward(float *out, Act x, Weight w, int N, int I, int O) { matmul_forward(act_f(out), x, w, N, I, O); }
static void matmul_forward(float *out, const float *x, Weight w, int N, int I, int O) { matmul_forward(act_f(out), act_f(x), w, N, I, O); }
// dout: an Act too (dgate, dup are written in bf16 by swiglu_backward; the residual gradient comes
// with the bf16 copy its rmsnorm backward wrote), cast into g_bf_d when it is fp32 alone.
// dx: accumulated into when fp32 (the layers' += rule); when bf16 alone (dhmid, and dO under flash)
// written instead, the rule's exception: its one reader takes it as the gradient itself.
// dx_beta, dw_beta: 1 adds to dx and dw (the rule), 0 writes them, for the first writer of a buffer
// that is not cleared first (the model backward's dx buffers; a step's first gradient of a
// weight, grad_beta): a pass of memset and the GEMM's read of zeros spared.
static void matmul_backward(Act dx, float *dw, Act dout, Act x, Weight w, int N, int I, int O, float dx_beta = 1.0f,
                            float dw_beta = 1.0f) {
    PROFILE(PROF_MATMUL);
    if (g_bf16) {
        const __nv_bfloat16 *db = dout.h ? dout.h : bf16_of(&g_bf_d, &g_bf_d_n, dout.f, (int64_t)N * O);
        if (dx.f || dx.h) gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w.h, I, db, O, dx.h ? 0.0f : dx_beta, dx, I);
        if (dw) gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, bf16_in(x, (int64_t)N * I), I, db, O, dw_beta, act_f(dw), I);
        return;
    }
    if (dx.f) gemm(CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, w.f, I, dout.f, O, dx_beta, dx.f, I);
    if (dw) gemm(CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, x.f, I, dout.f, O, dw_beta, dw, I);
}

// The backward of n linears that read the same x [N,I] (a layer's q, k and v), their output
// gradients side by side in the rows of one bf16 dout [N,C] (C the sum of their widths O[i]):
//   dx = dout W, W the n weights stacked [C,I] in one bf16 buffer: one product of inner size C
//     instead of n narrower ones each adding to dx (written with dx_beta 0, else added);
//   dW_i += dout_i^T x (or written, dw_beta[i] 0), dout_i linear i's columns of dout (rows C apart).
// --matmul bf16 alone.
static void matmul_backward_stacked(float *dx, float *const dw[], const float dw_beta[], const __nv_bfloat16 *dout, Act x,
                                    const __nv_bfloat16 *w, const int O[], int n, int N, int I, float dx_beta) {
    PROFILE(PROF_MATMUL);
    int C = 0;
    for (int i = 0; i < n; i++) C += O[i];
    gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_N, I, N, C, w, I, dout, C, dx_beta, act_f(dx), I);
    const __nv_bfloat16 *xb = bf16_in(x, (int64_t)N * I);
    for (int i = 0, off = 0; i < n; off += O[i++])
        gemm_bf16(CUBLAS_OP_N, CUBLAS_OP_T, I, O[i], N, xb, I, dout + off, C, dw_beta[i], act_f(dw[i]), I);
}

/*
 * cuda/common.cuh: what train.cu and every other file of cuda/ use. Error checks (fail,
 * cudaCheck, cublasCheck, launchCheck: file, line and the library's message), timers, the
 * TRAIN_CU_PROFILE scopes, the memory plan (every device allocation named and counted, printed at
 * start-up), launch sizes, warp and block reductions, fp32/bf16 loads and stores, the fp32 -> bf16
 * cast, and Act, an activation held in fp32 or in bf16.
 * Needs: train.cu's system includes (CUDA runtime, cuda_bf16.h, cublasLt.h, the C library).
 */
// ============================================================================================
// Errors: every CUDA and cuBLASLt call is checked, naming file, line and the library's message.

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void cuda_check(cudaError_t e, const char *file, int line) {
    if (e != cudaSuccess) fail("CUDA at %s:%d: %s (%s)", file, line, cudaGetErrorString(e), cudaGetErrorName(e));
}
static void cublas_check(cublasStatus_t s, const char *file, int line) {
    if (s != CUBLAS_STATUS_SUCCESS) fail("cuBLASLt at %s:%d: %s", file, line, cublasLtGetStatusString(s));
}
#define cudaCheck(x) cuda_check((x), __FILE__, __LINE__)
#define cublasCheck(x) cublas_check((x), __FILE__, __LINE__)
#define launchCheck() cuda_check(cudaGetLastError(), __FILE__, __LINE__)

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void format_eta(char *buf, size_t n, double seconds) {
    int s = (int)(seconds + 0.5);
    snprintf(buf, n, "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
}

// TRAIN_CU_PROFILE=1: seconds per kind of work, measured by synchronizing around each launcher
// (slower; for finding where a step's time goes), printed after training.
enum { PROF_MATMUL, PROF_ATTENTION, PROF_QUANT, PROF_LOSS, PROF_OPTIMIZER, PROF_OTHER, N_PROF };
static const char *const PROF_NAMES[N_PROF] = {"matmul", "attention", "quantize", "loss", "optimizer", "norms+elementwise"};
static int g_prof_on;
static double g_prof[N_PROF];
struct ProfScope {
    int cat;
    double t0;
    ProfScope(int c) : cat(c), t0(0) { if (g_prof_on) { cudaDeviceSynchronize(); t0 = now_seconds(); } }
    ~ProfScope() { if (g_prof_on) { cudaDeviceSynchronize(); g_prof[cat] += now_seconds() - t0; } }
};
#define PROFILE(cat) ProfScope prof_scope_(cat)

// The memory plan: every device allocation is named and counted, and printed at start-up.
enum { MEM_PARTS = 16 };
static struct { const char *what; size_t bytes; } g_mem[MEM_PARTS];
static size_t g_mem_total, g_mem_peak;  // bytes train_cu allocated; the most the GPU had in use

static void note_peak(void) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) == cudaSuccess && total_b - free_b > g_mem_peak) g_mem_peak = total_b - free_b;
}

static int g_layered_wq_flag;  // --layered-wq (train.cu section 5), which the out-of-memory error suggests when not given

static void *gpu_malloc(size_t n, const char *what) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n ? n : 1);
    if (e == cudaErrorMemoryAllocation) {
        size_t free_b = 0, total_b = 0;
        cudaGetLastError();
        cudaMemGetInfo(&free_b, &total_b);
        fail("out of GPU memory: %s needs %.3f GiB more, %.3f GiB of the GPU's %.3f GiB are free (train_cu has "
             "allocated %.3f GiB so far); lower --micro-batch or --seq%s", what, n / 1073741824.0, free_b / 1073741824.0,
             total_b / 1073741824.0, g_mem_total / 1073741824.0, g_layered_wq_flag ? "" : " (or add --layered-wq)");
    }
    cudaCheck(e);
    int i = 0;
    while (i < MEM_PARTS - 1 && g_mem[i].what && strcmp(g_mem[i].what, what) != 0) i++;
    g_mem[i].what = g_mem[i].what ? g_mem[i].what : what;
    g_mem[i].bytes += n;
    g_mem_total += n;
    note_peak();
    return p;
}

static void gpu_free(void *p) { if (p) cudaCheck(cudaFree(p)); }

// *p: at least n floats (contents not kept), reallocated only when it holds fewer (*cap).
static float *gpu_grow(float **p, int64_t *cap, int64_t n, const char *what) {
    if (n > *cap) {
        gpu_free(*p);
        *p = (float *)gpu_malloc((size_t)n * sizeof(float), what);
        *cap = n;
    }
    return *p;
}

static void print_memory_plan(void) {
    printf("GPU memory plan:");
    for (int i = 0; i < MEM_PARTS && g_mem[i].what; i++) printf(" %s %.1f MiB |", g_mem[i].what, g_mem[i].bytes / 1048576.0);
    size_t free_b = 0, total_b = 0;
    cudaCheck(cudaMemGetInfo(&free_b, &total_b));
    printf(" total %.1f MiB of %.1f MiB\n", g_mem_total / 1048576.0, total_b / 1048576.0);
}
static int blocks_for(int64_t n, int threads) { return (int)((n + threads - 1) / threads); }

// The GPU's multiprocessor count and L2 size in bytes, asked once (a process drives one GPU).
static void gpu_limits(int *sms, int *l2) {
    static int n, bytes;
    if (!n) {
        int dev;
        cudaCheck(cudaGetDevice(&dev));
        cudaCheck(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
        cudaCheck(cudaDeviceGetAttribute(&bytes, cudaDevAttrL2CacheSize, dev));
    }
    *sms = n;
    *l2 = bytes;
}

// Warp and block reductions. Thread mapping of the block ones: every thread of the block passes
// its partial value, every thread gets the total; at most 1024 threads.
__device__ static inline float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ static inline double warp_sum_d(double x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ static inline float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ static double block_sum_d(double x) {
    __shared__ double part[32];
    __syncthreads();  // part may still be read by a previous call
    x = warp_sum_d(x);
    int w = threadIdx.x / 32, lane = threadIdx.x % 32, nw = (blockDim.x + 31) / 32;
    if (lane == 0) part[w] = x;
    __syncthreads();
    x = lane < nw ? part[lane] : 0.0;
    return warp_sum_d(x);
}
__device__ static float block_max(float x) {
    __shared__ float part[32];
    __syncthreads();
    x = warp_max(x);
    int w = threadIdx.x / 32, lane = threadIdx.x % 32, nw = (blockDim.x + 31) / 32;
    if (lane == 0) part[w] = x;
    __syncthreads();
    x = lane < nw ? part[lane] : -INFINITY;
    return warp_max(x);
}
__device__ static float block_sum(float x) {
    __shared__ float part[32];
    __syncthreads();
    x = warp_sum(x);
    int w = threadIdx.x / 32, lane = threadIdx.x % 32, nw = (blockDim.x + 31) / 32;
    if (lane == 0) part[w] = x;
    __syncthreads();
    x = lane < nw ? part[lane] : 0.0f;
    return warp_sum(x);
}

__device__ static inline float to_float(float x) { return x; }
__device__ static inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// A value stored as the matmuls read it: fp32, or bf16 rounded to nearest even (--matmul bf16),
// the same bits as cast_bf16 of the fp32 value. W^ (train.cu section 5) and the activations.
__device__ static inline void store_w(float *p, float x) { *p = x; }
__device__ static inline void store_w(__nv_bfloat16 *p, float x) { *p = __float2bfloat16_rn(x); }
// 4 consecutive values at once: 16 bytes fp32, 8 bytes bf16 (p aligned so).
__device__ static inline void store_w4(float *p, float4 v) { *(float4 *)p = v; }
__device__ static inline void store_w4(__nv_bfloat16 *p, float4 v) {  // element 0 at the lowest address
    uint2 u;
    u.x = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.x)) | (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.y)) << 16;
    u.y = (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.z)) | (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(v.w)) << 16;
    *(uint2 *)p = u;
}
// W consecutive floats: loaded as a float4 and stored by store_w4 when W = 4 (p aligned so),
// else one at a time.
template <int W>
__device__ static inline void load_floats(float *f, const float *p) {
    if constexpr (W == 4) {
        float4 v = *(const float4 *)p;
        f[0] = v.x; f[1] = v.y; f[2] = v.z; f[3] = v.w;
    } else {
        for (int e = 0; e < W; e++) f[e] = p[e];
    }
}
// W consecutive bf16 as floats: 8 bytes at once when W = 4 (p aligned so).
template <int W>
__device__ static inline void load_floats(float *f, const __nv_bfloat16 *p) {
    if constexpr (W == 4) {
        uint2 u = *(const uint2 *)p;
        const __nv_bfloat16 *e = (const __nv_bfloat16 *)&u;
        for (int i = 0; i < 4; i++) f[i] = __bfloat162float(e[i]);
    } else {
        for (int i = 0; i < W; i++) f[i] = __bfloat162float(p[i]);
    }
}
template <int W, typename Yt>
__device__ static inline void store_floats(Yt *p, const float *f) {
    if constexpr (W == 4) store_w4(p, make_float4(f[0], f[1], f[2], f[3]));
    else for (int e = 0; e < W; e++) store_w(&p[e], f[e]);
}

// --- bf16: y[n] = bf16(x[n]), rounded to nearest even (--matmul bf16) ----------------------
// Thread mapping: one thread per 4 elements (a float4 in, 8 bytes out) when n % 4 == 0 and x, y
// are 16 and 8 bytes aligned (every activation slot and scratch is), else one per element.
__global__ static void cast_bf16_kernel(__nv_bfloat16 *y, const float *x, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}
// The same, 4 elements a thread: one float4 read, 8 bytes written.
__global__ static void cast_bf16_x4_kernel(__nv_bfloat16 *y, const float *x, int64_t n4) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n4) store_w4(y + 4 * i, ((const float4 *)x)[i]);
}
static void cast_bf16(__nv_bfloat16 *y, const float *x, int64_t n) {
    if (n <= 0) return;
    if (n % 4 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)y % 8 == 0) cast_bf16_x4_kernel<<<blocks_for(n / 4, 256), 256>>>(y, x, n / 4);
    else cast_bf16_kernel<<<blocks_for(n, 256), 256>>>(y, x, n);
    launchCheck();
}

// y[r, c] = bf16(x[r, c]), c < cols, r < rows; x's rows ldx apart, y's ldy: a matrix cast into
// some columns of a wider one. Thread mapping: one thread per element.
__global__ static void cast_bf16_rows_kernel(__nv_bfloat16 *y, int64_t ldy, const float *x, int64_t ldx, int64_t rows, int cols) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * cols) return;
    int64_t r = i / cols;
    int c = (int)(i - r * cols);
    y[r * ldy + c] = __float2bfloat16_rn(x[r * ldx + c]);
}
static void cast_bf16_rows(__nv_bfloat16 *y, int64_t ldy, const float *x, int64_t ldx, int64_t rows, int cols) {
    if (rows * cols <= 0) return;
    cast_bf16_rows_kernel<<<blocks_for(rows * cols, 256), 256>>>(y, ldy, x, ldx, rows, cols);
    launchCheck();
}

// 8 bf16 as one 16-byte word (p 16 bytes aligned), to and from floats.
__device__ static inline void bf16x8_load(float *f, const __nv_bfloat16 *p) {
    uint4 v = *(const uint4 *)p;
    const __nv_bfloat16 *e = (const __nv_bfloat16 *)&v;
#pragma unroll
    for (int i = 0; i < 8; i++) f[i] = __bfloat162float(e[i]);
}
__device__ static inline void bf16x8_store(__nv_bfloat16 *p, const float *f) {
    uint4 v;
    __nv_bfloat16 *e = (__nv_bfloat16 *)&v;
#pragma unroll
    for (int i = 0; i < 8; i++) e[i] = __float2bfloat16_rn(f[i]);
    *(uint4 *)p = v;
}

// n % 8 == 0 and a, b, c, d 16-byte aligned: bf16 rows of n elements whose every 8 are one 16-byte
// word (flash_stage's vec, with n = hd; SwiGLU's 8-wide kernels).
static int aligned_x8(int64_t n, const void *a, const void *b, const void *c, const void *d) {
    return n % 8 == 0 && ((uintptr_t)a | (uintptr_t)b | (uintptr_t)c | (uintptr_t)d) % 16 == 0;
}

// An activation [N,C] that a matmul reads or writes: fp32 (f), or, under --matmul bf16, bf16
// alone (h; f NULL), or both (the residual gradient, with the bf16 copy its rmsnorm backward
// writes). Which activations are kept in bf16 alone is train.cu's act_bf16.
typedef struct { float *f; __nv_bfloat16 *h; } Act;
static Act act_f(const float *x) { Act a = {(float *)x, NULL}; return a; }

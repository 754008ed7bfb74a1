/*
 * cuda/data_parallel.cuh: this process's place in a data-parallel job (g_dp, from the launcher's
 * variables: lib/dp.h), and, built with NCCL (USE_NCCL), the rendezvous, the communicator and the
 * collectives ZeRO-1 uses (cuda/zero1.cu). Without NCCL a world of one runs, a larger one
 * is refused.
 * Needs: lib/dp.h (DpEnv, dp_env_read, dp_rendezvous, dp_padded_floats), common.cuh (fail), <nccl.h>
 * under USE_NCCL.
 */

static DpEnv g_dp = {0, 0, 1, 0, "none", "", 0};  // this process's place in a data-parallel job (on: through NCCL)
#ifdef USE_NCCL
static ncclComm_t g_nccl;
static void nccl_check(ncclResult_t r, const char *file, int line) {
    if (r != ncclSuccess) fail("NCCL at %s:%d: %s (%s)", file, line, ncclGetErrorString(r), ncclGetLastError(NULL));
}
#define ncclCheck(x) nccl_check((x), __FILE__, __LINE__)
#define DP_COLLECTIVE(call) ncclCheck(call)
#else
#define DP_COLLECTIVE(call) fail("train_cu was built without NCCL")
#endif

#ifdef USE_NCCL
// The longest wait for all ranks at the rendezvous: TRAIN_CU_RENDEZVOUS_TIMEOUT seconds [300].
static double dp_timeout(void) {
    const char *s = getenv("TRAIN_CU_RENDEZVOUS_TIMEOUT");
    double t = s ? atof(s) : 300.0;
    return t > 0 ? t : 300.0;
}
#endif

static int64_t dp_padded(int64_t n) { return g_dp.on ? dp_padded_floats(n, g_dp.world) : n; }

// The launcher's variables, read before the GPU is chosen. Without NCCL a world of one runs the
// plain way, a larger one is refused. Ranks other than 0 print nothing (errors still reach stderr)
// unless TRAIN_CU_PRINT_ALL_RANKS=1 (for tests that compare the ranks' result lines).
static void dp_setup(void) {
    int n_gpus = 0;
    if (cudaGetDeviceCount(&n_gpus) != cudaSuccess) { n_gpus = 0; cudaGetLastError(); }
    char err[512];
    if (!dp_env_read(&g_dp, n_gpus, err, sizeof err)) fail("%s", err);
#ifndef USE_NCCL
    if (g_dp.world > 1)
        fail("%s's variables ask for %d processes, but train_cu was built without NCCL (make found no nccl.h, or NCCL=0): install "
             "NCCL and rebuild (make train_cu NCCL_HOME=DIR), or run one process", g_dp.source, g_dp.world);
    g_dp.on = 0;
#endif
    if (!g_dp.on) return;
    setenv("NCCL_NVLS_ENABLE", "0", 0);  // NVLink multicast stays off on shared machines unless the user set it
    const char *all = getenv("TRAIN_CU_PRINT_ALL_RANKS");
    if (g_dp.rank != 0 && !(all && !strcmp(all, "1")) && !freopen("/dev/null", "w", stdout))
        fail("rank %d: cannot silence stdout", g_dp.rank);
}

// After gpu_init chose GPU local_rank: the rendezvous and the NCCL communicator.
static void dp_connect(void) {
#ifdef USE_NCCL
    if (!g_dp.on) return;
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (g_dp.rank == 0) ncclCheck(ncclGetUniqueId(&id));
    char err[512];
    if (!dp_rendezvous(&id, sizeof id, &g_dp, dp_timeout(), err, sizeof err)) fail("%s", err);
    ncclCheck(ncclCommInitRank(&g_nccl, g_dp.world, id, g_dp.rank));
    int v = 0;
    ncclCheck(ncclGetVersion(&v));
    printf("data parallel: %d process%s (%s's variables), rendezvous at %s:%d, NCCL %d.%d.%d, NCCL_NVLS_ENABLE=%s\n",
           g_dp.world, g_dp.world > 1 ? "es" : "", g_dp.source, g_dp.addr, g_dp.port, v / 10000, v / 100 % 100, v % 100,
           getenv("NCCL_NVLS_ENABLE"));
#endif
}

static void dp_finish(void) {
#ifdef USE_NCCL
    if (g_dp.on) ncclCheck(ncclCommDestroy(g_nccl));
#endif
}

// In place, on the default stream: buf[W * shard] summed over the ranks, rank r's shard at
// buf + r * shard; then every rank's shard gathered into buf; a double summed or taken from rank 0.
static void dp_reduce_scatter(float *buf, int64_t shard) {
    DP_COLLECTIVE(ncclReduceScatter(buf, buf + g_dp.rank * shard, (size_t)shard, ncclFloat, ncclSum, g_nccl, 0));
}
static void dp_all_gather(float *buf, int64_t shard) {
    DP_COLLECTIVE(ncclAllGather(buf + g_dp.rank * shard, buf, (size_t)shard, ncclFloat, g_nccl, 0));
}

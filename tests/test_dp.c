// test_dp.c — dp.h, the host side of train_cu's data parallelism, without a GPU:
//   1. the launcher's environment: torchrun, mpirun and Slurm variables, defaults, bad values;
//   2. ZeRO-1 shards for W = 1..8 on real models (tied, untied, with learned quantizer scales):
//      the shards cover the padded buffer once, the padding is under W floats and in no span,
//      every parameter is in exactly one shard's span, and its weight decay is the one train.c's
//      adamw_update gives it (read off adamw_update itself: zero gradients, p = 1, so p ends at
//      1 - lr * wd);
//   3. AdamW by shards (train.c's adamw_span on each shard's spans, with shard-sized m and v)
//      equals train.c's adamw_update on the whole model, bit for bit, over three steps;
//   4. the rendezvous between forked processes: W = 1..8 ranks all get rank 0's id; a missing
//      rank, a missing rank 0 and a disagreeing WORLD_SIZE end in one clear error, within the
//      timeout.
#define TRAIN_NO_MAIN
#include "../train.c"
#include "../lib/dp.h"
#include <sys/wait.h>

static int failures = 0;
static void expect(int ok, const char *fmt, ...) {
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    printf("  %-100s %s\n", what, ok ? "ok" : "FAIL");
    failures += !ok;
}

static const char *const ENV_NAMES[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE",
                                        "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                                        "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"};

// Clears the launcher variables, then sets "NAME=VALUE" pairs.
static void env_set(const char *const *kv, int n) {
    for (size_t i = 0; i < sizeof ENV_NAMES / sizeof *ENV_NAMES; i++) unsetenv(ENV_NAMES[i]);
    for (int i = 0; i < n; i++) {
        char name[64];
        const char *eq = strchr(kv[i], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - kv[i]), kv[i]);
        setenv(name, eq + 1, 1);
    }
}

static void test_env(void) {
    printf("1. the launcher's environment\n");
    DpEnv e;
    char err[512] = "";
    env_set(NULL, 0);
    expect(dp_env_read(&e, 8, err, sizeof err) && !e.on && e.world == 1 && e.rank == 0, "no variables: one process, no NCCL");
    const char *tr[] = {"RANK=3", "WORLD_SIZE=8", "LOCAL_RANK=3", "MASTER_ADDR=node7", "MASTER_PORT=1234"};
    env_set(tr, 5);
    expect(dp_env_read(&e, 8, err, sizeof err) && e.on && e.rank == 3 && e.world == 8 && e.local_rank == 3 &&
           !strcmp(e.source, "torchrun") && !strcmp(e.addr, "node7") && e.port == 1234, "torchrun: RANK 3 of 8 at node7:1234");
    const char *ag[] = {"RANK=0", "WORLD_SIZE=2", "MASTER_PORT=29400", "TORCHELASTIC_USE_AGENT_STORE=True"};
    env_set(ag, 4);
    expect(dp_env_read(&e, 8, err, sizeof err) && e.port == 29401, "torchrun's agent holds MASTER_PORT: the rendezvous uses MASTER_PORT + 1");
    const char *mp[] = {"OMPI_COMM_WORLD_RANK=5", "OMPI_COMM_WORLD_SIZE=6", "OMPI_COMM_WORLD_LOCAL_RANK=1"};
    env_set(mp, 3);
    expect(dp_env_read(&e, 4, err, sizeof err) && e.on && e.rank == 5 && e.world == 6 && e.local_rank == 1 &&
           !strcmp(e.source, "mpirun") && !strcmp(e.addr, "127.0.0.1") && e.port == 29500,
           "mpirun: rank 5 of 6, GPU 1, default 127.0.0.1:29500");
    const char *sl[] = {"SLURM_PROCID=6", "SLURM_NTASKS=8"};
    env_set(sl, 2);
    expect(dp_env_read(&e, 4, err, sizeof err) && e.rank == 6 && e.world == 8 && e.local_rank == 2 && !strcmp(e.source, "slurm"),
           "slurm without SLURM_LOCALID: GPU = rank mod 4 GPUs = 2");
    struct { const char *kv[2]; int n; const char *msg; } bad[] = {
        {{"RANK=4", "WORLD_SIZE=4"}, 2, "RANK=4: expected an integer from 0 to 3"},
        {{"RANK=0", "WORLD_SIZE=two"}, 2, "WORLD_SIZE=two: expected an integer"},
        {{"RANK=1", NULL}, 1, "RANK is set but WORLD_SIZE is not"},
        {{"RANK=0", "WORLD_SIZE=0"}, 2, "WORLD_SIZE=0: expected an integer from 1"},
        {{"MASTER_PORT=70000", NULL}, 1, "MASTER_PORT=70000: expected an integer from 1 to 65535"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        env_set(bad[i].kv, bad[i].n);
        err[0] = 0;
        int ok = dp_env_read(&e, 8, err, sizeof err);
        expect(!ok && strstr(err, bad[i].msg), "%s %s: \"%s\"", bad[i].kv[0], bad[i].n > 1 ? bad[i].kv[1] : "", err);
    }
    env_set(NULL, 0);
}

// A random model of a shape, quantized by method (QUANT_NONE: not), with training buffers.
static void make_model(Model *m, const char *shape, int untied, int method) {
    ModelHeader c = shape_header(shape);
    c.tied = !untied;
    int64_t sizes[N_TENSORS];
    float *p = malloc_or_die((size_t)tensor_sizes(&c, sizes) * sizeof(float), "parameters");
    init_params(&c, p, 7);
    model_setup(m, &c, p);
    if (method != QUANT_NONE) model_apply_quant(m, (QuantSpec){method, 1, 0});
    model_alloc_training(m);
}

static int model_spans(DpSpan *spans, const Model *m, float wd) {
    int64_t offset[N_TENSORS], numel[N_TENSORS];
    int rows[N_TENSORS];
    for (int t = 0; t < N_TENSORS; t++) {
        int64_t r, k;
        tensor_slice_shape(&m->cfg, t, &r, &k);
        offset[t] = m->params_t[t] ? m->params_t[t] - m->params : -1;
        numel[t] = m->slice[t] * (tensor_is_per_layer(t) ? m->cfg.n_layers : 1);
        rows[t] = (int)r;
    }
    return dp_param_spans(spans, offset, numel, rows, N_TENSORS, m->n_table, m->n_params, wd);
}

static uint64_t rng_state = 12345;
static float uniform(void) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((rng_state >> 40) / 16777216.0) * 2.0f - 1.0f;
}

static void test_shards(const char *shape, int untied, int method, const char *what) {
    Model m;
    make_model(&m, shape, untied, method);
    int64_t n = m.n_params;
    const float wd = 0.25f, lr = 0.5f;
    // the decay of every parameter, by train.c's adamw_update: g = 0, m = v = 0, p = 1
    OptConfig o = {.lr = lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = wd};
    for (int64_t i = 0; i < n; i++) m.params[i] = 1.0f;
    memset(m.grads, 0, (size_t)n * sizeof(float));
    adamw_update(&m, &o, lr);
    float *want_wd = malloc_or_die((size_t)n * sizeof(float), "decay");
    for (int64_t i = 0; i < n; i++) want_wd[i] = (1.0f - m.params[i]) / lr;
    DpSpan spans[N_TENSORS + 1], part[N_TENSORS + 1];
    int ns = model_spans(spans, &m, wd);
    float *got_wd = malloc_or_die((size_t)n * sizeof(float), "decay");
    int *cover = malloc_or_die((size_t)n * sizeof(int), "cover");
    for (int W = 1; W <= 8; W++) {
        int64_t shard = dp_shard_floats(n, W), padded = dp_padded_floats(n, W), pad_hits = 0;
        int64_t owned = 0, bad_wd = 0, bad_cover = 0;
        memset(cover, 0, (size_t)n * sizeof(int));
        for (int r = 0; r < W; r++) {
            int k = dp_clip_spans(part, spans, ns, r * shard, (r + 1) * shard);
            for (int j = 0; j < k; j++) {
                if (part[j].begin < r * shard || part[j].begin + part[j].n > (r + 1) * shard) bad_cover++;
                for (int64_t i = part[j].begin; i < part[j].begin + part[j].n; i++) {
                    if (i >= n) { pad_hits++; continue; }
                    cover[i]++;
                    got_wd[i] = part[j].wd;
                    owned++;
                }
            }
        }
        for (int64_t i = 0; i < n; i++) {
            bad_cover += cover[i] != 1;
            bad_wd += cover[i] == 1 && got_wd[i] != want_wd[i];
        }
        expect(padded >= n && padded - n < W && padded % W == 0 && owned == n && bad_cover == 0 && pad_hits == 0 && bad_wd == 0,
               "%s, W=%d: shard %lld, padding %lld, every one of %lld floats in one shard (%lld not), decay as adamw_update (%lld differ)",
               what, W, (long long)shard, (long long)(padded - n), (long long)n, (long long)bad_cover, (long long)bad_wd);
    }
    free(want_wd); free(got_wd); free(cover);

    // AdamW by shards against adamw_update, three steps of random gradients
    Model ref;
    make_model(&ref, shape, untied, method);
    for (int W = 1; W <= 8; W++) {
        int64_t shard = dp_shard_floats(n, W);
        float *params = malloc_or_die((size_t)n * sizeof(float), "params");
        float *mm = calloc_or_die((size_t)shard * W, sizeof(float), "m"), *vv = calloc_or_die((size_t)shard * W, sizeof(float), "v");
        memcpy(params, ref.params, (size_t)n * sizeof(float));  // the step-0 weights, before ref moves on
        int64_t diff = 0;
        float *start = malloc_or_die((size_t)n * sizeof(float), "params");
        memcpy(start, ref.params, (size_t)n * sizeof(float));
        memset(ref.adam_m, 0, (size_t)n * sizeof(float));
        memset(ref.adam_v, 0, (size_t)n * sizeof(float));
        ref.step = 0;
        for (int s = 1; s <= 3; s++) {
            for (int64_t i = 0; i < n; i++) ref.grads[i] = uniform() * 1e-2f;
            adamw_update(&ref, &o, lr * 1e-2f);
            float bc1 = 1.0f - powf(o.beta1, (float)s), bc2 = 1.0f - powf(o.beta2, (float)s);
            for (int r = 0; r < W; r++) {  // rank r's m and v are mm, vv + r * shard, indexed from its shard's start
                int k = dp_clip_spans(part, spans, ns, r * shard, (r + 1) * shard);
                for (int j = 0; j < k; j++) {
                    int64_t b = part[j].begin;
                    adamw_span(params + b, ref.grads + b, mm + r * shard + (b - r * shard), vv + r * shard + (b - r * shard),
                               part[j].n, &o, lr * 1e-2f, part[j].wd, bc1, bc2);
                }
            }
        }
        diff += memcmp(params, ref.params, (size_t)n * sizeof(float)) != 0;
        diff += memcmp(mm, ref.adam_m, (size_t)n * sizeof(float)) != 0;
        diff += memcmp(vv, ref.adam_v, (size_t)n * sizeof(float)) != 0;
        expect(diff == 0, "%s, W=%d: 3 AdamW steps by shards == adamw_update (parameters, m, v bit for bit)", what, W);
        memcpy(ref.params, start, (size_t)n * sizeof(float));
        free(params); free(mm); free(vv); free(start);
    }
    model_free(&ref);
    model_free(&m);
}

// Forks W - 1 peers and runs rank 0 here (skip_rank: that rank is never started; world_of: a
// peer that claims another WORLD_SIZE). Returns rank 0's success; peers' results in peers_ok.
static int run_rendezvous(int W, int port, int skip_rank, int world_of, double timeout, int *peers_ok, char *err, size_t en) {
    unsigned char id[128];
    for (int i = 0; i < 128; i++) id[i] = (unsigned char)(i * 37 + W);
    pid_t pids[8];
    int started = 0;
    for (int r = 1; r < W; r++) {
        if (r == skip_rank) continue;
        pid_t p = fork();
        if (p == 0) {
            DpEnv e = {1, r, r == world_of ? W + 1 : W, r, "test", "127.0.0.1", port};
            unsigned char got[128] = {0};
            char perr[512];
            int ok = dp_rendezvous(got, sizeof got, &e, timeout, perr, sizeof perr) && !memcmp(got, id, sizeof id);
            _exit(ok ? 0 : 1);
        }
        pids[started++] = p;
    }
    int ok = 1;
    if (skip_rank != 0) {
        DpEnv e = {1, 0, W, 0, "test", "127.0.0.1", port};
        ok = dp_rendezvous(id, sizeof id, &e, timeout, err, en);
    }
    *peers_ok = 1;
    for (int i = 0; i < started; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        *peers_ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    return ok;
}

static void test_rendezvous(void) {
    printf("4. the rendezvous (forked ranks on 127.0.0.1)\n");
    int port = 20000 + (int)(getpid() % 20000), peers;
    char err[512];
    for (int W = 1; W <= 8; W++) {
        err[0] = 0;
        int ok = run_rendezvous(W, port + W, -1, -1, 20, &peers, err, sizeof err);
        expect(ok && peers, "W=%d: every rank received rank 0's 128-byte id %s", W, err);
    }
    double t0 = dp_now();
    err[0] = 0;
    int ok = run_rendezvous(4, port + 10, 3, -1, 1.0, &peers, err, sizeof err);
    expect(!ok && strstr(err, "3 of 4 ranks reached rank 0") && dp_now() - t0 < 5, "rank 3 never starts: \"%s\"", err);
    DpEnv e = {1, 1, 2, 1, "test", "127.0.0.1", port + 11};
    t0 = dp_now();
    err[0] = 0;
    ok = dp_rendezvous(NULL, 0, &e, 1.0, err, sizeof err);
    expect(!ok && strstr(err, "could not reach rank 0 at 127.0.0.1") && dp_now() - t0 < 5, "no rank 0: \"%s\"", err);
    err[0] = 0;
    ok = run_rendezvous(3, port + 12, -1, 2, 2.0, &peers, err, sizeof err);
    expect(!ok && !peers && strstr(err, "claiming rank 2 of WORLD_SIZE 4"), "a rank with another WORLD_SIZE: \"%s\"", err);
    DpEnv bad = {1, 1, 2, 1, "test", "no-such-host.invalid", port};
    err[0] = 0;
    ok = dp_rendezvous(NULL, 0, &bad, 1.0, err, sizeof err);
    expect(!ok && strstr(err, "MASTER_ADDR=no-such-host.invalid"), "an unknown MASTER_ADDR: \"%s\"", err);
}

int main(void) {
    test_env();
    printf("2-3. ZeRO-1 shards and AdamW by shards\n");
    test_shards("tiny", 0, QUANT_NONE, "tiny (tied)");
    test_shards("tiny", 1, QUANT_NONE, "tiny untied");
    test_shards("tiny", 1, QUANT_ONEBIT, "tiny untied, OneBit (learned scales in the tail)");
    test_rendezvous();
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}

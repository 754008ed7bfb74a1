// dp.h — data parallelism's host side, for train.cu (cuda/zero1.cu) and test_dp.c: where a process
// is in the job (rank, world size, GPU), how the flat parameter buffer is split into ZeRO-1
// shards, which AdamW spans (with their weight decay) fall into a shard, and the TCP rendezvous
// that hands NCCL's unique id from rank 0 to the others. Plain C and POSIX sockets, no CUDA, so
// the arithmetic and the rendezvous are tested on a machine without a GPU.
//
// Functions that can fail return 0 and write one line (without "error: ") into err; the caller
// dies with it.
#ifndef DP_H
#define DP_H

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------
// Where this process is: one process per GPU, placed by the launcher's environment.

typedef struct {
    int on;                 // a launcher set the variables (even for one process)
    int rank, world, local_rank;
    const char *source;     // which launcher's variables: "torchrun", "mpirun", "slurm"
    char addr[256];         // MASTER_ADDR (default 127.0.0.1)
    int port;               // MASTER_PORT (default 29500, torchrun's)
} DpEnv;

static int dp_parse_int(const char *name, const char *s, int lo, int hi, int *out, char *err, size_t n) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi) {
        snprintf(err, n, "%s=%s: expected an integer from %d to %d", name, s, lo, hi);
        return 0;
    }
    *out = (int)v;
    return 1;
}

// torchrun's RANK/WORLD_SIZE/LOCAL_RANK first, then Open MPI's, then Slurm's; none: e->on = 0.
// LOCAL_RANK absent: rank modulo the GPUs of this machine (n_gpus; 0: unknown, use the rank).
static int dp_env_read(DpEnv *e, int n_gpus, char *err, size_t n) {
    static const char *const names[3][4] = {
        {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"},
        {"mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"},
        {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"},
    };
    memset(e, 0, sizeof *e);
    e->world = 1;
    for (int i = 0; i < 3; i++) {
        const char *r = getenv(names[i][1]), *w = getenv(names[i][2]), *l = getenv(names[i][3]);
        if (!r && !w) continue;
        if (!r || !w) {
            snprintf(err, n, "%s is set but %s is not: a launcher sets both", r ? names[i][1] : names[i][2],
                     r ? names[i][2] : names[i][1]);
            return 0;
        }
        e->on = 1;
        e->source = names[i][0];
        if (!dp_parse_int(names[i][2], w, 1, 1 << 20, &e->world, err, n)) return 0;
        if (!dp_parse_int(names[i][1], r, 0, e->world - 1, &e->rank, err, n)) return 0;
        if (l) { if (!dp_parse_int(names[i][3], l, 0, 1 << 20, &e->local_rank, err, n)) return 0; }
        else e->local_rank = n_gpus > 0 ? e->rank % n_gpus : e->rank;
        break;
    }
    const char *a = getenv("MASTER_ADDR"), *p = getenv("MASTER_PORT");
    snprintf(e->addr, sizeof e->addr, "%s", a && *a ? a : "127.0.0.1");
    e->port = 29500;
    if (p && !dp_parse_int("MASTER_PORT", p, 1, 65535, &e->port, err, n)) return 0;
    // torchrun's agent serves its own store on MASTER_PORT: take the port above it
    const char *agent = getenv("TORCHELASTIC_USE_AGENT_STORE");
    if (agent && !strcmp(agent, "True") && e->port < 65535) e->port++;
    return 1;
}

// ---------------------------------------------------------------------------------------------
// ZeRO-1 shards (Rajbhandari et al. 2020): the flat buffer of n floats, padded to W * shard
// floats, shard = ceil(n / W); rank r owns [r * shard, (r + 1) * shard). The padding (fewer than
// W floats, all in the last shards) belongs to no tensor: its gradients stay zero, no update
// touches it.

static int64_t dp_shard_floats(int64_t n, int world) { return (n + world - 1) / world; }
static int64_t dp_padded_floats(int64_t n, int world) { return dp_shard_floats(n, world) * world; }

// One run of consecutive floats that AdamW updates with one weight decay.
typedef struct { int64_t begin, n; float wd; } DpSpan;

// The AdamW spans of a parameter buffer in train.c's adamw_update order: each tensor of the table
// (offset[t] < 0: absent; numel[t] floats; decayed when a matrix, rows[t] > 1), then the tail
// [n_table, n_params), the learned quantizer scales, not decayed. Returns the number of spans
// (at most n_tensors + 1).
static int dp_param_spans(DpSpan *out, const int64_t *offset, const int64_t *numel, const int *rows, int n_tensors,
                          int64_t n_table, int64_t n_params, float weight_decay) {
    int k = 0;
    for (int t = 0; t < n_tensors; t++)
        if (offset[t] >= 0 && numel[t] > 0) out[k++] = (DpSpan){offset[t], numel[t], rows[t] > 1 ? weight_decay : 0.0f};
    if (n_params > n_table) out[k++] = (DpSpan){n_table, n_params - n_table, 0.0f};
    return k;
}

// The parts of the spans inside [lo, hi), in the same order (at most n_spans).
static int dp_clip_spans(DpSpan *out, const DpSpan *spans, int n_spans, int64_t lo, int64_t hi) {
    int k = 0;
    for (int i = 0; i < n_spans; i++) {
        int64_t b = spans[i].begin > lo ? spans[i].begin : lo;
        int64_t e = spans[i].begin + spans[i].n < hi ? spans[i].begin + spans[i].n : hi;
        if (e > b) out[k++] = (DpSpan){b, e - b, spans[i].wd};
    }
    return k;
}

// ---------------------------------------------------------------------------------------------
// The rendezvous: rank 0 listens on MASTER_PORT; every other rank connects (retrying while rank 0
// is not up yet) and sends {magic, rank, world}; rank 0 checks them and answers each with the
// n-byte id. Every wait has the deadline timeout_s, so a missing rank is an error, not a hang.

enum { DP_MAGIC = 0x62647031 };  // "bdp1"

static double dp_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

// Sends or receives exactly n bytes before the deadline (poll between partial transfers).
static int dp_io(int fd, void *buf, size_t n, int sending, double deadline) {
    char *p = (char *)buf;
    while (n > 0) {
        struct pollfd pf = {fd, (short)(sending ? POLLOUT : POLLIN), 0};
        int ms = (int)((deadline - dp_now()) * 1000);
        if (ms <= 0 || poll(&pf, 1, ms) <= 0) { errno = ETIMEDOUT; return 0; }
        ssize_t k = sending ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k == 0) errno = ECONNRESET;
        if (k <= 0) { if (k < 0 && errno == EINTR) continue; return 0; }
        p += k;
        n -= (size_t)k;
    }
    return 1;
}

static int dp_rendezvous_root(void *id, size_t n, const DpEnv *e, double timeout_s, char *err, size_t en) {
    int fd = socket(AF_INET6, SOCK_STREAM, 0), v6 = 1;
    if (fd < 0) { v6 = 0; fd = socket(AF_INET, SOCK_STREAM, 0); }
    if (fd < 0) { snprintf(err, en, "rendezvous: rank 0 cannot open a socket (%s)", strerror(errno)); return 0; }
    int one = 1, zero = 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (v6) {  // both IPv6 and IPv4 clients
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
        s->sin6_family = AF_INET6; s->sin6_addr = in6addr_any; s->sin6_port = htons((uint16_t)e->port);
        len = sizeof *s;
    } else {
        struct sockaddr_in *s = (struct sockaddr_in *)&ss;
        s->sin_family = AF_INET; s->sin_addr.s_addr = htonl(INADDR_ANY); s->sin_port = htons((uint16_t)e->port);
        len = sizeof *s;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, e->world) != 0) {
        snprintf(err, en, "rendezvous: rank 0 cannot listen on port %d (%s); set MASTER_PORT to a free port", e->port,
                 strerror(errno));
        close(fd);
        return 0;
    }
    double deadline = dp_now() + timeout_s;
    int joined = 0, ok = 1;
    char *seen = (char *)calloc((size_t)e->world, 1);
    while (ok && joined < e->world - 1) {
        struct pollfd pf = {fd, POLLIN, 0};
        int ms = (int)((deadline - dp_now()) * 1000);
        if (ms <= 0 || poll(&pf, 1, ms) <= 0) {
            snprintf(err, en, "rendezvous: %d of %d ranks reached rank 0 on port %d within %.0f s; start every rank "
                     "(WORLD_SIZE=%d) with MASTER_ADDR/MASTER_PORT naming rank 0's machine", joined + 1, e->world,
                     e->port, timeout_s, e->world);
            ok = 0;
            break;
        }
        int c = accept(fd, NULL, NULL);
        if (c < 0) continue;
        int32_t hello[3];
        if (!dp_io(c, hello, sizeof hello, 0, deadline)) { close(c); continue; }  // not one of ours, or too slow
        if (hello[0] != DP_MAGIC) { close(c); continue; }
        if (hello[2] != e->world || hello[1] < 1 || hello[1] >= e->world || seen[hello[1]]) {
            snprintf(err, en, "rendezvous: a process claiming rank %d of WORLD_SIZE %d reached rank 0 (WORLD_SIZE %d%s)",
                     hello[1], hello[2], e->world, hello[1] >= 1 && hello[1] < e->world && seen[hello[1]] ? ", rank taken" : "");
            close(c);
            ok = 0;
            break;
        }
        seen[hello[1]] = 1;
        joined++;
        if (!dp_io(c, id, n, 1, deadline)) {
            snprintf(err, en, "rendezvous: rank 0 could not send the NCCL id to rank %d (%s)", hello[1], strerror(errno));
            ok = 0;
        }
        close(c);
    }
    free(seen);
    close(fd);
    return ok;
}

static int dp_rendezvous_peer(void *id, size_t n, const DpEnv *e, double timeout_s, char *err, size_t en) {
    char port[16];
    snprintf(port, sizeof port, "%d", e->port);
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(e->addr, port, &hints, &res);
    if (g != 0) { snprintf(err, en, "rendezvous: MASTER_ADDR=%s: %s", e->addr, gai_strerror(g)); return 0; }
    double deadline = dp_now() + timeout_s;
    int fd = -1, last = 0;
    while (fd < 0 && dp_now() < deadline) {  // rank 0 may not be listening yet: retry every 100 ms
        for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
            fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
            if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) != 0) { last = errno; close(fd); fd = -1; }
        }
        if (fd < 0) usleep(100000);
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, en, "rendezvous: rank %d could not reach rank 0 at %s:%d within %.0f s (%s); is rank 0 running?",
                 e->rank, e->addr, e->port, timeout_s, strerror(last));
        return 0;
    }
    int32_t hello[3] = {DP_MAGIC, e->rank, e->world};
    int ok = dp_io(fd, hello, sizeof hello, 1, deadline) && dp_io(fd, id, n, 0, deadline);
    if (!ok)
        snprintf(err, en, "rendezvous: rank %d got no NCCL id from rank 0 at %s:%d (%s); do all ranks agree on "
                 "WORLD_SIZE=%d?", e->rank, e->addr, e->port, strerror(errno), e->world);
    close(fd);
    return ok;
}

// Rank 0's n bytes of id reach every rank (a world of one: nothing to do).
static int dp_rendezvous(void *id, size_t n, const DpEnv *e, double timeout_s, char *err, size_t en) {
    if (e->world == 1) return 1;
    return e->rank == 0 ? dp_rendezvous_root(id, n, e, timeout_s, err, en) : dp_rendezvous_peer(id, n, e, timeout_s, err, en);
}

#endif
